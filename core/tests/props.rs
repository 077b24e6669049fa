//! Property tests over the stream codec and the connections: any split of a valid stream
//! decodes the same, and arbitrary bytes never panic a connection or break its promises.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    missing_docs
)]

use proptest::prelude::*;
use wirecall_core::buffer::GrowBuf;
use wirecall_core::client::{CallSlot, ClientConnection, ClientEvent, SendError};
use wirecall_core::frame::{FrameDecoder, encode_frame};
use wirecall_core::server::{RequestSlot, ServerConnection, ServerEvent};
use wirecall_core::table::{GrowTable, Table};
use wirecall_core::wire::{
    CloseCode, Frame, Hello, MAGIC, RejectCode, Reply, Request, RequestId, Response,
};
use wirecall_core::{Config, Duration, Instant};

/// Owned frame fields, so proptest can generate them.
#[derive(Debug, Clone)]
enum Owned {
    Request(u64, String, Option<u32>, Vec<u8>),
    Ok(u64, Vec<u8>),
    Error(u64, u32, String),
    Rejected(u64, u16, String),
    Busy(u64, u32),
    Cancel(u64),
    Ping(u64),
    GoAway(u64),
    Close(u16, String),
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        match self {
            Self::Request(id, m, b, body) => Frame::Request(Request {
                id: RequestId(*id),
                method: m,
                budget_ms: *b,
                body,
            }),
            Self::Ok(id, body) => Frame::Response(Response {
                id: RequestId(*id),
                reply: Reply::Ok(body),
            }),
            Self::Error(id, code, m) => Frame::Response(Response {
                id: RequestId(*id),
                reply: Reply::Error {
                    code: *code,
                    message: m,
                },
            }),
            Self::Rejected(id, code, m) => Frame::Response(Response {
                id: RequestId(*id),
                reply: Reply::Rejected {
                    code: RejectCode(*code),
                    message: m,
                },
            }),
            Self::Busy(id, ms) => Frame::Response(Response {
                id: RequestId(*id),
                reply: Reply::Busy {
                    retry_after_ms: *ms,
                },
            }),
            Self::Cancel(id) => Frame::Cancel { id: RequestId(*id) },
            Self::Ping(n) => Frame::Ping { nonce: *n },
            Self::GoAway(id) => Frame::GoAway {
                last_id: RequestId(*id),
            },
            Self::Close(code, m) => Frame::Close {
                code: CloseCode(*code),
                message: m,
            },
        }
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (
            any::<u64>(),
            "[a-z]{0,12}",
            any::<Option<u32>>(),
            bytes.clone()
        )
            .prop_map(|(i, m, b, body)| Owned::Request(i, m, b, body)),
        (any::<u64>(), bytes).prop_map(|(i, b)| Owned::Ok(i, b)),
        (any::<u64>(), any::<u32>(), ".{0,20}").prop_map(|(i, c, m)| Owned::Error(i, c, m)),
        (any::<u64>(), any::<u16>(), ".{0,20}").prop_map(|(i, c, m)| Owned::Rejected(i, c, m)),
        (any::<u64>(), any::<u32>()).prop_map(|(i, ms)| Owned::Busy(i, ms)),
        any::<u64>().prop_map(Owned::Cancel),
        any::<u64>().prop_map(Owned::Ping),
        any::<u64>().prop_map(Owned::GoAway),
        (any::<u16>(), ".{0,20}").prop_map(|(c, m)| Owned::Close(c, m)),
    ]
}

fn stream(frames: &[Owned]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let mut buf = vec![0u8; 1024];
        let n = encode_frame(&f.frame(), &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// `wire` fed to `decoder` in the pieces between the sorted `cuts` (indices into it), every
/// frame taken out as soon as it is whole; the frames as `Debug` text. Checks on the way that
/// the decoder never holds more than its storage and never stalls (each step takes bytes or
/// gives a frame).
fn decode_in_pieces<B: wirecall_core::buffer::Buffer>(
    decoder: &mut FrameDecoder<B>,
    wire: &[u8],
    cuts: &[prop::sample::Index],
) -> Result<Vec<String>, TestCaseError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    let mut got = Vec::new();
    for pair in points.windows(2) {
        let mut piece = &wire[pair[0]..pair[1]];
        while !piece.is_empty() {
            let n = decoder.feed(piece);
            piece = &piece[n..];
            prop_assert!(decoder.buffered() <= decoder.capacity());
            let before = got.len();
            while let Some(body) = decoder.next_frame().unwrap() {
                got.push(format!("{:?}", Frame::decode(body).unwrap()));
            }
            prop_assert!(n > 0 || got.len() > before, "the decoder stalled");
        }
    }
    Ok(got)
}

fn hello() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let frame = Frame::Hello(Hello {
        magic: MAGIC,
        min_version: 1,
        max_version: 1,
        max_frame_len: 4096,
        max_in_flight: 8,
    });
    let n = encode_frame(&frame, &mut buf).unwrap();
    buf[..n].to_vec()
}

proptest! {
    /// However a valid stream is cut into pieces, the decoder gives the same frames.
    #[test]
    fn any_split_of_a_valid_stream_decodes_the_same(
        frames in proptest::collection::vec(owned(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let wire = stream(&frames);
        let mut decoder = FrameDecoder::new(vec![0u8; 2048], 1024);
        let got = decode_in_pieces(&mut decoder, &wire, &cuts)?;
        let want: Vec<String> = frames.iter().map(|f| format!("{:?}", f.frame())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    /// Arbitrary bytes after a valid hello never panic a server; it either stays open or
    /// reports exactly one Closed as its last event, and its transmit queue stays bounded.
    #[test]
    fn arbitrary_bytes_never_panic_a_server(
        noise in proptest::collection::vec(any::<u8>(), 0..2000),
        valid in proptest::collection::vec(owned(), 0..6),
        chunk in 1usize..64,
    ) {
        let now = Instant::ZERO;
        let mut s = ServerConnection::new(Config::default(), vec![0u8; 4096], vec![0u8; 4096], vec![RequestSlot::EMPTY; 8], now).unwrap();
        let mut input = hello();
        input.extend(stream(&valid));
        input.extend(noise);
        let mut closed = 0;
        for (i, piece) in input.chunks(chunk).enumerate() {
            let t = Instant::from_millis(i as u64);
            let mut rest = piece;
            for _ in 0..100 {
                let n = s.handle_input(t, rest);
                rest = &rest[n..];
                let mut ids = Vec::new();
                while let Some(ev) = s.poll_event(t) {
                    prop_assert_eq!(closed, 0, "event after Closed");
                    match ev {
                        ServerEvent::Request(r) => ids.push(r.id),
                        ServerEvent::Closed(_) => closed += 1,
                        _ => {}
                    }
                }
                for id in ids {
                    let _ = s.respond(id, Reply::Ok(b"x"));
                }
                let pending = s.transmit().len();
                prop_assert!(pending <= 4096);
                s.advance_transmit(pending);
                if rest.is_empty() {
                    break;
                }
            }
            s.handle_timeout(t);
        }
        prop_assert!(closed <= 1);
        prop_assert_eq!(closed == 1, !s.is_open());
    }

    /// Arbitrary bytes from a "server" never panic a client, and every call it accepted
    /// ends exactly once by the time the connection ends.
    #[test]
    fn arbitrary_bytes_never_panic_a_client(
        noise in proptest::collection::vec(any::<u8>(), 0..2000),
        valid in proptest::collection::vec(owned(), 0..6),
        calls in 0usize..6,
    ) {
        let now = Instant::ZERO;
        let mut c = ClientConnection::new(Config::default(), vec![0u8; 4096], vec![0u8; 4096], vec![CallSlot::EMPTY; 8], now).unwrap();
        let mut accepted = Vec::new();
        for _ in 0..calls {
            if let Ok(id) = c.call(now, "m", b"", Some(Duration::from_secs(1))) {
                accepted.push(id);
            }
        }
        let mut input = hello();
        input.extend(stream(&valid));
        input.extend(noise);
        let mut ended = std::collections::HashMap::new();
        let mut closed = false;
        let mut rest = &input[..];
        let poll = |c: &mut ClientConnection<Vec<u8>, Vec<CallSlot>>, t: Instant, ended: &mut std::collections::HashMap<u64, u32>, closed: &mut bool| {
            while let Some(ev) = c.poll_event(t) {
                assert!(!*closed, "event after Closed");
                match ev {
                    ClientEvent::Response { id, .. } | ClientEvent::Failed { id, .. } => *ended.entry(id.0).or_insert(0) += 1,
                    ClientEvent::Closed(_) => *closed = true,
                    _ => {}
                }
            }
            let n = c.transmit().len();
            c.advance_transmit(n);
        };
        for _ in 0..1000 {
            let n = c.handle_input(now, rest);
            rest = &rest[n..];
            poll(&mut c, now, &mut ended, &mut closed);
            if rest.is_empty() || closed {
                break;
            }
        }
        // Then the transport ends: everything must be settled.
        let late = Instant::from_millis(60_000);
        c.handle_eof();
        c.handle_timeout(late);
        poll(&mut c, late, &mut ended, &mut closed);
        prop_assert!(closed);
        for id in &accepted {
            prop_assert_eq!(ended.get(&id.0).copied(), Some(1), "call {} ends once", id);
        }
        prop_assert!(ended.keys().all(|k| accepted.iter().any(|a| a.0 == *k)));
    }
}

fn growable(start: usize, cap: usize) -> GrowBuf {
    GrowBuf::new(start, cap)
}

proptest! {
    /// A decoder over storage that starts at 64 bytes decodes any stream of frames up to a
    /// 2000-byte limit, however it is cut, growing as large frames come.
    #[test]
    fn growable_decoder_decodes_any_split(
        frames in proptest::collection::vec(owned(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let wire = stream(&frames);
        let mut decoder = FrameDecoder::new(growable(64, 2004), 2000);
        prop_assert_eq!(decoder.max_frame_len(), 2000);
        let got = decode_in_pieces(&mut decoder, &wire, &cuts)?;
        let want: Vec<String> = frames.iter().map(|f| format!("{:?}", f.frame())).collect();
        prop_assert_eq!(got, want);
        prop_assert!(decoder.capacity() <= 2004);
        prop_assert!(decoder.shrink(64));
        prop_assert_eq!(decoder.capacity(), 64);
    }
}

/// Connections over growable buffers: a 4 KiB answer passes through buffers that start at
/// 256 bytes, and both ends shrink back once idle.
#[test]
fn connections_on_growable_buffers_grow_and_shrink() {
    let now = Instant::ZERO;
    let cfg = Config::default();
    let mut c = ClientConnection::new(
        cfg,
        growable(256, 65540),
        growable(256, 65540),
        vec![CallSlot::EMPTY; 8],
        now,
    )
    .unwrap();
    let mut s = ServerConnection::new(
        cfg,
        growable(256, 65540),
        growable(256, 65540),
        vec![RequestSlot::EMPTY; 8],
        now,
    )
    .unwrap();
    assert_eq!(s.peer(), None);
    let id = c.call(now, "big", b"", None).unwrap();
    let big = vec![7u8; 4096];
    let mut answered = false;
    let mut got = None;
    for _ in 0..1000 {
        let bytes = c.transmit().to_vec();
        let mut at = 0;
        while at < bytes.len() {
            let n = s.handle_input(now, &bytes[at..]);
            at += n;
            let mut ids = Vec::new();
            while let Some(ev) = s.poll_event(now) {
                if let ServerEvent::Request(r) = ev {
                    ids.push(r.id);
                }
            }
            for rid in ids {
                s.respond(rid, Reply::Ok(&big)).unwrap();
                answered = true;
            }
        }
        c.advance_transmit(bytes.len());
        let bytes = s.transmit().to_vec();
        let mut at = 0;
        while at < bytes.len() {
            let n = c.handle_input(now, &bytes[at..]);
            at += n;
            while let Some(ev) = c.poll_event(now) {
                if let ClientEvent::Response { id: rid, body } = ev {
                    got = Some((rid, body.len()));
                }
            }
        }
        s.advance_transmit(bytes.len());
        if got.is_some() {
            break;
        }
    }
    assert!(answered);
    assert_eq!(got, Some((id, 4096)));
    assert!(s.shrink_buffers(256));
    assert!(c.shrink_buffers(256));
}

/// One client and one server over a table type each, with what each side has seen.
struct Pair<CS, SS> {
    c: ClientConnection<Vec<u8>, CS>,
    s: ServerConnection<Vec<u8>, SS>,
    /// Requests the server has taken and not answered, oldest first.
    waiting: Vec<RequestId>,
    /// Everything either side reported, in order, as text.
    log: Vec<String>,
}

impl<CS: Table<CallSlot>, SS: Table<RequestSlot>> Pair<CS, SS> {
    fn new(cs: CS, ss: SS) -> Self {
        let now = Instant::ZERO;
        let c = ClientConnection::new(Config::default(), vec![0; 8192], vec![0; 8192], cs, now);
        let s = ServerConnection::new(Config::default(), vec![0; 8192], vec![0; 8192], ss, now);
        let mut pair = Self {
            c: c.unwrap(),
            s: s.unwrap(),
            waiting: Vec::new(),
            log: Vec::new(),
        };
        pair.shuttle();
        pair
    }

    /// Answers every request the server holds with `body`, delivers the answers, and
    /// returns how many answers the client has seen in all.
    fn answer_all(&mut self, body: &'static [u8]) -> usize {
        while let Some(id) = self.waiting.pop() {
            self.s.respond(id, Reply::Ok(body)).unwrap();
        }
        self.shuttle();
        self.log
            .iter()
            .filter(|l| l.starts_with("client Response"))
            .count()
    }

    /// Moves bytes both ways until neither side has any to send.
    fn shuttle(&mut self) {
        let now = Instant::ZERO;
        while !self.c.transmit().is_empty() || !self.s.transmit().is_empty() {
            let bytes = self.c.transmit().to_vec();
            assert_eq!(self.s.handle_input(now, &bytes), bytes.len());
            self.c.advance_transmit(bytes.len());
            while let Some(ev) = self.s.poll_event(now) {
                if let ServerEvent::Request(r) = &ev {
                    self.waiting.push(r.id);
                }
                self.log.push(format!("server {ev:?}"));
            }
            let bytes = self.s.transmit().to_vec();
            assert_eq!(self.c.handle_input(now, &bytes), bytes.len());
            self.s.advance_transmit(bytes.len());
            while let Some(ev) = self.c.poll_event(now) {
                self.log.push(format!("client {ev:?}"));
            }
        }
    }

    fn step(&mut self, op: u8, pick: prop::sample::Index) {
        let now = Instant::ZERO;
        match op % 5 {
            0 | 1 => {
                let outcome = self.c.call(now, "m", &[op], None);
                self.log.push(format!("call {outcome:?}"));
            }
            // A burst of up to 70 calls, past the limit of 64.
            2 => {
                for _ in 0..pick.index(71) {
                    let outcome = self.c.call(now, "m", &[op], None);
                    self.log.push(format!("call {outcome:?}"));
                }
            }
            3 if !self.waiting.is_empty() => {
                let id = self.waiting.remove(pick.index(self.waiting.len()));
                let outcome = self.s.respond(id, Reply::Ok(&id.0.to_le_bytes()));
                self.log.push(format!("respond {outcome:?}"));
            }
            _ => {
                let shrank = (self.c.shrink_buffers(0), self.s.shrink_buffers(0));
                self.log.push(format!("shrink {shrank:?}"));
            }
        }
        self.shuttle();
    }
}

proptest! {
    /// Tables that start empty, grow as calls come and are given back when idle behave as
    /// fixed tables of the same size under calls, bursts past the in-flight limit, answers
    /// in any order and shrinking: the same calls taken or refused, the same answers, in
    /// the same order. (Cancels, deadlines and go-aways are not driven here; their
    /// failures are reported in table order, which growing may change.)
    #[test]
    fn growable_tables_behave_as_fixed_ones(
        ops in proptest::collection::vec((any::<u8>(), any::<prop::sample::Index>()), 1..300),
    ) {
        let mut fixed = Pair::new(vec![CallSlot::EMPTY; 64], vec![RequestSlot::EMPTY; 64]);
        let mut grow = Pair::new(GrowTable::new(64), GrowTable::new(64));
        for (op, pick) in ops {
            fixed.step(op, pick);
            grow.step(op, pick);
        }
        prop_assert_eq!(&fixed.log, &grow.log);
    }
}

/// A growable table takes the whole in-flight limit, refuses past it, and takes it again
/// after it was given back.
#[test]
fn a_growable_table_fills_to_the_limit_again_after_it_is_given_back() {
    let mut pair = Pair::new(GrowTable::new(64), GrowTable::new(64));
    for round in 0..2 {
        for _ in 0..64 {
            pair.c.call(Instant::ZERO, "m", b"x", None).unwrap();
        }
        let refused = pair.c.call(Instant::ZERO, "m", b"x", None);
        assert!(
            matches!(refused, Err(SendError::TooManyInFlight)),
            "{refused:?}"
        );
        pair.shuttle();
        assert_eq!(pair.waiting.len(), 64, "round {round}");
        assert_eq!(pair.answer_all(b"y"), 64 * (round + 1));
        assert!(pair.s.shrink_buffers(0) && pair.c.shrink_buffers(0));
    }
}

/// A table of the caller's that says it holds 64 slots but never grows past 2: the
/// server takes two requests and answers the rest busy, rather than stalling on them.
#[test]
fn a_table_that_does_not_grow_as_it_said_makes_busy_answers_not_a_stall() {
    struct Stubborn([RequestSlot; 2]);
    impl Table<RequestSlot> for Stubborn {
        fn entries(&self) -> &[RequestSlot] {
            &self.0
        }
        fn entries_mut(&mut self) -> &mut [RequestSlot] {
            &mut self.0
        }
        fn max_len(&self) -> usize {
            64
        }
    }
    let mut pair = Pair::new(vec![CallSlot::EMPTY; 64], Stubborn([RequestSlot::EMPTY; 2]));
    for _ in 0..5 {
        pair.c.call(Instant::ZERO, "m", b"x", None).unwrap();
    }
    pair.shuttle();
    assert_eq!(pair.waiting.len(), 2, "{:#?}", pair.log);
    let busy = pair.log.iter().filter(|l| l.contains("Busy")).count();
    assert_eq!(busy, 3, "{:#?}", pair.log);
    // The two taken are answered as ever.
    assert_eq!(pair.answer_all(b"y"), 2);
}
