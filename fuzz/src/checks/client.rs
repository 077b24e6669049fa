//! `client_connection`: scripts of calls, cancels, server bytes and time into a
//! `ClientConnection`.

#[allow(unused_imports)]
use super::*;

/// Operation codes of a `client_connection` script (as for [`server_op`]; codes not listed,
/// 0, 14 and 15, are frame input too).
pub mod client_op {
    /// A frame from the server: [`read_frame`](super::read_frame) with the call ids.
    pub const FRAME: u8 = 1;
    /// Raw bytes from the server.
    pub const RAW: u8 = 2;
    /// Time passes ([`Advance`](super::Advance) byte), then `handle_timeout`.
    pub const ADVANCE: u8 = 3;
    /// `call`: method (text), body ([`read_body`](super::read_body)), timeout byte (0: none,
    /// else (b - 1) * 20 ms).
    pub const CALL: u8 = 4;
    /// `cancel`: a selector byte (even: a call made, indexed by the other bits; odd: an id
    /// from [`Input::int`](super::Input::int)).
    pub const CANCEL: u8 = 5;
    /// `advance_transmit` of a `u16` amount.
    pub const TRANSMIT: u8 = 6;
    /// Graceful `close`.
    pub const CLOSE: u8 = 7;
    /// End of stream from the server (after delivering everything it sent).
    pub const EOF: u8 = 8;
    /// `abort`.
    pub const ABORT: u8 = 9;
    /// `advance_transmit` of everything.
    pub const TRANSMIT_ALL: u8 = 10;
    /// The server answers every call made so far with `Ok(id)` (frames in order of id).
    pub const ANSWER_ALL: u8 = 11;
    /// `shrink_buffers` to a `u16` % 4096 bytes.
    pub const SHRINK: u8 = 12;
    /// `reserve_input` of a `u16` bytes.
    pub const RESERVE: u8 = 13;
}

/// What a client script did, for the seed generator's own checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// Calls `call` accepted.
    pub calls: usize,
    /// Calls that ended in a response.
    pub ok: usize,
    /// Calls that failed.
    pub failed: usize,
    /// The close reason.
    pub closed: CloseReason,
}

pub(crate) type Client = ClientConnection<GrowBuf, GrowTable<CallSlot>>;

/// How a call ended, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok(Vec<u8>),
    Remote(u32, String),
    Rejected(RejectCode, String),
    Busy(Duration),
    TimedOut,
    Cancelled,
    Refused,
    Lost(CloseReason, bool),
}

pub(crate) struct Call {
    pub(crate) id: u64,
    pub(crate) at: Instant,
    pub(crate) timeout: Option<Duration>,
    /// Transmitted-bytes count once the request has been sent whole.
    pub(crate) tx_end: usize,
    pub(crate) request: Vec<u8>,
}

pub(crate) struct ClientRun {
    pub(crate) link: Link<Client>,
    pub(crate) rx_limit: u32,
    pub(crate) calls: Vec<Call>,
    pub(crate) call_ids: Vec<u64>,
    pub(crate) open: BTreeSet<u64>,
    pub(crate) cancelled: BTreeSet<u64>,
    pub(crate) outcomes: BTreeMap<u64, Outcome>,
    pub(crate) connected: Option<PeerInfo>,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) close_called: bool,
    /// An op since the last poll deferred polling (see [`DEFER_POLL`]).
    pub(crate) unpolled: bool,
}

/// `client_connection`: a script of operations on a [`ClientConnection`] with small buffers
/// (see [`client_op`]); then everything the server sent is delivered, time jumps far ahead
/// and the server's end of stream arrives.
///
/// - Every id `call` returned ends in exactly one `Response` or `Failed`, all before
///   `Closed`; no event for an id `call` never returned; after the end every call has ended.
/// - `call` returns ids 1, 2, 3, ... and fails exactly as documented (`Closed` iff closed,
///   `TooManyInFlight` iff the window is full, `TooLarge`/`WouldBlock` by the size rules,
///   `WouldBlock` never for a request that fits an empty buffer); `cancel` accepts only calls
///   still waiting (and every one, when events were polled since), and a cancelled call
///   ends `Cancelled`.
/// - Each outcome is justified: a response or remote failure matches a response frame the
///   server sent for that id; `Refused` needs a go-away below the id; `TimedOut` needs the
///   call's deadline passed at a `handle_timeout`; `ConnectionLost` carries the final close
///   reason and says `sent` exactly when the request's last byte was (by the end) transmitted;
///   `TimedOut` and `Cancelled` say `sent` (a stream always sends what it queued).
/// - `in_flight()`, stats, `transmit()` bound, "Closed at once", timers as for the server.
/// - The close reason is the one the server's stream gives first (the [`Model`]).
/// - The transmitted bytes are whole canonical frames: its hello (`max_in_flight` 0); the
///   requests of the accepted calls, in order, byte for byte (all of them after a graceful
///   close; a prefix after any other, which drops frames not yet begun); cancels only for
///   calls made; at
///   most one go-away, after `close()`, with the last call's id and no request after it;
///   pongs only for pings; the matching close frame, last.
pub fn check_client_connection(data: &[u8]) -> ClientSummary {
    let mut input = Input::new(data);
    let setup = Setup::read(&mut input);
    let mut run = ClientRun::new(&setup);
    run.pump(false);
    while !input.is_empty() {
        let op = input.u8();
        let via_buffer = op & 0x80 != 0;
        match op & 0x0f {
            client_op::RAW => run.link.send(input.blob(), via_buffer),
            client_op::ADVANCE => {
                let now = read_advance(&mut input, run.link.now, run.link.conn.poll_timeout());
                run.link.advance(now);
            }
            client_op::CALL => {
                let method = input.text();
                let body = read_body(&mut input);
                let t = input.u8();
                let timeout = (t != 0).then(|| Duration::from_millis(u64::from(t - 1) * 20));
                run.call(method, body, timeout);
            }
            client_op::CANCEL => {
                let sel = input.u8();
                let id = match run.call_ids.len() {
                    n if sel & 1 == 0 && n > 0 => run.call_ids[usize::from(sel >> 1) % n],
                    _ => input.int(),
                };
                run.cancel(id);
            }
            client_op::TRANSMIT => {
                run.link.transmit(usize::from(input.u16()));
            }
            client_op::TRANSMIT_ALL => {
                run.link.transmit(usize::MAX);
            }
            client_op::CLOSE => {
                run.close_called |= run.link.conn.is_open();
                run.link.conn.close(run.link.now);
            }
            client_op::EOF => run.end_of_stream(),
            client_op::ABORT => run.link.conn.abort(),
            client_op::RESERVE => run.link.conn.reserve_input(usize::from(input.u16())),
            client_op::SHRINK => {
                let keep = usize::from(input.u16() % 4096).max(smallest_storage());
                if run.link.conn.shrink_buffers(keep) {
                    assert!(
                        run.link.conn.transmit().is_empty(),
                        "shrank with bytes to send"
                    );
                }
            }
            client_op::ANSWER_ALL => {
                let mut bytes = Vec::new();
                for &id in &run.call_ids {
                    let body = id.to_le_bytes();
                    let frame = Frame::Response(Response {
                        id: RequestId(id),
                        reply: Reply::Ok(&body),
                    });
                    push_frame(&mut bytes, &frame);
                }
                run.link.send(&bytes, via_buffer);
            }
            _ => {
                let next = run.call_ids.last().map_or(1, |id| id.saturating_add(1));
                let ids = Ids {
                    known: &run.call_ids,
                    next,
                };
                let frame = read_frame(&mut input, ids);
                let mut bytes = Vec::new();
                push_frame(&mut bytes, &frame);
                run.link.send(&bytes, via_buffer);
            }
        }
        if op & DEFER_POLL == 0 {
            run.pump(false);
        } else {
            run.unpolled = true;
        }
    }
    run.finish()
}

impl Driven for ClientRun {
    type Conn = Client;
    const WHO: &'static str = "client";

    fn link(&mut self) -> &mut Link<Client> {
        &mut self.link
    }

    fn poll_events(&mut self) -> usize {
        self.poll()
    }
}

impl ClientRun {
    pub(crate) fn new(setup: &Setup) -> Self {
        let config = setup.config(false);
        let tx_cap = setup.tx_len();
        let client = ClientConnection::new(
            config,
            setup.storage(setup.rx_len()),
            setup.storage(tx_cap),
            GrowTable::new(setup.slot_count(false)),
            Instant::ZERO,
        )
        .unwrap_or_else(|e| panic!("client refused a valid setup {setup:?}: {e}"));
        Self {
            link: Link::new(client, tx_cap),
            rx_limit: setup.rx_limit(false),
            calls: Vec::new(),
            call_ids: Vec::new(),
            open: BTreeSet::new(),
            cancelled: BTreeSet::new(),
            outcomes: BTreeMap::new(),
            connected: None,
            closed: None,
            close_called: false,
            unpolled: false,
        }
    }

    pub(crate) fn call(&mut self, method: &str, body: &[u8], timeout: Option<Duration>) {
        let open = self.link.conn.is_open();
        let waiting = self.open.len();
        let window = self.link.conn.max_in_flight();
        let next = self.call_ids.last().map_or(1, |id| id + 1);
        let request = Frame::Request(Request {
            id: RequestId(next),
            method,
            budget_ms: timeout.map(budget_ms),
            body,
        });
        let len = request.encoded_len();
        let peer_limit = self.link.conn.peer().map(|p| p.max_frame_len as usize);
        let idle = self.link.conn.transmit().is_empty();
        let what = format!("call #{next} of {len} bytes");
        match self.link.conn.call(self.link.now, method, body, timeout) {
            Ok(id) => {
                assert!(open && !self.close_called, "{what}: accepted after close");
                assert_eq!(id.0, next, "call ids are 1, 2, 3, ...");
                assert!(
                    waiting < window,
                    "{what}: accepted over the window of {window}"
                );
                let limit = peer_limit.unwrap_or(BASELINE_MAX_FRAME_LEN as usize);
                assert!(len <= limit, "{what}: accepted over the limit {limit}");
                self.open.insert(id.0);
                self.call_ids.push(id.0);
                self.calls.push(Call {
                    id: id.0,
                    at: self.link.now,
                    timeout,
                    tx_end: self.link.tx.len() + self.link.conn.transmit().len(),
                    request: encode_body(&request),
                });
            }
            Err(SendError::Closed) => assert!(!open, "{what}: Closed while open"),
            Err(SendError::Closing) => assert!(open, "{what}: Closing while closed"),
            Err(SendError::TooManyInFlight) => {
                assert!(
                    open && waiting >= window,
                    "{what}: TooManyInFlight with {waiting}"
                );
            }
            Err(SendError::TooLarge { .. }) => {
                let limit = peer_limit.unwrap_or(self.link.tx_cap - LEN_PREFIX);
                assert!(
                    open && len > limit,
                    "{what}: TooLarge under the limit {limit}"
                );
            }
            Err(SendError::WouldBlock) => {
                assert!(open, "{what}: WouldBlock while closed");
                match peer_limit {
                    Some(limit) => {
                        assert!(
                            len <= limit,
                            "{what}: WouldBlock, not TooLarge, over {limit}"
                        );
                        assert!(!idle, "{what}: WouldBlock with an empty transmit buffer");
                    }
                    None => assert!(
                        len > BASELINE_MAX_FRAME_LEN as usize || !idle,
                        "{what}: WouldBlock under the baseline with an empty transmit buffer"
                    ),
                }
            }
            Err(e) => panic!("{what}: unknown error {e:?}: extend the checks"),
        }
    }

    pub(crate) fn cancel(&mut self, id: u64) {
        let waiting = self.open.contains(&id) && !self.cancelled.contains(&id);
        let open = self.link.conn.is_open();
        let accepted = self.link.conn.cancel(RequestId(id));
        if accepted {
            assert!(
                open && waiting,
                "cancel({id}) accepted a call that is not waiting"
            );
            self.cancelled.insert(id);
        } else {
            // A call that ended locally (timeout, go-away) is not waiting any more, but the
            // script only knows once its event is polled.
            assert!(
                !open || !waiting || self.unpolled,
                "cancel({id}) refused a waiting call"
            );
        }
    }

    pub(crate) fn end(&mut self, id: RequestId, outcome: Outcome) {
        assert!(
            self.open.remove(&id.0),
            "outcome {outcome:?} for {id}, which is not waiting (never returned, or ended)"
        );
        let Some(call) = self.calls.iter().find(|c| c.id == id.0) else {
            panic!("no call {id}")
        };
        assert_eq!(
            outcome == Outcome::Cancelled,
            self.cancelled.contains(&id.0),
            "call {id} ended {outcome:?}; cancel accepted: {}",
            self.cancelled.contains(&id.0)
        );
        match &outcome {
            Outcome::TimedOut => assert!(
                call.timeout
                    .is_some_and(|t| self.link.last_timeout >= call.at.saturating_add(t)),
                "call {id} timed out before its deadline"
            ),
            // `sent` means "was or will be sent": checked at the end against everything
            // transmitted.
            Outcome::Lost(..) => {}
            Outcome::Ok(_)
            | Outcome::Remote(..)
            | Outcome::Rejected(..)
            | Outcome::Busy(_)
            | Outcome::Refused => {
                assert!(
                    self.connected.is_some(),
                    "call {id}: server outcome before hello"
                );
            }
            Outcome::Cancelled => {}
        }
        self.outcomes.insert(id.0, outcome);
    }

    pub(crate) fn poll(&mut self) -> usize {
        let mut events = 0;
        let now = self.link.now;
        self.unpolled = false;
        while let Some(event) = self.link.conn.poll_event(now) {
            events += 1;
            assert!(
                events < MAX_EVENTS_PER_POLL,
                "poll_event never returns None"
            );
            assert!(self.closed.is_none(), "event after Closed: {event:?}");
            match event {
                ClientEvent::Connected(info) => {
                    assert!(self.connected.is_none(), "second Connected");
                    self.connected = Some(info);
                }
                ClientEvent::Response { id, body } => {
                    let outcome = Outcome::Ok(body.to_vec());
                    self.end(id, outcome);
                }
                ClientEvent::Failed { id, failure } => {
                    let outcome = match failure {
                        Failure::Remote { code, message } => Outcome::Remote(code, message.into()),
                        Failure::Rejected { code, message } => {
                            Outcome::Rejected(code, message.into())
                        }
                        Failure::Busy { retry_after } => Outcome::Busy(retry_after),
                        Failure::TimedOut { sent } => {
                            // On a stream a queued request always goes out (client.rs docs).
                            assert!(sent, "call {id}: a stream call timed out as never sent");
                            Outcome::TimedOut
                        }
                        Failure::Cancelled { sent } => {
                            assert!(sent, "call {id}: a stream call cancelled as never sent");
                            Outcome::Cancelled
                        }
                        Failure::Refused => Outcome::Refused,
                        Failure::ConnectionLost { reason, sent } => Outcome::Lost(reason, sent),
                        other => panic!("unknown failure {other:?}: extend the checks"),
                    };
                    self.end(id, outcome);
                }
                ClientEvent::Closed(reason) => {
                    assert!(
                        self.open.is_empty(),
                        "Closed with calls waiting: {:?}",
                        self.open
                    );
                    self.closed = Some(reason);
                }
                other => panic!("unknown client event {other:?}: extend the checks"),
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
            assert_eq!(self.link.conn.in_flight(), self.open.len(), "in_flight()");
        }
        let stats = self.link.conn.stats();
        let ok = self
            .outcomes
            .values()
            .filter(|o| matches!(o, Outcome::Ok(_)))
            .count();
        let timeouts = self
            .outcomes
            .values()
            .filter(|o| **o == Outcome::TimedOut)
            .count();
        assert_eq!(stats.calls, self.calls.len() as u64, "stats.calls");
        assert_eq!(stats.responses, ok as u64, "stats.responses");
        assert_eq!(
            stats.failures,
            (self.outcomes.len() - ok) as u64,
            "stats.failures"
        );
        assert_eq!(stats.timeouts, timeouts as u64, "stats.timeouts");
    }

    pub(crate) fn finish(mut self) -> ClientSummary {
        self.flush();
        let far = self.link.now.saturating_add(FAR);
        self.link.advance(far);
        self.poll();
        self.end_of_stream();
        for _ in 0..4 {
            self.link.transmit(usize::MAX);
            self.poll();
        }
        let Some(reason) = self.closed else {
            panic!("client still open after end of stream")
        };
        assert!(
            self.open.is_empty(),
            "calls without an outcome: {:?}",
            self.open
        );
        assert_eq!(
            self.outcomes.len(),
            self.calls.len(),
            "every call ends once"
        );
        assert!(self.link.conn.transmit().is_empty(), "transmit after close");
        self.check_streams(reason);
        let ok = self
            .outcomes
            .values()
            .filter(|o| matches!(o, Outcome::Ok(_)))
            .count();
        ClientSummary {
            calls: self.calls.len(),
            ok,
            failed: self.outcomes.len() - ok,
            closed: reason,
        }
    }

    pub(crate) fn check_streams(&self, reason: CloseReason) {
        let model = Model::of(&self.link.inbound, self.rx_limit, Receiver::Client);
        model.check_close_reason(reason, "client");

        let replies = |id: u64| {
            model.frames.iter().filter_map(move |f| match f {
                Frame::Response(r) if r.id.0 == id => Some(r.reply),
                _ => None,
            })
        };
        for (&id, outcome) in &self.outcomes {
            let justified = match outcome {
                Outcome::Ok(body) => replies(id).any(|r| r == Reply::Ok(body.as_slice())),
                Outcome::Remote(code, message) => replies(id).any(|r| {
                    r == Reply::Error {
                        code: *code,
                        message: message.as_str(),
                    }
                }),
                Outcome::Rejected(code, message) => replies(id).any(|r| {
                    r == Reply::Rejected {
                        code: *code,
                        message: message.as_str(),
                    }
                }),
                Outcome::Busy(d) => replies(id).any(|r| match r {
                    Reply::Busy { retry_after_ms } => {
                        Duration::from_millis(retry_after_ms.into()) == *d
                    }
                    _ => false,
                }),
                Outcome::Refused => model
                    .frames
                    .iter()
                    .any(|f| matches!(f, Frame::GoAway { last_id } if last_id.0 < id)),
                Outcome::Lost(r, _) => *r == reason,
                Outcome::TimedOut | Outcome::Cancelled => true,
            };
            assert!(
                justified,
                "call {id} ended {outcome:?}, which the server never said"
            );
        }

        let bodies = transmitted_frames(&self.link.tx, self.link.tx_cap, "client");
        let frames = decode_all(&bodies, "client");
        let hello = Hello {
            magic: MAGIC,
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            max_frame_len: self.rx_limit,
            max_in_flight: 0,
        };
        let rest = check_common_frames(&frames, hello, &model.pings(), reason, Receiver::Client);
        let mut calls = self.calls.iter();
        let mut goaway = false;
        for frame in rest {
            match *frame {
                Frame::Request(r) => {
                    assert!(!goaway, "request {} after the client's go-away", r.id);
                    let Some(call) = calls.next() else {
                        panic!("request {} that no call made", r.id)
                    };
                    assert_eq!(
                        encode_body(frame),
                        call.request,
                        "request of call {}",
                        call.id
                    );
                }
                Frame::Cancel { id } => {
                    assert!(
                        self.call_ids.contains(&id.0),
                        "cancel for {id}, never called"
                    );
                }
                Frame::GoAway { last_id } => {
                    assert!(!goaway, "second go-away");
                    assert!(self.close_called, "go-away without close()");
                    assert_eq!(last_id.0, self.calls.len() as u64, "go-away last id");
                    goaway = true;
                }
                Frame::Ping { .. } | Frame::Pong { .. } | Frame::Close { .. } => {}
                other => panic!("client sent {other:?}"),
            }
        }
        // A close that is not graceful drops requests not yet begun: a prefix went out.
        if keeps_unsent(reason, Receiver::Client) {
            assert!(
                calls.next().is_none(),
                "an accepted call's request never went out"
            );
        }
        // Where the transmit queue was cut: after a close nothing is queued but the close
        // frame, so everything transmitted before that frame was committed. A lost call was
        // sent exactly when its request ends at or before the cut.
        let close_len = match (frames.last(), bodies.last()) {
            (Some(Frame::Close { .. }), Some(body)) => body.len() + LEN_PREFIX,
            _ => 0,
        };
        let committed = self.link.tx.len() - close_len;
        for call in &self.calls {
            if let Some(Outcome::Lost(_, sent)) = self.outcomes.get(&call.id) {
                assert_eq!(
                    *sent,
                    committed >= call.tx_end,
                    "call {}: ConnectionLost says sent: {sent}",
                    call.id
                );
            }
        }
    }
}

/// Writes `client_connection` scripts.
#[derive(Debug, Clone)]
pub struct ClientScript(Script);

impl ClientScript {
    /// A script with this set-up.
    pub fn new(setup: Setup) -> Self {
        let mut s = Script::new();
        setup.write(&mut s);
        Self(s)
    }

    /// The server sends a frame.
    pub fn frame(&mut self, frame: &Frame<'_>) -> &mut Self {
        self.0.u8(client_op::FRAME).frame(frame);
        self
    }

    /// The server sends raw bytes (in pieces of up to 255).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        for piece in bytes.chunks(255) {
            self.0.u8(client_op::RAW).blob(piece);
        }
        self
    }

    /// Time passes.
    pub fn advance(&mut self, a: Advance) -> &mut Self {
        self.0.u8(client_op::ADVANCE).u8(a.byte());
        self
    }

    /// `call(method, body, timeout of (t - 1) * 20 ms, none for 0)`.
    pub fn call(&mut self, method: &str, body: &[u8], t: u8) -> &mut Self {
        self.0
            .u8(client_op::CALL)
            .blob(method.as_bytes())
            .body(body)
            .u8(t);
        self
    }

    /// `cancel(id)`.
    pub fn cancel(&mut self, id: u64) -> &mut Self {
        self.0.u8(client_op::CANCEL).u8(1).int(id);
        self
    }

    /// `advance_transmit(n)`.
    pub fn transmit(&mut self, n: u16) -> &mut Self {
        self.0.u8(client_op::TRANSMIT).u16(n);
        self
    }

    /// `advance_transmit` of everything.
    pub fn transmit_all(&mut self) -> &mut Self {
        self.0.u8(client_op::TRANSMIT_ALL);
        self
    }

    /// Graceful `close`.
    pub fn close(&mut self) -> &mut Self {
        self.0.u8(client_op::CLOSE);
        self
    }

    /// End of stream.
    pub fn eof(&mut self) -> &mut Self {
        self.0.u8(client_op::EOF);
        self
    }

    /// `abort`.
    pub fn abort(&mut self) -> &mut Self {
        self.0.u8(client_op::ABORT);
        self
    }

    /// `shrink_buffers(keep)`.
    pub fn shrink(&mut self, keep: u16) -> &mut Self {
        self.0.u8(client_op::SHRINK).u16(keep);
        self
    }

    /// The server answers every call so far with `Ok(id)`.
    pub fn answer_all(&mut self) -> &mut Self {
        self.0.u8(client_op::ANSWER_ALL);
        self
    }

    /// The script's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.bytes.clone()
    }
}

/// A `stream_decoder` script: storage, limit, starting size ([`initial_len`]), raw pieces,
/// chunking.
pub fn stream_script(
    capacity: u16,
    max: u16,
    initial: u8,
    pieces: &[&[u8]],
    chunks: &[u8],
) -> Vec<u8> {
    let mut s = Script::new();
    let count = u8::try_from(pieces.len()).unwrap_or(u8::MAX).min(15);
    s.u16(capacity.saturating_sub(4))
        .u16(max)
        .u8(initial)
        .u8(count);
    for piece in pieces.iter().take(usize::from(count)) {
        s.u8(1).blob(piece);
    }
    s.raw(chunks);
    s.bytes
}
