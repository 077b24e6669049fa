//! The client side of a stream connection.
//!
//! A [`ClientConnection`] sends calls with [`call`](ClientConnection::call) (many may be in
//! flight; answers come in any order) and reports how each ended through
//! [`poll_event`](ClientConnection::poll_event): every call that `call` accepted ends in
//! exactly one [`ClientEvent::Response`] or [`ClientEvent::Failed`]. A failure says, through
//! [`Failure::execution`], whether the server may have run the function, which is what a
//! caller needs to retry safely.
//!
//! Calls may be made right after construction: up to
//! [`BASELINE_MAX_IN_FLIGHT`] requests of up to
//! [`BASELINE_MAX_FRAME_LEN`](crate::wire::BASELINE_MAX_FRAME_LEN) bytes go out behind our
//! hello without waiting for the server's; the server's hello then sets the real limits.

use core::fmt;
use core::ops::Range;

use crate::buffer::Buffer;
use crate::config::{Config, ConfigError};
use crate::conn::{
    Conn, Incoming, PushError, budget_ms, checked_storage, earliest, find_slot, read_frame,
};
use crate::frame::FrameDecoder;
use crate::table::{self, Table};
use crate::time::{Duration, Instant};
use crate::wire::{
    BASELINE_MAX_IN_FLIGHT, CloseCode, Frame, RejectCode, Reply, RequestId, TYPED_VERSION, Target,
};

pub use crate::conn::{CloseReason, PeerInfo, ProtocolError};

/// Whether the server may have run a call's function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Execution {
    /// It certainly did not: safe to retry anywhere.
    NotExecuted,
    /// It may have: retry only if the call is idempotent.
    MaybeExecuted,
    /// It did (and failed).
    Executed,
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotExecuted => "not executed",
            Self::MaybeExecuted => "maybe executed",
            Self::Executed => "executed",
        })
    }
}

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Failure<'a> {
    /// The function ran and returned an error.
    Remote {
        /// The application's error number.
        code: u32,
        /// Its explanation.
        message: &'a str,
    },
    /// The server refused the call before running it.
    Rejected {
        /// Why.
        code: RejectCode,
        /// Its explanation.
        message: &'a str,
    },
    /// The server was too busy to take the call; it did not run it.
    Busy {
        /// Wait this long before retrying.
        retry_after: Duration,
    },
    /// The deadline passed without an answer.
    TimedOut {
        /// Whether any copy of the request was (or, on a stream, will still be) handed to
        /// the transport. On a stream this is always `true`: a queued request still goes
        /// out unless the connection is then closed abruptly, so `true` errs on the safe
        /// side. A datagram call that never left the client says `false`.
        sent: bool,
    },
    /// The caller cancelled the call.
    Cancelled {
        /// Whether any copy of the request was (or, on a stream, will still be) handed to
        /// the transport; as for [`Failure::TimedOut`].
        sent: bool,
    },
    /// The server's go-away came before it took this call: it was not and will not be run.
    Refused,
    /// Datagrams only: nothing listens at the server's address (the transport refused
    /// every copy of the request, as a kernel does on a connected socket after an ICMP
    /// "port unreachable", or when a Unix datagram socket's path has no socket): it was
    /// not run.
    Unreachable,
    /// The connection ended before an answer came.
    ConnectionLost {
        /// Why the connection ended.
        reason: CloseReason,
        /// Whether the whole request had been handed to the transport.
        sent: bool,
    },
}

impl Failure<'_> {
    /// Whether the server may have run the function.
    #[must_use]
    pub fn execution(&self) -> Execution {
        match self {
            Self::Remote { .. } => Execution::Executed,
            Self::Rejected { .. } | Self::Busy { .. } | Self::Refused | Self::Unreachable => {
                Execution::NotExecuted
            }
            Self::TimedOut { sent: false } | Self::Cancelled { sent: false } => {
                Execution::NotExecuted
            }
            // A request that timed out or was cancelled is still sent if it was queued.
            Self::TimedOut { sent: true } | Self::Cancelled { sent: true } => {
                Execution::MaybeExecuted
            }
            // A server that refused the connection ran nothing sent on it; a peer whose
            // first frame was not a wirecall hello is no wirecall server, and one with no
            // version in common runs nothing (PROTOCOL.md section 5).
            Self::ConnectionLost {
                reason:
                    CloseReason::PeerClosed(CloseCode::REFUSED | CloseCode::NOT_ALLOWED)
                    | CloseReason::NotWirecall
                    | CloseReason::VersionMismatch { .. },
                ..
            }
            | Self::ConnectionLost { sent: false, .. } => Execution::NotExecuted,
            Self::ConnectionLost { sent: true, .. } => Execution::MaybeExecuted,
        }
    }
}

impl core::error::Error for Failure<'_> {}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote { code, message } => write!(f, "remote error {code}: {message}"),
            Self::Rejected { code, message } => write!(f, "rejected, {code}: {message}"),
            Self::Busy { retry_after } => write!(f, "server busy, retry after {retry_after}"),
            Self::TimedOut { .. } => f.write_str("timed out"),
            Self::Cancelled { .. } => f.write_str("cancelled"),
            Self::Refused => f.write_str("refused: server is closing"),
            Self::Unreachable => f.write_str("connection refused: nothing listens there"),
            Self::ConnectionLost { reason, .. } => write!(f, "connection lost: {reason}"),
        }
    }
}

/// Why [`ClientConnection::call`] did not send a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed.
    Closed,
    /// A graceful close is under way (ours or the server's go-away); no new calls.
    Closing,
    /// As many calls are in flight as the server (or our table) allows; wait for one.
    TooManyInFlight,
    /// The request is larger than the server accepts or our transmit buffer holds (on a
    /// datagram client: than one datagram).
    TooLarge {
        /// The request's encoded size in bytes: its frame body on a stream (what a frame
        /// limit counts), the whole datagram in datagram mode.
        len: usize,
        /// The most that may be sent, counted the same way.
        limit: usize,
    },
    /// Not now: the transmit buffer is full, or the request is above the baseline size (or
    /// typed) and the server's hello has not arrived yet. Send, poll events, and try again.
    WouldBlock,
    /// A typed call to a server whose handshake agreed on an older protocol version, which
    /// has no typed requests.
    Unsupported {
        /// The version in use on the connection.
        version: u8,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "connection closed",
            Self::Closing => "connection is closing",
            Self::TooManyInFlight => "too many calls in flight",
            Self::TooLarge { len, limit } => {
                return write!(
                    f,
                    "request of {len} bytes encoded is larger than the {limit} bytes allowed"
                );
            }
            Self::WouldBlock => "cannot send now, try again after transmitting",
            Self::Unsupported { version } => {
                return write!(
                    f,
                    "the server speaks protocol version {version}, which has no typed endpoints"
                );
            }
        })
    }
}

impl core::error::Error for SendError {}

/// Something the caller must know, from [`ClientConnection::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientEvent<'a> {
    /// The server's hello arrived; the limits in it now apply.
    Connected(PeerInfo),
    /// A call succeeded; `body` borrows the receive buffer.
    Response {
        /// The call.
        id: RequestId,
        /// The function's answer.
        body: &'a [u8],
    },
    /// A call failed.
    Failed {
        /// The call.
        id: RequestId,
        /// How, and whether it may have run.
        failure: Failure<'a>,
    },
    /// The connection is over: send what [`transmit`](ClientConnection::transmit) still
    /// holds, then close the transport. Every call has had its outcome before this, and
    /// this is the last event.
    Closed(CloseReason),
}

/// Counters of one client connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls sent.
    pub calls: u64,
    /// Calls answered with success.
    pub responses: u64,
    /// Calls that failed, for any reason.
    pub failures: u64,
    /// Calls whose deadline passed.
    pub timeouts: u64,
    /// Answers that came for no waiting call (after a timeout or cancel), ignored.
    pub late_responses: u64,
}

/// An event found by `next_event`, with borrowed parts as receive-buffer ranges.
enum Pending {
    Event(ClientEvent<'static>),
    Response {
        id: RequestId,
        body: Range<usize>,
    },
    Remote {
        id: RequestId,
        code: u32,
        message: Range<usize>,
    },
    Rejected {
        id: RequestId,
        code: RejectCode,
        message: Range<usize>,
    },
}

/// A local end of a call, recorded in its slot until reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    TimedOut,
    Cancelled,
    Refused,
    Lost(CloseReason),
}

/// One entry of a client's call table: storage the caller provides, e.g.
/// `[CallSlot::EMPTY; 64]` or `vec![CallSlot::EMPTY; n]`. Opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSlot {
    /// The call id; 0 marks a free slot.
    id: u64,
    deadline: Option<Instant>,
    /// Stream offset just past the request's last byte: sent once `tx.sent() >= tx_end`.
    tx_end: u64,
    ended: Option<Ended>,
}

impl CallSlot {
    /// A free slot.
    pub const EMPTY: Self = Self {
        id: 0,
        deadline: None,
        tx_end: 0,
        ended: None,
    };
}

impl table::Keyed for CallSlot {
    const FREE: Self = Self::EMPTY;
    fn key(&self) -> u64 {
        self.id
    }
}

impl Default for CallSlot {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The client side of one stream connection. See the [module docs](self).
///
/// `B` is the storage of the receive and transmit buffers; `S` the call table (any
/// [`Table`] of [`CallSlot`]s).
#[derive(Debug)]
pub struct ClientConnection<B, S> {
    rx: FrameDecoder<B>,
    conn: Conn<B>,
    slots: S,
    in_flight: usize,
    /// Slots whose end is recorded and not yet reported.
    ended_pending: usize,
    /// No call still waiting has a deadline before this (`None`: none has one). A lower
    /// bound, lowered by each call and raised by the scan `handle_timeout` makes when it
    /// is reached, so neither timer method scans the call table on every turn.
    deadlines_from: Option<Instant>,
    next_id: u64,
    /// We asked for a graceful close; a go-away is owed (`false` once queued).
    goaway_owed: bool,
    local_close: bool,
    /// The server's go-away: the last id it will answer.
    server_last_id: Option<u64>,
    stats: ClientStats,
}

impl<B, S> ClientConnection<B, S>
where
    B: Buffer,
    S: Table<CallSlot>,
{
    crate::stream::shared_stream_verbs!();

    /// A client connection over a transport that has just connected; our hello is queued
    /// at once, and calls may follow straight away.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a buffer is under the baseline frame or the table is empty.
    pub fn new(config: Config, rx: B, tx: B, slots: S, now: Instant) -> Result<Self, ConfigError> {
        let mut config = config;
        let (rx, _) = checked_storage(&mut config, rx, &tx, slots.max_len(), 1)?;
        let mut slots = slots;
        slots.entries_mut().fill(CallSlot::EMPTY);
        Ok(Self {
            rx,
            conn: Conn::new(tx, config, 0, now),
            slots,
            in_flight: 0,
            ended_pending: 0,
            deadlines_from: None,
            next_id: 1,
            goaway_owed: false,
            local_close: false,
            server_last_id: None,
            stats: ClientStats::default(),
        })
    }

    /// Calls in flight allowed now: our table and config, and the server's announced
    /// number (the baseline until its hello arrives).
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        let server = self
            .conn
            .peer
            .map_or(BASELINE_MAX_IN_FLIGHT, |p| p.max_in_flight);
        let ours = self.conn.config.max_in_flight.min(server);
        self.slots
            .max_len()
            .min(usize::try_from(ours).unwrap_or(usize::MAX))
    }

    /// Sends a call of `target` (a method name, or a typed endpoint's key) with `body`.
    /// A typed call waits for the server's hello ([`SendError::WouldBlock`] until it has
    /// come), since only a server that agreed on version 2 knows typed requests. With a `timeout`, the call fails with
    /// [`Failure::TimedOut`] if no answer comes in time, and the server is told the budget
    /// so it can skip the work when it is late. Without one, only the connection's end
    /// (keepalive included) bounds the wait.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was sent and no event will follow for it.
    pub fn call<'t>(
        &mut self,
        now: Instant,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, SendError> {
        let target = target.into();
        if !self.conn.is_open() {
            return Err(SendError::Closed);
        }
        if self.local_close || self.server_last_id.is_some() {
            return Err(SendError::Closing);
        }
        if let Target::Endpoint(_) = target {
            match self.conn.peer {
                None => return Err(SendError::WouldBlock),
                Some(peer) if peer.version < TYPED_VERSION => {
                    return Err(SendError::Unsupported {
                        version: peer.version,
                    });
                }
                Some(_) => {}
            }
        }
        let limit = self.max_in_flight();
        if self.in_flight >= limit {
            return Err(SendError::TooManyInFlight);
        }
        let id = RequestId(self.next_id);
        // A slot first (its home slot when free), so a queued request always has one.
        let index = table::claim(&mut self.slots, id.0, self.in_flight, limit)
            .ok_or(SendError::TooManyInFlight)?;
        let request = Frame::request(id, target, timeout.map(budget_ms), body);
        match self.conn.tx.push(&request, self.conn.send_limit()) {
            Ok(()) => {}
            Err(PushError::Full) => return Err(SendError::WouldBlock),
            Err(PushError::TooLarge) => {
                let len = request.encoded_len();
                let ours = self.conn.tx.max_body();
                if self.conn.peer.is_none() && len <= ours {
                    // Over the baseline: the server's hello may allow it.
                    return Err(SendError::WouldBlock);
                }
                let limit = if self.conn.peer.is_none() {
                    ours
                } else {
                    ours.min(self.conn.send_limit() as usize)
                };
                return Err(SendError::TooLarge { len, limit });
            }
        }
        let tx_end = self.conn.tx.queued_end();
        let deadline = timeout.map(|t| now.saturating_add(t));
        self.deadlines_from = earliest(self.deadlines_from, deadline);
        if let Some(slot) = self.slots.entries_mut().get_mut(index) {
            *slot = CallSlot {
                id: id.0,
                deadline,
                tx_end,
                ended: None,
            };
        }
        self.in_flight = self.in_flight.saturating_add(1);
        self.next_id = self.next_id.saturating_add(1);
        self.stats.calls = self.stats.calls.saturating_add(1);
        trace!("call {} {} queued", id.0, target);
        Ok(id)
    }

    /// Cancels a call in flight: it ends with [`Failure::Cancelled`] at the next
    /// `poll_event`, and the server is told so it can stop work on it. Returns `false`
    /// when no such call is waiting.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        if !self.conn.is_open() {
            return false;
        }
        let index = find_slot(self.slots.entries(), id.0, |s| {
            s.id == id.0 && id.0 != 0 && s.ended.is_none()
        });
        let Some(slot) = index.and_then(|i| self.slots.entries_mut().get_mut(i)) else {
            return false;
        };
        slot.ended = Some(Ended::Cancelled);
        self.ended_pending = self.ended_pending.saturating_add(1);
        // Best effort: if the queue is full the server answers and we ignore it.
        let _ = self.conn.tx.push(&Frame::Cancel { id }, u32::MAX);
        true
    }

    /// Fires timers that are due: call deadlines, handshake, keepalive, drain.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        if !self.conn.is_open() || self.deadlines_from.is_none_or(|d| now < d) {
            return;
        }
        let mut next = None;
        for slot in self.slots.entries_mut() {
            if slot.id == 0 || slot.ended.is_some() {
                continue;
            }
            if slot.deadline.is_some_and(|d| d <= now) {
                slot.ended = Some(Ended::TimedOut);
                self.ended_pending = self.ended_pending.saturating_add(1);
                let _ = self.conn.tx.push(
                    &Frame::Cancel {
                        id: RequestId(slot.id),
                    },
                    u32::MAX,
                );
            } else {
                next = earliest(next, slot.deadline);
            }
        }
        self.deadlines_from = next;
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work; `None`: no timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.conn.poll_timeout();
        if self.conn.is_open() {
            // May be early (the call it came from has ended): `handle_timeout` then finds
            // nothing due and moves it on.
            earliest(next, self.deadlines_from)
        } else {
            next
        }
    }

    /// Begins a graceful close and queues the go-away at once (when the transmit buffer has
    /// room; else as soon as it has): no new calls; calls in flight still get their
    /// answers; then the connection reports [`CloseReason::Graceful`].
    pub fn close(&mut self, now: Instant) {
        if self.conn.is_open() && !self.local_close {
            self.local_close = true;
            self.queue_goaway();
            self.conn.draining_since.get_or_insert(now);
        }
    }

    /// The next event, or `None` when there is nothing to do until more input or a
    /// timeout. Call it after every other call, until it returns `None`.
    #[must_use = "events must be acted on: every call ends in one"]
    pub fn poll_event(&mut self, now: Instant) -> Option<ClientEvent<'_>> {
        Some(match self.next_event(now)? {
            Pending::Event(event) => event,
            Pending::Response { id, body } => ClientEvent::Response {
                id,
                body: self.rx.get(body),
            },
            Pending::Remote { id, code, message } => ClientEvent::Failed {
                id,
                failure: Failure::Remote {
                    code,
                    message: self.rx.get_str(message),
                },
            },
            Pending::Rejected { id, code, message } => ClientEvent::Failed {
                id,
                failure: Failure::Rejected {
                    code,
                    message: self.rx.get_str(message),
                },
            },
        })
    }

    /// [`poll_event`](Self::poll_event) with borrowed parts as ranges of the receive
    /// buffer, so the loop holds no borrow.
    fn next_event(&mut self, now: Instant) -> Option<Pending> {
        self.handle_timeout(now);
        loop {
            if let Some(reason) = self.conn.closing_reason() {
                self.end_all(Ended::Lost(reason));
            }
            if self.ended_pending > 0 {
                if let Some(event) = self.take_ended() {
                    return Some(Pending::Event(event));
                }
                self.ended_pending = 0;
            }
            if let Some(reason) = self.conn.take_closed() {
                return Some(Pending::Event(ClientEvent::Closed(reason)));
            }
            if !self.conn.is_open() {
                return None;
            }
            if self.goaway_owed {
                self.queue_goaway();
            }
            if self.in_flight == 0 && (self.local_close || self.server_last_id.is_some()) {
                self.conn.close(CloseReason::Graceful);
                continue;
            }
            let taken = match read_frame(&self.rx, &mut self.conn) {
                Incoming::Frame(taken) => taken,
                Incoming::Connected(info) => {
                    return Some(Pending::Event(ClientEvent::Connected(info)));
                }
                Incoming::Idle => return None,
                Incoming::Ended => {
                    // Nothing more will come: calls still waiting are lost.
                    self.conn.close(CloseReason::TransportClosed);
                    continue;
                }
                Incoming::Closed => continue,
            };
            match taken.frame {
                Frame::Response(response) => {
                    let id = response.id;
                    taken.consume();
                    let index = find_slot(self.slots.entries(), id.0, |s| {
                        s.id == id.0 && id.0 != 0 && s.ended.is_none()
                    });
                    let slot = index.and_then(|i| self.slots.entries_mut().get_mut(i));
                    let Some(slot) = slot else {
                        self.stats.late_responses = self.stats.late_responses.saturating_add(1);
                        trace!("late or unknown response {}", id.0);
                        continue;
                    };
                    *slot = CallSlot::EMPTY;
                    self.in_flight = self.in_flight.saturating_sub(1);
                    if self.in_flight == 0 {
                        self.deadlines_from = None;
                    }
                    let pending = match response.reply {
                        Reply::Ok(body) => {
                            self.stats.responses = self.stats.responses.saturating_add(1);
                            return Some(Pending::Response {
                                id,
                                body: taken.locate(body),
                            });
                        }
                        Reply::Error { code, message } => Pending::Remote {
                            id,
                            code,
                            message: taken.locate(message.as_bytes()),
                        },
                        Reply::Rejected { code, message } => Pending::Rejected {
                            id,
                            code,
                            message: taken.locate(message.as_bytes()),
                        },
                        Reply::Busy { retry_after_ms } => {
                            let retry_after = Duration::from_millis(u64::from(retry_after_ms));
                            Pending::Event(ClientEvent::Failed {
                                id,
                                failure: Failure::Busy { retry_after },
                            })
                        }
                    };
                    self.stats.failures = self.stats.failures.saturating_add(1);
                    return Some(pending);
                }
                Frame::GoAway { last_id } => {
                    debug!("server go-away, last id {}", last_id.0);
                    taken.consume();
                    let last = self.server_last_id.map_or(last_id.0, |l| l.min(last_id.0));
                    self.server_last_id = Some(last);
                    self.conn.draining_since.get_or_insert(now);
                    for slot in self.slots.entries_mut() {
                        if slot.id > last && slot.ended.is_none() {
                            slot.ended = Some(Ended::Refused);
                            self.ended_pending = self.ended_pending.saturating_add(1);
                        }
                    }
                }
                _ => {
                    self.conn
                        .close(CloseReason::Protocol(ProtocolError::UnexpectedFrame));
                }
            }
        }
    }

    /// Queues our go-away; owed again if the transmit buffer has no room now.
    fn queue_goaway(&mut self) {
        let last_id = RequestId(self.next_id.saturating_sub(1));
        self.goaway_owed = self
            .conn
            .tx
            .push(&Frame::GoAway { last_id }, u32::MAX)
            .is_err();
    }

    /// Records `ended` on every call still waiting.
    fn end_all(&mut self, ended: Ended) {
        for slot in self.slots.entries_mut() {
            if slot.id != 0 && slot.ended.is_none() {
                slot.ended = Some(ended);
                self.ended_pending = self.ended_pending.saturating_add(1);
            }
        }
    }

    /// Reports and frees one slot whose end was recorded.
    fn take_ended(&mut self) -> Option<ClientEvent<'static>> {
        // After an abrupt close only what was kept in the queue will still go out.
        let sent_upto = self.conn.committed.unwrap_or_else(|| self.conn.tx.sent());
        let slot = self
            .slots
            .entries_mut()
            .iter_mut()
            .find(|s| s.id != 0 && s.ended.is_some())?;
        let id = RequestId(slot.id);
        let failure = match slot.ended? {
            Ended::TimedOut => {
                self.stats.timeouts = self.stats.timeouts.saturating_add(1);
                Failure::TimedOut { sent: true }
            }
            Ended::Cancelled => Failure::Cancelled { sent: true },
            Ended::Refused => Failure::Refused,
            Ended::Lost(reason) => Failure::ConnectionLost {
                reason,
                sent: sent_upto >= slot.tx_end,
            },
        };
        *slot = CallSlot::EMPTY;
        self.ended_pending = self.ended_pending.saturating_sub(1);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.deadlines_from = None;
        }
        self.stats.failures = self.stats.failures.saturating_add(1);
        Some(ClientEvent::Failed { id, failure })
    }

    /// Whether a new call may be sent: the connection is open and neither side has begun a
    /// graceful close (the server's go-away, or [`close`](Self::close)). When this is
    /// `false`, [`call`](Self::call) fails with [`SendError::Closing`] or
    /// [`SendError::Closed`], and a driver that wants to go on calling opens a new
    /// connection (calls already in flight here still get their outcomes).
    #[must_use]
    pub fn accepts_calls(&self) -> bool {
        self.conn.is_open() && !self.local_close && self.server_last_id.is_none()
    }

    /// Calls in flight (sent and not yet reported as ended).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// This connection's counters.
    #[must_use]
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }
}

crate::stream::impl_stream_connection!(ClientConnection, CallSlot, ClientEvent);
