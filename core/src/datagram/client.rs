//! The datagram client: sends calls to one server and retransmits them until answered.

use core::ops::Range;

use super::{DatagramConfig, DatagramConfigError, chunk_len};
use crate::client::{Execution, Failure, SendError};
use crate::conn::{budget_ms, earliest};
use crate::time::{Duration, Instant};
use crate::wire::datagram::{
    ACK_SPAN, ACKS_FIELD, DatagramHeader, FLOOR_FIELD, decode_frame, encode_datagram,
};
use crate::wire::{Frame, RejectCode, Reply, RequestId, Target, WireError};

/// How a call ended without an answer, recorded until reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    TimedOut,
    /// The deadline passed and every copy sent had been answered busy: the hint of the
    /// last busy answer.
    Busy(u32),
    /// The transport said no socket is at the server's address for every datagram sent
    /// since the server was last heard from, this call's copies among them.
    Unreachable,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Active,
    /// Ended, not yet reported by `poll_event`.
    Ended(Ended),
    /// Reported, but a cancel datagram is still owed.
    Reported,
}

/// Busy answers with hint 0 (an answer held back) that a call answers with a copy at once,
/// at least; later ones wait for the usual backoff, so a server cannot make a client send
/// without pause. A call whose largest possible answer (`max_answer`) needs more copies of
/// its request to reach (each raises the server's allowance by about twice its size, net
/// of the busy answer) gets that many: so a held-back answer is always fetched promptly.
pub const PROMPT_COPIES: u32 = 32;

/// One entry of a datagram client's call table: storage the caller provides, e.g.
/// `[DatagramCallSlot::EMPTY; 64]`. Opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramCallSlot {
    id: u64,
    state: SlotState,
    /// Bytes of the encoded request in this slot's storage.
    len: usize,
    deadline: Instant,
    /// When to transmit next; `None` when no more attempts are left.
    next_send: Option<Instant>,
    attempts: u32,
    /// Busy answers received: each allows one transmission beyond `max_attempts`, since
    /// the copy it answered was not lost.
    busy_answers: u32,
    /// Busy answers with hint 0: the server holds the answer back (anti-amplification)
    /// until more copies come. Each allows one more transmission too, and the first
    /// [`PROMPT_COPIES`] are answered with a copy at once.
    held_answers: u32,
    /// The retry hint of the last busy answer, in ms.
    retry_after_ms: u32,
    /// [`DatagramClient::heard`] when the first copy went out: while it is still the same,
    /// every copy of this call was sent after the server was last heard from.
    heard_at_first: u32,
    /// The wait after the next transmission, before jitter.
    rto: Duration,
    /// A cancel datagram is encoded in the slot's storage and not yet sent.
    cancel_owed: bool,
}

impl DatagramCallSlot {
    /// A free slot.
    pub const EMPTY: Self = Self {
        id: 0,
        state: SlotState::Free,
        len: 0,
        deadline: Instant::ZERO,
        next_send: None,
        attempts: 0,
        busy_answers: 0,
        held_answers: 0,
        retry_after_ms: 0,
        heard_at_first: 0,
        rto: Duration::ZERO,
        cancel_owed: false,
    };
}

impl Default for DatagramCallSlot {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// How a datagram call ended: the one outcome every call gets, from
/// [`DatagramClient::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DatagramEvent<'a> {
    /// The function ran and answered; `body` borrows the client's receive area.
    Response {
        /// The call.
        id: RequestId,
        /// The answer.
        body: &'a [u8],
    },
    /// The call failed; [`DatagramFailure::execution`] says whether it may have run.
    Failed {
        /// The call.
        id: RequestId,
        /// How.
        failure: DatagramFailure<'a>,
    },
}

/// How a datagram call failed: only what can happen without a connection (a busy answer
/// does not end a call, it delays its next copy; there is no connection to lose and no
/// go-away). Converts into the stream [`Failure`] for code that handles both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DatagramFailure<'a> {
    /// The function ran and returned an error.
    Remote {
        /// The application's error number (or a reserved one, `wire::RESERVED_ERROR_CODES`).
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
    /// The deadline passed without an answer.
    TimedOut {
        /// Whether any copy of the request was handed to the transport.
        sent: bool,
    },
    /// The deadline passed and the server had answered every copy sent `Busy`, over a
    /// transport that never duplicates a datagram ([`DatagramConfig::duplicates`]
    /// [`Never`](super::Duplicates::Never)): each copy reached the server and was refused, so the function did not run.
    Busy {
        /// The hint of the last busy answer: wait this long before trying again.
        retry_after: Duration,
    },
    /// Nothing listens at the server's address: the transport refused every datagram
    /// sent since the server was last heard from, each copy of this call among them
    /// ([`DatagramClient::refused`]). Not executed.
    Unreachable,
    /// The caller cancelled the call.
    Cancelled {
        /// Whether any copy of the request was handed to the transport.
        sent: bool,
    },
}

impl DatagramFailure<'_> {
    /// Whether the server may have run the function: as the same stream [`Failure`].
    #[must_use]
    pub fn execution(&self) -> Execution {
        Failure::from(*self).execution()
    }
}

impl<'a> From<DatagramFailure<'a>> for Failure<'a> {
    fn from(failure: DatagramFailure<'a>) -> Self {
        match failure {
            DatagramFailure::Remote { code, message } => Self::Remote { code, message },
            DatagramFailure::Rejected { code, message } => Self::Rejected { code, message },
            DatagramFailure::TimedOut { sent } => Self::TimedOut { sent },
            DatagramFailure::Busy { retry_after } => Self::Busy { retry_after },
            DatagramFailure::Unreachable => Self::Unreachable,
            DatagramFailure::Cancelled { sent } => Self::Cancelled { sent },
        }
    }
}

impl core::fmt::Display for DatagramFailure<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        Failure::from(*self).fmt(f)
    }
}

impl core::error::Error for DatagramFailure<'_> {}

/// An answer taken in and not yet handed out by `poll_event`: its parts as ranges of the
/// receive area.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok {
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

/// What a datagram from [`DatagramClient::poll_transmit`] is, so a driver whose transport
/// could not take it can say so ([`DatagramClient::not_sent`]) without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DatagramKind {
    /// A copy (first or retransmitted) of this call's request.
    Request(RequestId),
    /// The cancel of this call.
    Cancel(RequestId),
    /// An acknowledgement: only the floor and acks.
    Acknowledgement,
}

/// A datagram to send to the server: `bytes`, and what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct DatagramTransmit<'a> {
    /// What the datagram is, for [`DatagramClient::not_sent`].
    pub kind: DatagramKind,
    /// The datagram.
    pub bytes: &'a [u8],
}

/// Counters of a datagram client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct DatagramClientStats {
    /// Calls accepted by `call`.
    pub calls: u64,
    /// Datagrams sent for calls, first transmissions included.
    pub transmissions: u64,
    /// Of those, retransmissions.
    pub retransmissions: u64,
    /// Calls answered with success.
    pub responses: u64,
    /// Calls that failed (an error answer, a timeout, a cancel).
    pub failures: u64,
    /// Calls whose deadline passed unanswered.
    pub timeouts: u64,
    /// Busy answers, which push the next retransmission back.
    pub busy: u64,
    /// Of those, busy answers with hint 0: the server held the answer back until more
    /// copies came (anti-amplification), and the next copy went out at once.
    pub held_back: u64,
    /// Answers for calls no longer waiting (a duplicate, or after a timeout), ignored.
    pub late_responses: u64,
    /// Datagrams dropped: not wirecall, another version, another epoch, or malformed.
    pub dropped: u64,
    /// Acknowledgements sent: datagrams that only tell the server which calls have ended,
    /// sent when answers came and no other datagram carried that news for a while.
    pub acks: u64,
    /// Datagrams the transport could not take ([`DatagramClient::not_sent`]); a request
    /// among them is handed out again and not counted in `transmissions`.
    pub not_sent: u64,
    /// Refusals the transport reported ([`DatagramClient::refused`]): nothing listened at
    /// the server's address when a datagram arrived there.
    pub refused: u64,
}

/// The client side of datagram mode, for one server. See the [module docs](super).
///
/// `B` holds the encoded requests (kept for retransmission), an equal share per slot, and
/// behind them the receive area for one answer: give it
/// [`DatagramConfig::client_storage_len`] bytes. `S` is the call table.
#[derive(Debug)]
pub struct DatagramClient<B, S> {
    config: DatagramConfig,
    epoch: u64,
    /// `SplitMix64` state, seeded by the caller, for jitter.
    rng: u64,
    storage: B,
    slots: S,
    chunk: usize,
    /// Where the receive area starts in `storage` (after every slot's chunk).
    rx_start: usize,
    /// An answer in the receive area, not yet handed out.
    answer: Option<Answer>,
    next_id: u64,
    in_flight: usize,
    /// Every slot from this index on is free: calls take the lowest free slot, so with few
    /// calls in flight the scans below look at a few slots, not the whole table.
    span: usize,
    /// The calls this client may still send a datagram about (waiting for an answer, or
    /// owed a cancel): bit `i` is call `live_base + i`. Every live id is within
    /// [`ACK_SPAN`] of the lowest (calls past that are refused), so 128 bits hold them,
    /// and the floor and acks every datagram carries are read off it without a scan.
    live: u128,
    /// The id of bit 0 of `live`: the floor once [`normalize_live`](Self::normalize_live)
    /// has run (the lowest live id, or `next_id` when none is live).
    live_base: u64,
    ended_pending: usize,
    /// No call still waiting has a deadline before this (`None`: no call waits). A lower
    /// bound, lowered by each call and raised by the scan `handle_timeout` makes when it is
    /// reached, so the timer checks that `poll_event` and `poll_transmit` make on every
    /// call do not scan the call table (as in the stream client).
    deadlines_from: Option<Instant>,
    /// When to send an acknowledgement: answers came since the last datagram went out.
    ack_at: Option<Instant>,
    /// The acknowledgement the last call datagram handed out made unnecessary.
    ack_carried: Option<Instant>,
    /// Where the acknowledgement datagram is built.
    ack_buf: [u8; ACK_LEN],
    /// Datagrams received so far (wrapping): a datagram from the server shows that it is
    /// there, so refusals of datagrams sent before it say nothing about later ones.
    heard: u32,
    /// Datagrams handed out (and not handed back) since the last one was received.
    unconfirmed: u32,
    /// Refusals the transport reported since the last datagram was received.
    refusals: u32,
    stats: DatagramClientStats,
}

/// Bytes of an acknowledgement datagram: the header and a Ping frame with nonce 0.
const ACK_LEN: usize = DatagramHeader::LEN + 2;

impl<B, S> DatagramClient<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[DatagramCallSlot]> + AsMut<[DatagramCallSlot]>,
{
    /// A client. `epoch` must be fresh random bits for every client incarnation (a
    /// restarted process must not reuse it: the server would take its new calls for
    /// retransmissions of old ones); `seed` seeds the jitter.
    ///
    /// # Errors
    ///
    /// [`DatagramConfigError`] when there are no slots, the storage share per slot is
    /// under the minimum datagram, or `max_attempts` is 0.
    pub fn new(
        config: DatagramConfig,
        epoch: u64,
        seed: u64,
        storage: B,
        slots: S,
    ) -> Result<Self, DatagramConfigError> {
        if config.max_attempts == 0 {
            return Err(DatagramConfigError::NoAttempts);
        }
        let receive = config.receive_len().unwrap_or(usize::MAX);
        let requests = storage.as_ref().len().checked_sub(receive).ok_or(
            DatagramConfigError::StorageTooSmall {
                need: config
                    .client_storage_len(slots.as_ref().len())
                    .unwrap_or(usize::MAX),
                have: storage.as_ref().len(),
            },
        )?;
        let chunk = chunk_len(requests, slots.as_ref().len(), &config)?;
        let rx_start = chunk.saturating_mul(slots.as_ref().len());
        let mut slots = slots;
        slots.as_mut().fill(DatagramCallSlot::EMPTY);
        Ok(Self {
            config,
            epoch,
            rng: seed,
            storage,
            slots,
            chunk,
            rx_start,
            answer: None,
            next_id: 1,
            in_flight: 0,
            span: 0,
            live: 0,
            live_base: 1,
            ended_pending: 0,
            deadlines_from: None,
            ack_at: None,
            ack_carried: None,
            ack_buf: [0; ACK_LEN],
            heard: 0,
            unconfirmed: 0,
            refusals: 0,
            stats: DatagramClientStats::default(),
        })
    }

    /// This client's epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn chunk_range(&self, index: usize) -> Range<usize> {
        let start = index.saturating_mul(self.chunk);
        start..start.saturating_add(self.chunk)
    }

    /// The slots that may be in use: those before [`span`](Self::span).
    fn used(&self) -> &[DatagramCallSlot] {
        let slots = self.slots.as_ref();
        slots.get(..self.span).unwrap_or(slots)
    }

    /// Lowers the span past the free slots at its end, after a slot was freed.
    fn trim_span(&mut self) {
        let used = self.used();
        let in_use = used
            .iter()
            .rposition(|s| s.state != SlotState::Free)
            .map_or(0, |last| last.saturating_add(1));
        self.span = in_use;
    }

    /// Starts a call of `target` (a method name, or a typed endpoint's key) with `body`, to
    /// end by `timeout` (or the configured
    /// default). The request goes out at the next [`poll_transmit`](Self::poll_transmit).
    ///
    /// # Errors
    ///
    /// [`SendError::TooManyInFlight`] when every slot is busy, or when the call would be
    /// more than [`ACK_SPAN`] ids past the oldest call still waiting (that one must end
    /// first, so the server's memory of this client stays bounded); [`SendError::TooLarge`]
    /// when the request does not fit one datagram. Nothing is sent then.
    pub fn call<'t>(
        &mut self,
        now: Instant,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, SendError> {
        let timeout = timeout.unwrap_or(self.config.default_timeout);
        let index = self
            .slots
            .as_ref()
            .iter()
            .position(|s| s.state == SlotState::Free)
            .ok_or(SendError::TooManyInFlight)?;
        if self.next_id.saturating_sub(self.floor()) > ACK_SPAN {
            // The new call could never be acknowledged while the oldest one lags: wait
            // for that one to end, so the server's memory of this client stays bounded.
            return Err(SendError::TooManyInFlight);
        }
        let id = RequestId(self.next_id);
        let target = target.into();
        let frame = Frame::request(id, target, Some(budget_ms(timeout)), body);
        let range = self.chunk_range(index);
        let limit = self.chunk;
        let too_large = || SendError::TooLarge {
            len: DatagramHeader::LEN.saturating_add(frame.encoded_len()),
            limit,
        };
        let out = self.storage.as_mut().get_mut(range).ok_or_else(too_large)?;
        let header = DatagramHeader::new(self.epoch, 0); // floor set when sent
        let len = encode_datagram(header, &frame, out).map_err(|_| too_large())?;
        let deadline = now.saturating_add(timeout);
        self.deadlines_from = earliest(self.deadlines_from, Some(deadline));
        self.span = self.span.max(index.saturating_add(1));
        self.mark_live(id.0, true);
        if let Some(slot) = self.slots.as_mut().get_mut(index) {
            *slot = DatagramCallSlot {
                id: id.0,
                state: SlotState::Active,
                len,
                deadline,
                next_send: Some(now),
                rto: self.config.initial_rto,
                ..DatagramCallSlot::EMPTY
            };
        }
        self.next_id = self.next_id.saturating_add(1);
        self.in_flight = self.in_flight.saturating_add(1);
        self.stats.calls = self.stats.calls.saturating_add(1);
        trace!("datagram call {} {}", id.0, target);
        Ok(id)
    }

    /// Cancels a call: it ends with [`Failure::Cancelled`] at the next `poll_event`, and
    /// if a copy was sent the server is told (once, best effort). Returns `false` when the
    /// call is not waiting.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let Some(index) = self.active_index(id) else {
            return false;
        };
        self.end(index, Ended::Cancelled);
        true
    }

    fn active_index(&self, id: RequestId) -> Option<usize> {
        self.used()
            .iter()
            .position(|s| s.state == SlotState::Active && s.id == id.0)
    }

    /// Ends the call in slot `index`, owing the server a cancel if it may have the call.
    fn end(&mut self, index: usize, how: Ended) {
        let range = self.chunk_range(index);
        let epoch = self.epoch;
        let Some(slot) = self.slots.as_mut().get_mut(index) else {
            return;
        };
        slot.state = SlotState::Ended(how);
        slot.next_send = None;
        // A cancel (which carries the news that the call ended) is owed for a call the
        // server may have seen; none to an address where nothing listens.
        if slot.attempts > 0 && how != Ended::Unreachable {
            let cancel = Frame::Cancel {
                id: RequestId(slot.id),
            };
            if let Some(out) = self.storage.as_mut().get_mut(range) {
                if let Ok(len) = encode_datagram(DatagramHeader::new(epoch, 0), &cancel, out) {
                    slot.len = len;
                    slot.cancel_owed = true;
                }
            }
        }
        let (id, owed) = (slot.id, slot.cancel_owed);
        if !owed {
            self.mark_live(id, false);
        }
        self.ended_pending = self.ended_pending.saturating_add(1);
    }

    /// The next datagram to send to the server, if one is due: a first transmission, a
    /// retransmission, a cancel, or an acknowledgement. Send its bytes, then call again
    /// until `None`. A datagram the transport could not take now (its queue is full) is
    /// handed back with [`not_sent`](Self::not_sent); wait until the socket can send
    /// before calling this again.
    #[must_use = "the datagram must be sent to the server"]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<DatagramTransmit<'_>> {
        // A request is never sent past its deadline: the server's memory of a call is only
        // guaranteed within it (section 11.4 of PROTOCOL.md). End overdue calls first.
        self.handle_timeout(now);
        // `not_sent` refers to the datagram handed out last, this one.
        self.ack_carried = None;
        let Some(index) = self.used().iter().position(|s| {
            s.cancel_owed || (s.state == SlotState::Active && s.next_send.is_some_and(|t| t <= now))
        }) else {
            let bytes = self.due_acknowledgement(now)?;
            return Some(DatagramTransmit {
                kind: DatagramKind::Acknowledgement,
                bytes,
            });
        };
        // This datagram carries the news of every call ended so far (unless it is handed
        // back as not sent: then the acknowledgement is owed again).
        self.ack_carried = self.ack_at.take();
        let (floor, acks) = self.floor_and_acks();
        let jitter = self.jitter();
        let config = self.config;
        let heard = self.heard;
        self.unconfirmed = self.unconfirmed.saturating_add(1);
        let mut freed = false;
        let slot = self.slots.as_mut().get_mut(index)?;
        let cancel = slot.cancel_owed;
        let id = RequestId(slot.id);
        if cancel {
            // Its last datagram: the call has ended for good (taken off `live` below).
            slot.cancel_owed = false;
            if slot.state == SlotState::Reported {
                slot.state = SlotState::Free;
                freed = true;
            }
        } else {
            slot.attempts = slot.attempts.saturating_add(1);
            if slot.attempts == 1 {
                slot.heard_at_first = heard;
            }
            self.stats.transmissions = self.stats.transmissions.saturating_add(1);
            if slot.attempts > 1 {
                self.stats.retransmissions = self.stats.retransmissions.saturating_add(1);
                trace!(
                    "retransmitting call {} (attempt {})",
                    slot.id, slot.attempts
                );
            }
            let allowed = config
                .max_attempts
                .saturating_add(slot.busy_answers)
                .saturating_add(slot.held_answers);
            slot.next_send = if slot.attempts < allowed {
                let wait = slot.rto.min(config.max_rto);
                let stretch = wait.as_micros().saturating_mul(jitter) / 1000;
                slot.rto = slot.rto.saturating_mul(2);
                Some(
                    now.saturating_add(wait)
                        .saturating_add(Duration::from_micros(stretch)),
                )
            } else {
                None
            };
        }
        let len = slot.len;
        if cancel {
            self.mark_live(id.0, false);
        }
        if freed {
            // The slot's storage still holds the cancel handed out below.
            self.trim_span();
        }
        if cancel {
            // The cancelled call has now ended for good: let the server know, unless a
            // later datagram does.
            self.owe_ack(now);
        }
        let start = self.chunk_range(index).start;
        let datagram = self
            .storage
            .as_mut()
            .get_mut(start..start.saturating_add(len))?;
        // Every copy carries the floor and acks as they are now, so the server can forget
        // ended calls.
        if let Some(field) = datagram.get_mut(FLOOR_FIELD) {
            field.copy_from_slice(&floor.to_be_bytes());
        }
        if let Some(field) = datagram.get_mut(ACKS_FIELD) {
            field.copy_from_slice(&acks.to_be_bytes());
        }
        let kind = if cancel {
            DatagramKind::Cancel(id)
        } else {
            DatagramKind::Request(id)
        };
        Some(DatagramTransmit {
            kind,
            bytes: datagram,
        })
    }

    /// The transport did not take the datagram [`poll_transmit`](Self::poll_transmit) just
    /// returned (no room now): a request is handed out again at the next `poll_transmit`,
    /// as if this copy had never been made (and, as ever, never past its call's deadline);
    /// an acknowledgement is owed again; a cancel is dropped, as a lost one would be (it
    /// is best effort: the server's entry for the call stays until its window closes or
    /// the client's next datagram says the call has ended).
    pub fn not_sent(&mut self, kind: DatagramKind) {
        self.unconfirmed = self.unconfirmed.saturating_sub(1);
        if let Some(at) = self.ack_carried.take() {
            self.ack_at = Some(self.ack_at.map_or(at, |a| a.min(at)));
        }
        match kind {
            DatagramKind::Request(id) => {
                let Some(index) = self.active_index(id) else {
                    return;
                };
                let initial = self.config.initial_rto;
                let Some(slot) = self.slots.as_mut().get_mut(index) else {
                    return;
                };
                if slot.attempts == 0 {
                    return;
                }
                slot.attempts = slot.attempts.saturating_sub(1);
                slot.rto = Duration::from_micros(slot.rto.as_micros() / 2).max(initial);
                slot.next_send = Some(Instant::ZERO);
                self.stats.transmissions = self.stats.transmissions.saturating_sub(1);
                if slot.attempts > 0 {
                    self.stats.retransmissions = self.stats.retransmissions.saturating_sub(1);
                }
                self.stats.not_sent = self.stats.not_sent.saturating_add(1);
            }
            DatagramKind::Cancel(_) => {
                self.stats.not_sent = self.stats.not_sent.saturating_add(1);
            }
            DatagramKind::Acknowledgement => {
                self.ack_at = Some(Instant::ZERO);
                self.stats.acks = self.stats.acks.saturating_sub(1);
                self.stats.not_sent = self.stats.not_sent.saturating_add(1);
            }
        }
    }

    /// An acknowledgement datagram, when one is due: answers came, and no other datagram
    /// has told the server since.
    fn due_acknowledgement(&mut self, now: Instant) -> Option<&[u8]> {
        if self.ack_at.is_none_or(|at| at > now) {
            return None;
        }
        self.acknowledgement()
    }

    /// The owed acknowledgement now, without its short delay, and nothing else: for a
    /// client about to go quiet (closing, dropped, or making no call for a while), so the
    /// server forgets its answered calls at once. `None` when nothing is owed.
    #[must_use = "the datagram must be sent to the server"]
    pub fn acknowledgement(&mut self) -> Option<&[u8]> {
        self.ack_carried = None;
        self.ack_at.take()?;
        let (floor, acks) = self.floor_and_acks();
        let header = DatagramHeader::new(self.epoch, floor).with_acks(acks);
        let len = encode_datagram(header, &Frame::Ping { nonce: 0 }, &mut self.ack_buf).ok()?;
        self.stats.acks = self.stats.acks.saturating_add(1);
        self.unconfirmed = self.unconfirmed.saturating_add(1);
        self.ack_buf.get(..len)
    }

    /// `true` while call `id` waits for its outcome (made, not ended).
    #[must_use]
    pub fn is_waiting(&self, id: RequestId) -> bool {
        self.active_index(id).is_some()
    }

    /// The floor, and the acks: bit `i` set when call `floor + 1 + i` was made and has
    /// ended for good (no datagram about it will be sent again).
    fn floor_and_acks(&self) -> (u64, u64) {
        let floor = self.floor();
        // Every call made above the floor, within the span...
        let made = self.next_id.saturating_sub(floor).saturating_sub(1);
        let mut acks = match made {
            0 => 0,
            n if n >= ACK_SPAN => u64::MAX,
            n => (1u64 << n).wrapping_sub(1),
        };
        // ...but those still live (bit 0 of `live` is the floor itself, when live).
        let above = u64::try_from((self.live >> 1) & u128::from(u64::MAX)).unwrap_or(u64::MAX);
        acks &= !above;
        #[cfg(any(test, fuzzing))]
        self.check_live(floor, acks);
        (floor, acks)
    }

    /// Under the unit tests and the fuzzer: the floor and acks read off `live` are exactly
    /// those a scan of the table gives (how they were computed before `live`).
    #[cfg(any(test, fuzzing))]
    fn check_live(&self, floor: u64, acks: u64) {
        let live = |s: &&DatagramCallSlot| s.state == SlotState::Active || s.cancel_owed;
        let slots = self.slots.as_ref();
        let scanned = slots.iter().filter(live).map(|s| s.id).min();
        assert_eq!(
            floor,
            scanned.unwrap_or(self.next_id),
            "floor off the live bits"
        );
        for slot in slots.iter().filter(live) {
            let bit = slot.id.saturating_sub(floor);
            if (1..=ACK_SPAN).contains(&bit) {
                let acked = (acks >> bit.saturating_sub(1)) & 1;
                assert_eq!(acked, 0, "call {} live but acked", slot.id);
            }
        }
        let made = self.next_id.saturating_sub(floor).saturating_sub(1);
        let acked_unmade = acks
            .checked_shr(u32::try_from(made).unwrap_or(64))
            .unwrap_or(0);
        assert_eq!(acked_unmade, 0, "calls not made yet acked");
    }

    /// Marks call `id` live (it may still send a datagram about it) or not, and moves the
    /// base of `live` up to the floor.
    fn mark_live(&mut self, id: u64, live: bool) {
        let Some(bit) = id
            .checked_sub(self.live_base)
            .and_then(|d| u32::try_from(d).ok())
            .filter(|bit| *bit < u128::BITS)
        else {
            // Out of reach only for an id never marked live: nothing to do.
            return;
        };
        if live {
            self.live |= 1u128 << bit;
        } else {
            self.live &= !(1u128 << bit);
        }
        self.normalize_live();
    }

    /// Moves the base of `live` to the floor: the lowest live id, or `next_id` (the next
    /// call's) when none is live.
    fn normalize_live(&mut self) {
        if self.live == 0 {
            self.live_base = self.next_id;
        } else {
            let skip = self.live.trailing_zeros();
            self.live >>= skip;
            self.live_base = self.live_base.saturating_add(u64::from(skip));
        }
    }

    /// The lowest id this client may still send a datagram about (a call waiting for its
    /// answer, or owed a cancel); every lower id has ended for good.
    fn floor(&self) -> u64 {
        if self.live == 0 {
            self.next_id
        } else {
            self.live_base
        }
    }

    /// A jitter factor in per-mille: `0..=jitter_per_mille`.
    fn jitter(&mut self) -> u64 {
        let z = crate::rng::splitmix64(&mut self.rng);
        z.checked_rem(u64::from(self.config.jitter_per_mille).saturating_add(1))
            .unwrap_or(0)
    }

    /// The receive area, to receive the server's next datagram straight into; then
    /// [`commit_datagram`](Self::commit_datagram). It holds the largest answer taken and
    /// one byte more, so a longer datagram is seen (and dropped) as such. Empty while an
    /// answer is still to be taken with [`poll_event`](Self::poll_event): take it first,
    /// and never receive into an empty area (the kernel would discard the datagram).
    pub fn input_buffer(&mut self) -> &mut [u8] {
        if self.answer.is_some() {
            return &mut [];
        }
        self.storage
            .as_mut()
            .get_mut(self.rx_start..)
            .unwrap_or_default()
    }

    /// Takes the datagram of `len` bytes received into
    /// [`input_buffer`](Self::input_buffer) (pass only datagrams from the server's
    /// address). An answer to a waiting call ends it, and comes out of the next
    /// [`poll_event`](Self::poll_event); a busy answer, a duplicate, a late answer or
    /// anything not ours is counted in [`stats`](Self::stats) and produces no event.
    pub fn commit_datagram(&mut self, now: Instant, len: usize) {
        if self.answer.is_some() {
            return;
        }
        self.take_datagram(now, len);
    }

    /// [`input_buffer`](Self::input_buffer) and [`commit_datagram`](Self::commit_datagram)
    /// in one, for a datagram received elsewhere: copies it in. Returns `false`, taking
    /// nothing, while an answer is still to be taken with `poll_event`: take it, then
    /// offer the datagram again. (A datagram longer than the receive area is cut to it,
    /// and then dropped as too long.)
    #[must_use = "a datagram not taken must be offered again"]
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> bool {
        let area = self.input_buffer();
        if area.is_empty() {
            return false;
        }
        let len = area.len().min(datagram.len());
        if let (Some(dst), Some(src)) = (area.get_mut(..len), datagram.get(..len)) {
            dst.copy_from_slice(src);
        }
        self.take_datagram(now, len);
        true
    }

    /// Acts on the datagram of `len` bytes at the start of the receive area.
    fn take_datagram(&mut self, now: Instant, len: usize) {
        // Whatever it is, something answers at the server's address.
        self.heard = self.heard.wrapping_add(1);
        self.unconfirmed = 0;
        self.refusals = 0;
        if len > self.config.answer_limit() {
            warn!("dropping a datagram longer than max_answer");
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            return;
        }
        let start = self.rx_start;
        let area = self.storage.as_ref().get(start..).unwrap_or_default();
        let datagram = area.get(..len).unwrap_or_default();
        // Where a part of the datagram sits in the storage, to find it again later.
        let base = datagram.as_ptr() as usize;
        let locate = |part: &[u8]| {
            let at = (part.as_ptr() as usize)
                .wrapping_sub(base)
                .saturating_add(start);
            at..at.saturating_add(part.len())
        };
        let frame = match DatagramHeader::parse(datagram) {
            Ok((header, body)) if header.epoch == self.epoch => decode_frame(header.version, body),
            _ => Err(WireError::UnknownTag),
        };
        let Ok(Frame::Response(response)) = frame else {
            warn!("dropping a datagram that is not an answer to this client");
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            return;
        };
        let id = response.id;
        let answer = match response.reply {
            Reply::Ok(body) => Answer::Ok {
                id,
                body: locate(body),
            },
            Reply::Error { code, message } => Answer::Remote {
                id,
                code,
                message: locate(message.as_bytes()),
            },
            Reply::Rejected { code, message } => Answer::Rejected {
                id,
                code,
                message: locate(message.as_bytes()),
            },
            Reply::Busy { retry_after_ms } => {
                self.on_busy(now, id, retry_after_ms);
                return;
            }
        };
        let Some(index) = self.active_index(id) else {
            self.stats.late_responses = self.stats.late_responses.saturating_add(1);
            return;
        };
        self.free(index);
        self.owe_ack(now);
        if matches!(answer, Answer::Ok { .. }) {
            self.stats.responses = self.stats.responses.saturating_add(1);
        } else {
            self.stats.failures = self.stats.failures.saturating_add(1);
        }
        self.answer = Some(answer);
    }

    /// A busy answer: the server has no entry for this call, but an earlier copy may still
    /// be on its way: keep the call, and retry no sooner than the hint nor the backoff
    /// (which keeps doubling, so an overloaded server is not pressed harder). The copy was
    /// not lost, so it does not use up an attempt: a call keeps its turn until its deadline.
    ///
    /// A hint of 0 says something else: the server has the answer and holds it back until
    /// its copies of the request add up to a third of it (PROTOCOL.md 11.3, on UDP). The
    /// call ran; the client sends its next copy at once (for the first [`PROMPT_COPIES`]
    /// such answers, or as many as its largest answer needs; after that on its usual
    /// schedule), and never reports it busy.
    fn on_busy(&mut self, now: Instant, id: RequestId, retry_after_ms: u32) {
        let Some(index) = self.active_index(id) else {
            self.stats.late_responses = self.stats.late_responses.saturating_add(1);
            return;
        };
        self.stats.busy = self.stats.busy.saturating_add(1);
        if retry_after_ms == 0 {
            self.stats.held_back = self.stats.held_back.saturating_add(1);
            let answer_limit = self.config.answer_limit();
            if let Some(slot) = self.slots.as_mut().get_mut(index) {
                slot.held_answers = slot.held_answers.saturating_add(1);
                let need = answer_limit.div_ceil(slot.len.max(1).saturating_mul(2));
                let prompt = u32::try_from(need.saturating_add(1))
                    .unwrap_or(u32::MAX)
                    .max(PROMPT_COPIES);
                if slot.held_answers <= prompt && slot.next_send.is_some() {
                    slot.next_send = Some(now);
                }
            }
            return;
        }
        let hint = now.saturating_add(Duration::from_millis(u64::from(retry_after_ms)));
        if let Some(slot) = self.slots.as_mut().get_mut(index) {
            slot.busy_answers = slot.busy_answers.saturating_add(1);
            slot.retry_after_ms = retry_after_ms;
            slot.next_send = Some(slot.next_send.map_or(hint, |t| t.max(hint)));
        }
    }

    /// An answer ended a call: unless another datagram goes out first (and carries the
    /// news), acknowledge it after a quarter of `initial_rto`, so that a client that goes
    /// quiet still lets the server forget its answered calls, while a busy client, whose
    /// next request carries its acks, sends no extra datagram.
    fn owe_ack(&mut self, now: Instant) {
        if self.ack_at.is_none() {
            let delay = Duration::from_micros(self.config.initial_rto.as_micros() / 4);
            self.ack_at = Some(now.saturating_add(delay));
        }
    }

    fn free(&mut self, index: usize) {
        if let Some(slot) = self.slots.as_mut().get_mut(index) {
            let id = slot.id;
            *slot = DatagramCallSlot::EMPTY;
            self.mark_live(id, false);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        self.trim_span();
    }

    /// Fires call deadlines that have passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadlines_from.is_none_or(|d| now < d) {
            return;
        }
        let mut next = None;
        for index in 0..self.span {
            let Some(slot) = self.slots.as_ref().get(index) else {
                continue;
            };
            if slot.state != SlotState::Active {
                continue;
            }
            if slot.deadline <= now {
                // Every copy sent was answered busy: each reached the server and was
                // refused, so none is still on its way to run.
                let how = if self.config.duplicates == super::Duplicates::Never
                    && slot.attempts > 0
                    && slot.held_answers == 0
                    && slot.busy_answers >= slot.attempts
                {
                    Ended::Busy(slot.retry_after_ms)
                } else {
                    Ended::TimedOut
                };
                self.end(index, how);
            } else {
                next = earliest(next, Some(slot.deadline));
            }
        }
        self.deadlines_from = next;
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) next (at once while calls that ended wait to
    /// be taken with [`poll_event`](Self::poll_event)); `None` when nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended_pending > 0 {
            // Outcomes wait to be taken with `poll_event`: at once.
            return Some(Instant::ZERO);
        }
        let calls = self
            .used()
            .iter()
            .filter_map(|s| {
                if s.cancel_owed {
                    // A cancel waits to be sent: call `poll_transmit` at once.
                    Some(Instant::ZERO)
                } else if s.state == SlotState::Active {
                    Some(s.next_send.map_or(s.deadline, |t| t.min(s.deadline)))
                } else {
                    None
                }
            })
            .min();
        [calls, self.ack_at].into_iter().flatten().min()
    }

    /// The next call that ended, or `None`: an answer taken in (its body borrows the
    /// receive area), then calls that ended without one (timed out or cancelled). Fires due
    /// deadlines first. Call it after every datagram taken in, until it returns `None`.
    #[must_use = "events must be acted on: every call ends in one"]
    pub fn poll_event(&mut self, now: Instant) -> Option<DatagramEvent<'_>> {
        if let Some(answer) = self.answer.take() {
            let storage = self.storage.as_ref();
            let text = |range: Range<usize>| {
                core::str::from_utf8(storage.get(range).unwrap_or_default()).unwrap_or_default()
            };
            return Some(match answer {
                Answer::Ok { id, body } => DatagramEvent::Response {
                    id,
                    body: storage.get(body).unwrap_or_default(),
                },
                Answer::Remote { id, code, message } => DatagramEvent::Failed {
                    id,
                    failure: DatagramFailure::Remote {
                        code,
                        message: text(message),
                    },
                },
                Answer::Rejected { id, code, message } => DatagramEvent::Failed {
                    id,
                    failure: DatagramFailure::Rejected {
                        code,
                        message: text(message),
                    },
                },
            });
        }
        self.handle_timeout(now);
        if self.ended_pending == 0 {
            return None;
        }
        let span = self.span;
        let slot = self
            .slots
            .as_mut()
            .iter_mut()
            .take(span)
            .find(|s| matches!(s.state, SlotState::Ended(_)))?;
        let SlotState::Ended(how) = slot.state else {
            return None;
        };
        let id = RequestId(slot.id);
        let sent = slot.attempts > 0;
        if slot.cancel_owed {
            slot.state = SlotState::Reported;
        } else {
            *slot = DatagramCallSlot::EMPTY;
        }
        self.trim_span();
        self.ended_pending = self.ended_pending.saturating_sub(1);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stats.failures = self.stats.failures.saturating_add(1);
        let failure = match how {
            Ended::TimedOut => {
                self.stats.timeouts = self.stats.timeouts.saturating_add(1);
                DatagramFailure::TimedOut { sent }
            }
            Ended::Busy(ms) => DatagramFailure::Busy {
                retry_after: Duration::from_millis(u64::from(ms)),
            },
            Ended::Unreachable => DatagramFailure::Unreachable,
            Ended::Cancelled => DatagramFailure::Cancelled { sent },
        };
        Some(DatagramEvent::Failed { id, failure })
    }

    /// The transport reported that a datagram sent to the server reached no socket there:
    /// on a connected socket, a receive or send that fails with `ECONNREFUSED` (Linux
    /// reports each ICMP "port unreachable" once, and a Unix datagram send to a path with
    /// no socket fails so at once). Each report stands for at least one refused datagram.
    /// When there have been as many reports as datagrams sent since the server was last
    /// heard from, every one of them was refused: each call whose copies were all sent
    /// in that time ends, not executed, with [`DatagramFailure::Unreachable`] (no cancel
    /// is owed for it). Fewer reports prove nothing about any one call, which then goes on
    /// until its deadline; so does a call with a copy sent before the server last spoke.
    /// (A driver that cannot tell which send a report belongs to reports it here and,
    /// when the send that failed took nothing, hands that datagram back with
    /// [`not_sent`](Self::not_sent) first.)
    pub fn refused(&mut self) {
        self.stats.refused = self.stats.refused.saturating_add(1);
        if self.unconfirmed == 0 {
            // A late report of a datagram sent before the server last spoke: it says
            // nothing about the ones sent since.
            return;
        }
        self.refusals = self.refusals.saturating_add(1);
        if self.refusals < self.unconfirmed {
            return;
        }
        for index in 0..self.span {
            let Some(slot) = self.slots.as_ref().get(index) else {
                continue;
            };
            if slot.state == SlotState::Active
                && slot.attempts > 0
                && slot.heard_at_first == self.heard
            {
                self.end(index, Ended::Unreachable);
            }
        }
    }

    /// Calls started and not yet ended.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// This client's counters.
    #[must_use]
    pub fn stats(&self) -> &DatagramClientStats {
        &self.stats
    }
}
