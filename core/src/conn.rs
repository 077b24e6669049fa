//! What client and server connections share: the transmit queue, the handshake, keepalive
//! and the close state. The receive side ([`FrameDecoder`](crate::frame::FrameDecoder))
//! lives beside this in each connection, so a frame borrowed from it can be handled here.

use core::fmt;
use core::ops::Range;

use crate::buffer::Buffer;
use crate::config::{BASELINE_BUFFER, Config, ConfigError};
use crate::frame::{DecodeError, FrameDecoder};
use crate::time::{Duration, Instant};
use crate::wire::{
    BASELINE_MAX_FRAME_LEN, CloseCode, ERROR_ANSWER_TOO_LARGE, Frame, Hello, LEN_PREFIX, MAGIC,
    MAX_HELLO_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, Reply, WireError,
};

/// What the peer announced in its hello, and the version both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct PeerInfo {
    /// The protocol version in use: the highest both sides speak.
    pub version: u8,
    /// The longest frame body the peer accepts.
    pub max_frame_len: u32,
    /// Requests the peer accepts in flight (0 from a client).
    pub max_in_flight: u32,
}

/// A rule of the protocol the peer broke. The connection sends a
/// [`Close`](Frame::Close) with [`CloseCode::PROTOCOL_VIOLATION`] (or the code named) and
/// closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame body did not decode.
    Malformed(WireError),
    /// A length prefix was over the limit we announced ([`CloseCode::FRAME_TOO_LARGE`]).
    TooLong(DecodeError),
    /// A frame that this side never receives, a second hello, or a request after the
    /// client's own go-away.
    UnexpectedFrame,
    /// A request id that is not greater than the previous one.
    IdNotIncreasing,
    /// A request with id 0, which is never valid (ids start at 1).
    ZeroId,
    /// The transport ended in the middle of a frame.
    TruncatedFrame,
}

impl core::error::Error for ProtocolError {}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed frame: {e}"),
            Self::TooLong(e) => write!(f, "{e}"),
            Self::UnexpectedFrame => f.write_str("unexpected frame"),
            Self::IdNotIncreasing => f.write_str("request id did not increase"),
            Self::ZeroId => f.write_str("request id 0"),
            Self::TruncatedFrame => f.write_str("stream ended in the middle of a frame"),
        }
    }
}

/// Why a connection ended, reported once as the last event of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CloseReason {
    /// A graceful close (go-away) finished: every call taken was answered.
    Graceful,
    /// The peer closed the transport without a go-away or a close frame.
    TransportClosed,
    /// The peer sent a [`Close`](Frame::Close) frame with this code.
    PeerClosed(CloseCode),
    /// The peer broke the protocol; we sent a close frame.
    Protocol(ProtocolError),
    /// The peer's first frame was not a wirecall hello.
    NotWirecall,
    /// The version ranges do not overlap.
    VersionMismatch {
        /// Our (lowest, highest) version.
        local: (u8, u8),
        /// The peer's (lowest, highest) version.
        remote: (u8, u8),
    },
    /// No hello arrived within the handshake timeout.
    HandshakeTimedOut,
    /// Nothing arrived within the keepalive timeout after a ping.
    KeepaliveTimedOut,
    /// A graceful close did not finish within the drain timeout.
    DrainTimedOut,
    /// A frame that had begun to arrive did not complete within the frame timeout (a peer
    /// that dribbles bytes must not hold the connection).
    FrameTimedOut,
    /// The application aborted the connection.
    Aborted,
    /// This server refused the connection ([`CloseCode::REFUSED`]): nothing on it ran.
    Refused,
    /// This server refused the connection because it does not take this peer
    /// ([`CloseCode::NOT_ALLOWED`]): nothing on it ran.
    NotAllowed,
}

impl core::error::Error for CloseReason {}

impl CloseReason {
    /// `false` only for [`CloseReason::Graceful`].
    #[must_use]
    pub fn is_error(&self) -> bool {
        !matches!(self, Self::Graceful)
    }

    /// The code to put in our close frame, or `None` when no close frame is sent.
    fn close_code(&self) -> Option<CloseCode> {
        Some(match self {
            // The peer is gone: there is nobody to send a close frame to.
            Self::Protocol(ProtocolError::TruncatedFrame) => return None,
            Self::Protocol(ProtocolError::TooLong(_)) => CloseCode::FRAME_TOO_LARGE,
            Self::Protocol(_) => CloseCode::PROTOCOL_VIOLATION,
            Self::NotWirecall => CloseCode::NOT_WIRECALL,
            Self::VersionMismatch { .. } => CloseCode::UNSUPPORTED_VERSION,
            Self::HandshakeTimedOut => CloseCode::HANDSHAKE_TIMEOUT,
            Self::KeepaliveTimedOut => CloseCode::KEEPALIVE_TIMEOUT,
            Self::DrainTimedOut => CloseCode::DRAIN_TIMEOUT,
            Self::FrameTimedOut => CloseCode::FRAME_TIMEOUT,
            Self::Refused => CloseCode::REFUSED,
            Self::NotAllowed => CloseCode::NOT_ALLOWED,
            Self::Graceful | Self::TransportClosed | Self::PeerClosed(_) | Self::Aborted => {
                return None;
            }
        })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Graceful => f.write_str("closed gracefully"),
            Self::TransportClosed => f.write_str("peer closed the connection"),
            Self::PeerClosed(CloseCode::REFUSED) => f.write_str(
                "the server refused the connection (REFUSED): it is at its connection limit \
                 or shutting down",
            ),
            Self::PeerClosed(CloseCode::NOT_ALLOWED) => f.write_str(
                "the server does not allow this client (NOT_ALLOWED): its credentials or \
                 identity are not on the server's allowlist",
            ),
            Self::PeerClosed(code) => write!(f, "peer closed the connection: {code}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::NotWirecall => f.write_str("peer does not speak wirecall"),
            Self::VersionMismatch { local, remote } => write!(
                f,
                "no common protocol version: we speak {}..={}, peer {}..={}",
                local.0, local.1, remote.0, remote.1
            ),
            Self::HandshakeTimedOut => f.write_str("no hello from the peer in time"),
            Self::KeepaliveTimedOut => f.write_str("peer stopped answering (keepalive timeout)"),
            Self::DrainTimedOut => f.write_str("graceful close did not finish in time"),
            Self::FrameTimedOut => f.write_str("a frame from the peer did not complete in time"),
            Self::Aborted => f.write_str("aborted locally"),
            Self::Refused => f.write_str("refused: the server takes no connection now"),
            Self::NotAllowed => f.write_str("refused: the peer is not allowed"),
        }
    }
}

/// Why a frame could not be queued for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Not enough free room now; send what is queued and try again.
    Full,
    /// Larger than the peer accepts or than the buffer could ever hold.
    TooLarge,
}

/// The transmit queue: encoded frames waiting for the transport, in caller storage.
#[derive(Debug)]
pub(crate) struct TxQueue<B> {
    buf: B,
    start: usize,
    end: usize,
    /// Bytes handed to the transport since the connection began.
    sent: u64,
    /// Bytes still to send of the frame at the head of the queue when it is partly sent
    /// (0 when the head is at a frame boundary), so whole unsent frames can be dropped.
    head_left: usize,
}

impl<B: Buffer> TxQueue<B> {
    pub(crate) fn new(buf: B) -> Self {
        Self {
            buf,
            start: 0,
            end: 0,
            sent: 0,
            head_left: 0,
        }
    }

    /// The largest body that can ever be queued.
    pub(crate) fn max_body(&self) -> usize {
        self.buf.max_len().saturating_sub(LEN_PREFIX)
    }

    /// Gives storage back down to `keep` bytes when nothing is queued.
    pub(crate) fn shrink(&mut self, keep: usize) -> bool {
        if self.start != self.end {
            return false;
        }
        self.start = 0;
        self.end = 0;
        self.buf.shrink(keep);
        true
    }

    pub(crate) fn pending(&self) -> &[u8] {
        self.buf
            .bytes()
            .get(self.start..self.end)
            .unwrap_or_default()
    }

    /// Bytes handed to the transport so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// The stream offset just past everything queued so far.
    pub(crate) fn queued_end(&self) -> u64 {
        self.sent
            .saturating_add(self.end.saturating_sub(self.start) as u64)
    }

    pub(crate) fn advance(&mut self, n: usize) {
        let mut n = n.min(self.end.saturating_sub(self.start));
        self.sent = self.sent.saturating_add(n as u64);
        // Walk frame boundaries, so `head_left` knows where the head frame ends.
        while n > 0 {
            if self.head_left == 0 {
                let prefix = self
                    .buf
                    .bytes()
                    .get(self.start..)
                    .and_then(|b| b.first_chunk::<LEN_PREFIX>())
                    .map_or(0, |p| u32::from_be_bytes(*p) as usize);
                self.head_left = prefix.saturating_add(LEN_PREFIX);
            }
            let take = n.min(self.head_left);
            self.start = self.start.saturating_add(take);
            self.head_left = self.head_left.saturating_sub(take);
            n = n.saturating_sub(take);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every frame not yet begun, keeping the rest of a partly sent one so the
    /// stream stays well-formed. Returns the stream offset everything kept ends at: bytes
    /// before it were or will be sent, bytes after it never will.
    pub(crate) fn discard_unsent(&mut self) -> u64 {
        let mut keep = self.head_left;
        if self.sent == 0 && keep == 0 {
            // Nothing has gone out yet: the head frame is our hello, which must still go
            // first or the peer cannot read the close frame that follows.
            keep = self
                .buf
                .bytes()
                .get(self.start..self.end)
                .and_then(|b| b.first_chunk::<LEN_PREFIX>())
                .map_or(0, |p| {
                    (u32::from_be_bytes(*p) as usize).saturating_add(LEN_PREFIX)
                });
        }
        self.end = self.start.saturating_add(keep).min(self.end);
        self.queued_end()
    }

    /// Encodes `frame` behind its prefix at the end of the queue, all or nothing.
    pub(crate) fn push(&mut self, frame: &Frame<'_>, max_body: u32) -> Result<(), PushError> {
        let written = match self.encode_at_end(frame) {
            Ok(n) => n,
            Err(_) => {
                if self.start > 0 {
                    let (start, end) = (self.start, self.end);
                    self.buf.bytes_mut().copy_within(start..end, 0);
                    self.start = 0;
                    self.end = end.saturating_sub(start);
                }
                // A growable buffer grows to take the frame, up to its limit.
                let want = self
                    .end
                    .saturating_add(frame.encoded_len())
                    .saturating_add(LEN_PREFIX);
                if want > self.buf.bytes().len() && want <= self.buf.max_len() {
                    self.buf.grow(want);
                }
                self.encode_at_end(frame)
                    .map_err(|_| self.classify(frame, max_body))?
            }
        };
        if written.saturating_sub(LEN_PREFIX) > max_body as usize {
            return Err(PushError::TooLarge);
        }
        self.end = self.end.saturating_add(written);
        Ok(())
    }

    fn encode_at_end(&mut self, frame: &Frame<'_>) -> Result<usize, WireError> {
        let free = self.buf.bytes_mut().get_mut(self.end..).unwrap_or_default();
        crate::frame::encode_frame(frame, free)
    }

    fn classify(&self, frame: &Frame<'_>, max_body: u32) -> PushError {
        let len = frame.encoded_len();
        if len > max_body as usize || len > self.max_body() {
            PushError::TooLarge
        } else {
            PushError::Full
        }
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Closed with this reason; the closed event is not yet reported.
    Closing(CloseReason),
    /// The closed event has been reported; nothing more happens.
    Done,
}

/// Connection state shared by both roles, minus the receive buffer.
#[derive(Debug)]
pub(crate) struct Conn<B> {
    pub(crate) tx: TxQueue<B>,
    pub(crate) config: Config,
    pub(crate) peer: Option<PeerInfo>,
    started: Instant,
    last_rx: Instant,
    /// The outstanding ping: (nonce, when sent).
    ping: Option<(u64, Instant)>,
    next_nonce: u64,
    /// The peer closed its end; frames already buffered are still processed.
    pub(crate) eof: bool,
    /// When a graceful close began (either side), for the drain timeout.
    pub(crate) draining_since: Option<Instant>,
    /// After a close that is not graceful: the stream offset the transmit queue was cut
    /// at. A request ending at or before it was or will be sent; any later one never is.
    pub(crate) committed: Option<u64>,
    /// The ping whose timer runs could not be queued yet (the queue was full).
    ping_owed: bool,
    /// Since when part of a frame has waited in the receive buffer for the rest (`None`
    /// when the buffer holds whole frames only), for the frame timeout.
    partial_since: Option<Instant>,
    phase: Phase,
}

impl<B: Buffer> Conn<B> {
    /// Starts a connection and queues our hello.
    pub(crate) fn new(tx: B, config: Config, max_in_flight: u32, now: Instant) -> Self {
        let mut conn = Self {
            tx: TxQueue::new(tx),
            config,
            peer: None,
            started: now,
            last_rx: now,
            ping: None,
            next_nonce: 1,
            eof: false,
            draining_since: None,
            committed: None,
            ping_owed: false,
            partial_since: None,
            phase: Phase::Open,
        };
        let hello = Hello {
            magic: MAGIC,
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            max_frame_len: config.max_frame_len,
            max_in_flight,
        };
        // The buffer was checked to hold a baseline frame, and a hello is far smaller.
        let _ = conn.tx.push(&Frame::Hello(hello), u32::MAX);
        conn
    }

    /// The largest body we may send now: the peer's limit once known, the baseline before.
    pub(crate) fn send_limit(&self) -> u32 {
        self.peer
            .map_or(BASELINE_MAX_FRAME_LEN, |p| p.max_frame_len)
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Notes that bytes arrived (for keepalive).
    pub(crate) fn on_input(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// Notes whether the receive buffer holds part of a frame waiting for the rest: its
    /// clock starts at the latest input (when those bytes had come) and runs until a frame
    /// completes.
    fn partial_frame(&mut self, pending: bool) {
        if !pending {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(self.last_rx);
        }
    }

    /// Ends the connection with `reason`, queueing a close frame when the reason has one.
    /// The first reason wins.
    pub(crate) fn close(&mut self, reason: CloseReason) {
        let keep = matches!(
            reason,
            CloseReason::Graceful | CloseReason::Refused | CloseReason::NotAllowed
        );
        self.close_with(reason, keep);
    }

    /// Ends the connection with `reason` and keeps what is queued: a server whose client
    /// ended its side of the stream sends the answers it still owes before closing.
    pub(crate) fn end_keeping_unsent(&mut self, reason: CloseReason) {
        self.close_with(reason, true);
    }

    fn close_with(&mut self, reason: CloseReason, keep_unsent: bool) {
        if !self.is_open() {
            return;
        }
        if !keep_unsent {
            // Nothing not yet begun goes out after a close: a request the caller is told
            // was never sent must never reach the server.
            self.committed = Some(self.tx.discard_unsent());
        }
        if let Some(code) = reason.close_code() {
            // Debug, not warn: a client's caller gets the reason as the call's failure, a
            // server's driver logs it (rate-limited: one bad peer each), so a warning here
            // would say it twice, once per peer.
            debug!("closing connection: {}", reason);
            let message = match reason {
                CloseReason::Protocol(ProtocolError::Malformed(_)) => "malformed frame",
                CloseReason::Protocol(ProtocolError::TooLong(_)) => "frame too large",
                CloseReason::Protocol(ProtocolError::UnexpectedFrame) => "unexpected frame",
                CloseReason::Protocol(ProtocolError::TruncatedFrame) => "truncated frame",
                CloseReason::Protocol(ProtocolError::IdNotIncreasing) => {
                    "request id did not increase"
                }
                CloseReason::Protocol(ProtocolError::ZeroId) => "request id 0",
                CloseReason::NotWirecall => "expected a wirecall hello",
                CloseReason::VersionMismatch { .. } => "no common protocol version",
                CloseReason::HandshakeTimedOut => "no hello in time",
                CloseReason::KeepaliveTimedOut => "no answer to keepalive",
                CloseReason::DrainTimedOut => "graceful close timed out",
                CloseReason::FrameTimedOut => "frame not completed in time",
                CloseReason::Refused => "server takes no connection now",
                CloseReason::NotAllowed => "peer not allowed",
                _ => "",
            };
            // Best effort: if the queue is full the peer is not reading anyway.
            let _ = self.tx.push(&Frame::Close { code, message }, u32::MAX);
        } else {
            debug!("connection closed: {}", reason);
        }
        self.phase = Phase::Closing(reason);
    }

    /// The close reason, while the closed event is not yet reported.
    pub(crate) fn closing_reason(&self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closing(reason) => Some(reason),
            _ => None,
        }
    }

    /// The close reason not yet reported, marking it reported.
    pub(crate) fn take_closed(&mut self) -> Option<CloseReason> {
        match self.phase {
            Phase::Closing(reason) => {
                self.phase = Phase::Done;
                Some(reason)
            }
            _ => None,
        }
    }

    /// Handles the peer's hello: the first frame, which must be one.
    pub(crate) fn on_hello(&mut self, frame: &Frame<'_>) -> Result<PeerInfo, CloseReason> {
        let Frame::Hello(hello) = frame else {
            return Err(CloseReason::NotWirecall);
        };
        if hello.magic != MAGIC {
            return Err(CloseReason::NotWirecall);
        }
        let version = hello.max_version.min(PROTOCOL_VERSION);
        if version < hello.min_version.max(MIN_PROTOCOL_VERSION)
            || hello.min_version > hello.max_version
        {
            return Err(CloseReason::VersionMismatch {
                local: (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION),
                remote: (hello.min_version, hello.max_version),
            });
        }
        let info = PeerInfo {
            version,
            // A peer announcing less than the baseline is still held to the baseline it
            // must accept; what it announces above that is what we may send.
            max_frame_len: hello
                .max_frame_len
                .max(BASELINE_MAX_FRAME_LEN)
                .min(u32::try_from(self.tx.max_body()).unwrap_or(u32::MAX)),
            max_in_flight: hello.max_in_flight,
        };
        debug!(
            "handshake done: version {}, peer accepts frames up to {}",
            version, info.max_frame_len
        );
        self.peer = Some(info);
        Ok(info)
    }

    /// Handles ping and pong. Returns `Err(())` when a pong could not be queued: leave the
    /// ping unconsumed and try again after transmitting.
    pub(crate) fn on_keepalive(&mut self, frame: &Frame<'_>) -> Result<(), ()> {
        match *frame {
            Frame::Ping { nonce } => self
                .tx
                .push(&Frame::Pong { nonce }, u32::MAX)
                .map_err(|_| ()),
            Frame::Pong { nonce } => {
                if self.ping.is_some_and(|(n, _)| n == nonce) {
                    self.ping = None;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Fires the handshake, keepalive and drain timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if !self.is_open() {
            return;
        }
        if self.peer.is_none() && now >= self.started.saturating_add(self.config.handshake_timeout)
        {
            self.close(CloseReason::HandshakeTimedOut);
            return;
        }
        if let Some(since) = self.draining_since {
            if now >= since.saturating_add(self.config.drain_timeout) {
                self.close(CloseReason::DrainTimedOut);
                return;
            }
        }
        if let Some(since) = self.partial_since {
            if now >= since.saturating_add(self.config.frame_timeout) {
                self.close(CloseReason::FrameTimedOut);
                return;
            }
        }
        let Some(interval) = self.config.keepalive_interval else {
            return;
        };
        if self.peer.is_none() {
            return;
        }
        match self.ping {
            Some((_, sent)) if sent < self.last_rx => {
                self.ping = None;
                self.ping_owed = false;
            }
            Some((nonce, sent)) => {
                if now >= sent.saturating_add(self.config.keepalive_timeout) {
                    self.close(CloseReason::KeepaliveTimedOut);
                } else if self.ping_owed && self.tx.push(&Frame::Ping { nonce }, u32::MAX).is_ok() {
                    self.ping_owed = false;
                }
                return;
            }
            None => {}
        }
        if now >= self.last_rx.saturating_add(interval) {
            // The timer starts now even if the ping cannot be queued yet: a peer that
            // neither sends nor reads must not hold the connection open.
            let nonce = self.next_nonce;
            self.next_nonce = nonce.wrapping_add(1);
            self.ping = Some((nonce, now));
            self.ping_owed = self.tx.push(&Frame::Ping { nonce }, u32::MAX).is_err();
            trace!("keepalive ping {}", nonce);
        }
    }

    /// The earliest of the handshake, keepalive and drain timers.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if !self.is_open() {
            return None;
        }
        let mut next = None;
        if self.peer.is_none() {
            next = earliest(
                next,
                Some(self.started.saturating_add(self.config.handshake_timeout)),
            );
        }
        if let Some(since) = self.draining_since {
            next = earliest(next, Some(since.saturating_add(self.config.drain_timeout)));
        }
        if let Some(since) = self.partial_since {
            next = earliest(next, Some(since.saturating_add(self.config.frame_timeout)));
        }
        if let (Some(interval), Some(_)) = (self.config.keepalive_interval, self.peer) {
            let at = match self.ping {
                Some((_, sent)) if sent >= self.last_rx => {
                    sent.saturating_add(self.config.keepalive_timeout)
                }
                _ => self.last_rx.saturating_add(interval),
            };
            next = earliest(next, Some(at));
        }
        next
    }
}

/// A frame of the peer's that only one role handles (a request, a response, a cancel, a
/// go-away), found by [`read_frame`]. It borrows the receive buffer; the bytes stay there
/// until [`consume`](Self::consume) and the next call that changes the buffer.
pub(crate) struct FrameIn<'a, B> {
    rx: &'a FrameDecoder<B>,
    range: Range<usize>,
    /// The decoded frame.
    pub(crate) frame: Frame<'a>,
}

impl<B: Buffer> FrameIn<'_, B> {
    /// Takes the frame out of the receive buffer: it has been handled.
    pub(crate) fn consume(&self) {
        self.rx.consume(&self.range);
    }

    /// Where `part` of the frame sits in the receive buffer, to find it again later.
    pub(crate) fn locate(&self, part: &[u8]) -> Range<usize> {
        self.rx.locate(part)
    }
}

/// What [`read_frame`] found.
pub(crate) enum Incoming<'a, B> {
    /// A frame for the role to handle.
    Frame(FrameIn<'a, B>),
    /// The peer's hello arrived and was accepted (it is consumed).
    Connected(PeerInfo),
    /// Nothing more to read now: no whole frame is buffered, or a pong could not be
    /// queued (the ping waits in the buffer until there is room).
    Idle,
    /// The peer ended its side of the stream between two frames, and every frame it sent
    /// has been handled: the role decides when to close ([`CloseReason::TransportClosed`]).
    Ended,
    /// The connection has just closed; its reason waits in `Conn::take_closed`.
    Closed,
}

/// Frame tags the shared part handles itself, from the first byte of a body (postcard
/// writes the variant index `0..=7` as a one-byte varint). A first byte with the varint's
/// continuation bit set is a tag written in more bytes than needed, which decoding accepts
/// (PROTOCOL.md section 2): such a frame is decoded here to learn its type.
const TAG_HELLO: u8 = 0;
const TAG_PING: u8 = 4;
const TAG_PONG: u8 = 5;
const TAG_CLOSE: u8 = 7;

/// The part of reading a stream that both roles share: the handshake (the first frame
/// must be an acceptable hello), length and decode checks, end of stream, keepalive
/// frames, the peer's close frame and a second hello. Returns the first frame that only
/// the role can handle, or why there is none. Every protocol error closes `conn`.
pub(crate) fn read_frame<'a, B: Buffer>(
    rx: &'a FrameDecoder<B>,
    conn: &mut Conn<B>,
) -> Incoming<'a, B> {
    let range = loop {
        if !conn.is_open() {
            return Incoming::Closed;
        }
        if conn.peer.is_none() && rx.peek_len().is_some_and(|l| l > MAX_HELLO_LEN) {
            conn.close(CloseReason::NotWirecall);
            return Incoming::Closed;
        }
        let range = match rx.peek() {
            Ok(Some(range)) => {
                conn.partial_frame(false);
                range
            }
            Ok(None) if conn.eof && rx.buffered() > 0 => {
                conn.close(CloseReason::Protocol(ProtocolError::TruncatedFrame));
                return Incoming::Closed;
            }
            Ok(None) if conn.eof => return Incoming::Ended,
            Ok(None) => {
                conn.partial_frame(rx.buffered() > 0);
                return Incoming::Idle;
            }
            Err(e) => {
                conn.close(CloseReason::Protocol(ProtocolError::TooLong(e)));
                return Incoming::Closed;
            }
        };
        let tag = rx.get(range.clone()).first().copied();
        let shared = matches!(tag, Some(TAG_HELLO | TAG_PING | TAG_PONG | TAG_CLOSE))
            || tag.is_some_and(|t| t & 0x80 != 0);
        if conn.peer.is_some() && !shared {
            break range;
        }
        // The handshake and the frames both roles handle: decoded here, for a short while.
        let frame = match Frame::decode(rx.get(range.clone())) {
            Ok(frame) => frame,
            Err(_) if conn.peer.is_none() => {
                conn.close(CloseReason::NotWirecall);
                return Incoming::Closed;
            }
            Err(e) => {
                conn.close(CloseReason::Protocol(ProtocolError::Malformed(e)));
                return Incoming::Closed;
            }
        };
        if conn.peer.is_none() {
            return match conn.on_hello(&frame) {
                Ok(info) => {
                    rx.consume(&range);
                    Incoming::Connected(info)
                }
                Err(reason) => {
                    conn.close(reason);
                    Incoming::Closed
                }
            };
        }
        match frame {
            Frame::Ping { .. } | Frame::Pong { .. } => {
                if conn.on_keepalive(&frame).is_err() {
                    return Incoming::Idle;
                }
                rx.consume(&range);
            }
            Frame::Close { code, .. } => {
                rx.consume(&range);
                conn.close(CloseReason::PeerClosed(code));
                return Incoming::Closed;
            }
            Frame::Hello(_) => {
                conn.close(CloseReason::Protocol(ProtocolError::UnexpectedFrame));
                return Incoming::Closed;
            }
            // A frame of the role's, its tag written long: the role decodes it.
            _ => break range,
        }
    };
    match Frame::decode(rx.get(range.clone())) {
        Ok(frame) => Incoming::Frame(FrameIn { rx, range, frame }),
        Err(e) => {
            conn.close(CloseReason::Protocol(ProtocolError::Malformed(e)));
            Incoming::Closed
        }
    }
}

/// What a server sends in place of an answer that does not fit the client's limit
/// (PROTOCOL.md section 6.3): a rejection without its message; for anything else (the
/// function ran) [`ERROR_ANSWER_TOO_LARGE`] with `message`, then without it. Called again
/// on its own result while that does not fit either; `None`: nothing smaller is left.
pub(crate) fn too_large_stand_in(
    reply: &Reply<'_>,
    message: &'static str,
) -> Option<Reply<'static>> {
    match *reply {
        Reply::Rejected { code, message } if !message.is_empty() => {
            Some(Reply::Rejected { code, message: "" })
        }
        Reply::Rejected { .. } | Reply::Busy { .. } => None,
        // The stand-in itself did not fit: last, without its message; then nothing.
        Reply::Error { code, message: m }
            if code == ERROR_ANSWER_TOO_LARGE && (m == message || m.is_empty()) =>
        {
            (!m.is_empty()).then_some(Reply::Error { code, message: "" })
        }
        Reply::Ok(_) | Reply::Error { .. } => Some(Reply::Error {
            code: ERROR_ANSWER_TOO_LARGE,
            message,
        }),
    }
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A relative budget in whole milliseconds, rounded up and capped at `u32::MAX`.
pub(crate) fn budget_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis_ceil()).unwrap_or(u32::MAX)
}

/// The index of the first slot matching `pred`, searching from `id`'s home position
/// (`id % len`) and wrapping. Ids are handed out in sequence, so a call's slot is almost
/// always its home slot: lookups cost one comparison in the common case instead of a scan.
pub(crate) fn find_slot<T>(slots: &[T], id: u64, pred: impl Fn(&T) -> bool) -> Option<usize> {
    let len = slots.len();
    let home = usize::try_from(id.checked_rem(len as u64)?).ok()?;
    let (before, after) = slots.split_at(home);
    after
        .iter()
        .position(&pred)
        .map(|i| home.saturating_add(i))
        .or_else(|| before.iter().position(&pred))
}

/// Checks a connection's storage against the protocol's baselines, in the order a user
/// would fix them: the frame limit, the receive buffer, the transmit buffer, the table.
/// Returns the receive decoder (the frame limit clamped to what it holds, and written back
/// into `config` so the hello announces it) and the usable table size.
pub(crate) fn checked_storage<B: Buffer>(
    config: &mut Config,
    rx: B,
    tx: &B,
    slots: usize,
    min_slots: usize,
) -> Result<(FrameDecoder<B>, usize), ConfigError> {
    if config.max_frame_len < BASELINE_MAX_FRAME_LEN {
        return Err(ConfigError::FrameLimitTooSmall {
            need: BASELINE_MAX_FRAME_LEN,
            have: config.max_frame_len,
        });
    }
    let have = rx.max_len();
    if have < BASELINE_BUFFER {
        return Err(ConfigError::ReceiveBufferTooSmall {
            need: BASELINE_BUFFER,
            have,
        });
    }
    let have = tx.max_len();
    if have < BASELINE_BUFFER {
        return Err(ConfigError::TransmitBufferTooSmall {
            need: BASELINE_BUFFER,
            have,
        });
    }
    let usable = slots.min(usize::try_from(config.max_in_flight).unwrap_or(usize::MAX));
    if usable < min_slots {
        return Err(ConfigError::TooFewSlots {
            need: min_slots,
            have: usable,
        });
    }
    let decoder = FrameDecoder::new(rx, config.max_frame_len);
    config.max_frame_len = decoder.max_frame_len();
    Ok((decoder, usable))
}
