//! Limits and timers of the std server and client, each with its default. The protocol's own
//! per-connection limits are the core's [`Config`], embedded here as `connection`; datagram
//! mode's are the core's [`DatagramConfig`], embedded as `datagram`.

use std::time::Duration;

use wirecall_core::Config;
use wirecall_core::datagram::DatagramConfig;

use crate::endpoint::Endpoint;

/// Default largest datagram on `unix-dgram:` endpoints: 64 KiB. A Unix datagram never
/// crosses a network, so the 1232-byte path limit of UDP does not apply; the kernel takes
/// datagrams up to the socket buffer size (about 208 KiB by default on Linux).
pub const DEFAULT_UNIX_MAX_DATAGRAM: usize = 64 * 1024;

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
    /// At `max_connections`, a new connection takes the place of the open one that has
    /// gone longest without a call, if that one has no call in flight and has had none for
    /// at least this long (it gets a go-away and is closed, counted in
    /// `connections.evicted`); only when none has is the new one refused. So peers that
    /// connect and then send nothing, or only pings or a dribble, cannot lock real clients
    /// out for longer than this. `None` never evicts (refuses at the limit). Default: 10 s.
    pub evict_idle: Option<Duration>,
    /// After a graceful shutdown is asked for (SIGTERM, [`ShutdownHandle::shutdown`]), how
    /// long the server goes on serving as before while its health says it is draining
    /// (the builtin `health` fails, `stats` says `server.draining 1`), so load balancers
    /// that check it stop sending new connections before any connection is told to go
    /// away. Then the graceful shutdown proper begins. Default: zero (at once).
    ///
    /// [`ShutdownHandle::shutdown`]: crate::ShutdownHandle::shutdown
    pub drain_delay: Duration,
    /// After a shutdown is requested, how long connections get to answer what they have
    /// received before they are cut. Default: 30 s.
    pub shutdown_timeout: Duration,
    /// After a connection has ended, how long its last bytes (answers, a close frame) may
    /// take to drain to the peer before the socket is dropped. Default: 5 s.
    pub close_linger: Duration,
    /// File mode of Unix socket files (e.g. `0o660`); `None` leaves what the umask gives.
    /// Default: `None`.
    pub unix_mode: Option<u32>,
    /// Tell a connection to go away (gracefully: calls it sent are answered) once it is
    /// this old, less up to a tenth at random so connections made together do not all
    /// go at once; `None` keeps connections for as long as they are used. Behind a load
    /// balancer this makes long-lived clients reconnect now and then, and so spread over
    /// servers added since (docs/DEPLOYING.md); counted in `connections.aged_out`.
    /// Default: `None`.
    pub max_connection_age: Option<Duration>,
    /// Event loops, each on its own thread, serving the same endpoints (see
    /// [`Server`](crate::Server)): a server uses as many CPUs as it has loops. TCP, TLS and
    /// UDP endpoints get one socket per loop on the same address (`SO_REUSEPORT`: the
    /// kernel spreads connections, and keeps each UDP flow on one loop); a Unix stream
    /// listener is shared (a new connection wakes one idle loop); a `unix-dgram:` endpoint
    /// is served by the first loop alone (one call cache keeps its exactly-once promise).
    /// `max_connections` holds across all loops. Default: 1 (the `wirecall serve` default is
    /// the CPUs the process may run on: [`available_cpus`]).
    pub threads: usize,
    /// Threads that run synchronous functions; 0 runs them on the event-loop thread.
    /// Default: 0.
    pub workers: usize,
    /// Calls waiting for a free worker, across all connections; more are answered busy
    /// (not executed) at once. Bounds the request bodies copied for workers. Default: 4096.
    pub worker_queue: usize,
    /// Datagram mode on `udp:` and `unix-dgram:` endpoints. A server reads `max_datagram`
    /// (the largest datagram taken or sent on `udp:`, default 1232 bytes; `unix-dgram:` uses
    /// [`unix_max_datagram`](Self::unix_max_datagram) instead), `max_budget` (the longest
    /// deadline a call may ask for; longer ones are rejected, not run; default 60 s) and
    /// `max_latency` (how long a datagram may linger in the network; each call is
    /// remembered for its budget plus this; default 2 s).
    pub datagram: DatagramConfig,
    /// The largest datagram taken or sent on `unix-dgram:` endpoints. Default: 65,536
    /// ([`DEFAULT_UNIX_MAX_DATAGRAM`]).
    pub unix_max_datagram: usize,
    /// Entries of each datagram endpoint's call cache: the calls (and clients) it
    /// remembers at once, so a retransmitted call is answered from the cache instead of
    /// run again. When the entries a call may use are all live, the call is answered busy
    /// (not run). Needs about *clients × calls in flight per client* plus one per client;
    /// each entry holds one answer of up to the largest datagram (1232 bytes on `udp:`,
    /// 64 KiB on `unix-dgram:`, memory touched only as answers are stored). Default: 1024.
    pub datagram_cache: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            connection: Config::default(),
            max_connections: 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            evict_idle: Some(Duration::from_secs(10)),
            shutdown_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            close_linger: Duration::from_secs(5),
            max_connection_age: None,
            unix_mode: None,
            threads: 1,
            workers: 0,
            worker_queue: 4096,
            datagram: DatagramConfig::default(),
            unix_max_datagram: DEFAULT_UNIX_MAX_DATAGRAM,
            datagram_cache: 1024,
        }
    }
}

/// Default largest answer a client takes on a datagram endpoint: 64 KiB, a whole UDP
/// datagram, so an answer from a server whose `max_datagram` is larger than the client's
/// is not cut short. The client's own `max_datagram` applies when it is larger.
pub const DEFAULT_MAX_ANSWER: usize = 64 * 1024;

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
    /// Datagram mode on `udp:` and `unix-dgram:` endpoints: `max_datagram` (the largest
    /// request sent on `udp:`, 1232 bytes), retransmission (`initial_rto` 100 ms doubling
    /// up to `max_rto` 2 s, `jitter_per_mille` 500, `max_attempts` 32) and
    /// `default_timeout` (5 s: the deadline of a call made without one, since a datagram
    /// call always has a deadline) and `max_answer` (the longest answer taken, 64 KiB:
    /// [`DEFAULT_MAX_ANSWER`]). `connection.max_in_flight` bounds the calls in flight.
    pub datagram: DatagramConfig,
    /// The largest request sent on `unix-dgram:` endpoints. Default: 65,536
    /// ([`DEFAULT_UNIX_MAX_DATAGRAM`]).
    pub unix_max_datagram: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connection: Config::default(),
            connect_timeout: Duration::from_secs(10),
            datagram: DatagramConfig {
                max_answer: DEFAULT_MAX_ANSWER,
                ..DatagramConfig::default()
            },
            unix_max_datagram: DEFAULT_UNIX_MAX_DATAGRAM,
        }
    }
}

/// The largest `max_frame_len` the adapter allocates buffers for: 16 MiB.
pub const MAX_FRAME_LIMIT: u32 = 16 * 1024 * 1024;

/// The largest `max_in_flight` the adapter allocates a table for: 65,536.
pub const MAX_IN_FLIGHT_LIMIT: u32 = 65_536;

/// The largest `max_datagram` the adapter allocates buffers for: 16 MiB (the OS limits a
/// UDP datagram to 65,507 bytes of payload and a Unix one to the socket buffer).
pub const MAX_DATAGRAM_LIMIT: usize = 16 * 1024 * 1024;

/// The largest `datagram_cache` the adapter allocates: 1,048,576 entries.
pub const MAX_DATAGRAM_CACHE: usize = 1 << 20;

impl ServerConfig {
    /// When a connection accepted at `now` is to be told to go away for its age: `now`
    /// plus [`max_connection_age`](Self::max_connection_age) less up to a tenth of it, at
    /// random (the same rule in every driver). `None` without an age limit.
    #[must_use]
    pub fn aged_at(&self, now: wirecall_core::Instant) -> Option<wirecall_core::Instant> {
        let age = self.max_connection_age?;
        let random = crate::clock::spread_random();
        // A fraction in [0, 1) from the top 53 bits.
        #[allow(clippy::cast_precision_loss)]
        let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
        let age = age.mul_f64(1.0 - fraction / 10.0);
        Some(now.saturating_add(crate::clock::to_core(age)))
    }
}

/// The most event loops a server runs: 256 (one per CPU is what helps).
pub const MAX_THREADS: usize = 256;

/// The CPUs this process may run on (its affinity mask and CPU quota, as
/// [`std::thread::available_parallelism`] reads them), at least 1: the `wirecall serve`
/// default for [`ServerConfig::threads`].
#[must_use]
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The most worker threads a server starts: 1,024 (past a few thousand, spawning fails
/// for want of memory or of the process's thread limit).
pub const MAX_WORKERS: usize = 1024;

/// The largest `max_connections`: 1,048,576 (far past any descriptor limit).
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// The largest `worker_queue`: 1,048,576 calls.
pub const MAX_WORKER_QUEUE: usize = 1 << 20;

/// The longest `datagram.max_budget`: one day. A datagram call is remembered for its
/// budget, so a longer one would pin cache entries for longer than any caller waits.
pub const MAX_BUDGET_LIMIT: Duration = Duration::from_secs(86_400);

/// The receive buffer UDP sockets ask for, server and client: a burst of first copies from
/// many clients, or a window of 64 answers of 4 KiB, overflows the default 208 KiB. The
/// kernel caps the request at twice `net.core.rmem_max`; a smaller buffer still works,
/// with retransmissions.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// The datagram configuration for one endpoint: `base`, with `max_datagram` replaced by
/// `unix_max` and `duplicates` [`Never`](wirecall_core::datagram::Duplicates::Never) on a
/// `unix-dgram:` endpoint.
#[must_use]
pub fn datagram_config(
    base: &DatagramConfig,
    unix_max: usize,
    endpoint: &Endpoint,
) -> DatagramConfig {
    let mut config = *base;
    if matches!(endpoint, Endpoint::UnixDatagram(_)) {
        config.max_datagram = unix_max;
        // The kernel hands each datagram over once, so a call busy on every copy is known
        // not to have run.
        config.duplicates = wirecall_core::datagram::Duplicates::Never;
        // The kernel vouches for a Unix datagram's sender: no forged address to amplify to.
        config.amplification = 0;
    }
    config
}

/// Checks a datagram size, and the storage size the core asked for (`None`: it overflowed);
/// returns the storage size.
///
/// # Errors
///
/// [`Error::LimitTooLarge`](crate::Error::LimitTooLarge) past [`MAX_DATAGRAM_LIMIT`].
pub fn check_datagram(
    config: &DatagramConfig,
    storage: Option<usize>,
) -> Result<usize, crate::Error> {
    if config.max_datagram > MAX_DATAGRAM_LIMIT {
        return Err(crate::Error::LimitTooLarge {
            what: "max_datagram",
            got: u64::try_from(config.max_datagram).unwrap_or(u64::MAX),
            max: u64::try_from(MAX_DATAGRAM_LIMIT).unwrap_or(u64::MAX),
        });
    }
    storage.ok_or(crate::Error::LimitTooLarge {
        what: "datagram storage",
        got: u64::MAX,
        max: u64::try_from(usize::MAX).unwrap_or(u64::MAX),
    })
}

/// Checks a server's own limits before anything is set up, whichever endpoints it has: at
/// least one connection, a worker queue of at least one call, at most [`MAX_WORKERS`]
/// workers, a datagram budget of at least 1 ms and at most [`MAX_BUDGET_LIMIT`], a cache
/// of at least one entry, a peer share of the cache of at least one epoch
/// ([`EPOCH_ENTRIES`]), and datagrams of at least [`MIN_DATAGRAM`] bytes (both
/// transports), each no larger than its `MAX_*` limit. (The connection's limits are
/// [`check_limits`]'.)
///
/// [`MIN_DATAGRAM`]: wirecall_core::datagram::MIN_DATAGRAM
/// [`EPOCH_ENTRIES`]: wirecall_core::datagram::EPOCH_ENTRIES
///
/// # Errors
///
/// [`Error::LimitTooSmall`](crate::Error::LimitTooSmall) or
/// [`Error::LimitTooLarge`](crate::Error::LimitTooLarge), naming the setting.
pub fn check_server(config: &ServerConfig) -> Result<(), crate::Error> {
    if config
        .max_connection_age
        .is_some_and(|age| age < Duration::from_millis(1))
    {
        return Err(crate::Error::LimitTooSmall {
            what: "max_connection_age (ms)",
            got: 0,
            min: 1,
        });
    }
    use wirecall_core::datagram::MIN_DATAGRAM;
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let millis = |d: wirecall_core::Duration| d.as_micros() / 1000;
    let ranges: [(&'static str, u64, u64, u64); 9] = [
        (
            "max_connections",
            as_u64(config.max_connections),
            1,
            as_u64(MAX_CONNECTIONS_LIMIT),
        ),
        ("threads", as_u64(config.threads), 1, as_u64(MAX_THREADS)),
        ("workers", as_u64(config.workers), 0, as_u64(MAX_WORKERS)),
        (
            "worker_queue",
            as_u64(config.worker_queue),
            1,
            as_u64(MAX_WORKER_QUEUE),
        ),
        (
            "datagram_cache",
            as_u64(config.datagram_cache),
            1,
            as_u64(MAX_DATAGRAM_CACHE),
        ),
        (
            "datagram.max_peer_entries",
            as_u64(config.datagram.max_peer_entries),
            as_u64(wirecall_core::datagram::EPOCH_ENTRIES),
            as_u64(MAX_DATAGRAM_CACHE),
        ),
        (
            "datagram.max_datagram",
            as_u64(config.datagram.max_datagram),
            as_u64(MIN_DATAGRAM),
            as_u64(MAX_DATAGRAM_LIMIT),
        ),
        (
            "unix_max_datagram",
            as_u64(config.unix_max_datagram),
            as_u64(MIN_DATAGRAM),
            as_u64(MAX_DATAGRAM_LIMIT),
        ),
        (
            "datagram.max_budget (ms)",
            millis(config.datagram.max_budget),
            1,
            u64::try_from(MAX_BUDGET_LIMIT.as_millis()).unwrap_or(u64::MAX),
        ),
    ];
    for (what, got, min, max) in ranges {
        if got < min {
            return Err(crate::Error::LimitTooSmall { what, got, min });
        }
        if got > max {
            return Err(crate::Error::LimitTooLarge { what, got, max });
        }
    }
    Ok(())
}

/// Checks the limits that size a connection's memory.
///
/// # Errors
///
/// [`Error::LimitTooLarge`](crate::Error::LimitTooLarge) past [`MAX_FRAME_LIMIT`] or
/// [`MAX_IN_FLIGHT_LIMIT`].
pub fn check_limits(config: &Config) -> Result<(), crate::Error> {
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
