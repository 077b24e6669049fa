//! End-to-end: the real `wirecall` binary, `serve` in one process and `call` in others, over
//! Unix, TCP/IPv4 and TCP/IPv6; `call`'s exit codes and messages; `--help`; `demo`.
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
fn calls_over_unix_tcp_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let mut args = vec!["--listen", unix.as_str(), "--listen", "tcp:127.0.0.1:0"];
    let v6 = ipv6_loopback();
    match &v6 {
        Ok(()) => args.extend(["--listen", "tcp:[::1]:0"]),
        Err(why) => println!("skipping the IPv6 part: {why}"),
    }
    let server = ServerProcess::start(bin(), &args, &[]).unwrap();
    assert_eq!(server.endpoints[0], unix);
    assert!(server.endpoints[1].starts_with("tcp:127.0.0.1:"));
    assert!(!server.endpoints[1].ends_with(":0"), "real port shown");
    if v6.is_ok() {
        assert!(server.endpoints[2].starts_with("tcp:[::1]:"));
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
        assert_eq!(out.stdout_text(), "echo\nupper\ntime\nsleep\nstats\nlist\n");

        let out = call(&[ep, "sleep", "30"]);
        assert_eq!(out.stdout, b"30");
    }

    let stats = parse_stats(&call(&[&server.endpoints[0], "stats"]).stdout_text());
    let per_endpoint = server.endpoints.len() as u64;
    assert_eq!(stats["calls.echo"], per_endpoint);
    assert_eq!(stats["executions.upper"], per_endpoint);
    assert_eq!(stats["connections.accepted"], 5 * per_endpoint + 1);
    assert_eq!(
        stats["connections.open"], 1,
        "only the stats call's connection"
    );
    assert_eq!(stats["protocol_errors"], 0);
    assert_eq!(
        stats["closed.graceful"],
        5 * per_endpoint,
        "`call` closes gracefully"
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

    let out = call(&["udp:127.0.0.1:9", "echo"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        "wirecall: udp:127.0.0.1:9: datagram transports are not implemented yet\n"
    );

    let out = call(&["nonsense", "echo"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("expected unix:/path, unix-dgram:/path, tcp:host:port or udp:host:port"),
        "{}",
        out.stderr
    );

    // The server is unaffected by all of that.
    assert_eq!(call(&[ep, "echo", "still here"]).stdout, b"still here");
}

#[test]
fn serve_rejects_datagram_endpoints_and_sets_the_socket_mode() {
    let out = wirecall(&["serve", "--listen", "udp:127.0.0.1:0"], b"");
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        "wirecall: udp:127.0.0.1:0: datagram transports are not implemented yet\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let unix = format!("unix:{}", path.display());
    let _server =
        ServerProcess::start(bin(), &["--listen", &unix, "--unix-mode", "0600"], &[]).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);

    let out = wirecall(&["serve", "--listen", &unix, "--unix-mode", "999"], b"");
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("octal file mode"), "{}", out.stderr);
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
    for transport in ["unix", "tcp"] {
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
                "{transport:<11} list   echo,upper,time,sleep,stats,list"
            ))),
            "{text}"
        );
    }
    assert_eq!(text.matches("not yet implemented").count(), 2);
    assert!(text.contains("socket file removed: yes"), "{text}");
    // The temporary directory is gone too.
    let line = text.lines().next().unwrap();
    let path = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("unix:"))
        .unwrap();
    assert!(!Path::new(path).exists());
    assert!(!Path::new(path).parent().unwrap().exists());
}
