//! End-to-end over the datagram transports (Unix datagram, UDP) against the real `wirecall
//! serve`: `sleep` calls answered out of order; bad datagrams from plain sockets dropped
//! and counted by reason while a client with calls in flight never notices; Unix datagram
//! socket-file hygiene; SIGTERM under load answers every call taken and rejects later
//! ones as not executed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wirecall::core::wire::datagram::{DatagramHeader, encode_datagram};
use wirecall::core::wire::{Frame, RejectCode, Reply, Request, RequestId, Response};
use wirecall::{CallErrorKind, Client, ClientConfig, Endpoint, Execution};
use wirecall_tests::{ServerProcess, Signal, parse_stats, run, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// Sends one datagram from a raw socket; `true` when the kernel took it.
type SendFn = dyn Fn(&[u8]) -> bool + Send;

/// A call and the answer it must get.
type Expected = (RequestId, Vec<u8>);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn connect(endpoint: &str) -> Client {
    let endpoint: Endpoint = endpoint.parse().unwrap();
    Client::connect(&endpoint, ClientConfig::default()).unwrap()
}

/// The server's counters, asked over `endpoint` (a stream or `unix-dgram:` one: the whole
/// text is more than one UDP datagram).
fn stats(endpoint: &str) -> HashMap<String, u64> {
    let text = connect(endpoint).call("stats", b"", Some(WAIT)).unwrap();
    parse_stats(&String::from_utf8(text).unwrap())
}

/// One datagram: a header and a frame.
fn datagram(header: DatagramHeader, frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = encode_datagram(header, frame, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn request(id: u64, method: &str, budget_ms: Option<u32>, body: &[u8]) -> Frame<'static> {
    // The frame borrows its strings; leaking a few bytes in a test keeps this simple.
    let method: &'static str = Box::leak(method.to_owned().into_boxed_str());
    let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
    Frame::Request(Request {
        id: RequestId(id),
        method,
        budget_ms,
        body,
    })
}

/// The reply in an answer datagram.
fn reply_of(answer: &[u8]) -> (RequestId, String) {
    let (_, body) = DatagramHeader::parse(answer).unwrap();
    match Frame::decode(body).unwrap() {
        Frame::Response(Response { id, reply }) => (id, format!("{reply:?}")),
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn sleeps_are_answered_out_of_order_over_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let unix_dgram = format!("unix-dgram:{}", dir.path().join("sleep.sock").display());
    // One worker: `sleep` holds no thread, so the worker stays free for `echo`.
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "udp:127.0.0.1:0",
            "--listen",
            &unix_dgram,
            "--workers",
            "1",
        ],
        &[],
    )
    .unwrap();
    for endpoint in &server.endpoints {
        let mut client = connect(endpoint);
        let timeout = Some(WAIT);
        let start = Instant::now();
        let slow = client.submit("sleep", b"200", timeout).unwrap();
        let fast = client.submit("sleep", b"20", timeout).unwrap();
        let echo = client.submit("echo", b"meanwhile", timeout).unwrap();
        let mut order = Vec::new();
        while let Some((id, outcome)) = client.wait_any() {
            order.push((id, outcome.unwrap(), start.elapsed()));
        }
        let ids: Vec<_> = order.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(ids, [echo, fast, slow], "{endpoint}: {order:?}");
        assert_eq!(order[0].1, b"meanwhile");
        assert_eq!(order[1].1, b"20");
        assert_eq!(order[2].1, b"200");
        assert!(order[1].2 >= Duration::from_millis(20), "{order:?}");
        assert!(order[2].2 >= Duration::from_millis(200), "{order:?}");
        println!(
            "{endpoint}: echo after {:.1?}, sleep 20 after {:.1?}, sleep 200 after {:.1?}",
            order[0].2, order[1].2, order[2].2
        );
    }
    // A sleep longer than the retransmission timeout runs once: the copies that arrive
    // while it runs are dropped as in progress, and the answer is sent once.
    let s = stats(&server.endpoints[1]);
    assert_eq!(s["executions.sleep"], 4, "{s:?}");
    assert_eq!(s["calls.sleep"], 4, "{s:?}");
    assert!(s["datagrams.dropped.in_progress"] >= 2, "{s:?}");
}

/// One epoch that never acknowledges cannot hold more than 65 calls of the cache: the
/// protocol keeps a client within 64 ids of its floor, and the server enforces it. 200
/// slow calls with floor 1 from raw datagrams: ids 1..=65 run, 66..=200 are rejected
/// (not run), and a second client is still served meanwhile.
#[test]
fn one_epoch_holds_at_most_65_calls() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("span.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--listen", "udp:127.0.0.1:0", "--listen", &unix],
        &[],
    )
    .unwrap();
    let udp = server.endpoints[0].strip_prefix("udp:").unwrap().to_owned();
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let epoch = 0x5ba0_0000_0000_0001;
    for id in 1..=200u64 {
        let header = DatagramHeader::new(epoch, 1);
        let bytes = datagram(header, &request(id, "sleep", Some(5000), b"2000"));
        raw.send_to(&bytes, &udp).unwrap();
    }
    // The rejections come back at once (the calls taken answer after 2 s).
    let mut rejected = Vec::new();
    for _ in 66..=200u64 {
        let (id, reply) = reply_of(&recv(&raw));
        assert!(
            reply.contains("more than 64 above the client's floor"),
            "{reply}"
        );
        rejected.push(id.0);
    }
    rejected.sort_unstable();
    assert_eq!(rejected, (66..=200u64).collect::<Vec<_>>());
    let s = stats(&unix);
    assert_eq!(s["calls.sleep"], 65, "{s:?}");
    assert_eq!(s["datagrams.rejected"], 135, "{s:?}");
    assert_eq!(s["datagrams.in_progress"], 65, "{s:?}");
    let mut other = connect(&server.endpoints[0]);
    assert_eq!(other.call("echo", b"still", Some(WAIT)).unwrap(), b"still");
}

/// One address flooding the server with fresh calls (a new epoch in every datagram, each
/// with a long budget) gets its share of the call cache and busy answers past it, while a
/// well-behaved second client keeps being served: at least 95 % of its calls succeed
/// while the flood's calls hold their entries, on UDP and on a Unix datagram socket. On
/// UDP the flood goes on during the calls; on the Unix socket it is the burst of the
/// report (3,000 calls in 0.2 s) and the calls come after it, within its calls' windows,
/// because a sender that never pauses keeps the kernel's queue of a Unix datagram socket
/// (`net.unix.max_dgram_qlen`, 10 by default, shared by every sender) full, which no
/// cache can help (docs/SECURITY.md).
#[test]
fn a_flood_of_fresh_calls_from_one_address_does_not_starve_another_client() {
    const CALLS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let unix_dgram = format!("unix-dgram:{}", dir.path().join("flood.sock").display());
    let unix = format!("unix:{}", dir.path().join("flood-stats.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "udp:127.0.0.1:0",
            "--listen",
            &unix_dgram,
            "--listen",
            &unix,
        ],
        &[],
    )
    .unwrap();
    for endpoint in &server.endpoints[..2] {
        let udp = endpoint.starts_with("udp:");
        let flood: u64 = if udp { 200_000 } else { 3_000 };
        let send: Box<SendFn> = match endpoint.strip_prefix("udp:") {
            Some(addr) => {
                let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
                raw.connect(addr).unwrap();
                Box::new(move |d| raw.send(d).is_ok())
            }
            None => {
                let path = endpoint.strip_prefix("unix-dgram:").unwrap().to_owned();
                let raw = UnixDatagram::bind(dir.path().join("flooder.sock")).unwrap();
                raw.connect(path).unwrap();
                raw.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
                Box::new(move |d| raw.send(d).is_ok())
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let flooder = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            thread::spawn(move || {
                // Bursts of 150 every 10 ms: the rate of the report (3,000 in 0.2 s).
                for epoch in 1..=flood {
                    if stop.load(Ordering::Relaxed) {
                        return true;
                    }
                    let header = DatagramHeader::new(0xf100_d000_0000_0000 | epoch, 1);
                    if send(&datagram(header, &request(1, "echo", Some(50_000), b"x"))) {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if epoch % 150 == 0 {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                false
            })
        };
        // The flood is on: the first 3,000 fresh calls are out.
        assert!(wait_until(WAIT, Duration::from_millis(5), || {
            sent.load(Ordering::Relaxed) >= 3_000
        }));
        let mut client = connect(endpoint);
        let started = Instant::now();
        let mut failed = Vec::new();
        for i in 0..CALLS {
            let body = format!("call {i}");
            match client.call("echo", body.as_bytes(), Some(Duration::from_secs(2))) {
                Ok(answer) => assert_eq!(answer, body.as_bytes()),
                Err(e) => failed.push(format!("call {i}: {e}")),
            }
        }
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let still_flooding = flooder.join().unwrap();
        let sent = sent.load(Ordering::Relaxed);
        let ok = CALLS - failed.len();
        let s = stats(&unix);
        println!(
            "{endpoint}: {ok} of {CALLS} calls answered in {took:.1?} while one address sent \
             {sent} fresh calls; busy {}, of which past the peer's share {}; failures: {failed:?}",
            s["datagrams.busy"], s["datagrams.busy_peer_quota"]
        );
        assert!(
            !udp || still_flooding,
            "the calls were made during the flood"
        );
        assert!(ok * 100 >= CALLS * 95, "{ok} of {CALLS}");
        assert!(s["datagrams.busy_peer_quota"] > 0, "{s:?}");
    }
    // Each flooding address ran three epochs' calls, no more.
    let s = stats(&unix);
    assert!(s["executions.echo"] <= 2 * (3 + CALLS as u64), "{s:?}");
}

/// A UDP server never sends for a call more than three times the bytes it received for it,
/// so a forged source address cannot draw a large answer from a small request: the answer
/// to `stats datagrams.` (hundreds of bytes for a 50-byte request) is held back, each copy
/// answered busy with hint 0 ("held back: send another copy"), until the copies add up to a third of it; then it goes
/// out, and the client sees the answer. On a Unix datagram socket (whose sender the kernel
/// vouches for) it goes out at once.
#[test]
fn a_udp_answer_is_never_more_than_three_times_what_its_call_sent() {
    let dir = tempfile::tempdir().unwrap();
    let unix_dgram = format!("unix-dgram:{}", dir.path().join("amp.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--listen", "udp:127.0.0.1:0", "--listen", &unix_dgram],
        &[],
    )
    .unwrap();
    let udp = server.endpoints[0].strip_prefix("udp:").unwrap().to_owned();
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.connect(&udp).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let header = DatagramHeader::new(0xa3f0_0000_0000_0001, 1);
    let copy = datagram(header, &request(1, "stats", Some(5000), b"datagrams."));
    let (mut sent, mut received, mut copies) = (0usize, 0usize, 0usize);
    let answer = loop {
        assert!(copies < 64, "no answer after {copies} copies");
        raw.send(&copy).unwrap();
        sent += copy.len();
        copies += 1;
        let answer = recv(&raw);
        received += answer.len();
        assert!(
            received <= 3 * sent,
            "{received} bytes answered for {sent} sent"
        );
        let (_, reply) = reply_of(&answer);
        if reply.starts_with("Ok") {
            break answer;
        }
        assert_eq!(reply, "Busy { retry_after_ms: 0 }", "copy {copies}");
    };
    // Nothing more comes for the copies already answered.
    let mut spare = [0u8; 2048];
    assert!(raw.recv(&mut spare).is_err(), "one answer per copy");
    println!(
        "a {}-byte answer to {}-byte copies went out with copy {copies}: {received} bytes \
         answered for {sent} sent",
        answer.len(),
        copy.len()
    );
    assert!(answer.len() > 3 * copy.len(), "the answer is large");
    // A real client gets it, after a few quick busy answers.
    let mut client = connect(&server.endpoints[0]);
    let text = client.call("stats", b"datagrams.", Some(WAIT)).unwrap();
    assert!(text.starts_with(b"datagrams."));
    // On the Unix datagram socket it comes at once.
    let s = stats(&unix_dgram);
    assert!(s["datagrams.withheld"] >= copies as u64 - 1, "{s:?}");
    let unix = dir.path().join("amp-client.sock");
    let raw = UnixDatagram::bind(&unix).unwrap();
    raw.connect(unix_dgram.strip_prefix("unix-dgram:").unwrap())
        .unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.send(&copy).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = raw.recv(&mut buf).unwrap();
    let (_, reply) = reply_of(&buf[..n]);
    assert!(reply.starts_with("Ok"), "{reply}");
}

#[test]
fn bad_datagrams_are_dropped_and_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let dgram_path = dir.path().join("abuse-dgram.sock");
    let unix_dgram = format!("unix-dgram:{}", dgram_path.display());
    let unix = format!("unix:{}", dir.path().join("abuse.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "udp:127.0.0.1:0",
            "--listen",
            &unix_dgram,
            "--listen",
            &unix,
            "--max-datagram",
            "512",
            "--unix-max-datagram",
            "2048",
            "--workers",
            "2",
        ],
        &[("RUST_LOG", "warn")],
    )
    .unwrap();
    let udp = server.endpoints[0].clone();
    let udp_addr = udp.strip_prefix("udp:").unwrap().to_owned();

    // A good client with calls in flight through everything that follows.
    let mut good = connect(&udp);
    let slow: Vec<RequestId> = (0..8)
        .map(|_| good.submit("sleep", b"300", Some(WAIT)).unwrap())
        .collect();

    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let send = |bytes: &[u8]| {
        raw.send_to(bytes, &udp_addr).unwrap();
    };
    let epoch = 0x5eed_0000_0000_0001;
    let header = DatagramHeader::new(epoch, 0);

    // Dropped without an answer, one of each reason.
    send(b"hello"); // truncated: shorter than a header
    send(&[0x42; 64]); // foreign: no WCAL
    let mut other_version = DatagramHeader::new(epoch, 0);
    other_version.version = 9;
    send(&datagram(
        other_version,
        &request(1, "echo", Some(1000), b"v9"),
    ));
    let mut malformed = datagram(header, &request(1, "echo", Some(1000), b"x"));
    malformed.truncate(DatagramHeader::LEN);
    malformed.extend_from_slice(&[0xff, 0xff, 0xff]);
    send(&malformed);
    send(&datagram(
        header,
        &Frame::Response(Response {
            id: RequestId(1),
            reply: Reply::Ok(b"not a request"),
        }),
    ));
    send(&datagram(header, &request(0, "echo", Some(1000), b"id 0"))); // stale
    send(&datagram(header, &Frame::Cancel { id: RequestId(77) })); // stale cancel
    let mut oversize = datagram(header, &request(2, "echo", Some(1000), &[7; 600]));
    assert!(oversize.len() > 512);
    send(&oversize);
    oversize.truncate(512);

    // Answered: a rejection (no budget), a call and its retransmission (replayed, not run
    // again), a sleep and a copy sent while it runs (dropped as in progress).
    send(&datagram(header, &request(3, "echo", None, b"no budget")));
    let (id, reply) = reply_of(&recv(&raw));
    assert_eq!(id, RequestId(3));
    assert!(
        reply.contains("INVALID_REQUEST") || reply.contains("code: RejectCode(4)"),
        "{reply}"
    );
    let call = datagram(header, &request(4, "echo", Some(5000), b"once"));
    send(&call);
    let first = recv(&raw);
    send(&call);
    let second = recv(&raw);
    assert_eq!(first, second, "a replay is byte for byte the same answer");
    assert_eq!(
        reply_of(&first),
        (RequestId(4), format!("{:?}", Reply::Ok(b"once")))
    );
    let sleep = datagram(header, &request(5, "sleep", Some(5000), b"100"));
    send(&sleep);
    send(&sleep);
    assert_eq!(reply_of(&recv(&raw)).0, RequestId(5));

    // Over the Unix datagram socket: from a socket with no name (cannot be answered), a
    // truncated datagram, and a call whose sender is gone when the answer is sent.
    let unnamed = UnixDatagram::unbound().unwrap();
    unnamed
        .send_to(
            &datagram(header, &request(1, "echo", Some(1000), b"?")),
            &dgram_path,
        )
        .unwrap();
    let named_path = dir.path().join("gone.sock");
    let named = UnixDatagram::bind(&named_path).unwrap();
    named.send_to(b"short", &dgram_path).unwrap();
    named
        .send_to(
            &datagram(header, &request(1, "sleep", Some(5000), b"300")),
            &dgram_path,
        )
        .unwrap();
    drop(named);
    std::fs::remove_file(&named_path).unwrap();

    // Meanwhile other clients work, on both datagram transports.
    for endpoint in [&udp, &unix_dgram] {
        let mut other = connect(endpoint);
        assert_eq!(other.call("echo", b"fine", Some(WAIT)).unwrap(), b"fine");
    }
    // The calls in flight all along got their answers.
    for id in slow {
        assert_eq!(good.wait(id).unwrap(), b"300");
    }
    assert_eq!(good.call("upper", b"after", Some(WAIT)).unwrap(), b"AFTER");

    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&unix)["datagrams.dropped.send_failed"] >= 1
    }));
    let s = stats(&unix);
    let expect = [
        ("datagrams.dropped.truncated", 2),
        ("datagrams.dropped.foreign", 1),
        ("datagrams.dropped.unsupported_version", 1),
        ("datagrams.dropped.malformed", 1),
        ("datagrams.dropped.unexpected_frame", 1),
        ("datagrams.dropped.stale", 1),
        ("datagrams.dropped.stale_cancel", 1),
        ("datagrams.dropped.oversize", 1),
        ("datagrams.dropped.unaddressable", 1),
        ("datagrams.dropped.send_failed", 1),
        ("datagrams.dropped.other", 0),
        ("datagrams.rejected", 1),
        ("datagrams.in_progress", 0),
        ("executions.sleep", 10),
        ("executions.echo", 3),
        ("executions.upper", 1),
    ];
    for (name, want) in expect {
        assert_eq!(s[name], want, "{name}: {s:?}");
    }
    // The raw copies above, plus however many of the good client's own retransmissions
    // found its sleeps running or answered (it retransmits only while it waits).
    let in_progress = s["datagrams.dropped.in_progress"];
    assert!(in_progress >= 1, "{s:?}");
    assert!(s["datagrams.replayed"] >= 1, "{s:?}");
    assert_eq!(s["datagrams.dropped"], 11 + in_progress, "the sum: {s:?}");
    assert_eq!(
        s["protocol_errors"], 0,
        "datagrams never close anything: {s:?}"
    );

    // The core said so in the server's log (warn: a peer sending garbage).
    assert!(
        server.wait_for_log("dropped a bad datagram", WAIT),
        "{}",
        server.stderr()
    );
}

fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = socket.recv(&mut buf).expect("an answer");
    buf.truncate(n);
    buf
}

#[test]
fn stale_unix_datagram_socket_is_replaced_but_a_live_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale-dgram.sock");
    let unix_dgram = format!("unix-dgram:{}", path.display());

    // A dead server's socket file: bound, then its socket gone.
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let mut live = ServerProcess::start(bin(), &["--listen", &unix_dgram], &[]).unwrap();
    assert_eq!(
        connect(&unix_dgram)
            .call("echo", b"up", Some(WAIT))
            .unwrap(),
        b"up"
    );

    // A second server on the same path, datagram or stream, leaves the first alone.
    for listen in [unix_dgram.clone(), format!("unix:{}", path.display())] {
        let second = run(bin(), &["serve", "--listen", &listen], b"", WAIT).unwrap();
        assert_eq!(second.code, Some(1), "{listen}: {}", second.stderr);
        assert!(
            second
                .stderr
                .starts_with(&format!("wirecall: cannot listen on {listen}: ")),
            "{}",
            second.stderr
        );
    }
    assert_eq!(
        connect(&unix_dgram)
            .call("echo", b"still", Some(WAIT))
            .unwrap(),
        b"still"
    );

    // Something that is not a socket is never removed.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let not_socket = format!("unix-dgram:{}", file.display());
    let out = run(bin(), &["serve", "--listen", &not_socket], b"", WAIT).unwrap();
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("the path exists and is not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    live.signal(Signal::TERM).unwrap();
    assert_eq!(live.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(!path.exists(), "socket file removed");
}

#[test]
fn sigterm_under_load_over_udp_answers_every_taken_call() {
    const CLIENTS: usize = 20;
    const SLEEPS: usize = 4;
    const BACKGROUND: usize = 4;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shutdown-dgram.sock");
    let unix_dgram = format!("unix-dgram:{}", path.display());
    let mut server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "udp:127.0.0.1:0",
            "--listen",
            &unix_dgram,
            "--workers",
            "2",
        ],
        &[("RUST_LOG", "info")],
    )
    .unwrap();
    let udp = server.endpoints[0].clone();

    // Clients with calls in flight: echoes, and sleeps that outlast the signal.
    let mut clients: Vec<(Client, Vec<Expected>)> = (0..CLIENTS)
        .map(|i| {
            let mut client = connect(&udp);
            let mut calls = Vec::new();
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
            let mut client = connect(&udp);
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
                            // A call the server did not take: said so, never "maybe".
                            assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
                            assert!(
                                matches!(e.kind(), CallErrorKind::Rejected { code, .. }
                                    if *code == RejectCode::SHUTTING_DOWN),
                                "{e}"
                            );
                            refused += 1;
                            break;
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();

    // Every sleep above has reached the server before the signal.
    let want = (CLIENTS * SLEEPS) as u64;
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&unix_dgram)["calls.sleep"] == want
    }));

    let signalled = Instant::now();
    server.signal(Signal::TERM).unwrap();
    // The socket file goes as the shutdown begins.
    assert!(wait_until(WAIT, Duration::from_millis(1), || !path.exists()));

    for (client, calls) in &mut clients {
        for (id, want) in calls.drain(..) {
            let got = client
                .wait(id)
                .unwrap_or_else(|e| panic!("a taken call was not answered: {e}"));
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
        "datagram shutdown: {} calls in flight at SIGTERM all answered; exit after {took:.2?}; \
         background calls: {ok} answered, {refused} rejected (not executed)",
        CLIENTS * SLEEPS * 2
    );
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        took >= Duration::from_millis(100),
        "it waited for the sleeps"
    );
    assert_eq!(
        refused, BACKGROUND as u64,
        "each background client was told"
    );
    let log = server.stderr();
    assert!(
        log.contains("SIGTERM received: shutting down gracefully"),
        "{log}"
    );
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!path.exists());
}
