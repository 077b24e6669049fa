#!/usr/bin/env bash
# User-space instructions per call (valgrind --tool=callgrind) on each side: raw, tokio and
# wirecall (IMPLS=wirecall-typed: wirecall calling the typed echo `typed/echo` by its key),
# Unix stream ping-pong (WIN=1) with SIZE-byte bodies (default 32); T=unix-dgram, udp or
# tcp for another transport (raw and wirecall; tokio is streams only). Each side is
# run twice with different numbers of calls and the difference is divided by the
# difference in calls, so start-up cancels out. Instruction counts are stable on a noisy
# machine; they do not include the kernel (see syscalls.sh for that).
# Needs valgrind and `cargo build --release -p wirecall-cli -p wirecall-bench`. Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
W=$BIN/wirecall; X=$BIN/wirecall-bench; SIZE=${SIZE:-32}; WIN=${WIN:-1}; T=${T:-unix}
D=${OUT:-$(mktemp -d)}; echo "callgrind files in $D"
case "$T" in # the address raw and tokio take, and wirecall's endpoint
  unix|unix-dgram) ADDR=$D/s.sock ;;
  tcp|udp) ADDR=127.0.0.1:${PORT:-7931} ;;
  *) echo "T must be unix, unix-dgram, tcp or udp" >&2; exit 2 ;;
esac
EP=$T:$ADDR
ir() { grep -h '^summary' "$1" | awk '{print $2}'; }
calls() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['calls'])" "$1"; }
start_server() { # impl, under valgrind (1/0), output file
  rm -f "$D/s.sock"; local pre=()
  [ "$2" = 1 ] && pre=(valgrind --tool=callgrind "--callgrind-out-file=$3")
  if [[ "$1" == wirecall* ]]; then
    "${pre[@]}" "$W" serve --listen "$EP" > "$D/srv.out" 2>/dev/null &
  else # ends by itself after --lifetime (so callgrind writes its file)
    "${pre[@]}" "$X" server "$1" --transport "$T" --addr "$ADDR" --lifetime 12 > "$D/srv.out" 2>/dev/null &
  fi
  SRV=$!
  for _ in $(seq 200); do grep -q listening "$D/srv.out" 2>/dev/null && break; sleep 0.1; done
}
stop_server() { [[ "$1" == wirecall* ]] && kill -TERM "$SRV"; wait "$SRV" || true; }
client() { # impl, under valgrind, output file, calls-or-seconds, json file
  local pre=()
  [ "$2" = 1 ] && pre=(valgrind --tool=callgrind "--callgrind-out-file=$3")
  if [[ "$1" == wirecall* ]]; then
    local method=echo; [ "$1" = wirecall-typed ] && method=typed/echo
    "${pre[@]}" "$W" bench "$EP" --method "$method" --size "$SIZE" --window "$WIN" --requests "$4" --json > "$5" 2>/dev/null
  else
    "${pre[@]}" "$X" client "$1" --transport "$T" --addr "$ADDR" --size "$SIZE" --window "$WIN" --secs "$4" > "$5" 2>/dev/null
  fi
}
case "$T" in unix|tcp) IMPLS=${IMPLS:-raw tokio wirecall} ;; *) IMPLS=${IMPLS:-raw wirecall} ;; esac
for impl in $IMPLS; do
  for side in srv cli; do
    for k in 1 2; do
      if [[ "$impl" == wirecall* ]]; then arg=$((k * 20000)); else arg=$k; fi
      if [ "$side" = srv ]; then
        start_server "$impl" 1 "$D/$impl.$side.$k.out"; client "$impl" 0 - "$arg" "$D/$impl.$side.$k.json"
      else
        start_server "$impl" 0; client "$impl" 1 "$D/$impl.$side.$k.out" "$arg" "$D/$impl.$side.$k.json"
      fi
      stop_server "$impl"
    done
    per=$(python3 -c "import sys; a,b,c,d=map(int,sys.argv[1:]); print(round((b-a)/(d-c)))" \
      "$(ir "$D/$impl.$side.1.out")" "$(ir "$D/$impl.$side.2.out")" \
      "$(calls "$D/$impl.$side.1.json")" "$(calls "$D/$impl.$side.2.json")")
    echo "$impl $side: $per instructions per call (size $SIZE, window $WIN)"
  done
done
