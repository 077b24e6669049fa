//! Server counters, shared between the event loop, the workers and whoever reads them (the
//! `stats` built-in, an embedding application).
//!
//! [`StatsSnapshot`] prints as text, one `name value` pair per line, names made of
//! lowercase words, dots and the method names (which hold no whitespace):
//!
//! ```text
//! connections.accepted 12
//! connections.open 3
//! connections.refused 0
//! connections.accept_failed 0
//! connections.idle_closed 0
//! calls.echo 40
//! executions.echo 40
//! calls.unknown_method 1
//! requests.busy 0
//! requests.expired 0
//! requests.cancelled 0
//! requests.after_goaway 0
//! answers.too_large 0
//! closed.graceful 9
//! closed.transport_closed 0
//! ...
//! protocol_errors 1
//! tls.handshake_failed 0
//! tls.refused_identity 0
//! datagrams.received 30
//! datagrams.sent 26
//! datagrams.replayed 2
//! datagrams.in_progress 0
//! datagrams.busy 0
//! datagrams.busy_peer_quota 0
//! datagrams.withheld 0
//! datagrams.rejected 0
//! datagrams.late_answers 0
//! datagrams.acks 2
//! datagrams.dropped.truncated 1
//! datagrams.dropped.oversize 0
//! ...
//! datagrams.dropped 4
//! ```
//!
//! `calls.M` counts requests for method `M` taken off connections and datagram endpoints;
//! `executions.M` counts times its function started (a call whose deadline passed while
//! it waited for a worker is not run). `closed.*` counts ended connections by reason;
//! `protocol_errors` is the sum of the reasons that are a peer breaking the protocol
//! (`malformed`, `frame_too_large`, `unexpected_frame`, `id_not_increasing`,
//! `not_wirecall`, `version_mismatch`, `protocol_other`).
//!
//! `tls.handshake_failed` counts `tls:` connections whose handshake failed (a client
//! certificate missing or not verifying, a peer that does not speak TLS, a protocol
//! offered by ALPN that is not wirecall); `tls.refused_identity` those whose client
//! certificate verified but named no identity on the allowlist. Both are closed before
//! any call runs.
//!
//! `datagrams.*` count the datagram endpoints: `received` (datagrams read), `sent`
//! (datagrams the kernel took: answers, replays, busy and rejection answers), `replayed`
//! (retransmitted calls answered again from the call cache, not run again),
//! `in_progress` (calls running now: taken, not yet answered), `busy` (calls refused
//! because the call cache had no room; not run), `busy_peer_quota` (of those, calls whose
//! peer address already held its share of the cache), `withheld` (answers held back by the
//! anti-amplification rule on UDP until enough copies came), `rejected` (calls refused before running:
//! no, zero or too long a budget, or the server shutting down), `late_answers` (answers
//! whose call the cache had already forgotten, dropped), `acks` (acknowledgements: datagrams
//! in which a client only says which calls have ended; never answered); `dropped.<reason>` for each
//! [`DropKind`], and `dropped`, their sum. Cancels count in `requests.cancelled` and
//! worker-queue refusals in `requests.busy`, as on streams.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use wirecall_core::datagram::{DatagramServerStats, DropReason};
use wirecall_core::server::{CloseReason, ProtocolError, ServerStats};

/// Why a datagram endpoint dropped a datagram, as counted in `datagrams.dropped.*`: each
/// of the core's [`DropReason`]s, and two of the adapter's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropKind {
    /// Shorter than a datagram header.
    Truncated,
    /// Longer than the endpoint's largest datagram.
    Oversize,
    /// Not wirecall (bad magic).
    Foreign,
    /// Another protocol version.
    UnsupportedVersion,
    /// The frame did not decode.
    Malformed,
    /// A frame a server never takes (a response, a hello, ...).
    UnexpectedFrame,
    /// A retransmission of a call still running: it is answered once, when it is done.
    InProgress,
    /// A cancel for a call that is not running.
    StaleCancel,
    /// A late copy of a call its client has already ended (never run).
    Stale,
    /// A reason of the core this adapter does not know by name.
    Other,
    /// A Unix datagram from a socket with no name, which cannot be answered.
    Unaddressable,
    /// An answer the kernel did not take (its send buffer was full, or the peer is gone);
    /// the call's answer stays cached, so a retransmission still gets it.
    SendFailed,
    /// A Unix datagram from a sender whose credentials are not on the allowlist
    /// ([`UnixAccess`](crate::access::UnixAccess)), dropped unanswered and not run.
    NotAllowed,
}

impl DropKind {
    /// Every kind, in the order `stats` prints them.
    pub const ALL: [Self; 13] = [
        Self::Truncated,
        Self::Oversize,
        Self::Foreign,
        Self::UnsupportedVersion,
        Self::Malformed,
        Self::UnexpectedFrame,
        Self::InProgress,
        Self::StaleCancel,
        Self::Stale,
        Self::Other,
        Self::Unaddressable,
        Self::SendFailed,
        Self::NotAllowed,
    ];

    /// The kind of a core drop reason.
    #[must_use]
    pub fn of(reason: DropReason) -> Self {
        match reason {
            DropReason::Truncated => Self::Truncated,
            DropReason::Oversize => Self::Oversize,
            DropReason::Foreign => Self::Foreign,
            DropReason::UnsupportedVersion => Self::UnsupportedVersion,
            DropReason::Malformed => Self::Malformed,
            DropReason::UnexpectedFrame => Self::UnexpectedFrame,
            DropReason::InProgress => Self::InProgress,
            DropReason::StaleCancel => Self::StaleCancel,
            DropReason::Stale => Self::Stale,
            _ => Self::Other,
        }
    }

    /// The name after `datagrams.dropped.` in `stats`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Oversize => "oversize",
            Self::Foreign => "foreign",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Malformed => "malformed",
            Self::UnexpectedFrame => "unexpected_frame",
            Self::InProgress => "in_progress",
            Self::StaleCancel => "stale_cancel",
            Self::Stale => "stale",
            Self::Other => "other",
            Self::Unaddressable => "unaddressable",
            Self::SendFailed => "send_failed",
            Self::NotAllowed => "not_allowed",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Why a connection ended, as counted in `closed.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseKind {
    /// A graceful close finished (go-away, every call answered).
    Graceful,
    /// The client closed its end without a go-away.
    TransportClosed,
    /// The client sent a close frame.
    PeerClosed,
    /// A frame body did not decode.
    Malformed,
    /// A length prefix above the announced limit.
    FrameTooLarge,
    /// A frame a server never receives, or a second hello.
    UnexpectedFrame,
    /// A request id that did not increase.
    IdNotIncreasing,
    /// The client's stream ended in the middle of a frame.
    TruncatedFrame,
    /// A protocol error of a kind this adapter does not know by name.
    ProtocolOther,
    /// The first frame was not a wirecall hello.
    NotWirecall,
    /// No common protocol version.
    VersionMismatch,
    /// No hello in time.
    HandshakeTimeout,
    /// The client stopped answering keepalive pings.
    KeepaliveTimeout,
    /// A graceful close did not finish in time.
    DrainTimeout,
    /// A frame that had begun did not complete within the frame timeout.
    FrameTimeout,
    /// Aborted by the server (shutdown deadline).
    Aborted,
    /// The socket failed (e.g. reset while writing).
    IoError,
    /// A reason this adapter does not know by name.
    Other,
}

impl CloseKind {
    /// Every kind, in the order `stats` prints them.
    pub const ALL: [Self; 18] = [
        Self::Graceful,
        Self::TransportClosed,
        Self::PeerClosed,
        Self::Malformed,
        Self::FrameTooLarge,
        Self::UnexpectedFrame,
        Self::IdNotIncreasing,
        Self::TruncatedFrame,
        Self::ProtocolOther,
        Self::NotWirecall,
        Self::VersionMismatch,
        Self::HandshakeTimeout,
        Self::KeepaliveTimeout,
        Self::DrainTimeout,
        Self::FrameTimeout,
        Self::Aborted,
        Self::IoError,
        Self::Other,
    ];

    /// The kind of a core close reason.
    #[must_use]
    pub fn of(reason: &CloseReason) -> Self {
        match reason {
            CloseReason::Graceful => Self::Graceful,
            CloseReason::TransportClosed => Self::TransportClosed,
            CloseReason::PeerClosed(_) => Self::PeerClosed,
            CloseReason::Protocol(ProtocolError::Malformed(_)) => Self::Malformed,
            CloseReason::Protocol(ProtocolError::TooLong(_)) => Self::FrameTooLarge,
            CloseReason::Protocol(ProtocolError::UnexpectedFrame) => Self::UnexpectedFrame,
            CloseReason::Protocol(ProtocolError::IdNotIncreasing | ProtocolError::ZeroId) => {
                Self::IdNotIncreasing
            }
            CloseReason::Protocol(ProtocolError::TruncatedFrame) => Self::TruncatedFrame,
            CloseReason::Protocol(_) => Self::ProtocolOther,
            CloseReason::NotWirecall => Self::NotWirecall,
            CloseReason::VersionMismatch { .. } => Self::VersionMismatch,
            CloseReason::HandshakeTimedOut => Self::HandshakeTimeout,
            CloseReason::KeepaliveTimedOut => Self::KeepaliveTimeout,
            CloseReason::DrainTimedOut => Self::DrainTimeout,
            CloseReason::FrameTimedOut => Self::FrameTimeout,
            CloseReason::Aborted => Self::Aborted,
            _ => Self::Other,
        }
    }

    /// The name after `closed.` in `stats`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Graceful => "graceful",
            Self::TransportClosed => "transport_closed",
            Self::PeerClosed => "peer_closed",
            Self::Malformed => "malformed",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnexpectedFrame => "unexpected_frame",
            Self::IdNotIncreasing => "id_not_increasing",
            Self::TruncatedFrame => "truncated_frame",
            Self::ProtocolOther => "protocol_other",
            Self::NotWirecall => "not_wirecall",
            Self::VersionMismatch => "version_mismatch",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::DrainTimeout => "drain_timeout",
            Self::FrameTimeout => "frame_timeout",
            Self::Aborted => "aborted",
            Self::IoError => "io_error",
            Self::Other => "other",
        }
    }

    /// `true` when the peer broke the protocol.
    #[must_use]
    pub fn is_protocol_error(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::FrameTooLarge
                | Self::UnexpectedFrame
                | Self::IdNotIncreasing
                | Self::TruncatedFrame
                | Self::ProtocolOther
                | Self::NotWirecall
                | Self::VersionMismatch
        )
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Upper bounds of the buckets of the call-duration histograms, in microseconds (100 µs
/// to 10 s; a last bucket takes the longer ones): the Prometheus client libraries'
/// default buckets, from a tenth of a millisecond up, as wirecall calls are short.
pub const DURATION_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Counters of one method.
#[derive(Debug, Default)]
struct MethodCounters {
    calls: AtomicU64,
    executions: AtomicU64,
    /// Calls by duration: one count per bucket of [`DURATION_BUCKETS_US`], and one for
    /// the longer ones.
    durations: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    /// The durations added up, in microseconds.
    duration_sum_us: AtomicU64,
}

/// The live counters, which a server's driver records into (the mio server here, the
/// drivers of other runtimes through [`StatsHandle::recorder`]), so every server prints
/// the same `stats` text. Relaxed atomics: each counter is exact, a snapshot is not a
/// single instant across counters.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    not_allowed: AtomicU64,
    evicted: AtomicU64,
    accept_failed: AtomicU64,
    idle_closed: AtomicU64,
    aged_out: AtomicU64,
    draining: std::sync::atomic::AtomicBool,
    timing: std::sync::atomic::AtomicBool,
    proxied: AtomicU64,
    proxy_refused: AtomicU64,
    unknown_method: AtomicU64,
    busy: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    after_goaway: AtomicU64,
    too_large: AtomicU64,
    closed: [AtomicU64; CloseKind::ALL.len()],
    tls_handshake_failed: AtomicU64,
    tls_refused_identity: AtomicU64,
    dgram_received: AtomicU64,
    dgram_sent: AtomicU64,
    dgram_replayed: AtomicU64,
    dgram_in_progress: AtomicU64,
    dgram_busy: AtomicU64,
    dgram_busy_quota: AtomicU64,
    dgram_withheld: AtomicU64,
    dgram_rejected: AtomicU64,
    dgram_late: AtomicU64,
    dgram_acks: AtomicU64,
    dgram_dropped: [AtomicU64; DropKind::ALL.len()],
    /// One entry per registered function, set when the server is built.
    methods: OnceLock<Vec<(String, MethodCounters)>>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// Fixes the method names (once; later calls are ignored).
    pub fn set_methods(&self, names: &[String]) {
        let table = names
            .iter()
            .map(|n| (n.clone(), MethodCounters::default()))
            .collect();
        let _ = self.methods.set(table);
    }

    /// A connection was accepted (and is open until [`dropped`](Self::dropped)).
    pub fn accepted(&self) {
        bump(&self.accepted);
        bump(&self.open);
    }

    /// A TLS handshake failed (the connection is closed, nothing ran).
    pub fn tls_handshake_failed(&self) {
        bump(&self.tls_handshake_failed);
    }

    /// A TLS client's verified identity is not allowed (closed, nothing ran).
    pub fn tls_refused_identity(&self) {
        bump(&self.tls_refused_identity);
    }

    /// A connection was refused at the connection limit (or for want of descriptors).
    pub fn refused(&self) {
        bump(&self.refused);
    }

    /// A Unix connection was refused because its peer's credentials are not on the
    /// allowlist ([`UnixAccess`](crate::access::UnixAccess)).
    pub fn not_allowed(&self) {
        bump(&self.not_allowed);
    }

    /// An idle connection was evicted at the connection limit to make room for a new one.
    pub fn evicted(&self) {
        bump(&self.evicted);
    }

    /// An accept failed for want of descriptors, with none in reserve: tried again later.
    pub fn accept_failed(&self) {
        bump(&self.accept_failed);
    }

    /// The server is shutting down (its drain delay included): its `health` fails from
    /// now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether [`set_draining`](Self::set_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Times calls from now on (for the duration histograms of the metrics endpoint):
    /// two clock reads per call, so it is off unless metrics are asked for.
    pub fn enable_timing(&self) {
        self.timing.store(true, Ordering::Relaxed);
    }

    /// Whether calls are timed ([`enable_timing`](Self::enable_timing)).
    pub fn timing(&self) -> bool {
        self.timing.load(Ordering::Relaxed)
    }

    /// The call of method `method` (its index in the function table) took `took`, from the
    /// request taken to its answer made.
    pub fn observe(&self, method: usize, took: std::time::Duration) {
        let Some((_, m)) = self.methods.get().and_then(|t| t.get(method)) else {
            return;
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(DURATION_BUCKETS_US.len());
        if let Some(counter) = m.durations.get(bucket) {
            bump(counter);
        }
        m.duration_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A connection older than `max_connection_age` was told to go away.
    pub fn aged_out(&self) {
        bump(&self.aged_out);
    }

    /// A connection on a PROXY protocol listener sent a valid header (whether it names a
    /// client or is the balancer's own, `LOCAL`).
    pub fn proxied(&self) {
        bump(&self.proxied);
    }

    /// A connection on a PROXY protocol listener was closed without a valid header (none
    /// in time, or bytes that are not one): nothing it sent was read as wirecall.
    pub fn proxy_refused(&self) {
        bump(&self.proxy_refused);
    }

    /// A call answered busy because the worker queue was full.
    pub fn worker_busy(&self) {
        bump(&self.busy);
    }

    /// A connection idle for the idle timeout was told to go away.
    pub fn idle_closed(&self) {
        bump(&self.idle_closed);
    }

    /// A connection's core reported it closed, for this reason.
    pub fn closed(&self, kind: CloseKind) {
        if let Some(c) = self.closed.get(kind.index()) {
            bump(c);
        }
    }

    /// A connection's socket is gone.
    pub fn dropped(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A request came for method `method` (its index in the function table; `None`: an
    /// unknown method).
    pub fn call(&self, method: Option<usize>) {
        match method.and_then(|i| self.methods.get()?.get(i)) {
            Some((_, m)) => bump(&m.calls),
            None => bump(&self.unknown_method),
        }
    }

    /// The function at index `method` was run (or handed to a worker that runs it).
    pub fn execution(&self, method: usize) {
        if let Some((_, m)) = self.methods.get().and_then(|t| t.get(method)) {
            bump(&m.executions);
        }
    }

    /// Adds what a connection's core counted since `seen`, and moves `seen` up.
    pub fn add_core(&self, now: &ServerStats, seen: &mut ServerStats) {
        add_moved(&self.busy, now.busy, &mut seen.busy);
        add_moved(&self.expired, now.expired, &mut seen.expired);
        add_moved(&self.cancelled, now.cancelled, &mut seen.cancelled);
        add_moved(&self.after_goaway, now.after_goaway, &mut seen.after_goaway);
        add_moved(
            &self.too_large,
            now.answers_too_large,
            &mut seen.answers_too_large,
        );
    }

    /// A datagram was read from a datagram endpoint.
    pub fn datagram_received(&self) {
        bump(&self.dgram_received);
    }

    /// A datagram was handed to the kernel.
    pub fn datagram_sent(&self) {
        bump(&self.dgram_sent);
    }

    /// A datagram was dropped (received and not acted on, or an answer not sent).
    pub fn datagram_dropped(&self, kind: DropKind) {
        if let Some(c) = self.dgram_dropped.get(kind.index()) {
            bump(c);
        }
    }

    /// A datagram call started running (`true`) or was answered or cancelled (`false`).
    pub fn datagram_running(&self, started: bool) {
        if started {
            bump(&self.dgram_in_progress);
        } else {
            let _ =
                self.dgram_in_progress
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// An answer came for a datagram call the core no longer knows.
    pub fn datagram_late_answer(&self) {
        bump(&self.dgram_late);
    }

    /// Adds what a datagram endpoint's core counted since `seen`, and moves `seen` up.
    pub fn add_datagram_core(&self, now: &DatagramServerStats, seen: &mut DatagramServerStats) {
        add_moved(&self.dgram_replayed, now.replayed, &mut seen.replayed);
        add_moved(&self.dgram_busy, now.busy, &mut seen.busy);
        add_moved(
            &self.dgram_busy_quota,
            now.busy_peer_quota,
            &mut seen.busy_peer_quota,
        );
        add_moved(&self.dgram_withheld, now.withheld, &mut seen.withheld);
        add_moved(&self.dgram_rejected, now.rejected, &mut seen.rejected);
        add_moved(
            &self.dgram_rejected,
            now.shutting_down,
            &mut seen.shutting_down,
        );
        add_moved(&self.cancelled, now.cancelled, &mut seen.cancelled);
        add_moved(&self.dgram_acks, now.acks, &mut seen.acks);
        add_moved(
            &self.too_large,
            now.answers_too_large,
            &mut seen.answers_too_large,
        );
    }

    fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&self.accepted),
            connections_open: get(&self.open),
            connections_refused: get(&self.refused),
            connections_not_allowed: get(&self.not_allowed),
            connections_evicted: get(&self.evicted),
            connections_accept_failed: get(&self.accept_failed),
            connections_idle_closed: get(&self.idle_closed),
            draining: self.is_draining(),
            connections_aged_out: get(&self.aged_out),
            connections_proxied: get(&self.proxied),
            connections_proxy_refused: get(&self.proxy_refused),
            methods: self
                .methods
                .get()
                .map(|t| {
                    t.iter()
                        .map(|(name, m)| MethodStats {
                            name: name.clone(),
                            calls: get(&m.calls),
                            executions: get(&m.executions),
                            durations: m.durations.iter().map(get).collect(),
                            duration_sum: std::time::Duration::from_micros(get(&m.duration_sum_us)),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            unknown_method_calls: get(&self.unknown_method),
            busy: get(&self.busy),
            expired: get(&self.expired),
            cancelled: get(&self.cancelled),
            after_goaway: get(&self.after_goaway),
            answers_too_large: get(&self.too_large),
            closed: CloseKind::ALL
                .iter()
                .zip(&self.closed)
                .map(|(k, c)| (*k, get(c)))
                .collect(),
            tls_handshake_failed: get(&self.tls_handshake_failed),
            tls_refused_identity: get(&self.tls_refused_identity),
            datagrams_received: get(&self.dgram_received),
            datagrams_sent: get(&self.dgram_sent),
            datagrams_replayed: get(&self.dgram_replayed),
            datagrams_in_progress: get(&self.dgram_in_progress),
            datagrams_busy: get(&self.dgram_busy),
            datagrams_busy_peer_quota: get(&self.dgram_busy_quota),
            datagrams_withheld: get(&self.dgram_withheld),
            datagrams_rejected: get(&self.dgram_rejected),
            datagrams_late_answers: get(&self.dgram_late),
            datagrams_acks: get(&self.dgram_acks),
            datagrams_dropped_by: DropKind::ALL
                .iter()
                .zip(&self.dgram_dropped)
                .map(|(k, c)| (*k, get(c)))
                .collect(),
            datagrams_dropped: self.dgram_dropped.iter().map(get).sum(),
        }
    }
}

/// Read access to a server's counters, from any thread; get one from
/// [`ServerBuilder::stats`](crate::ServerBuilder::stats) (even before the server is built,
/// e.g. to register a function that reports them).
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(pub(crate) Arc<Stats>);

impl StatsHandle {
    /// Where a server's driver records its counters.
    #[must_use]
    pub fn recorder(&self) -> &Stats {
        &self.0
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.snapshot()
    }

    /// The server's method names in registration order (empty until it is built).
    #[must_use]
    pub fn methods(&self) -> Vec<String> {
        self.0
            .methods
            .get()
            .map(|t| t.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }
}

/// Counters of one method.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodStats {
    /// The method's name.
    pub name: String,
    /// Requests for it taken off connections.
    pub calls: u64,
    /// Times its function started.
    pub executions: u64,
    /// Timed calls by duration, one count per bucket of [`DURATION_BUCKETS_US`] and one
    /// for the longer ones (not cumulative); all zero unless timing is on.
    pub durations: Vec<u64>,
    /// The timed calls' durations added up.
    pub duration_sum: std::time::Duration,
}

/// A server's counters at one moment. Prints as the `stats` text (see the
/// [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections accepted (refused ones not included).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted and closed at once because `max_connections` were open, or
    /// because the process was out of file descriptors (refused with its spare one).
    pub connections_refused: u64,
    /// Connections refused (`NOT_ALLOWED`, nothing run) because the peer's Unix
    /// credentials are not on the allowlist.
    pub connections_not_allowed: u64,
    /// Idle connections (no call in flight, none for a second) closed at the connection
    /// limit to make room for a new one.
    pub connections_evicted: u64,
    /// Accepts that failed for want of descriptors with none in reserve (the server tries
    /// again on a timer).
    pub connections_accept_failed: u64,
    /// Connections closed gracefully by the idle timeout.
    pub connections_idle_closed: u64,
    /// The server is shutting down (from the start of its drain delay): `server.draining`.
    pub draining: bool,
    /// Connections told to go away (gracefully) for their age (`max_connection_age`).
    pub connections_aged_out: u64,
    /// Connections on `--accept-proxy` listeners whose PROXY protocol header was taken
    /// (the client it names is the connection's peer from then on).
    pub connections_proxied: u64,
    /// Connections on `--accept-proxy` listeners closed without a valid PROXY header.
    pub connections_proxy_refused: u64,
    /// Per registered method.
    pub methods: Vec<MethodStats>,
    /// Requests for a method the server does not have (rejected, not run).
    pub unknown_method_calls: u64,
    /// Requests answered busy: a connection's table or the worker queue was full.
    pub busy: u64,
    /// Requests whose deadline passed before they were answered.
    pub expired: u64,
    /// Requests cancelled by their client.
    pub cancelled: u64,
    /// Requests dropped because they came after the server's go-away.
    pub after_goaway: u64,
    /// Answers larger than their client accepts (or than one datagram), sent as the
    /// reserved error `ERROR_ANSWER_TOO_LARGE` instead.
    pub answers_too_large: u64,
    /// Ended connections by reason, every kind listed.
    pub closed: Vec<(CloseKind, u64)>,
    /// `tls:` connections whose handshake failed (closed before any call).
    pub tls_handshake_failed: u64,
    /// `tls:` connections whose verified client identity is not allowed (closed before any
    /// call).
    pub tls_refused_identity: u64,
    /// Datagrams read from datagram endpoints.
    pub datagrams_received: u64,
    /// Datagrams the kernel took from datagram endpoints.
    pub datagrams_sent: u64,
    /// Retransmitted datagram calls answered again from the call cache (not run again).
    pub datagrams_replayed: u64,
    /// Datagram calls running now.
    pub datagrams_in_progress: u64,
    /// Datagram calls refused busy because the call cache had no room (not run).
    pub datagrams_busy: u64,
    /// Of `datagrams_busy`, calls refused because their peer address already held its
    /// share of the cache (`DatagramConfig::max_peer_entries`).
    pub datagrams_busy_peer_quota: u64,
    /// Answers held back by the anti-amplification rule on UDP (the copy was answered
    /// busy with hint 0, and the answer kept for a later copy).
    pub datagrams_withheld: u64,
    /// Datagram calls rejected before running (budget missing, zero or too long; the
    /// server shutting down).
    pub datagrams_rejected: u64,
    /// Answers to datagram calls the cache had already forgotten (dropped).
    pub datagrams_late_answers: u64,
    /// Acknowledgements received: datagrams in which a client only says which calls have
    /// ended (never answered).
    pub datagrams_acks: u64,
    /// Datagrams dropped by reason, every kind listed.
    pub datagrams_dropped_by: Vec<(DropKind, u64)>,
    /// Datagrams dropped, all reasons.
    pub datagrams_dropped: u64,
}

impl StatsSnapshot {
    /// Connections ended because the peer broke the protocol.
    #[must_use]
    pub fn protocol_errors(&self) -> u64 {
        self.closed
            .iter()
            .filter(|(k, _)| k.is_protocol_error())
            .map(|(_, n)| *n)
            .sum()
    }

    /// Connections ended for this reason.
    #[must_use]
    pub fn closed(&self, kind: CloseKind) -> u64 {
        self.closed
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Datagrams dropped for this reason.
    #[must_use]
    pub fn datagrams_dropped(&self, kind: DropKind) -> u64 {
        self.datagrams_dropped_by
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "server.draining {}", u8::from(self.draining))?;
        writeln!(f, "connections.accepted {}", self.connections_accepted)?;
        writeln!(f, "connections.open {}", self.connections_open)?;
        writeln!(f, "connections.refused {}", self.connections_refused)?;
        writeln!(
            f,
            "connections.not_allowed {}",
            self.connections_not_allowed
        )?;
        writeln!(f, "connections.evicted {}", self.connections_evicted)?;
        writeln!(
            f,
            "connections.accept_failed {}",
            self.connections_accept_failed
        )?;
        writeln!(
            f,
            "connections.idle_closed {}",
            self.connections_idle_closed
        )?;
        writeln!(f, "connections.aged_out {}", self.connections_aged_out)?;
        writeln!(f, "connections.proxied {}", self.connections_proxied)?;
        writeln!(
            f,
            "connections.proxy_refused {}",
            self.connections_proxy_refused
        )?;
        for m in &self.methods {
            writeln!(f, "calls.{} {}", m.name, m.calls)?;
            writeln!(f, "executions.{} {}", m.name, m.executions)?;
        }
        writeln!(f, "calls.unknown_method {}", self.unknown_method_calls)?;
        writeln!(f, "requests.busy {}", self.busy)?;
        writeln!(f, "requests.expired {}", self.expired)?;
        writeln!(f, "requests.cancelled {}", self.cancelled)?;
        writeln!(f, "requests.after_goaway {}", self.after_goaway)?;
        writeln!(f, "answers.too_large {}", self.answers_too_large)?;
        for (kind, n) in &self.closed {
            writeln!(f, "closed.{} {n}", kind.name())?;
        }
        writeln!(f, "protocol_errors {}", self.protocol_errors())?;
        writeln!(f, "tls.handshake_failed {}", self.tls_handshake_failed)?;
        writeln!(f, "tls.refused_identity {}", self.tls_refused_identity)?;
        writeln!(f, "datagrams.received {}", self.datagrams_received)?;
        writeln!(f, "datagrams.sent {}", self.datagrams_sent)?;
        writeln!(f, "datagrams.replayed {}", self.datagrams_replayed)?;
        writeln!(f, "datagrams.in_progress {}", self.datagrams_in_progress)?;
        writeln!(f, "datagrams.busy {}", self.datagrams_busy)?;
        writeln!(
            f,
            "datagrams.busy_peer_quota {}",
            self.datagrams_busy_peer_quota
        )?;
        writeln!(f, "datagrams.withheld {}", self.datagrams_withheld)?;
        writeln!(f, "datagrams.rejected {}", self.datagrams_rejected)?;
        writeln!(f, "datagrams.late_answers {}", self.datagrams_late_answers)?;
        writeln!(f, "datagrams.acks {}", self.datagrams_acks)?;
        for (kind, n) in &self.datagrams_dropped_by {
            writeln!(f, "datagrams.dropped.{} {n}", kind.name())?;
        }
        writeln!(f, "datagrams.dropped {}", self.datagrams_dropped)
    }
}

/// Adds to `counter` what a core's count moved since `old` (`new` now), and moves `old` up.
/// Only what moved: every loop drives its connections and endpoints on every turn, and a
/// locked add of nothing would still take the counter's cache line from the other loops.
fn add_moved(counter: &AtomicU64, new: u64, old: &mut u64) {
    if new != *old {
        counter.fetch_add(new.saturating_sub(*old), Ordering::Relaxed);
        *old = new;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_counts_and_text() {
        let stats = Stats::default();
        stats.set_methods(&["echo".to_owned(), "sleep".to_owned()]);
        stats.accepted();
        stats.accepted();
        stats.dropped();
        stats.call(Some(0));
        stats.execution(0);
        stats.call(None);
        stats.call(Some(9));
        stats.closed(CloseKind::NotWirecall);
        stats.closed(CloseKind::Graceful);
        let mut seen = ServerStats::default();
        let mut now = ServerStats::default();
        now.busy = 3;
        stats.add_core(&now, &mut seen);
        stats.add_core(&now, &mut seen);
        for _ in 0..3 {
            stats.datagram_received();
        }
        stats.datagram_dropped(DropKind::of(DropReason::Oversize));
        stats.datagram_dropped(DropKind::Unaddressable);
        stats.datagram_running(true);
        stats.datagram_running(true);
        stats.datagram_running(false);
        let mut dseen = DatagramServerStats::default();
        let mut dnow = DatagramServerStats::default();
        dnow.replayed = 4;
        dnow.cancelled = 1;
        dnow.acks = 5;
        stats.add_datagram_core(&dnow, &mut dseen);
        stats.add_datagram_core(&dnow, &mut dseen);
        let snap = StatsHandle(Arc::new(stats)).snapshot();
        assert_eq!(snap.connections_accepted, 2);
        assert_eq!(snap.connections_open, 1);
        assert_eq!(snap.unknown_method_calls, 2);
        assert_eq!(snap.busy, 3);
        assert_eq!(snap.protocol_errors(), 1);
        let text = snap.to_string();
        for line in [
            "calls.echo 1\n",
            "executions.echo 1\n",
            "calls.sleep 0\n",
            "closed.not_wirecall 1\n",
            "closed.graceful 1\n",
            "protocol_errors 1\n",
            "datagrams.dropped.oversize 1\n",
            "datagrams.dropped.unaddressable 1\n",
            "datagrams.dropped 2\n",
            "datagrams.received 3\n",
            "datagrams.replayed 4\n",
            "datagrams.in_progress 1\n",
            "requests.cancelled 1\n",
            "datagrams.acks 5\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(text.lines().all(|l| l.split(' ').count() == 2));
    }

    #[test]
    fn test_drop_kinds_are_named_once() {
        let mut names: Vec<_> = DropKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropKind::ALL.len());
        assert_eq!(DropKind::of(DropReason::Stale), DropKind::Stale);
        assert_eq!(
            DropKind::of(DropReason::UnsupportedVersion).name(),
            "unsupported_version"
        );
    }

    #[test]
    fn test_close_kinds_are_named_once() {
        let mut names: Vec<_> = CloseKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CloseKind::ALL.len());
        assert_eq!(CloseKind::of(&CloseReason::Graceful), CloseKind::Graceful);
        assert!(CloseKind::of(&CloseReason::NotWirecall).is_protocol_error());
    }
}
