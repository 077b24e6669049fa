//! Scenario tests of the stream connection state machines, run in the deterministic
//! simulation harness (`wirecall_core::sim`): no sockets, no sleeping, a fake clock and a
//! seed. Each test is named for its scenario.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default,
    missing_docs
)]

use std::collections::{BTreeMap, HashMap};

use wirecall_core::client::{ClientEvent, Execution, Failure, SendError};
use wirecall_core::client::{CloseReason, ProtocolError};
use wirecall_core::frame::encode_frame;
use wirecall_core::server::{RespondError, ServerEvent};
use wirecall_core::sim::{NetConfig, Pair, Step};
use wirecall_core::wire::{
    CloseCode, EndpointKey, Frame, Hello, MAGIC, RejectCode, Reply, Request,
};
use wirecall_core::{Config, Duration, Instant, RequestId};

type TestPair = Pair<4096, 16, 65536>;

fn pair(seed: u64) -> TestPair {
    pair_with(seed, Config::default(), Config::default())
}

fn pair_with(seed: u64, client: Config, server: Config) -> TestPair {
    Pair::new(seed, client, server, NetConfig::default()).expect("valid config")
}

/// What happened to each call, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Vec<u8>),
    Failed(String, Execution),
}

/// Records client events; panics if a call gets two outcomes.
#[derive(Default)]
struct ClientLog {
    outcomes: BTreeMap<u64, Outcome>,
    failures: Vec<(u64, String)>,
    closed: Option<CloseReason>,
    connected: bool,
}

impl ClientLog {
    fn poll(&mut self, pair: &mut TestPair) {
        let now = pair.now;
        while let Some(ev) = pair.client.poll_event(now) {
            assert!(self.closed.is_none(), "event after Closed: {ev:?}");
            match ev {
                ClientEvent::Connected(_) => self.connected = true,
                ClientEvent::Response { id, body } => {
                    let old = self.outcomes.insert(id.0, Outcome::Ok(body.to_vec()));
                    assert!(old.is_none(), "second outcome for {id}");
                }
                ClientEvent::Failed { id, failure } => {
                    let name = format!("{failure:?}");
                    let old = self
                        .outcomes
                        .insert(id.0, Outcome::Failed(name.clone(), failure.execution()));
                    assert!(old.is_none(), "second outcome for {id}");
                    self.failures.push((id.0, name));
                }
                ClientEvent::Closed(reason) => self.closed = Some(reason),
                _ => {}
            }
        }
    }
}

/// A server application: answers each request with `method:body` reversed-ish, after a
/// delay chosen per request, so answers go out in a different order than requests came.
#[derive(Default)]
struct ServerApp {
    /// Requests waiting for their answer time: id -> (answer at, answer).
    deferred: BTreeMap<u64, (Instant, Vec<u8>)>,
    executed: HashMap<u64, u32>,
    cancelled: Vec<u64>,
    expired: Vec<u64>,
    closed: Option<CloseReason>,
}

impl ServerApp {
    /// Polls server events; `delay(id)` says how long each request takes.
    fn poll(&mut self, pair: &mut TestPair, delay: &mut dyn FnMut(u64, &str) -> Option<Duration>) {
        let now = pair.now;
        while let Some(ev) = pair.server.poll_event(now) {
            assert!(self.closed.is_none(), "event after Closed");
            match ev {
                ServerEvent::Request(req) => {
                    *self.executed.entry(req.id.0).or_default() += 1;
                    let target = req.target.to_string();
                    let mut answer = target.as_bytes().to_vec();
                    answer.push(b':');
                    answer.extend_from_slice(req.body);
                    if let Some(d) = delay(req.id.0, &target) {
                        self.deferred
                            .insert(req.id.0, (now.saturating_add(d), answer));
                    }
                }
                ServerEvent::Cancelled { id } => {
                    self.cancelled.push(id.0);
                    self.deferred.remove(&id.0);
                }
                ServerEvent::Expired { id } => {
                    self.expired.push(id.0);
                    self.deferred.remove(&id.0);
                }
                ServerEvent::Closed(reason) => self.closed = Some(reason),
                _ => {}
            }
        }
        // Answer what is due.
        let due: Vec<u64> = self
            .deferred
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let (_, answer) = &self.deferred[&id];
            match pair.server.respond(RequestId(id), Reply::Ok(answer)) {
                Ok(()) => {
                    self.deferred.remove(&id);
                }
                Err(RespondError::WouldBlock) => break,
                Err(e) => panic!("respond {id}: {e}"),
            }
        }
    }

    fn wake(&self) -> Option<Instant> {
        self.deferred.values().map(|(at, _)| *at).min()
    }
}

fn step_for(wake: Option<Instant>) -> Step {
    wake.map_or(Step::Continue, Step::WakeAt)
}

#[test]
fn handshake_and_one_call() {
    let mut p = pair(1);
    let id = p
        .client
        .call(p.now, "echo", b"hello", Some(Duration::from_secs(1)))
        .unwrap();
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    p.drive(1000, |p| {
        app.poll(p, &mut |_, _| Some(Duration::ZERO));
        log.poll(p);
        if log.outcomes.contains_key(&id.0) {
            Step::Done
        } else {
            step_for(app.wake())
        }
    })
    .unwrap();
    assert!(log.connected);
    assert_eq!(log.outcomes[&id.0], Outcome::Ok(b"echo:hello".to_vec()));
    assert_eq!(p.client.peer().unwrap().version, 2);
    assert_eq!(p.server.peer().unwrap().max_in_flight, 0);
    assert_eq!(p.client.peer().unwrap().max_in_flight, 16);
}

#[test]
fn pipelining_answers_out_of_order() {
    for seed in 0..20 {
        let mut p = pair(seed);
        let mut log = ClientLog::default();
        let mut app = ServerApp::default();
        let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let total = 200u64;
        let mut next = 0u64;
        p.drive(100_000, |p| {
            // Keep the window full.
            while next < total {
                let body = format!("req-{next}").into_bytes();
                match p.client.call(p.now, "m", &body, None) {
                    Ok(id) => {
                        sent.insert(id.0, body);
                        next += 1;
                    }
                    Err(SendError::TooManyInFlight | SendError::WouldBlock) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let mut rng_delay =
                |id: u64, _: &str| Some(Duration::from_micros((id * 7919 + seed) % 500));
            app.poll(p, &mut rng_delay);
            log.poll(p);
            if log.outcomes.len() as u64 == total {
                Step::Done
            } else {
                step_for(app.wake())
            }
        })
        .unwrap();
        for (id, body) in &sent {
            let mut want = b"m:".to_vec();
            want.extend_from_slice(body);
            assert_eq!(log.outcomes[id], Outcome::Ok(want), "seed {seed} id {id}");
        }
        assert!(app.executed.values().all(|&n| n == 1));
        assert_eq!(p.client.in_flight(), 0);
        assert_eq!(p.server.in_flight(), 0);
    }
}

#[test]
fn early_calls_before_server_hello_respect_baseline() {
    let mut p = pair(3);
    for i in 0..4 {
        p.client.call(p.now, "m", &[i], None).unwrap();
    }
    assert_eq!(
        p.client.call(p.now, "m", b"x", None),
        Err(SendError::TooManyInFlight)
    );
    // Above the baseline frame size: wait for the server's hello.
    assert_eq!(p.client.max_in_flight(), 4);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    p.drive(1000, |p| {
        app.poll(p, &mut |_, _| Some(Duration::ZERO));
        log.poll(p);
        if log.outcomes.len() == 4 {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert_eq!(p.client.max_in_flight(), 16);
    let big = vec![7u8; 2000];
    assert!(p.client.call(p.now, "m", &big, None).is_ok());
}

#[test]
fn big_call_waits_for_server_hello() {
    let mut p = pair(4);
    let big = vec![7u8; 2000];
    assert_eq!(
        p.client.call(p.now, "m", &big, None),
        Err(SendError::WouldBlock)
    );
    let huge = vec![7u8; 5000];
    // Frame body: tag, id, method, no budget, body length (1 + 1 + 2 + 1 + 2), then the
    // body; over what this client's own buffer holds, so no hello can allow it.
    match p.client.call(p.now, "m", &huge, None) {
        Err(SendError::TooLarge { len, limit }) => {
            assert_eq!(len, 7 + 5000);
            assert!((2007..len).contains(&limit), "{limit}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deadline_passes_call_times_out_maybe_executed() {
    let mut p = pair(5);
    let id = p
        .client
        .call(p.now, "slow", b"", Some(Duration::from_millis(20)))
        .unwrap();
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    p.drive(10_000, |p| {
        // The function takes a second: far past the deadline.
        app.poll(p, &mut |_, _| Some(Duration::from_secs(1)));
        log.poll(p);
        let server_dropped = app.expired.len() + app.cancelled.len() == 1;
        if log.outcomes.contains_key(&id.0) && server_dropped {
            Step::Done
        } else {
            step_for(app.wake())
        }
    })
    .unwrap();
    assert_eq!(
        log.outcomes[&id.0],
        Outcome::Failed("TimedOut { sent: true }".into(), Execution::MaybeExecuted)
    );
    // The server stopped the work: by its own deadline or the client's cancel, whichever
    // came first; either way the answer is never sent.
    assert!(app.deferred.is_empty());
    assert!(p.now < Instant::from_millis(100), "dropped at {}", p.now);
    assert_eq!(
        p.server.respond(id, Reply::Ok(b"late")),
        Err(RespondError::UnknownRequest)
    );
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!(p.client.stats().timeouts, 1);
}

#[test]
fn server_reports_expired_request() {
    let mut p = pair(25);
    let bytes = raw_stream(&[Frame::Request(Request {
        id: RequestId(1),
        method: "m",
        budget_ms: Some(20),
        body: b"",
    })]);
    let (events, closed) = feed_server(&mut p, &bytes);
    assert!(closed.is_none());
    assert!(
        events[1].contains("deadline: Some(Instant { micros: 20000 })"),
        "{events:?}"
    );
    assert_eq!(p.server.poll_timeout(), Some(Instant::from_millis(20)));
    p.now = Instant::from_millis(20);
    p.server.handle_timeout(p.now);
    assert_eq!(
        p.server.poll_event(p.now),
        Some(ServerEvent::Expired { id: RequestId(1) })
    );
    assert_eq!(p.server.poll_event(p.now), None);
    assert_eq!(p.server.in_flight(), 0);
    assert_eq!(p.server.stats().expired, 1);
}

#[test]
fn late_answer_after_timeout_is_ignored_and_counted() {
    let mut p = pair(6);
    let id = p
        .client
        .call(p.now, "m", b"", Some(Duration::from_millis(1)))
        .unwrap();
    let mut log = ClientLog::default();
    let mut answered = false;
    p.drive(10_000, |p| {
        let now = p.now;
        while let Some(ev) = p.server.poll_event(now) {
            if let ServerEvent::Request(req) = ev {
                assert_eq!(req.id, id);
            }
        }
        log.poll(p);
        // Answer only after the client has given up, before the server's own expiry.
        if log.outcomes.contains_key(&id.0) && !answered {
            answered = p.server.respond(id, Reply::Ok(b"late")).is_ok();
        }
        if answered && p.client.stats().late_responses == 1 {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert_eq!(log.outcomes.len(), 1);
}

#[test]
fn cancel_reaches_server_and_ends_call_once() {
    let mut p = pair(7);
    let keep = p.client.call(p.now, "m", b"keep", None).unwrap();
    let drop = p.client.call(p.now, "m", b"drop", None).unwrap();
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    let mut cancelled = false;
    p.drive(10_000, |p| {
        app.poll(p, &mut |_, _| Some(Duration::from_millis(100)));
        if !cancelled && app.executed.len() == 2 {
            assert!(p.client.cancel(drop));
            assert!(!p.client.cancel(drop), "a call is cancelled once");
            cancelled = true;
        }
        log.poll(p);
        if log.outcomes.len() == 2 && !app.cancelled.is_empty() {
            Step::Done
        } else {
            step_for(app.wake())
        }
    })
    .unwrap();
    assert_eq!(log.outcomes[&keep.0], Outcome::Ok(b"m:keep".to_vec()));
    assert_eq!(
        log.outcomes[&drop.0],
        Outcome::Failed("Cancelled { sent: true }".into(), Execution::MaybeExecuted)
    );
    assert_eq!(app.cancelled, vec![drop.0]);
    assert_eq!(
        p.server.respond(drop, Reply::Ok(b"")),
        Err(RespondError::UnknownRequest)
    );
}

#[test]
fn keepalive_pings_keep_an_idle_connection_open() {
    let mut cfg = Config::default();
    cfg.keepalive_interval = Some(Duration::from_secs(5));
    cfg.keepalive_timeout = Duration::from_secs(2);
    let mut p = pair_with(8, cfg, cfg);
    let end = Instant::from_millis(600_000);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    p.drive(100_000, |p| {
        app.poll(p, &mut |_, _| None);
        log.poll(p);
        if p.now >= end {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert!(p.client.is_open() && p.server.is_open());
    assert!(log.closed.is_none());
    // Ten minutes at one ping per 5 s of silence from each side.
    assert!(
        p.bytes_moved > 100 * 6,
        "pings flowed: {} bytes",
        p.bytes_moved
    );
}

#[test]
fn keepalive_expiry_closes_and_fails_calls() {
    let mut cfg = Config::default();
    cfg.keepalive_interval = Some(Duration::from_secs(5));
    cfg.keepalive_timeout = Duration::from_secs(2);
    let mut p = pair_with(9, cfg, cfg);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    let mut id = None;
    let mut server_dead = false;
    p.drive(100_000, |p| {
        if !server_dead {
            app.poll(p, &mut |_, _| None); // never answers
        }
        if log.connected && id.is_none() {
            id = Some(p.client.call(p.now, "m", b"", None).unwrap());
        }
        if id.is_some() && app.executed.len() == 1 && !server_dead {
            // The server host vanishes: nothing it sends arrives any more.
            server_dead = true;
        }
        if server_dead {
            p.s2c.clear();
            let n = p.server.transmit().len();
            p.server.advance_transmit(n);
        }
        log.poll(p);
        if log.closed.is_some() {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert_eq!(log.closed, Some(CloseReason::KeepaliveTimedOut));
    let id = id.unwrap();
    assert_eq!(
        log.outcomes[&id.0].clone(),
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::KeepaliveTimedOut,
                    sent: true
                }
            ),
            Execution::MaybeExecuted
        )
    );
    // Detected within interval + timeout of the last thing heard.
    assert!(p.now <= Instant::from_millis(8_000), "closed at {}", p.now);
}

#[test]
fn graceful_close_answers_calls_in_flight_and_refuses_later_ones() {
    let mut p = pair(10);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    let mut first = Vec::new();
    for i in 0..4u8 {
        first.push(p.client.call(p.now, "m", &[b'a' + i], None).unwrap());
    }
    let mut closing = false;
    let mut later = Vec::new();
    p.drive(100_000, |p| {
        app.poll(p, &mut |_, _| Some(Duration::from_millis(50)));
        if !closing && app.executed.len() == 4 {
            // All four taken; begin the close, then the client sends more before it
            // hears of the go-away.
            p.server.close(p.now);
            closing = true;
            while later.len() < 4 {
                match p.client.call(p.now, "m", b"late", None) {
                    Ok(id) => later.push(id),
                    Err(_) => break,
                }
            }
        }
        log.poll(p);
        if log.closed.is_some() && app.closed.is_some() {
            Step::Done
        } else {
            step_for(app.wake())
        }
    })
    .unwrap();
    for id in &first {
        assert!(
            matches!(log.outcomes[&id.0], Outcome::Ok(_)),
            "{id} answered"
        );
    }
    assert!(!later.is_empty());
    for id in &later {
        assert_eq!(
            log.outcomes[&id.0],
            Outcome::Failed("Refused".into(), Execution::NotExecuted)
        );
        assert!(!app.executed.contains_key(&id.0), "{id} was not run");
    }
    assert_eq!(log.closed, Some(CloseReason::Graceful));
    assert_eq!(app.closed, Some(CloseReason::Graceful));
    assert_eq!(p.client.call(p.now, "m", b"", None), Err(SendError::Closed));
}

#[test]
fn client_graceful_close_waits_for_answers() {
    let mut p = pair(11);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    let a = p.client.call(p.now, "m", b"a", None).unwrap();
    let b = p.client.call(p.now, "m", b"b", None).unwrap();
    p.client.close(p.now);
    assert_eq!(
        p.client.call(p.now, "m", b"c", None),
        Err(SendError::Closing)
    );
    p.drive(100_000, |p| {
        app.poll(p, &mut |id, _| Some(Duration::from_millis(10 * id)));
        log.poll(p);
        if log.closed.is_some() && app.closed.is_some() {
            Step::Done
        } else {
            step_for(app.wake())
        }
    })
    .unwrap();
    assert!(matches!(log.outcomes[&a.0], Outcome::Ok(_)));
    assert!(matches!(log.outcomes[&b.0], Outcome::Ok(_)));
    assert_eq!(log.closed, Some(CloseReason::Graceful));
    assert_eq!(app.closed, Some(CloseReason::Graceful));
}

#[test]
fn drain_timeout_bounds_a_graceful_close() {
    let mut cfg = Config::default();
    cfg.drain_timeout = Duration::from_secs(3);
    let mut p = pair_with(12, Config::default(), cfg);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    let id = p.client.call(p.now, "m", b"", None).unwrap();
    p.drive(100_000, |p| {
        app.poll(p, &mut |_, _| None); // never answers
        if app.executed.len() == 1 {
            p.server.close(p.now);
        }
        log.poll(p);
        if log.closed.is_some() && app.closed.is_some() {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert_eq!(app.closed, Some(CloseReason::DrainTimedOut));
    assert_eq!(
        log.closed,
        Some(CloseReason::PeerClosed(CloseCode::DRAIN_TIMEOUT))
    );
    assert_eq!(
        log.outcomes[&id.0].clone(),
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::PeerClosed(CloseCode::DRAIN_TIMEOUT),
                    sent: true
                }
            ),
            Execution::MaybeExecuted
        )
    );
}

/// Raw client bytes: our hello, then whatever frames the test adds.
fn raw_stream(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut out = vec![0u8; 64 * 1024];
    let mut at = 0;
    let hello = Frame::Hello(Hello {
        magic: MAGIC,
        min_version: 1,
        max_version: 1,
        max_frame_len: 65536,
        max_in_flight: 0,
    });
    at += encode_frame(&hello, &mut out[at..]).unwrap();
    for f in frames {
        at += encode_frame(f, &mut out[at..]).unwrap();
    }
    out.truncate(at);
    out
}

/// Feeds `bytes` to the server in small pieces and collects what it reports.
fn feed_server(p: &mut TestPair, bytes: &[u8]) -> (Vec<String>, Option<CloseReason>) {
    let mut events = Vec::new();
    let mut closed = None;
    for chunk in bytes.chunks(7) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let n = p.server.handle_input(p.now, rest);
            rest = &rest[n..];
            while let Some(ev) = p.server.poll_event(p.now) {
                match ev {
                    ServerEvent::Closed(r) => closed = Some(r),
                    other => events.push(format!("{other:?}")),
                }
            }
            if n == 0 {
                let len = p.server.transmit().len();
                p.server.advance_transmit(len);
            }
        }
    }
    (events, closed)
}

/// A request frame with no budget.
fn request(id: u64, method: &'static str, body: &'static [u8]) -> Frame<'static> {
    Frame::Request(Request {
        id: RequestId(id),
        method,
        budget_ms: None,
        body,
    })
}

/// Decodes every frame in `bytes` (after the server's own hello).
fn frames_sent(bytes: &[u8]) -> Vec<String> {
    let mut d = wirecall_core::frame::FrameDecoder::new(vec![0u8; 70_000], 65536);
    d.feed(bytes);
    let mut out = Vec::new();
    while let Ok(Some(body)) = d.next_frame() {
        out.push(format!("{:?}", Frame::decode(body).unwrap()));
    }
    out
}

#[test]
fn oversize_frame_closes_with_frame_too_large() {
    let mut cfg = Config::default();
    cfg.max_frame_len = 2048;
    let mut p = pair_with(13, Config::default(), cfg);
    let mut bytes = raw_stream(&[]);
    bytes.extend_from_slice(&3000u32.to_be_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    let (_, closed) = feed_server(&mut p, &bytes);
    assert!(matches!(
        closed,
        Some(CloseReason::Protocol(ProtocolError::TooLong(_)))
    ));
    let sent = frames_sent(p.server.transmit());
    assert!(
        sent.last().unwrap().contains("Close { code: CloseCode(3)"),
        "{sent:?}"
    );
}

#[test]
fn oversize_call_is_refused_locally() {
    let mut p = pair(14);
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    p.drive(1000, |p| {
        app.poll(p, &mut |_, _| None);
        log.poll(p);
        if log.connected {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    let too_big = vec![0u8; 4096];
    match p.client.call(p.now, "m", &too_big, None) {
        Err(SendError::TooLarge { len, limit }) => {
            assert_eq!(len, 7 + 4096);
            assert!(limit < len, "{limit}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.client.in_flight(), 0);
}

#[test]
fn garbage_instead_of_hello_is_not_wirecall() {
    let mut p = pair(15);
    let (_, closed) = feed_server(&mut p, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(closed, Some(CloseReason::NotWirecall));
    let sent = frames_sent(p.server.transmit());
    assert!(sent.last().unwrap().contains("CloseCode(4)"), "{sent:?}");
    // Short garbage with a plausible length, but not a hello.
    let mut p = pair(15);
    let (_, closed) = feed_server(&mut p, &[0, 0, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(closed, Some(CloseReason::NotWirecall));
}

#[test]
fn garbage_after_handshake_is_a_protocol_error() {
    for seed in 0..200u64 {
        let mut p = pair(16);
        let mut rng = wirecall_core::sim::Rng::new(seed);
        let mut bytes = raw_stream(&[]);
        let len = rng.between(1, 200) as usize;
        // A length prefix that fits, then random bytes.
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend((0..len).map(|_| rng.next_u64() as u8));
        let (events, closed) = feed_server(&mut p, &bytes);
        // Either it decoded as some frame by chance, or the connection closed with a
        // protocol error; never anything else, and never a panic.
        if let Some(reason) = closed {
            assert!(
                matches!(
                    reason,
                    CloseReason::Protocol(_) | CloseReason::PeerClosed(_)
                ),
                "seed {seed}: {reason:?} after {events:?}"
            );
        }
    }
}

#[test]
fn request_id_must_increase() {
    let mut p = pair(17);
    let req = |id| {
        Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: None,
            body: b"",
        })
    };
    let bytes = raw_stream(&[req(5), req(5)]);
    let (events, closed) = feed_server(&mut p, &bytes);
    assert_eq!(events.len(), 2, "{events:?}"); // Connected, one Request
    assert_eq!(
        closed,
        Some(CloseReason::Protocol(ProtocolError::IdNotIncreasing))
    );
}

#[test]
fn version_mismatch_is_reported_to_both_sides() {
    // A future client speaking only versions 3..=4.
    let mut p = pair(18);
    let mut bytes = vec![0u8; 64];
    let hello = Frame::Hello(Hello {
        magic: MAGIC,
        min_version: 3,
        max_version: 4,
        max_frame_len: 4096,
        max_in_flight: 0,
    });
    let n = encode_frame(&hello, &mut bytes).unwrap();
    let (_, closed) = feed_server(&mut p, &bytes[..n]);
    assert_eq!(
        closed,
        Some(CloseReason::VersionMismatch {
            local: (1, 2),
            remote: (3, 4)
        })
    );
    let sent = frames_sent(p.server.transmit());
    assert!(sent.last().unwrap().contains("CloseCode(2)"), "{sent:?}");

    // Our client against that future server: it sees the mismatch itself.
    let mut p = pair(18);
    let id = p.client.call(p.now, "m", b"", None).unwrap();
    assert_eq!(p.client.handle_input(p.now, &bytes[..n]), n);
    let mut log = ClientLog::default();
    log.poll(&mut p);
    assert_eq!(
        log.closed,
        Some(CloseReason::VersionMismatch {
            local: (1, 2),
            remote: (3, 4)
        })
    );
    // The request went nowhere: it never left our buffer.
    assert_eq!(
        log.outcomes[&id.0].clone(),
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::VersionMismatch {
                        local: (1, 2),
                        remote: (3, 4)
                    },
                    sent: false
                }
            ),
            Execution::NotExecuted
        )
    );
}

const KEY: EndpointKey = EndpointKey {
    path: 0x1ea0_363b_e967_1c13,
    schema: 7,
};

#[test]
fn a_typed_call_waits_for_the_hello_then_reaches_the_server_by_key() {
    let mut p = pair(21);
    // Before the server's hello the agreed version is unknown.
    assert_eq!(
        p.client.call(p.now, KEY, b"x", None),
        Err(SendError::WouldBlock)
    );
    let untyped = p.client.call(p.now, "m", b"x", None).unwrap();
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    let mut typed = None;
    p.drive(1000, |p| {
        app.poll(p, &mut |_, _| Some(Duration::ZERO));
        log.poll(p);
        if log.connected && typed.is_none() {
            typed = Some(p.client.call(p.now, KEY, b"x", None).unwrap());
        }
        match typed {
            Some(id) if log.outcomes.contains_key(&id.0) => Step::Done,
            _ => Step::Continue,
        }
    })
    .unwrap();
    assert_eq!(log.outcomes[&untyped.0], Outcome::Ok(b"m:x".to_vec()));
    let want = format!("endpoint {KEY}:x");
    assert_eq!(
        log.outcomes[&typed.unwrap().0],
        Outcome::Ok(want.into_bytes())
    );
    assert_eq!(p.client.peer().unwrap().version, 2);
}

#[test]
fn a_typed_call_to_a_version_1_server_is_refused_before_sending() {
    let mut p = pair(22);
    let mut bytes = vec![0u8; 64];
    let hello = Frame::Hello(Hello {
        magic: MAGIC,
        min_version: 1,
        max_version: 1,
        max_frame_len: 65536,
        max_in_flight: 8,
    });
    let n = encode_frame(&hello, &mut bytes).unwrap();
    assert_eq!(p.client.handle_input(p.now, &bytes[..n]), n);
    let mut log = ClientLog::default();
    log.poll(&mut p);
    assert!(log.connected);
    assert_eq!(
        p.client.call(p.now, KEY, b"x", None),
        Err(SendError::Unsupported { version: 1 })
    );
    // Untyped calls still go.
    assert!(p.client.call(p.now, "m", b"x", None).is_ok());
}

#[test]
fn a_typed_request_on_a_version_1_connection_is_a_violation() {
    let mut p = pair(23);
    let typed = Frame::request(RequestId(1), KEY.into(), None, b"x");
    let (events, closed) = feed_server(&mut p, &raw_stream(&[typed]));
    assert!(events.iter().all(|e| !e.contains("Request")), "{events:?}");
    assert_eq!(
        closed,
        Some(CloseReason::Protocol(ProtocolError::UnexpectedFrame))
    );
    // The same frame behind a hello for versions 1..=2 is taken.
    let mut p = pair(23);
    let mut stream = raw_stream(&[]);
    stream[10] = 2; // the hello's max_version: after the prefix, the tag, the magic and min
    let mut at = stream.len();
    stream.resize(at + 64, 0);
    at += encode_frame(&typed, &mut stream[at..]).unwrap();
    stream.truncate(at);
    let (events, closed) = feed_server(&mut p, &stream);
    assert_eq!(closed, None);
    assert!(events.iter().any(|e| e.contains("Endpoint")), "{events:?}");
}

#[test]
fn full_table_answers_busy_not_executed() {
    let mut cfg = Config::default();
    cfg.max_in_flight = 4;
    let mut p = pair_with(19, Config::default(), cfg);
    let req = |id| {
        Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: None,
            body: b"",
        })
    };
    // A client that ignores the limit sends six at once.
    let bytes = raw_stream(&[req(1), req(2), req(3), req(4), req(5), req(6)]);
    let (events, closed) = feed_server(&mut p, &bytes);
    assert!(closed.is_none());
    assert_eq!(
        events.iter().filter(|e| e.starts_with("Request")).count(),
        4
    );
    let sent = frames_sent(p.server.transmit());
    let busy: Vec<_> = sent.iter().filter(|f| f.contains("Busy")).collect();
    assert_eq!(busy.len(), 2, "{sent:?}");
    assert!(busy[0].contains("RequestId(5)") && busy[0].contains("retry_after_ms: 50"));
    assert_eq!(p.server.stats().busy, 2);
}

#[test]
fn application_busy_and_errors_map_to_execution() {
    let mut p = pair(20);
    let busy = p.client.call(p.now, "busy", b"", None).unwrap();
    let err = p.client.call(p.now, "err", b"", None).unwrap();
    let rej = p.client.call(p.now, "rej", b"", None).unwrap();
    let mut log = ClientLog::default();
    p.drive(1000, |p| {
        let now = p.now;
        let mut todo = Vec::new();
        while let Some(ev) = p.server.poll_event(now) {
            if let ServerEvent::Request(r) = ev {
                todo.push((r.id, r.target.method().unwrap().to_string()));
            }
        }
        for (id, method) in todo {
            let reply = match method.as_str() {
                "busy" => Reply::Busy {
                    retry_after_ms: 250,
                },
                "err" => Reply::Error {
                    code: 42,
                    message: "no such user",
                },
                _ => Reply::Rejected {
                    code: RejectCode::UNKNOWN_METHOD,
                    message: "rej",
                },
            };
            p.server.respond(id, reply).unwrap();
        }
        log.poll(p);
        if log.outcomes.len() == 3 {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert_eq!(
        log.outcomes[&busy.0],
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::Busy {
                    retry_after: Duration::from_millis(250)
                }
            ),
            Execution::NotExecuted
        )
    );
    assert_eq!(
        log.outcomes[&err.0],
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::Remote {
                    code: 42,
                    message: "no such user"
                }
            ),
            Execution::Executed
        )
    );
    assert_eq!(
        log.outcomes[&rej.0],
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::Rejected {
                    code: RejectCode::UNKNOWN_METHOD,
                    message: "rej"
                }
            ),
            Execution::NotExecuted
        )
    );
}

#[test]
fn transport_loss_reports_sent_and_unsent_calls() {
    let mut p = pair(21);
    let sent = p.client.call(p.now, "m", b"", None).unwrap();
    let n = p.client.transmit().len();
    p.client.advance_transmit(n); // handed to the "socket"
    let unsent = p.client.call(p.now, "m", b"", None).unwrap();
    p.client.handle_eof();
    let mut log = ClientLog::default();
    log.poll(&mut p);
    assert_eq!(
        log.outcomes[&sent.0].clone().clone(),
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::TransportClosed,
                    sent: true
                }
            ),
            Execution::MaybeExecuted
        )
    );
    assert_eq!(
        log.outcomes[&unsent.0],
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::TransportClosed,
                    sent: false
                }
            ),
            Execution::NotExecuted
        )
    );
    assert_eq!(log.closed, Some(CloseReason::TransportClosed));
}

#[test]
fn handshake_timeout_closes_a_silent_peer() {
    let mut p = pair(22);
    p.now = Instant::from_millis(10_000);
    p.server.handle_timeout(p.now);
    let mut closed = None;
    while let Some(ev) = p.server.poll_event(p.now) {
        if let ServerEvent::Closed(r) = ev {
            closed = Some(r);
        }
    }
    assert_eq!(closed, Some(CloseReason::HandshakeTimedOut));
}

#[test]
fn zero_budget_is_rejected_without_running() {
    let mut p = pair(23);
    let bytes = raw_stream(&[Frame::Request(Request {
        id: RequestId(1),
        method: "m",
        budget_ms: Some(0),
        body: b"",
    })]);
    let (events, closed) = feed_server(&mut p, &bytes);
    assert!(closed.is_none());
    assert!(
        events.iter().all(|e| !e.starts_with("Request")),
        "{events:?}"
    );
    let sent = frames_sent(p.server.transmit());
    assert!(
        sent.iter()
            .any(|f| f.contains("Rejected") && f.contains("RejectCode(2)")),
        "{sent:?}"
    );
}

#[test]
fn backpressure_stops_reading_when_answers_pile_up() {
    // The client never reads; the server keeps answering until its transmit buffer is
    // full, then stops taking requests off the wire, and nothing grows without bound.
    let mut p = pair(24);
    let mut stuck_at = None;
    let req = |id| {
        Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: None,
            body: &[0u8; 200],
        })
    };
    let mut wire = raw_stream(&[]);
    for id in 1..=200u64 {
        let mut buf = [0u8; 300];
        let n = encode_frame(&req(id), &mut buf).unwrap();
        wire.extend_from_slice(&buf[..n]);
    }
    let mut offset = 0;
    for _ in 0..10_000 {
        let n = p.server.handle_input(p.now, &wire[offset..]);
        offset += n;
        let now = p.now;
        let mut todo = Vec::new();
        while let Some(ev) = p.server.poll_event(now) {
            if let ServerEvent::Request(r) = ev {
                todo.push(r.id);
            }
        }
        for rid in todo {
            match p.server.respond(rid, Reply::Ok(&[1u8; 200])) {
                Ok(()) | Err(RespondError::WouldBlock) => {}
                Err(e) => panic!("{e}"),
            }
        }
        if n == 0 {
            stuck_at = Some(offset);
            break;
        }
    }
    let stuck_at = stuck_at.expect("reading stopped");
    assert!(stuck_at < wire.len());
    assert!(p.server.transmit().len() <= 4096);
}

/// Many seeds of a random mix: timeouts, cancels, slow and fast answers, a graceful close
/// part way. Every call the client accepted ends in exactly one outcome, and the server
/// ran each at most once.
#[test]
fn random_workload_every_call_ends_exactly_once() {
    for seed in 0..40u64 {
        let mut p = pair(1000 + seed);
        let mut rng = wirecall_core::sim::Rng::new(seed);
        let mut log = ClientLog::default();
        let mut app = ServerApp::default();
        let mut accepted = Vec::new();
        let close_after = rng.between(50, 400);
        let mut made = 0u64;
        p.drive(200_000, |p| {
            if made < 500 && log.closed.is_none() {
                let timeout = if rng.chance(300) {
                    Some(Duration::from_micros(rng.between(100, 3000)))
                } else {
                    None
                };
                match p.client.call(p.now, "m", b"x", timeout) {
                    Ok(id) => accepted.push(id.0),
                    Err(
                        SendError::TooManyInFlight
                        | SendError::WouldBlock
                        | SendError::Closing
                        | SendError::Closed,
                    ) => {}
                    Err(e) => panic!("{e}"),
                }
                made += 1;
                if rng.chance(50) {
                    if let Some(&victim) = accepted.last() {
                        p.client.cancel(RequestId(victim));
                    }
                }
            }
            if made == close_after {
                p.server.close(p.now);
            }
            let mut delay = |_, _: &str| Some(Duration::from_micros((made * 37) % 2000));
            app.poll(p, &mut delay);
            log.poll(p);
            if log.closed.is_some() && app.closed.is_some() {
                Step::Done
            } else {
                step_for(app.wake())
            }
        })
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for id in &accepted {
            assert!(
                log.outcomes.contains_key(id),
                "seed {seed}: call {id} has no outcome"
            );
        }
        assert_eq!(log.outcomes.len(), accepted.len(), "seed {seed}");
        assert!(app.executed.values().all(|&n| n == 1), "seed {seed}");
        for (id, outcome) in &log.outcomes {
            if let Outcome::Failed(_, Execution::NotExecuted) = outcome {
                assert!(
                    !app.executed.contains_key(id),
                    "seed {seed}: {id} said not executed but ran"
                );
            }
        }
    }
}

/// An abrupt local close drops every request not yet begun from the transmit queue, so a
/// call reported not executed can never reach the server; a partly sent one is finished
/// (the stream must stay well-formed) and reported as sent.
#[test]
fn abort_never_sends_a_request_reported_unsent() {
    let mut p = pair(30);
    let n = p.client.transmit().len();
    p.client.advance_transmit(n); // the hello is out
    let partly = p
        .client
        .call(p.now, "transfer", b"partly sent", None)
        .unwrap();
    let unsent = p
        .client
        .call(p.now, "transfer", b"never sent", None)
        .unwrap();
    p.client.advance_transmit(3); // three bytes of the first request
    p.client.abort();
    let mut log = ClientLog::default();
    log.poll(&mut p);
    assert_eq!(
        log.outcomes[&partly.0].clone(),
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::Aborted,
                    sent: true
                }
            ),
            Execution::MaybeExecuted
        )
    );
    assert_eq!(
        log.outcomes[&unsent.0].clone(),
        Outcome::Failed(
            format!(
                "{:?}",
                Failure::ConnectionLost {
                    reason: CloseReason::Aborted,
                    sent: false
                }
            ),
            Execution::NotExecuted
        )
    );
    // What is left to send: the rest of the first request, and nothing of the second.
    let rest = p.client.transmit().to_vec();
    assert!(!rest.is_empty());
    assert!(
        !rest.windows(10).any(|w| w == b"never sent"),
        "the unsent request is gone"
    );
    assert!(rest.windows(11).any(|w| w == b"partly sent"));
}

/// A peer that neither reads nor sends: the ping cannot even be queued, yet the keepalive
/// timer runs, the next timeout is always in the future (no busy loop), and the
/// connection closes.
#[test]
fn keepalive_times_out_even_when_the_ping_cannot_be_queued() {
    let mut cfg = Config::default();
    cfg.keepalive_interval = Some(Duration::from_secs(30));
    cfg.keepalive_timeout = Duration::from_secs(10);
    let mut p = pair_with(31, cfg, cfg);
    // Handshake done, then the server stops reading: fill the client's queue.
    let mut log = ClientLog::default();
    let mut app = ServerApp::default();
    p.drive(1000, |p| {
        app.poll(p, &mut |_, _| None);
        log.poll(p);
        if log.connected {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    let body = [0u8; 900];
    while p.client.call(p.now, "m", &body, None).is_ok() {}
    let mut t = p.now;
    for _ in 0..100 {
        let wake = p.client.poll_timeout().expect("a timer is set");
        assert!(
            wake > t || !p.client.is_open(),
            "poll_timeout {wake} is not after {t}"
        );
        t = wake;
        p.client.handle_timeout(t);
        log.poll(&mut p);
        if log.closed.is_some() {
            break;
        }
    }
    assert_eq!(log.closed, Some(CloseReason::KeepaliveTimedOut));
    assert!(t <= Instant::from_millis(41_000), "closed at {t}");
}

/// A server at its connection limit refuses at once: hello, then close REFUSED; the
/// client knows none of its calls ran. The same for a peer the server does not allow
/// (NOT_ALLOWED).
#[test]
fn refused_connection_fails_calls_as_not_executed() {
    for (deny, reason, code) in [
        (false, CloseReason::Refused, CloseCode::REFUSED),
        (true, CloseReason::NotAllowed, CloseCode::NOT_ALLOWED),
    ] {
        refused_as(deny, reason, code);
    }
}

fn refused_as(deny: bool, reason: CloseReason, code: CloseCode) {
    let mut p = pair(32);
    if deny {
        p.server.deny();
    } else {
        p.server.refuse();
    }
    let id = p.client.call(p.now, "m", b"", None).unwrap();
    let mut log = ClientLog::default();
    let mut server_closed = None;
    p.drive(1000, |p| {
        while let Some(ev) = p.server.poll_event(p.now) {
            if let ServerEvent::Closed(r) = ev {
                server_closed = Some(r);
            }
        }
        log.poll(p);
        if log.closed.is_some() {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
    assert_eq!(server_closed, Some(reason));
    assert_eq!(log.closed, Some(CloseReason::PeerClosed(code)));
    match &log.outcomes[&id.0] {
        Outcome::Failed(_, execution) => assert_eq!(*execution, Execution::NotExecuted),
        other => panic!("{other:?}"),
    }
}

/// A stream that ends in the middle of a frame is a protocol error, not a clean close.
#[test]
fn end_of_stream_mid_frame_is_a_protocol_error() {
    let mut p = pair(33);
    let mut bytes = raw_stream(&[]);
    bytes.extend_from_slice(&[0, 0, 0, 9, 1, 2]); // a prefix and two of nine bytes
    let (_, closed) = feed_server(&mut p, &bytes);
    assert!(closed.is_none());
    p.server.handle_eof();
    let mut reason = None;
    while let Some(ev) = p.server.poll_event(p.now) {
        if let ServerEvent::Closed(r) = ev {
            reason = Some(r);
        }
    }
    assert_eq!(
        reason,
        Some(CloseReason::Protocol(ProtocolError::TruncatedFrame))
    );
}

#[test]
fn config_errors_name_the_real_cause_first() {
    use wirecall_core::client::CallSlot;
    use wirecall_core::config::ConfigError;
    use wirecall_core::server::{RequestSlot, ServerConnection};
    let mut cfg = Config::default();
    cfg.max_frame_len = 100;
    let small = ServerConnection::new(
        cfg,
        [0u8; 104],
        [0u8; 104],
        [RequestSlot::EMPTY; 4],
        Instant::ZERO,
    );
    assert_eq!(
        small.unwrap_err(),
        ConfigError::FrameLimitTooSmall {
            need: 1024,
            have: 100
        }
    );
    let tiny_tx = wirecall_core::ClientConnection::new(
        Config::default(),
        vec![0u8; 2048],
        vec![0u8; 64],
        [CallSlot::EMPTY; 4],
        Instant::ZERO,
    );
    assert!(matches!(
        tiny_tx.unwrap_err(),
        ConfigError::TransmitBufferTooSmall { .. }
    ));
    let few = ServerConnection::new(
        Config::default(),
        [0u8; 2048],
        [0u8; 2048],
        [RequestSlot::EMPTY; 3],
        Instant::ZERO,
    );
    assert_eq!(
        few.unwrap_err(),
        ConfigError::TooFewSlots { need: 4, have: 3 }
    );
}

/// `close(); transmit()` sends the go-away at once, on both sides. A server's go-away
/// names the last request already received, even one still in its buffer: that one is
/// still delivered and answered, and a later one is dropped, not run.
#[test]
fn close_queues_the_goaway_at_once_and_keeps_what_was_received() {
    let mut p = pair(11);
    let hello_and_two = raw_stream(&[request(1, "a", b"1"), request(2, "b", b"2")]);
    let sent_before = p.server.transmit().len();
    assert_eq!(
        p.server.handle_input(p.now, &hello_and_two),
        hello_and_two.len()
    );
    // Nothing taken yet: both requests wait in the buffer.
    p.server.close(p.now);
    let queued = frames_sent(p.server.transmit());
    assert!(p.server.transmit().len() > sent_before);
    assert_eq!(
        queued.last().map(String::as_str),
        Some("GoAway { last_id: RequestId(2) }"),
        "{queued:?}"
    );
    let mut ids = Vec::new();
    while let Some(ev) = p.server.poll_event(p.now) {
        if let ServerEvent::Request(r) = ev {
            ids.push(r.id);
        }
    }
    assert_eq!(ids, [RequestId(1), RequestId(2)]);
    // A request after the go-away is dropped.
    let late = raw_stream(&[request(3, "c", b"3")]);
    let hello_len = raw_stream(&[]).len();
    let (events, closed) = feed_server(&mut p, &late[hello_len..]);
    assert!(events.is_empty(), "{events:?}");
    assert!(closed.is_none());
    assert_eq!(p.server.stats().after_goaway, 1);
    for id in ids {
        p.server.respond(id, Reply::Ok(b"")).unwrap();
    }
    assert!(matches!(
        p.server.poll_event(p.now),
        Some(ServerEvent::Closed(CloseReason::Graceful))
    ));

    // The client's go-away is queued by `close` too.
    let mut p = pair(12);
    let before = p.client.transmit().len();
    p.client.close(p.now);
    let queued = frames_sent(&p.client.transmit()[before..]);
    assert_eq!(queued, ["GoAway { last_id: RequestId(0) }"]);
}

/// `respond_with` answers from the request's bytes in place, for the request just taken;
/// an older one, or one whose bytes may have moved, is refused without ending it.
#[test]
fn respond_with_answers_from_the_receive_buffer() {
    let mut p = pair(13);
    let req = |id, body: &'static [u8]| request(id, "echo", body);
    let stream = raw_stream(&[req(1, b"first"), req(2, b"second")]);
    assert_eq!(p.server.handle_input(p.now, &stream), stream.len());
    let mut ids = Vec::new();
    while let Some(ev) = p.server.poll_event(p.now) {
        if let ServerEvent::Request(r) = ev {
            ids.push(r.id);
        }
    }
    assert_eq!(ids, [RequestId(1), RequestId(2)]);
    // Only the last request taken can be answered in place...
    assert_eq!(
        p.server.respond_with(RequestId(1), |r| Reply::Ok(r.body)),
        Err(RespondError::NotInBuffer)
    );
    let before = p.server.transmit().len();
    p.server
        .respond_with(RequestId(2), |r| Reply::Ok(r.body))
        .unwrap();
    let sent = frames_sent(&p.server.transmit()[before..]);
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].contains("Ok([115, 101, 99, 111, 110, 100])"),
        "{sent:?}"
    );
    // ...once: it is answered now.
    assert_eq!(
        p.server.respond_with(RequestId(2), |r| Reply::Ok(r.body)),
        Err(RespondError::UnknownRequest)
    );
    // The older one still waits, for `respond`.
    p.server.respond(RequestId(1), Reply::Ok(b"first")).unwrap();

    // After more input the bytes may have moved: refused, the request still waits.
    let hello_len = raw_stream(&[]).len();
    let third = raw_stream(&[req(3, b"third")]);
    assert_eq!(
        p.server.handle_input(p.now, &third[hello_len..]),
        third.len() - hello_len
    );
    let Some(ServerEvent::Request(r)) = p.server.poll_event(p.now) else {
        panic!("request 3")
    };
    assert_eq!(r.id, RequestId(3));
    let _ = p.server.input_buffer();
    assert_eq!(
        p.server.respond_with(RequestId(3), |r| Reply::Ok(r.body)),
        Err(RespondError::NotInBuffer)
    );
    p.server.respond(RequestId(3), Reply::Ok(b"third")).unwrap();
}

/// A client's end of stream means it sends nothing more, not that it stops reading: the
/// requests already taken are still answered (a slow one too), then the connection ends.
#[test]
fn end_of_stream_still_answers_what_was_taken() {
    let mut p = pair(14);
    let stream = raw_stream(&[request(1, "sleep", b"300")]);
    assert_eq!(p.server.handle_input(p.now, &stream), stream.len());
    p.server.handle_eof();
    let mut taken = Vec::new();
    while let Some(ev) = p.server.poll_event(p.now) {
        match ev {
            ServerEvent::Request(r) => taken.push(r.id),
            ServerEvent::Connected(_) => {}
            other => panic!("{other:?} before the answer"),
        }
    }
    assert_eq!(taken, [RequestId(1)]);
    // Later, the slow answer still goes out, and then the connection ends.
    p.now = p.now.saturating_add(Duration::from_millis(300));
    let before = p.server.transmit().len();
    p.server.respond(RequestId(1), Reply::Ok(b"300")).unwrap();
    assert!(p.server.transmit().len() > before, "the answer is queued");
    assert!(matches!(
        p.server.poll_event(p.now),
        Some(ServerEvent::Closed(CloseReason::TransportClosed))
    ));
    assert!(
        frames_sent(&p.server.transmit()[before..])[0].contains("Response"),
        "and kept: no close frame cuts it"
    );
}

/// A request after the client's own go-away breaks its promise: a protocol violation. Id 0
/// has its own message.
#[test]
fn requests_after_a_client_goaway_or_with_id_zero_are_violations() {
    let req = |id| request(id, "echo", b"");
    let mut p = pair(15);
    let stream = raw_stream(&[
        req(1),
        Frame::GoAway {
            last_id: RequestId(1),
        },
        req(2),
    ]);
    let (_, closed) = feed_server(&mut p, &stream);
    assert_eq!(
        closed,
        Some(CloseReason::Protocol(ProtocolError::UnexpectedFrame))
    );

    let mut p = pair(16);
    let (_, closed) = feed_server(&mut p, &raw_stream(&[req(0)]));
    assert_eq!(closed, Some(CloseReason::Protocol(ProtocolError::ZeroId)));
    let sent = frames_sent(p.server.transmit());
    assert!(
        sent.iter().any(|f| f.contains("\"request id 0\"")),
        "{sent:?}"
    );
}

/// An answer over the client's frame limit goes out, byte for byte, as the reserved
/// `ERROR_ANSWER_TOO_LARGE` (the function ran); a rejection too large loses its message;
/// both are counted, and the connection goes on.
#[test]
fn an_answer_over_the_client_limit_becomes_the_reserved_error() {
    use wirecall_core::wire::{ERROR_ANSWER_TOO_LARGE, Response};
    let mut p = pair(17);
    let req = |id| request(id, "m", b"");
    // The client announces 65,536 (raw_stream's hello): answer 70,000 bytes.
    let stream = raw_stream(&[req(1), req(2), req(3)]);
    assert_eq!(p.server.handle_input(p.now, &stream), stream.len());
    while p.server.poll_event(p.now).is_some() {}
    let huge = vec![7u8; 70_000];
    let before = p.server.transmit().len();
    p.server.respond(RequestId(1), Reply::Ok(&huge)).unwrap();
    let expected = Frame::Response(Response {
        id: RequestId(1),
        reply: Reply::Error {
            code: ERROR_ANSWER_TOO_LARGE,
            message: "answer larger than the client accepts",
        },
    });
    let mut want = vec![0u8; 128];
    let n = encode_frame(&expected, &mut want).unwrap();
    assert_eq!(&p.server.transmit()[before..], &want[..n]);
    let long = "r".repeat(70_000);
    let before = p.server.transmit().len();
    let rejection = Reply::Rejected {
        code: RejectCode(300),
        message: &long,
    };
    p.server.respond(RequestId(2), rejection).unwrap();
    let sent = frames_sent(&p.server.transmit()[before..]);
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].contains("Rejected { code: RejectCode(300), message: \"\" }"),
        "{sent:?}"
    );
    assert_eq!(p.server.stats().answers_too_large, 2);
    // A normal answer still goes out as it is.
    p.server.respond(RequestId(3), Reply::Ok(b"ok")).unwrap();
    assert!(p.server.is_open());
    assert_eq!(p.server.stats().responses, 3);
}

/// After the client's go-away a request is a violation even when nothing is in flight
/// (the server handles what it received before it closes), and a full transmit buffer
/// only delays the server's own go-away: requests after it are still dropped.
#[test]
fn goaway_rules_hold_when_idle_and_when_the_buffer_is_full() {
    let req = |id| request(id, "echo", b"");
    let mut p = pair(18);
    let stream = raw_stream(&[
        Frame::GoAway {
            last_id: RequestId(0),
        },
        req(1),
    ]);
    assert_eq!(p.server.handle_input(p.now, &stream), stream.len());
    let mut closed = None;
    while let Some(ev) = p.server.poll_event(p.now) {
        if let ServerEvent::Closed(reason) = ev {
            closed = Some(reason);
        }
    }
    assert_eq!(
        closed,
        Some(CloseReason::Protocol(ProtocolError::UnexpectedFrame))
    );

    // A server whose transmit buffer is full owes its go-away, and drops later requests.
    let mut small = Config::default();
    small.max_frame_len = 1024;
    let mut p =
        Pair::<1100, 16, 65536>::new(19, Config::default(), small, NetConfig::default()).unwrap();
    // 14 bytes of hello + 1,084 of answer leave 2 of the 1,100: no room for a go-away.
    let big = vec![1u8; 1075];
    let first = raw_stream(&[req(1), req(2)]);
    assert_eq!(p.server.handle_input(p.now, &first), first.len());
    while p.server.poll_event(p.now).is_some() {}
    // Fill the transmit buffer (its hello is still in it) with one big answer.
    p.server.respond(RequestId(1), Reply::Ok(&big)).unwrap();
    p.server.close(p.now);
    assert!(
        !frames_sent(p.server.transmit())
            .iter()
            .any(|f| f.contains("GoAway")),
        "no room for the go-away yet"
    );
    let hello_len = raw_stream(&[]).len();
    let late = raw_stream(&[req(3)]);
    assert_eq!(
        p.server.handle_input(p.now, &late[hello_len..]),
        late.len() - hello_len
    );
    while p.server.poll_event(p.now).is_some() {}
    assert_eq!(
        p.server.stats().after_goaway,
        1,
        "request 3 is after the go-away"
    );
    // Room again: the owed go-away goes out, naming request 2.
    let len = p.server.transmit().len();
    p.server.advance_transmit(len);
    while p.server.poll_event(p.now).is_some() {}
    let sent = frames_sent(p.server.transmit());
    assert_eq!(sent, ["GoAway { last_id: RequestId(2) }"], "{sent:?}");
}

/// After the client's end of stream, answers given at once and later all go out, in the
/// order given; one never given ends the connection at the drain timeout.
#[test]
fn end_of_stream_answers_quick_and_slow_calls_then_bounds_the_wait() {
    let req = |id, method| request(id, method, b"");
    let mut p = pair(20);
    let stream = raw_stream(&[req(1, "quick"), req(2, "slow"), req(3, "quick")]);
    assert_eq!(p.server.handle_input(p.now, &stream), stream.len());
    p.server.handle_eof();
    let before = p.server.transmit().len();
    let mut slow = Vec::new();
    while let Some(ev) = p.server.poll_event(p.now) {
        if let ServerEvent::Request(r) = ev {
            if r.target.method() == Some("slow") {
                slow.push(r.id);
            } else {
                let id = r.id;
                p.server.respond_with(id, |_| Reply::Ok(b"now")).unwrap();
            }
        }
    }
    assert_eq!(slow, [RequestId(2)]);
    assert!(p.server.is_open(), "a taken call is still owed");
    p.now = p.now.saturating_add(Duration::from_millis(500));
    p.server.respond(RequestId(2), Reply::Ok(b"later")).unwrap();
    assert!(matches!(
        p.server.poll_event(p.now),
        Some(ServerEvent::Closed(CloseReason::TransportClosed))
    ));
    let sent = frames_sent(&p.server.transmit()[before..]);
    let ids: Vec<bool> = (1..=3)
        .map(|id| {
            sent.iter()
                .any(|f| f.contains(&format!("id: RequestId({id})")))
        })
        .collect();
    assert_eq!(ids, [true, true, true], "{sent:?}");

    // Never answered: the drain timeout (default 30 s) ends it.
    let mut p = pair(21);
    let stream = raw_stream(&[req(1, "slow")]);
    assert_eq!(p.server.handle_input(p.now, &stream), stream.len());
    p.server.handle_eof();
    while p.server.poll_event(p.now).is_some() {}
    assert!(p.server.is_open());
    let at = p.server.poll_timeout().expect("the drain timer");
    assert!(at <= p.now.saturating_add(Duration::from_secs(30)));
    assert!(matches!(
        p.server.poll_event(at),
        Some(ServerEvent::Closed(CloseReason::DrainTimedOut))
    ));
}

/// A frame tag written in more bytes than needed is accepted (PROTOCOL.md section 2), so a
/// padded Close or Ping is the same frame as a short one: a client takes the server's
/// close for what it is, and answers a padded ping. (Found by the `client_connection`
/// fuzzer: the shared keepalive-and-close path looked only at the first byte.)
#[test]
fn a_frame_whose_tag_is_written_long_is_still_that_frame() {
    use wirecall_core::client::CallSlot;
    let hello = Frame::Hello(Hello {
        magic: MAGIC,
        min_version: 1,
        max_version: 1,
        max_frame_len: 65_536,
        max_in_flight: 16,
    });
    let framed = |body: &[u8]| {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    };
    let connected = || {
        let mut c = wirecall_core::ClientConnection::new(
            Config::default(),
            vec![0u8; 70_000],
            vec![0u8; 70_000],
            [CallSlot::EMPTY; 16],
            Instant::ZERO,
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let n = encode_frame(&hello, &mut buf).unwrap();
        assert_eq!(c.handle_input(Instant::ZERO, &buf[..n]), n);
        assert!(matches!(
            c.poll_event(Instant::ZERO),
            Some(ClientEvent::Connected(_))
        ));
        let sent = c.transmit().len();
        c.advance_transmit(sent);
        c
    };

    // Close { code 1, message "" } with its tag 7 as 87 00.
    let mut c = connected();
    assert_eq!(
        c.handle_input(Instant::ZERO, &framed(&[0x87, 0x00, 0x01, 0x00])),
        8
    );
    assert_eq!(
        c.poll_event(Instant::ZERO),
        Some(ClientEvent::Closed(CloseReason::PeerClosed(CloseCode(1))))
    );

    // Ping { nonce 9 } with its tag 4 as 84 00: answered with a pong, the connection goes on.
    let mut c = connected();
    assert_eq!(
        c.handle_input(Instant::ZERO, &framed(&[0x84, 0x00, 0x09])),
        7
    );
    assert_eq!(c.poll_event(Instant::ZERO), None);
    let out = c.transmit().to_vec();
    assert_eq!(
        Frame::decode(&out[4..]).unwrap(),
        Frame::Pong { nonce: 9 },
        "{out:?}"
    );
}
