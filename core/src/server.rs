//! The server side of a stream connection.
//!
//! A [`ServerConnection`] takes requests off one connection and hands them to the
//! application as [`ServerEvent::Request`]; the application answers each exactly once with
//! [`respond`](ServerConnection::respond), in any order and at any later time. The request
//! table is caller storage (`S`, a slice of [`RequestSlot`]), so its size is set at run time
//! without a heap. When the table is full the connection answers new requests with a busy
//! reply itself, and it never runs out of memory: a peer that sends faster than the
//! application answers is slowed by the transmit buffer filling up, at which point the
//! connection stops taking frames out of its receive buffer until `advance_transmit` makes
//! room, so the caller stops reading the socket (backpressure).
//!
//! ```
//! use wirecall_core::server::{RequestSlot, ServerConnection, ServerEvent};
//! use wirecall_core::wire::Reply;
//! use wirecall_core::{Config, Instant};
//!
//! let now = Instant::ZERO;
//! let mut server = ServerConnection::new(
//!     Config::default(), [0u8; 2048], [0u8; 2048], [RequestSlot::EMPTY; 8], now,
//! )?;
//! // Feed received bytes with `server.handle_input(now, &bytes)`, then:
//! while let Some(event) = server.poll_event(now) {
//!     if let ServerEvent::Request(req) = event {
//!         let id = req.id;
//!         // ... run req.target on req.body ...
//!         server.respond(id, Reply::Ok(b"done"))?;
//!     }
//! }
//! // `server.transmit()` now starts with our hello; send it and `advance_transmit`.
//! assert!(!server.transmit().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use core::ops::Range;

use crate::buffer::Buffer;
use crate::config::{BASELINE_SLOTS, Config, ConfigError};
use crate::conn::{
    Conn, Incoming, PushError, checked_storage, earliest, find_slot, read_frame, too_large_stand_in,
};
use crate::frame::FrameDecoder;
use crate::table::{self, Table};
use crate::time::{Duration, Instant};
use crate::wire::{EndpointKey, Frame, RejectCode, Reply, RequestId, Response, Target};

pub use crate::conn::{CloseReason, PeerInfo, ProtocolError};

/// One entry of a server's request table: storage the caller provides, e.g.
/// `[RequestSlot::EMPTY; 64]`, `vec![RequestSlot::EMPTY; n]`, or a
/// `table::GrowTable` that holds slots only while requests need them (feature `alloc`).
/// Opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSlot {
    /// The request id; 0 marks a free slot (ids start at 1).
    id: u64,
    /// The deadline in microseconds, `u64::MAX` for none: 24 bytes a slot instead of 32,
    /// which matters at 64 slots for each of thousands of idle connections.
    deadline: u64,
    expired: bool,
}

impl RequestSlot {
    /// A free slot.
    pub const EMPTY: Self = Self {
        id: 0,
        deadline: u64::MAX,
        expired: false,
    };

    fn deadline(&self) -> Option<Instant> {
        (self.deadline != u64::MAX).then_some(Instant::from_micros(self.deadline))
    }
}

impl table::Keyed for RequestSlot {
    const FREE: Self = Self::EMPTY;
    fn key(&self) -> u64 {
        self.id
    }
}

impl Default for RequestSlot {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// A request the application should answer with [`ServerConnection::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct IncomingRequest<'a> {
    /// Pass this to `respond`.
    pub id: RequestId,
    /// The function or typed endpoint to run (a typed endpoint only when the handshake
    /// agreed on version 2 or later).
    pub target: Target<'a>,
    /// Its argument, borrowed from the receive buffer.
    pub body: &'a [u8],
    /// When the client stops waiting, measured from when the connection took the request
    /// (the `poll_event` that returned it, at or after its arrival), so it errs late; a
    /// function that starts after this should be skipped (its answer would be ignored).
    pub deadline: Option<Instant>,
}

/// Something the application must know about, from [`ServerConnection::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ServerEvent<'a> {
    /// The client's hello arrived; the handshake is done.
    Connected(PeerInfo),
    /// A call to answer.
    Request(IncomingRequest<'a>),
    /// The client cancelled this request: stop work on it if you can; its slot is free and
    /// `respond` for it now returns [`RespondError::UnknownRequest`].
    Cancelled {
        /// The cancelled request.
        id: RequestId,
    },
    /// The request's deadline passed before it was answered: the client has stopped
    /// waiting. Its slot is free, as for `Cancelled`.
    Expired {
        /// The expired request.
        id: RequestId,
    },
    /// The connection is over: send what [`transmit`](ServerConnection::transmit) still
    /// holds (it may carry a close frame), then close the transport. Always the last event.
    Closed(CloseReason),
}

/// Why [`ServerConnection::respond`] did not queue an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RespondError {
    /// No request with that id is waiting: it was answered, cancelled or expired already.
    UnknownRequest,
    /// The transmit buffer is full: send what `transmit` returns, then try again.
    WouldBlock,
    /// Not even the stand-in for a too-large answer fits: cannot happen with the storage
    /// the constructor accepts (the request is still waiting).
    TooLarge,
    /// The connection is closed.
    Closed,
    /// [`respond_with`](ServerConnection::respond_with) only: the request is not the last
    /// one taken, or its bytes have moved since; it still waits for an answer.
    NotInBuffer,
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownRequest => "no such request is waiting for an answer",
            Self::WouldBlock => "transmit buffer full",
            Self::TooLarge => "not even an error fits the transmit buffer",
            Self::Closed => "connection closed",
            Self::NotInBuffer => "the request is no longer in the receive buffer",
        })
    }
}

impl core::error::Error for RespondError {}

/// Counters of one server connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct ServerStats {
    /// Requests handed to the application.
    pub requests: u64,
    /// Answers queued by `respond`.
    pub responses: u64,
    /// Requests answered busy because the table was full.
    pub busy: u64,
    /// Requests rejected because their budget was already zero.
    pub expired_on_arrival: u64,
    /// Requests cancelled by the client while waiting.
    pub cancelled: u64,
    /// Requests whose deadline passed while waiting.
    pub expired: u64,
    /// Requests dropped because they came after our go-away.
    pub after_goaway: u64,
    /// Answers too large for the client, sent as
    /// [`ERROR_ANSWER_TOO_LARGE`](crate::wire::ERROR_ANSWER_TOO_LARGE) instead.
    pub answers_too_large: u64,
}

/// The message sent with [`ERROR_ANSWER_TOO_LARGE`](crate::wire::ERROR_ANSWER_TOO_LARGE) on
/// a stream.
const TOO_LARGE_MESSAGE: &str = "answer larger than the client accepts";

/// A request's target with its method name as a receive-buffer range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetAt {
    Method(Range<usize>),
    Endpoint(EndpointKey),
}

impl TargetAt {
    fn get<'a, B: Buffer>(&self, rx: &'a FrameDecoder<B>) -> Target<'a> {
        match self {
            Self::Method(range) => Target::Method(rx.get_str(range.clone())),
            Self::Endpoint(key) => Target::Endpoint(*key),
        }
    }
}

/// Queues our go-away on `conn`: [`Drain::Sent`], or [`Drain::Owed`] again when the transmit
/// buffer has no room now.
fn queue_goaway<B: Buffer>(conn: &mut Conn<B>, last_id: u64) -> Drain {
    let frame = Frame::GoAway {
        last_id: RequestId(last_id),
    };
    if conn.tx.push(&frame, u32::MAX).is_ok() {
        debug!("go-away sent, last id {}", last_id);
        Drain::Sent { last_id }
    } else {
        Drain::Owed { last_id }
    }
}

/// Graceful close progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    None,
    /// Close requested; the go-away with this `last_id` waits for room in the transmit
    /// buffer. Requests above `last_id` are already dropped.
    Owed {
        last_id: u64,
    },
    /// Go-away queued; requests above `last_id` are dropped.
    Sent {
        last_id: u64,
    },
}

/// The server side of one stream connection. See the [module docs](self).
///
/// `B` is the storage of the receive and transmit buffers (`[u8; N]`, `Box<[u8]>`,
/// `Vec<u8>`, ...); `S` is the request table (`[RequestSlot; N]`, `Vec<RequestSlot>`, any
/// [`Table`], ...).
#[derive(Debug)]
pub struct ServerConnection<B, S> {
    rx: FrameDecoder<B>,
    conn: Conn<B>,
    slots: S,
    limit: usize,
    in_flight: usize,
    /// Slots marked expired and not yet reported.
    expired_pending: usize,
    /// No request in flight has a deadline before this (`None`: none has one). A lower
    /// bound, lowered by each request and raised by the scan `handle_timeout` makes when
    /// it is reached, so neither timer method scans the request table on every turn.
    deadlines_from: Option<Instant>,
    last_id: u64,
    drain: Drain,
    peer_goaway: bool,
    /// Where the last request handed out sits in the receive buffer, for `respond_with`.
    taken: Option<Taken>,
    stats: ServerStats,
}

/// The last request handed out: its parts as receive-buffer ranges, valid while the
/// buffer's bytes have not moved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Taken {
    id: RequestId,
    target: TargetAt,
    body: Range<usize>,
    deadline: Option<Instant>,
    moves: u32,
}

impl<B, S> ServerConnection<B, S>
where
    B: Buffer,
    S: Table<RequestSlot>,
{
    crate::stream::shared_stream_verbs!();

    /// A server connection that has just been accepted; our hello is queued at once.
    ///
    /// `rx` must hold a frame of `config.max_frame_len` plus 4 bytes, or the announced
    /// limit is lowered to fit; `tx` must hold at least a 1028-byte frame; `slots` sets the
    /// table size (the smaller of it and `config.max_in_flight` is announced).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a buffer or the table is under the protocol's baseline.
    pub fn new(config: Config, rx: B, tx: B, slots: S, now: Instant) -> Result<Self, ConfigError> {
        let mut config = config;
        let (rx, limit) = checked_storage(&mut config, rx, &tx, slots.max_len(), BASELINE_SLOTS)?;
        let mut slots = slots;
        slots.entries_mut().fill(RequestSlot::EMPTY);
        let announced = u32::try_from(limit).unwrap_or(u32::MAX);
        Ok(Self {
            rx,
            conn: Conn::new(tx, config, announced, now),
            slots,
            limit,
            in_flight: 0,
            expired_pending: 0,
            deadlines_from: None,
            last_id: 0,
            drain: Drain::None,
            peer_goaway: false,
            taken: None,
            stats: ServerStats::default(),
        })
    }

    /// Fires timers that are due: handshake, keepalive, drain and request deadlines.
    /// Call it when [`poll_timeout`](Self::poll_timeout) has passed (calling it early is
    /// harmless), then poll events.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        if !self.conn.is_open() || self.deadlines_from.is_none_or(|d| now < d) {
            return;
        }
        let mut next = None;
        for slot in self.slots.entries_mut() {
            if slot.id == 0 || slot.expired {
                continue;
            }
            if slot.deadline().is_some_and(|d| d <= now) {
                slot.expired = true;
                self.expired_pending = self.expired_pending.saturating_add(1);
            } else {
                next = earliest(next, slot.deadline());
            }
        }
        self.deadlines_from = next;
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work; `None`: no timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.conn.poll_timeout();
        if self.conn.is_open() {
            // May be early (the request it came from has ended): `handle_timeout` then
            // finds nothing due and moves it on.
            earliest(next, self.deadlines_from)
        } else {
            next
        }
    }

    /// The next event, or `None` when there is nothing to do until more input, a timeout
    /// or an answer. Call it after every other call, until it returns `None`.
    #[must_use = "events must be acted on: every request needs an answer"]
    pub fn poll_event(&mut self, now: Instant) -> Option<ServerEvent<'_>> {
        let closed = |reason| Some(ServerEvent::Closed(reason));
        if let Some(reason) = self.conn.take_closed() {
            return closed(reason);
        }
        if !self.conn.is_open() {
            return None;
        }
        self.handle_timeout(now);
        if self.expired_pending > 0 {
            if let Some(id) = self.take_expired() {
                return Some(ServerEvent::Expired { id });
            }
        }
        // One shared borrow of the receive buffer for the whole loop (taking a frame out is a
        // `Cell`), so a request handed out borrows its method name and body straight from
        // the decoded frame: its method is checked as UTF-8 once, by the decoder.
        let rx = &self.rx;
        loop {
            if let Drain::Owed { last_id } = self.drain {
                self.drain = queue_goaway(&mut self.conn, last_id);
            }
            // Frames already received are handled first: a request after the client's
            // go-away is still found (and is a violation), a ping still answered.
            if self.in_flight == 0 && self.drained() && rx.buffered_frames().next().is_none() {
                self.conn.close(CloseReason::Graceful);
                return self.conn.take_closed().and_then(closed);
            }
            let taken = match read_frame(rx, &mut self.conn) {
                Incoming::Frame(taken) => taken,
                Incoming::Connected(info) => return Some(ServerEvent::Connected(info)),
                Incoming::Idle => return None,
                Incoming::Ended if self.in_flight == 0 => {
                    // Answers still queued go out: the client may still be reading.
                    self.conn.end_keeping_unsent(CloseReason::TransportClosed);
                    return self.conn.take_closed().and_then(closed);
                }
                Incoming::Ended => {
                    // The client sends nothing more, but may still read: answer what was
                    // taken (within the drain timeout), then close.
                    self.conn.draining_since.get_or_insert(now);
                    return None;
                }
                Incoming::Closed => return self.conn.take_closed().and_then(closed),
            };
            let version = self.conn.peer.map_or(0, |p| p.version);
            match (taken.frame.as_call(), taken.frame) {
                (Some(_), frame) if self.peer_goaway || frame.version() > version => {
                    // A client's go-away promised its last request; a typed request needs
                    // the version that defines it.
                    self.conn
                        .close(CloseReason::Protocol(ProtocolError::UnexpectedFrame));
                    return self.conn.take_closed().and_then(closed);
                }
                (Some(req), _) => {
                    if req.id.0 == 0 {
                        self.conn
                            .close(CloseReason::Protocol(ProtocolError::ZeroId));
                        return self.conn.take_closed().and_then(closed);
                    }
                    if req.id.0 <= self.last_id {
                        self.conn
                            .close(CloseReason::Protocol(ProtocolError::IdNotIncreasing));
                        return self.conn.take_closed().and_then(closed);
                    }
                    let after_goaway = match self.drain {
                        Drain::Owed { last_id } | Drain::Sent { last_id } => req.id.0 > last_id,
                        Drain::None => false,
                    };
                    if after_goaway {
                        self.stats.after_goaway = self.stats.after_goaway.saturating_add(1);
                        trace!("dropping request {} after go-away", req.id.0);
                    } else if self.in_flight >= self.limit {
                        push_busy(&mut self.conn, &mut self.stats, req.id)?;
                    } else if req.budget_ms == Some(0) {
                        let reply = Reply::Rejected {
                            code: RejectCode::DEADLINE_EXCEEDED,
                            message: "deadline passed before arrival",
                        };
                        if push_response(&mut self.conn, req.id, reply).is_err() {
                            return None;
                        }
                        self.stats.expired_on_arrival =
                            self.stats.expired_on_arrival.saturating_add(1);
                    } else if let Some(slot) =
                        table::claim(&mut self.slots, req.id.0, self.in_flight, self.limit)
                            .and_then(|i| self.slots.entries_mut().get_mut(i))
                    {
                        // `in_flight < limit <= max_len`: a free slot, once the table has
                        // grown as far as it needs.
                        let deadline = req
                            .budget_ms
                            .map(|ms| now.saturating_add(Duration::from_millis(u64::from(ms))));
                        *slot = RequestSlot {
                            id: req.id.0,
                            deadline: deadline.map_or(u64::MAX, Instant::as_micros),
                            expired: false,
                        };
                        self.in_flight = self.in_flight.saturating_add(1);
                        self.deadlines_from = earliest(self.deadlines_from, deadline);
                        self.last_id = req.id.0;
                        taken.consume();
                        self.stats.requests = self.stats.requests.saturating_add(1);
                        let target = match req.target {
                            Target::Method(method) => {
                                TargetAt::Method(taken.locate(method.as_bytes()))
                            }
                            Target::Endpoint(key) => TargetAt::Endpoint(key),
                        };
                        self.taken = Some(Taken {
                            id: req.id,
                            target,
                            body: taken.locate(req.body),
                            deadline,
                            moves: rx.moves(),
                        });
                        return Some(ServerEvent::Request(IncomingRequest {
                            id: req.id,
                            target: req.target,
                            body: req.body,
                            deadline,
                        }));
                    } else {
                        // A table that did not grow as far as it may (a `Table` of the
                        // caller's): busy, as at the limit, rather than a stalled request.
                        push_busy(&mut self.conn, &mut self.stats, req.id)?;
                    }
                    self.last_id = req.id.0;
                }
                (None, Frame::Cancel { id }) => {
                    let index =
                        find_slot(self.slots.entries(), id.0, |s| s.id == id.0 && id.0 != 0);
                    if let Some(slot) = index.and_then(|i| self.slots.entries_mut().get_mut(i)) {
                        if slot.expired {
                            self.expired_pending = self.expired_pending.saturating_sub(1);
                        }
                        *slot = RequestSlot::EMPTY;
                        self.in_flight = self.in_flight.saturating_sub(1);
                        if self.in_flight == 0 {
                            self.deadlines_from = None;
                        }
                        self.stats.cancelled = self.stats.cancelled.saturating_add(1);
                        taken.consume();
                        return Some(ServerEvent::Cancelled { id });
                    }
                }
                (None, Frame::GoAway { .. }) => {
                    debug!("client sent go-away");
                    self.peer_goaway = true;
                    self.conn.draining_since.get_or_insert(now);
                }
                _ => {
                    self.conn
                        .close(CloseReason::Protocol(ProtocolError::UnexpectedFrame));
                    return self.conn.take_closed().and_then(closed);
                }
            }
            taken.consume();
        }
    }

    /// Whether a graceful close may finish once nothing is in flight: the client said it
    /// sends no more, or our go-away is out and every request up to its `last_id` has been
    /// taken out of the buffer.
    fn drained(&self) -> bool {
        self.peer_goaway || matches!(self.drain, Drain::Sent { last_id } if self.last_id >= last_id)
    }

    fn take_expired(&mut self) -> Option<RequestId> {
        let slot = self
            .slots
            .entries_mut()
            .iter_mut()
            .find(|s| s.id != 0 && s.expired)?;
        let id = RequestId(slot.id);
        *slot = RequestSlot::EMPTY;
        self.expired_pending = self.expired_pending.saturating_sub(1);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.deadlines_from = None;
        }
        self.stats.expired = self.stats.expired.saturating_add(1);
        Some(id)
    }

    /// Answers request `id`. Every request gets exactly one answer (or is cancelled or
    /// expires); the answer goes out in the order answers are given.
    ///
    /// An answer larger than the client accepts is not sent: the call is answered with
    /// [`ERROR_ANSWER_TOO_LARGE`](crate::wire::ERROR_ANSWER_TOO_LARGE) instead (the function
    /// ran), and a rejection whose message does not fit loses its message; both are
    /// counted in [`ServerStats::answers_too_large`].
    ///
    /// # Errors
    ///
    /// [`RespondError`]; on `WouldBlock` the request is still waiting.
    pub fn respond(&mut self, id: RequestId, reply: Reply<'_>) -> Result<(), RespondError> {
        self.answering().respond(id, reply)
    }

    /// Answers request `id` with a reply made from the request itself, read in place from
    /// the receive buffer: no copy of its method or body is needed, and the reply may
    /// borrow them (an echo is `|req| Reply::Ok(req.body)`) or anything that outlives this
    /// call (an answer computed into a buffer of the caller's). Works for the request the
    /// last [`poll_event`](Self::poll_event) returned, until the next input; later, copy
    /// the request when it arrives and use [`respond`](Self::respond).
    ///
    /// ```
    /// # use wirecall_core::server::{RequestSlot, ServerConnection, ServerEvent};
    /// # use wirecall_core::wire::{Reply, Target};
    /// # use wirecall_core::{Config, Instant};
    /// # let now = Instant::ZERO;
    /// # let mut conn = ServerConnection::new(
    /// #     Config::default(), [0u8; 2048], [0u8; 2048], [RequestSlot::EMPTY; 8], now,
    /// # )?;
    /// let mut upper = Vec::new();
    /// while let Some(event) = conn.poll_event(now) {
    ///     let ServerEvent::Request(req) = event else { continue };
    ///     let id = req.id;
    ///     conn.respond_with(id, |req| match req.target {
    ///         Target::Method("echo") => Reply::Ok(req.body),
    ///         _ => {
    ///             upper.clear();
    ///             upper.extend(req.body.iter().map(u8::to_ascii_uppercase));
    ///             Reply::Ok(&upper)
    ///         }
    ///     })?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond), and [`RespondError::NotInBuffer`] when `id` is not
    /// the last request taken or its bytes have moved since (the request still waits).
    pub fn respond_with<'s, F>(&'s mut self, id: RequestId, f: F) -> Result<(), RespondError>
    where
        F: FnOnce(IncomingRequest<'s>) -> Reply<'s>,
    {
        let moves = self.rx.moves();
        let taken = self
            .taken
            .clone()
            .filter(|t| t.id == id && t.moves == moves);
        let Some(taken) = taken else {
            return Err(if self.waiting(id) {
                RespondError::NotInBuffer
            } else {
                RespondError::UnknownRequest
            });
        };
        let Self {
            rx,
            conn,
            slots,
            in_flight,
            expired_pending,
            deadlines_from,
            stats,
            ..
        } = self;
        let rx: &'s FrameDecoder<B> = rx;
        let request = IncomingRequest {
            id,
            target: taken.target.get(rx),
            body: rx.get(taken.body),
            deadline: taken.deadline,
        };
        let answering = Answering {
            conn,
            slots,
            in_flight,
            expired_pending,
            deadlines_from,
            stats,
        };
        answering.respond(id, f(request))
    }

    /// Whether request `id` waits for its answer.
    fn waiting(&self, id: RequestId) -> bool {
        find_slot(self.slots.entries(), id.0, |s| s.id == id.0 && id.0 != 0).is_some()
    }

    fn answering(&mut self) -> Answering<'_, B, S> {
        Answering {
            conn: &mut self.conn,
            slots: &mut self.slots,
            in_flight: &mut self.in_flight,
            expired_pending: &mut self.expired_pending,
            deadlines_from: &mut self.deadlines_from,
            stats: &mut self.stats,
        }
    }

    /// Begins a graceful close, and queues the go-away at once (when the transmit buffer
    /// has room; else as soon as it has): every request whose whole frame has been received
    /// so far is still delivered and must be answered, and the go-away names the last of
    /// them, so the client knows that later requests were not run and will not be; those
    /// are dropped. Once every request taken is answered the connection reports
    /// [`CloseReason::Graceful`]. Gives up after the configured drain timeout.
    pub fn close(&mut self, now: Instant) {
        if self.conn.is_open() && self.drain == Drain::None {
            debug!("graceful close requested");
            // The highest id among the requests already received, taken or still buffered.
            let buffered = self
                .rx
                .buffered_frames()
                .filter_map(|body| Frame::decode(body).ok()?.as_call().map(|c| c.id.0));
            let last_id = buffered.fold(self.last_id, u64::max);
            self.drain = queue_goaway(&mut self.conn, last_id);
            self.conn.draining_since.get_or_insert(now);
        }
    }

    /// Refuses a connection just accepted (the server is at its connection limit, or
    /// shutting down): sends our hello and a close with [`CloseCode::REFUSED`], which
    /// tells the client that nothing it sent here ran. Then flush `transmit` and close.
    ///
    /// [`CloseCode::REFUSED`]: crate::wire::CloseCode::REFUSED
    pub fn refuse(&mut self) {
        self.conn.close(CloseReason::Refused);
    }

    /// Refuses a connection from a peer the server does not take (its credentials or its
    /// identity, once known, are not on the allowlist): sends our hello, if not sent yet,
    /// and a close with [`CloseCode::NOT_ALLOWED`], which tells the client that nothing it
    /// sent here ran. Call it before any request is taken.
    ///
    /// [`CloseCode::NOT_ALLOWED`]: crate::wire::CloseCode::NOT_ALLOWED
    pub fn deny(&mut self) {
        self.conn.close(CloseReason::NotAllowed);
    }

    /// Requests taken and not yet answered, cancelled or expired.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// This connection's counters.
    #[must_use]
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }
}

/// Bytes [`encode_refusal`] needs at most: our hello and a `Close(REFUSED)` frame.
pub const REFUSAL_LEN: usize = 64;

/// Writes into `out` what refuses a connection just accepted, with no connection state
/// to keep: our hello (announcing `config`'s limits) and a close with
/// [`CloseCode::REFUSED`](crate::wire::CloseCode::REFUSED), the bytes
/// [`ServerConnection::refuse`] would send. Returns how many bytes it wrote. A server at its
/// connection limit sends them and closes (see PROTOCOL.md section 8 for how to close so
/// that they arrive).
///
/// # Errors
///
/// [`ConfigError::TransmitBufferTooSmall`] when `out` is shorter than [`REFUSAL_LEN`].
pub fn encode_refusal(config: &Config, out: &mut [u8]) -> Result<usize, ConfigError> {
    encode_closing_hello(config, CloseReason::Refused, out)
}

/// Writes into `out` what refuses a connection from a peer the server does not take (its
/// credentials or identity are not on the allowlist): our hello and a close with
/// [`CloseCode::NOT_ALLOWED`](crate::wire::CloseCode::NOT_ALLOWED), which tells the client
/// that nothing it sent ran. Otherwise as [`encode_refusal`].
///
/// # Errors
///
/// [`ConfigError::TransmitBufferTooSmall`] when `out` is shorter than [`REFUSAL_LEN`].
pub fn encode_not_allowed(config: &Config, out: &mut [u8]) -> Result<usize, ConfigError> {
    encode_closing_hello(config, CloseReason::NotAllowed, out)
}

fn encode_closing_hello(
    config: &Config,
    reason: CloseReason,
    out: &mut [u8],
) -> Result<usize, ConfigError> {
    if out.len() < REFUSAL_LEN {
        return Err(ConfigError::TransmitBufferTooSmall {
            need: REFUSAL_LEN,
            have: out.len(),
        });
    }
    let announced = config
        .max_in_flight
        .max(crate::wire::BASELINE_MAX_IN_FLIGHT);
    let mut conn = Conn::new(out, *config, announced, Instant::ZERO);
    conn.close(reason);
    Ok(conn.tx.pending().len())
}

/// The parts of a server connection that answering a request changes: all but the
/// receive buffer, so a reply may borrow a request that is still in it.
struct Answering<'a, B, S> {
    conn: &'a mut Conn<B>,
    slots: &'a mut S,
    in_flight: &'a mut usize,
    expired_pending: &'a mut usize,
    deadlines_from: &'a mut Option<Instant>,
    stats: &'a mut ServerStats,
}

impl<B, S> Answering<'_, B, S>
where
    B: Buffer,
    S: Table<RequestSlot>,
{
    /// See [`ServerConnection::respond`].
    fn respond(self, id: RequestId, reply: Reply<'_>) -> Result<(), RespondError> {
        if !self.conn.is_open() {
            return Err(RespondError::Closed);
        }
        let index = find_slot(self.slots.entries(), id.0, |s| s.id == id.0 && id.0 != 0)
            .ok_or(RespondError::UnknownRequest)?;
        let mut reply = reply;
        let mut replaced = false;
        loop {
            match push_response(self.conn, id, reply) {
                Ok(()) => break,
                Err(PushError::Full) => return Err(RespondError::WouldBlock),
                Err(PushError::TooLarge) => {
                    reply = too_large_stand_in(&reply, TOO_LARGE_MESSAGE)
                        .ok_or(RespondError::TooLarge)?;
                    replaced = true;
                }
            }
        }
        if replaced {
            warn!("answer to {} is larger than the client accepts", id.0);
            self.stats.answers_too_large = self.stats.answers_too_large.saturating_add(1);
        }
        if let Some(slot) = self.slots.entries_mut().get_mut(index) {
            if slot.expired {
                *self.expired_pending = self.expired_pending.saturating_sub(1);
            }
            *slot = RequestSlot::EMPTY;
        }
        *self.in_flight = self.in_flight.saturating_sub(1);
        if *self.in_flight == 0 {
            *self.deadlines_from = None;
        }
        self.stats.responses = self.stats.responses.saturating_add(1);
        Ok(())
    }
}

/// Queues a busy answer to request `id`; `None` when the transmit buffer has no room (the
/// request is read again after the next transmit).
fn push_busy<B: Buffer>(conn: &mut Conn<B>, stats: &mut ServerStats, id: RequestId) -> Option<()> {
    let retry_after_ms = crate::conn::budget_ms(conn.config.busy_retry_after);
    push_response(conn, id, Reply::Busy { retry_after_ms }).ok()?;
    stats.busy = stats.busy.saturating_add(1);
    Some(())
}

/// Queues an answer within the client's frame limit.
fn push_response<B: Buffer>(
    conn: &mut Conn<B>,
    id: RequestId,
    reply: Reply<'_>,
) -> Result<(), PushError> {
    let limit = conn.send_limit();
    conn.tx
        .push(&Frame::Response(Response { id, reply }), limit)
}

crate::stream::impl_stream_connection!(ServerConnection, RequestSlot, ServerEvent);
