//! Limits and timers of the std server and client, each with its default. The protocol's own
//! per-connection limits are the core's [`Config`], embedded here as `connection`.

use std::time::Duration;

use wirecall_core::Config;
use wirecall_core::wire::{BASELINE_MAX_FRAME_LEN, LEN_PREFIX};

/// How a [`Server`](crate::Server) runs. Start from [`ServerConfig::default`].
///
/// Memory per connection is fixed by `connection`: a receive and a transmit buffer of
/// `max_frame_len + 4` bytes each and `max_in_flight` request slots, plus answers that the
/// transmit buffer could not take yet (at most one per request in flight, since reading
/// stops while any wait). Nothing else grows with what a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Protocol limits and timers of every connection: `max_frame_len` (default 65,536),
    /// `max_in_flight` (64), handshake (10 s), keepalive (30 s + 10 s), drain (30 s).
    pub connection: Config,
    /// Connections open at once; one more is accepted and closed at once, logged and
    /// counted as refused. Default: 1024.
    pub max_connections: usize,
    /// Close a connection gracefully after this long with no call (none in flight, none
    /// arriving); `None` keeps idle connections (keepalive still detects dead peers).
    /// Default: 300 s.
    pub idle_timeout: Option<Duration>,
    /// After a shutdown is requested, how long connections get to answer what they have
    /// received before they are cut. Default: 30 s.
    pub shutdown_timeout: Duration,
    /// After a connection has ended, how long its last bytes (answers, a close frame) may
    /// take to drain to the peer before the socket is dropped. Default: 5 s.
    pub close_linger: Duration,
    /// File mode of Unix socket files (e.g. `0o660`); `None` leaves what the umask gives.
    /// Default: `None`.
    pub unix_mode: Option<u32>,
    /// Threads that run synchronous functions; 0 runs them on the event-loop thread.
    /// Default: 0.
    pub workers: usize,
    /// Calls waiting for a free worker, across all connections; more are answered busy
    /// (not executed) at once. Bounds the request bodies copied for workers. Default: 4096.
    pub worker_queue: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            connection: Config::default(),
            max_connections: 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            shutdown_timeout: Duration::from_secs(30),
            close_linger: Duration::from_secs(5),
            unix_mode: None,
            workers: 0,
            worker_queue: 4096,
        }
    }
}

/// How a [`Client`](crate::Client) connects. Start from [`ClientConfig::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Protocol limits and timers of the connection: `max_frame_len` is the longest answer
    /// accepted (default 65,536), `max_in_flight` the most calls kept in flight (64, or
    /// fewer if the server says so), keepalive 30 s + 10 s.
    pub connection: Config,
    /// How long connecting may take. Default: 10 s.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connection: Config::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The largest `max_frame_len` the adapter allocates buffers for: 16 MiB.
pub const MAX_FRAME_LIMIT: u32 = 16 * 1024 * 1024;

/// The largest `max_in_flight` the adapter allocates a table for: 65,536.
pub const MAX_IN_FLIGHT_LIMIT: u32 = 65_536;

/// Checks the limits that size a connection's memory.
pub(crate) fn check_limits(config: &Config) -> Result<(), crate::Error> {
    if config.max_frame_len > MAX_FRAME_LIMIT {
        return Err(crate::Error::LimitTooLarge {
            what: "max_frame_len",
            got: u64::from(config.max_frame_len),
            max: u64::from(MAX_FRAME_LIMIT),
        });
    }
    if config.max_in_flight > MAX_IN_FLIGHT_LIMIT {
        return Err(crate::Error::LimitTooLarge {
            what: "max_in_flight",
            got: u64::from(config.max_in_flight),
            max: u64::from(MAX_IN_FLIGHT_LIMIT),
        });
    }
    Ok(())
}

/// Bytes of a receive or transmit buffer for a connection with this configuration: one
/// frame of the largest size plus its length prefix (never under the baseline frame, so a
/// too-small `max_frame_len` is reported as such by the core, not as a small buffer).
pub(crate) fn buffer_len(config: &Config) -> usize {
    usize::try_from(config.max_frame_len.max(BASELINE_MAX_FRAME_LEN))
        .unwrap_or(usize::MAX)
        .saturating_add(LEN_PREFIX)
}

/// Slots of a request or call table for this configuration.
pub(crate) fn table_len(config: &Config) -> usize {
    usize::try_from(config.max_in_flight).unwrap_or(usize::MAX)
}
