//! Datagram mode: calls over Unix datagram and UDP sockets, with no connection.
//!
//! Each datagram holds one frame behind a 29-byte header ([`DatagramHeader`]: magic,
//! version, the client's epoch, floor and acks). There is no handshake: a [`DatagramClient`] sends a request
//! to the server's address and retransmits it, with exponential backoff and jitter, until an
//! answer comes or the call's deadline passes; a [`DatagramServer`] answers each request to
//! the address it came from and remembers every call it took, keyed by (peer, client epoch,
//! request id), so a retransmission gets the same answer again instead of running the
//! function a second time.
//!
//! # The guarantee
//!
//! A client always sends its deadline as a relative *budget* (every copy repeats the
//! budget of the first) and never transmits after the deadline. The server keeps each call's entry from its first arrival until the budget plus
//! [`DatagramConfig::max_latency`] has passed, so as long as no datagram lingers in the
//! network longer than `max_latency`, every retransmission of a call reaches a server that
//! still remembers it, and **the function runs at most once per call**, exactly once for
//! every call that got an answer. When every entry is still live, a new call is refused
//! with a busy reply (not run) instead of evicting an entry that could still see a
//! retransmission.
//!
//! Every client datagram also carries the client's *floor* (the lowest id it may still send
//! about) and *acks* (a bitmap of the 64 calls above the floor that have ended too). The
//! server keeps one record per client (what it has said has ended, kept as long as any of
//! its calls' windows), refuses every copy of an ended call, and so may reuse a call's
//! entry as soon as its client says it has ended, typically one round trip after the
//! answer, even while an older call of the same client is still being retransmitted. The
//! cache then needs room for the calls in flight, not for every call of the last `budget`
//! seconds.
//! `docs/PROTOCOL.md` section 11 has the exact rules and the argument.
//!
//! Randomness (the epoch and the jitter seed) comes from the caller; the core draws none.
//!
//! [`DatagramHeader`]: crate::wire::datagram::DatagramHeader

mod client;
mod server;

pub use client::{
    DatagramCallSlot, DatagramClient, DatagramClientStats, DatagramEvent, DatagramFailure,
    DatagramKind, DatagramTransmit, PROMPT_COPIES,
};
pub use server::{
    DatagramEntry, DatagramRequest, DatagramRespondError, DatagramServer, DatagramServerStats,
    DropReason, Received, RequestHandle, Transmit, WAYS,
};

use core::fmt;

use crate::time::Duration;
use crate::wire::datagram::DatagramHeader;

/// Limits and timers of datagram mode, each with a documented default. The retransmission
/// fields matter to clients, `max_budget` and `max_latency` to servers; both read
/// `max_datagram`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DatagramConfig {
    /// The largest datagram sent or accepted, header included. Default: 1232 bytes, which
    /// crosses any IPv6 path (minimum MTU 1280, less 48 bytes of IPv6 and UDP headers) and
    /// typical IPv4 paths without fragmentation. Unix datagram sockets can take far more
    /// (raise it to 64 KiB there).
    pub max_datagram: usize,
    /// Wait before the first retransmission. Default: 100 ms, about 1000 LAN round trips
    /// and under one WAN round trip's worth of patience.
    pub initial_rto: Duration,
    /// Longest wait between two transmissions; the doubling stops here. Default: 2 s.
    pub max_rto: Duration,
    /// Transmissions of one request at most, the first included (copies answered `Busy`
    /// do not count: they were not lost). Default: 32: after the doubling reaches
    /// `max_rto` the client keeps trying every `max_rto` until the call's deadline (with
    /// the default timers the 32nd copy leaves 55 s or more after the first), so a server
    /// that was overloaded for a few seconds still answers a call with a long budget; the
    /// deadline, not the count, usually ends a call.
    pub max_attempts: u32,
    /// Each wait is stretched by a random factor in `[1, 1 + jitter_per_mille/1000]`, so
    /// clients that lost the same datagram do not retransmit in step. Default: 500 (up to
    /// 1.5x, as CoAP's `ACK_RANDOM_FACTOR`).
    pub jitter_per_mille: u32,
    /// A call's deadline when the caller gives none. Default: 5 s.
    pub default_timeout: Duration,
    /// Server: the longest budget it accepts; a request asking more is rejected (not run),
    /// because the server could not promise to remember it that long. Default: 60 s.
    pub max_budget: Duration,
    /// Server: how long a datagram may linger in the network; entries are kept this much
    /// past their budget. Default: 2 s, far beyond LAN and common WAN delays.
    pub max_latency: Duration,
    /// Client: the largest answer datagram it takes, header included (never less than
    /// `max_datagram`); a longer one is dropped and counted (its call goes on: the server's
    /// next copy is no shorter, so it ends by its deadline). A server answers within its
    /// own `max_datagram`, so set this to at least the server's. Default: 1232, as
    /// `max_datagram`.
    pub max_answer: usize,
    /// Client: whether the transport may deliver a datagram twice. UDP may (the default,
    /// [`Duplicates::Possible`]); a Unix datagram socket never does
    /// ([`Duplicates::Never`]). Without duplicates, a call whose every copy was answered
    /// `Busy` when its deadline passes ends busy, not executed: each copy reached the
    /// server and was refused. With them it times out, maybe executed, since a duplicate
    /// of a copy may still reach the server once it has room and run (section 11.2 of
    /// PROTOCOL.md).
    pub duplicates: Duplicates,
    /// Server: cache entries one peer address may hold at once, so a flooding peer is
    /// answered busy while others still get through. Each live client record (one per
    /// epoch the address uses) counts as [`EPOCH_ENTRIES`] (66: the record and the 65 calls
    /// the id span allows it), so an address holds at most `max_peer_entries / 66` epochs
    /// at once; a new epoch over that is answered busy (not run) until one of its records'
    /// windows closes. Checked only when a record is made, once per client epoch, so the
    /// per-call path does not pay for it. Never less than one epoch's worth. Default: 256
    /// (three epochs: a quarter of the std server's default cache of 1,024; keep it under
    /// the cache size for it to mean anything).
    pub max_peer_entries: usize,
    /// Server: anti-amplification. For each call, the server sends at most this many
    /// times the bytes of the call's copies it has received (answer, replays and busy
    /// answers together); an answer that would cross it is kept and the copy is answered
    /// busy with hint 0 ("held back: send another copy") instead: each copy the client
    /// sends, at once, raises the allowance, and the answer goes out once it fits. So a forged source address can draw at most
    /// this multiple of what the forger sent. 0 turns the rule off, for transports whose
    /// source addresses cannot be forged (the std adapter does so on Unix datagram
    /// sockets). Default: 3, as QUIC before it has validated an address (PROTOCOL.md 11.3).
    pub amplification: u32,
}

/// Cache entries one client epoch can hold at most on a server: its record and the 65
/// calls from its floor to 64 above it. The unit of [`DatagramConfig::max_peer_entries`].
pub const EPOCH_ENTRIES: usize = ACK_SPAN_ENTRIES + 1;

/// Calls of one epoch a server may hold at once: the floor and the 64 ids above it.
const ACK_SPAN_ENTRIES: usize = 65;
const _: () = assert!(ACK_SPAN_ENTRIES as u64 == crate::wire::datagram::ACK_SPAN + 1);

/// Whether a transport may deliver one datagram more than once
/// ([`DatagramConfig::duplicates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Duplicates {
    /// It may (UDP: a network can duplicate a datagram and deliver the copies apart).
    Possible,
    /// It never does (a Unix datagram socket hands each datagram over once).
    Never,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        Self {
            max_datagram: 1232,
            initial_rto: Duration::from_millis(100),
            max_rto: Duration::from_secs(2),
            max_attempts: 32,
            jitter_per_mille: 500,
            default_timeout: Duration::from_secs(5),
            max_budget: Duration::from_secs(60),
            max_latency: Duration::from_secs(2),
            max_answer: 1232,
            duplicates: Duplicates::Possible,
            max_peer_entries: 256,
            amplification: 3,
        }
    }
}

impl DatagramConfig {
    /// Bytes of storage a [`DatagramServer`] with `entries` cache entries needs: one
    /// `max_datagram` chunk per entry for its stored answer, and one more for answers made
    /// on the spot. `None` when that overflows `usize`.
    #[must_use]
    pub const fn server_storage_len(&self, entries: usize) -> Option<usize> {
        match entries.checked_add(1) {
            Some(chunks) => self.max_datagram.checked_mul(chunks),
            None => None,
        }
    }

    /// Bytes of storage a [`DatagramClient`] with `slots` call slots needs: one
    /// `max_datagram` chunk per slot for its encoded request, then the receive area for one
    /// answer (the larger of `max_answer` and `max_datagram`, and one byte more, so a
    /// longer datagram is seen as such).
    /// `None` when that overflows.
    #[must_use]
    pub const fn client_storage_len(&self, slots: usize) -> Option<usize> {
        match (self.max_datagram.checked_mul(slots), self.receive_len()) {
            (Some(requests), Some(receive)) => requests.checked_add(receive),
            _ => None,
        }
    }

    /// The longest answer a client takes: `max_answer`, and never less than its own
    /// `max_datagram` (a server answering within the client's own limit is always heard).
    pub(crate) const fn answer_limit(&self) -> usize {
        if self.max_answer > self.max_datagram {
            self.max_answer
        } else {
            self.max_datagram
        }
    }

    /// Bytes of a client's receive area: the longest answer and one byte more.
    pub(crate) const fn receive_len(&self) -> Option<usize> {
        self.answer_limit().checked_add(1)
    }
}

/// Why a datagram client or server could not be built from its configuration and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DatagramConfigError {
    /// No slots (client) or entries (server).
    NoSlots,
    /// Each slot's share of the byte storage is smaller than the minimum datagram.
    StorageTooSmall {
        /// Bytes per slot needed.
        need: usize,
        /// Bytes per slot given.
        have: usize,
    },
    /// `max_attempts` is zero.
    NoAttempts,
}

impl fmt::Display for DatagramConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSlots => f.write_str("no call slots or cache entries"),
            Self::StorageTooSmall { need, have } => {
                write!(
                    f,
                    "{have} bytes of storage per slot is under the {need} needed"
                )
            }
            Self::NoAttempts => f.write_str("max_attempts must be at least 1"),
        }
    }
}

impl core::error::Error for DatagramConfigError {}

/// The smallest `max_datagram` (and share of storage per slot or cache entry) the core
/// takes, 104 bytes: a header and room for the longest answer the server makes itself (a
/// rejection with its message, 64 bytes at most) with a margin.
pub const MIN_DATAGRAM: usize = DatagramHeader::LEN + 75;

/// Bytes per slot: an equal share of `storage`, capped at the largest datagram.
pub(crate) fn chunk_len(
    storage: usize,
    slots: usize,
    config: &DatagramConfig,
) -> Result<usize, DatagramConfigError> {
    let share = storage
        .checked_div(slots)
        .ok_or(DatagramConfigError::NoSlots)?;
    let chunk = share.min(config.max_datagram);
    if chunk < MIN_DATAGRAM {
        return Err(DatagramConfigError::StorageTooSmall {
            need: MIN_DATAGRAM,
            have: chunk,
        });
    }
    Ok(chunk)
}
