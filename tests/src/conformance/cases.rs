//! The cases of the conformance suite. Each runs one server driver against one client
//! driver over one transport and panics (a test failure) when the pair breaks a rule of
//! `docs/PROTOCOL.md`; it returns [`Verdict::NotApplicable`] where the transport has no such
//! thing (keepalive on a datagram socket).
//!
//! What every case checks, besides its subject: every failed call's execution answer
//! (`NotExecuted`, `MaybeExecuted`, `Executed`) is the one the protocol gives, because that
//! is what a caller decides a retry on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use wirecall::core::client::Execution;
use wirecall::{CallError, CallErrorKind, ClientConfig, ServerConfig};

use super::{ClientDriver, RunningServer, ServerDriver, Transport};

/// What a case found for one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Passed,
    /// The transport has no such behaviour.
    NotApplicable(&'static str),
}

/// A case: runs one pair over one transport.
pub type Case = fn(Transport) -> Verdict;

/// Runs `case` for server `S` and client `C` over every transport both support, printing
/// one line per transport (`conformance: <case> server=<S> client=<C> <transport>: passed`).
pub fn run<S: ServerDriver, C: ClientDriver>(name: &str, case: Case) {
    for transport in Transport::ALL {
        let verdict = if S::supports(transport) && C::supports(transport) {
            match std::panic::catch_unwind(|| case(transport)) {
                Ok(verdict) => verdict,
                Err(panic) => {
                    println!(
                        "conformance: {name} server={} client={} {}: FAILED",
                        S::NAME,
                        C::NAME,
                        transport.name()
                    );
                    std::panic::resume_unwind(panic);
                }
            }
        } else {
            Verdict::NotApplicable("the pair does not speak it")
        };
        let shown = match verdict {
            Verdict::Passed => "passed".to_owned(),
            Verdict::NotApplicable(why) => format!("not applicable ({why})"),
        };
        println!(
            "conformance: {name} server={} client={} {}: {shown}",
            S::NAME,
            C::NAME,
            transport.name()
        );
    }
}

/// The deadline of calls that should be answered at once: a bound, not a timing check, so
/// long enough for a machine busy with other builds and tests.
const QUICK: Option<Duration> = Some(Duration::from_secs(20));

/// A server of `S` on a fresh endpoint of `transport` (with its temporary directory).
fn server<S: ServerDriver>(
    transport: Transport,
    config: ServerConfig,
) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let server = S::start(transport.endpoint(dir.path()), config)
        .unwrap_or_else(|e| panic!("{} server on {}: {e}", S::NAME, transport.name()));
    (server, dir)
}

fn client<C: ClientDriver>(server: &RunningServer, config: ClientConfig) -> C {
    C::connect(&server.endpoint, config)
        .unwrap_or_else(|e| panic!("{} client to {}: {e}", C::NAME, server.endpoint))
}

/// Checks a failure's kind (by a predicate) and its execution answer.
fn expect_failure(
    outcome: Result<Vec<u8>, CallError>,
    what: &str,
    kind: impl Fn(&CallErrorKind) -> bool,
    execution: Execution,
) {
    match outcome {
        Ok(body) => panic!(
            "{what}: expected a failure, got an answer of {} bytes",
            body.len()
        ),
        Err(e) => {
            assert!(
                kind(e.kind()),
                "{what}: unexpected failure {e} ({:?})",
                e.kind()
            );
            assert_eq!(e.execution(), execution, "{what}: {e}");
        }
    }
}

fn answer(outcome: Result<Vec<u8>, CallError>, what: &str) -> Vec<u8> {
    outcome.unwrap_or_else(|e| panic!("{what}: {e} ({})", e.execution()))
}

/// Calls answered, failed and executed, one case at a time.
pub fn basics<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    assert_eq!(answer(c.call("echo", b"hi", QUICK), "echo"), b"hi");
    assert_eq!(answer(c.call("upper", b"shout", QUICK), "upper"), b"SHOUT");
    assert_eq!(answer(c.call("echo", b"", QUICK), "empty echo"), b"");
    expect_failure(
        c.call("no-such-method", b"", QUICK),
        "unknown method",
        |k| matches!(k, CallErrorKind::Rejected { .. }),
        Execution::NotExecuted,
    );
    expect_failure(
        c.call("fail", b"", QUICK),
        "application error",
        |k| matches!(k, CallErrorKind::Remote { code: 1000, .. }),
        Execution::Executed,
    );
    expect_failure(
        c.call("panic", b"", QUICK),
        "panicking function",
        |k| matches!(k, CallErrorKind::Remote { code, .. } if *code == wirecall::function::ERROR_FUNCTION_PANICKED),
        Execution::Executed,
    );
    // The server goes on after all of that.
    for i in 0..200u32 {
        let body = i.to_be_bytes();
        assert_eq!(answer(c.call("count", &body, QUICK), "count"), body);
    }
    assert_eq!(server.executions.total(), 200);
    assert!(server.executions.repeated().is_empty());
    Verdict::Passed
}

/// A typed endpoint called by its key (protocol version 2): the answer is the endpoint's
/// `Result` (an application error is a value), a caller whose types differ is refused as
/// a schema mismatch and one of an unknown path as an unknown method, neither executed.
pub fn typed<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    use super::{TestAdd, TestAddWide, TestMissing};
    use wirecall::core::wire::RejectCode;
    use wirecall::typed::{Endpoint, decode_answer, to_body};
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let failed = |e| panic!("a typed body: {e}");
    let body = to_body(&(2u32, 3u32)).unwrap_or_else(failed);
    let sum = answer(c.call(TestAdd::KEY, &body, QUICK), "typed add");
    assert_eq!(decode_answer::<TestAdd>(&sum), Ok(Ok(5)));
    let body = to_body(&(u32::MAX, 1u32)).unwrap_or_else(failed);
    let overflow = answer(c.call(TestAdd::KEY, &body, QUICK), "typed overflow");
    assert_eq!(decode_answer::<TestAdd>(&overflow), Ok(Err(7)));
    let body = to_body(&(2u64, 3u32)).unwrap_or_else(failed);
    expect_failure(
        c.call(TestAddWide::KEY, &body, QUICK),
        "another schema",
        |k| matches!(k, CallErrorKind::Rejected { code, .. } if *code == RejectCode::SCHEMA_MISMATCH),
        Execution::NotExecuted,
    );
    expect_failure(
        c.call(TestMissing::KEY, &body, QUICK),
        "unknown path",
        |k| matches!(k, CallErrorKind::Rejected { code, .. } if *code == RejectCode::UNKNOWN_METHOD),
        Execution::NotExecuted,
    );
    // Untyped calls go on beside typed ones.
    assert_eq!(answer(c.call("echo", b"hi", QUICK), "echo"), b"hi");
    Verdict::Passed
}

/// Many calls in flight at once, answered in the order they finish: a slow call does not
/// hold up quick ones behind it.
pub fn pipelining<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let slow = c
        .submit("sleep", b"1500", QUICK)
        .unwrap_or_else(|e| panic!("submit: {e}"));
    let mut quick = HashMap::new();
    for i in 0..32u32 {
        let body = format!("quick {i}").into_bytes();
        let ticket = c
            .submit("echo", &body, QUICK)
            .unwrap_or_else(|e| panic!("submit: {e}"));
        quick.insert(ticket, body);
    }
    let mut order = Vec::new();
    while let Some((ticket, outcome)) = c.wait_any() {
        let got = answer(outcome, "pipelined call");
        if ticket == slow {
            assert_eq!(got, b"1500");
        } else {
            assert_eq!(
                Some(&got),
                quick.get(&ticket),
                "each answer is its own call's"
            );
        }
        order.push(ticket);
    }
    assert_eq!(order.len(), 33, "every call answered once");
    assert_eq!(
        order.last(),
        Some(&slow),
        "the slow call finished last: {order:?}"
    );
    Verdict::Passed
}

/// A call whose deadline passes ends as timed out, maybe executed (the request went out),
/// well before the function would have answered; the connection goes on.
pub fn deadline<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let start = Instant::now();
    expect_failure(
        c.call("sleep", b"3000", Some(Duration::from_millis(100))),
        "deadline",
        |k| matches!(k, CallErrorKind::TimedOut),
        Execution::MaybeExecuted,
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "ended by the deadline, after {took:?}"
    );
    assert_eq!(
        answer(c.call("echo", b"after", QUICK), "after a timeout"),
        b"after"
    );
    Verdict::Passed
}

/// A cancelled call ends without an outcome for its caller, the server is told (and counts
/// it), and other calls go on.
pub fn cancel<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let slow = c
        .submit("sleep", b"3000", Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("submit: {e}"));
    // Let it reach the server before it is cancelled.
    assert_eq!(answer(c.call("echo", b"first", QUICK), "echo"), b"first");
    c.cancel(slow);
    let quick = c
        .submit("echo", b"x", QUICK)
        .unwrap_or_else(|e| panic!("submit: {e}"));
    let (ticket, outcome) = c
        .wait_any()
        .unwrap_or_else(|| panic!("the quick call's outcome"));
    assert_eq!(ticket, quick, "the cancelled call gives no outcome");
    assert_eq!(answer(outcome, "after a cancel"), b"x");
    assert!(c.wait_any().is_none(), "nothing else is waiting");
    let counted = crate::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        server.counter("requests.cancelled") >= 1
    });
    assert!(counted, "the server counts the cancel");
    Verdict::Passed
}

/// With one call slot, a cancelled call gives its slot back at once: the next call goes
/// out and is answered promptly, not when the cancelled one would have ended.
pub fn cancel_frees_the_slot<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut config = ClientConfig::default();
    config.connection.max_in_flight = 1;
    let mut c: C = client(&server, config);
    let slow = c
        .submit("sleep", b"10000", Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("submit: {e}"));
    std::thread::sleep(Duration::from_millis(50));
    c.cancel(slow);
    let start = Instant::now();
    assert_eq!(
        answer(c.call("echo", b"next", QUICK), "after the cancel"),
        b"next"
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the slot came back at once, not after {took:?}"
    );
    Verdict::Passed
}

/// A connection over the server's `max_connections` is refused: its calls end as not
/// executed (the server says `REFUSED` before closing), the open one goes on.
pub fn refused_at_the_limit<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if t.is_datagram() {
        return Verdict::NotApplicable("no connection to refuse");
    }
    let mut config = ServerConfig::default();
    config.max_connections = 1;
    let (server, _dir) = server::<S>(t, config);
    let mut first: C = client(&server, ClientConfig::default());
    assert_eq!(answer(first.call("echo", b"1", QUICK), "first"), b"1");
    let mut second: C = client(&server, ClientConfig::default());
    let outcome = second.call("count", b"refused", QUICK);
    expect_failure(outcome, "over the limit", |_| true, Execution::NotExecuted);
    assert_eq!(server.executions.total(), 0, "nothing ran");
    assert_eq!(server.counter("connections.refused"), 1);
    assert_eq!(answer(first.call("echo", b"2", QUICK), "first again"), b"2");
    Verdict::Passed
}

/// A connection with no call for the server's idle timeout is closed gracefully (and
/// counted); a call after that is not executed, and a new connection works.
pub fn idle_timeout<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if t.is_datagram() {
        return Verdict::NotApplicable("no connection to time out");
    }
    let mut config = ServerConfig::default();
    config.idle_timeout = Some(Duration::from_millis(300));
    let (server, _dir) = server::<S>(t, config);
    let mut c: C = client(&server, ClientConfig::default());
    assert_eq!(answer(c.call("echo", b"1", QUICK), "echo"), b"1");
    let closed = crate::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        server.counter("connections.idle_closed") >= 1
    });
    assert!(closed, "the idle connection is closed and counted");
    c.idle(Duration::from_millis(200));
    closed_then_a_new_connection_works(&mut c, &server, "a call on the closed connection")
}

/// A connection older than `max_connection_age` is told to go away: a call in flight
/// across the go-away is answered, one after it is not executed, and a new connection
/// works (counted in `connections.aged_out`).
pub fn max_connection_age<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if t.is_datagram() {
        return Verdict::NotApplicable("no connection to age");
    }
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let mut config = ServerConfig::default();
    config.max_connection_age = Some(Duration::from_millis(500));
    let (server, _dir) = server::<S>(t, config);
    let mut c: C = client(&server, ClientConfig::default());
    let long = c
        .submit("sleep", b"1000", QUICK)
        .unwrap_or_else(|e| panic!("submit: {e}"));
    let (ticket, outcome) = c.wait_any().unwrap_or_else(|| panic!("no outcome"));
    assert_eq!(ticket, long);
    assert_eq!(answer(outcome, "a call across the go-away"), b"1000");
    assert!(
        server.counter("connections.aged_out") >= 1,
        "the old connection is told to go away, and counted"
    );
    c.idle(Duration::from_millis(100));
    closed_then_a_new_connection_works(&mut c, &server, "a call after the go-away")
}

/// After the server closed `c`'s connection: a call on it fails, not executed (`what` it
/// is, for the message), and a new connection is served.
fn closed_then_a_new_connection_works<C: ClientDriver>(
    c: &mut C,
    server: &RunningServer,
    what: &str,
) -> Verdict {
    expect_failure(
        c.call("count", b"after", QUICK),
        what,
        |_| true,
        Execution::NotExecuted,
    );
    assert_eq!(server.executions.total(), 0);
    let mut again: C = client(server, ClientConfig::default());
    assert_eq!(
        answer(again.call("echo", b"2", QUICK), "a new connection"),
        b"2"
    );
    Verdict::Passed
}

/// `shutdown_now` with calls in flight: the server returns promptly (it does not wait for
/// the calls), and every call ends (none hangs), none of them as an answer.
pub fn shutdown_now<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (mut server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    for _ in 0..4 {
        c.submit("sleep", b"10000", Some(Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("submit: {e}"));
    }
    assert_eq!(answer(c.call("echo", b"x", QUICK), "echo"), b"x");
    let start = Instant::now();
    server.shutdown_now();
    assert!(
        server.wait(Duration::from_secs(5)),
        "the server returns at once"
    );
    let mut ended = 0;
    while let Some((_, outcome)) = c.wait_any() {
        assert!(outcome.is_err(), "a 10 s sleep cannot have answered");
        ended += 1;
    }
    assert_eq!(ended, 4);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "every call ended, after {took:?}"
    );
    Verdict::Passed
}

/// A function that is busy once: on a stream the caller gets the busy answer (not
/// executed, with the server's hint); on a datagram endpoint the core retransmits after the
/// hint and the second copy is answered.
pub fn busy<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let outcome = c.call("busy_once", b"b", QUICK);
    if t.is_datagram() {
        assert_eq!(answer(outcome, "busy once, then retransmitted"), b"b");
        assert_eq!(
            server.counter("datagrams.busy"),
            1,
            "one busy answer, then the run"
        );
    } else {
        expect_failure(
            outcome,
            "busy",
            |k| matches!(k, CallErrorKind::Busy { retry_after } if *retry_after >= Duration::from_millis(20)),
            Execution::NotExecuted,
        );
        assert_eq!(
            answer(c.call("busy_once", b"b", QUICK), "busy once, then"),
            b"b"
        );
    }
    Verdict::Passed
}

/// A graceful shutdown with calls in flight: every call the server took is answered; a
/// call made while it drains is refused as not executed; the server then returns.
pub fn goaway<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (mut server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(
            c.submit("sleep", b"400", QUICK)
                .unwrap_or_else(|e| panic!("submit: {e}")),
        );
    }
    // A round trip: the slow calls have reached the server.
    assert_eq!(answer(c.call("echo", b"before", QUICK), "echo"), b"before");
    server.shutdown();
    std::thread::sleep(Duration::from_millis(50));
    // While the slow calls keep it draining, a new call is not run.
    if let Err(e) = c.submit("count", b"late", QUICK) {
        assert_eq!(e.execution(), Execution::NotExecuted, "late call: {e}");
    }
    let mut answered = 0;
    while let Some((ticket, outcome)) = c.wait_any() {
        if slow.contains(&ticket) {
            // On a failure, the server's counters say where the answer went.
            let what = format!(
                "call taken before the go-away (server stats: {})",
                server.stats.snapshot().to_string().replace('\n', ", ")
            );
            assert_eq!(answer(outcome, &what), b"400");
            answered += 1;
        } else {
            expect_failure(
                outcome,
                "call made during the drain",
                |_| true,
                Execution::NotExecuted,
            );
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(server.executions.total(), 0, "the late call did not run");
    assert!(
        server.wait(Duration::from_secs(10)),
        "the server returns once drained"
    );
    Verdict::Passed
}

/// An idle connection stays open across many keepalive rounds (the client answers the
/// server's pings), and a call after the idle spell is answered.
pub fn keepalive<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if t.is_datagram() {
        return Verdict::NotApplicable("no connection to keep alive");
    }
    let mut config = ServerConfig::default();
    // Idle for more than two rounds of ping and timeout: the connection lives only if the
    // client answers the pings.
    config.connection.keepalive_interval = Some(wirecall::core::Duration::from_millis(200));
    config.connection.keepalive_timeout = wirecall::core::Duration::from_millis(1000);
    let (server, _dir) = server::<S>(t, config);
    let mut c: C = client(&server, ClientConfig::default());
    assert_eq!(answer(c.call("echo", b"1", QUICK), "echo"), b"1");
    c.idle(Duration::from_millis(2600));
    assert_eq!(answer(c.call("echo", b"2", QUICK), "after idling"), b"2");
    assert_eq!(server.counter("closed.keepalive_timeout"), 0);
    Verdict::Passed
}

/// A request larger than the server takes (its frame limit on a stream, one datagram on a
/// datagram endpoint) is not sent, so not executed; the connection goes on.
pub fn oversize<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    let mut config = ServerConfig::default();
    config.connection.max_frame_len = 2048;
    let (server, _dir) = server::<S>(t, config);
    let mut c: C = client(&server, ClientConfig::default());
    // The stream client learns the limit from the server's hello.
    assert_eq!(answer(c.call("echo", b"hello", QUICK), "echo"), b"hello");
    let big = vec![7u8; if t == Transport::Udp { 2000 } else { 100_000 }];
    expect_failure(
        c.call("echo", &big, QUICK),
        "oversize",
        |k| matches!(k, CallErrorKind::NotSent(_)),
        Execution::NotExecuted,
    );
    assert_eq!(answer(c.call("echo", b"after", QUICK), "after"), b"after");
    Verdict::Passed
}

/// Garbage from a raw socket: on a stream the server closes that connection and counts a
/// protocol error; on a datagram endpoint it drops and counts the datagram. Other clients
/// never notice.
pub fn garbage<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    let (server, dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let junk = b"GET / HTTP/1.1\r\nHost: wirecall\r\n\r\n\xff\xfe\x00\x01garbage";
    match &server.endpoint {
        wirecall::Endpoint::Unix(path) => {
            let mut raw =
                std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|e| panic!("{e}"));
            raw.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let _ = raw.write_all(junk);
            let mut sink = Vec::new();
            let _ = raw.read_to_end(&mut sink);
        }
        wirecall::Endpoint::Tcp(host, port) | wirecall::Endpoint::Tls(host, port) => {
            let mut raw = std::net::TcpStream::connect((host.as_str(), *port))
                .unwrap_or_else(|e| panic!("{e}"));
            raw.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let _ = raw.write_all(junk);
            let mut sink = Vec::new();
            let _ = raw.read_to_end(&mut sink);
        }
        wirecall::Endpoint::UnixDatagram(path) => {
            let raw = std::os::unix::net::UnixDatagram::bind(dir.path().join("raw.sock"))
                .unwrap_or_else(|e| panic!("{e}"));
            raw.send_to(junk, path).unwrap_or_else(|e| panic!("{e}"));
        }
        wirecall::Endpoint::Udp(host, port) => {
            let raw = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            raw.send_to(junk, (host.as_str(), *port))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let counted = crate::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        if t.is_datagram() {
            server.counter("datagrams.dropped") >= 1
        } else if t == Transport::Tls {
            // Not TLS: the handshake fails before any frame.
            server.counter("tls.handshake_failed") >= 1
        } else {
            server.counter("protocol_errors") >= 1
        }
    });
    assert!(counted, "the server counts the garbage");
    assert_eq!(
        answer(c.call("echo", b"still here", QUICK), "after garbage"),
        b"still here"
    );
    Verdict::Passed
}

/// A peer that sends calls and never reads: a Unix datagram socket's queue takes only
/// `net.unix.max_dgram_qlen` answers, and the server holds the rest for a while, then
/// drops and counts them (bounded), while it keeps answering everyone else.
pub fn deaf_peer<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    use wirecall::core::datagram::{DatagramCallSlot, DatagramClient, DatagramConfig};
    const DEAF_CALLS: u64 = 40;
    if t != Transport::UnixDgram {
        return Verdict::NotApplicable("only a Unix datagram peer's queue pushes back");
    }
    let (server, dir) = server::<S>(t, ServerConfig::default());
    let wirecall::Endpoint::UnixDatagram(path) = &server.endpoint else {
        return Verdict::NotApplicable("not a unix-dgram endpoint");
    };
    let mut c: C = client(&server, ClientConfig::default());
    // The deaf peer's calls, made by a core client of its own epoch and never read back.
    let deaf = std::os::unix::net::UnixDatagram::bind(dir.path().join("deaf.sock"))
        .unwrap_or_else(|e| panic!("{e}"));
    let config = DatagramConfig::default();
    let slots = 64;
    let storage = config.client_storage_len(slots).unwrap_or(0);
    let mut core = DatagramClient::new(
        config,
        0xdeaf,
        1,
        vec![0u8; storage],
        vec![DatagramCallSlot::EMPTY; slots],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let now = wirecall::core::Instant::ZERO;
    let budget = Some(wirecall::core::Duration::from_secs(10));
    for _ in 0..DEAF_CALLS {
        core.call(now, "echo", b"deaf", budget)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let first = core
            .poll_transmit(now)
            .unwrap_or_else(|| panic!("a request"));
        deaf.send_to(first.bytes, path)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Everyone else is answered meanwhile.
    for i in 0..50u8 {
        assert_eq!(
            answer(c.call("echo", &[i], QUICK), "beside a deaf peer"),
            [i]
        );
    }
    // What did not fit the deaf peer's queue is dropped and counted, within the time an
    // answer is held (1 s).
    let queue = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(10);
    // (Linux queues one datagram past the limit.)
    let undeliverable = DEAF_CALLS.saturating_sub(queue + 1);
    let counted = crate::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        server.counter("datagrams.dropped.send_failed") >= undeliverable
    });
    assert!(
        counted,
        "the answers the deaf peer had no room for are dropped and counted (server stats: {})",
        server.stats.snapshot().to_string().replace('\n', ", ")
    );
    assert_eq!(answer(c.call("echo", b"after", QUICK), "after"), b"after");
    Verdict::Passed
}

/// A graceful shutdown while clients keep calls in flight: every call ends, every answer
/// ran exactly once, and a call reported not executed did not run. On a stream no call is
/// left in doubt (the go-away names the calls taken); on a datagram endpoint a call sent
/// as the server stops may time out in doubt, and then ran at most once.
pub fn shutdown_under_load<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (mut server, _dir) = server::<S>(t, ServerConfig::default());
    let endpoint = server.endpoint.clone();
    // Every client connects before the shutdown: one that came after it would find the
    // socket gone, which is not what this case is about (and a loaded machine may start a
    // thread late).
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..3u8)
        .map(|n| {
            let endpoint = endpoint.clone();
            let connected = std::sync::Arc::clone(&connected);
            std::thread::spawn(move || {
                let mut c = C::connect(&endpoint, ClientConfig::default())
                    .unwrap_or_else(|e| panic!("connect: {e}"));
                connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (mut ok, mut not_run, mut doubt) = (0u64, 0u64, 0u64);
                let mut sent = 0u32;
                let mut stopped = false;
                let start = Instant::now();
                let mut in_flight = 0;
                loop {
                    while !stopped
                        && in_flight < 16
                        && sent < 5000
                        && start.elapsed() < Duration::from_secs(20)
                    {
                        let body = [n, (sent >> 16) as u8, (sent >> 8) as u8, sent as u8];
                        sent += 1;
                        match c.submit("count", &body, Some(Duration::from_secs(2))) {
                            Ok(_) => in_flight += 1,
                            Err(e) => {
                                assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
                                not_run += 1;
                                stopped = true;
                            }
                        }
                    }
                    let Some((_, outcome)) = c.wait_any() else {
                        break;
                    };
                    in_flight -= 1;
                    match outcome {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            stopped = true;
                            match e.execution() {
                                Execution::NotExecuted => not_run += 1,
                                Execution::MaybeExecuted => doubt += 1,
                                Execution::Executed => panic!("count never fails: {e}"),
                            }
                        }
                    }
                }
                (ok, not_run, doubt)
            })
        })
        .collect();
    // Shut down once every client is connected and calls are flowing.
    let flowing = crate::wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
        connected.load(std::sync::atomic::Ordering::SeqCst) == 3 && server.executions.total() >= 300
    });
    assert!(flowing, "calls flow before the shutdown");
    server.shutdown();
    let (mut ok, mut not_run, mut doubt) = (0, 0, 0);
    for client in clients {
        let (o, n, d) = client
            .join()
            .unwrap_or_else(|_| panic!("a client thread panicked"));
        ok += o;
        not_run += n;
        doubt += d;
    }
    assert!(
        server.wait(Duration::from_secs(15)),
        "the server returns once drained"
    );
    let ran = server.executions.total();
    assert!(server.executions.repeated().is_empty(), "a call ran twice");
    assert!(ok > 0, "calls were answered before the shutdown");
    assert!(
        ok <= ran && ran <= ok + doubt,
        "ran {ran}, answered {ok}, in doubt {doubt}, not run {not_run}"
    );
    if !t.is_datagram() {
        assert_eq!(doubt, 0, "a stream leaves no call in doubt");
    }
    Verdict::Passed
}

/// A window of 64 calls kept full for 3,000 calls (4 KiB bodies on a stream, 1 KiB on a
/// datagram endpoint: more than the socket buffers hold at once, so both sides meet full
/// buffers and keep going): every call is answered with its own body.
pub fn load<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let mut c: C = client(&server, ClientConfig::default());
    let size = if t.is_datagram() { 1024 } else { 4096 };
    let mut expected = HashMap::new();
    let mut answered = 0;
    let mut take = |c: &mut C, expected: &mut HashMap<u64, Vec<u8>>| {
        let (ticket, outcome) = c.wait_any().unwrap_or_else(|| panic!("an outcome"));
        let want = expected.remove(&ticket);
        assert_eq!(Some(answer(outcome, "under load")), want);
        answered += 1;
    };
    for i in 0..3000u32 {
        if expected.len() >= 64 {
            take(&mut c, &mut expected);
        }
        let mut body = vec![(i % 251) as u8; size];
        body[..4].copy_from_slice(&i.to_be_bytes());
        let ticket = c
            .submit("echo", &body, QUICK)
            .unwrap_or_else(|e| panic!("{e}"));
        expected.insert(ticket, body);
    }
    while !expected.is_empty() {
        take(&mut c, &mut expected);
    }
    assert_eq!(answered, 3000);
    Verdict::Passed
}

/// The deadline of a call through the lossy relay: 30 s is about 17 attempts with the
/// default backoff, so at 20 % loss each way (a round trip fails 36 % of the time) a call
/// fails on every attempt about once in 3 * 10^7 (10 s, 7 attempts, would be once in
/// 1,300: a flaky test over 300 calls).
const LOSSY_DEADLINE: Duration = Duration::from_secs(30);

/// Datagram calls through a relay that drops, duplicates and reorders (20 % loss and 10 %
/// duplicates each way): every call is answered, and each ran exactly once.
pub fn lossy_exactly_once<S: ServerDriver, C: ClientDriver>(t: Transport) -> Verdict {
    if !C::PIPELINES {
        return Verdict::NotApplicable("the client makes one call at a time");
    }
    if t != Transport::Udp {
        return Verdict::NotApplicable("the lossy relay is UDP");
    }
    let (server, _dir) = server::<S>(t, ServerConfig::default());
    let wirecall::Endpoint::Udp(host, port) = &server.endpoint else {
        panic!("a UDP server has a UDP endpoint");
    };
    let relay_bin = super::LOSSY_RELAY
        .get()
        .unwrap_or_else(|| panic!("conformance::LOSSY_RELAY names the lossy_relay binary"));
    let upstream = format!("{host}:{port}");
    let mut relay = std::process::Command::new(relay_bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--seed",
            "11",
            "--loss",
            "20",
            "--dup",
            "10",
            "--delay-ms",
            "3",
            "--run-for",
            "60",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("lossy_relay: {e}"));
    let mut out = std::io::BufReader::new(relay.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap_or_else(|e| panic!("{e}"));
    let addr = line
        .trim()
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("relay said {line:?}"));
    let endpoint: wirecall::Endpoint = format!("udp:{addr}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = C::connect(&endpoint, ClientConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut expected = HashMap::new();
    let take = |c: &mut C, expected: &mut HashMap<u64, Vec<u8>>| {
        let (ticket, outcome) = c.wait_any().unwrap_or_else(|| panic!("an outcome"));
        let want = expected.remove(&ticket);
        assert_eq!(Some(answer(outcome, "through the relay")), want);
    };
    for i in 0..300u32 {
        if expected.len() >= 16 {
            take(&mut c, &mut expected);
        }
        let body = i.to_be_bytes().to_vec();
        let ticket = c
            .submit("count", &body, Some(LOSSY_DEADLINE))
            .unwrap_or_else(|e| panic!("{e}"));
        expected.insert(ticket, body);
    }
    while !expected.is_empty() {
        take(&mut c, &mut expected);
    }
    assert!(c.wait_any().is_none());
    assert!(expected.is_empty());
    drop(relay.stdin.take());
    let _ = crate::wait_child(&mut relay, Duration::from_secs(10));
    assert_eq!(server.executions.total(), 300, "each call ran once");
    assert!(server.executions.repeated().is_empty(), "no call ran twice");
    Verdict::Passed
}
