//! Building blocks for the drivers of other runtimes (the tokio driver, `wirecall-tokio`)
//! over this crate's endpoints, configuration, functions and counters, so that every
//! wirecall server binds, names and counts the same way, and only moving bytes differs.
//!
//! None of this decides anything about the protocol (that is `wirecall-core`'s job): it
//! binds sockets with the Unix socket-file hygiene of the mio server, opens a datagram
//! client's own socket (and points it at a restarted `unix-dgram:` server), draws a
//! client's epoch, checks the configuration's sizes, holds datagram answers a full peer
//! queue refused, and says when a draining datagram endpoint may close.
//! The function table ([`Registry`](crate::function::Registry)), the [`Responder`]s and
//! their [`Completions`](crate::function::Completions), and the counters
//! ([`Stats`]) are in their own modules.
//!
//! Every socket returned here is a std socket; listeners and server sockets are in
//! non-blocking mode, ready for a runtime's `from_std`.
//!
//! [`Responder`]: crate::function::Responder

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};

use wirecall_core::{Duration, Instant};

pub use crate::config::{
    UDP_RECEIVE_BUFFER, check_datagram, check_limits, check_server, datagram_config,
};
pub use crate::server::listener::SocketFile;

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::server::listener::{Listener, bind_udp, bind_unix_datagram};
use crate::stats::{DropKind, Stats};

/// A bound, listening stream socket (non-blocking).
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamListener {
    /// `unix:/path`, with its socket file (removed when dropped, if still ours).
    Unix {
        /// The listening socket.
        listener: std::os::unix::net::UnixListener,
        /// The file it is bound at.
        file: SocketFile,
    },
    /// `tcp:host:port`, with `SO_REUSEADDR`.
    Tcp(std::net::TcpListener),
}

/// Binds a stream endpoint (`unix:` or `tcp:`) as the mio server does: a stale Unix socket
/// file left by a dead server is replaced, a live server's is never taken, the file gets
/// `unix_mode`. Returns the listener and the endpoint it really listens on (for
/// `tcp:host:0`, the port the OS chose).
///
/// # Errors
///
/// [`Error::Listen`], [`Error::AddressInUse`], [`Error::NotASocket`], [`Error::Resolve`].
pub fn bind_stream(
    endpoint: &Endpoint,
    unix_mode: Option<u32>,
) -> Result<(StreamListener, Endpoint), Error> {
    // A driver of its own brings its own TLS: a `tls:` endpoint is refused here.
    let (listener, actual) = Listener::bind(endpoint, unix_mode, None)?;
    let listener = match listener {
        Listener::Unix { listener, file, .. } => StreamListener::Unix {
            listener: OwnedFd::from(listener).into(),
            // Bound just now and not shared: the only owner.
            file: std::sync::Arc::into_inner(file)
                .ok_or_else(|| Error::io("binding")(std::io::Error::other("socket file shared")))?,
        },
        Listener::Tcp(listener) => StreamListener::Tcp(OwnedFd::from(listener).into()),
        Listener::Tls { .. } => return Err(Error::TlsNotConfigured(endpoint.clone())),
    };
    Ok((listener, actual))
}

/// A bound datagram socket of a server (non-blocking).
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramSocket {
    /// `udp:host:port`, with a receive buffer of [`UDP_RECEIVE_BUFFER`] asked for.
    Udp(std::net::UdpSocket),
    /// `unix-dgram:/path`, with its socket file.
    Unix {
        /// The socket.
        socket: std::os::unix::net::UnixDatagram,
        /// The file it is bound at.
        file: SocketFile,
    },
}

/// Binds a datagram endpoint (`udp:` or `unix-dgram:`) of a server, with the same hygiene
/// as [`bind_stream`]; returns it and the endpoint it is really bound to.
///
/// # Errors
///
/// As [`bind_stream`].
pub fn bind_datagram(
    endpoint: &Endpoint,
    unix_mode: Option<u32>,
) -> Result<(DatagramSocket, Endpoint), Error> {
    match endpoint {
        Endpoint::UnixDatagram(path) => {
            let (socket, file) = bind_unix_datagram(endpoint, path, unix_mode)?;
            let socket = OwnedFd::from(socket).into();
            Ok((DatagramSocket::Unix { socket, file }, endpoint.clone()))
        }
        _ => {
            let (socket, actual) = bind_udp(endpoint)?;
            Ok((DatagramSocket::Udp(OwnedFd::from(socket).into()), actual))
        }
    }
}

/// A datagram client's own socket, connected to the server at `endpoint` (blocking mode):
/// on `unix-dgram:` bound at a fresh path in a private temporary directory (returned, so
/// the caller removes it by dropping it after the socket), on `udp:` an ephemeral port of
/// the first address family that connects. See [`Client`](crate::Client) for why.
///
/// # Errors
///
/// [`Error::Connect`] or [`Error::Resolve`].
pub fn connect_datagram(
    endpoint: &Endpoint,
) -> Result<(OwnedFd, Option<tempfile::TempDir>), Error> {
    crate::client::datagram::open(endpoint)
}

/// After a send on a datagram client's socket failed with `error`: on `unix-dgram:`, when
/// the server's socket has closed (`ECONNREFUSED`; Linux then leaves ours unconnected, and
/// later sends fail with `ENOTCONN`), connects the socket to the endpoint's path again.
/// `true` when that worked: a server restarted there is reached, and the refused datagram,
/// which was never delivered, can go again at once
/// ([`not_sent`](wirecall_core::datagram::DatagramClient::not_sent)). `false` otherwise:
/// nobody is there yet (the next retransmission tries again), or the error was another.
/// (Whatever the old server had sent and the client had not read is gone by then: Linux
/// empties the queue of a connected socket whose peer closed, which is why a draining
/// server lingers for acknowledgements, [`DRAIN_LINGER`].)
pub fn reconnect_datagram(socket: impl AsFd, endpoint: &Endpoint, error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    let Endpoint::UnixDatagram(path) = endpoint else {
        return false;
    };
    if !matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::NotConnected
    ) {
        return false;
    }
    let Ok(address) = rustix::net::SocketAddrUnix::new(path.as_path()) else {
        return false;
    };
    match rustix::net::connect(&socket, &address) {
        Ok(()) => {
            log::info!("{endpoint}: the server's socket was closed; reached the one there now");
            true
        }
        Err(e) => {
            log::debug!("{endpoint}: no server to reconnect to yet: {e}");
            false
        }
    }
}

/// After a datagram client's send of `kind` failed with `error` (and
/// [`reconnect_datagram`] did not help): when the kernel says nothing listens at the
/// server's address, tells the core ([`refused`](wirecall_core::datagram::DatagramClient::refused))
/// and returns `true`. On `udp:` a connected socket reports an earlier datagram's ICMP
/// "port unreachable" as `ECONNREFUSED` on the next send, which then sends nothing: that
/// datagram is handed back ([`not_sent`](wirecall_core::datagram::DatagramClient::not_sent))
/// and goes again. On `unix-dgram:` the refused datagram is this one (`ECONNREFUSED`, or
/// `ENOTCONN` once the kernel has disconnected the socket): it reached no socket.
pub fn datagram_send_refused<B, S>(
    core: &mut wirecall_core::datagram::DatagramClient<B, S>,
    endpoint: &Endpoint,
    kind: wirecall_core::datagram::DatagramKind,
    error: &std::io::Error,
) -> bool
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[wirecall_core::datagram::DatagramCallSlot]>
        + AsMut<[wirecall_core::datagram::DatagramCallSlot]>,
{
    use std::io::ErrorKind;
    match (endpoint, error.kind()) {
        (Endpoint::Udp(..), ErrorKind::ConnectionRefused) => {
            core.not_sent(kind);
            core.refused();
            true
        }
        (Endpoint::UnixDatagram(_), ErrorKind::ConnectionRefused | ErrorKind::NotConnected) => {
            core.refused();
            true
        }
        _ => false,
    }
}

/// `true` for a receive error on a datagram client's connected socket that reports a
/// datagram refused at the server's address (`ECONNREFUSED`: on Linux UDP, an ICMP "port
/// unreachable"): the driver tells the core
/// ([`refused`](wirecall_core::datagram::DatagramClient::refused)).
#[must_use]
pub fn is_refusal(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::ConnectionRefused
}

/// A connect error on a Unix socket, with a hint when the socket there is of the other
/// kind (`EPROTOTYPE`, "Protocol wrong type for socket"): a `unix:` endpoint pointed at a
/// datagram socket is told to use `unix-dgram:`, and the other way round. Other errors
/// pass unchanged.
#[must_use]
pub fn explain_connect_error(endpoint: &Endpoint, error: std::io::Error) -> std::io::Error {
    let other = match endpoint {
        Endpoint::Unix(path) => Endpoint::UnixDatagram(path.clone()),
        Endpoint::UnixDatagram(path) => Endpoint::Unix(path.clone()),
        Endpoint::Tcp(..) | Endpoint::Tls(..) | Endpoint::Udp(..) => return error,
    };
    if error.raw_os_error() != Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) {
        return error;
    }
    let kind = if endpoint.is_datagram() {
        "a stream"
    } else {
        "a datagram"
    };
    std::io::Error::new(
        error.kind(),
        format!("{error}: the socket there is {kind} socket; use {other}"),
    )
}

/// Two random words from the OS for a datagram client: its epoch and its jitter seed.
///
/// # Errors
///
/// [`Error::Io`] when `/dev/urandom` cannot be read.
pub fn random_words() -> Result<[u64; 2], Error> {
    crate::client::datagram::random_words()
}

/// Bytes of a refused client's early requests read and dropped at most before its socket
/// is closed.
const REFUSE_DRAIN: usize = 64 * 1024;

/// Tells a connection over the connection limit, in one best-effort write on its
/// non-blocking socket, that it is refused: the core's hello and a close with `REFUSED`,
/// so the client knows none of its calls ran (rather than guessing from a bare
/// disconnect). Then the sending half is shut (the refusal is followed by an orderly end of
/// stream) and what has already arrived from the client (its hello and early requests) is
/// read and dropped, up to 64 KiB, so that closing does not turn into a reset that could
/// destroy the refusal on its way. The caller then drops the socket. The system calls are
/// made on the descriptor directly, so a runtime's readiness bookkeeping cannot skip them.
pub fn refuse(socket: impl AsFd, config: &wirecall_core::Config) {
    refuse_with(socket, config, wirecall_core::server::encode_refusal);
}

/// As [`refuse`], for a peer the server does not take (its credentials are not on the
/// allowlist): the core's hello and a close with `NOT_ALLOWED`.
pub fn refuse_not_allowed(socket: impl AsFd, config: &wirecall_core::Config) {
    refuse_with(socket, config, wirecall_core::server::encode_not_allowed);
}

fn refuse_with(
    socket: impl AsFd,
    config: &wirecall_core::Config,
    encode: fn(
        &wirecall_core::Config,
        &mut [u8],
    ) -> Result<usize, wirecall_core::config::ConfigError>,
) {
    use wirecall_core::server::REFUSAL_LEN;
    let mut refusal = [0u8; REFUSAL_LEN];
    let Ok(len) = encode(config, &mut refusal) else {
        return;
    };
    // A fresh socket's send buffer takes these few bytes.
    let _ = rustix::io::write(&socket, refusal.get(..len).unwrap_or_default());
    let _ = rustix::net::shutdown(&socket, rustix::net::Shutdown::Write);
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSE_DRAIN {
        match rustix::io::read(&socket, &mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// The credentials the kernel recorded for the process at the other end of a Unix stream
/// when it connected (`SO_PEERCRED`), for [`Peer::Unix`](crate::function::Peer::Unix);
/// `None` if the kernel refuses to say (logged at debug).
pub fn peer_credentials(
    stream: &impl std::os::fd::AsFd,
) -> Option<crate::function::UnixCredentials> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(c) => Some(crate::function::UnixCredentials::new(
            c.uid(),
            c.gid(),
            c.pid(),
        )),
        Err(e) => {
            log::debug!("no peer credentials: {e}");
            None
        }
    }
}

/// How long a draining datagram endpoint goes on serving, once no call runs and nothing
/// waits to be sent, for its clients to acknowledge the answers they got. Closing at once
/// can destroy answers still on their way: on Linux, a client's connected Unix datagram
/// socket throws away every datagram it holds when it sends to a peer that has closed (an
/// acknowledgement, or a retransmission made before it read), and on UDP a lost answer
/// can no longer be replayed. A client that reads acknowledges within a quarter of its
/// initial retransmission timeout (25 ms by default) or when it is dropped; one second
/// also covers a few retransmissions of a lost answer, and bounds what a client that never
/// acknowledges adds to a shutdown.
pub const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// When a draining datagram endpoint may close: a driver asks [`is_over`](Self::is_over)
/// each turn of its drain and wakes at [`wakeup`](Self::wakeup) to ask again. See
/// [`DRAIN_LINGER`].
#[derive(Debug, Default)]
pub struct DrainLinger {
    /// When the endpoint last became idle (no call running, nothing held), while it is.
    idle_since: Option<Instant>,
    /// The last [`is_over`](Self::is_over) said yes: nothing to wake for.
    over: bool,
}

impl DrainLinger {
    /// `true` once the endpoint may close: it is `idle` (the core is drained, no call runs
    /// or is held, no answer waits for room) and every answer has been acknowledged
    /// (`unacknowledged`, the core's count, asked only then) or [`DRAIN_LINGER`] has
    /// passed since it became idle.
    pub fn is_over(
        &mut self,
        now: Instant,
        idle: bool,
        unacknowledged: impl FnOnce() -> usize,
    ) -> bool {
        if !idle {
            self.idle_since = None;
            self.over = false;
            return false;
        }
        let since = *self.idle_since.get_or_insert(now);
        self.over = now >= since.saturating_add(DRAIN_LINGER) || unacknowledged() == 0;
        self.over
    }

    /// When the linger ends, while the endpoint lingers: look again then. `None` once it
    /// is over (a driver still running for other reasons must not wake for a time past).
    #[must_use]
    pub fn wakeup(&self) -> Option<Instant> {
        if self.over {
            return None;
        }
        self.idle_since.map(|t| t.saturating_add(DRAIN_LINGER))
    }
}

/// Bytes of answers held because the peer's queue was full (a Unix datagram socket queues
/// only `net.unix.max_dgram_qlen` datagrams, 10 by default), at most; past it a refused
/// answer is dropped and counted, as any lost datagram (the client retransmits, the cache
/// replays), so a peer that never reads costs a bounded amount and never stops the
/// endpoint from reading.
pub const MAX_HELD_BYTES: usize = 1 << 20;
/// Held answers tried per [`HeldAnswers::retry`] at most, oldest first.
const RETRIES_PER_TURN: usize = 16;
/// How soon held answers are first tried again: a full Unix datagram queue raises no event
/// on an unconnected socket, so a driver polls for room; the wait doubles, up to
/// [`RETRY_MAX`], while nothing goes out.
const RETRY_FIRST: Duration = Duration::from_millis(1);
/// The longest wait between tries of held answers.
const RETRY_MAX: Duration = Duration::from_millis(64);
/// A held answer still not taken after this long is dropped (and counted): the client
/// retransmits, and the cache replays it.
const HELD_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends one datagram a server's driver has for `to` through `try_send` (one send without
/// waiting; an interrupted one is made again) and counts it: sent, or dropped as
/// `send_failed` (logged under `label`) on any error but "no room", which the caller holds
/// and tries again ([`HeldAnswers`]). The core keeps answers cached, so a dropped one is
/// replayed to the client's retransmission.
pub fn send_answer<P: fmt::Debug>(
    bytes: &[u8],
    to: &P,
    label: &str,
    stats: &Stats,
    mut try_send: impl FnMut(&[u8], &P) -> std::io::Result<usize>,
) -> SendResult {
    use crate::stream::{interrupted, would_block};
    loop {
        match try_send(bytes, to) {
            Ok(_) => {
                stats.datagram_sent();
                return SendResult::Taken;
            }
            Err(e) if interrupted(&e) => {}
            Err(e) if would_block(&e) => return SendResult::WouldBlock,
            Err(e) => {
                log::debug!("{label}: a datagram to {to:?} was not sent: {e}");
                stats.datagram_dropped(DropKind::SendFailed);
                return SendResult::Dropped;
            }
        }
    }
}

/// `true` for an error a datagram server's socket reports on a receive for an earlier
/// datagram's peer (on Linux UDP, an ICMP "port unreachable" for an answer sent before),
/// not for the socket itself: the driver goes on reading.
#[must_use]
pub fn is_peer_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

/// What became of a datagram a server's driver tried to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendResult {
    /// The kernel took it.
    Taken,
    /// No room now (the peer's queue is full): hold it and try again.
    WouldBlock,
    /// Failed for good; dropped (and counted by the sender).
    Dropped,
}

/// Answers a datagram server's socket had no room for, oldest first, each with when it was
/// made, tried again on a backoff (from 1 ms, doubling to 64 ms while nothing goes out),
/// dropped (and counted) after 1 s or past [`MAX_HELD_BYTES`]: the answers stay in the
/// core's call cache, so a client's retransmission still gets them. This is how a driver
/// answers a Unix datagram client whose queue is momentarily full without ever blocking
/// its endpoint.
#[derive(Debug)]
pub struct HeldAnswers<P> {
    queue: VecDeque<(Instant, P, Vec<u8>)>,
    /// Their bytes.
    bytes: usize,
    /// When to try them again, and the wait after that.
    retry_at: Instant,
    retry_every: Duration,
}

impl<P: Clone + fmt::Debug> Default for HeldAnswers<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone + fmt::Debug> HeldAnswers<P> {
    /// Nothing held.
    #[must_use]
    pub fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            retry_at: Instant::ZERO,
            retry_every: RETRY_FIRST,
        }
    }

    /// Holds an answer the peer had no room for, to be tried again soon (or drops it,
    /// counted, when too much is held already).
    pub fn hold(&mut self, now: Instant, to: &P, bytes: &[u8], stats: &Stats) {
        if self.bytes.saturating_add(bytes.len()) > MAX_HELD_BYTES {
            stats.datagram_dropped(DropKind::SendFailed);
            return;
        }
        if self.queue.is_empty() {
            self.retry_at = now.saturating_add(RETRY_FIRST);
            self.retry_every = RETRY_FIRST;
        }
        self.bytes = self.bytes.saturating_add(bytes.len());
        self.queue.push_back((now, to.clone(), bytes.to_vec()));
    }

    /// When to call [`retry`](Self::retry) next; `None` when nothing is held.
    #[must_use]
    pub fn next_retry(&self) -> Option<Instant> {
        self.queue.front().map(|_| self.retry_at)
    }

    /// `true` when nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When their time has come, tries the oldest held answers once more with `send` (a
    /// few per call); drops the ones held too long.
    pub fn retry(
        &mut self,
        now: Instant,
        stats: &Stats,
        mut send: impl FnMut(&[u8], &P) -> SendResult,
    ) {
        if self.queue.is_empty() || now < self.retry_at {
            return;
        }
        let mut sent_any = false;
        for _ in 0..self.queue.len().min(RETRIES_PER_TURN) {
            let Some((at, to, bytes)) = self.queue.pop_front() else {
                break;
            };
            if now.saturating_duration_since(at) >= HELD_TIMEOUT {
                log::debug!("an answer to {to:?} held too long, dropped");
                stats.datagram_dropped(DropKind::SendFailed);
                self.bytes = self.bytes.saturating_sub(bytes.len());
                continue;
            }
            if send(&bytes, &to) == SendResult::WouldBlock {
                self.queue.push_back((at, to, bytes));
            } else {
                sent_any = true;
                self.bytes = self.bytes.saturating_sub(bytes.len());
            }
        }
        self.retry_every = if sent_any {
            RETRY_FIRST
        } else {
            self.retry_every.saturating_mul(2).min(RETRY_MAX)
        };
        self.retry_at = now.saturating_add(self.retry_every);
    }
}
