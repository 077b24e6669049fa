//! The checks behind the datagram-mode targets (`datagram_server`, `datagram_client`).
//!
//! Like `checks/`, whose [`Input`] reader it uses, this file is shared by the fuzz crate and
//! the stable replay `core/tests/fuzz_corpus.rs` (which includes both by path), so it may use
//! only `std` and `wirecall-core`'s public API. Every check panics with a message naming the
//! broken invariant.

use std::collections::{BTreeMap, BTreeSet};

use crate::checks::Input;
use wirecall_core::client::SendError;
use wirecall_core::datagram::{
    DatagramCallSlot, DatagramClient, DatagramConfig, DatagramEntry, DatagramEvent,
    DatagramFailure, DatagramKind, DatagramRespondError, DatagramServer, DropReason, Received,
    RequestHandle,
};
use wirecall_core::wire::datagram::{DatagramHeader, HeaderError, decode_frame, encode_datagram};
use wirecall_core::wire::{
    EndpointKey, Frame, RejectCode, Reply, Request, RequestId, Response, Target,
};
use wirecall_core::{Duration, Instant};

/// The largest datagram both targets configure (the default).
const MAX_DATAGRAM: usize = 1232;

/// Ops per script at most, so one input stays fast.
const MAX_OPS: usize = 4096;

/// Filler for bodies over the datagram limit.
static BIG: [u8; 2048] = [0x5a; 2048];

fn budget_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis_ceil()).unwrap_or(u32::MAX)
}

/// A body: a length byte and the bytes, or (255) a u16 length of filler, up to 2 KiB.
fn read_body<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let n = input.u8();
    if n < 255 {
        input.bytes(usize::from(n))
    } else {
        &BIG[..usize::from(input.u16()) % (BIG.len() + 1)]
    }
}

/// A reply whose body and message fit any datagram: tag mod 4 (Ok, Error, Rejected, Busy).
fn read_reply<'a>(input: &mut Input<'a>) -> Reply<'a> {
    match input.u8() % 4 {
        0 => Reply::Ok(input.blob()),
        1 => Reply::Error {
            code: input.int32(),
            message: input.text(),
        },
        2 => Reply::Rejected {
            code: RejectCode(input.int16()),
            message: input.text(),
        },
        _ => Reply::Busy {
            retry_after_ms: input.int32(),
        },
    }
}

/// An epoch: usually one of a few (selector < 250: `selector % 3`), else a u64.
fn read_epoch(input: &mut Input<'_>) -> u64 {
    let s = input.u8();
    if s < 250 {
        u64::from(s % 3)
    } else {
        input.u64()
    }
}

fn encode(header: DatagramHeader, frame: &Frame<'_>) -> Vec<u8> {
    let mut out = vec![0; DatagramHeader::LEN + 8192];
    let n = encode_datagram(header, frame, &mut out).expect("a script datagram encodes");
    out.truncate(n);
    out
}

/// A datagram parsed as a peer would: header, then one frame filling the rest.
fn parse(datagram: &[u8]) -> Result<(DatagramHeader, Frame<'_>), DropReason> {
    let (header, body) = DatagramHeader::parse(datagram).map_err(|e| match e {
        HeaderError::Truncated => DropReason::Truncated,
        HeaderError::BadMagic => DropReason::Foreign,
        _ => DropReason::UnsupportedVersion,
    })?;
    let frame = decode_frame(header.version, body).map_err(|_| DropReason::Malformed)?;
    Ok((header, frame))
}

/// An answer datagram: a server header (floor 0) with `epoch`, and a response for `id`.
fn parse_answer<'a>(bytes: &'a [u8], epoch: u64, id: RequestId, who: &str) -> Reply<'a> {
    let (header, frame) =
        parse(bytes).unwrap_or_else(|e| panic!("{who}: answer does not parse ({e:?})"));
    assert_eq!(header.epoch, epoch, "{who}: answer in another epoch");
    assert_eq!(header.floor, 0, "{who}: a server's header has floor 0");
    match frame {
        Frame::Response(Response { id: got, reply }) => {
            assert_eq!(got, id, "{who}: answer for another id");
            reply
        }
        other => panic!("{who}: answer is not a response: {other:?}"),
    }
}

/// The calls a header says have ended, above its floor: one id per set ack bit.
fn acked_ids(header: &DatagramHeader) -> impl Iterator<Item = u64> + '_ {
    (0..64u64)
        .filter(|bit| header.acks >> bit & 1 == 1)
        .filter_map(|bit| header.floor.checked_add(bit + 1))
}

/// What a client has said has ended, modelled as a set rather than the core's bitmap.
#[derive(Debug, Default)]
struct EndedModel {
    floor: u64,
    above: BTreeSet<u64>,
    /// The record's window: after it the server may forget the client.
    window_end: Instant,
}

impl EndedModel {
    fn learn(&mut self, header: &DatagramHeader) {
        self.floor = self.floor.max(header.floor);
        self.above.extend(acked_ids(header));
        let floor = self.floor;
        self.above.retain(|id| *id >= floor);
    }

    fn has_ended(&self, id: u64) -> bool {
        id < self.floor || self.above.contains(&id)
    }
}

// =======================================================================================
// datagram_server
// =======================================================================================

/// What a `datagram_server` script did, for the seed tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramServerSummary {
    /// `Received::Request` results (the function ran).
    pub requests: u64,
    /// `Received::Reply` results.
    pub replies: u64,
    /// Of those, replays of an application's answer.
    pub replays: u64,
    /// `Received::Cancelled` results.
    pub cancelled: u64,
    /// `Received::Dropped` results.
    pub dropped: u64,
    /// `Received::Acknowledged` results.
    pub acknowledged: u64,
    /// Successful `respond` calls.
    pub responded: u64,
}

type Key = (u8, u64, u64);

/// Longer than any datagram of the checks, for answers that do not fit.
static HUGE: [u8; 2 * MAX_DATAGRAM] = [b'x'; 2 * MAX_DATAGRAM];

/// [`HUGE`] as text.
fn huge_text() -> &'static str {
    std::str::from_utf8(&HUGE).unwrap_or_default()
}

struct ServerCall {
    /// First arrival + budget + max_latency of the run in the model.
    window_end: Instant,
    handle: usize,
    /// The application's stored answer (not busy).
    answer: Option<Vec<u8>>,
    /// Bytes of the call's request datagrams the server received since it took it (at
    /// least what the server counts), and bytes it sent for it: answers, replays and the
    /// busy answers that stood in for held-back ones.
    rx: u64,
    tx: u64,
}

struct ServerHandle {
    handle: RequestHandle,
    key: Key,
    answered: bool,
}

/// A script of datagrams from a few peers into a `DatagramServer<u8, Vec<u8>,
/// Vec<DatagramEntry<u8>>>` with a small cache.
///
/// Set-up: cache entries (1..=16), `max_latency` and `max_budget` in ms. Then ops (byte mod
/// 8): 0 a request from fields (peer mod 4, epoch, floor, id, budget or none, method, body up
/// to 2 KiB), 1 a cancel from fields, 2 raw bytes from a peer, 3 a copy of an earlier
/// datagram (from its peer or another), 4 time advance in ms, 5 jump to a call's window end
/// (-1 µs, exactly, +1 µs), 6 `respond` to a handle (answered or not) with any reply, 7 time
/// advance in µs.
///
/// Invariants:
/// - no panic; a datagram that does not parse is dropped for exactly its reason (oversize,
///   truncated, foreign, version, malformed, unexpected frame); a request without a budget,
///   with budget 0 or over `max_budget` gets a `Rejected` reply and never runs;
/// - a `Request` carries the datagram's id, method and body, deadline = arrival + budget,
///   id >= 1 and >= the header's floor;
/// - at most once: no `Request` for (peer, epoch, id) while an earlier run's window (first
///   arrival + budget + `max_latency`) is open, unless the application answered that run
///   `Busy` (which frees it by design);
/// - never a `Request` below a floor the peer/epoch announced (request headers that reached
///   the server's client record, cancels while it lives), as long as that record's window
///   (the latest window of that client's runs) is open: after it, the server may forget the
///   client (PROTOCOL.md section 11: no copy lingers past `max_latency`);
/// - every `Reply` answers a request datagram: header epoch = the request's, floor 0, a
///   response for the request's id; an `Ok`/`Error` reply (which only the application
///   makes) is byte for byte the application's last answer to that call;
/// - `Cancelled` only for a cancel datagram naming a run in progress from the same peer;
/// - `respond`: never `TooLarge` (every answer fits), a handle already answered is refused
///   `UnknownRequest`; `Transmit.to` is the peer that sent the request, the bytes are a
///   response in its epoch for its id carrying exactly the reply given;
/// - `in_progress()` <= cache size and <= handles not yet answered;
/// - stats agree with the results: `datagrams`, `requests`, `cancelled`, `responses`
///   (non-busy answers), `replayed + rejected + busy` = replies + busy answers, `replayed` >=
///   the `Ok`/`Error` replays seen, and the drop counters sum to the `Dropped` results.
pub fn check_datagram_server(data: &[u8]) -> DatagramServerSummary {
    let mut input = Input::new(data);
    let entries = 1 + usize::from(input.u8() % 16);
    let config = DatagramConfig {
        max_datagram: MAX_DATAGRAM,
        max_latency: Duration::from_millis(u64::from(input.int16())),
        max_budget: Duration::from_millis(u64::from(input.int32())),
        ..DatagramConfig::default()
    };
    let storage = vec![0u8; (entries + 1) * MAX_DATAGRAM];
    let mut server: DatagramServer<u8, Vec<u8>, Vec<DatagramEntry<u8>>> =
        DatagramServer::new(config, storage, vec![DatagramEntry::EMPTY; entries])
            .expect("server config is valid");

    let mut now = Instant::ZERO;
    let mut history: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut calls: BTreeMap<Key, ServerCall> = BTreeMap::new();
    let mut records: BTreeMap<(u8, u64), EndedModel> = BTreeMap::new();
    let mut handles: Vec<ServerHandle> = Vec::new();
    let mut sum = DatagramServerSummary::default();
    let mut datagrams = 0u64;
    let mut app_busy = 0u64;
    let mut withheld_answers = 0u64;
    let mut too_large = 0u64;
    let mut draining = false;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let mut datagram: Option<(u8, Vec<u8>)> = None;
        let op = input.u8();
        match op % 8 {
            0 => {
                let peer = input.u8() % 4;
                let epoch = read_epoch(&mut input);
                let floor = input.int();
                // Bit 3 of the op: the header has acks (older seeds have none).
                let acks = if op & 8 != 0 { input.int() } else { 0 };
                let id = RequestId(input.int());
                let budget_ms = match input.u8() {
                    0 => None,
                    1 => Some(0),
                    2 => Some(input.u32()),
                    b => Some(u32::from(b) * 100),
                };
                let method = input.text();
                // Bit 4 of the op: a typed request, its key from the next two ints.
                let target = if op & 16 != 0 {
                    Target::Endpoint(EndpointKey {
                        path: input.int(),
                        schema: input.int(),
                    })
                } else {
                    Target::Method(method)
                };
                let body = read_body(&mut input);
                let frame = Frame::request(id, target, budget_ms, body);
                let header = DatagramHeader::new(epoch, floor).with_acks(acks);
                let mut bytes = encode(header, &frame);
                // Bit 5: the datagram says version 1 whatever it holds (a typed request
                // in it must be dropped as malformed).
                if op & 32 != 0 {
                    bytes[4] = 1;
                }
                datagram = Some((peer, bytes));
            }
            1 => {
                // A cancel, or an acknowledgement (a Ping).
                let peer = input.u8() % 4;
                let epoch = read_epoch(&mut input);
                let floor = input.int();
                let acks = if op & 8 != 0 { input.int() } else { 0 };
                let id = RequestId(input.int());
                // Bit 4 of the op: an acknowledgement instead of a cancel.
                let frame = if op & 16 != 0 {
                    Frame::Ping { nonce: id.0 }
                } else {
                    Frame::Cancel { id }
                };
                let header = DatagramHeader::new(epoch, floor).with_acks(acks);
                datagram = Some((peer, encode(header, &frame)));
            }
            2 => {
                let peer = input.u8() % 4;
                datagram = Some((peer, input.blob().to_vec()));
            }
            3 => {
                let pick = usize::from(input.u16());
                let other = input.u8();
                if !history.is_empty() {
                    let (peer, bytes) = history[pick % history.len()].clone();
                    let peer = if other % 4 == 0 { other / 4 % 4 } else { peer };
                    datagram = Some((peer, bytes));
                }
            }
            4 => now = now.saturating_add(Duration::from_millis(input.int())),
            5 => {
                let pick = usize::from(input.u8());
                let how = input.u8() % 3;
                if !calls.is_empty() {
                    let end = calls.values().nth(pick % calls.len()).map(|c| c.window_end);
                    let end = end.unwrap_or(now).as_micros();
                    let at = Instant::from_micros(match how {
                        0 => end.saturating_sub(1),
                        1 => end,
                        _ => end.saturating_add(1),
                    });
                    if at > now {
                        now = at;
                    }
                }
            }
            6 => {
                let pick = usize::from(input.u8());
                let reply = read_reply(&mut input);
                // Bit 3 of the op: an answer larger than one datagram.
                let reply = if op & 8 != 0 {
                    match reply {
                        Reply::Rejected { code, .. } => Reply::Rejected {
                            code,
                            message: huge_text(),
                        },
                        _ => Reply::Ok(&HUGE),
                    }
                } else {
                    reply
                };
                if !handles.is_empty() {
                    let index = pick % handles.len();
                    let h = &mut handles[index];
                    let (peer, epoch, id) = h.key;
                    let who = "datagram_server respond";
                    // PROTOCOL.md 11.1: an answer over one datagram goes out as its stand-in.
                    let limit = MAX_DATAGRAM - DatagramHeader::LEN;
                    let sent = crate::checks::expected_answer(
                        id,
                        reply,
                        limit,
                        "answer does not fit one datagram",
                    );
                    // A busy hint of 0 on datagrams means "held back" (PROTOCOL.md 11.3):
                    // an application's own busy goes out saying at least 1 ms.
                    let on_wire = match sent {
                        Reply::Busy { retry_after_ms: 0 } => Reply::Busy { retry_after_ms: 1 },
                        other => other,
                    };
                    match server.respond(h.handle, reply) {
                        Ok(t) => {
                            assert!(!h.answered, "{who}: a handle answered twice");
                            assert_eq!(*t.to, peer, "{who}: Transmit.to is not the requester");
                            assert!(t.bytes.len() <= MAX_DATAGRAM, "{who}: over one datagram");
                            let got = parse_answer(t.bytes, epoch, RequestId(id), who);
                            let t_len = t.bytes.len() as u64;
                            let t_copy = t.bytes.to_vec();
                            // Held back: a busy answer stands in for an answer that is not.
                            let withheld = !matches!(sent, Reply::Busy { .. })
                                && got == Reply::Busy { retry_after_ms: 0 };
                            // The answer as the server stores it (and replays it).
                            let frame = Frame::Response(Response {
                                id: RequestId(id),
                                reply: sent,
                            });
                            let stored = encode(DatagramHeader::new(epoch, 0), &frame);
                            if withheld {
                                // Anti-amplification: kept, and a busy answer instead.
                                assert_eq!(
                                    got,
                                    Reply::Busy { retry_after_ms: 0 },
                                    "{who}: a held-back answer is not stood in for by busy"
                                );
                                withheld_answers += 1;
                            } else {
                                assert_eq!(
                                    got, on_wire,
                                    "{who}: the answer is not the reply given"
                                );
                            }
                            if let Some(c) = calls.get_mut(&h.key) {
                                if c.handle == index && !matches!(reply, Reply::Busy { .. }) {
                                    c.tx += t_len;
                                    // (Whether a held-back answer would have fitted is the
                                    // server's count to judge: the model's `rx` may count
                                    // copies the server dropped, so only the bound holds.)
                                    if !withheld {
                                        assert!(
                                            c.tx <= u64::from(config.amplification) * c.rx,
                                            "{who}: sent {} bytes for {} received",
                                            c.tx,
                                            c.rx
                                        );
                                    }
                                }
                            }
                            let t_bytes = if withheld { stored } else { t_copy };
                            if sent != reply {
                                too_large += 1;
                            }
                            h.answered = true;
                            let bytes = t_bytes;
                            let busy = matches!(reply, Reply::Busy { .. });
                            if busy {
                                app_busy += 1;
                            } else {
                                sum.responded += 1;
                            }
                            if calls.get(&h.key).is_some_and(|c| c.handle == index) {
                                if busy {
                                    calls.remove(&h.key);
                                } else if let Some(c) = calls.get_mut(&h.key) {
                                    c.answer = Some(bytes);
                                }
                            }
                        }
                        Err(DatagramRespondError::UnknownRequest) => {}
                        Err(e) => panic!("{who}: {e:?}: even the stand-in fits"),
                    }
                }
            }
            // Bit 3 of op 7: begin the shutdown (drain mode) instead.
            _ if op & 8 != 0 => {
                server.drain();
                draining = true;
            }
            _ => now = now.saturating_add(Duration::from_micros(input.int())),
        }

        if let Some((peer, bytes)) = datagram {
            datagrams += 1;
            let who = "datagram_server handle_datagram";
            let parsed = if bytes.len() > MAX_DATAGRAM {
                Err(DropReason::Oversize)
            } else {
                parse(&bytes)
            };
            let call = parsed.as_ref().ok().and_then(|(_, f)| f.as_call());
            let mut rejected = false;
            // Every copy of a call the server has taken raises what it may send for it.
            if let (Ok((header, _)), Some(req)) = (&parsed, call) {
                if let Some(c) = calls.get_mut(&(peer, header.epoch, req.id.0)) {
                    c.rx += bytes.len() as u64;
                }
            }
            let withheld_before = server.stats().withheld;
            match server.handle_datagram(now, &peer, &bytes) {
                Received::Request(r) => {
                    sum.requests += 1;
                    assert!(!draining, "{who}: a new call taken while draining");
                    let (Ok((header, _)), Some(req)) = (&parsed, call) else {
                        panic!("{who}: a Request from a datagram that is none: {parsed:?}");
                    };
                    assert_eq!(
                        (r.id, r.target, r.body),
                        (req.id, req.target, req.body),
                        "{who}: the request is not the datagram's"
                    );
                    let budget = req.budget_ms.expect("a Request without a budget ran");
                    assert!(
                        budget > 0 && u64::from(budget) <= config.max_budget.as_millis_ceil(),
                        "{who}: a request with budget {budget} ms ran"
                    );
                    let budget = Duration::from_millis(u64::from(budget));
                    assert_eq!(r.deadline, now.saturating_add(budget), "{who}: deadline");
                    assert!(
                        req.id.0 >= 1 && req.id.0 >= header.floor,
                        "{who}: ran id {} under its own header's floor {}",
                        req.id.0,
                        header.floor
                    );
                    assert!(
                        acked_ids(header).all(|id| id != req.id.0),
                        "{who}: ran id {} that its own header acknowledges",
                        req.id.0
                    );
                    let key = (peer, header.epoch, req.id.0);
                    if let Some(c) = calls.get(&key) {
                        assert!(
                            now >= c.window_end,
                            "{who}: at-most-once broken: {key:?} ran again at {now:?}, its \
                             window is open until {:?}",
                            c.window_end
                        );
                    }
                    let window_end = now
                        .saturating_add(budget)
                        .saturating_add(config.max_latency);
                    let rec = records.entry((peer, header.epoch)).or_default();
                    if now >= rec.window_end {
                        *rec = EndedModel::default();
                    }
                    assert!(
                        !rec.has_ended(req.id.0),
                        "{who}: ran {key:?}, which that client said had ended ({rec:?})"
                    );
                    rec.learn(header);
                    rec.window_end = rec.window_end.max(window_end);
                    calls.insert(
                        key,
                        ServerCall {
                            window_end,
                            handle: handles.len(),
                            answer: None,
                            rx: bytes.len() as u64,
                            tx: 0,
                        },
                    );
                    handles.push(ServerHandle {
                        handle: r.handle,
                        key,
                        answered: false,
                    });
                }
                Received::Reply(tx) => {
                    assert_eq!(*tx.to, peer, "{who}: a reply to another peer");
                    let reply_bytes = &tx.bytes.to_vec()[..];
                    sum.replies += 1;
                    let (Ok((header, _)), Some(req)) = (&parsed, call) else {
                        panic!("{who}: a Reply to a datagram that is no request: {parsed:?}");
                    };
                    let reply = parse_answer(reply_bytes, header.epoch, req.id, who);
                    rejected = matches!(reply, Reply::Rejected { .. });
                    let key = (peer, header.epoch, req.id.0);
                    let withheld = server.stats().withheld > withheld_before;
                    if withheld {
                        assert_eq!(
                            reply,
                            Reply::Busy { retry_after_ms: 0 },
                            "{who}: a held-back replay is not stood in for by busy"
                        );
                    }
                    // What the server sends for a call it has answered (a replay, or the
                    // busy that stands in for it) stays within the allowance.
                    let answered = calls.get(&key).is_some_and(|c| c.answer.is_some());
                    if answered && (withheld || !matches!(reply, Reply::Busy { .. })) {
                        if let Some(c) = calls.get_mut(&key) {
                            c.tx += reply_bytes.len() as u64;
                            if !withheld && config.amplification > 0 {
                                assert!(
                                    c.tx <= u64::from(config.amplification) * c.rx,
                                    "{who}: sent {} bytes for {} received for {key:?}",
                                    c.tx,
                                    c.rx
                                );
                            }
                        }
                    }
                    if matches!(reply, Reply::Ok(_) | Reply::Error { .. }) {
                        sum.replays += 1;
                        let key = (peer, header.epoch, req.id.0);
                        let stored = calls.get(&key).and_then(|c| c.answer.as_deref());
                        assert_eq!(
                            stored,
                            Some(reply_bytes),
                            "{who}: replay for {key:?} is not the application's answer"
                        );
                    }
                }
                Received::Cancelled(h) => {
                    sum.cancelled += 1;
                    let Ok((header, Frame::Cancel { id })) = parsed else {
                        panic!("{who}: Cancelled for a datagram that is no cancel: {parsed:?}");
                    };
                    let key = (peer, header.epoch, id.0);
                    let known = handles.iter().find(|k| k.handle == h && !k.answered);
                    assert!(
                        known.is_some_and(|k| k.key == key),
                        "{who}: Cancelled names no run of {key:?} in progress"
                    );
                }
                Received::Dropped(reason) => {
                    sum.dropped += 1;
                    match &parsed {
                        Err(expected) => {
                            assert_eq!(reason, *expected, "{who}: wrong drop reason");
                        }
                        Ok((
                            _,
                            Frame::Request(_) | Frame::TypedRequest(_) | Frame::Cancel { .. },
                        )) => {}
                        Ok((_, Frame::Ping { .. })) => panic!("{who}: an ack was dropped"),
                        Ok(_) => assert_eq!(reason, DropReason::UnexpectedFrame, "{who}"),
                    }
                }
                Received::Acknowledged => {
                    sum.acknowledged += 1;
                    assert!(
                        matches!(parsed, Ok((_, Frame::Ping { .. }))),
                        "{who}: Acknowledged for a datagram that is no ack: {parsed:?}"
                    );
                }
                other => panic!("{who}: unknown result {other:?}"),
            }
            // Invalid budgets are always rejected, before anything else.
            if let Some(req) = call {
                let bad = match req.budget_ms {
                    None | Some(0) => true,
                    Some(ms) => u64::from(ms) > config.max_budget.as_millis_ceil(),
                };
                if bad {
                    assert!(rejected, "{who}: a bad budget is not rejected");
                }
            }
            // Cancels and acknowledgements teach a live record what has ended.
            if let Ok((header, Frame::Cancel { .. } | Frame::Ping { .. })) = &parsed {
                if let Some(rec) = records.get_mut(&(peer, header.epoch)) {
                    if now < rec.window_end {
                        rec.learn(header);
                    }
                }
            }
            if history.len() < 256 {
                history.push((peer, bytes));
            }
        }

        let who = "datagram_server";
        let in_progress = server.in_progress();
        let unanswered = handles.iter().filter(|h| !h.answered).count();
        assert!(
            in_progress <= entries,
            "{who}: in_progress over the cache size"
        );
        assert!(
            in_progress <= unanswered,
            "{who}: in_progress {in_progress} over the {unanswered} unanswered handles"
        );
        let s = *server.stats();
        assert_eq!(s.datagrams, datagrams, "{who}: stats.datagrams");
        assert_eq!(s.requests, sum.requests, "{who}: stats.requests");
        assert_eq!(s.cancelled, sum.cancelled, "{who}: stats.cancelled");
        assert_eq!(s.acks, sum.acknowledged, "{who}: stats.acks");
        assert_eq!(s.responses, sum.responded, "{who}: stats.responses");
        assert_eq!(
            s.answers_too_large, too_large,
            "{who}: stats.answers_too_large"
        );
        // Drained once no call is waited for: nothing the model still owes with its window
        // open means nothing for the core either (the core may know more calls ended).
        if draining {
            let owed = handles
                .iter()
                .any(|h| !h.answered && calls.get(&h.key).is_some_and(|c| now < c.window_end));
            assert!(
                owed || server.is_drained(now),
                "{who}: not drained with no call owed"
            );
        } else {
            assert!(!server.is_drained(now), "{who}: drained before drain()");
        }
        assert_eq!(
            s.replayed + s.rejected + s.busy + s.shutting_down + s.withheld,
            sum.replies + app_busy + withheld_answers,
            "{who}: stats replayed + rejected + busy + withheld vs replies + busy answers"
        );
        // An application's `Rejected` answer replays too, and looks like one the server made.
        assert!(
            s.replayed >= sum.replays,
            "{who}: stats.replayed under the replays seen"
        );
        let drops = s.dropped_truncated
            + s.dropped_oversize
            + s.dropped_foreign
            + s.dropped_version
            + s.dropped_malformed
            + s.dropped_unexpected
            + s.in_progress
            + s.stale_cancels
            + s.stale;
        assert_eq!(
            drops, sum.dropped,
            "{who}: drop counters vs Dropped results"
        );
    }
    sum
}

// =======================================================================================
// datagram_client
// =======================================================================================

/// What a `datagram_client` script did, for the seed tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramClientSummary {
    /// Calls accepted.
    pub calls: u64,
    /// Outcomes: responses.
    pub responses: u64,
    /// Outcomes: failures (any).
    pub failures: u64,
    /// Of those, timeouts.
    pub timeouts: u64,
    /// Request datagrams transmitted.
    pub transmissions: u64,
    /// Cancel datagrams transmitted.
    pub cancels_sent: u64,
    /// Acknowledgement datagrams transmitted.
    pub acks_sent: u64,
}

struct ClientCall {
    method: String,
    body: Vec<u8>,
    budget: u32,
    deadline: Instant,
    cancelled: bool,
    transmitted: bool,
    cancel_sent: bool,
    ended: bool,
    /// Ended by its deadline.
    timed_out: bool,
}

/// An outcome of the client, copied out of the event that borrowed it.
#[derive(Debug)]
enum Owned {
    Response(Vec<u8>),
    Remote(u32, String),
    Rejected(RejectCode, String),
    TimedOut(bool),
    Cancelled(bool),
}

impl Owned {
    fn of(event: DatagramEvent<'_>) -> (RequestId, Self) {
        match event {
            DatagramEvent::Response { id, body } => (id, Self::Response(body.to_vec())),
            DatagramEvent::Failed { id, failure } => (
                id,
                match failure {
                    DatagramFailure::Remote { code, message } => {
                        Self::Remote(code, message.to_owned())
                    }
                    DatagramFailure::Rejected { code, message } => {
                        Self::Rejected(code, message.to_owned())
                    }
                    DatagramFailure::TimedOut { sent } => Self::TimedOut(sent),
                    DatagramFailure::Cancelled { sent } => Self::Cancelled(sent),
                    other => {
                        panic!("datagram_client: unknown failure {other:?}: extend the checks")
                    }
                },
            ),
            other => panic!("datagram_client: unknown event {other:?}: extend the checks"),
        }
    }
}

struct ClientRun {
    client: DatagramClient<Vec<u8>, Vec<DatagramCallSlot>>,
    epoch: u64,
    now: Instant,
    calls: BTreeMap<u64, ClientCall>,
    floor: u64,
    sum: DatagramClientStatsModel,
    /// The datagram the last op handed in, until its answer (if any) comes out.
    received: Option<Vec<u8>>,
}

#[derive(Default)]
struct DatagramClientStatsModel {
    out: DatagramClientSummary,
    retransmissions: u64,
    /// Datagrams handed back with `not_sent`.
    not_sent: u64,
}

/// A script of calls, cancels, server datagrams and time into a `DatagramClient` with 1..=4
/// slots.
///
/// Set-up: slots, `initial_rto`, `max_rto` (ms), `max_attempts` (1..=8), jitter, epoch,
/// seed. Then ops (byte mod 8): 0 `call` (method, body up to 2 KiB, default or given
/// timeout), 1 `cancel` of a made or arbitrary id, 2 a response datagram from fields (epoch
/// the client's or another, floor, id made or arbitrary, any reply), 3 raw bytes, 4 time
/// advance (ms), 5 jump to `poll_timeout()` or a call's deadline (-1 µs, exactly, +1 µs),
/// 6 `poll_transmit` until it returns nothing (with bit 3 of the op byte, the first datagram
/// is refused and handed back with `not_sent`), 7 `handle_timeout`. Events are polled after
/// every op. At the end time jumps past every deadline.
///
/// Invariants:
/// - `call` returns 1, 2, 3, ...; every id it returned ends in exactly one outcome
///   from `poll_event` (an answer right after the datagram that carried it), none for an id
///   never returned, and after the final jump every call has ended, `in_flight()` is 0 and
///   nothing is left to send or wait for; `in_flight()` = calls not yet ended after every op;
/// - `handle_datagram` takes every datagram (the answer before it was taken out); an answer
///   comes only from a response datagram in the client's epoch for that id,
///   with its body (`Ok`) or code and message (`Error` → `Remote`, `Rejected` → `Rejected`);
///   `cancel` returns true only for a call not ended, which then ends `Cancelled`;
///   `TimedOut` only at or after the deadline and never for a cancelled call; `sent` says
///   whether a request was transmitted;
/// - `poll_transmit`: every datagram parses, carries the client's epoch and a floor that
///   never decreases and is at most its id; a request is for a call not ended, before its
///   deadline, with its method, body and budget; a cancel only for a call that was
///   transmitted and has ended (cancelled or past its deadline), once;
/// - stats agree: calls, responses, failures, timeouts, transmissions, retransmissions.
pub fn check_datagram_client(data: &[u8]) -> DatagramClientSummary {
    let mut input = Input::new(data);
    let slots = 1 + usize::from(input.u8() % 4);
    let config = DatagramConfig {
        max_datagram: MAX_DATAGRAM,
        initial_rto: Duration::from_millis(u64::from(input.int16())),
        max_rto: Duration::from_millis(u64::from(input.int16())),
        max_attempts: 1 + u32::from(input.u8() % 8),
        jitter_per_mille: u32::from(input.int16()),
        max_answer: MAX_DATAGRAM,
        ..DatagramConfig::default()
    };
    let epoch = read_epoch(&mut input);
    let seed = input.u64();
    let client = DatagramClient::new(
        config,
        epoch,
        seed,
        vec![0u8; config.client_storage_len(slots).expect("small")],
        vec![DatagramCallSlot::default(); slots],
    )
    .expect("client config is valid");
    let mut run = ClientRun {
        client,
        epoch,
        now: Instant::ZERO,
        calls: BTreeMap::new(),
        floor: 0,
        sum: DatagramClientStatsModel::default(),
        received: None,
    };

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        match op % 8 {
            0 => {
                let method = input.text();
                let body = read_body(&mut input);
                let timeout = match input.u8() {
                    0 => None,
                    _ => Some(Duration::from_millis(input.int())),
                };
                run.call(method, body, timeout);
            }
            1 => {
                let id = run.read_id(&mut input);
                if run.client.cancel(RequestId(id)) {
                    let c = run.calls.get_mut(&id);
                    let c = c.filter(|c| !c.ended && !c.cancelled);
                    let c = c.unwrap_or_else(|| {
                        panic!("datagram_client: cancel({id}) accepted for no waiting call")
                    });
                    c.cancelled = true;
                }
            }
            2 => {
                let epoch = match input.u8() {
                    0..200 => run.epoch,
                    _ => read_epoch(&mut input),
                };
                let floor = input.int();
                let id = RequestId(run.read_id(&mut input));
                let reply = read_reply(&mut input);
                let frame = Frame::Response(Response { id, reply });
                let bytes = encode(DatagramHeader::new(epoch, floor), &frame);
                run.receive(&bytes);
            }
            3 => {
                let bytes = input.blob();
                run.receive(bytes);
            }
            4 => run.now = run.now.saturating_add(Duration::from_millis(input.int())),
            5 => {
                let pick = usize::from(input.u8());
                let how = input.u8() % 3;
                let target = if pick == 255 || run.calls.is_empty() {
                    run.client.poll_timeout()
                } else {
                    run.calls
                        .values()
                        .nth(pick % run.calls.len())
                        .map(|c| c.deadline)
                };
                if let Some(t) = target {
                    let t = t.as_micros();
                    let at = Instant::from_micros(match how {
                        0 => t.saturating_sub(1),
                        1 => t,
                        _ => t.saturating_add(1),
                    });
                    if at > run.now {
                        run.now = at;
                    }
                }
            }
            // Bit 3 of the op: the transport refuses the first datagram (`not_sent`).
            6 => run.transmit_all(op & 8 != 0),
            _ => run.client.handle_timeout(run.now),
        }
        run.poll_events();
        run.check_counts();
    }

    // The end: past every deadline, everything ends and nothing is left.
    run.now = Instant::from_micros(u64::MAX);
    run.client.handle_timeout(run.now);
    run.poll_events();
    run.transmit_all(false);
    run.poll_events();
    run.check_counts();
    let who = "datagram_client at the end";
    let open: Vec<u64> = run
        .calls
        .iter()
        .filter(|(_, c)| !c.ended)
        .map(|(id, _)| *id)
        .collect();
    assert!(open.is_empty(), "{who}: calls {open:?} never ended");
    assert_eq!(run.client.in_flight(), 0, "{who}: in_flight");
    assert_eq!(
        run.client.poll_timeout(),
        None,
        "{who}: still waiting for something"
    );
    run.sum.out
}

impl ClientRun {
    /// An id: selector < 128 picks a made id (by index), 128..192 the next id, else any.
    fn read_id(&self, input: &mut Input<'_>) -> u64 {
        let s = input.u8();
        let next = self.calls.keys().next_back().map_or(1, |id| id + 1);
        match s {
            0..128 if !self.calls.is_empty() => {
                let i = usize::from(s) % self.calls.len();
                self.calls.keys().nth(i).copied().unwrap_or(next)
            }
            0..192 => next,
            _ => input.int(),
        }
    }

    fn call(&mut self, method: &str, body: &[u8], timeout: Option<Duration>) {
        let who = "datagram_client call";
        match self.client.call(self.now, method, body, timeout) {
            Ok(id) => {
                let want = self.calls.keys().next_back().map_or(1, |id| id + 1);
                assert_eq!(id.0, want, "{who}: ids are not 1, 2, 3, ...");
                let timeout = timeout.unwrap_or(DatagramConfig::default().default_timeout);
                self.calls.insert(
                    id.0,
                    ClientCall {
                        method: method.to_owned(),
                        body: body.to_vec(),
                        budget: budget_ms(timeout),
                        deadline: self.now.saturating_add(timeout),
                        cancelled: false,
                        transmitted: false,
                        cancel_sent: false,
                        ended: false,
                        timed_out: false,
                    },
                );
                self.sum.out.calls += 1;
            }
            Err(SendError::TooManyInFlight) => {}
            Err(SendError::TooLarge { .. }) => {
                let frame = Frame::Request(Request {
                    id: RequestId(u64::MAX),
                    method,
                    budget_ms: Some(u32::MAX),
                    body,
                });
                assert!(
                    DatagramHeader::LEN + frame.encoded_len() > MAX_DATAGRAM - 20,
                    "{who}: TooLarge for a request that fits"
                );
            }
            Err(e) => panic!("{who}: unexpected {e:?}"),
        }
    }

    /// Ends call `id` in the model; panics unless it was made and had not ended.
    fn end(&mut self, id: RequestId, how: &str) -> &mut ClientCall {
        let c = self.calls.get_mut(&id.0);
        let c = c.unwrap_or_else(|| panic!("datagram_client: {how} for id {} never made", id.0));
        assert!(
            !c.ended,
            "datagram_client: second outcome ({how}) for {}",
            id.0
        );
        c.ended = true;
        c
    }

    fn receive(&mut self, bytes: &[u8]) {
        let who = "datagram_client handle_datagram";
        let taken = self.client.handle_datagram(self.now, bytes);
        assert!(taken, "{who}: refused with no answer waiting to be taken");
        self.received = Some(bytes.to_vec());
    }

    /// The answer an event reports, checked against the datagram handed in last.
    fn answered(&mut self, id: RequestId, outcome: &Owned) {
        let who = "datagram_client poll_event (answer)";
        let bytes = self.received.take();
        let bytes = bytes.unwrap_or_else(|| panic!("{who}: {outcome:?} with no datagram in"));
        let parsed = parse(&bytes);
        let Ok((header, Frame::Response(response))) = parsed else {
            panic!("{who}: an outcome from a datagram that is no response: {parsed:?}");
        };
        assert_eq!(
            header.epoch, self.epoch,
            "{who}: an outcome from another epoch"
        );
        assert_eq!(id, response.id, "{who}: outcome for another id");
        match (outcome, response.reply) {
            (Owned::Response(body), Reply::Ok(sent)) => {
                assert_eq!(body.as_slice(), sent, "{who}: wrong response");
                self.sum.out.responses += 1;
                let c = self.end(id, "Response");
                assert!(!c.cancelled, "{who}: a cancelled call got a response");
            }
            (
                Owned::Remote(code, message),
                Reply::Error {
                    code: c,
                    message: m,
                },
            ) => {
                assert_eq!(
                    (*code, message.as_str()),
                    (c, m),
                    "{who}: wrong remote failure"
                );
                self.server_failure(id);
            }
            (
                Owned::Rejected(code, message),
                Reply::Rejected {
                    code: c,
                    message: m,
                },
            ) => {
                assert_eq!((*code, message.as_str()), (c, m), "{who}: wrong rejection");
                self.server_failure(id);
            }
            other => panic!("{who}: event {other:?} does not match the reply"),
        }
    }

    /// Call `id` ended with an error or a rejection from the server.
    fn server_failure(&mut self, id: RequestId) {
        self.sum.out.failures += 1;
        let c = self.end(id, "Failed");
        assert!(
            !c.cancelled,
            "datagram_client poll_event: a cancelled call failed from the server"
        );
    }

    fn poll_events(&mut self) {
        let who = "datagram_client poll_event";
        let now = self.now;
        while let Some((id, outcome)) = self.client.poll_event(now).map(Owned::of) {
            let (sent, cancelled) = match outcome {
                Owned::TimedOut(sent) => (sent, false),
                Owned::Cancelled(sent) => (sent, true),
                answer => {
                    self.answered(id, &answer);
                    continue;
                }
            };
            self.sum.out.failures += 1;
            let c = self.end(id, "poll_event");
            if cancelled {
                assert!(c.cancelled, "{who}: {} Cancelled, never cancelled", id.0);
                assert_eq!(sent, c.transmitted, "{who}: Cancelled.sent");
            } else {
                assert!(!c.cancelled, "{who}: a cancelled call timed out");
                assert!(now >= c.deadline, "{who}: {} timed out early", id.0);
                assert_eq!(sent, c.transmitted, "{who}: TimedOut.sent");
                c.timed_out = true;
                self.sum.out.timeouts += 1;
            }
        }
        self.received = None;
    }

    fn transmit_all(&mut self, refuse_first: bool) {
        let who = "datagram_client poll_transmit";
        let now = self.now;
        let mut refuse = refuse_first;
        for _ in 0..10_000 {
            let Some(transmit) = self.client.poll_transmit(now) else {
                return;
            };
            let (kind, bytes) = (transmit.kind, transmit.bytes);
            assert!(bytes.len() <= MAX_DATAGRAM, "{who}: over max_datagram");
            let (header, frame) =
                parse(bytes).unwrap_or_else(|e| panic!("{who}: does not parse ({e:?})"));
            assert_eq!(header.epoch, self.epoch, "{who}: epoch");
            assert!(header.floor >= self.floor, "{who}: the floor went down");
            self.floor = header.floor;
            for id in acked_ids(&header) {
                let c = self.calls.get(&id);
                let c = c.unwrap_or_else(|| panic!("{who}: acknowledges {id}, never made"));
                // `poll_transmit` may time calls out before their events are polled.
                let timed_out = c.timed_out || (!c.ended && now >= c.deadline);
                assert!(c.ended || timed_out, "{who}: acknowledges {id}, not ended");
                let cancel_owed = c.transmitted && (c.cancelled || timed_out) && !c.cancel_sent;
                assert!(
                    !cancel_owed,
                    "{who}: acknowledges {id}, still owed a cancel"
                );
            }
            match frame {
                Frame::Request(req) => {
                    assert_eq!(kind, DatagramKind::Request(req.id), "{who}: kind");
                    assert!(header.floor <= req.id.0, "{who}: floor over the id");
                    let c = self.calls.get_mut(&req.id.0);
                    let c = c.unwrap_or_else(|| panic!("{who}: request for unknown id"));
                    assert!(!c.ended && !c.cancelled, "{who}: request for an ended call");
                    assert!(now < c.deadline, "{who}: request at or after its deadline");
                    assert_eq!(
                        (req.method, req.body, req.budget_ms),
                        (c.method.as_str(), c.body.as_slice(), Some(c.budget)),
                        "{who}: request {} is not the call",
                        req.id.0
                    );
                    if !refuse {
                        if c.transmitted {
                            self.sum.retransmissions += 1;
                        }
                        c.transmitted = true;
                        self.sum.out.transmissions += 1;
                    }
                }
                Frame::Cancel { id } => {
                    assert_eq!(kind, DatagramKind::Cancel(id), "{who}: kind");
                    assert!(header.floor <= id.0, "{who}: floor over the id");
                    let c = self.calls.get_mut(&id.0);
                    let c = c.unwrap_or_else(|| panic!("{who}: cancel for unknown id"));
                    assert!(c.transmitted, "{who}: cancel for a call never sent");
                    assert!(
                        c.cancelled || now >= c.deadline,
                        "{who}: cancel for a call neither cancelled nor timed out"
                    );
                    assert!(!c.cancel_sent, "{who}: two cancels for {}", id.0);
                    // A refused cancel is given up, as a lost one would be: never again.
                    c.cancel_sent = true;
                    if !refuse {
                        self.sum.out.cancels_sent += 1;
                    }
                }
                Frame::Ping { .. } => {
                    assert_eq!(kind, DatagramKind::Acknowledgement, "{who}: kind");
                    assert!(
                        acked_ids(&header).next().is_some() || header.floor > 1,
                        "{who}: an acknowledgement that says nothing"
                    );
                    if !refuse {
                        self.sum.out.acks_sent += 1;
                    }
                }
                other => panic!("{who}: a client sends {other:?}"),
            }
            if refuse {
                // The socket had no room: handed back, and sent again when there is.
                self.client.not_sent(kind);
                self.sum.not_sent += 1;
                refuse = false;
            }
        }
        panic!("{who}: never runs dry");
    }

    fn check_counts(&self) {
        let who = "datagram_client";
        let open = self.calls.values().filter(|c| !c.ended).count();
        assert_eq!(
            self.client.in_flight(),
            open,
            "{who}: in_flight vs calls not ended"
        );
        let s = self.client.stats();
        let m = &self.sum.out;
        assert_eq!(s.calls, m.calls, "{who}: stats.calls");
        assert_eq!(s.responses, m.responses, "{who}: stats.responses");
        assert_eq!(s.failures, m.failures, "{who}: stats.failures");
        assert_eq!(s.timeouts, m.timeouts, "{who}: stats.timeouts");
        assert_eq!(
            s.transmissions, m.transmissions,
            "{who}: stats.transmissions"
        );
        assert_eq!(
            s.retransmissions, self.sum.retransmissions,
            "{who}: stats.retransmissions"
        );
        assert_eq!(s.acks, m.acks_sent, "{who}: stats.acks");
        assert_eq!(s.not_sent, self.sum.not_sent, "{who}: stats.not_sent");
    }
}

/// Makes scripts for the two datagram targets, for the seed corpus.
#[derive(Debug, Default, Clone)]
pub struct DatagramScript(pub Vec<u8>);

impl DatagramScript {
    /// A byte.
    pub fn u8(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    /// Bytes as they are.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A small int (< 64) in `Input::int` form.
    pub fn small(self, v: u8) -> Self {
        assert!(v < 64);
        self.u8(v << 2)
    }

    /// A blob: length byte and bytes.
    pub fn blob(self, bytes: &[u8]) -> Self {
        let n = u8::try_from(bytes.len()).expect("short blob");
        self.u8(n).raw(bytes)
    }

    /// The bytes.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}
