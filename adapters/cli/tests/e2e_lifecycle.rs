//! End-to-end: the server's life: a stale socket file is replaced but a live server's is
//! never taken; SIGTERM under load answers every call already received, refuses later ones
//! cleanly (not executed), exits 0 and removes its socket file; SIGINT does the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wirecall::{CallErrorKind, Client, ClientConfig, Endpoint, Execution};
use wirecall_tests::{ServerProcess, Signal, parse_stats, run, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// A call and the answer it must get.
type Expected = (wirecall::core::RequestId, Vec<u8>);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn connect(endpoint: &str) -> Client {
    let endpoint: Endpoint = endpoint.parse().unwrap();
    Client::connect(&endpoint, ClientConfig::default()).unwrap()
}

fn stats(endpoint: &str) -> HashMap<String, u64> {
    let text = connect(endpoint).call("stats", b"", Some(WAIT)).unwrap();
    parse_stats(&String::from_utf8(text).unwrap())
}

#[test]
fn sigterm_under_load_answers_every_received_call() {
    const CLIENTS: usize = 20;
    const SLEEPS: usize = 4;
    const ECHOES: usize = 4;
    const BACKGROUND: usize = 4;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shutdown.sock");
    let unix = format!("unix:{}", path.display());
    let mut server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            "tcp:127.0.0.1:0",
            "--workers",
            "2",
        ],
        &[("RUST_LOG", "info")],
    )
    .unwrap();
    let endpoints = server.endpoints.clone();

    // Clients with calls in flight: sleeps that outlast the signal, and echoes.
    let mut clients: Vec<(Client, Vec<Expected>)> = (0..CLIENTS)
        .map(|i| {
            let mut client = connect(&endpoints[i % 2]);
            let mut calls = Vec::new();
            // Each connection's last call is a sleep: once the server has taken every
            // sleep, it has taken every call before them too (frames are taken in order).
            for j in 0..SLEEPS {
                let body = format!("client {i} echo {j}").into_bytes();
                let id = client.submit("echo", &body, Some(WAIT)).unwrap();
                calls.push((id, body));
                let id = client.submit("sleep", b"300", Some(WAIT)).unwrap();
                calls.push((id, b"300".to_vec()));
            }
            (client, calls)
        })
        .collect();

    // Background traffic that keeps calling through the shutdown.
    let stop = Arc::new(AtomicBool::new(false));
    let background: Vec<_> = (0..BACKGROUND)
        .map(|i| {
            // Connected here, before the signal; calls made from the thread.
            let mut client = connect(&endpoints[i % 2]);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                for n in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!("bg {i} {n}");
                    match client.call("echo", body.as_bytes(), Some(WAIT)) {
                        Ok(answer) => {
                            assert_eq!(answer, body.as_bytes());
                            ok += 1;
                        }
                        Err(e) => {
                            // A call the server never took: said so, never "maybe".
                            assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
                            refused += 1;
                            break;
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();

    // Every call above has reached the server before the signal.
    let want = (CLIENTS * SLEEPS) as u64;
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&endpoints[0])["calls.sleep"] == want
    }));

    let signalled = Instant::now();
    server.signal(Signal::TERM).unwrap();

    for (client, calls) in &mut clients {
        for (id, want) in calls.drain(..) {
            let got = client
                .wait(id)
                .unwrap_or_else(|e| panic!("a received call was not answered: {e}"));
            assert_eq!(got, want);
        }
    }
    let status = server.wait_exit(WAIT).expect("the server exits");
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for t in background {
        let (o, r) = t.join().unwrap();
        ok += o;
        refused += r;
    }
    println!(
        "shutdown: {} calls in flight at SIGTERM all answered; exit after {took:.2?}; \
         background calls: {ok} answered, {refused} refused (not executed)",
        CLIENTS * (SLEEPS + ECHOES)
    );
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        took >= Duration::from_millis(100),
        "it waited for the sleeps"
    );
    assert!(!path.exists(), "socket file removed");
    let log = server.stderr();
    assert!(
        log.contains("SIGTERM received: shutting down gracefully"),
        "{log}"
    );
    assert!(log.contains("shutdown complete"), "{log}");

    // A client connected to a stopped server gets a clean refusal.
    let endpoint: Endpoint = endpoints[1].parse().unwrap();
    let err = Client::connect(&endpoint, ClientConfig::default()).unwrap_err();
    assert!(err.to_string().contains("Connection refused"), "{err}");
}

/// A second SIGTERM stops the server at once; calls it had taken go unanswered, so it says
/// how many and exits non-zero (1), while the client learns its call may have run.
#[test]
fn a_second_sigterm_that_abandons_calls_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("twice.sock").display());
    let mut server =
        ServerProcess::start(bin(), &["--listen", &unix], &[("RUST_LOG", "info")]).unwrap();
    let mut client = connect(&unix);
    let slow = client.submit("sleep", b"20000", Some(WAIT)).unwrap();
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&unix).get("calls.sleep") == Some(&1)
    }));
    server.signal(Signal::TERM).unwrap();
    assert!(server.wait_for_log("shutting down gracefully", WAIT));
    server.signal(Signal::TERM).unwrap();
    let status = server.wait_exit(WAIT).expect("the server stopped at once");
    assert_eq!(status.code(), Some(1), "{}", server.stderr());
    assert!(
        server
            .stderr()
            .contains("wirecall: stopped with 1 call(s) taken and not answered"),
        "{}",
        server.stderr()
    );
    let err = client.wait(slow).unwrap_err();
    assert_eq!(err.execution(), Execution::MaybeExecuted, "{err}");
}

#[test]
fn a_call_sent_after_the_go_away_is_refused_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("goaway.sock");
    let unix = format!("unix:{}", path.display());
    let mut server = ServerProcess::start(bin(), &["--listen", &unix], &[]).unwrap();
    let mut client = connect(&server.endpoints[0]);
    let sleeping = client.submit("sleep", b"300", Some(WAIT)).unwrap();
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&server.endpoints[0])["calls.sleep"] == 1
    }));
    server.signal(Signal::INT).unwrap();
    // The socket file goes in the same turn of the server's loop as the go-away.
    assert!(wait_until(WAIT, Duration::from_millis(1), || !path.exists()));
    match client.call("echo", b"late", Some(WAIT)) {
        Ok(_) => panic!("a call after the go-away was answered"),
        Err(e) => {
            assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
            assert!(
                matches!(e.kind(), CallErrorKind::Refused | CallErrorKind::NotSent(_)),
                "{e}"
            );
        }
    }
    assert_eq!(client.wait(sleeping).unwrap(), b"300");
    assert_eq!(server.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn stale_socket_is_replaced_but_a_live_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    let unix = format!("unix:{}", path.display());

    // A dead server's socket file: bound, then its listener gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut live = ServerProcess::start(bin(), &["--listen", &unix], &[]).unwrap();
    assert_eq!(
        connect(&unix).call("echo", b"up", Some(WAIT)).unwrap(),
        b"up"
    );

    // A second server on the same path gives up and leaves the first alone.
    let second = run(bin(), &["serve", "--listen", &unix], b"", WAIT).unwrap();
    assert_eq!(second.code, Some(1));
    assert_eq!(
        second.stderr,
        format!(
            "wirecall: cannot listen on {unix}: address in use (a live server is listening there)\n"
        )
    );
    assert_eq!(
        connect(&unix).call("echo", b"still", Some(WAIT)).unwrap(),
        b"still"
    );

    // Something that is not a socket is never removed.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let not_socket = format!("unix:{}", file.display());
    let out = run(bin(), &["serve", "--listen", &not_socket], b"", WAIT).unwrap();
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("the path exists and is not a socket"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    live.signal(Signal::TERM).unwrap();
    assert_eq!(live.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(!path.exists());
}
