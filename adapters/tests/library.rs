//! The `wirecall` library in-process: a server built with `ServerBuilder` on real sockets
//! of all four transports, called with `Client`. Worker pool, deferred answers, panics,
//! oversized answers, a dropped responder, backpressure from a client that does not read,
//! and what is particular to datagrams (busy workers, deadlines, request sizes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::thread;
use std::time::{Duration, Instant};

use wirecall::core::wire::RejectCode;
use wirecall::function::{ERROR_ANSWER_TOO_LARGE, ERROR_FUNCTION_PANICKED, ERROR_NO_ANSWER};
use wirecall::{
    CallErrorKind, Client, ClientConfig, Endpoint, Execution, ServerBuilder, ServerConfig,
    ShutdownHandle,
};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A running in-process server; shut down and joined on drop.
struct Running {
    endpoints: Vec<Endpoint>,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<Result<(), wirecall::Error>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

fn start(builder: ServerBuilder) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let server = builder
        .listen(Endpoint::Unix(dir.path().join("lib.sock")))
        .listen(Endpoint::Tcp("127.0.0.1".into(), 0))
        .listen(Endpoint::UnixDatagram(dir.path().join("lib-dgram.sock")))
        .listen(Endpoint::Udp("127.0.0.1".into(), 0))
        .build()
        .unwrap();
    let endpoints = server.endpoints().to_vec();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.run());
    Running {
        endpoints,
        stop,
        thread: Some(thread),
        _dir: dir,
    }
}

fn functions(workers: usize) -> ServerBuilder {
    ServerBuilder::new(ServerConfig::default())
        .workers(workers)
        .function("echo", |b| Ok(b.to_vec()))
        .function("slow", |b| {
            thread::sleep(Duration::from_millis(300));
            Ok(b.to_vec())
        })
        .function("panic", |_| panic!("on purpose"))
        .function("huge", |_| Ok(vec![7u8; 200_000]))
        .function("big", |b| Ok(vec![b.first().copied().unwrap_or(0); 60_000]))
        .deferred("drop", |_, responder| drop(responder))
        .deferred("thread", |b, responder| {
            let body = b.to_vec();
            thread::spawn(move || responder.respond(Ok(body)));
        })
}

#[test]
fn a_slow_function_on_a_worker_does_not_stall_other_calls() {
    let server = start(functions(2));
    for endpoint in &server.endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let start = Instant::now();
        let slow = client.submit("slow", b"s", WAIT).unwrap();
        let quick = client.submit("echo", b"q", WAIT).unwrap();
        let (first, answer) = client.wait_any().unwrap();
        assert_eq!(first, quick, "answers go out in completion order");
        assert_eq!(answer.unwrap(), b"q");
        assert!(start.elapsed() < Duration::from_millis(300));
        assert_eq!(client.wait(slow).unwrap(), b"s");
    }
}

#[test]
fn a_wait_with_a_timeout_ends_in_time_and_the_answer_comes_later() {
    let server = start(functions(2));
    for endpoint in &server.endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        assert!(
            client.wait_any_timeout(Duration::from_secs(10)).is_none(),
            "nothing waits"
        );
        let sent = std::time::Instant::now();
        let slow = client.submit("slow", b"s", WAIT).unwrap();
        // The function sleeps 300 ms: a 10 ms wait ends with no answer, unless this
        // thread was held up long enough for the answer to exist.
        let early = client.wait_any_timeout(Duration::from_millis(10));
        let (id, answer) = match early {
            None => {
                assert_eq!(client.pending(), 1);
                client.wait_any_timeout(Duration::from_secs(10)).unwrap()
            }
            Some(done) => {
                assert!(
                    sent.elapsed() >= Duration::from_millis(300),
                    "an answer too early"
                );
                done
            }
        };
        assert_eq!(id, slow);
        assert_eq!(answer.unwrap(), b"s");
        assert_eq!(client.pending(), 0);
    }
}

#[test]
fn failures_inside_functions_become_answers() {
    for (workers, endpoint) in [(0, 0), (2, 0), (0, 1), (0, 3), (2, 3), (2, 2)] {
        let server = start(functions(workers));
        let endpoint = &server.endpoints[endpoint];
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();

        let e = client.call("panic", b"", WAIT).unwrap_err();
        assert!(
            matches!(e.kind(), CallErrorKind::Remote { code, .. } if *code == ERROR_FUNCTION_PANICKED),
            "{e}"
        );
        assert_eq!(e.execution(), Execution::Executed);

        let e = client.call("huge", b"", WAIT).unwrap_err();
        assert!(
            matches!(e.kind(), CallErrorKind::Remote { code, .. } if *code == ERROR_ANSWER_TOO_LARGE),
            "{e}"
        );

        let e = client.call("drop", b"", WAIT).unwrap_err();
        assert!(
            matches!(e.kind(), CallErrorKind::Remote { code, .. } if *code == ERROR_NO_ANSWER),
            "{e}"
        );

        assert_eq!(client.call("thread", b"later", WAIT).unwrap(), b"later");
        let e = client.call("missing", b"", WAIT).unwrap_err();
        assert_eq!(e.execution(), Execution::NotExecuted);
        // The connection and the server survived all of it.
        assert_eq!(client.call("echo", b"ok", WAIT).unwrap(), b"ok");
    }
}

#[test]
fn a_client_that_does_not_read_is_held_back_and_others_are_not() {
    let server = start(functions(0));
    // Streams: a datagram server never waits for a client (answers it cannot send are
    // dropped, and replayed from its cache to the retransmission).
    for endpoint in &server.endpoints[..2] {
        let mut greedy = Client::connect(endpoint, ClientConfig::default()).unwrap();
        // Wait for the server's hello so the full window is open.
        assert_eq!(greedy.call("echo", b"hi", WAIT).unwrap(), b"hi");
        let window = greedy.max_in_flight();
        assert_eq!(window, 64);
        // 64 answers of 60 kB (3.8 MB) that it does not read for a while: more than the
        // socket buffers and the server's transmit buffer hold.
        let ids: Vec<_> = (0..window)
            .map(|i| {
                let tag = u8::try_from(i).unwrap();
                (greedy.submit("big", &[tag], WAIT).unwrap(), tag)
            })
            .collect();

        // Meanwhile the server serves others.
        for _ in 0..3 {
            let mut other = Client::connect(endpoint, ClientConfig::default()).unwrap();
            let start = Instant::now();
            assert_eq!(other.call("echo", b"x", WAIT).unwrap(), b"x");
            assert!(start.elapsed() < Duration::from_secs(1));
        }

        // When it reads, every answer is there, whole and in place.
        for (id, tag) in ids {
            let body = greedy.wait(id).unwrap();
            assert_eq!(body.len(), 60_000);
            assert!(body.iter().all(|b| *b == tag));
        }
        assert_eq!(greedy.call("echo", b"after", WAIT).unwrap(), b"after");
    }
}

#[test]
fn a_full_worker_queue_answers_busy_not_executed() {
    let mut config = ServerConfig::default();
    config.worker_queue = 1;
    let builder = ServerBuilder::new(config).workers(1).function("slow", |b| {
        thread::sleep(Duration::from_millis(200));
        Ok(b.to_vec())
    });
    let stats = builder.stats();
    let slow = move || stats.snapshot().methods[0].clone();
    let server = start(builder);
    let mut client = Client::connect(&server.endpoints[0], ClientConfig::default()).unwrap();
    let poll = Duration::from_millis(1);
    // One runs on the only worker...
    let running = client.submit("slow", &[0], WAIT).unwrap();
    assert!(wirecall_tests::wait_until(
        Duration::from_secs(10),
        poll,
        || slow().executions == 1
    ));
    // ...one waits in the queue...
    let queued = client.submit("slow", &[1], WAIT).unwrap();
    assert!(wirecall_tests::wait_until(
        Duration::from_secs(10),
        poll,
        || slow().calls == 2
    ));
    // ...and the next finds the queue full.
    let e = client.call("slow", &[2], WAIT).unwrap_err();
    assert!(matches!(e.kind(), CallErrorKind::Busy { .. }), "{e}");
    assert_eq!(e.execution(), Execution::NotExecuted);
    assert_eq!(client.wait(running).unwrap(), [0]);
    assert_eq!(client.wait(queued).unwrap(), [1]);
}

#[test]
fn a_full_worker_queue_answers_datagram_calls_busy_and_the_client_retries() {
    let mut config = ServerConfig::default();
    config.worker_queue = 1;
    let builder = ServerBuilder::new(config).workers(1).function("slow", |b| {
        thread::sleep(Duration::from_millis(200));
        Ok(b.to_vec())
    });
    let stats = builder.stats();
    let server_stats = stats.clone();
    let slow = move || stats.snapshot().methods[0].clone();
    let server = start(builder);
    let mut client = Client::connect(&server.endpoints[3], ClientConfig::default()).unwrap();
    let poll = Duration::from_millis(1);
    let running = client.submit("slow", &[0], WAIT).unwrap();
    assert!(wirecall_tests::wait_until(
        Duration::from_secs(10),
        poll,
        || slow().executions == 1
    ));
    let queued = client.submit("slow", &[1], WAIT).unwrap();
    assert!(wirecall_tests::wait_until(
        Duration::from_secs(10),
        poll,
        || slow().calls == 2
    ));
    // The queue is full: the third call is answered busy (not run), and the client sends
    // it again after the hint until a worker takes it.
    assert_eq!(client.call("slow", &[2], WAIT).unwrap(), [2]);
    assert!(client.datagram_stats().unwrap().busy >= 1);
    assert!(server_stats.snapshot().datagrams_busy >= 1);
    assert_eq!(client.wait(running).unwrap(), [0]);
    assert_eq!(client.wait(queued).unwrap(), [1]);
    assert_eq!(slow().executions, 3, "each call ran once");
}

#[test]
fn a_busy_datagram_function_reaches_the_client_as_busy_with_its_hint() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use wirecall::CallFailure;

    let hint = Duration::from_millis(40);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    // Busy on every first try of a body, then the answer.
    let builder = ServerBuilder::new(ServerConfig::default()).function("flaky", move |b| {
        if counted.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            Err(CallFailure::Busy { retry_after: hint })
        } else {
            Ok(b.to_vec())
        }
    });
    let stats = builder.stats();
    let server = start(builder);
    for endpoint in &server.endpoints[2..] {
        let busy_before = stats.snapshot().datagrams_busy;
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let start = Instant::now();
        assert_eq!(
            client.call("flaky", b"x", WAIT).unwrap(),
            b"x",
            "{endpoint}"
        );
        assert!(
            start.elapsed() >= hint,
            "{endpoint}: retried before the hint"
        );
        let client_stats = client.datagram_stats().unwrap();
        assert_eq!(client_stats.busy, 1, "{endpoint}: the busy answer arrived");
        assert_eq!(
            stats.snapshot().datagrams_busy,
            busy_before + 1,
            "{endpoint}"
        );
        // A busy answer is not cached: the retry ran the function (which answered).
        assert_eq!(client_stats.late_responses, 0, "{endpoint}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[test]
fn datagram_calls_have_bounded_deadlines_and_sizes() {
    let server = start(functions(0));
    let udp = &server.endpoints[3];
    let mut client = Client::connect(udp, ClientConfig::default()).unwrap();
    assert_eq!(client.max_in_flight(), 64);

    // Longer than the server's `max_budget` (60 s): rejected, not run.
    let e = client
        .call("echo", b"x", Some(Duration::from_secs(120)))
        .unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::Rejected { code, .. } if *code == RejectCode::INVALID_REQUEST),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::NotExecuted);

    // Larger than one UDP datagram: not sent. A Unix datagram takes it.
    let body = vec![b'b'; 2000];
    let e = client.call("echo", &body, WAIT).unwrap_err();
    assert!(matches!(e.kind(), CallErrorKind::NotSent(_)), "{e}");
    assert_eq!(e.execution(), Execution::NotExecuted);
    let mut unix = Client::connect(&server.endpoints[2], ClientConfig::default()).unwrap();
    assert_eq!(unix.call("echo", &body, WAIT).unwrap(), body);

    // A deadline already passed: nothing was sent, so nothing ran.
    let e = client.call("echo", b"x", Some(Duration::ZERO)).unwrap_err();
    assert!(matches!(e.kind(), CallErrorKind::TimedOut), "{e}");
    assert_eq!(e.execution(), Execution::NotExecuted);

    // No timeout: the default deadline, and the call goes through.
    assert_eq!(client.call("echo", b"default", None).unwrap(), b"default");
    let stats = client.datagram_stats().unwrap();
    // The too-large call never started; the one past its deadline was never sent.
    assert_eq!((stats.calls, stats.transmissions), (3, 2), "{stats:?}");
    assert!(client.closed().is_none());
    assert_eq!(
        client.close(),
        wirecall::core::client::CloseReason::Graceful
    );
}

#[test]
fn an_idle_connection_is_closed_and_the_next_call_is_not_sent() {
    let mut config = ServerConfig::default();
    config.idle_timeout = Some(Duration::from_millis(100));
    let builder = ServerBuilder::new(config).function("echo", |b| Ok(b.to_vec()));
    let stats = builder.stats();
    let server = start(builder);
    let mut client = Client::connect(&server.endpoints[1], ClientConfig::default()).unwrap();
    assert_eq!(client.call("echo", b"1", WAIT).unwrap(), b"1");
    let started = Instant::now();
    assert!(wirecall_tests::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(5),
        || stats.snapshot().connections_idle_closed == 1
    ));
    assert!(started.elapsed() >= Duration::from_millis(90));
    let e = client.call("echo", b"2", WAIT).unwrap_err();
    assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
    assert!(matches!(e.kind(), CallErrorKind::NotSent(_)), "{e}");
    assert_eq!(
        client.closed(),
        Some(wirecall::core::client::CloseReason::Graceful)
    );
}

#[test]
fn stats_count_calls_and_executions() {
    let builder = functions(1);
    let stats = builder.stats();
    let server = start(builder);
    let mut client = Client::connect(&server.endpoints[1], ClientConfig::default()).unwrap();
    for _ in 0..3 {
        client.call("echo", b"", WAIT).unwrap();
    }
    let _ = client.call("nope", b"", WAIT);
    let snapshot = stats.snapshot();
    let echo = snapshot.methods.iter().find(|m| m.name == "echo").unwrap();
    assert_eq!((echo.calls, echo.executions), (3, 3));
    assert_eq!(snapshot.unknown_method_calls, 1);
    assert_eq!(snapshot.connections_open, 1);
    // The functions in registration order, then the discovery endpoint every server has.
    assert_eq!(
        stats.methods(),
        [
            "echo",
            "slow",
            "panic",
            "huge",
            "big",
            "drop",
            "thread",
            "wirecall/endpoints"
        ]
    );
}

#[test]
fn bad_configuration_is_refused_at_build() {
    let mut config = ServerConfig::default();
    config.connection.max_frame_len = 100;
    let err = ServerBuilder::new(config).build().unwrap_err().to_string();
    assert!(err.contains("max_frame_len 100 is under"), "{err}");

    let mut config = ServerConfig::default();
    config.connection.max_in_flight = 1 << 20;
    let err = ServerBuilder::new(config).build().unwrap_err().to_string();
    assert!(
        err.contains("max_in_flight of 1048576 is above the maximum"),
        "{err}"
    );

    // A server's own limits, checked whichever endpoints it has (none here), before
    // anything starts: zero would refuse every call, too many workers cannot be spawned.
    type Set = fn(&mut ServerConfig);
    let checks: [(Set, &str); 5] = [
        (
            |c| c.max_connections = 0,
            "max_connections of 0 is below the minimum of 1",
        ),
        (
            |c| c.workers = 100_000,
            "workers of 100000 is above the maximum of 1024",
        ),
        (
            |c| c.worker_queue = 0,
            "worker_queue of 0 is below the minimum of 1",
        ),
        (
            |c| c.datagram.max_budget = wirecall::core::Duration::ZERO,
            "datagram.max_budget (ms) of 0 is below the minimum of 1",
        ),
        (
            |c| c.unix_max_datagram = 50,
            "unix_max_datagram of 50 is below the minimum of 104",
        ),
    ];
    for (set, want) in checks {
        let mut config = ServerConfig::default();
        set(&mut config);
        let err = ServerBuilder::new(config).build().unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }

    let err = ServerBuilder::new(ServerConfig::default())
        .function("a b", |_| Ok(Vec::new()))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid function name"), "{err}");
}

/// A `unix-dgram:` server with a slow function on workers, at `path`; its shutdown handle
/// and thread.
fn serve_unix_datagram(
    path: &std::path::Path,
) -> Result<
    (
        ShutdownHandle,
        thread::JoinHandle<Result<(), wirecall::Error>>,
    ),
    wirecall::Error,
> {
    let server = ServerBuilder::new(ServerConfig::default())
        .workers(2)
        .function("echo", |b| Ok(b.to_vec()))
        .function("slow", |b| {
            thread::sleep(Duration::from_millis(100));
            Ok(b.to_vec())
        })
        .listen(Endpoint::UnixDatagram(path.to_path_buf()))
        .build()?;
    let stop = server.shutdown_handle();
    Ok((stop, thread::spawn(move || server.run())))
}

#[test]
fn a_draining_datagram_server_waits_for_its_answers_to_be_acknowledged() {
    use wirecall::core::Instant as CoreInstant;
    use wirecall::core::datagram::{
        DatagramCallSlot, DatagramClient, DatagramConfig, DatagramEvent,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linger.sock");
    let (stop, server) = serve_unix_datagram(&path).unwrap();
    // A client driven by hand over a connected socket, to choose when it reads.
    let socket = std::os::unix::net::UnixDatagram::bind(dir.path().join("c.sock")).unwrap();
    socket.connect(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let config = DatagramConfig::default();
    let mut core = DatagramClient::new(
        config,
        0x5eed,
        1,
        vec![0u8; config.client_storage_len(4).unwrap()],
        vec![DatagramCallSlot::EMPTY; 4],
    )
    .unwrap();
    let start = Instant::now();
    let now = || CoreInstant::from_micros(start.elapsed().as_micros() as u64);
    let slow = core
        .call(
            now(),
            "slow",
            b"s",
            Some(wirecall::core::Duration::from_secs(10)),
        )
        .unwrap();
    let echo = core
        .call(
            now(),
            "echo",
            b"e",
            Some(wirecall::core::Duration::from_secs(10)),
        )
        .unwrap();
    while let Some(t) = core.poll_transmit(now()) {
        socket.send(t.bytes).unwrap();
    }
    let read = |core: &mut DatagramClient<Vec<u8>, Vec<DatagramCallSlot>>| loop {
        let n = socket.recv(core.input_buffer()).unwrap();
        core.commit_datagram(now(), n);
        if let Some(DatagramEvent::Response { id, .. }) = core.poll_event(now()) {
            return id;
        }
    };
    assert_eq!(read(&mut core), echo);
    stop.shutdown();
    // The slow call is answered while this client does not read; once idle, a server that
    // closed at once would make the send below (Linux) throw that answer away.
    thread::sleep(Duration::from_millis(400));
    assert!(!server.is_finished(), "it waits for the acknowledgement");
    let ack = core.acknowledgement().unwrap().to_vec();
    socket.send(&ack).unwrap();
    assert_eq!(read(&mut core), slow, "the answer survived");
    // Now every answer is acknowledged: the server ends.
    let ack = core.acknowledgement().unwrap().to_vec();
    socket.send(&ack).unwrap();
    server.join().unwrap().unwrap();
}

#[test]
fn a_unix_datagram_client_reaches_a_server_restarted_on_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restart.sock");
    let (stop, first) = serve_unix_datagram(&path).unwrap();
    let endpoint = Endpoint::UnixDatagram(path.clone());
    let mut client = Client::connect(&endpoint, ClientConfig::default()).unwrap();
    assert_eq!(client.call("echo", b"one", WAIT).unwrap(), b"one");

    // The first server drains a slow call; its path is free at once for the next one
    // (new clients go there), while this client, connected to the first, still has its
    // new calls rejected by it, not lost, and gets its slow answer.
    let slow = client.submit("slow", b"s", WAIT).unwrap();
    assert_eq!(client.call("echo", b"before", WAIT).unwrap(), b"before");
    stop.shutdown();
    let err = (0..1000)
        .find_map(|_| {
            let e = client.call("echo", b"late", WAIT).err();
            thread::sleep(Duration::from_millis(1));
            e
        })
        .expect("the shutdown began");
    assert_eq!(err.execution(), Execution::NotExecuted, "{err}");
    assert!(
        matches!(err.kind(), CallErrorKind::Rejected { code, .. }
            if *code == RejectCode::SHUTTING_DOWN),
        "{err}"
    );
    let (stop, second) = serve_unix_datagram(&path).unwrap();
    assert_eq!(client.wait(slow).unwrap(), b"s");
    // The first server ends (after its linger: this client sends no acknowledgement
    // while it makes no call); the client's next call finds it gone and reaches the
    // second on the same path.
    let t = Instant::now();
    while !first.is_finished() && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(5));
    }
    first.join().unwrap().unwrap();
    assert_eq!(client.call("echo", b"two", WAIT).unwrap(), b"two");
    stop.shutdown();
    drop(client);
    second.join().unwrap().unwrap();
}

/// A function registered with a context gets who called and the deadline, on every
/// transport, run on the loop or on a worker, synchronous or deferred; one without a
/// context is not affected.
#[test]
fn functions_with_a_context_see_the_caller_and_the_deadline() {
    use wirecall::function::{CallContext, Peer};
    fn describe(context: &CallContext<'_>) -> Vec<u8> {
        let peer = match context.peer() {
            Peer::Unix(Some(c)) if c.pid == i32::try_from(std::process::id()).unwrap() => {
                "unix me".to_owned()
            }
            Peer::Tcp(a) | Peer::Udp(a) if a.ip().is_loopback() => "ip loopback".to_owned(),
            Peer::UnixDatagram { path, .. } if path.is_absolute() => "unix-dgram path".to_owned(),
            other => format!("unexpected {other}"),
        };
        let left = context.remaining().map(|d| d.as_millis());
        let in_time = left.is_some_and(|ms| ms > 0 && ms <= 10_000);
        format!("{peer} {in_time}").into_bytes()
    }
    for workers in [0, 2] {
        let server = start(
            ServerBuilder::new(ServerConfig::default())
                .workers(workers)
                .function_with_context("who", |context, _| Ok(describe(context)))
                .deferred_with_context("who_later", |context, _, responder| {
                    let answer = describe(context);
                    thread::spawn(move || responder.respond(Ok(answer)));
                }),
        );
        for (endpoint, expected) in server.endpoints.iter().zip([
            "unix me true",
            "ip loopback true",
            "unix-dgram path true",
            "ip loopback true",
        ]) {
            let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
            for method in ["who", "who_later"] {
                let answer = client.call(method, b"", WAIT).unwrap();
                assert_eq!(
                    String::from_utf8(answer).unwrap(),
                    expected,
                    "{endpoint} {method} with {workers} workers"
                );
            }
        }
    }
}

/// Two event loops: connections are spread over both (two connections, one on each, even
/// when the kernel would put both on one), every transport is served, `max_connections`
/// holds for the server rather than per loop, and the shutdown drains both.
#[test]
fn two_event_loops_share_the_endpoints_and_the_connection_limit() {
    let mut config = ServerConfig::default();
    config.max_connections = 4;
    config.evict_idle = None;
    // With no workers a function runs on the loop that took the call: its thread's name
    // tells which (`wirecall-loop-1` for the second; the first runs on `run`'s thread).
    let builder = ServerBuilder::new(config)
        .threads(2)
        .function("echo", |b| Ok(b.to_vec()))
        .function("loop", |_| {
            let name = thread::current().name().unwrap_or("first").to_string();
            Ok(name.into_bytes())
        });
    let stats = builder.stats();
    let server = start(builder);
    let (unix, tcp) = (&server.endpoints[0], &server.endpoints[1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let all_gone = || {
        while stats.snapshot().connections_open > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    };
    for endpoint in [unix, tcp] {
        // (The pair before is gone once the server has seen it close.)
        all_gone();
        let mut a = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let mut b = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let on_a = a.call("loop", b"", WAIT).unwrap();
        let on_b = b.call("loop", b"", WAIT).unwrap();
        assert_ne!(on_a, on_b, "two connections on {endpoint} share one loop");
    }
    all_gone();
    // Four stream connections open: the limit is the server's, whichever loop takes more.
    let mut open: Vec<Client> = [unix, tcp, unix, tcp]
        .into_iter()
        .map(|e| Client::connect(e, ClientConfig::default()).unwrap())
        .collect();
    for client in &mut open {
        assert_eq!(client.call("echo", b"in", WAIT).unwrap(), b"in");
    }
    for endpoint in [unix, tcp] {
        let mut fifth = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let err = fifth.call("echo", b"over", WAIT).unwrap_err();
        assert_eq!(err.execution(), Execution::NotExecuted, "{endpoint}: {err}");
    }
    // Datagram endpoints, from several clients (each its own flow, on either loop's
    // socket for UDP; the first loop's for unix-dgram).
    for endpoint in &server.endpoints[2..] {
        for i in 0..4u8 {
            let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
            assert_eq!(client.call("echo", &[i], WAIT).unwrap(), [i]);
        }
    }
    let snapshot = stats.snapshot();
    let echo = snapshot.methods.iter().find(|m| m.name == "echo").unwrap();
    assert_eq!(echo.executions, 4 + 8);
    assert_eq!(snapshot.connections_open, 4);
    assert_eq!(snapshot.connections_refused, 2);
    drop(open);
    // Dropping `server` shuts both loops down and checks that `run` returned Ok.
}

/// At the connection limit with two loops, a new client takes the place of an idle peer
/// whichever loop the idle peers are on: a loop with none to evict passes the newcomer on
/// to the next loop, which evicts one of its own.
#[test]
fn eviction_at_the_limit_reaches_idle_peers_on_another_loop() {
    let mut config = ServerConfig::default();
    config.max_connections = 3;
    config.evict_idle = Some(Duration::from_millis(300));
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    let builder = ServerBuilder::new(config)
        .threads(2)
        .function("echo", |b| Ok(b.to_vec()))
        .function("loop", |_| {
            Ok(thread::current()
                .name()
                .unwrap_or("first")
                .as_bytes()
                .to_vec())
        })
        .deferred("hold", move |_, responder| {
            keep.lock().unwrap().push(responder)
        });
    let server = start(builder);
    let unix = &server.endpoints[0];
    let connect = || Client::connect(unix, ClientConfig::default()).unwrap();
    // Three clients take every place; each makes a call so its loop is known.
    let mut clients: Vec<Client> = (0..3).map(|_| connect()).collect();
    let loops: Vec<Vec<u8>> = clients
        .iter_mut()
        .map(|c| c.call("loop", b"", WAIT).unwrap())
        .collect();
    // The one alone on its loop stays busy (a call held); the two others go idle.
    let lonely = (0..3)
        .find(|&i| loops.iter().filter(|l| **l == loops[i]).count() == 1)
        .expect("three connections on two loops: one is alone");
    let mut busy = clients.remove(lonely);
    let holder = thread::spawn(move || busy.call("hold", b"", WAIT).map(|_| busy));
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.lock().unwrap().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(600));
    // Two newcomers, one after the other: whichever loop accepts them, each gets an idle
    // peer's place (the busy loop has none to give and passes them on).
    for n in 0..2u8 {
        let mut newcomer = connect();
        assert_eq!(
            newcomer.call("echo", &[n], WAIT).unwrap(),
            [n],
            "newcomer {n}"
        );
    }
    for responder in held.lock().unwrap().drain(..) {
        responder.respond(Ok(b"done".to_vec()));
    }
    let busy = holder.join().unwrap().unwrap();
    drop((busy, clients));
}
