//! Limits and timers of a connection, each with a documented default.

use core::fmt;

use crate::time::Duration;
use crate::wire::{BASELINE_MAX_FRAME_LEN, BASELINE_MAX_IN_FLIGHT};

/// Limits and timers of one connection. Start from [`Config::default`] and change fields.
///
/// Every bound a peer could push on has a field here; crossing it gives a typed error or a
/// protocol error and a close, never a panic or unbounded memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// The longest frame body this side accepts, announced in its hello. Clamped to what the
    /// receive buffer holds behind the 4-byte prefix; must be at least
    /// [`BASELINE_MAX_FRAME_LEN`] (1024). Default: 65,536 bytes, enough for any datagram
    /// and for the common "small RPC" body, without making an idle connection's buffers
    /// large.
    pub max_frame_len: u32,
    /// Calls in flight at once on this connection. A server announces it (clamped to its
    /// table size, at least [`BASELINE_MAX_IN_FLIGHT`]); a client keeps to the smaller of
    /// this, its table and the server's number. Default: 64, one benchmark window, and 64
    /// table slots cost a server about 2 KiB per connection.
    pub max_in_flight: u32,
    /// How long to wait for the peer's hello before closing. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Send a ping after this long without receiving anything; `None` disables keepalive.
    /// Default: 30 s, well under common NAT and load-balancer idle timeouts (60 s and up).
    pub keepalive_interval: Option<Duration>,
    /// Close the connection if nothing (not even the pong) arrives this long after a ping.
    /// Default: 10 s.
    pub keepalive_timeout: Duration,
    /// How long a graceful close may wait for answers before it gives up and closes.
    /// Default: 30 s.
    pub drain_timeout: Duration,
    /// The retry-after hint a server sends when its request table is full. Default: 50 ms.
    pub busy_retry_after: Duration,
    /// How long a frame may take to arrive once its first bytes have: a connection whose
    /// receive buffer holds part of a frame for longer is closed (`FRAME_TIMEOUT`), so a
    /// peer that dribbles a byte at a time cannot hold it open (keepalive counts any byte
    /// as life). Default: 30 s, a 64 KiB frame at about 17 kbit/s; raise it with
    /// `max_frame_len` for slow links.
    pub frame_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_len: 64 * 1024,
            max_in_flight: 64,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            busy_retry_after: Duration::from_millis(50),
            frame_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Bytes a connection's receive and transmit buffers should each be able to hold: one
    /// frame of `max_frame_len` (at least the baseline) and its 4-byte length prefix. A
    /// smaller receive buffer lowers the limit announced; a growable [`Buffer`] may start
    /// smaller and grow to this.
    ///
    /// [`Buffer`]: crate::Buffer
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        let frame = if self.max_frame_len > BASELINE_MAX_FRAME_LEN {
            self.max_frame_len
        } else {
            BASELINE_MAX_FRAME_LEN
        };
        (frame as usize).saturating_add(crate::wire::LEN_PREFIX)
    }

    /// Slots of a request or call table for this configuration: `max_in_flight`.
    #[must_use]
    pub fn table_len(&self) -> usize {
        usize::try_from(self.max_in_flight).unwrap_or(usize::MAX)
    }
}

/// Why a connection could not be built from its configuration and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// The receive buffer cannot hold a baseline frame (1024 bytes + 4-byte prefix).
    ReceiveBufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// The transmit buffer cannot hold a baseline frame.
    TransmitBufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// `max_frame_len` is below the baseline every peer must accept (1024).
    FrameLimitTooSmall {
        /// The baseline.
        need: u32,
        /// The configured limit.
        have: u32,
    },
    /// Fewer table slots (or a smaller `max_in_flight`) than a server must accept: 4.
    TooFewSlots {
        /// Slots needed.
        need: usize,
        /// Slots given.
        have: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReceiveBufferTooSmall { need, have } => {
                write!(
                    f,
                    "receive buffer of {have} bytes is under the {need} needed"
                )
            }
            Self::TransmitBufferTooSmall { need, have } => {
                write!(
                    f,
                    "transmit buffer of {have} bytes is under the {need} needed"
                )
            }
            Self::FrameLimitTooSmall { need, have } => {
                write!(
                    f,
                    "max_frame_len {have} is under the protocol's baseline of {need}"
                )
            }
            Self::TooFewSlots { need, have } => {
                write!(f, "{have} request slots are fewer than the {need} needed")
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// Bytes a buffer needs to hold one baseline frame with its prefix.
pub(crate) const BASELINE_BUFFER: usize = BASELINE_MAX_FRAME_LEN as usize + crate::wire::LEN_PREFIX;

/// Slots a server needs at least.
pub(crate) const BASELINE_SLOTS: usize = BASELINE_MAX_IN_FLIGHT as usize;
