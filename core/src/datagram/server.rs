//! The datagram server: answers each request to its sender, at most once per call.

use core::fmt;
use core::ops::Range;

use super::{DatagramConfig, DatagramConfigError, EPOCH_ENTRIES, chunk_len};
use crate::conn::{budget_ms, too_large_stand_in};
use crate::time::{Duration, Instant};
use crate::wire::datagram::decode_frame;
use crate::wire::datagram::{
    ACK_SPAN, DatagramHeader, HeaderError, encode_datagram, ended, merge_ended,
};
use crate::wire::{Call, Frame, RejectCode, Reply, RequestId, Response, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Free,
    /// A client's record (entry id 0): its floor and acks live in `floor` and `acks`, and
    /// `expires` covers the windows of all its calls.
    Client,
    /// Handed to the application, not yet answered.
    InProgress {
        cancelled: bool,
    },
    /// Answered: the answer datagram, this many bytes, is in the entry's storage.
    Done {
        len: usize,
    },
}

/// One entry of a datagram server's call cache: storage the caller provides, e.g.
/// `[DatagramEntry::EMPTY; 1024]`. `P` is the peer address type. Opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramEntry<P> {
    peer: Option<P>,
    epoch: u64,
    id: u64,
    /// Bumped each time the entry is reused, so stale handles are refused.
    generation: u32,
    state: EntryState,
    /// After this no retransmission of the call (or, for a client record, of any of its
    /// calls) can arrive; the entry may be reused.
    expires: Instant,
    /// For a client record: every call of the client with a lower id has ended.
    floor: u64,
    /// For a client record: bit `i` set when call `floor + 1 + i` has ended too.
    acks: u64,
    /// For a call: bytes of its copies received, and bytes sent for it (answer, replays,
    /// busy answers), for the anti-amplification rule.
    received: u32,
    sent: u32,
}

impl<P> DatagramEntry<P> {
    /// A free entry.
    pub const EMPTY: Self = Self {
        peer: None,
        epoch: 0,
        id: 0,
        generation: 0,
        state: EntryState::Free,
        expires: Instant::ZERO,
        floor: 0,
        acks: 0,
        received: 0,
        sent: 0,
    };
}

impl<P> Default for DatagramEntry<P> {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// What [`DatagramServer::lookup`] found for a call.
enum Lookup {
    /// The call's entry.
    Found(usize),
    /// No entry; this open one may take it.
    Open(usize),
    /// No entry, and no open one in its buckets.
    Full,
}

/// Names one request taken by a [`DatagramServer`], for [`DatagramServer::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestHandle {
    index: u32,
    generation: u32,
}

/// A request to run: answer it with [`DatagramServer::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct DatagramRequest<'a> {
    /// Pass this to `respond`.
    pub handle: RequestHandle,
    /// The client's id for the call.
    pub id: RequestId,
    /// The function or typed endpoint to run.
    pub target: Target<'a>,
    /// Its argument, borrowed from the datagram.
    pub body: &'a [u8],
    /// When the client stops waiting, at the latest: the budget counts from this copy's
    /// arrival, and a retransmission repeats the first copy's budget, so it errs late.
    /// Later work is wasted.
    pub deadline: Instant,
}

/// Entries per cache bucket: a call may only use the entries of its own bucket.
pub const WAYS: usize = 8;

/// Why a datagram was dropped without an answer. Each is counted in
/// [`DatagramServerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than a header.
    Truncated,
    /// Longer than `max_datagram`.
    Oversize,
    /// Not a wirecall datagram (bad magic).
    Foreign,
    /// A protocol version this server does not speak.
    UnsupportedVersion,
    /// The frame did not decode.
    Malformed,
    /// A frame that a server never receives (a response, a hello...).
    UnexpectedFrame,
    /// A retransmission of a call still being run: it will be answered once.
    InProgress,
    /// A cancel for a call that is not running.
    StaleCancel,
    /// A request for a call its client has already declared ended (below its floor, or
    /// acknowledged), or with id 0: a late copy, never run.
    Stale,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated",
            Self::Oversize => "oversize",
            Self::Foreign => "not wirecall",
            Self::UnsupportedVersion => "unsupported version",
            Self::Malformed => "malformed",
            Self::UnexpectedFrame => "unexpected frame",
            Self::InProgress => "retransmission of a call in progress",
            Self::StaleCancel => "cancel for no running call",
            Self::Stale => "late copy of an ended call",
        })
    }
}

/// What [`DatagramServer::handle_datagram`] found in a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Received<'s, 'd, P> {
    /// A new call: run it and [`respond`](DatagramServer::respond).
    Request(DatagramRequest<'d>),
    /// Send this datagram back to the sender (`to` is the `from` passed in): the stored
    /// answer to a retransmitted call, or a busy or rejection answer the server made
    /// itself. The same [`Transmit`] that [`respond`](DatagramServer::respond) returns.
    Reply(Transmit<'s, P>),
    /// The client cancelled this call: stop work on it if you can. Answering it is still
    /// allowed (and remembered), but nobody waits for the answer.
    Cancelled(RequestHandle),
    /// Nothing to do; counted.
    Dropped(DropReason),
    /// An acknowledgement: the client said which of its calls have ended, and the server
    /// may forget them. Nothing to send (an acknowledgement is never answered, so it
    /// cannot be used to reflect traffic).
    Acknowledged,
}

/// An answer to send: `bytes` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Transmit<'a, P> {
    /// The peer that sent the request.
    pub to: &'a P,
    /// The datagram.
    pub bytes: &'a [u8],
}

/// Why [`DatagramServer::respond`] could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DatagramRespondError {
    /// The handle names no call in progress: answered already, or its entry expired.
    UnknownRequest,
    /// Not even the stand-in for a too-large answer fits: cannot happen with the storage
    /// the constructor accepts (the call is still in progress).
    TooLarge,
}

impl fmt::Display for DatagramRespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownRequest => "no such call in progress",
            Self::TooLarge => "not even an error fits one datagram",
        })
    }
}

impl core::error::Error for DatagramRespondError {}

/// Counters of a datagram server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct DatagramServerStats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// New calls handed to the application (each runs once).
    pub requests: u64,
    /// Answers given.
    pub responses: u64,
    /// Retransmissions answered from the cache without running the function again.
    pub replayed: u64,
    /// Retransmissions of calls still running, dropped.
    pub in_progress: u64,
    /// Calls refused busy because every cache entry was live, or (also counted in
    /// `busy_peer_quota`) their peer held its share of the cache.
    pub busy: u64,
    /// Calls refused busy because their peer address already held
    /// [`max_peer_entries`](DatagramConfig::max_peer_entries) (a new epoch past its share).
    pub busy_peer_quota: u64,
    /// Calls rejected before running (no budget, budget zero or over the limit).
    pub rejected: u64,
    /// Calls cancelled by their client while running.
    pub cancelled: u64,
    /// Datagrams dropped: shorter than a header.
    pub dropped_truncated: u64,
    /// Datagrams dropped: over `max_datagram`.
    pub dropped_oversize: u64,
    /// Datagrams dropped: not wirecall.
    pub dropped_foreign: u64,
    /// Datagrams dropped: another protocol version.
    pub dropped_version: u64,
    /// Datagrams dropped: the frame did not decode.
    pub dropped_malformed: u64,
    /// Datagrams dropped: a frame a server does not take.
    pub dropped_unexpected: u64,
    /// Cancels for calls that were not running.
    pub stale_cancels: u64,
    /// Late copies of calls their client had declared ended, dropped.
    pub stale: u64,
    /// Acknowledgements (datagrams that only say which calls have ended).
    pub acks: u64,
    /// Answers too large for one datagram, sent as
    /// [`ERROR_ANSWER_TOO_LARGE`](crate::wire::ERROR_ANSWER_TOO_LARGE) instead.
    pub answers_too_large: u64,
    /// New calls rejected with [`RejectCode::SHUTTING_DOWN`] while draining (not run).
    pub shutting_down: u64,
    /// Answers held back by the anti-amplification rule
    /// ([`DatagramConfig::amplification`]): the copy was answered busy with hint 0
    /// instead, and the answer kept for a later copy.
    pub withheld: u64,
}

/// The message sent with [`ERROR_ANSWER_TOO_LARGE`](crate::wire::ERROR_ANSWER_TOO_LARGE) in
/// datagram mode.
const TOO_LARGE_MESSAGE: &str = "answer does not fit one datagram";

impl DatagramServerStats {
    fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Truncated => &mut self.dropped_truncated,
            DropReason::Oversize => &mut self.dropped_oversize,
            DropReason::Foreign => &mut self.dropped_foreign,
            DropReason::UnsupportedVersion => &mut self.dropped_version,
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::UnexpectedFrame => &mut self.dropped_unexpected,
            DropReason::InProgress => &mut self.in_progress,
            DropReason::StaleCancel => &mut self.stale_cancels,
            DropReason::Stale => &mut self.stale,
        };
        *counter = counter.saturating_add(1);
    }
}

/// The server side of datagram mode. See the [module docs](super).
///
/// `P` is the peer address type (a socket address, a Unix socket path, a radio id...).
/// `B` stores each entry's answer for replay plus one scratch datagram: give it
/// `(entries + 1) × max_datagram` bytes. `S` is the call cache; its size bounds the calls
/// remembered at once. The cache is set-associative ([`WAYS`] entries per bucket, chosen
/// by a hash of epoch and id), so a lookup costs a few comparisons at any size, and a call
/// is refused busy when its own bucket is full of live entries.
#[derive(Debug)]
pub struct DatagramServer<P, B, S> {
    config: DatagramConfig,
    storage: B,
    entries: S,
    chunk: usize,
    /// Draining: new calls are rejected, everything else goes on.
    draining: bool,
    stats: DatagramServerStats,
    _peer: core::marker::PhantomData<P>,
}

impl<P, B, S> DatagramServer<P, B, S>
where
    P: Clone + PartialEq,
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[DatagramEntry<P>]> + AsMut<[DatagramEntry<P>]>,
{
    /// A server with an empty cache.
    ///
    /// # Errors
    ///
    /// [`DatagramConfigError`] when there are no entries or the storage share per entry
    /// is under the minimum datagram.
    pub fn new(
        config: DatagramConfig,
        storage: B,
        entries: S,
    ) -> Result<Self, DatagramConfigError> {
        let count = entries.as_ref().len();
        if count == 0 {
            return Err(DatagramConfigError::NoSlots);
        }
        let chunk = chunk_len(storage.as_ref().len(), count.saturating_add(1), &config)?;
        let mut entries = entries;
        entries.as_mut().fill(DatagramEntry::EMPTY);
        Ok(Self {
            config,
            storage,
            entries,
            chunk,
            draining: false,
            stats: DatagramServerStats::default(),
            _peer: core::marker::PhantomData,
        })
    }

    fn chunk_range(&self, index: usize) -> Range<usize> {
        let start = index.saturating_mul(self.chunk);
        start..start.saturating_add(self.chunk)
    }

    /// The scratch chunk after the entries' chunks, for answers made on the spot.
    fn scratch_range(&self) -> Range<usize> {
        self.chunk_range(self.entries.as_ref().len())
    }

    /// Handles one datagram received from `from`. See [`Received`] for what to do next.
    /// A request borrows `datagram` (not the server, so it can be answered with
    /// [`respond`](Self::respond) while its body is still in use); a reply borrows the
    /// server's storage.
    #[must_use = "a request must be answered, and a reply sent back to the sender"]
    pub fn handle_datagram<'s, 'd>(
        &'s mut self,
        now: Instant,
        from: &'s P,
        datagram: &'d [u8],
    ) -> Received<'s, 'd, P> {
        self.stats.datagrams = self.stats.datagrams.saturating_add(1);
        let decoded = self.decode(datagram);
        let (header, frame) = match decoded {
            Ok(decoded) => decoded,
            Err(reason) => return self.dropped(reason),
        };
        if let Some(call) = frame.as_call() {
            return self.on_request(now, from, header, call, datagram.len());
        }
        match frame {
            Frame::Cancel { id } => self.on_cancel(from, header, id),
            Frame::Ping { .. } => self.on_ack(from, header),
            _ => self.dropped(DropReason::UnexpectedFrame),
        }
    }

    /// An acknowledgement (a Ping from a client): merges its floor and acks into the
    /// client's record, if the server still has one (if not, it remembers no call of that
    /// client either).
    fn on_ack(&mut self, from: &P, header: DatagramHeader) -> Received<'_, 'static, P> {
        self.stats.acks = self.stats.acks.saturating_add(1);
        if let Some(rec) = self
            .find(from, header.epoch, 0)
            .and_then(|i| self.entries.as_mut().get_mut(i))
        {
            merge_ended(&mut rec.floor, &mut rec.acks, header.floor, header.acks);
        }
        Received::Acknowledged
    }

    fn dropped(&mut self, reason: DropReason) -> Received<'_, 'static, P> {
        self.stats.count_drop(reason);
        // Debug, not warn: one per datagram a peer sends; a driver logs bad ones
        // rate-limited, with the peer's address.
        if matches!(reason, DropReason::Foreign | DropReason::Malformed) {
            debug!("dropped a bad datagram: {}", reason);
        } else {
            trace!("dropped datagram: {}", reason);
        }
        Received::Dropped(reason)
    }

    /// Checks size and header and decodes the frame; borrows only the datagram.
    fn decode<'a>(&self, datagram: &'a [u8]) -> Result<(DatagramHeader, Frame<'a>), DropReason> {
        if datagram.len() > self.config.max_datagram {
            return Err(DropReason::Oversize);
        }
        let (header, body) = DatagramHeader::parse(datagram).map_err(|e| match e {
            HeaderError::Truncated => DropReason::Truncated,
            HeaderError::BadMagic => DropReason::Foreign,
            _ => DropReason::UnsupportedVersion,
        })?;
        let frame = decode_frame(header.version, body).map_err(|_| DropReason::Malformed)?;
        Ok((header, frame))
    }

    fn on_request<'s, 'd>(
        &'s mut self,
        now: Instant,
        from: &'s P,
        header: DatagramHeader,
        req: Call<'d>,
        len: usize,
    ) -> Received<'s, 'd, P> {
        let epoch = header.epoch;
        let rejection = match req.budget_ms {
            None => Some((
                RejectCode::INVALID_REQUEST,
                "datagram requests need a budget",
            )),
            Some(0) => Some((
                RejectCode::DEADLINE_EXCEEDED,
                "deadline passed before arrival",
            )),
            Some(ms) if u64::from(ms) > self.config.max_budget.as_millis_ceil() => Some((
                RejectCode::INVALID_REQUEST,
                "budget over the server's limit",
            )),
            Some(_) => None,
        };
        if let Some((code, message)) = rejection {
            self.stats.rejected = self.stats.rejected.saturating_add(1);
            let reply = Reply::Rejected { code, message };
            return self.scratch_reply(from, epoch, req.id, reply);
        }
        if req.id.0 == 0 || req.id.0 == u64::MAX || header.has_ended(req.id.0) {
            // Ids start at 1, and a client never sends a request for a call it has ended.
            // The highest id is never valid either: no floor can pass it, so a record could
            // never say it had ended, and a copy of it would run again after an ack.
            return self.dropped(DropReason::Stale);
        }
        let budget = Duration::from_millis(u64::from(req.budget_ms.unwrap_or(0)));
        let window_end = now
            .saturating_add(budget)
            .saturating_add(self.config.max_latency);

        // The client's record: learn what has ended, and refuse it.
        let record = match self.find(from, epoch, 0) {
            Some(index) => index,
            // No record: no call of this client is remembered, unless an answered one
            // outlived it (past its window). Only a call not taken at all is refused.
            None if self.draining => {
                return match self.find(from, epoch, req.id.0) {
                    Some(index) => self.known_call(index, from, req.id, len),
                    None => self.shutting_down(from, epoch, req.id),
                };
            }
            None => match self
                .peer_room(now, from)
                .and_then(|()| self.free_entry(now, epoch, 0))
            {
                Ok(index) => {
                    self.claim(index, from, epoch, 0, EntryState::Client, window_end);
                    index
                }
                Err(first_free) => return self.busy(from, now, epoch, req.id, first_free),
            },
        };
        let (has_ended, floor, acks) = match self.entries.as_mut().get_mut(record) {
            Some(rec) => {
                merge_ended(&mut rec.floor, &mut rec.acks, header.floor, header.acks);
                rec.expires = rec.expires.max(window_end);
                (ended(rec.floor, rec.acks, req.id.0), rec.floor, rec.acks)
            }
            None => return self.dropped(DropReason::Malformed),
        };
        if has_ended {
            return self.dropped(DropReason::Stale);
        }
        // A client stays within 64 ids of its floor (so every call can be acknowledged);
        // one that does not would hold an entry per id. Its floor only grows, and the
        // record's is the highest seen, so a request past it broke the rule whatever the
        // order datagrams came in: refused, not run, not cached.
        if req.id.0 > floor.saturating_add(ACK_SPAN) {
            self.stats.rejected = self.stats.rejected.saturating_add(1);
            let reply = Reply::Rejected {
                code: RejectCode::INVALID_REQUEST,
                message: "request id more than 64 above the client's floor",
            };
            return self.scratch_reply(from, epoch, req.id, reply);
        }

        // One pass over the call's two buckets finds a copy of it, or where it goes.
        let open = match self.lookup(now, from, epoch, req.id.0, floor, acks) {
            Lookup::Found(index) => return self.known_call(index, from, req.id, len),
            Lookup::Open(index) => Some(index),
            Lookup::Full => None,
        };
        if self.draining {
            return self.shutting_down(from, epoch, req.id);
        }
        let index = match open.map_or_else(|| self.free_entry(now, epoch, req.id.0), Ok) {
            Ok(index) => index,
            Err(first_free) => return self.busy(from, now, epoch, req.id, first_free),
        };
        let state = EntryState::InProgress { cancelled: false };
        let generation = self.claim(index, from, epoch, req.id.0, state, window_end);
        if let Some(entry) = self.entries.as_mut().get_mut(index) {
            entry.received = saturating_u32(len);
        }
        let handle = RequestHandle {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            generation,
        };
        self.stats.requests = self.stats.requests.saturating_add(1);
        Received::Request(DatagramRequest {
            handle,
            id: req.id,
            target: req.target,
            body: req.body,
            deadline: now.saturating_add(budget),
        })
    }

    /// A copy of a call the cache has in entry `index`: its stored answer again, byte for
    /// byte, or a drop while it is still in progress (the answer will come once). Each copy
    /// of `len` bytes raises what may be sent for the call; an answer that does not fit the
    /// anti-amplification allowance yet is answered busy with hint 0 instead.
    fn known_call<'s>(
        &'s mut self,
        index: usize,
        from: &'s P,
        id: RequestId,
        len: usize,
    ) -> Received<'s, 'static, P> {
        let factor = self.config.amplification;
        let Some(entry) = self.entries.as_mut().get_mut(index) else {
            return self.dropped(DropReason::InProgress);
        };
        entry.received = entry.received.saturating_add(saturating_u32(len));
        let EntryState::Done { len: answer } = entry.state else {
            return self.dropped(DropReason::InProgress);
        };
        if !allowance(factor, entry, answer) {
            let epoch = entry.epoch;
            return self.withhold(index, from, epoch, id);
        }
        entry.sent = entry.sent.saturating_add(saturating_u32(answer));
        self.stats.replayed = self.stats.replayed.saturating_add(1);
        trace!("replaying the answer to call {}", id.0);
        let start = self.chunk_range(index).start;
        let bytes = self
            .storage
            .as_ref()
            .get(start..start.saturating_add(answer));
        Received::Reply(Transmit {
            to: from,
            bytes: bytes.unwrap_or_default(),
        })
    }

    /// The busy answer with hint 0 ("the answer is held back: send another copy") that
    /// stands in for an answer the anti-amplification rule holds back; its bytes count as
    /// sent for the call in entry `index`.
    fn withhold<'s>(
        &'s mut self,
        index: usize,
        to: &'s P,
        epoch: u64,
        id: RequestId,
    ) -> Received<'s, 'static, P> {
        match self.encode_withheld(index, epoch, id) {
            Some(len) => Received::Reply(self.scratch_transmit(to, len)),
            None => Received::Dropped(DropReason::Malformed),
        }
    }

    /// Encodes the busy answer that stands in for a held-back answer into the scratch
    /// chunk, counts it, and adds its bytes to what was sent for entry `index`.
    fn encode_withheld(&mut self, index: usize, epoch: u64, id: RequestId) -> Option<usize> {
        trace!("answer to call {} held back (anti-amplification)", id.0);
        self.stats.withheld = self.stats.withheld.saturating_add(1);
        let range = self.scratch_range();
        let frame = Frame::Response(Response {
            id,
            reply: Reply::Busy { retry_after_ms: 0 },
        });
        let out = self.storage.as_mut().get_mut(range)?;
        let len = encode_datagram(DatagramHeader::new(epoch, 0), &frame, out).ok()?;
        if let Some(entry) = self.entries.as_mut().get_mut(index) {
            entry.sent = entry.sent.saturating_add(saturating_u32(len));
        }
        Some(len)
    }

    /// The first `len` bytes of the scratch chunk, to `to`.
    fn scratch_transmit<'s>(&'s self, to: &'s P, len: usize) -> Transmit<'s, P> {
        let start = self.scratch_range().start;
        let bytes = self.storage.as_ref().get(start..start.saturating_add(len));
        Transmit {
            to,
            bytes: bytes.unwrap_or_default(),
        }
    }

    /// Takes entry `index` for a call (or, with id 0, a client record); returns its new
    /// generation.
    fn claim(
        &mut self,
        index: usize,
        from: &P,
        epoch: u64,
        id: u64,
        state: EntryState,
        expires: Instant,
    ) -> u32 {
        let Some(entry) = self.entries.as_mut().get_mut(index) else {
            return 0;
        };
        entry.peer = Some(from.clone());
        entry.epoch = epoch;
        entry.id = id;
        entry.generation = entry.generation.wrapping_add(1);
        entry.state = state;
        entry.expires = expires;
        entry.floor = 0;
        entry.acks = 0;
        entry.received = 0;
        entry.sent = 0;
        entry.generation
    }

    /// A busy answer: no room for the call now. The hint is when the first entry's window
    /// closes, but no later than `initial_rto`: clients acknowledge answers as they come,
    /// so room usually opens within a round trip, long before a window closes.
    fn busy<'s>(
        &'s mut self,
        to: &'s P,
        now: Instant,
        epoch: u64,
        id: RequestId,
        first_free: Instant,
    ) -> Received<'s, 'static, P> {
        let retry_after = first_free
            .saturating_duration_since(now)
            .min(self.config.initial_rto);
        self.stats.busy = self.stats.busy.saturating_add(1);
        let reply = Reply::Busy {
            retry_after_ms: budget_ms(retry_after).max(1),
        };
        self.scratch_reply(to, epoch, id, reply)
    }

    /// The rejection of a new call while draining (not cached: it depends only on the
    /// server's state, and a retransmission gets it again).
    fn shutting_down<'s>(
        &'s mut self,
        to: &'s P,
        epoch: u64,
        id: RequestId,
    ) -> Received<'s, 'static, P> {
        trace!("call {} rejected: shutting down", id.0);
        self.stats.shutting_down = self.stats.shutting_down.saturating_add(1);
        let reply = Reply::Rejected {
            code: RejectCode::SHUTTING_DOWN,
            message: "the server is shutting down",
        };
        self.scratch_reply(to, epoch, id, reply)
    }

    /// Begins a shutdown (drain mode): from now on every *new* call is rejected with
    /// [`RejectCode::SHUTTING_DOWN`] (not run, so the client may retry it elsewhere), while
    /// everything the server already took goes on: calls in progress are answered as
    /// usual, retransmissions of answered calls are answered again from the cache, cancels
    /// and acknowledgements are handled. Drain mode lasts for good. Keep reading the socket
    /// until [`is_drained`](Self::is_drained).
    pub fn drain(&mut self) {
        if !self.draining {
            debug!("datagram server draining");
        }
        self.draining = true;
    }

    /// `true` in drain mode once no call taken is still waited for: none is in progress,
    /// except calls whose window has closed or whose client has said they ended (a cancelled
    /// call the application never answers stops counting then). The server can stop. A
    /// driver that finds it `false` only because of such a call sees it turn `true` by time
    /// alone, at the latest when that call's window closes (`max_budget + max_latency` after
    /// it arrived); it should look again then, or keep its own shutdown deadline.
    #[must_use]
    pub fn is_drained(&self, now: Instant) -> bool {
        self.draining
            && !self.entries.as_ref().iter().any(|e| {
                matches!(e.state, EntryState::InProgress { .. })
                    && e.expires > now
                    && !self.ended_by_client(e)
            })
    }

    /// Answered calls whose client has not yet said they ended (by its floor or acks) and
    /// whose window is still open: answers the client may not have read yet.
    ///
    /// A draining server that stops the moment [`is_drained`](Self::is_drained) turns
    /// `true` can destroy answers still on their way: on Linux, a client's *connected* Unix
    /// datagram socket throws away every datagram it holds when it sends to a peer that has
    /// closed (an acknowledgement or a retransmission sent before it read the answers), and
    /// on UDP a lost answer can no longer be replayed from the cache. So a driver keeps
    /// serving after `is_drained` while this is not zero, for a short while: a client that
    /// reads acknowledges within a quarter of its initial retransmission timeout, or on
    /// its next request. Scans the cache: meant for the end of a drain, not every turn.
    #[must_use]
    pub fn unacknowledged(&self, now: Instant) -> usize {
        self.entries
            .as_ref()
            .iter()
            .filter(|e| {
                matches!(e.state, EntryState::Done { .. })
                    && e.expires > now
                    && !self.ended_by_client(e)
            })
            .count()
    }

    fn on_cancel(
        &mut self,
        from: &P,
        header: DatagramHeader,
        id: RequestId,
    ) -> Received<'_, 'static, P> {
        let epoch = header.epoch;
        if let Some(rec) = self
            .find(from, epoch, 0)
            .and_then(|i| self.entries.as_mut().get_mut(i))
        {
            merge_ended(&mut rec.floor, &mut rec.acks, header.floor, header.acks);
        }
        let Some(index) = self.find(from, epoch, id.0).filter(|_| id.0 != 0) else {
            return self.dropped(DropReason::StaleCancel);
        };
        let Some(entry) = self.entries.as_mut().get_mut(index) else {
            return self.dropped(DropReason::StaleCancel);
        };
        if entry.state != (EntryState::InProgress { cancelled: false }) {
            return self.dropped(DropReason::StaleCancel);
        }
        entry.state = EntryState::InProgress { cancelled: true };
        let handle = RequestHandle {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            generation: entry.generation,
        };
        self.stats.cancelled = self.stats.cancelled.saturating_add(1);
        Received::Cancelled(handle)
    }

    /// The cache is set-associative with two choices: a key hashes to two buckets of
    /// [`WAYS`] entries; it is looked up in both and stored in whichever has room. So every
    /// lookup costs at most `2 × WAYS` comparisons whatever the cache size, and (the "power
    /// of two choices") the cache fills nearly up before a bucket overflows.
    fn buckets(&self, epoch: u64, id: u64) -> [Range<usize>; 2] {
        let len = self.entries.as_ref().len();
        let count = (len / WAYS).max(1) as u64;
        let mut state = epoch ^ id.rotate_left(32);
        let pick = |hash: u64| {
            let bucket = usize::try_from(hash.checked_rem(count).unwrap_or(0)).unwrap_or(0);
            let start = bucket.saturating_mul(WAYS);
            start..start.saturating_add(WAYS).min(len)
        };
        let first = pick(crate::rng::splitmix64(&mut state));
        let second = pick(crate::rng::splitmix64(&mut state));
        [first, second]
    }

    /// The entry for (peer, epoch, id), live or not yet reused; id 0 finds the record.
    /// Calls have ids from 1, so records and calls never mix.
    fn find(&self, from: &P, epoch: u64, id: u64) -> Option<usize> {
        self.buckets(epoch, id).into_iter().find_map(|bucket| {
            let start = bucket.start;
            let offset = self.entries.as_ref().get(bucket)?.iter().position(|e| {
                e.state != EntryState::Free
                    && e.id == id
                    && e.epoch == epoch
                    && e.peer.as_ref() == Some(from)
            })?;
            start.checked_add(offset)
        })
    }

    /// [`find`](Self::find) and most of [`free_entry`](Self::free_entry) in one pass over
    /// the two buckets of (epoch, id): the entry of (from, epoch, id) if there is one; else
    /// the first open entry (free or past its window) of the bucket with more of them;
    /// else the first entry of a call this same client has declared ended (by the `floor`
    /// and `acks` of its record), the usual case once a busy client's calls fill the
    /// cache; else `Full`, and `free_entry` looks for calls other clients have ended. One
    /// pass instead of three, and no record lookups, on the path of every new call.
    fn lookup(&self, now: Instant, from: &P, epoch: u64, id: u64, floor: u64, acks: u64) -> Lookup {
        let mut best: Option<(usize, usize)> = None; // (open entries, first open index)
        let mut first_ended = None;
        for bucket in self.buckets(epoch, id) {
            let start = bucket.start;
            let entries = self.entries.as_ref().get(bucket).unwrap_or_default();
            let mut count = 0usize;
            let mut first = None;
            for (offset, e) in entries.iter().enumerate() {
                // The peer (up to a 108-byte path) is compared last, when all else agrees.
                let same_client = || e.epoch == epoch && e.peer.as_ref() == Some(from);
                if e.id == id && e.state != EntryState::Free && same_client() {
                    return Lookup::Found(start.saturating_add(offset));
                }
                if e.state == EntryState::Free || e.expires <= now {
                    count = count.saturating_add(1);
                    first = first.or(Some(offset));
                } else if first_ended.is_none()
                    && matches!(
                        e.state,
                        EntryState::InProgress { .. } | EntryState::Done { .. }
                    )
                    && ended(floor, acks, e.id)
                    && same_client()
                {
                    first_ended = Some(start.saturating_add(offset));
                }
            }
            if let Some(offset) = first {
                if best.is_none_or(|(c, _)| count > c) {
                    best = Some((count, start.saturating_add(offset)));
                }
            }
        }
        match (best, first_ended) {
            (Some((_, index)), _) | (None, Some(index)) => Lookup::Open(index),
            (None, None) => Lookup::Full,
        }
    }

    /// Whether `from` may open one more epoch under
    /// [`max_peer_entries`](DatagramConfig::max_peer_entries): each of its live records
    /// counts as [`EPOCH_ENTRIES`]. When it may not, the time its first record's window
    /// closes, counted in `busy_peer_quota`. Scans the cache, once per new client record.
    fn peer_room(&mut self, now: Instant, from: &P) -> Result<(), Instant> {
        let quota = self.config.max_peer_entries.max(EPOCH_ENTRIES) / EPOCH_ENTRIES;
        let mut live = 0usize;
        let mut first_free: Option<Instant> = None;
        for e in self.entries.as_ref() {
            if e.state == EntryState::Client && e.expires > now && e.peer.as_ref() == Some(from) {
                live = live.saturating_add(1);
                first_free = Some(first_free.map_or(e.expires, |t| t.min(e.expires)));
            }
        }
        if live < quota {
            return Ok(());
        }
        self.stats.busy_peer_quota = self.stats.busy_peer_quota.saturating_add(1);
        Err(first_free.unwrap_or(now))
    }

    /// A reusable entry in either bucket of (epoch, id): free, past its window, or a call
    /// its client has declared ended (below the client's floor, or acknowledged). When
    /// none is, the time the first entry's window closes.
    fn free_entry(&self, now: Instant, epoch: u64, id: u64) -> Result<usize, Instant> {
        let open = |e: &DatagramEntry<P>| e.state == EntryState::Free || e.expires <= now;
        let buckets = self.buckets(epoch, id);
        // Two choices: the bucket with more open entries, which keeps buckets even.
        let mut best: Option<(usize, usize)> = None; // (open entries, first open index)
        for bucket in buckets.clone() {
            let start = bucket.start;
            let entries = self.entries.as_ref().get(bucket).unwrap_or_default();
            let count = entries.iter().filter(|e| open(e)).count();
            if let Some(offset) = entries.iter().position(open) {
                if best.is_none_or(|(c, _)| count > c) {
                    best = Some((count, start.saturating_add(offset)));
                }
            }
        }
        if let Some((_, index)) = best {
            return Ok(index);
        }
        // Then a call its client has declared ended.
        let mut first_free: Option<Instant> = None;
        for bucket in buckets {
            let start = bucket.start;
            let entries = self.entries.as_ref().get(bucket).unwrap_or_default();
            if let Some(offset) = entries.iter().position(|e| self.ended_by_client(e)) {
                return Ok(start.saturating_add(offset));
            }
            let soonest = entries.iter().map(|e| e.expires).min();
            first_free = [first_free, soonest].into_iter().flatten().min();
        }
        Err(first_free.unwrap_or(now))
    }

    /// Whether `e` is a call its client has since declared ended: no copy of it can be
    /// run again, because the client's record refuses every call it says has ended.
    fn ended_by_client(&self, e: &DatagramEntry<P>) -> bool {
        if !matches!(
            e.state,
            EntryState::InProgress { .. } | EntryState::Done { .. }
        ) {
            return false;
        }
        let Some(peer) = e.peer.as_ref() else {
            return false;
        };
        self.find(peer, e.epoch, 0)
            .and_then(|i| self.entries.as_ref().get(i))
            .is_some_and(|rec| ended(rec.floor, rec.acks, e.id))
    }

    /// Encodes an answer made on the spot into the scratch chunk.
    fn scratch_reply<'s>(
        &'s mut self,
        to: &'s P,
        epoch: u64,
        id: RequestId,
        reply: Reply<'_>,
    ) -> Received<'s, 'static, P> {
        let range = self.scratch_range();
        let frame = Frame::Response(Response { id, reply });
        let Some(out) = self.storage.as_mut().get_mut(range) else {
            return Received::Dropped(DropReason::Malformed);
        };
        match encode_datagram(DatagramHeader::new(epoch, 0), &frame, out) {
            Ok(len) => Received::Reply(Transmit {
                to,
                bytes: out.get(..len).unwrap_or_default(),
            }),
            Err(_) => Received::Dropped(DropReason::Malformed),
        }
    }

    /// Answers the call `handle` names. The answer is stored for retransmissions, and
    /// returned for the caller to send now. A [`Reply::Busy`] (the application could not
    /// take the call now) is not stored: the call's entry is freed, so the client's next
    /// copy, after the hint, is taken as a new call.
    ///
    /// An answer that does not fit one datagram is replaced by
    /// [`ERROR_ANSWER_TOO_LARGE`](crate::wire::ERROR_ANSWER_TOO_LARGE) (the function ran),
    /// and a rejection whose message does not fit loses its message; both are counted in
    /// [`DatagramServerStats::answers_too_large`].
    ///
    /// # Errors
    ///
    /// [`DatagramRespondError`]; on `TooLarge` the call is still in progress.
    pub fn respond(
        &mut self,
        handle: RequestHandle,
        reply: Reply<'_>,
    ) -> Result<Transmit<'_, P>, DatagramRespondError> {
        let index =
            usize::try_from(handle.index).map_err(|_| DatagramRespondError::UnknownRequest)?;
        let range = self.chunk_range(index);
        let entry = self
            .entries
            .as_mut()
            .get_mut(index)
            .filter(|e| e.generation == handle.generation)
            .filter(|e| matches!(e.state, EntryState::InProgress { .. }))
            .ok_or(DatagramRespondError::UnknownRequest)?;
        let out = self
            .storage
            .as_mut()
            .get_mut(range)
            .ok_or(DatagramRespondError::TooLarge)?;
        let header = DatagramHeader::new(entry.epoch, 0);
        let id = RequestId(entry.id);
        // A busy hint of 0 means "the answer is held back" (anti-amplification): an
        // application's busy, which means "not run", says at least 1 ms.
        let mut reply = match reply {
            Reply::Busy { retry_after_ms: 0 } => Reply::Busy { retry_after_ms: 1 },
            other => other,
        };
        let mut replaced = false;
        let len = loop {
            let frame = Frame::Response(Response { id, reply });
            match encode_datagram(header, &frame, out) {
                Ok(len) => break len,
                Err(_) => {
                    reply = too_large_stand_in(&reply, TOO_LARGE_MESSAGE)
                        .ok_or(DatagramRespondError::TooLarge)?;
                    replaced = true;
                }
            }
        };
        if replaced {
            warn!("answer to {} does not fit one datagram", id.0);
            self.stats.answers_too_large = self.stats.answers_too_large.saturating_add(1);
        }
        let busy = matches!(reply, Reply::Busy { .. });
        if busy {
            // Busy means "not run, try later": the client keeps the call and retransmits
            // after the hint, so the entry is freed for that copy to be taken afresh rather
            // than kept to replay the busy answer until the deadline.
            entry.state = EntryState::Free;
            self.stats.busy = self.stats.busy.saturating_add(1);
        } else {
            entry.state = EntryState::Done { len };
            self.stats.responses = self.stats.responses.saturating_add(1);
        }
        let withhold = !busy && !allowance(self.config.amplification, entry, len);
        if !withhold {
            entry.sent = entry.sent.saturating_add(saturating_u32(len));
        }
        let epoch = entry.epoch;
        let (start, len) = if withhold {
            // Kept for the client's next copy, which raises the allowance.
            let busy_len = self
                .encode_withheld(index, epoch, id)
                .ok_or(DatagramRespondError::TooLarge)?;
            (self.scratch_range().start, busy_len)
        } else {
            (self.chunk_range(index).start, len)
        };
        let to = self
            .entries
            .as_ref()
            .get(index)
            .and_then(|e| e.peer.as_ref())
            .ok_or(DatagramRespondError::UnknownRequest)?;
        let bytes = self.storage.as_ref().get(start..start.saturating_add(len));
        Ok(Transmit {
            to,
            bytes: bytes.unwrap_or_default(),
        })
    }

    /// Calls taken and not yet answered.
    #[must_use]
    pub fn in_progress(&self) -> usize {
        self.entries
            .as_ref()
            .iter()
            .filter(|e| matches!(e.state, EntryState::InProgress { .. }))
            .count()
    }

    /// This server's counters.
    #[must_use]
    pub fn stats(&self) -> &DatagramServerStats {
        &self.stats
    }
}

/// Whether `n` more bytes may be sent for the call in `entry` under the anti-amplification
/// rule: at most `factor` times the bytes of its copies received (`factor` 0: no limit).
fn allowance<P>(factor: u32, entry: &DatagramEntry<P>, n: usize) -> bool {
    factor == 0
        || u64::from(entry.sent).saturating_add(u64::try_from(n).unwrap_or(u64::MAX))
            <= u64::from(entry.received).saturating_mul(u64::from(factor))
}

/// A byte count as the entries keep it (a datagram is far below 4 GiB).
fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
