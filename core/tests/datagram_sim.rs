//! Datagram mode in the deterministic simulation harness: clients and a server exchanging
//! datagrams through a network that loses, duplicates, delays and reorders them, from a
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

use wirecall_core::client::{Execution, SendError};
use wirecall_core::datagram::{
    DatagramCallSlot, DatagramClient, DatagramConfig, DatagramEntry, DatagramEvent,
    DatagramFailure, DatagramServer, DropReason, Duplicates, Received, RequestHandle,
};
use wirecall_core::sim::{DatagramNet, Faults, Rng};
use wirecall_core::wire::datagram::{DatagramHeader, encode_datagram};
use wirecall_core::wire::{Frame, RejectCode, Reply, Request, RequestId};
use wirecall_core::{Duration, Instant};

const MTU: usize = 256;
const SERVER: u32 = 0;

type Client = DatagramClient<Vec<u8>, Vec<DatagramCallSlot>>;
type Server = DatagramServer<u32, Vec<u8>, Vec<DatagramEntry<u32>>>;
type Net = DatagramNet<u32, 1024, MTU>;

fn config() -> DatagramConfig {
    let mut c = DatagramConfig::default();
    c.max_datagram = MTU;
    c.initial_rto = Duration::from_millis(10);
    c.max_rto = Duration::from_millis(200);
    c.max_attempts = 8;
    c.default_timeout = Duration::from_secs(2);
    c.max_latency = Duration::from_millis(50);
    c.max_answer = MTU;
    c
}

fn client(cfg: DatagramConfig, epoch: u64, slots: usize) -> Client {
    DatagramClient::new(
        cfg,
        epoch,
        epoch ^ 0x5eed,
        vec![0; cfg.client_storage_len(slots).unwrap()],
        vec![DatagramCallSlot::EMPTY; slots],
    )
    .unwrap()
}

fn server(cfg: DatagramConfig, entries: usize) -> Server {
    DatagramServer::new(
        cfg,
        vec![0; (entries + 1) * MTU],
        vec![DatagramEntry::EMPTY; entries],
    )
    .unwrap()
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Vec<u8>),
    Failed(String, Execution),
}

/// The whole world: clients 1..=n, the server at address 0, the network, the clock.
struct World {
    now: Instant,
    net: Box<Net>,
    rng: Rng,
    clients: Vec<Client>,
    server: Server,
    /// Per client: call id -> outcome.
    outcomes: Vec<BTreeMap<u64, Outcome>>,
    /// Per client: call id -> body sent.
    bodies: Vec<HashMap<u64, Vec<u8>>>,
    /// (client epoch, call id) -> times the server's function ran.
    executed: HashMap<(u64, u64), u32>,
    /// Calls being worked on: handle -> (answer time, answer).
    working: BTreeMap<(u64, u32), (RequestHandle, Vec<u8>)>,
    /// How long the server's function takes, at most.
    work_time: Duration,
    /// Tie-breaker of `working` keys: unique, so no work is overwritten.
    seq: u32,
}

impl World {
    fn new(seed: u64, faults: Faults, n_clients: usize, entries: usize) -> Self {
        Self::with_config(config(), seed, faults, n_clients, entries)
    }

    fn with_config(
        cfg: DatagramConfig,
        seed: u64,
        faults: Faults,
        n_clients: usize,
        entries: usize,
    ) -> Self {
        Self {
            now: Instant::ZERO,
            net: Box::new(Net::new(faults)),
            rng: Rng::new(seed),
            clients: (0..n_clients)
                .map(|i| client(cfg, seed.rotate_left(8) ^ (i as u64 + 1), 32))
                .collect(),
            server: server(cfg, entries),
            outcomes: vec![BTreeMap::new(); n_clients],
            bodies: vec![HashMap::new(); n_clients],
            executed: HashMap::new(),
            working: BTreeMap::new(),
            work_time: Duration::from_millis(5),
            seq: 0,
        }
    }

    fn record(&mut self, c: usize, id: RequestId, outcome: Outcome) {
        let old = self.outcomes[c].insert(id.0, outcome);
        assert!(old.is_none(), "client {c} call {id} got a second outcome");
    }

    /// One round: clients transmit, the network delivers what is due, timers fire, the
    /// server finishes due work. Returns whether anything happened.
    fn step(&mut self) -> bool {
        let mut busy = false;
        for c in 0..self.clients.len() {
            let from = c as u32 + 1;
            while let Some(transmit) = self.clients[c].poll_transmit(self.now) {
                self.net
                    .send(self.now, from, SERVER, transmit.bytes, &mut self.rng);
                busy = true;
            }
        }
        let mut buf = [0u8; MTU];
        while let Some((from, to, len)) = self.net.deliver(self.now, &mut buf) {
            busy = true;
            let datagram = buf[..len].to_vec();
            if to == SERVER {
                self.server_receive(from, &datagram);
            } else {
                let c = (to - 1) as usize;
                assert!(self.clients[c].handle_datagram(self.now, &datagram));
                while let Some(ev) = self.clients[c].poll_event(self.now) {
                    match ev {
                        DatagramEvent::Response { id, body } => {
                            let body = body.to_vec();
                            self.record(c, id, Outcome::Ok(body));
                        }
                        DatagramEvent::Failed { id, failure } => {
                            let o = Outcome::Failed(format!("{failure:?}"), failure.execution());
                            self.record(c, id, o);
                        }
                        _ => {}
                    }
                }
            }
        }
        for c in 0..self.clients.len() {
            while let Some(ev) = self.clients[c].poll_event(self.now) {
                busy = true;
                if let DatagramEvent::Failed { id, failure } = ev {
                    let o = Outcome::Failed(format!("{failure:?}"), failure.execution());
                    self.record(c, id, o);
                }
            }
        }
        let due: Vec<(u64, u32)> = self
            .working
            .range(..=(self.now.as_micros(), u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let (handle, answer) = self.working.remove(&key).unwrap();
            busy = true;
            if let Ok(tx) = self.server.respond(handle, Reply::Ok(&answer)) {
                let (to, bytes) = (*tx.to, tx.bytes.to_vec());
                self.net.send(self.now, SERVER, to, &bytes, &mut self.rng);
            }
        }
        busy
    }

    fn server_receive(&mut self, from: u32, datagram: &[u8]) {
        let now = self.now;
        match self.server.handle_datagram(now, &from, datagram) {
            Received::Request(req) => {
                let epoch = u64::from_be_bytes(datagram[5..13].try_into().unwrap());
                *self.executed.entry((epoch, req.id.0)).or_default() += 1;
                let mut answer = b"ok:".to_vec();
                answer.extend_from_slice(req.body);
                let handle = req.handle;
                let delay = self.rng.below(self.work_time.as_micros() + 1);
                self.seq += 1;
                let key = (now.as_micros() + delay, self.seq);
                let old = self.working.insert(key, (handle, answer));
                assert!(old.is_none(), "no work is lost");
            }
            Received::Reply(tx) => {
                assert_eq!(*tx.to, from, "a reply goes back to its sender");
                let bytes = tx.bytes.to_vec();
                self.net.send(now, SERVER, from, &bytes, &mut self.rng);
            }
            Received::Cancelled(_) | Received::Dropped(_) => {}
            _ => {}
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut next = self.net.next_delivery();
        for c in &self.clients {
            next = [next, c.poll_timeout()].into_iter().flatten().min();
        }
        if let Some(&(at, _)) = self.working.keys().next() {
            next = [next, Some(Instant::from_micros(at))]
                .into_iter()
                .flatten()
                .min();
        }
        next
    }

    /// Runs until `done` or nothing is left to happen; bounded.
    fn run(&mut self, max_steps: usize, mut each: impl FnMut(&mut Self) -> bool) {
        for _ in 0..max_steps {
            let stop = each(self);
            let busy = self.step();
            let idle = self.net.in_flight() == 0
                && self.working.is_empty()
                && self.clients.iter().all(|c| c.in_flight() == 0);
            if stop && !busy && idle {
                return;
            }
            if !busy {
                match self.next_wakeup() {
                    Some(at) if at > self.now => self.now = at,
                    Some(_) => {}
                    None if stop => return,
                    None => {}
                }
            }
        }
        panic!("step limit reached at {}", self.now);
    }

    /// Starts up to `n` calls per client, as slots allow, over the run.
    fn call_some(
        &mut self,
        c: usize,
        method: &str,
        timeout: Option<Duration>,
    ) -> Option<RequestId> {
        let body = format!("c{c}-{}", self.bodies[c].len()).into_bytes();
        match self.clients[c].call(self.now, method, &body, timeout) {
            Ok(id) => {
                self.bodies[c].insert(id.0, body);
                Some(id)
            }
            Err(SendError::TooManyInFlight) => None,
            Err(e) => panic!("call: {e}"),
        }
    }

    /// The invariants every run must keep.
    fn check(&self) {
        for (c, client) in self.clients.iter().enumerate() {
            let epoch = client.epoch();
            assert_eq!(
                self.outcomes[c].len(),
                self.bodies[c].len(),
                "client {c}: every call ends"
            );
            for (id, outcome) in &self.outcomes[c] {
                let runs = self.executed.get(&(epoch, *id)).copied().unwrap_or(0);
                assert!(runs <= 1, "client {c} call {id} ran {runs} times");
                match outcome {
                    Outcome::Ok(body) => {
                        assert_eq!(runs, 1, "answered call {id} ran once");
                        let mut want = b"ok:".to_vec();
                        want.extend_from_slice(&self.bodies[c][id]);
                        assert_eq!(body, &want, "client {c} call {id} got its own answer");
                    }
                    Outcome::Failed(_, Execution::NotExecuted) => assert_eq!(runs, 0),
                    Outcome::Failed(..) => {}
                }
            }
            assert_eq!(client.in_flight(), 0);
        }
    }
}

#[test]
fn one_call_clean_network() {
    let mut w = World::new(1, Faults::default(), 1, 16);
    let id = w.call_some(0, "m", None).unwrap();
    w.run(1000, |_| true);
    assert_eq!(w.outcomes[0][&id.0], Outcome::Ok(b"ok:c0-0".to_vec()));
    assert_eq!(w.clients[0].stats().retransmissions, 0);
    w.check();
}

/// The long run: thousands of calls from several clients through 30% loss and 10%
/// duplication with reordering; every call ends exactly once, no function runs twice, and
/// every answered call ran exactly once.
#[test]
fn lossy_network_thousands_of_calls_run_at_most_once() {
    let faults = Faults {
        loss_per_mille: 300,
        duplicate_per_mille: 100,
        latency: Duration::from_micros(200),
        jitter: Duration::from_millis(3),
    };
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for seed in 0..4u64 {
        let mut w = World::new(seed, faults, 6, 2048);
        let per_client = 500usize;
        w.run(2_000_000, |w| {
            for c in 0..w.clients.len() {
                while w.bodies[c].len() < per_client && w.call_some(c, "m", None).is_some() {}
            }
            w.bodies.iter().all(|b| b.len() == per_client)
        });
        w.check();
        let calls: u64 = w.clients.iter().map(|c| c.stats().calls).sum();
        let retransmits: u64 = w.clients.iter().map(|c| c.stats().retransmissions).sum();
        let timeouts: u64 = w.clients.iter().map(|c| c.stats().timeouts).sum();
        let answered: u64 = w
            .outcomes
            .iter()
            .flat_map(|o| o.values())
            .filter(|o| matches!(o, Outcome::Ok(_)))
            .count() as u64;
        let s = w.server.stats();
        eprintln!(
            "seed {seed}: calls {calls}, answered {answered}, timeouts {timeouts}, retransmissions {retransmits}, \
             server: runs {}, replayed {}, in-progress dups {}, busy {}; net: sent {}, lost {}, duplicated {}; sim time {}",
            s.requests,
            s.replayed,
            s.in_progress,
            s.busy,
            w.net.stats.sent,
            w.net.stats.lost,
            w.net.stats.duplicated,
            w.now
        );
        assert_eq!(calls, 6 * per_client as u64);
        assert!(
            s.replayed > 0 && s.in_progress + s.replayed > 0,
            "duplicates were suppressed"
        );
        assert!(
            answered as f64 > calls as f64 * 0.9,
            "most calls answered: {answered}/{calls}"
        );
        totals.0 += calls;
        totals.1 += answered;
        totals.2 += timeouts;
        totals.3 += retransmits;
        totals.4 += s.replayed + s.in_progress;
        totals.5 += s.requests;
    }
    eprintln!(
        "total: calls {}, answered {}, timeouts {}, retransmissions {}, duplicates suppressed {}, function runs {}",
        totals.0, totals.1, totals.2, totals.3, totals.4, totals.5
    );
}

#[test]
fn retransmission_backs_off_exponentially_with_jitter() {
    // Nothing arrives: the client sends max_attempts copies, spaced by doubling waits.
    let mut faults = Faults::default();
    faults.loss_per_mille = 1000;
    let mut w = World::new(3, faults, 1, 16);
    let id = w.call_some(0, "m", Some(Duration::from_secs(10))).unwrap();
    let mut sends = Vec::new();
    let mut last = 0;
    w.run(100_000, |w| {
        let t = w.clients[0].stats().transmissions;
        if t != last {
            sends.push(w.now);
            last = t;
        }
        true
    });
    let cfg = config();
    assert_eq!(
        w.clients[0].stats().transmissions,
        u64::from(cfg.max_attempts)
    );
    let gaps: Vec<u64> = sends
        .windows(2)
        .map(|p| p[1].as_micros() - p[0].as_micros())
        .collect();
    let mut base = cfg.initial_rto.as_micros();
    for gap in &gaps {
        let b = base.min(cfg.max_rto.as_micros());
        assert!(
            *gap >= b && *gap <= b * 3 / 2 + 10_000,
            "gap {gap} vs base {b}: {gaps:?}"
        );
        base *= 2;
    }
    assert_eq!(
        w.outcomes[0][&id.0],
        Outcome::Failed(
            format!("{:?}", DatagramFailure::TimedOut { sent: true }),
            Execution::MaybeExecuted
        )
    );
}

#[test]
fn timeout_before_any_transmission_is_not_executed() {
    let cfg = config();
    let mut c = client(cfg, 9, 4);
    let id = c
        .call(Instant::ZERO, "m", b"", Some(Duration::from_millis(1)))
        .unwrap();
    // The runtime never got to send it.
    match c.poll_event(Instant::from_millis(1)) {
        Some(DatagramEvent::Failed { id: got, failure }) => {
            assert_eq!(got, id);
            assert_eq!(failure, DatagramFailure::TimedOut { sent: false });
            assert_eq!(failure.execution(), Execution::NotExecuted);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        c.poll_transmit(Instant::from_millis(1)).is_none(),
        "no cancel for a call never sent"
    );
}

#[test]
fn duplicate_request_gets_cached_answer_without_rerun() {
    let cfg = config();
    let mut s = server(cfg, 8);
    let mut d = [0u8; MTU];
    let req = Frame::Request(Request {
        id: RequestId(7),
        method: "m",
        budget_ms: Some(1000),
        body: b"x",
    });
    let n = encode_datagram(DatagramHeader::new(42, 0), &req, &mut d).unwrap();
    let handle = match s.handle_datagram(Instant::ZERO, &1, &d[..n]) {
        Received::Request(r) => r.handle,
        other => panic!("{other:?}"),
    };
    // A retransmission while it runs: dropped, not run again.
    assert_eq!(
        s.handle_datagram(Instant::from_millis(1), &1, &d[..n]),
        Received::Dropped(DropReason::InProgress)
    );
    let answer = s
        .respond(handle, Reply::Ok(b"done"))
        .unwrap()
        .bytes
        .to_vec();
    // A retransmission after: the same answer, byte for byte.
    assert!(matches!(
        s.handle_datagram(Instant::from_millis(2), &1, &d[..n]),
        Received::Reply(tx) if tx.bytes == &answer[..] && *tx.to == 1
    ));
    // The same id and epoch from another peer is another call.
    assert!(matches!(
        s.handle_datagram(Instant::from_millis(3), &2, &d[..n]),
        Received::Request(_)
    ));
    assert_eq!(s.stats().requests, 2);
    assert_eq!(s.stats().replayed, 1);
    assert_eq!(s.stats().in_progress, 1);
    // Answering twice is refused.
    assert!(s.respond(handle, Reply::Ok(b"again")).is_err());
}

#[test]
fn full_cache_answers_busy_with_retry_hint_and_never_evicts_live_calls() {
    let cfg = config();
    // Three entries: the client's record and two calls.
    let mut s = server(cfg, 3);
    let mut d = [0u8; MTU];
    let mut send = |s: &mut Server, id: u64, at: Instant| {
        let req = Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: Some(100),
            body: b"",
        });
        let n = encode_datagram(DatagramHeader::new(5, 0), &req, &mut d).unwrap();
        format!("{:?}", s.handle_datagram(at, &1, &d[..n]))
    };
    assert!(send(&mut s, 1, Instant::ZERO).starts_with("Request"));
    assert!(send(&mut s, 2, Instant::ZERO).starts_with("Request"));
    let busy = send(&mut s, 3, Instant::from_millis(10));
    assert!(busy.starts_with("Reply"), "{busy}");
    assert_eq!(s.stats().busy, 1);
    // Entries live for budget + max_latency = 150 ms; after that the slot is reused.
    assert!(send(&mut s, 3, Instant::from_millis(150)).starts_with("Request"));
    // And the call that held it is forgotten: a retransmission now would run again, but
    // no client retransmits after its budget, and max_latency covers the stragglers.
}

/// With a clean network the client's floor rises as answers come, so the server forgets
/// ended calls at once: a small cache serves thousands of calls without a busy
/// answer, where budget-long windows alone would need an entry per call (2000 here).
#[test]
fn floor_lets_a_small_cache_serve_many_calls() {
    // 32 calls in flight at a time; 256 entries hold them and the client's record with room
    // to spare in every bucket.
    let mut w = World::new(7, Faults::default(), 1, 256);
    w.work_time = Duration::ZERO;
    let total = 2000;
    w.run(1_000_000, |w| {
        while w.bodies[0].len() < total && w.call_some(0, "m", None).is_some() {}
        w.bodies[0].len() == total
    });
    w.check();
    assert_eq!(w.server.stats().requests, total as u64);
    assert_eq!(w.server.stats().busy, 0);
    assert!(
        w.now < Instant::from_millis(2000),
        "well inside one budget: {}",
        w.now
    );
}

/// Overload: more calls in flight than cache entries. Some calls are answered busy, and a
/// busy call holds its client's floor down; the acks still free every answered call above
/// it, so the cache keeps turning over and every call is answered, well inside one
/// budget. (With the floor alone the answered calls above the busy ones filled the cache
/// and everything stalled until the windows closed: every call left timed out.)
#[test]
fn acks_keep_an_overloaded_cache_turning_over() {
    // 8 clients with 32 calls in flight each: 256 calls against 96 entries.
    let mut w = World::new(11, Faults::default(), 8, 96);
    let per_client = 400;
    w.run(2_000_000, |w| {
        for c in 0..8 {
            while w.bodies[c].len() < per_client && w.call_some(c, "m", None).is_some() {}
        }
        (0..8).all(|c| w.bodies[c].len() == per_client)
    });
    w.check();
    let answered: usize = w
        .outcomes
        .iter()
        .map(|o| o.values().filter(|v| matches!(v, Outcome::Ok(_))).count())
        .sum();
    let failed: Vec<_> = w
        .outcomes
        .iter()
        .flat_map(|o| o.iter().filter(|(_, v)| !matches!(v, Outcome::Ok(_))))
        .collect();
    assert_eq!(
        answered,
        8 * per_client,
        "every call answered: {failed:?} at {} {:?}",
        w.now,
        w.server.stats()
    );
    assert!(w.server.stats().busy > 0, "the cache did overflow");
    assert!(
        w.now < Instant::from_millis(2000),
        "well inside one budget: {}",
        w.now
    );
}

/// A lagging call (its copies lost) does not hold the server's memory of the calls after
/// it: the acks free them, and a late copy of an acknowledged call is refused.
#[test]
fn acknowledged_calls_are_freed_and_their_late_copies_refused() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let mut request = |s: &mut Server, id: u64, floor: u64, acks: u64, at: u64| {
        let req = Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: Some(1000),
            body: b"",
        });
        let header = DatagramHeader::new(9, floor).with_acks(acks);
        let n = encode_datagram(header, &req, &mut d).unwrap();
        match s.handle_datagram(Instant::from_millis(at), &1, &d[..n]) {
            Received::Request(r) => Some(r.handle),
            _ => None,
        }
    };
    // Call 1 lags; calls 2 and 3 run and are answered.
    assert!(request(&mut s, 1, 1, 0, 0).is_some());
    let h2 = request(&mut s, 2, 1, 0, 0).unwrap();
    let h3 = request(&mut s, 3, 1, 0, 0).unwrap();
    s.respond(h2, Reply::Ok(b"2")).unwrap();
    s.respond(h3, Reply::Ok(b"3")).unwrap();
    // Call 4 says 2 and 3 have ended (bits 0 and 1: floor + 1 and floor + 2).
    assert!(request(&mut s, 4, 1, 0b011, 10).is_some());
    // A late copy of call 3, with the old header: refused, never run again.
    assert!(request(&mut s, 3, 1, 0, 20).is_none());
    assert_eq!(s.stats().stale, 1);
    // And a copy of the lagging call 1 is still recognised as in progress.
    assert!(request(&mut s, 1, 1, 0b011, 20).is_none());
    assert_eq!(s.stats().in_progress, 1);
}

/// The client never makes a call more than 64 ids past its oldest waiting call, so every
/// call it makes can be acknowledged; its datagrams acknowledge exactly the ended calls.
#[test]
fn client_acks_ended_calls_and_bounds_its_span() {
    let mut c = client(config(), 5, 8);
    let t = Instant::ZERO;
    let first = c.call(t, "m", b"", None).unwrap();
    let mut last = first;
    // Keep call 1 waiting; make and answer calls until the span is full.
    for _ in 0..64 {
        let id = c.call(t, "m", b"", None).unwrap();
        while c.poll_transmit(t).is_some() {}
        let answer = Frame::Response(wirecall_core::wire::Response {
            id,
            reply: Reply::Ok(b""),
        });
        let mut d = [0u8; MTU];
        let n = encode_datagram(DatagramHeader::new(5, 0), &answer, &mut d).unwrap();
        assert!(c.handle_datagram(t, &d[..n]));
        assert!(matches!(
            c.poll_event(t),
            Some(DatagramEvent::Response { .. })
        ));
        last = id;
    }
    assert_eq!(last.0, 65);
    assert!(matches!(
        c.call(t, "m", b"", None),
        Err(SendError::TooManyInFlight)
    ));
    // Its next copy of call 1 says: floor 1, calls 2..=65 ended.
    let later = t.saturating_add(Duration::from_secs(1));
    let datagram = c
        .poll_transmit(later)
        .expect("a retransmission of call 1")
        .bytes;
    let (header, _) = DatagramHeader::parse(datagram).unwrap();
    assert_eq!((header.floor, header.acks), (1, u64::MAX));
}

/// A late copy of a call below the client's floor is dropped, never run, whether or not
/// the call's own entry is still there.
#[test]
fn late_copy_below_the_floor_is_not_run() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let mut request = |s: &mut Server, id: u64, floor: u64, at: u64| {
        let req = Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: Some(1000),
            body: b"",
        });
        let n = encode_datagram(DatagramHeader::new(9, floor), &req, &mut d).unwrap();
        let r = s.handle_datagram(Instant::from_millis(at), &1, &d[..n]);
        match r {
            Received::Request(r) => {
                let h = r.handle;
                s.respond(h, Reply::Ok(b"")).unwrap();
                "run".to_string()
            }
            other => format!("{other:?}"),
        }
    };
    assert_eq!(request(&mut s, 1, 1, 0), "run");
    // The client got answer 1 and moves on: its next request says floor 2.
    assert_eq!(request(&mut s, 2, 2, 1), "run");
    // A copy of call 1 sent before the answer arrives now, late: dropped.
    assert_eq!(
        request(&mut s, 1, 1, 2),
        format!("{:?}", Received::<u32>::Dropped(DropReason::Stale))
    );
    assert_eq!(s.stats().requests, 2);
    assert_eq!(s.stats().stale, 1);
    // A request below its own floor is malformed for a conforming client: dropped too.
    assert_eq!(
        request(&mut s, 3, 4, 3),
        format!("{:?}", Received::<u32>::Dropped(DropReason::Stale))
    );
}

/// The highest id is never run: a record's floor cannot pass it, so once a client had
/// acknowledged it, nothing could say it had ended and a late copy would run again (found by
/// the `datagram_server` fuzz target).
#[test]
fn the_highest_id_is_never_run() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let top = u64::MAX;
    let req = Frame::Request(Request {
        id: RequestId(top),
        method: "m",
        budget_ms: Some(1000),
        body: b"",
    });
    let n = encode_datagram(DatagramHeader::new(9, top), &req, &mut d).unwrap();
    let r = s.handle_datagram(Instant::from_millis(0), &1, &d[..n]);
    assert_eq!(
        format!("{r:?}"),
        format!("{:?}", Received::<u32>::Dropped(DropReason::Stale))
    );
    // The one below it still runs.
    let req = Frame::Request(Request {
        id: RequestId(top - 1),
        method: "m",
        budget_ms: Some(1000),
        body: b"",
    });
    let n = encode_datagram(DatagramHeader::new(9, top - 1), &req, &mut d).unwrap();
    let r = s.handle_datagram(Instant::from_millis(1), &1, &d[..n]);
    assert!(matches!(r, Received::Request(_)), "{r:?}");
    assert_eq!(s.stats().requests, 1);
    assert_eq!(s.stats().stale, 1);
}

/// An application that answers busy has not run the call: the answer is not cached, and
/// the client's next copy is taken afresh.
#[test]
fn application_busy_frees_the_entry_for_the_next_copy() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let req = Frame::Request(Request {
        id: RequestId(1),
        method: "m",
        budget_ms: Some(1000),
        body: b"",
    });
    let n = encode_datagram(DatagramHeader::new(3, 1), &req, &mut d).unwrap();
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    let tx = s
        .respond(r.handle, Reply::Busy { retry_after_ms: 10 })
        .unwrap();
    assert!(!tx.bytes.is_empty());
    let Received::Request(r) = s.handle_datagram(Instant::from_millis(10), &1, &d[..n]) else {
        panic!("the copy after the hint is taken again")
    };
    assert_eq!(s.stats().requests, 2);
    assert_eq!(s.stats().replayed, 0);
    // An application's busy with hint 0 goes out as 1: hint 0 is the server's own "the
    // answer is held back", which would tell the client the call ran.
    let tx = s
        .respond(r.handle, Reply::Busy { retry_after_ms: 0 })
        .unwrap();
    assert_eq!(reply_of(tx.bytes), Reply::Busy { retry_after_ms: 1 });
}

/// A copy answered busy was not lost: it does not use up one of `max_attempts`, so a call
/// keeps trying until its deadline however often the server is busy.
#[test]
fn busy_answers_do_not_use_up_attempts() {
    let mut cfg = config();
    cfg.max_attempts = 2;
    let mut c = client(cfg, 78, 4);
    let id = c
        .call(Instant::ZERO, "m", b"", Some(Duration::from_secs(2)))
        .unwrap();
    let busy = Frame::Response(wirecall_core::wire::Response {
        id,
        reply: Reply::Busy { retry_after_ms: 5 },
    });
    let mut d = [0u8; MTU];
    let n = encode_datagram(DatagramHeader::new(78, 0), &busy, &mut d).unwrap();
    let mut now = Instant::ZERO;
    for _ in 0..6 {
        assert!(c.poll_transmit(now).is_some(), "a copy at {now}");
        now = now.saturating_add(Duration::from_millis(1));
        assert!(c.handle_datagram(now, &d[..n]));
        assert_eq!(c.poll_event(now), None);
        now = c.poll_timeout().unwrap();
    }
    assert_eq!(
        c.stats().transmissions,
        6,
        "three times max_attempts, all answered busy"
    );
    // Two copies lost in a row (no answer at all) end the retransmissions as usual.
    assert!(c.poll_transmit(now).is_some());
    now = c.poll_timeout().unwrap();
    assert!(c.poll_transmit(now).is_some());
    assert_eq!(
        c.poll_timeout(),
        Some(Instant::ZERO.saturating_add(Duration::from_secs(2)))
    );
}

/// The server keeps each client within 64 ids of the highest floor it has announced: a
/// request past that is rejected (not run, not cached, counted), and one within it runs,
/// whatever order the datagrams come in.
#[test]
fn requests_more_than_64_ids_above_the_floor_are_rejected() {
    let mut s = server(config(), 64);
    let request = |floor: u64, id: u64| {
        let req = Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: Some(1000),
            body: b"",
        });
        let mut d = [0u8; MTU];
        let n = encode_datagram(DatagramHeader::new(44, floor), &req, &mut d).unwrap();
        d[..n].to_vec()
    };
    assert!(matches!(
        s.handle_datagram(Instant::ZERO, &1, &request(1, 65)),
        Received::Request(_)
    ));
    let rejected = match s.handle_datagram(Instant::ZERO, &1, &request(1, 66)) {
        Received::Reply(tx) => tx.bytes.to_vec(),
        other => panic!("{other:?}"),
    };
    let (_, body) = DatagramHeader::parse(&rejected).unwrap();
    assert!(matches!(
        Frame::decode(body).unwrap(),
        Frame::Response(wirecall_core::wire::Response {
            id: RequestId(66),
            reply: Reply::Rejected {
                code: RejectCode::INVALID_REQUEST,
                ..
            },
        })
    ));
    assert_eq!(s.stats().rejected, 1);
    // Once the client's floor has moved up (a later datagram says so), 66 is in reach;
    // a copy that still carries the old floor is judged by the record's, the higher.
    assert!(matches!(
        s.handle_datagram(Instant::ZERO, &1, &request(2, 66)),
        Received::Request(_)
    ));
    assert!(matches!(
        s.handle_datagram(Instant::ZERO, &1, &request(1, 66)),
        Received::Dropped(DropReason::InProgress)
    ));
    assert_eq!(s.stats().requests, 2);
}

/// One address opening epoch after epoch holds at most `max_peer_entries / 66` records:
/// its further epochs are answered busy (not run, counted) while another address still
/// gets through; once its records' windows close it may open new ones.
#[test]
fn a_peer_opening_epoch_after_epoch_is_held_to_its_share_of_the_cache() {
    let mut cfg = config();
    cfg.max_peer_entries = 3 * wirecall_core::datagram::EPOCH_ENTRIES + 10;
    let mut s = server(cfg, 1024);
    let request = |epoch: u64| {
        let req = Frame::Request(Request {
            id: RequestId(1),
            method: "m",
            budget_ms: Some(1000),
            body: b"",
        });
        let mut d = [0u8; MTU];
        let n = encode_datagram(DatagramHeader::new(epoch, 1), &req, &mut d).unwrap();
        d[..n].to_vec()
    };
    let is_busy = |r: &Received<'_, '_, u32>| match r {
        Received::Reply(tx) => matches!(reply_of(tx.bytes), Reply::Busy { .. }),
        _ => false,
    };
    let mut taken = 0;
    for epoch in 1..=200 {
        let d = request(epoch);
        let r = s.handle_datagram(Instant::ZERO, &7, &d);
        if matches!(r, Received::Request(_)) {
            taken += 1;
        } else {
            assert!(is_busy(&r), "epoch {epoch}: {r:?}");
        }
    }
    assert_eq!(taken, 3);
    assert_eq!(s.stats().busy_peer_quota, 197);
    assert_eq!(s.stats().busy, 197);
    // Another address is not held to the first one's share.
    for epoch in 1..=3 {
        assert!(matches!(
            s.handle_datagram(Instant::ZERO, &8, &request(epoch)),
            Received::Request(_)
        ));
    }
    // After the windows close (budget 1 s + max_latency), the first address has room again.
    let later = Instant::ZERO.saturating_add(Duration::from_millis(1051));
    assert!(matches!(
        s.handle_datagram(later, &7, &request(500)),
        Received::Request(_)
    ));
}

/// Anti-amplification: for each call the server sends at most three times the bytes of its
/// copies received. A 200-byte answer to a 40-byte request is held back, each copy answered
/// busy with hint 0 until enough copies have come, then the stored answer goes out,
/// byte for byte; the client, seeing busy then the answer, ends the call with the answer,
/// and the function ran once. With the rule off, the answer goes out at once.
#[test]
fn an_answer_much_larger_than_its_request_waits_for_enough_copies() {
    let big = vec![b'x'; 200];
    for factor in [3u32, 0] {
        let mut cfg = config();
        cfg.amplification = factor;
        let mut s = server(cfg, 64);
        let mut d = [0u8; MTU];
        let n = request(1, b"hi", &mut d);
        let copy = d[..n].to_vec();
        let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &copy) else {
            panic!()
        };
        let first = s.respond(r.handle, Reply::Ok(&big)).unwrap().bytes.to_vec();
        if factor == 0 {
            assert!(matches!(reply_of(&first), Reply::Ok(b) if b == &big[..]));
            assert_eq!(s.stats().withheld, 0);
            continue;
        }
        assert_eq!(reply_of(&first), Reply::Busy { retry_after_ms: 0 });
        let mut sent = first.len();
        let mut received = copy.len();
        let mut copies = 1;
        let answer = loop {
            copies += 1;
            assert!(copies < 40, "the answer never went out");
            received += copy.len();
            let out = match s.handle_datagram(Instant::ZERO, &1, &copy) {
                Received::Reply(tx) => tx.bytes.to_vec(),
                other => panic!("{other:?}"),
            };
            sent += out.len();
            assert!(
                sent <= 3 * received,
                "{sent} bytes sent for {received} received"
            );
            match reply_of(&out) {
                Reply::Busy { retry_after_ms: 0 } => {}
                Reply::Ok(body) => {
                    assert_eq!(body, &big[..]);
                    break out;
                }
                other => panic!("{other:?}"),
            }
        };
        assert!(answer.len() > 3 * copy.len());
        assert_eq!(s.stats().requests, 1, "the function ran once");
        assert_eq!(s.stats().withheld, copies - 1);
        assert_eq!(s.stats().replayed, 1);
        eprintln!(
            "a {}-byte answer to {}-byte copies went out with copy {copies}",
            answer.len(),
            copy.len()
        );
    }
}

/// A client and a server with the anti-amplification rule: each busy answer with hint 0
/// (the answer held back) is answered with a copy at once, at the same instant, and the
/// call ends with the answer, executed once; on a transport without duplicates a call that
/// only ever got such answers is never reported busy (it ran).
#[test]
fn a_held_back_answer_is_fetched_with_prompt_copies() {
    let big = vec![b'y'; 200];
    let mut cfg = config();
    cfg.duplicates = Duplicates::Never;
    let mut c = client(cfg, 91, 4);
    let mut s = server(cfg, 64);
    let now = Instant::ZERO;
    let id = c
        .call(now, "m", b"", Some(Duration::from_millis(50)))
        .unwrap();
    let first = c.poll_transmit(now).unwrap().bytes.to_vec();
    let Received::Request(r) = s.handle_datagram(now, &1, &first) else {
        panic!()
    };
    let mut answer = s.respond(r.handle, Reply::Ok(&big)).unwrap().bytes.to_vec();
    let mut copies = 1;
    while matches!(reply_of(&answer), Reply::Busy { retry_after_ms: 0 }) {
        assert!(c.handle_datagram(now, &answer));
        assert_eq!(c.poll_event(now), None);
        let copy = c.poll_transmit(now).expect("a copy at once").bytes.to_vec();
        copies += 1;
        answer = match s.handle_datagram(now, &1, &copy) {
            Received::Reply(tx) => tx.bytes.to_vec(),
            other => panic!("{other:?}"),
        };
    }
    assert!(c.handle_datagram(now, &answer));
    match c.poll_event(now) {
        Some(wirecall_core::datagram::DatagramEvent::Response { id: got, body, .. }) => {
            assert_eq!(got, id);
            assert_eq!(body, &big[..]);
        }
        other => panic!("{other:?}"),
    }
    assert!(copies > 2, "{copies}");
    assert_eq!(c.stats().held_back, copies - 1);
    assert_eq!(s.stats().requests, 1);

    // A call whose every copy is held back until its deadline is a timeout, maybe
    // executed, even where busy would mean not executed.
    let id = c
        .call(now, "m", b"", Some(Duration::from_millis(50)))
        .unwrap();
    let copy = c.poll_transmit(now).unwrap().bytes.to_vec();
    let Received::Request(r) = s.handle_datagram(now, &1, &copy) else {
        panic!()
    };
    let held = s.respond(r.handle, Reply::Ok(&big)).unwrap().bytes.to_vec();
    assert!(c.handle_datagram(now, &held));
    let later = now.saturating_add(Duration::from_millis(50));
    while c.poll_transmit(later).is_some() {}
    match c.poll_event(later) {
        Some(wirecall_core::datagram::DatagramEvent::Failed { id: got, failure }) => {
            assert_eq!(got, id);
            assert!(
                matches!(failure, DatagramFailure::TimedOut { .. }),
                "{failure:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// An answer far larger than its request (8,000 bytes to a 40-byte request, with datagrams
/// of 8 KiB) needs about a hundred copies to reach the allowance: the client sends every one
/// of them at once, not only the first 32, so the call ends with its answer at once.
#[test]
fn a_large_held_back_answer_is_fetched_with_as_many_prompt_copies_as_it_needs() {
    const BIG: usize = 8192;
    let big = vec![b'z'; 8000];
    let mut cfg = config();
    cfg.max_datagram = BIG;
    cfg.max_answer = BIG;
    let mut c = DatagramClient::new(
        cfg,
        92,
        92 ^ 0x5eed,
        vec![0; cfg.client_storage_len(4).unwrap()],
        vec![DatagramCallSlot::EMPTY; 4],
    )
    .unwrap();
    let mut s: Server =
        DatagramServer::new(cfg, vec![0; 17 * BIG], vec![DatagramEntry::EMPTY; 16]).unwrap();
    let now = Instant::ZERO;
    let id = c.call(now, "m", b"", Some(Duration::from_secs(1))).unwrap();
    let first = c.poll_transmit(now).unwrap().bytes.to_vec();
    let Received::Request(r) = s.handle_datagram(now, &1, &first) else {
        panic!()
    };
    let mut answer = s.respond(r.handle, Reply::Ok(&big)).unwrap().bytes.to_vec();
    let mut copies = 1;
    while matches!(reply_of(&answer), Reply::Busy { retry_after_ms: 0 }) {
        assert!(c.handle_datagram(now, &answer));
        let copy = c
            .poll_transmit(now)
            .unwrap_or_else(|| panic!("no copy at once after {copies}"))
            .bytes
            .to_vec();
        copies += 1;
        answer = match s.handle_datagram(now, &1, &copy) {
            Received::Reply(tx) => tx.bytes.to_vec(),
            other => panic!("{other:?}"),
        };
    }
    assert!(copies > 32, "{copies} copies: the case needs more than 32");
    assert!(c.handle_datagram(now, &answer));
    assert!(matches!(
        c.poll_event(now),
        Some(wirecall_core::datagram::DatagramEvent::Response { id: got, .. }) if got == id
    ));
}

/// A busy answer (the server's `Response` with `Busy`) to call `id` of epoch `epoch`.
fn busy_answer(epoch: u64, id: RequestId, retry_after_ms: u32) -> Vec<u8> {
    let busy = Frame::Response(wirecall_core::wire::Response {
        id,
        reply: Reply::Busy { retry_after_ms },
    });
    let mut d = [0u8; MTU];
    let n = encode_datagram(DatagramHeader::new(epoch, 0), &busy, &mut d).unwrap();
    d[..n].to_vec()
}

/// Over a transport that never duplicates, every copy reached the server and was answered
/// busy: at the deadline the call ends busy, not executed (no copy is still on its way to
/// run), with the last hint; its cancel still goes out, carrying the news that the call
/// ended.
#[test]
fn a_call_busy_on_every_copy_until_its_deadline_ends_busy_not_executed() {
    let mut cfg = config();
    cfg.duplicates = Duplicates::Never;
    let mut c = client(cfg, 80, 4);
    let deadline = Instant::from_millis(500);
    let id = c
        .call(Instant::ZERO, "m", b"", Some(Duration::from_millis(500)))
        .unwrap();
    let mut now = Instant::ZERO;
    let mut copies = 0;
    while now < deadline {
        if c.poll_transmit(now).is_some() {
            copies += 1;
            now = now.saturating_add(Duration::from_millis(1));
            assert!(c.handle_datagram(now, &busy_answer(80, id, 7)));
        }
        assert_eq!(c.poll_event(now), None, "still trying at {now}");
        now = c.poll_timeout().unwrap();
    }
    assert!(copies > 2, "{copies} copies");
    match c.poll_event(now) {
        Some(DatagramEvent::Failed { id: got, failure }) => {
            assert_eq!(got, id);
            assert_eq!(
                failure,
                DatagramFailure::Busy {
                    retry_after: Duration::from_millis(7)
                }
            );
            assert_eq!(failure.execution(), Execution::NotExecuted);
        }
        other => panic!("{other:?}"),
    }
    let cancel = c.poll_transmit(now).expect("the cancel");
    assert!(matches!(
        cancel.kind,
        wirecall_core::datagram::DatagramKind::Cancel(_)
    ));
}

/// A copy still unanswered when the deadline passes may yet reach the server and run:
/// the call times out, maybe executed, however many earlier copies were answered busy.
#[test]
fn a_copy_unanswered_at_the_deadline_makes_a_busy_call_a_timeout() {
    let mut c = client(config(), 81, 4);
    let id = c
        .call(Instant::ZERO, "m", b"", Some(Duration::from_millis(500)))
        .unwrap();
    assert!(c.poll_transmit(Instant::ZERO).is_some());
    assert!(c.handle_datagram(Instant::from_millis(1), &busy_answer(81, id, 7)));
    let next = c.poll_timeout().unwrap();
    assert!(
        c.poll_transmit(next).is_some(),
        "a second copy, never answered"
    );
    let deadline = Instant::from_millis(500);
    match c.poll_event(deadline) {
        Some(DatagramEvent::Failed { failure, .. }) => {
            assert_eq!(failure, DatagramFailure::TimedOut { sent: true });
            assert_eq!(failure.execution(), Execution::MaybeExecuted);
        }
        other => panic!("{other:?}"),
    }
}

/// The transport refused every datagram sent: the calls end at once, unreachable and not
/// executed, with no cancel owed; a refusal short of that proves nothing.
#[test]
fn refusals_of_every_datagram_sent_end_calls_unreachable() {
    let mut c = client(config(), 82, 4);
    let a = c.call(Instant::ZERO, "m", b"a", None).unwrap();
    let b = c.call(Instant::ZERO, "m", b"b", None).unwrap();
    while c.poll_transmit(Instant::ZERO).is_some() {}
    c.refused();
    assert_eq!(
        c.poll_event(Instant::ZERO),
        None,
        "one report, two datagrams"
    );
    c.refused();
    let mut ended = Vec::new();
    while let Some(event) = c.poll_event(Instant::ZERO) {
        match event {
            DatagramEvent::Failed { id, failure } => {
                assert_eq!(failure, DatagramFailure::Unreachable);
                assert_eq!(failure.execution(), Execution::NotExecuted);
                ended.push(id);
            }
            other => panic!("{other:?}"),
        }
    }
    ended.sort();
    assert_eq!(ended, [a, b]);
    assert_eq!(c.in_flight(), 0);
    assert!(c.poll_transmit(Instant::ZERO).is_none(), "no cancel owed");
    assert_eq!(c.stats().refused, 2);
}

/// A report that comes when nothing was sent since the server last spoke is of a datagram
/// sent before: it is not held against the next one.
#[test]
fn a_late_refusal_is_not_held_against_datagrams_sent_after() {
    let mut c = client(config(), 84, 4);
    let first = c.call(Instant::ZERO, "m", b"", None).unwrap();
    while c.poll_transmit(Instant::ZERO).is_some() {}
    assert!(c.handle_datagram(Instant::from_millis(1), &busy_answer(84, first, 1)));
    c.refused();
    c.refused();
    let now = Instant::from_millis(2);
    let a = c.call(now, "m", b"a", None).unwrap();
    let b = c.call(now, "m", b"b", None).unwrap();
    let mut sent = 0;
    while c.poll_transmit(now).is_some() {
        sent += 1;
    }
    assert_eq!(
        sent, 2,
        "the new calls' copies (the busy one waits for its hint)"
    );
    c.refused();
    assert_eq!(
        c.poll_event(now),
        None,
        "1 report for 2 datagrams: the late ones do not count"
    );
    c.refused();
    let mut ended = Vec::new();
    while let Some(DatagramEvent::Failed { id, failure }) = c.poll_event(now) {
        assert_eq!(failure, DatagramFailure::Unreachable);
        ended.push(id);
    }
    ended.sort();
    assert_eq!(ended, [a, b]);
    assert_eq!(c.in_flight(), 1, "the first call goes on");
    assert_eq!(c.stats().refused, 4);
}

/// A call with a copy sent before the server last spoke may have run there: refusals
/// after that do not end it; a call made since does end.
#[test]
fn a_refusal_does_not_end_a_call_sent_before_the_server_last_spoke() {
    let mut c = client(config(), 83, 4);
    let early = c.call(Instant::ZERO, "m", b"", None).unwrap();
    let other = c.call(Instant::ZERO, "m", b"", None).unwrap();
    while c.poll_transmit(Instant::ZERO).is_some() {}
    // The server answers `other` (it is there), then goes away.
    assert!(c.handle_datagram(Instant::from_millis(1), &busy_answer(83, other, 1)));
    let late = c.call(Instant::from_millis(2), "m", b"", None).unwrap();
    let mut sent = 0;
    let mut now = Instant::from_millis(2);
    while sent < 3 {
        while c.poll_transmit(now).is_some() {
            sent += 1;
        }
        now = c.poll_timeout().unwrap();
    }
    for _ in 0..sent {
        c.refused();
    }
    let mut ended = Vec::new();
    while let Some(DatagramEvent::Failed { id, failure }) = c.poll_event(now) {
        assert_eq!(failure, DatagramFailure::Unreachable);
        ended.push(id);
    }
    assert_eq!(
        ended,
        [late],
        "{early:?} and {other:?} went out before the answer"
    );
    assert_eq!(c.in_flight(), 2);
}

/// A call that ended by a cancel is acknowledged after its cancel went out, so the server
/// can forget it even if the client makes no further call.
#[test]
fn a_cancelled_call_is_acknowledged() {
    let mut c = client(config(), 79, 4);
    let first = c.call(Instant::ZERO, "m", b"", None).unwrap();
    let second = c.call(Instant::ZERO, "m", b"", None).unwrap();
    while c.poll_transmit(Instant::ZERO).is_some() {}
    assert!(c.cancel(second));
    assert!(matches!(
        c.poll_event(Instant::ZERO),
        Some(DatagramEvent::Failed { .. })
    ));
    let cancel = c
        .poll_transmit(Instant::ZERO)
        .expect("the cancel")
        .bytes
        .to_vec();
    assert_eq!(cancel[DatagramHeader::LEN], 3, "a cancel frame");
    // The ack is due a quarter of initial_rto later (10 ms / 4 here)...
    let at = Instant::from_micros(2_500);
    assert!(c.poll_timeout().is_some_and(|t| t <= at));
    let ack = c
        .poll_transmit(at)
        .expect("an acknowledgement")
        .bytes
        .to_vec();
    let (header, body) = DatagramHeader::parse(&ack).unwrap();
    assert_eq!(Frame::decode(body).unwrap(), Frame::Ping { nonce: 0 });
    // ...and says: floor is the first call, still waiting; the second has ended.
    assert_eq!((header.floor, header.acks), (first.0, 0b1));
    assert_eq!(c.stats().acks, 1);
}

#[test]
fn busy_answer_delays_retransmission_but_does_not_end_the_call() {
    let cfg = config();
    let mut c = client(cfg, 77, 4);
    let id = c
        .call(Instant::ZERO, "m", b"", Some(Duration::from_secs(1)))
        .unwrap();
    assert!(c.poll_transmit(Instant::ZERO).is_some());
    let mut d = [0u8; MTU];
    let busy = Frame::Response(wirecall_core::wire::Response {
        id,
        reply: Reply::Busy {
            retry_after_ms: 300,
        },
    });
    let n = encode_datagram(DatagramHeader::new(77, 0), &busy, &mut d).unwrap();
    assert!(c.handle_datagram(Instant::from_millis(1), &d[..n]));
    assert_eq!(c.poll_event(Instant::from_millis(1)), None);
    assert_eq!(c.stats().busy, 1);
    assert!(
        c.poll_transmit(Instant::from_millis(200)).is_none(),
        "waits for the hint"
    );
    assert!(c.poll_transmit(Instant::from_millis(301)).is_some());
    assert_eq!(c.in_flight(), 1);
}

#[test]
fn rejections_and_errors_end_calls_with_execution() {
    let cfg = config();
    let mut c = client(cfg, 11, 4);
    let a = c.call(Instant::ZERO, "m", b"", None).unwrap();
    let b = c.call(Instant::ZERO, "m", b"", None).unwrap();
    let mut d = [0u8; MTU];
    let rej = Frame::Response(wirecall_core::wire::Response {
        id: a,
        reply: Reply::Rejected {
            code: RejectCode::UNKNOWN_METHOD,
            message: "no",
        },
    });
    let n = encode_datagram(DatagramHeader::new(11, 0), &rej, &mut d).unwrap();
    assert!(c.handle_datagram(Instant::ZERO, &d[..n]));
    match c.poll_event(Instant::ZERO) {
        Some(DatagramEvent::Failed { failure, .. }) => {
            assert_eq!(failure.execution(), Execution::NotExecuted)
        }
        other => panic!("{other:?}"),
    }
    let err = Frame::Response(wirecall_core::wire::Response {
        id: b,
        reply: Reply::Error {
            code: 3,
            message: "bad",
        },
    });
    let n = encode_datagram(DatagramHeader::new(11, 0), &err, &mut d).unwrap();
    assert!(c.handle_datagram(Instant::ZERO, &d[..n]));
    match c.poll_event(Instant::ZERO) {
        Some(DatagramEvent::Failed { failure, .. }) => {
            assert_eq!(failure.execution(), Execution::Executed)
        }
        other => panic!("{other:?}"),
    }
    // A late duplicate of that answer is ignored and counted.
    assert!(c.handle_datagram(Instant::ZERO, &d[..n]));
    assert_eq!(c.poll_event(Instant::ZERO), None);
    assert_eq!(c.stats().late_responses, 1);
    // An answer for another epoch is not ours.
    let n = encode_datagram(DatagramHeader::new(12, 0), &err, &mut d).unwrap();
    assert!(c.handle_datagram(Instant::ZERO, &d[..n]));
    assert_eq!(c.poll_event(Instant::ZERO), None);
    assert_eq!(c.stats().dropped, 1);
}

#[test]
fn server_rejects_requests_it_cannot_promise_to_remember() {
    let cfg = config();
    let mut s = server(cfg, 4);
    let mut d = [0u8; MTU];
    for (budget, code) in [
        (None, RejectCode::INVALID_REQUEST),
        (Some(0), RejectCode::DEADLINE_EXCEEDED),
        (Some(61_000), RejectCode::INVALID_REQUEST),
    ] {
        let req = Frame::Request(Request {
            id: RequestId(1),
            method: "m",
            budget_ms: budget,
            body: b"",
        });
        let n = encode_datagram(DatagramHeader::new(1, 0), &req, &mut d).unwrap();
        let Received::Reply(tx) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
            panic!("expected a reply")
        };
        let bytes = tx.bytes;
        let (_, body) = DatagramHeader::parse(bytes).unwrap();
        let Frame::Response(r) = Frame::decode(body).unwrap() else {
            panic!()
        };
        assert!(
            matches!(r.reply, Reply::Rejected { code: c, .. } if c == code),
            "{budget:?}: {r:?}"
        );
    }
    assert_eq!(s.stats().requests, 0);
    assert_eq!(s.stats().rejected, 3);
}

#[test]
fn bad_datagrams_are_dropped_and_counted() {
    let cfg = config();
    let mut s = server(cfg, 4);
    let mut d = [0u8; MTU];
    let resp = Frame::Response(wirecall_core::wire::Response {
        id: RequestId(1),
        reply: Reply::Ok(b""),
    });
    let n = encode_datagram(DatagramHeader::new(1, 0), &resp, &mut d).unwrap();
    let mut v3 = d[..n].to_vec();
    v3[4] = 3;
    // A typed request in a datagram that says version 1, which has none.
    let key = wirecall_core::wire::EndpointKey { path: 1, schema: 2 };
    let typed = Frame::request(RequestId(1), key.into(), Some(100), b"");
    let mut e = [0u8; 128];
    let m = encode_datagram(DatagramHeader::new(1, 0), &typed, &mut e).unwrap();
    let mut typed_v1 = e[..m].to_vec();
    typed_v1[4] = 1;
    let mut garbage_body = d[..DatagramHeader::LEN].to_vec();
    garbage_body.push(0xff);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (b"WCA".to_vec(), DropReason::Truncated),
        (
            b"GET / HTTP/1.1\r\nHost: example\r\n".to_vec(),
            DropReason::Foreign,
        ),
        (v3, DropReason::UnsupportedVersion),
        (garbage_body, DropReason::Malformed),
        (typed_v1, DropReason::Malformed),
        (d[..n].to_vec(), DropReason::UnexpectedFrame),
        (vec![0u8; MTU + 1], DropReason::Oversize),
    ];
    for (bytes, reason) in cases {
        assert_eq!(
            s.handle_datagram(Instant::ZERO, &1, &bytes),
            Received::Dropped(reason)
        );
    }
    let st = s.stats();
    assert_eq!(
        (
            st.dropped_truncated,
            st.dropped_foreign,
            st.dropped_version,
            st.dropped_malformed,
            st.dropped_unexpected,
            st.dropped_oversize
        ),
        (1, 1, 1, 2, 1, 1)
    );
}

#[test]
fn cancel_reaches_the_server_once() {
    let mut w = World::new(5, Faults::default(), 1, 16);
    w.work_time = Duration::from_secs(1);
    let id = w.call_some(0, "m", None).unwrap();
    let mut cancelled = false;
    w.run(10_000, |w| {
        if !cancelled && w.server.in_progress() == 1 {
            assert!(w.clients[0].cancel(id));
            cancelled = true;
        }
        cancelled
    });
    assert_eq!(
        w.outcomes[0][&id.0],
        Outcome::Failed("Cancelled { sent: true }".into(), Execution::MaybeExecuted)
    );
    assert_eq!(w.server.stats().cancelled, 1);
    w.check();
}

/// A driver that wakes late and transmits before firing timers still never sends a
/// request past its deadline: the server's memory of a call only covers the deadline.
#[test]
fn no_transmission_after_the_deadline() {
    let mut c = client(config(), 5, 4);
    let id = c
        .call(Instant::ZERO, "m", b"", Some(Duration::from_millis(50)))
        .unwrap();
    assert!(c.poll_transmit(Instant::ZERO).is_some());
    assert!(
        c.poll_transmit(Instant::from_millis(60))
            .is_some_and(|d| d.bytes[DatagramHeader::LEN] == 3),
        "only a cancel"
    );
    assert!(c.poll_transmit(Instant::from_millis(60)).is_none());
    match c.poll_event(Instant::from_millis(60)) {
        Some(DatagramEvent::Failed { id: got, failure }) => {
            assert_eq!(got, id);
            assert_eq!(failure, DatagramFailure::TimedOut { sent: true });
        }
        other => panic!("{other:?}"),
    }
}

/// A request's body borrows the datagram, not the server, so it can be echoed straight
/// back without a copy.
#[test]
fn request_body_can_be_answered_without_a_copy() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let req = Frame::Request(Request {
        id: RequestId(1),
        method: "echo",
        budget_ms: Some(100),
        body: b"zero-copy",
    });
    let n = encode_datagram(DatagramHeader::new(1, 1), &req, &mut d).unwrap();
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    let tx = s.respond(r.handle, Reply::Ok(r.body)).unwrap();
    assert!(tx.bytes.ends_with(b"zero-copy"));
}

/// The two-choice cache takes calls until it is nearly full before answering busy.
#[test]
fn cache_fills_nearly_up_before_busy() {
    let mut s = server(config(), 1024);
    let mut d = [0u8; MTU];
    let mut taken = 0;
    for id in 1..=1024u64 {
        // Each call from its own client: a record and a call per client, all live.
        let req = Frame::Request(Request {
            id: RequestId(id),
            method: "m",
            budget_ms: Some(1000),
            body: b"",
        });
        let n = encode_datagram(DatagramHeader::new(id * 7919, id), &req, &mut d).unwrap();
        let peer = u32::try_from(id).unwrap();
        match s.handle_datagram(Instant::ZERO, &peer, &d[..n]) {
            Received::Request(_) => taken += 1,
            _ => break,
        }
    }
    // Each call needs two entries (its client's record and itself).
    eprintln!("calls taken before the first busy: {taken} of at most 512");
    assert!(taken >= 400, "only {taken} calls before busy");
}

#[test]
fn oversize_call_is_refused_locally() {
    let mut c = client(config(), 1, 2);
    // The datagram would be its header (29), the request frame's tag, id, method, budget
    // (2000 ms) and body length (1 + 1 + 2 + 3 + 2) and the body: over one datagram.
    assert_eq!(
        c.call(Instant::ZERO, "m", &[0u8; MTU], None),
        Err(SendError::TooLarge {
            len: 29 + 9 + MTU,
            limit: MTU
        })
    );
    assert_eq!(c.in_flight(), 0);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary datagrams from arbitrary peers never panic the server, never grow it,
        /// and never produce a request for something that was not a request.
        #[test]
        fn arbitrary_datagrams_never_panic_the_server(
            datagrams in proptest::collection::vec((0u32..4, proptest::collection::vec(any::<u8>(), 0..300)), 0..64),
        ) {
            let mut s = server(config(), 4);
            for (i, (peer, bytes)) in datagrams.iter().enumerate() {
                let now = Instant::from_millis(i as u64);
                let r = s.handle_datagram(now, peer, bytes);
                if let Received::Request(req) = r {
                    prop_assert!(bytes.len() >= DatagramHeader::LEN);
                    let h = req.handle;
                    let _ = s.respond(h, Reply::Ok(b"x"));
                }
            }
            prop_assert!(s.in_progress() <= 4);
        }

        /// Arbitrary datagrams never panic the client, and never end a call it did not make.
        #[test]
        fn arbitrary_datagrams_never_panic_the_client(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..64),
        ) {
            let mut c = client(config(), 3, 4);
            let id = c.call(Instant::ZERO, "m", b"", None).unwrap();
            for d in &datagrams {
                prop_assert!(c.handle_datagram(Instant::ZERO, d));
                while let Some(DatagramEvent::Response { id: got, .. } | DatagramEvent::Failed { id: got, .. }) =
                    c.poll_event(Instant::ZERO)
                {
                    prop_assert_eq!(got, id);
                }
            }
        }
    }
}

/// A request datagram of call `id` from a client with epoch 3.
fn request(id: u64, body: &[u8], out: &mut [u8]) -> usize {
    let req = Frame::Request(Request {
        id: RequestId(id),
        method: "m",
        budget_ms: Some(1000),
        body,
    });
    encode_datagram(DatagramHeader::new(3, 1), &req, out).unwrap()
}

/// The reply frame of an answer datagram.
fn reply_of(datagram: &[u8]) -> Reply<'_> {
    let (_, body) = DatagramHeader::parse(datagram).unwrap();
    match Frame::decode(body).unwrap() {
        Frame::Response(r) => r.reply,
        other => panic!("not a response: {other:?}"),
    }
}

/// An answer too large for one datagram is replaced by the reserved error (the function
/// ran), stored and replayed like any answer; a rejection too large loses its message.
#[test]
fn an_answer_too_large_for_a_datagram_becomes_the_reserved_error() {
    use wirecall_core::wire::ERROR_ANSWER_TOO_LARGE;
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let n = request(1, b"", &mut d);
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    let huge = [7u8; 2 * MTU];
    let tx = s.respond(r.handle, Reply::Ok(&huge)).unwrap();
    assert!(tx.bytes.len() <= MTU);
    let expected = Reply::Error {
        code: ERROR_ANSWER_TOO_LARGE,
        message: "answer does not fit one datagram",
    };
    assert_eq!(reply_of(tx.bytes), expected);
    assert_eq!(s.stats().answers_too_large, 1);
    let Received::Reply(again) = s.handle_datagram(Instant::from_millis(5), &1, &d[..n]) else {
        panic!("a retransmission is answered from the cache")
    };
    assert_eq!(reply_of(again.bytes), expected);

    let n = request(2, b"", &mut d);
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    let long = "x".repeat(2 * MTU);
    let rejection = Reply::Rejected {
        code: RejectCode(300),
        message: &long,
    };
    let tx = s.respond(r.handle, rejection).unwrap();
    let short = Reply::Rejected {
        code: RejectCode(300),
        message: "",
    };
    assert_eq!(reply_of(tx.bytes), short);
}

/// In drain mode new calls are rejected as shutting down (not run, not cached), while the
/// calls already taken are answered and replayed; the server is drained once none runs.
#[test]
fn a_draining_server_rejects_new_calls_and_finishes_the_rest() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    let mut e = [0u8; MTU];
    let (n1, n2) = (request(1, b"a", &mut d), request(2, b"b", &mut e));
    let Received::Request(first) = s.handle_datagram(Instant::ZERO, &1, &d[..n1]) else {
        panic!()
    };
    let handle = first.handle;
    s.drain();
    assert!(!s.is_drained(Instant::ZERO), "call 1 still runs");
    for from in [1, 2] {
        let Received::Reply(no) = s.handle_datagram(Instant::ZERO, &from, &e[..n2]) else {
            panic!("a new call from {from} is answered")
        };
        assert_eq!(*no.to, from);
        assert!(matches!(
            reply_of(no.bytes),
            Reply::Rejected {
                code: RejectCode::SHUTTING_DOWN,
                ..
            }
        ));
    }
    assert_eq!(s.stats().shutting_down, 2);
    assert_eq!(s.stats().requests, 1, "nothing new was taken");
    // A copy of the running call is still recognised, and its answer still goes out...
    assert!(matches!(
        s.handle_datagram(Instant::ZERO, &1, &d[..n1]),
        Received::Dropped(DropReason::InProgress)
    ));
    s.respond(handle, Reply::Ok(b"A")).unwrap();
    assert!(s.is_drained(Instant::ZERO));
    // ...and is replayed to a retransmission.
    let Received::Reply(again) = s.handle_datagram(Instant::from_millis(1), &1, &d[..n1]) else {
        panic!()
    };
    assert_eq!(reply_of(again.bytes), Reply::Ok(b"A"));
}

/// Answers a client has not acknowledged are counted until its floor or acks say the
/// calls ended, or their windows close: what a draining driver waits for before it closes
/// the socket (a client's connected Unix socket would lose answers still queued).
#[test]
fn unacknowledged_answers_are_counted_until_the_client_says_they_ended() {
    let mut s = server(config(), 16);
    let mut d = [0u8; MTU];
    for id in [1, 2, 3] {
        let n = request(id, b"x", &mut d);
        let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
            panic!()
        };
        if id != 3 {
            s.respond(r.handle, Reply::Ok(b"A")).unwrap();
        }
    }
    s.drain();
    assert_eq!(s.unacknowledged(Instant::ZERO), 2, "call 3 still runs");
    let ack = |floor: u64, acks: u64, out: &mut [u8]| {
        let header = DatagramHeader::new(3, floor).with_acks(acks);
        encode_datagram(header, &Frame::Ping { nonce: 0 }, out).unwrap()
    };
    // Call 2 ended (an ack bit past the floor: call 1 still waits)...
    let n = ack(1, 0b1, &mut d);
    let _ = s.handle_datagram(Instant::ZERO, &1, &d[..n]);
    assert_eq!(s.unacknowledged(Instant::ZERO), 1);
    // ...then everything below call 3.
    let n = ack(3, 0, &mut d);
    let _ = s.handle_datagram(Instant::ZERO, &1, &d[..n]);
    assert_eq!(s.unacknowledged(Instant::ZERO), 0);

    // Never acknowledged: counted until the window closes (budget 1000 ms + 50 ms).
    let mut s = server(config(), 16);
    let n = request(1, b"x", &mut d);
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    s.respond(r.handle, Reply::Ok(b"A")).unwrap();
    assert_eq!(s.unacknowledged(Instant::from_millis(1049)), 1);
    assert_eq!(s.unacknowledged(Instant::from_millis(1051)), 0);
}

/// A datagram the transport could not take is handed back: the same request comes out
/// again (not counted twice), an acknowledgement is owed again, and a request is never
/// handed out again past its deadline.
#[test]
fn a_datagram_not_sent_is_handed_out_again_but_never_late() {
    use wirecall_core::datagram::DatagramKind;
    let mut c = client(config(), 5, 4);
    let id = c
        .call(Instant::ZERO, "m", b"x", Some(Duration::from_millis(50)))
        .unwrap();
    let first = c.poll_transmit(Instant::ZERO).unwrap();
    assert_eq!(first.kind, DatagramKind::Request(id));
    let bytes = first.bytes.to_vec();
    c.not_sent(DatagramKind::Request(id));
    assert_eq!(c.poll_timeout(), Some(Instant::ZERO), "due again at once");
    let again = c.poll_transmit(Instant::from_millis(1)).unwrap();
    assert_eq!(again.kind, DatagramKind::Request(id));
    assert_eq!(again.bytes, &bytes[..]);
    assert_eq!(c.stats().transmissions, 1);
    assert_eq!(c.stats().retransmissions, 0);
    assert_eq!(c.stats().not_sent, 1);
    // The next retransmission waits the first timeout again, from this copy.
    assert!(c.poll_transmit(Instant::from_millis(10)).is_none());
    let retry = c.poll_transmit(Instant::from_millis(17)).unwrap().kind;
    assert_eq!(retry, DatagramKind::Request(id));
    c.not_sent(retry);
    // Past the deadline the refused copy is not handed out: only the cancel.
    let late = c.poll_transmit(Instant::from_millis(60)).unwrap();
    assert_eq!(late.kind, DatagramKind::Cancel(id));
    assert!(c.poll_transmit(Instant::from_millis(60)).is_none());

    // An acknowledgement not sent is owed again.
    let mut c = client(config(), 6, 4);
    let id = c.call(Instant::ZERO, "m", b"", None).unwrap();
    let _ = c.poll_transmit(Instant::ZERO).unwrap();
    let mut answer = [0u8; MTU];
    let frame = Frame::Response(wirecall_core::wire::Response {
        id,
        reply: Reply::Ok(b""),
    });
    let n = encode_datagram(DatagramHeader::new(6, 0), &frame, &mut answer).unwrap();
    assert!(c.handle_datagram(Instant::ZERO, &answer[..n]));
    assert!(c.poll_event(Instant::ZERO).is_some());
    let ack = c.poll_transmit(Instant::from_millis(5)).unwrap();
    assert_eq!(ack.kind, DatagramKind::Acknowledgement);
    c.not_sent(DatagramKind::Acknowledgement);
    let ack = c.poll_transmit(Instant::from_millis(5)).unwrap();
    assert_eq!(ack.kind, DatagramKind::Acknowledgement);
    assert_eq!(c.stats().acks, 1);
}

/// A cancelled call the application never answers keeps a draining server from being
/// drained only until its window closes; an answered call is still replayed in drain mode,
/// even after its windows closed, never refused as "not run".
#[test]
fn draining_waits_for_live_calls_only_and_replays_what_ran() {
    let cfg = config();
    let mut s = server(cfg, 16);
    let mut d = [0u8; MTU];
    let n = request(1, b"x", &mut d);
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    let _ = r;
    let cancel = Frame::Cancel { id: RequestId(1) };
    let mut c = [0u8; MTU];
    let m = encode_datagram(DatagramHeader::new(3, 1), &cancel, &mut c).unwrap();
    assert!(matches!(
        s.handle_datagram(Instant::ZERO, &1, &c[..m]),
        Received::Cancelled(_)
    ));
    s.drain();
    assert!(!s.is_drained(Instant::ZERO), "the call's window is open");
    // Budget 1000 ms + max_latency 50 ms: then nothing can come for it any more.
    assert!(s.is_drained(Instant::from_millis(1051)));

    // A call answered, then a late copy after every window closed.
    let mut s = server(cfg, 16);
    let n = request(2, b"y", &mut d);
    let Received::Request(r) = s.handle_datagram(Instant::ZERO, &1, &d[..n]) else {
        panic!()
    };
    s.respond(r.handle, Reply::Ok(b"Y")).unwrap();
    s.drain();
    let late = Instant::from_millis(1051);
    match s.handle_datagram(late, &1, &d[..n]) {
        Received::Reply(tx) => assert_eq!(reply_of(tx.bytes), Reply::Ok(b"Y")),
        other => panic!("{other:?}"),
    }
}

/// Calls ended busy (every copy answered busy at the deadline), across all clients.
fn busy_ends(w: &World) -> usize {
    w.outcomes
        .iter()
        .flat_map(|o| o.values())
        .filter(|o| matches!(o, Outcome::Failed(s, _) if s.starts_with("Busy")))
        .count()
}

/// A small cache, many clients and short deadlines: calls are answered busy often. Over
/// a network that duplicates and delays datagrams, with the client told duplicates are
/// possible, no call reported not executed ever ran (a call busy on every copy times out:
/// with the client told the opposite, a duplicate arriving once the server had room ran
/// such calls in this very run); over a network that does not duplicate, with the client
/// told so, calls end busy, not executed, and none of them ran.
#[test]
fn calls_busy_until_their_deadline_are_not_executed_only_without_duplicates() {
    let mut busy = [0usize; 2];
    for (n, duplicates) in [Duplicates::Possible, Duplicates::Never]
        .into_iter()
        .enumerate()
    {
        let faults = Faults {
            loss_per_mille: if duplicates == Duplicates::Possible {
                100
            } else {
                0
            },
            duplicate_per_mille: if duplicates == Duplicates::Possible {
                300
            } else {
                0
            },
            latency: Duration::from_micros(200),
            jitter: Duration::from_millis(30),
        };
        let mut cfg = config();
        cfg.duplicates = duplicates;
        for seed in 0..6u64 {
            let mut w = World::with_config(cfg, seed, faults, 8, 12);
            let per_client = 100usize;
            w.run(2_000_000, |w| {
                for c in 0..w.clients.len() {
                    while w.bodies[c].len() < per_client
                        && w.call_some(c, "m", Some(Duration::from_millis(60)))
                            .is_some()
                    {}
                }
                w.bodies.iter().all(|b| b.len() == per_client)
            });
            w.check();
            busy[n] += busy_ends(&w);
            assert!(w.server.stats().busy > 0, "the cache was full at times");
        }
    }
    assert!(busy[1] > 0, "some calls ended busy without duplicates");
}
