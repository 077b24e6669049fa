//! End-to-end: bad input from plain sockets (garbage, a malformed frame, a half-written
//! frame, an oversized length prefix) closes only that connection, is logged and counted in
//! `stats`, and a client with calls in flight at the time never notices. Also: connections
//! over `--max-connections` are refused cleanly and counted; a client that sends its last
//! request and its end of stream together is answered and closed at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use wirecall::core::client::Execution;
use wirecall::core::frame::encode_frame;
use wirecall::core::wire::{
    Frame, Hello, MAGIC, PROTOCOL_VERSION, Reply, Request, RequestId, Response,
};
use wirecall::{Client, ClientConfig, Endpoint};
use wirecall_tests::{ServerProcess, parse_stats, wait_until};

const WAIT: Duration = Duration::from_secs(10);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn connect(endpoint: &str) -> Client {
    let endpoint: Endpoint = endpoint.parse().unwrap();
    Client::connect(&endpoint, ClientConfig::default()).unwrap()
}

fn stats(client: &mut Client) -> HashMap<String, u64> {
    let text = client.call("stats", b"", Some(WAIT)).unwrap();
    parse_stats(&String::from_utf8(text).unwrap())
}

fn frame(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = encode_frame(frame, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn hello() -> Vec<u8> {
    frame(&Frame::Hello(Hello {
        magic: MAGIC,
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame_len: 65_536,
        max_in_flight: 0,
    }))
}

/// A plain socket to either transport.
enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Raw {
    fn connect(endpoint: &str) -> Self {
        let raw = if let Some(path) = endpoint.strip_prefix("unix:") {
            Self::Unix(UnixStream::connect(path).unwrap())
        } else {
            let addr = endpoint.strip_prefix("tcp:").unwrap();
            Self::Tcp(TcpStream::connect(addr).unwrap())
        };
        match &raw {
            Self::Unix(s) => s.set_read_timeout(Some(WAIT)).unwrap(),
            Self::Tcp(s) => s.set_read_timeout(Some(WAIT)).unwrap(),
        }
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Self::Unix(s) => s.write_all(bytes).unwrap(),
            Self::Tcp(s) => s.write_all(bytes).unwrap(),
        }
    }

    /// Reads until the server closes; fails if it does not within `WAIT`.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let result = match self {
            Self::Unix(s) => s.read_to_end(&mut all),
            Self::Tcp(s) => s.read_to_end(&mut all),
        };
        match result {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
        all
    }

    /// Reads what has come (waits up to `WAIT` for something).
    fn read_some(&mut self, buf: &mut [u8]) -> usize {
        match self {
            Self::Unix(s) => s.read(buf).unwrap(),
            Self::Tcp(s) => s.read(buf).unwrap(),
        }
    }

    /// Reads what has come within 200 ms: `Some` with the bytes if the server closed the
    /// connection by then, `None` if it is still open.
    fn read_to_close_or_nothing(&mut self) -> Option<Vec<u8>> {
        let short = Some(Duration::from_millis(200));
        match self {
            Self::Unix(s) => s.set_read_timeout(short).unwrap(),
            Self::Tcp(s) => s.set_read_timeout(short).unwrap(),
        }
        let mut all = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let read = match self {
                Self::Unix(s) => s.read(&mut chunk),
                Self::Tcp(s) => s.read(&mut chunk),
            };
            match read {
                Ok(0) => return Some(all),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(all),
                Err(_) => return None,
            }
        }
    }

    fn shutdown_write(&self) {
        match self {
            Self::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Self::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
    }
}

/// The close frame's code, if the bytes hold our hello then a close frame.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut decoder = wirecall::core::frame::FrameDecoder::new(vec![0u8; 4096], 4000);
    assert_eq!(decoder.feed(bytes), bytes.len());
    let mut code = None;
    while let Ok(Some(body)) = decoder.next_frame() {
        if let Ok(Frame::Close { code: c, .. }) = Frame::decode(body) {
            code = Some(c.0);
        }
    }
    code
}

#[test]
fn bad_input_closes_only_its_own_connection_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("abuse.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            "tcp:127.0.0.1:0",
            "--workers",
            "2",
        ],
        &[("RUST_LOG", "warn")],
    )
    .unwrap();
    let (unix, tcp) = (server.endpoints[0].clone(), server.endpoints[1].clone());

    // A good client with calls in flight through everything that follows.
    let mut good = connect(&tcp);
    let slow: Vec<RequestId> = (0..8)
        .map(|_| good.submit("sleep", b"300", Some(WAIT)).unwrap())
        .collect();

    // 1. Not wirecall at all: an HTTP request.
    for endpoint in [&unix, &tcp] {
        let mut raw = Raw::connect(endpoint);
        raw.send(b"GET / HTTP/1.1\r\nHost: wirecall\r\n\r\n");
        let reply = raw.read_to_close();
        assert_eq!(close_code(&reply), Some(4), "NOT_WIRECALL from {endpoint}");
    }

    // 2. A hello, then a frame whose body does not decode.
    let mut raw = Raw::connect(&unix);
    raw.send(&hello());
    raw.send(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    assert_eq!(
        close_code(&raw.read_to_close()),
        Some(1),
        "PROTOCOL_VIOLATION"
    );

    // 3. A hello, then a length prefix far over the limit.
    let mut raw = Raw::connect(&tcp);
    raw.send(&hello());
    raw.send(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert_eq!(close_code(&raw.read_to_close()), Some(3), "FRAME_TOO_LARGE");

    // 4. A hello and half a request; the connection stays open meanwhile.
    let request = frame(&Frame::Request(Request {
        id: RequestId(1),
        method: "echo",
        budget_ms: None,
        body: b"never finished",
    }));
    let mut half = Raw::connect(&unix);
    half.send(&hello());
    half.send(&request[..request.len() / 2]);

    // Meanwhile other clients work, on both transports.
    for endpoint in [&unix, &tcp] {
        let mut other = connect(endpoint);
        assert_eq!(other.call("echo", b"fine", Some(WAIT)).unwrap(), b"fine");
    }
    // Then the half-frame writer hangs up mid-frame: only it is closed.
    half.shutdown_write();
    let _ = half.read_to_close();

    // The calls in flight all along got their answers.
    for id in slow {
        assert_eq!(good.wait(id).unwrap(), b"300");
    }
    assert_eq!(good.call("upper", b"after", Some(WAIT)).unwrap(), b"AFTER");

    let mut probe = connect(&unix);
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&mut probe)["closed.truncated_frame"] >= 1
    }));
    let s = stats(&mut probe);
    assert_eq!(s["closed.not_wirecall"], 2, "{s:?}");
    assert_eq!(s["closed.malformed"], 1, "{s:?}");
    assert_eq!(s["closed.frame_too_large"], 1, "{s:?}");
    assert_eq!(
        s["closed.truncated_frame"], 1,
        "the half-written frame: {s:?}"
    );
    assert_eq!(s["protocol_errors"], 5, "{s:?}");
    assert_eq!(s["executions.sleep"], 8, "{s:?}");
    assert_eq!(s["executions.echo"], 2, "the half request never ran: {s:?}");

    // And the server said so in its log.
    for part in [
        "peer does not speak wirecall",
        "malformed frame",
        "over the limit",
    ] {
        assert!(
            server.wait_for_log(part, WAIT),
            "{part:?} in the server's log:\n{}",
            server.stderr()
        );
    }
}

#[test]
fn connections_over_the_limit_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("max.sock").display());
    let server =
        ServerProcess::start(bin(), &["--listen", &unix, "--max-connections", "2"], &[]).unwrap();
    let endpoint = &server.endpoints[0];
    let mut first = connect(endpoint);
    let mut second = connect(endpoint);
    assert_eq!(first.call("echo", b"1", Some(WAIT)).unwrap(), b"1");
    assert_eq!(second.call("echo", b"2", Some(WAIT)).unwrap(), b"2");

    // A third is accepted, told it is refused (hello, then a REFUSED close), and closed.
    let mut third = Raw::connect(endpoint);
    let told = third.read_to_close();
    assert!(told.windows(4).any(|w| w == b"WCAL"), "a hello: {told:?}");
    // A real client on a refused connection learns its call did not run.
    let mut fourth = connect(endpoint);
    let err = fourth.call("echo", b"4", Some(WAIT)).unwrap_err();
    assert_eq!(err.execution(), Execution::NotExecuted, "{err}");
    // And `wirecall call` says so in words, with the README's exit code for a call the
    // server did not take (5).
    let out = wirecall_tests::run(bin(), &["call", endpoint, "echo", "5"], b"", WAIT).unwrap();
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "wirecall: the server refused the connection (REFUSED): it is at its connection \
         limit or shutting down [not executed]\n"
    );

    let s = stats(&mut first);
    assert_eq!(s["connections.refused"], 3, "{s:?}");
    assert_eq!(s["connections.open"], 2, "{s:?}");
    assert_eq!(second.call("echo", b"still", Some(WAIT)).unwrap(), b"still");
    assert!(server.wait_for_log("refused, 2 connections are open", WAIT));
}

/// At the connection limit a new client takes the place of the peer that has gone longest
/// without a call, once that one has had none for `--evict-idle`: peers that finish the
/// hello and then send nothing, or only pings, cannot lock clients out. Connections with a
/// call in flight keep their place, and when every one is busy a new client is refused.
#[test]
fn idle_peers_at_the_connection_limit_make_room_for_a_new_client() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("evict.sock").display());
    let args = [
        "--listen",
        &unix,
        "--max-connections",
        "3",
        "--evict-idle",
        "1",
    ];
    let server = ServerProcess::start(bin(), &args, &[]).unwrap();
    let endpoint = &server.endpoints[0];
    // Three peers take every place: they finish the hello, then one pings, two say nothing.
    let mut peers: Vec<Raw> = (0..3)
        .map(|_| {
            let mut raw = Raw::connect(endpoint);
            raw.send(&hello());
            let mut buf = [0u8; 64];
            let n = raw.read_some(&mut buf);
            assert!(buf[..n].windows(4).any(|w| w == b"WCAL"), "a hello");
            raw
        })
        .collect();
    let started = Instant::now();
    // Well past --evict-idle (1 s), so a loaded machine still sees them idle long enough.
    while started.elapsed() < Duration::from_millis(2500) {
        peers[0].send(&frame(&Frame::Ping { nonce: 7 }));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new client gets in: the peer longest without a call makes room (pings are no call;
    // all three have had none since they connected, so the oldest goes).
    let out = wirecall_tests::run(bin(), &["call", endpoint, "echo", "in"], b"", WAIT).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"in");
    let evicted: Vec<usize> = (0..3)
        .filter(|&i| {
            let told = peers[i].read_to_close_or_nothing();
            told.is_some()
        })
        .collect();
    assert_eq!(evicted.len(), 1, "one peer made room: {evicted:?}");
    assert!(
        server.wait_for_log("without a call, to make room for", WAIT),
        "{}",
        server.stderr()
    );
    drop(peers);

    // Busy connections are never evicted: three clients with a slow call each hold the
    // places, and a fourth is refused, however long they have been waiting. (A server of
    // its own, so the peers above are surely gone.)
    let unix = format!("unix:{}", dir.path().join("busy.sock").display());
    let args = [
        "--listen",
        &unix,
        "--max-connections",
        "3",
        "--evict-idle",
        "1",
    ];
    let server = ServerProcess::start(bin(), &args, &[]).unwrap();
    let endpoint = &server.endpoints[0];
    let mut busy: Vec<Client> = (0..3).map(|_| connect(endpoint)).collect();
    let holds: Vec<_> = busy
        .iter_mut()
        .map(|c| c.submit("sleep", b"6000", Some(WAIT)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    let out = wirecall_tests::run(bin(), &["call", endpoint, "echo", "out"], b"", WAIT).unwrap();
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    for (client, id) in busy.iter_mut().zip(holds) {
        assert_eq!(client.wait(id).unwrap(), b"6000");
    }
    let s = stats(&mut busy[0]);
    assert_eq!(s["connections.evicted"], 0, "{s:?}");
    assert_eq!(s["connections.refused"], 1, "{s:?}");
}

/// Under an open-file limit of 48 the server keeps its connection limit below what the
/// descriptors allow and says so at start; a flood past it gets a hello and a refusal on
/// every connection (none is left with neither), and a normal call still works once
/// connections go, with no other client needed to wake the listener.
#[test]
fn the_connection_limit_stays_under_the_open_file_limit() {
    const FLOOD: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("fds.sock").display());
    let server = ServerProcess::start_after(bin(), "ulimit -n 48", &["--listen", &unix]).unwrap();
    // 48, less 16 kept for the server itself, less per event loop its poller, waker,
    // spare descriptor and one per endpoint.
    let loops: usize = wirecall_tests::server_threads().parse().unwrap();
    let room = 48 - 16 - (3 + 1) * loops;
    assert!(
        server.wait_for_log(&format!("at most {room} connections at once"), WAIT),
        "{}",
        server.stderr()
    );
    let endpoint = &server.endpoints[0];
    let mut first = connect(endpoint);
    let mut flood: Vec<Raw> = (0..FLOOD).map(|_| Raw::connect(endpoint)).collect();
    let mut refused = 0;
    for raw in &mut flood {
        // The server speaks first: a hello, and on a refused connection its close.
        let mut buf = [0u8; 64];
        let n = raw.read_some(&mut buf);
        assert!(
            buf[..n].windows(4).any(|w| w == b"WCAL"),
            "a hello: {:?}",
            &buf[..n]
        );
        if close_code(&buf[..n]).is_some() {
            refused += 1;
        } else {
            raw.send(&hello());
        }
    }
    let s = stats(&mut first);
    assert_eq!(s["connections.open"], room as u64, "{s:?}");
    assert_eq!(s["connections.refused"], (FLOOD + 1 - room) as u64, "{s:?}");
    assert!(refused <= FLOOD + 1 - room, "{refused}");
    flood.clear();
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&mut first)["connections.open"] == 1
    }));
    let mut late = connect(endpoint);
    assert_eq!(late.call("echo", b"late", Some(WAIT)).unwrap(), b"late");
}

/// Descriptors can run out below the connection limit: a connection refused through a
/// handshake of its own (here behind a PROXY header that never comes) holds one until it
/// is done. Then accepts fail for want of a descriptor even with no connection waiting (the
/// kernel says so before it looks); the server refuses what waits with its spare
/// descriptor, silently where words may not come first, and goes on serving rather than
/// trying again for as long as descriptors lack. One event loop: with two, a descriptor
/// one frees can go to the other's refusal in progress, which holds it for the handshake
/// timeout, as long as this test waits (the flood test above covers two loops).
#[test]
fn out_of_descriptors_with_nobody_waiting_the_server_serves_on() {
    const FLOOD: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("unix:{}", dir.path().join("plain.sock").display());
    let proxied = dir.path().join("proxied.sock");
    let proxied_endpoint = format!("unix:{}", proxied.display());
    let args = [
        "--listen",
        &plain,
        "--accept-proxy",
        &proxied_endpoint,
        "--threads",
        "1",
    ];
    let server = ServerProcess::start_after(bin(), "ulimit -n 40", &args).unwrap();
    // 40, less 16 kept for the server itself, less for its one event loop its poller,
    // waker, spare descriptor and one per endpoint.
    let room = 40 - 16 - (3 + 2);
    assert!(
        server.wait_for_log(&format!("at most {room} connections at once"), WAIT),
        "{}",
        server.stderr()
    );
    let mut first = connect(&plain);
    assert_eq!(first.call("echo", b"first", Some(WAIT)).unwrap(), b"first");
    // Each waits for its PROXY header: the first within the limit are set up, the next
    // are refused through a connection of their own, until descriptors run out.
    let mut flood: Vec<UnixStream> = (0..FLOOD)
        .map(|_| UnixStream::connect(&proxied).unwrap())
        .collect();
    assert!(
        server.wait_for_log("out of file descriptors", WAIT),
        "{}",
        server.stderr()
    );
    assert_eq!(
        first.call("echo", b"still", Some(WAIT)).unwrap(),
        b"still",
        "{}",
        server.stderr()
    );
    // Every connection is set up or refused, none left waiting to be accepted.
    let refused = (FLOOD + 1 - room) as u64;
    assert!(
        wait_until(WAIT, Duration::from_millis(10), || {
            stats(&mut first)["connections.refused"] >= refused
        }),
        "{}",
        server.stderr()
    );
    let s = stats(&mut first);
    assert_eq!(s["connections.open"], room as u64, "{s:?}");
    assert_eq!(s["connections.refused"], refused, "{s:?}");
    // Nothing came before a PROXY header: the refused ones are closed without a word,
    // the others still wait.
    for raw in &mut flood {
        raw.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        match raw.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "bytes before a PROXY header: {:?}", &buf[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
    }
    flood.clear();
    assert!(
        wait_until(WAIT, Duration::from_millis(10), || {
            stats(&mut first)["connections.open"] == 1
        }),
        "{}",
        server.stderr()
    );
    let mut late = connect(&plain);
    assert_eq!(late.call("echo", b"late", Some(WAIT)).unwrap(), b"late");
}

/// A peer that finishes the hello and then dribbles a frame a byte at a time (each byte
/// keeps keepalive happy) is closed once the frame has taken longer than
/// `--frame-timeout`, with `FRAME_TIMEOUT`, and counted; a real client is served
/// meanwhile and after.
#[test]
fn a_peer_that_dribbles_a_frame_is_closed_at_the_frame_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("dribble.sock").display());
    let server =
        ServerProcess::start(bin(), &["--listen", &unix, "--frame-timeout", "1"], &[]).unwrap();
    let endpoint = &server.endpoints[0];
    let mut raw = Raw::connect(endpoint);
    raw.send(&hello());
    let mut buf = [0u8; 64];
    let n = raw.read_some(&mut buf);
    assert!(
        buf[..n].windows(4).any(|w| w == b"WCAL"),
        "the server's hello"
    );
    // A 100-byte frame, one byte every 100 ms: it would take 10 s.
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x01; 100]);
    let mut told = Vec::new();
    for byte in &frame {
        let sent = match &mut raw {
            Raw::Unix(s) => s.write_all(std::slice::from_ref(byte)),
            Raw::Tcp(s) => s.write_all(std::slice::from_ref(byte)),
        };
        if sent.is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut closed = false;
        if let Raw::Unix(s) = &mut raw {
            s.set_nonblocking(true).unwrap();
            let mut chunk = [0u8; 256];
            match s.read(&mut chunk) {
                Ok(0) => closed = true,
                Ok(n) => told.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            s.set_nonblocking(false).unwrap();
        }
        if closed {
            break;
        }
    }
    told.extend(raw.read_to_close());
    assert_eq!(
        close_code(&told),
        Some(9),
        "closed with FRAME_TIMEOUT: {told:?}"
    );
    let mut client = connect(endpoint);
    let s = stats(&mut client);
    assert_eq!(s["closed.frame_timeout"], 1, "{s:?}");
    assert_eq!(client.call("echo", b"ok", Some(WAIT)).unwrap(), b"ok");
}

/// The server's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Memory grows with the bytes a peer sends, not with the length it declares: 64
/// connections that each declare a 16 MiB frame (under a 16 MiB `--max-frame`) and send
/// 22 bytes of it leave the server within a few KiB each (it used to commit the whole
/// declared length: about 1 GiB here), and it still serves.
#[test]
fn a_declared_frame_length_commits_no_memory_until_the_bytes_come() {
    const PEERS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("declared.sock").display());
    let server =
        ServerProcess::start(bin(), &["--listen", &unix, "--max-frame", "16777216"], &[]).unwrap();
    let endpoint = &server.endpoints[0];
    let mut client = connect(endpoint);
    assert_eq!(client.call("echo", b"warm", Some(WAIT)).unwrap(), b"warm");
    let before = rss_kib(server.pid());
    let mut peers: Vec<Raw> = (0..PEERS)
        .map(|_| {
            let mut raw = Raw::connect(endpoint);
            let mut bytes = hello();
            bytes.extend_from_slice(&(16u32 << 20).to_be_bytes());
            bytes.extend_from_slice(&[0x01; 11]);
            raw.send(&bytes);
            raw
        })
        .collect();
    // Every peer's bytes are in: a stats call on a connection made after them is answered
    // once the event loop has had its turns, and it counts them open.
    assert!(wait_until(WAIT, Duration::from_millis(10), || {
        stats(&mut client)["connections.open"] == PEERS as u64 + 1
    }));
    // The rest of the 22 bytes in a second write: the next read is where storage grew to
    // the declared length.
    for raw in &mut peers {
        raw.send(&[0x01; 11]);
    }
    let _ = stats(&mut client);
    let _ = stats(&mut client);
    let after = rss_kib(server.pid());
    let growth = after.saturating_sub(before);
    println!("resident memory {before} KiB -> {after} KiB with {PEERS} declared 16 MiB frames");
    assert!(
        growth < PEERS as u64 * 64,
        "{growth} KiB for {PEERS} peers that sent 26 bytes each"
    );
    assert_eq!(client.call("echo", b"still", Some(WAIT)).unwrap(), b"still");
    peers.clear();
}

/// A flood of connections over the limit gets one warning a second, not one each: the
/// lines logged and the counts they say were left out add up to every refusal.
#[test]
fn warnings_about_refused_connections_are_rate_limited_and_summed_up() {
    const FLOOD: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("flood.sock").display());
    let mut server =
        ServerProcess::start(bin(), &["--listen", &unix, "--max-connections", "1"], &[]).unwrap();
    let endpoint = server.endpoints[0].clone();
    let mut first = connect(&endpoint);
    for _ in 0..FLOOD {
        let mut raw = Raw::connect(&endpoint);
        let _ = raw.read_to_close();
    }
    let s = stats(&mut first);
    assert_eq!(s["connections.refused"], FLOOD as u64, "{s:?}");
    drop(first);
    server.signal(wirecall_tests::Signal::TERM).unwrap();
    assert!(server.wait_exit(WAIT).is_some_and(|s| s.success()));
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(lines.len() < FLOOD / 2, "rate-limited: {log}");
    // Each logged line is one refusal, plus the ones it says were left out.
    let number_before = |line: &str, words: &str| -> u64 {
        line.split(words)
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let total: u64 = lines
        .iter()
        .map(|l| {
            if l.contains("more like the last were left out") {
                number_before(l, " more like the last")
            } else if l.contains("more like it left out") {
                1 + number_before(l, " more like it left out")
            } else {
                1
            }
        })
        .sum();
    assert_eq!(total, FLOOD as u64, "{log}");
}

/// A client that writes its last request and its end of stream at once, on a connection
/// already in use: the server's read takes the request and stops short, and no further
/// readiness edge would announce the end of stream, so the server must read on to see it.
/// It answers the last request too (PROTOCOL.md 7.2: a client's end of stream means it
/// sends nothing more, not that it stops reading), a slow one as well as a quick one, and
/// then closes at once, rather than at the keepalive timeout.
#[test]
fn a_request_and_the_end_of_stream_together_are_answered_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("eof.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--listen", &unix, "--listen", "tcp:127.0.0.1:0"],
        &[],
    )
    .unwrap();
    let call = |id: u64, method: &'static str, body: &'static [u8]| {
        frame(&Frame::Request(Request {
            id: RequestId(id),
            method,
            budget_ms: Some(5_000),
            body,
        }))
    };
    let request = |id, body| call(id, "echo", body);
    for endpoint in &server.endpoints {
        for round in 0..10u64 {
            let mut raw = Raw::connect(endpoint);
            let mut decoder = wirecall::core::frame::FrameDecoder::new(vec![0u8; 4096], 4000);
            let mut answers = Vec::new();
            // A first call, answered on the open connection: the server has read it all.
            let mut bytes = hello();
            bytes.extend(request(1, b"first"));
            raw.send(&bytes);
            while answers.is_empty() {
                let mut buf = [0u8; 512];
                let n = raw.read_some(&mut buf);
                assert!(n > 0, "{endpoint}: closed before the first answer");
                assert_eq!(decoder.feed(&buf[..n]), n);
                collect_answers(&mut decoder, &mut answers);
            }
            // The last calls and the end of stream, together: a quick one, and on some
            // rounds a slow one that is still running when the end of stream is read.
            let mut last = request(2, b"last words");
            let slow = round % 3 == 0;
            if slow {
                last.extend(call(3, "sleep", b"50"));
            }
            raw.send(&last);
            raw.shutdown_write();
            let rest = raw.read_to_close();
            assert_eq!(decoder.feed(&rest), rest.len());
            collect_answers(&mut decoder, &mut answers);
            let mut expected = vec![(1, b"first".to_vec()), (2, b"last words".to_vec())];
            if slow {
                expected.push((3, b"50".to_vec()));
            }
            assert_eq!(answers, expected, "{endpoint} round {round}");
        }
    }
}

/// Takes the `Ok` answers out of the decoder as (id, body).
fn collect_answers(
    decoder: &mut wirecall::core::frame::FrameDecoder<Vec<u8>>,
    answers: &mut Vec<(u64, Vec<u8>)>,
) {
    while let Ok(Some(body)) = decoder.next_frame() {
        if let Ok(Frame::Response(Response {
            id,
            reply: Reply::Ok(body),
        })) = Frame::decode(body)
        {
            answers.push((id.0, body.to_vec()));
        }
    }
}
