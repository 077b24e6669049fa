//! `lossy_relay` on loopback: with no loss and every datagram duplicated, each datagram
//! reaches the other side twice, both ways, and each client gets its own upstream socket;
//! with total loss nothing does. (The cross-host test in `adapters/tests/e2e_netns.rs`
//! drives it with real calls.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wirecall_tests::{parse_stats, wait_child};

const WAIT: Duration = Duration::from_secs(10);

/// Starts the relay towards `upstream`; returns it and the address it listens on.
fn relay(upstream: &str, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lossy_relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--run-for",
            "30",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("relay listening on ")
        .unwrap()
        .to_owned();
    child.stdout = Some(out.into_inner());
    (child, addr)
}

/// Closes the relay's stdin and returns its counters.
fn finish(mut child: Child) -> std::collections::HashMap<String, u64> {
    drop(child.stdin.take());
    let status = wait_child(&mut child, WAIT).expect("the relay stops when stdin closes");
    assert!(status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
    parse_stats(&text)
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

#[test]
fn duplicates_both_ways_and_keeps_clients_apart() {
    let server = socket();
    let (child, addr) = relay(
        &server.local_addr().unwrap().to_string(),
        &["--dup", "100", "--delay-ms", "2", "--seed", "3"],
    );
    let clients = [socket(), socket()];
    let mut buf = [0u8; 64];
    for (i, client) in clients.iter().enumerate() {
        client
            .send_to(format!("hello {i}").as_bytes(), &addr)
            .unwrap();
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("hello {i}").as_bytes());
            peers.push(from);
        }
        assert_eq!(peers[0], peers[1], "one upstream socket per client");
        server.send_to(b"answer", peers[0]).unwrap();
        for _ in 0..2 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"answer");
            assert_eq!(
                from.to_string(),
                addr,
                "answers come from the relay's address"
            );
        }
    }
    let counts = finish(child);
    assert_eq!(counts["to_server.received"], 2, "{counts:?}");
    assert_eq!(counts["to_server.sent"], 4, "{counts:?}");
    assert_eq!(counts["to_client.sent"], 4, "{counts:?}");
    assert_eq!(counts["clients"], 2, "{counts:?}");
}

#[test]
fn total_loss_delivers_nothing() {
    let server = socket();
    let (child, addr) = relay(
        &server.local_addr().unwrap().to_string(),
        &["--loss", "100"],
    );
    let client = socket();
    for _ in 0..10 {
        client.send_to(b"lost", &addr).unwrap();
    }
    let mut buf = [0u8; 16];
    assert!(server.recv_from(&mut buf).is_err(), "nothing gets through");
    let counts = finish(child);
    assert_eq!(counts["to_server.received"], 10, "{counts:?}");
    assert_eq!(counts["to_server.dropped"], 10, "{counts:?}");
    assert_eq!(counts["to_server.sent"], 0, "{counts:?}");
}
