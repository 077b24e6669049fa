#!/usr/bin/env bash
# Syscalls per call (strace -c) on each side: raw, tokio and wirecall, Unix stream, 32-byte
# bodies, both ends on CPU 0, 2 s of calls. WIN=64 for the window of 64; T=unix-dgram, udp
# or tcp for another transport (raw and wirecall; tokio too on tcp: the tokio peer speaks
# streams only); IMPLS to choose.
# Needs strace and `cargo build --release -p wirecall-cli -p wirecall-bench`. Loopback only;
# every process it starts ends by itself or by its own pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
W=$BIN/wirecall; X=$BIN/wirecall-bench; WIN=${WIN:-1}; T=${T:-unix}
case "$T" in unix|tcp) IMPLS=${IMPLS:-raw tokio wirecall} ;; *) IMPLS=${IMPLS:-raw wirecall} ;; esac
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
case "$T" in # the address raw takes, and wirecall's endpoint
  unix|unix-dgram) ADDR=$D/s.sock ;;
  tcp|udp) ADDR=127.0.0.1:${PORT:-7932} ;;
  *) echo "T must be unix, unix-dgram, tcp or udp" >&2; exit 2 ;;
esac
EP=$T:$ADDR
for impl in $IMPLS; do
  rm -f "$D/s.sock"
  if [ "$impl" = wirecall ]; then
    strace -f -c -o "$D/srv" taskset -c 0 "$W" serve --listen "$EP" > "$D/srv.out" 2>/dev/null &
  else
    strace -f -c -o "$D/srv" taskset -c 0 "$X" server "$impl" --transport "$T" --addr "$ADDR" --lifetime 8 > "$D/srv.out" 2>/dev/null &
  fi
  SP=$!
  for _ in $(seq 100); do grep -q listening "$D/srv.out" 2>/dev/null && break; sleep 0.1; done
  if [ "$impl" = wirecall ]; then
    strace -f -c -o "$D/cli" taskset -c 0 "$W" bench "$EP" --window "$WIN" --duration 2 --json > "$D/json"
    # The server strace started: SIGTERM by its pid, a graceful stop.
    kill -TERM "$(pgrep -f -x "$W serve --listen $EP")"
  else
    strace -f -c -o "$D/cli" taskset -c 0 "$X" client "$impl" --transport "$T" --addr "$ADDR" --window "$WIN" --secs 2 > "$D/json"
  fi
  wait "$SP" || true
  N=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['calls'])" "$D/json")
  echo "$impl $T window $WIN: $N calls; syscalls per call"
  for side in srv cli; do
    printf '  %s: ' "$side"
    awk -v n="$N" 'NR>2 && $NF!="total" && $4 ~ /^[0-9]+$/ {e=($5 ~ /^[0-9]+$/)?$5:0;
      if ($4/n>0.01) printf "%s %.2f%s  ", $NF, $4/n, (e>0? sprintf(" (%.2f failed)", e/n):"")} END{print ""}' "$D/$side"
  done
done
