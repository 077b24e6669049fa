//! `server_connection`: scripts of input, time, answers and closes into a
//! `ServerConnection`.

#[allow(unused_imports)]
use super::*;

/// Op flag (bit 6) of both connection scripts: do not poll events after this op, so the
/// next ops meet the connection with events still pending (say, a call that has ended
/// locally when a response for it arrives), as in a runtime that takes input and fires
/// timers before it polls. Without it, every op is followed by polling until `None`.
pub const DEFER_POLL: u8 = 0x40;

/// Operation codes of a `server_connection` script: the low four bits of the op byte.
/// Bit 7 of an input op delivers through `input_buffer`/`commit_input` instead of
/// `handle_input`; bit 6 of any op is [`DEFER_POLL`]. Codes not listed (0, 14, 15) are
/// frame input too, so frames dominate.
pub mod server_op {
    /// A frame from the client: [`read_frame`](super::read_frame) with the requests sent.
    pub const FRAME: u8 = 1;
    /// Raw bytes from the client: [`Input::blob`](super::Input::blob).
    pub const RAW: u8 = 2;
    /// Time passes ([`Advance`](super::Advance) byte), then `handle_timeout`.
    pub const ADVANCE: u8 = 3;
    /// The application answers: a selector byte (even: an outstanding request, indexed by
    /// the other bits; odd: an id from [`Input::int`](super::Input::int)), then a reply.
    pub const RESPOND: u8 = 4;
    /// `advance_transmit` of a `u16` amount.
    pub const TRANSMIT: u8 = 5;
    /// Graceful `close`.
    pub const CLOSE: u8 = 6;
    /// End of stream from the client (after delivering everything it sent).
    pub const EOF: u8 = 7;
    /// `abort`.
    pub const ABORT: u8 = 8;
    /// The application answers every outstanding request with `Ok(id)`.
    pub const RESPOND_ALL: u8 = 9;
    /// `advance_transmit` of everything.
    pub const TRANSMIT_ALL: u8 = 10;
    /// `refuse` (the server is at its connection limit).
    pub const REFUSE: u8 = 11;
    /// `shrink_buffers` to a `u16` % 4096 bytes.
    pub const SHRINK: u8 = 12;
    /// `reserve_input` of a `u16` bytes.
    pub const RESERVE: u8 = 13;
}

/// What a server script did, for the seed generator's own checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSummary {
    /// Request events.
    pub requests: usize,
    /// Answers `respond` accepted.
    pub answered: usize,
    /// Busy and deadline rejections the core sent by itself.
    pub core_answered: usize,
    /// Cancelled events.
    pub cancelled: usize,
    /// Expired events.
    pub expired: usize,
    /// The close reason.
    pub closed: CloseReason,
}

pub(crate) type Server = ServerConnection<GrowBuf, GrowTable<RequestSlot>>;

/// A request's target, kept past its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedTarget {
    Method(String),
    Endpoint(EndpointKey),
}

impl OwnedTarget {
    pub(crate) fn of(target: Target<'_>) -> Self {
        match target {
            Target::Method(m) => Self::Method(m.to_owned()),
            Target::Endpoint(k) => Self::Endpoint(k),
        }
    }
}

pub(crate) struct Delivered {
    pub(crate) id: u64,
    pub(crate) target: OwnedTarget,
    pub(crate) body: Vec<u8>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) at: Instant,
}

pub(crate) struct ServerRun {
    pub(crate) link: Link<Server>,
    pub(crate) config: Config,
    pub(crate) rx_limit: u32,
    pub(crate) limit: usize,
    /// Ids of the requests the script sent as frames (for the id picker).
    pub(crate) sent_ids: Vec<u64>,
    pub(crate) connected: Option<PeerInfo>,
    pub(crate) delivered: Vec<Delivered>,
    pub(crate) outstanding: BTreeSet<u64>,
    /// (id, encoded response body) of every answer `respond` accepted, in order.
    pub(crate) answered: Vec<(u64, Vec<u8>)>,
    /// Of those, answers replaced because they were over the client's limit.
    pub(crate) too_large: usize,
    pub(crate) cancelled: usize,
    pub(crate) expired: usize,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) close_called: bool,
}

/// `server_connection`: a script of operations on a [`ServerConnection`] with small buffers:
/// [`Setup`], then ops (see [`server_op`]) until the input ends; then everything the client
/// sent is delivered, time jumps far ahead, and the client's end of stream arrives.
///
/// After every operation:
/// - events: `Connected` once and first; requests with increasing ids, each with the method,
///   body and deadline (arrival + budget) of a request the client sent, never one with a
///   zero budget, never more waiting than the announced table; `Cancelled` and `Expired`
///   only for waiting requests (`Expired` only once its deadline has passed); nothing after
///   `Closed`; `Closed` as soon as the connection is not open;
/// - `respond` fails exactly as documented (`UnknownRequest` iff not waiting, `Closed` iff
///   closed, `TooLarge` iff over the client's limit, `WouldBlock` never with an empty
///   transmit buffer);
/// - `transmit()` within the buffer, `advance_transmit` removes exactly what it says,
///   `in_flight()` and the stats agree with the events;
/// - after `handle_timeout(now)` with nothing waiting to be sent, `poll_timeout()` is later
///   than `now` (a runtime would spin otherwise).
///
/// At the end:
/// - the connection has closed (end of stream always ends it) and never got stuck with
///   input pending;
/// - its close reason is the one the client's stream gives first (the [`Model`]), and
///   "transport closed" only when the stream has none;
/// - the transmitted bytes are whole, canonical frames: its hello first; a response only
///   for a request it delivered and the application answered (same bytes, same order; all
///   of them unless a close that is not graceful dropped the unsent tail), or
///   for one it refused by itself (busy with the configured hint, or a zero-budget request
///   rejected as `DEADLINE_EXCEEDED`), at most one per id, within the client's frame limit;
///   pongs only for pings; a go-away only after `close`, covering every id answered; and the
///   close frame of PROTOCOL.md section 8, last.
pub fn check_server_connection(data: &[u8]) -> ServerSummary {
    let mut input = Input::new(data);
    let setup = Setup::read(&mut input);
    let mut run = ServerRun::new(&setup);
    run.pump(false);
    while !input.is_empty() {
        let op = input.u8();
        let via_buffer = op & 0x80 != 0;
        match op & 0x0f {
            server_op::RAW => run.link.send(input.blob(), via_buffer),
            server_op::ADVANCE => {
                let now = read_advance(&mut input, run.link.now, run.link.conn.poll_timeout());
                run.link.advance(now);
            }
            server_op::RESPOND => {
                let sel = input.u8();
                let id = match run.outstanding.len() {
                    n if sel & 1 == 0 && n > 0 => run
                        .outstanding
                        .iter()
                        .nth(usize::from(sel >> 1) % n)
                        .copied()
                        .unwrap_or(0),
                    _ => input.int(),
                };
                let reply = read_reply(&mut input);
                run.respond(id, reply);
            }
            server_op::TRANSMIT => {
                run.link.transmit(usize::from(input.u16()));
            }
            server_op::TRANSMIT_ALL => {
                run.link.transmit(usize::MAX);
            }
            server_op::CLOSE => {
                run.close_called |= run.link.conn.is_open();
                run.link.conn.close(run.link.now);
            }
            server_op::EOF => run.end_of_stream(),
            server_op::ABORT => run.link.conn.abort(),
            server_op::REFUSE => run.link.conn.refuse(),
            server_op::RESERVE => run.link.conn.reserve_input(usize::from(input.u16())),
            server_op::SHRINK => {
                let keep = usize::from(input.u16() % 4096).max(smallest_storage());
                if run.link.conn.shrink_buffers(keep) {
                    assert!(
                        run.link.conn.transmit().is_empty(),
                        "shrank with bytes to send"
                    );
                }
            }
            server_op::RESPOND_ALL => {
                let ids: Vec<u64> = run.outstanding.iter().copied().collect();
                for id in ids {
                    run.respond(id, Reply::Ok(&id.to_le_bytes()));
                }
            }
            _ => {
                let next = run.sent_ids.last().map_or(1, |id| id.saturating_add(1));
                let ids = Ids {
                    known: &run.sent_ids,
                    next,
                };
                let frame = read_frame(&mut input, ids);
                if let Frame::Request(r) = frame {
                    run.sent_ids.push(r.id.0);
                }
                let mut bytes = Vec::new();
                push_frame(&mut bytes, &frame);
                run.link.send(&bytes, via_buffer);
            }
        }
        if op & DEFER_POLL == 0 {
            run.pump(false);
        }
    }
    run.finish()
}

impl Driven for ServerRun {
    type Conn = Server;
    const WHO: &'static str = "server";

    fn link(&mut self) -> &mut Link<Server> {
        &mut self.link
    }

    fn poll_events(&mut self) -> usize {
        self.poll()
    }
}

impl ServerRun {
    pub(crate) fn new(setup: &Setup) -> Self {
        let config = setup.config(true);
        let slots = setup.slot_count(true);
        let tx_cap = setup.tx_len();
        let server = ServerConnection::new(
            config,
            setup.storage(setup.rx_len()),
            setup.storage(tx_cap),
            GrowTable::new(slots),
            Instant::ZERO,
        )
        .unwrap_or_else(|e| panic!("server refused a valid setup {setup:?}: {e}"));
        let limit = slots.min(config.max_in_flight as usize);
        Self {
            link: Link::new(server, tx_cap),
            config,
            rx_limit: setup.rx_limit(true),
            limit,
            sent_ids: Vec::new(),
            connected: None,
            delivered: Vec::new(),
            outstanding: BTreeSet::new(),
            answered: Vec::new(),
            too_large: 0,
            cancelled: 0,
            expired: 0,
            closed: None,
            close_called: false,
        }
    }

    pub(crate) fn respond(&mut self, id: u64, reply: Reply<'_>) {
        let waiting = self.outstanding.contains(&id);
        let open = self.link.conn.is_open();
        let idle = self.link.conn.transmit().is_empty();
        let limit = self.connected.map_or(0, |p| p.max_frame_len as usize);
        // What goes out: the answer, or its stand-in when it is over the client's limit.
        let sent = expected_answer(id, reply, limit, "answer larger than the client accepts");
        let frame = Frame::Response(Response {
            id: RequestId(id),
            reply: sent,
        });
        let len = frame.encoded_len();
        let replaced = sent != reply;
        match self.link.conn.respond(RequestId(id), reply) {
            Ok(()) => {
                assert!(
                    open && waiting,
                    "respond({id}) accepted an id that is not waiting"
                );
                assert!(
                    len <= limit,
                    "respond({id}) accepted {len} bytes over the limit {limit}"
                );
                self.outstanding.remove(&id);
                self.answered.push((id, encode_body(&frame)));
                if replaced {
                    self.too_large += 1;
                }
            }
            Err(RespondError::Closed) => assert!(!open, "respond({id}): Closed while open"),
            Err(RespondError::UnknownRequest) => {
                assert!(
                    open && !waiting,
                    "respond({id}): UnknownRequest for a waiting id"
                );
            }
            Err(RespondError::TooLarge) => {
                assert!(
                    open && waiting,
                    "respond({id}): TooLarge for an id not waiting"
                );
                assert!(
                    len > limit,
                    "respond({id}): TooLarge for {len} bytes, limit {limit}"
                );
            }
            Err(RespondError::WouldBlock) => {
                assert!(
                    open && waiting,
                    "respond({id}): WouldBlock for an id not waiting"
                );
                assert!(
                    len <= limit,
                    "respond({id}): WouldBlock for an answer over the limit"
                );
                assert!(
                    !idle,
                    "respond({id}): WouldBlock with an empty transmit buffer"
                );
            }
            Err(e) => panic!("respond({id}): unknown error {e:?}: extend the checks"),
        }
    }

    pub(crate) fn poll(&mut self) -> usize {
        let mut events = 0;
        let now = self.link.now;
        while let Some(event) = self.link.conn.poll_event(now) {
            events += 1;
            assert!(
                events < MAX_EVENTS_PER_POLL,
                "poll_event never returns None"
            );
            assert!(self.closed.is_none(), "event after Closed: {event:?}");
            match event {
                ServerEvent::Connected(info) => {
                    assert!(self.connected.is_none(), "second Connected");
                    self.connected = Some(info);
                }
                ServerEvent::Request(req) => {
                    assert!(self.connected.is_some(), "request before Connected");
                    if let Some(last) = self.delivered.last() {
                        assert!(
                            req.id.0 > last.id,
                            "request ids went {} then {}",
                            last.id,
                            req.id
                        );
                    }
                    assert!(
                        self.outstanding.len() < self.limit,
                        "more requests than the table"
                    );
                    self.outstanding.insert(req.id.0);
                    self.delivered.push(Delivered {
                        id: req.id.0,
                        target: OwnedTarget::of(req.target),
                        body: req.body.to_vec(),
                        deadline: req.deadline,
                        at: now,
                    });
                }
                ServerEvent::Cancelled { id } => {
                    assert!(
                        self.outstanding.remove(&id.0),
                        "Cancelled {id}, not waiting"
                    );
                    self.cancelled += 1;
                }
                ServerEvent::Expired { id } => {
                    assert!(self.outstanding.remove(&id.0), "Expired {id}, not waiting");
                    let deadline = self
                        .delivered
                        .iter()
                        .find(|d| d.id == id.0)
                        .and_then(|d| d.deadline);
                    assert!(
                        deadline.is_some_and(|d| d <= self.link.last_timeout),
                        "Expired {id} before its deadline {deadline:?}"
                    );
                    self.expired += 1;
                }
                ServerEvent::Closed(reason) => self.closed = Some(reason),
                other => panic!("unknown server event {other:?}: extend the checks"),
            }
        }
        self.check_state();
        events
    }

    pub(crate) fn check_state(&self) {
        assert!(
            self.link.conn.transmit().len() <= self.link.tx_cap,
            "transmit() over the buffer"
        );
        assert_eq!(
            self.link.conn.is_open(),
            self.closed.is_none(),
            "a closed connection must report Closed at once"
        );
        if self.closed.is_some() {
            assert_eq!(
                self.link.conn.poll_timeout(),
                None,
                "timer on a closed connection"
            );
        } else {
            assert_eq!(
                self.link.conn.in_flight(),
                self.outstanding.len(),
                "in_flight()"
            );
        }
        let stats = self.link.conn.stats();
        assert_eq!(
            stats.requests,
            self.delivered.len() as u64,
            "stats.requests"
        );
        assert_eq!(
            stats.responses,
            self.answered.len() as u64,
            "stats.responses"
        );
        assert_eq!(stats.cancelled, self.cancelled as u64, "stats.cancelled");
        assert_eq!(stats.expired, self.expired as u64, "stats.expired");
        assert_eq!(
            stats.answers_too_large, self.too_large as u64,
            "stats.answers_too_large"
        );
    }

    pub(crate) fn finish(mut self) -> ServerSummary {
        self.flush();
        let far = self.link.now.saturating_add(FAR);
        self.link.advance(far);
        self.poll();
        self.end_of_stream();
        for _ in 0..4 {
            self.link.transmit(usize::MAX);
            self.poll();
        }
        if self.closed.is_none() {
            // PROTOCOL.md 7.2: after the client's end of stream the server still owes the
            // requests it took (those without a deadline survive the jump above): it waits
            // for their answers, bounded by the drain timeout.
            assert!(
                !self.outstanding.is_empty(),
                "server still open after end of stream, owing no answer"
            );
            let far = self.link.now.saturating_add(FAR);
            self.link.advance(far);
            for _ in 0..4 {
                self.link.transmit(usize::MAX);
                self.poll();
            }
        }
        let Some(reason) = self.closed else {
            panic!("server still open after end of stream and the drain timeout")
        };
        assert!(self.link.conn.transmit().is_empty(), "transmit after close");
        let core_answered = self.check_streams(reason);
        ServerSummary {
            requests: self.delivered.len(),
            answered: self.answered.len(),
            core_answered,
            cancelled: self.cancelled,
            expired: self.expired,
            closed: reason,
        }
    }

    /// The end-of-run checks of both streams; returns the number of core-made answers.
    pub(crate) fn check_streams(&self, reason: CloseReason) -> usize {
        let model = Model::of(&self.link.inbound, self.rx_limit, Receiver::Server);
        model.check_close_reason(reason, "server");

        let requests: BTreeMap<u64, wirecall_core::wire::Call<'_>> = model
            .frames
            .iter()
            .filter_map(|f| f.as_call().map(|r| (r.id.0, r)))
            .collect();
        for d in &self.delivered {
            let Some(r) = requests.get(&d.id) else {
                panic!("delivered request {} the client never sent", d.id)
            };
            assert_eq!(
                (&d.target, d.body.as_slice()),
                (&OwnedTarget::of(r.target), r.body),
                "request {}",
                d.id
            );
            let want = r
                .budget_ms
                .map(|ms| d.at.saturating_add(Duration::from_millis(ms.into())));
            assert_eq!(d.deadline, want, "deadline of request {}", d.id);
            assert_ne!(
                r.budget_ms,
                Some(0),
                "delivered request {} with a zero budget",
                d.id
            );
        }

        let bodies = transmitted_frames(&self.link.tx, self.link.tx_cap, "server");
        let frames = decode_all(&bodies, "server");
        let hello = Hello {
            magic: MAGIC,
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            max_frame_len: self.rx_limit,
            max_in_flight: u32::try_from(self.limit).unwrap_or(u32::MAX),
        };
        let rest = check_common_frames(&frames, hello, &model.pings(), reason, Receiver::Server);

        let delivered: BTreeSet<u64> = self.delivered.iter().map(|d| d.id).collect();
        let app_ids: BTreeSet<u64> = self.answered.iter().map(|(id, _)| *id).collect();
        let mut app_answers = self.answered.iter();
        let mut responded = BTreeSet::new();
        let mut goaway = None;
        let mut core_answered = 0;
        let client_limit = self.connected.map_or(0, |p| p.max_frame_len as usize);
        for frame in rest {
            match *frame {
                Frame::Response(r) => {
                    let id = r.id.0;
                    assert!(responded.insert(id), "two responses for {id}");
                    let body = encode_body(frame);
                    assert!(
                        body.len() <= client_limit,
                        "response over the client's limit"
                    );
                    if app_ids.contains(&id) {
                        assert_eq!(
                            app_answers.next(),
                            Some(&(id, body)),
                            "answers not sent as given, in order"
                        );
                        continue;
                    }
                    core_answered += 1;
                    let Some(req) = requests.get(&id) else {
                        panic!("response for {id}, which was never requested: {r:?}")
                    };
                    assert!(
                        !delivered.contains(&id),
                        "core answered delivered request {id}"
                    );
                    match r.reply {
                        Reply::Busy { retry_after_ms } => assert_eq!(
                            retry_after_ms,
                            budget_ms(self.config.busy_retry_after),
                            "busy hint"
                        ),
                        Reply::Rejected { code, .. } => {
                            assert_eq!(code, RejectCode::DEADLINE_EXCEEDED, "core rejection");
                            assert_eq!(req.budget_ms, Some(0), "rejected a request with a budget");
                        }
                        other => panic!("core answered {id} by itself with {other:?}"),
                    }
                }
                Frame::GoAway { last_id } => {
                    assert!(goaway.is_none(), "second go-away");
                    assert!(self.close_called, "go-away without close()");
                    goaway = Some(last_id.0);
                }
                Frame::Ping { .. } | Frame::Pong { .. } | Frame::Close { .. } => {}
                other => panic!("server sent {other:?}"),
            }
        }
        // A close that is not graceful drops what was queued and not yet begun (conn.rs,
        // `discard_unsent`), so then the answers sent are only a prefix of those given.
        if keeps_unsent(reason, Receiver::Server) {
            assert!(
                app_answers.next().is_none(),
                "an answer respond() accepted never went out"
            );
        }
        if let Some(last) = goaway {
            let highest = delivered
                .iter()
                .chain(&responded)
                .max()
                .copied()
                .unwrap_or(0);
            assert!(
                highest <= last,
                "go-away last id {last} is below answered id {highest}"
            );
        }
        core_answered
    }
}

/// Writes `server_connection` scripts.
#[derive(Debug, Clone)]
pub struct ServerScript(Script);

impl ServerScript {
    /// A script with this set-up.
    pub fn new(setup: Setup) -> Self {
        let mut s = Script::new();
        setup.write(&mut s);
        Self(s)
    }

    /// The client sends a frame.
    pub fn frame(&mut self, frame: &Frame<'_>) -> &mut Self {
        self.0.u8(server_op::FRAME).frame(frame);
        self
    }

    /// The client sends raw bytes (in pieces of up to 255).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        for piece in bytes.chunks(255) {
            self.0.u8(server_op::RAW).blob(piece);
        }
        self
    }

    /// Time passes.
    pub fn advance(&mut self, a: Advance) -> &mut Self {
        self.0.u8(server_op::ADVANCE).u8(a.byte());
        self
    }

    /// The application answers `id`.
    pub fn respond(&mut self, id: u64, reply: &Reply<'_>) -> &mut Self {
        self.0.u8(server_op::RESPOND).u8(1).int(id).reply(reply);
        self
    }

    /// The application answers everything outstanding.
    pub fn respond_all(&mut self) -> &mut Self {
        self.0.u8(server_op::RESPOND_ALL);
        self
    }

    /// `advance_transmit(n)`.
    pub fn transmit(&mut self, n: u16) -> &mut Self {
        self.0.u8(server_op::TRANSMIT).u16(n);
        self
    }

    /// `advance_transmit` of everything.
    pub fn transmit_all(&mut self) -> &mut Self {
        self.0.u8(server_op::TRANSMIT_ALL);
        self
    }

    /// Graceful `close`.
    pub fn close(&mut self) -> &mut Self {
        self.0.u8(server_op::CLOSE);
        self
    }

    /// End of stream.
    pub fn eof(&mut self) -> &mut Self {
        self.0.u8(server_op::EOF);
        self
    }

    /// `abort`.
    pub fn abort(&mut self) -> &mut Self {
        self.0.u8(server_op::ABORT);
        self
    }

    /// `shrink_buffers(keep)`.
    pub fn shrink(&mut self, keep: u16) -> &mut Self {
        self.0.u8(server_op::SHRINK).u16(keep);
        self
    }

    /// `refuse`.
    pub fn refuse(&mut self) -> &mut Self {
        self.0.u8(server_op::REFUSE);
        self
    }

    /// The script's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.bytes.clone()
    }
}
