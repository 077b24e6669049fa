//! End-to-end: the real `wirecall` binary, `serve` in one process and `call` in others, over
//! Unix stream, TCP/IPv4, TCP/IPv6, Unix datagram, UDP/IPv4 and UDP/IPv6; `call`'s exit
//! codes and messages; `--help`; `demo`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use wirecall_tests::{Output, ServerProcess, ipv6_loopback, parse_stats, run};

const TIMEOUT: Duration = Duration::from_secs(30);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn wirecall(args: &[&str], stdin: &[u8]) -> Output {
    run(bin(), args, stdin, TIMEOUT).unwrap()
}

fn call(args: &[&str]) -> Output {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    wirecall(&all, b"")
}

#[test]
fn calls_over_every_transport_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let unix_dgram = format!("unix-dgram:{}", dir.path().join("d.sock").display());
    let mut args = vec![
        "--listen",
        unix.as_str(),
        "--listen",
        "tcp:127.0.0.1:0",
        "--listen",
        unix_dgram.as_str(),
        "--listen",
        "udp:127.0.0.1:0",
    ];
    let v6 = ipv6_loopback();
    match &v6 {
        Ok(()) => args.extend(["--listen", "tcp:[::1]:0", "--listen", "udp:[::1]:0"]),
        Err(why) => println!("skipping the IPv6 part: {why}"),
    }
    let server = ServerProcess::start(bin(), &args, &[]).unwrap();
    assert_eq!(server.endpoints[0], unix);
    assert!(server.endpoints[1].starts_with("tcp:127.0.0.1:"));
    assert!(!server.endpoints[1].ends_with(":0"), "real port shown");
    assert_eq!(server.endpoints[2], unix_dgram);
    assert!(server.endpoints[3].starts_with("udp:127.0.0.1:"));
    assert!(!server.endpoints[3].ends_with(":0"), "real port shown");
    if v6.is_ok() {
        assert!(server.endpoints[4].starts_with("tcp:[::1]:"));
        assert!(server.endpoints[5].starts_with("udp:[::1]:"));
    }

    for ep in &server.endpoints {
        let out = call(&[ep, "echo", "hello"]);
        assert_eq!(out.code, Some(0), "{ep}: {}", out.stderr);
        assert_eq!(out.stdout, b"hello", "{ep}");

        let out = wirecall(&["call", ep, "upper", "-"], "from stdin, ß".as_bytes());
        assert_eq!(out.code, Some(0), "{ep}: {}", out.stderr);
        assert_eq!(out.stdout_text(), "FROM STDIN, SS", "{ep}");

        let out = call(&[ep, "time"]);
        let time = out.stdout_text();
        assert_eq!(time.len(), "2026-01-01T00:00:00.000000Z".len(), "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");

        let out = call(&[ep, "list"]);
        // Every name, the typed endpoints' paths and discovery included.
        assert_eq!(
            out.stdout_text(),
            "echo\nupper\ntime\nsleep\nspin\nstats\nlist\nwhoami\nhealth\ntyped/echo\nkv/get\nkv/put\n\
             kv/delete\nkv/scan\nwirecall/endpoints\n"
        );

        let out = call(&[ep, "sleep", "30"]);
        assert_eq!(out.stdout, b"30");
    }

    let stats = parse_stats(&call(&[&server.endpoints[0], "stats"]).stdout_text());
    let endpoints = server.endpoints.len() as u64;
    let streams = endpoints / 2;
    assert_eq!(stats["calls.echo"], endpoints);
    assert_eq!(stats["executions.upper"], endpoints);
    assert_eq!(stats["connections.accepted"], 5 * streams + 1);
    assert_eq!(
        stats["connections.open"], 1,
        "only the stats call's connection"
    );
    assert_eq!(stats["protocol_errors"], 0);
    assert_eq!(
        stats["closed.graceful"],
        5 * streams,
        "`call` closes gracefully"
    );
    // Five calls over each datagram endpoint; each datagram received was answered (a
    // retransmission of a slow answer, under load, is answered from the cache or dropped
    // while its call runs), except acknowledgements: `call` acknowledges its answer as it
    // exits, so the server forgets the call at once.
    let datagram_calls = 5 * (endpoints - streams);
    let (received, sent) = (stats["datagrams.received"], stats["datagrams.sent"]);
    assert!(received >= datagram_calls, "{stats:?}");
    assert_eq!(stats["datagrams.acks"], datagram_calls, "{stats:?}");
    assert_eq!(
        received,
        sent + stats["datagrams.dropped.in_progress"] + stats["datagrams.acks"],
        "{stats:?}"
    );
    assert_eq!(
        stats["datagrams.dropped"], stats["datagrams.dropped.in_progress"],
        "{stats:?}"
    );
    assert_eq!(stats["datagrams.in_progress"], 0, "{stats:?}");
    assert_eq!(stats["calls.sleep"], endpoints, "{stats:?}");

    // The whole `stats` text does not fit a UDP datagram; a part of it does.
    let udp = &server.endpoints[3];
    let out = call(&[udp, "stats", "datagrams.dropped."]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = out.stdout_text();
    assert!(
        text.lines().all(|l| l.starts_with("datagrams.dropped.")),
        "{text}"
    );
    assert_eq!(text.lines().count(), 13, "{text}");
    let out = call(&[udp, "stats"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "wirecall: remote error: answer too large (0xffffff00): answer does not fit one datagram \
         [executed]\n"
    );
}

#[test]
fn call_failures_have_distinct_exit_codes_and_one_line_messages() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let server = ServerProcess::start(bin(), &["--listen", &unix], &[]).unwrap();
    let ep = server.endpoints[0].as_str();

    let one_line = |out: &Output| {
        assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
        assert!(out.stderr.starts_with("wirecall: "), "{:?}", out.stderr);
        assert!(out.stdout.is_empty());
    };

    let out = call(&[ep, "nope"]);
    assert_eq!(out.code, Some(4));
    assert_eq!(
        out.stderr,
        "wirecall: rejected, unknown method (1): no such method: \"nope\" [not executed]\n"
    );

    let out = call(&[ep, "sleep", "not a number"]);
    assert_eq!(out.code, Some(4));
    one_line(&out);
    assert!(out.stderr.contains("invalid request (4)"), "{}", out.stderr);
    assert!(out.stderr.ends_with("[not executed]\n"));

    let out = call(&[ep, "sleep", "3000", "--timeout", "100"]);
    assert_eq!(out.code, Some(6));
    one_line(&out);
    assert!(
        out.stderr.contains("timed out after 100 ms"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.ends_with("[maybe executed]\n"));

    let missing = format!("unix:{}", dir.path().join("missing.sock").display());
    let out = call(&[&missing, "echo"]);
    assert_eq!(out.code, Some(8));
    one_line(&out);
    assert!(out.stderr.contains(&format!("cannot connect to {missing}")));
    assert!(out.stderr.ends_with("[not executed]\n"));

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let closed = format!("tcp:127.0.0.1:{port}");
    let out = call(&[&closed, "echo"]);
    assert_eq!(out.code, Some(8));
    one_line(&out);
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);

    // Nothing listens on a closed UDP port, and the kernel says so (ICMP port unreachable
    // on the connected socket): could not connect, not executed, at once.
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let closed = format!("udp:127.0.0.1:{port}");
    let out = call(&[&closed, "echo", "--timeout", "20000"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!("wirecall: nothing listens at {closed} (connection refused) [not executed]\n")
    );

    // A Unix datagram socket that is not there: could not connect, not executed.
    let missing = format!("unix-dgram:{}", dir.path().join("missing.sock").display());
    let out = call(&[&missing, "echo"]);
    assert_eq!(out.code, Some(8));
    one_line(&out);
    assert!(out.stderr.contains(&format!("cannot connect to {missing}")));
    assert!(out.stderr.ends_with("[not executed]\n"));

    // Too large to send: the size and the limit, in numbers. The largest body `echo` takes
    // with the default frame limit (65,536) is 65,523 bytes (README).
    let largest = "a".repeat(65_523);
    assert_eq!(call(&[ep, "echo", &largest]).stdout.len(), 65_523);
    let over = "a".repeat(65_524);
    let out = call(&[ep, "echo", &over]);
    assert_eq!(out.code, Some(4));
    assert_eq!(
        out.stderr,
        "wirecall: not sent: the request is 65537 bytes encoded, over the frame limit of 65536 \
         bytes (65524 of them the body) [not executed]\n"
    );
    let udp = ServerProcess::start(bin(), &["--listen", "udp:127.0.0.1:0"], &[]).unwrap();
    let out = call(&[udp.endpoints[0].as_str(), "echo", &"a".repeat(2000)]);
    assert_eq!(out.code, Some(4));
    assert_eq!(
        out.stderr,
        "wirecall: not sent: the request is 2041 bytes encoded, over one datagram of 1232 bytes \
         (2000 of them the body) [not executed]\n"
    );

    let out = call(&["nonsense", "echo"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(
            "expected unix:/path, unix-dgram:/path, tcp:host:port, tls:host:port or udp:host:port"
        ),
        "{}",
        out.stderr
    );

    // The server is unaffected by all of that.
    assert_eq!(call(&[ep, "echo", "still here"]).stdout, b"still here");
}

/// Exit 5 over Unix datagrams: a server whose call cache is full answers every copy busy
/// until the caller's deadline, so nothing ran: busy, not executed (README's table). Over
/// UDP the same is a timeout, maybe executed, and the message says why.
#[test]
fn a_datagram_call_busy_until_its_deadline_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let unix_dgram = format!("unix-dgram:{}", dir.path().join("d.sock").display());
    // Two entries per datagram endpoint: one client's record and its one call.
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            "udp:127.0.0.1:0",
            "--listen",
            &unix_dgram,
            "--datagram-cache",
            "2",
            // One loop, so one call cache per endpoint: with more, each loop's `udp:` socket
            // has a cache of its own, and the two clients' flows may land on different ones.
            "--threads",
            "1",
        ],
        &[],
    )
    .unwrap();
    let stats = || {
        let out = call(&[&unix, "stats", "calls.sleep"]);
        parse_stats(&out.stdout_text())
            .get("calls.sleep")
            .copied()
            .unwrap_or(0)
    };
    for (n, endpoint) in server.endpoints[1..].iter().enumerate() {
        // A first client takes both entries with a long call...
        let mut holder = std::process::Command::new(bin())
            .args(["call", endpoint, "sleep", "3000", "--timeout", "20000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wirecall_tests::wait_until(TIMEOUT, Duration::from_millis(10), || stats() > n as u64),
            "the long call reached the server"
        );
        // ...so a second client's every copy is answered busy until its deadline.
        let out = call(&[endpoint, "echo", "hi", "--timeout", "800"]);
        if endpoint.starts_with("udp:") {
            // The network may duplicate a copy, and a duplicate could still run later.
            assert_eq!(out.code, Some(6), "{endpoint}: {}", out.stderr);
            assert_eq!(
                out.stderr,
                "wirecall: timed out after 800 ms; the server answered every copy busy, but \
                 the network may still deliver a duplicate of one [maybe executed]\n",
            );
        } else {
            // A Unix datagram socket never duplicates: every copy was refused.
            assert_eq!(out.code, Some(5), "{endpoint}: {}", out.stderr);
            assert_eq!(
                out.stderr,
                "wirecall: server busy: every copy sent was answered busy until the deadline \
                 (800 ms) [not executed]\n",
                "{endpoint}"
            );
        }
        assert!(wirecall_tests::wait_child(&mut holder, TIMEOUT).is_some_and(|s| s.success()));
    }
    let out = call(&[&unix, "stats", "executions.echo"]);
    assert_eq!(
        parse_stats(&out.stdout_text()).get("executions.echo"),
        Some(&0),
        "no echo ran: {}",
        out.stdout_text()
    );
}

/// Exit 5 for a server that is shutting down: over UDP, while a call taken before the
/// signal is still being answered, a new call is rejected, not executed; the call taken is
/// answered and the server exits 0.
#[test]
fn a_call_to_a_server_shutting_down_exits_5_not_executed() {
    let mut server = ServerProcess::start(
        bin(),
        &["--listen", "udp:127.0.0.1:0"],
        &[("RUST_LOG", "info")],
    )
    .unwrap();
    let udp = server.endpoints[0].clone();
    let holder = std::process::Command::new(bin())
        .args(["call", &udp, "sleep", "1500", "--timeout", "20000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The sleep is taken once the server has answered something after it: ask for a
    // counter until it shows the sleep.
    assert!(wirecall_tests::wait_until(
        TIMEOUT,
        Duration::from_millis(10),
        || {
            let out = call(&[&udp, "stats", "calls.sleep"]);
            parse_stats(&out.stdout_text()).get("calls.sleep") == Some(&1)
        }
    ));
    server.signal(wirecall_tests::Signal::TERM).unwrap();
    assert!(server.wait_for_log("shutting down", TIMEOUT));
    let out = call(&[&udp, "echo", "late"]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("the server is shutting down")
            && out.stderr.ends_with("[not executed]\n"),
        "{}",
        out.stderr
    );
    let held = holder.wait_with_output().unwrap();
    assert_eq!(
        held.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert_eq!(held.stdout, b"1500");
    assert!(
        server.wait_exit(TIMEOUT).is_some_and(|s| s.success()),
        "{}",
        server.stderr()
    );
}

/// Exit 7: the connection is lost while the call runs (the server is killed): the call
/// may have run, and the message says so.
#[test]
fn a_connection_lost_during_the_call_exits_7_maybe_executed() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let server = ServerProcess::start(bin(), &["--listen", &unix], &[]).unwrap();
    let caller = std::process::Command::new(bin())
        .args(["call", &unix, "sleep", "10000", "--timeout", "20000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = || {
        let out = call(&[&unix, "stats", "calls.sleep"]);
        parse_stats(&out.stdout_text()).get("calls.sleep") == Some(&1)
    };
    assert!(wirecall_tests::wait_until(
        TIMEOUT,
        Duration::from_millis(10),
        running
    ));
    server.signal(wirecall_tests::Signal::KILL).unwrap();
    let out = caller.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.starts_with("wirecall: connection lost") && stderr.ends_with("[maybe executed]\n"),
        "{stderr}"
    );
}

/// Exit 8 for a peer that is not a wirecall server: one that speaks HTTP, one that says
/// nothing, one that closes at once. `call` waits for the server's hello before it sends
/// anything, so in each case nothing was sent and nothing ran; one line says which.
#[test]
fn a_peer_that_is_not_a_wirecall_server_exits_8_not_executed() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp:{}", listener.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        let mut got = Vec::new();
        // An HTTP server: it answers whatever comes with a 400.
        let (mut http, _) = listener.accept().unwrap();
        http.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        let _ = http.read_to_end(&mut rest);
        got.push(rest);
        // A silent peer: it reads what comes and says nothing.
        let (mut silent, _) = listener.accept().unwrap();
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest);
        got.push(rest);
        // A peer that closes at once.
        drop(listener.accept().unwrap());
        got
    });
    let out = call(&[&endpoint, "echo", "hi"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "wirecall: {endpoint} is not a wirecall server: what it sent first is not a \
             wirecall hello [not executed]\n"
        )
    );
    let out = call(&[&endpoint, "echo", "hi", "--timeout", "300"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "wirecall: no hello from {endpoint} within 300 ms: is it a wirecall server? [not executed]\n"
        )
    );
    let out = call(&[&endpoint, "echo", "hi"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(
        out.stderr
            .ends_with("is it a wirecall server? [not executed]\n"),
        "{}",
        out.stderr
    );
    // What the peers received: the client's hello at most, never the request.
    for bytes in peer.join().unwrap() {
        assert!(
            !bytes.windows(4).any(|w| w == b"echo"),
            "the request was not sent: {bytes:?}"
        );
    }
}

/// What curl and grpcurl users reach for: `@FILE` bodies, `-v` steps on stderr, and
/// `--json-output` for scripts, on a stream and a datagram endpoint, for an answer, a
/// binary answer, a refusal and a failure to connect.
#[test]
fn call_reads_a_body_from_a_file_says_its_steps_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--listen", &unix, "--listen", "udp:127.0.0.1:0"],
        &[],
    )
    .unwrap();
    let udp = server.endpoints[1].clone();
    let text = dir.path().join("body.txt");
    std::fs::write(&text, b"from a file").unwrap();
    let binary = dir.path().join("body.bin");
    std::fs::write(&binary, [0xff, 0x00, 0x41]).unwrap();
    let at = |path: &Path| format!("@{}", path.display());

    for endpoint in [unix.as_str(), udp.as_str()] {
        assert_eq!(call(&[endpoint, "echo", &at(&text)]).stdout, b"from a file");

        let out = call(&["-v", endpoint, "echo", &at(&text)]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(out.stdout, b"from a file");
        let steps: Vec<&str> = out.stderr.lines().collect();
        assert!(steps.iter().all(|l| l.starts_with("* ")), "{}", out.stderr);
        for part in ["call 1: echo, 11-byte body", "answered after", "[executed]"] {
            assert!(out.stderr.contains(part), "{part:?} in {}", out.stderr);
        }
        if endpoint.starts_with("unix:") {
            assert!(
                out.stderr
                    .contains("takes frames up to 65536 bytes and 64 calls in flight"),
                "{}",
                out.stderr
            );
        } else {
            assert!(
                out.stderr.contains("resolved to 127.0.0.1:"),
                "{}",
                out.stderr
            );
            assert!(
                out.stderr.contains("1 copy sent, 0 answered busy"),
                "{}",
                out.stderr
            );
        }

        let json = |out: &Output| -> serde_json::Value {
            assert_eq!(
                out.stdout_text().lines().count(),
                1,
                "{}",
                out.stdout_text()
            );
            serde_json::from_str(&out.stdout_text()).unwrap()
        };
        let out = call(&["--json-output", endpoint, "echo", &at(&text)]);
        assert_eq!(out.code, Some(0));
        let v = json(&out);
        assert_eq!(v["outcome"], "ok");
        assert_eq!(v["answer"], "from a file");
        assert_eq!(v["execution"], "executed");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["id"], 1);
        assert!(v["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{v}");

        let v = json(&call(&["--json-output", endpoint, "echo", &at(&binary)]));
        assert_eq!(v["answer_base64"], "/wBB", "{v}");
        assert!(v.get("answer").is_none(), "{v}");

        let out = call(&["--json-output", endpoint, "nope"]);
        assert_eq!(out.code, Some(4));
        assert!(out.stderr.is_empty(), "{}", out.stderr);
        let v = json(&out);
        assert_eq!(v["outcome"], "failed");
        assert_eq!(v["exit_code"], 4);
        assert_eq!(v["execution"], "not executed");
        assert!(
            v["error"].as_str().unwrap().contains("unknown method"),
            "{v}"
        );
    }

    let missing = format!("unix:{}", dir.path().join("missing.sock").display());
    let out = call(&["--json-output", &missing, "echo"]);
    assert_eq!(out.code, Some(8));
    let v: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(v["exit_code"], 8);
    assert_eq!(v["execution"], "not executed");
    assert!(v.get("id").is_none(), "no call was made: {v}");

    let out = call(&[&unix, "echo", &at(&dir.path().join("nothing.txt"))]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("wirecall: cannot read the body from ")
            && out.stderr.lines().count() == 1,
        "{}",
        out.stderr
    );
}

#[test]
fn serve_sets_the_socket_mode_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let dgram_path = dir.path().join("md.sock");
    let unix = format!("unix:{}", path.display());
    let unix_dgram = format!("unix-dgram:{}", dgram_path.display());
    let _server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            &unix_dgram,
            "--unix-mode",
            "0600",
        ],
        &[],
    )
    .unwrap();
    for path in [&path, &dgram_path] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    let out = wirecall(&["serve", "--listen", &unix, "--unix-mode", "999"], b"");
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("octal file mode"), "{}", out.stderr);
}

/// Under umask 000 with `--unix-mode 0600`, the socket files never exist with a wider
/// mode, not even for the moment between bind and chmod: a watcher that reads their mode
/// as fast as it can while servers start sees only 0600 (a socket file with the umask's
/// mode let another uid connect in 5 of 10 starts).
#[test]
fn socket_files_never_exist_with_a_wider_mode_than_asked() {
    use std::os::unix::fs::FileTypeExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("m.sock"), dir.path().join("md.sock")];
    for _ in 0..10 {
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let stop = Arc::clone(&stop);
            let paths = paths.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    for path in &paths {
                        if let Ok(meta) = std::fs::symlink_metadata(path) {
                            if meta.file_type().is_socket() {
                                seen.insert(meta.permissions().mode() & 0o7777);
                            }
                        }
                    }
                }
                seen
            })
        };
        let unix = format!("unix:{}", paths[0].display());
        let unix_dgram = format!("unix-dgram:{}", paths[1].display());
        let mut server = ServerProcess::start_after(
            bin(),
            "umask 000",
            &[
                "--listen",
                &unix,
                "--listen",
                &unix_dgram,
                "--unix-mode",
                "0600",
            ],
        )
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        server.signal(wirecall_tests::Signal::TERM).unwrap();
        assert!(server.wait_exit(TIMEOUT).is_some_and(|s| s.success()));
        assert!(
            seen.iter().all(|m| *m == 0o600),
            "modes seen while starting: {:?}",
            seen.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
        );
    }
}

/// Every `serve` flag with a range refuses a value outside it before anything is bound:
/// exit 2 (usage), and a message that names the flag the user typed and its range.
#[test]
fn every_ranged_serve_flag_refuses_values_outside_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("r.sock").display());
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "--max-frame",
            "BYTES",
            &["1023", "16777217"],
            "1024..=16777216",
        ),
        ("--max-in-flight", "N", &["3", "65537"], "4..=65536"),
        ("--max-connections", "N", &["0", "1048577"], "1..=1048576"),
        ("--workers", "N", &["1025"], "0..=1024"),
        ("--worker-queue", "N", &["0", "1048577"], "1..=1048576"),
        (
            "--datagram-cache",
            "ENTRIES",
            &["0", "1048577"],
            "1..=1048576",
        ),
        (
            "--max-datagram",
            "BYTES",
            &["103", "16777217"],
            "104..=16777216",
        ),
        (
            "--unix-max-datagram",
            "BYTES",
            &["103", "16777217"],
            "104..=16777216",
        ),
        ("--max-budget", "SECS", &["0", "86401"], "1..=86400"),
        ("--frame-timeout", "SECS", &["0", "3601"], "1..=3600"),
        ("--evict-idle", "SECS", &["3601"], "0..=3600"),
        (
            "--datagram-peer-entries",
            "ENTRIES",
            &["65", "1048577"],
            "66..=1048576",
        ),
    ];
    for (flag, name, values, range) in cases {
        for value in *values {
            let out = wirecall(&["serve", "--listen", &unix, flag, value], b"");
            assert_eq!(out.code, Some(2), "{flag} {value}: {}", out.stderr);
            assert_eq!(
                out.stderr.lines().next().unwrap_or_default(),
                format!(
                    "error: invalid value '{value}' for '{flag} <{name}>': \
                     {value} is not in {range}"
                ),
            );
        }
    }
    assert!(!dir.path().join("r.sock").exists(), "nothing was bound");
    // The smallest and largest values are taken (shown by a server that starts).
    for (flag, value) in [
        ("--max-datagram", "104"),
        ("--workers", "0"),
        ("--max-budget", "86400"),
    ] {
        let server =
            ServerProcess::start(bin(), &["--listen", "udp:127.0.0.1:0", flag, value], &[]);
        assert!(server.is_ok(), "{flag} {value}");
    }
}

/// Small things a new user trips over: an endpoint of the wrong kind for the socket there
/// gets a hint, a path too long for a socket address says its limit, and `demo | head`
/// ends quietly.
#[test]
fn the_small_messages_help() {
    let dir = tempfile::tempdir().unwrap();
    let dgram = dir.path().join("d.sock");
    let _d = std::os::unix::net::UnixDatagram::bind(&dgram).unwrap();
    let out = call(&[&format!("unix:{}", dgram.display()), "echo"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the socket there is a datagram socket; use unix-dgram:{} [not executed]",
            dgram.display()
        )),
        "{}",
        out.stderr
    );
    let stream = dir.path().join("s.sock");
    let _s = std::os::unix::net::UnixListener::bind(&stream).unwrap();
    let out = call(&[&format!("unix-dgram:{}", stream.display()), "echo"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the socket there is a stream socket; use unix:{}",
            stream.display()
        )),
        "{}",
        out.stderr
    );

    let long = format!("unix:/tmp/{}.sock", "a".repeat(120));
    let out = call(&[&long, "echo"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("a Unix socket path may be at most 107 bytes"),
        "{}",
        out.stderr
    );
    let out = call(&["unix-dgram:", "echo"]);
    assert!(
        out.stderr.contains("like unix-dgram:/run/wirecall.sock"),
        "{}",
        out.stderr
    );

    // `demo | head -1`: the reader goes after one line; the demo stops quietly.
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin())
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < TIMEOUT, "the demo did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "quiet");
}

#[test]
fn help_has_examples() {
    let out = wirecall(&["--help"], b"");
    assert_eq!(out.code, Some(0));
    let text = out.stdout_text();
    for part in [
        "serve",
        "call",
        "demo",
        "Examples:",
        "RUST_LOG",
        "tcp:[::1]:7000",
        "unix-dgram:/path",
        "udp:host:port",
    ] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
    let text = wirecall(&["serve", "--help"], b"").stdout_text();
    for part in [
        "--listen",
        "--workers",
        "--max-connections",
        "--max-frame",
        "--max-in-flight",
        "--unix-mode",
        "--datagram-cache",
        "--max-datagram",
        "--unix-max-datagram",
        "--max-budget",
        "listening on",
        "SIGTERM",
        "Examples:",
    ] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
    let text = wirecall(&["call", "--help"], b"").stdout_text();
    for part in ["Exit codes:", "--timeout", "[maybe executed]", "Examples:"] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
    let text = wirecall(&["demo", "--help"], b"").stdout_text();
    assert!(text.contains("Example:"), "{text}");
}

#[test]
fn demo_runs_and_cleans_up() {
    let out = wirecall(&["demo"], b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = out.stdout_text();
    println!("{text}");
    for transport in ["unix", "tcp", "unix-dgram", "udp"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{transport:<11} echo   hello, wirecall"))),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{transport:<11} upper  SHOUT"))),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with(&format!(
                "{transport:<11} list   echo,upper,time,sleep,spin,stats,list"
            ))),
            "{text}"
        );
    }
    assert!(!text.contains("failed"), "{text}");
    assert!(text.contains("socket files removed: yes"), "{text}");
    // The temporary directory is gone too.
    let path = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("unix-dgram:"))
        .unwrap();
    assert!(!Path::new(path).exists());
    assert!(!Path::new(path).parent().unwrap().exists());
}
