//! Datagram endpoints (`udp:`, `unix-dgram:`): one socket and one core
//! [`DatagramServer`] each, driven by the event loop next to the stream connections.
//!
//! The core decides everything about a datagram: whether it is a new call to run, a
//! retransmission to answer again from the call cache, a late copy or garbage to drop, a
//! call to refuse busy or reject. This module only moves bytes: it reads datagrams until
//! the socket would block (into a buffer one byte longer than the largest datagram, so the
//! core sees and counts an oversized one), hands new calls to the same functions, workers
//! and [`Responder`](crate::Responder)s as stream requests, and sends each answer the core
//! returns to the peer it names. A send the kernel does not take is dropped and counted:
//! the answer stays in the core's cache, so the client's next retransmission gets it.
//!
//! The peer address is the sender's `SocketAddr` on UDP, and on Unix datagram sockets the
//! path the sender's socket is bound to (a [`PathBuf`]); a Unix sender with no name cannot
//! be answered, so its datagrams are dropped (`unaddressable`) before the core sees them.
//!
//! In a shutdown the core is put in drain mode and the socket is still read:
//! retransmissions of answered calls are still answered from the cache, calls running are
//! answered when done, and the core rejects new calls (`SHUTTING_DOWN`, not executed)
//! rather than leave them to time out. A `unix-dgram:`
//! socket file is removed as the shutdown begins (clients already connected to the socket
//! still reach it). The event loop ends once no call is running.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Interest, Registry, Token};
use wirecall_core::Instant;
use wirecall_core::datagram::{
    DatagramEntry, DatagramRespondError, DatagramServer, DatagramServerStats, DropReason, Received,
    RequestHandle,
};

use super::conn::{Shared, dispatch};
use super::listener::{Share, SocketFile, bind_udp_shared, bind_unix_datagram};
use crate::config::{MAX_DATAGRAM_CACHE, ServerConfig, check_datagram, datagram_config};
use crate::driver::{DrainLinger, HeldAnswers, SendResult, is_peer_error, send_answer};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::function::{Answer, CallRef, Completions, Peer, UnixCredentials, reply_of};
use crate::stats::{DropKind, Stats};
use crate::stream::{interrupted, would_block};

/// Datagrams read from one socket per turn of the loop before other work gets a turn.
const READS_PER_TURN: usize = 256;
/// A datagram socket the loop can read from and answer on, with its peer address type.
pub(super) trait DatagramSocket: Source {
    /// Who sent a datagram, as the core keys its cache by.
    type Peer: Clone + PartialEq + fmt::Debug;

    /// Receives one datagram: its length and its sender, `None` when the sender cannot be
    /// answered (a Unix socket with no name).
    fn recv_peer(&self, buf: &mut [u8]) -> io::Result<(usize, Option<Self::Peer>)>;

    /// Sends one datagram to `to`.
    fn send_peer(&self, buf: &[u8], to: &Self::Peer) -> io::Result<usize>;

    /// The sender as a function's [`CallContext`](crate::function::CallContext) names it.
    fn call_peer(peer: &Self::Peer, credentials: Option<UnixCredentials>) -> Peer<'_>;

    /// As [`recv_peer`](Self::recv_peer), with the sender's credentials when the kernel
    /// attaches them (a Unix datagram socket with `SO_PASSCRED` set); `None` otherwise.
    fn recv_peer_credentials(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<Self::Peer>, Option<UnixCredentials>)> {
        self.recv_peer(buf).map(|(n, peer)| (n, peer, None))
    }
}

impl DatagramSocket for UdpSocket {
    type Peer = SocketAddr;

    fn recv_peer(&self, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>)> {
        self.recv_from(buf).map(|(n, from)| (n, Some(from)))
    }

    fn send_peer(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
        self.send_to(buf, *to)
    }

    fn call_peer(peer: &SocketAddr, _: Option<UnixCredentials>) -> Peer<'_> {
        Peer::Udp(*peer)
    }
}

impl DatagramSocket for UnixDatagram {
    type Peer = PathBuf;

    fn recv_peer(&self, buf: &mut [u8]) -> io::Result<(usize, Option<PathBuf>)> {
        self.recv_from(buf)
            .map(|(n, from)| (n, from.as_pathname().map(Path::to_path_buf)))
    }

    fn send_peer(&self, buf: &[u8], to: &PathBuf) -> io::Result<usize> {
        self.send_to(buf, to)
    }

    fn call_peer(peer: &PathBuf, credentials: Option<UnixCredentials>) -> Peer<'_> {
        Peer::UnixDatagram {
            path: peer,
            credentials,
        }
    }

    fn recv_peer_credentials(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<PathBuf>, Option<UnixCredentials>)> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
        use std::os::fd::AsRawFd;
        // nix reads the credentials as plain integers (rustix's UCred cannot hold the pid 0
        // the kernel reports for a sender outside our pid namespace).
        let mut space = nix::cmsg_space!(nix::libc::ucred);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<UnixAddr>(
            self.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let credentials = msg.cmsgs().ok().and_then(|mut cmsgs| {
            cmsgs.find_map(|m| match m {
                ControlMessageOwned::ScmCredentials(c) => {
                    Some(UnixCredentials::new(c.uid(), c.gid(), c.pid()))
                }
                _ => None,
            })
        });
        let peer = msg.address.and_then(|a| a.path().map(Path::to_path_buf));
        Ok((msg.bytes, peer, credentials))
    }
}

/// The core server with heap storage sized from the configuration.
type Core<P> = DatagramServer<P, Box<[u8]>, Box<[DatagramEntry<P>]>>;

/// One datagram endpoint of either kind. See the [module docs](self).
pub(super) struct Datagram<S: DatagramSocket> {
    socket: S,
    core: Core<S::Peer>,
    /// The largest datagram plus one byte, so an oversized one is seen as such.
    buf: Box<[u8]>,
    /// The endpoint, for log lines.
    label: String,
    /// Calls taken and not yet answered or cancelled.
    running: HashSet<RequestHandle>,
    /// Answers held until their time (`Responder::respond_after`), by (time, arrival).
    delayed: BTreeMap<(Instant, u64), (RequestHandle, Answer)>,
    next_seq: u64,
    /// The core's counters already added to the server's.
    seen: DatagramServerStats,
    /// The last read stopped before the socket would block: read again next turn.
    readable: bool,
    /// Answers the socket had no room for.
    unsent: HeldAnswers<S::Peer>,
    /// Where this endpoint's responders deliver.
    completions: Arc<dyn Completions>,
    /// When the drain may end.
    linger: DrainLinger,
    /// Each datagram's sender credentials are read and checked against the allowlist.
    check_credentials: bool,
}

impl<S: DatagramSocket> Datagram<S> {
    fn new(
        socket: S,
        core: Core<S::Peer>,
        max_datagram: usize,
        label: String,
        completions: Arc<dyn Completions>,
    ) -> Self {
        Self {
            socket,
            core,
            buf: vec![0u8; max_datagram.saturating_add(1)].into_boxed_slice(),
            label,
            running: HashSet::new(),
            delayed: BTreeMap::new(),
            next_seq: 0,
            seen: DatagramServerStats::default(),
            readable: false,
            unsent: HeldAnswers::new(),
            linger: DrainLinger::default(),
            completions,
            check_credentials: false,
        }
    }

    /// When their time has come, tries the oldest held answers once more.
    fn retry_unsent(&mut self, now: Instant, stats: &Stats) {
        let (socket, label) = (&self.socket, &self.label);
        self.unsent.retry(now, stats, |bytes, to| {
            send(socket, bytes, to, label, stats)
        });
    }

    /// Reads and handles datagrams until the socket would block, or for one turn's worth.
    fn read(&mut self, now: Instant, shared: &Shared) {
        self.readable = false;
        for _ in 0..READS_PER_TURN {
            let received = if self.check_credentials {
                self.socket.recv_peer_credentials(&mut self.buf)
            } else {
                self.socket
                    .recv_peer(&mut self.buf)
                    .map(|(n, p)| (n, p, None))
            };
            let (len, peer, credentials) = match received {
                Ok(received) => received,
                Err(e) if would_block(&e) => {
                    self.sync_stats(&shared.stats);
                    return;
                }
                // A pending error from an earlier send (e.g. an ICMP port unreachable):
                // reading it cleared it.
                Err(e) if interrupted(&e) || is_peer_error(&e) => continue,
                Err(e) => {
                    log::warn!("{}: cannot receive: {e}", self.label);
                    self.sync_stats(&shared.stats);
                    return;
                }
            };
            shared.stats.datagram_received();
            if self.check_credentials && !shared.access.allows(credentials) {
                shared.stats.datagram_dropped(DropKind::NotAllowed);
                shared.warnings.not_allowed.warn(format_args!(
                    "{}: dropped a datagram from {peer:?} ({}): not on the allowlist",
                    self.label,
                    credentials.map_or_else(|| "no credentials".to_owned(), |c| c.to_string())
                ));
                continue;
            }
            let Some(peer) = peer else {
                log::debug!("{}: dropped a datagram from an unnamed socket", self.label);
                shared.stats.datagram_dropped(DropKind::Unaddressable);
                continue;
            };
            self.take(now, &peer, credentials, len, shared);
        }
        // More may be waiting; the loop comes back after the others had a turn.
        self.readable = true;
        self.sync_stats(&shared.stats);
    }

    /// Hands one datagram of `len` bytes from `peer` to the core and does what it says.
    fn take(
        &mut self,
        now: Instant,
        peer: &S::Peer,
        credentials: Option<UnixCredentials>,
        len: usize,
        shared: &Shared,
    ) {
        let datagram = self.buf.get(..len).unwrap_or_default();
        let (handle, answer) = match self.core.handle_datagram(now, peer, datagram) {
            Received::Request(request) => {
                let call = CallRef::Datagram(request.handle);
                let deadline = Some(request.deadline);
                let (target, body) = (request.target, request.body);
                let from = S::call_peer(peer, credentials);
                let answer = dispatch(
                    &self.completions,
                    call,
                    from,
                    target,
                    body,
                    deadline,
                    shared,
                );
                (request.handle, answer)
            }
            Received::Reply(tx) => {
                let stats = &shared.stats;
                let (bytes, to) = (tx.bytes, tx.to);
                if send(&self.socket, bytes, to, &self.label, stats) == SendResult::WouldBlock {
                    self.unsent.hold(now, to, bytes, stats);
                }
                return;
            }
            Received::Cancelled(handle) => {
                log::debug!("{}: a call from {peer:?} was cancelled", self.label);
                self.forget(handle, &shared.stats);
                return;
            }
            Received::Dropped(reason) => {
                if matches!(reason, DropReason::Foreign | DropReason::Malformed) {
                    shared.warnings.bad_datagram.warn(format_args!(
                        "{}: dropped a bad datagram from {peer:?}: {reason}",
                        self.label
                    ));
                } else {
                    log::trace!("{}: dropped a datagram from {peer:?}: {reason}", self.label);
                }
                shared.stats.datagram_dropped(DropKind::of(reason));
                return;
            }
            _ => return,
        };
        match answer {
            Some(answer) => self.answer(now, handle, answer, &shared.stats),
            None => {
                if self.running.insert(handle) {
                    shared.stats.datagram_running(true);
                }
            }
        }
    }

    /// The client cancelled a call: its held answer, if any, is dropped (a function still
    /// running may still answer; the core keeps that answer, though nobody waits for it).
    fn forget(&mut self, handle: RequestHandle, stats: &Stats) {
        if self.running.remove(&handle) {
            stats.datagram_running(false);
        }
        self.delayed.retain(|_, (held, _)| *held != handle);
    }

    /// An answer from a worker or a responder, now or at `not_before`.
    fn complete(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        answer: Answer,
        not_before: Option<Instant>,
        stats: &Stats,
    ) {
        match not_before {
            Some(at) if at > now => {
                self.delayed.insert((at, self.next_seq), (handle, answer));
                self.next_seq = self.next_seq.wrapping_add(1);
            }
            _ => self.answer(now, handle, answer, stats),
        }
        self.sync_stats(stats);
    }

    /// Sends the held answers whose time has come.
    fn release_due(&mut self, now: Instant, stats: &Stats) {
        let mut any = false;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (handle, answer) = entry.remove();
            self.answer(now, handle, answer, stats);
            any = true;
        }
        if any {
            self.sync_stats(stats);
        }
    }

    /// Gives the core the answer to a call and sends what it returns.
    fn answer(&mut self, now: Instant, handle: RequestHandle, answer: Answer, stats: &Stats) {
        if self.running.remove(&handle) {
            stats.datagram_running(false);
        }
        match self.core.respond(handle, reply_of(&answer)) {
            Ok(transmit) => {
                let (bytes, to) = (transmit.bytes, transmit.to);
                if send(&self.socket, bytes, to, &self.label, stats) == SendResult::WouldBlock {
                    self.unsent.hold(now, to, bytes, stats);
                }
            }
            Err(DatagramRespondError::UnknownRequest) => {
                // Cancelled and forgotten, or its window closed: nobody waits for it.
                log::debug!("{}: an answer to a forgotten call dropped", self.label);
                stats.datagram_late_answer();
            }
            Err(e) => log::warn!("{}: cannot answer a call: {e}", self.label),
        }
    }

    /// No call is running or held, and no answer waits to be sent.
    fn is_idle(&self) -> bool {
        self.running.is_empty() && self.delayed.is_empty() && self.unsent.is_empty()
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|(at, _)| *at);
        let retry = self.unsent.next_retry();
        [delayed, retry, self.linger.wakeup()]
            .into_iter()
            .flatten()
            .min()
    }

    /// In a shutdown: idle, and its clients have acknowledged their answers or had
    /// [`DRAIN_LINGER`](crate::driver::DRAIN_LINGER) to.
    fn drain_over(&mut self, now: Instant) -> bool {
        let idle = self.is_idle();
        let core = &self.core;
        self.linger.is_over(now, idle, || core.unacknowledged(now))
    }

    fn sync_stats(&mut self, stats: &Stats) {
        stats.add_datagram_core(self.core.stats(), &mut self.seen);
    }

    /// The calls still running when the loop ends leave the `in_progress` gauge.
    fn abandon(&mut self, stats: &Stats) {
        for _ in self.running.drain() {
            stats.datagram_running(false);
        }
        self.delayed.clear();
    }
}

/// Sends one datagram, counted (see [`send_answer`]).
fn send<S: DatagramSocket>(
    socket: &S,
    bytes: &[u8],
    to: &S::Peer,
    label: &str,
    stats: &Stats,
) -> SendResult {
    send_answer(bytes, to, label, stats, |b, t| socket.send_peer(b, t))
}

/// A datagram endpoint of either transport.
pub(super) enum DatagramListener {
    /// `udp:host:port`.
    Udp(Datagram<UdpSocket>),
    /// `unix-dgram:/path`, with its socket file (removed when the shutdown begins).
    Unix {
        datagram: Datagram<UnixDatagram>,
        file: Option<SocketFile>,
    },
}

/// Runs `$body` with `$d` bound to the inner [`Datagram`] of either kind.
macro_rules! each {
    ($listener:expr, $d:ident => $body:expr) => {
        match $listener {
            DatagramListener::Udp($d) => $body,
            DatagramListener::Unix { datagram: $d, .. } => $body,
        }
    };
}

impl DatagramListener {
    /// The address a `udp:` socket is bound at; `None` for `unix-dgram:`.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Udp(datagram) => datagram.socket.local_addr().ok(),
            Self::Unix { .. } => None,
        }
    }

    /// Reads and drops every datagram already queued on a `udp:` socket; returns how many.
    /// For the sockets of a `SO_REUSEPORT` group before any of them serves: while the
    /// group was being bound, a client's copies could have reached two of them (the kernel
    /// picks by the sockets in the group at the time), and two caches would both run the
    /// call. Nothing has run yet, so dropping them loses nothing: clients retransmit.
    pub(super) fn discard_queued(&mut self) -> usize {
        let Self::Udp(datagram) = self else {
            return 0;
        };
        let mut dropped = 0usize;
        // Bounded by the socket's receive buffer; the bound only guards against a flood.
        while dropped < 1 << 20 {
            match datagram.socket.recv_from(&mut datagram.buf) {
                Ok(_) => dropped = dropped.saturating_add(1),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        dropped
    }

    /// Binds a `udp:` or `unix-dgram:` endpoint with its call cache; returns it and the
    /// endpoint it is really bound to.
    /// With `check_credentials`, a Unix datagram socket asks the kernel for every sender's
    /// credentials (`SO_PASSCRED`), and datagrams whose sender the allowlist does not take
    /// are dropped. A `udp:` socket shares its address with other event loops' as `share`
    /// says (each with its own cache: the kernel keeps a client's flow on one of them).
    pub(super) fn bind(
        endpoint: &Endpoint,
        config: &ServerConfig,
        completions: Arc<dyn Completions>,
        check_credentials: bool,
        share: Share,
    ) -> Result<(Self, Endpoint), Error> {
        let dconfig = datagram_config(&config.datagram, config.unix_max_datagram, endpoint);
        if config.datagram_cache > MAX_DATAGRAM_CACHE {
            return Err(Error::LimitTooLarge {
                what: "datagram_cache",
                got: u64::try_from(config.datagram_cache).unwrap_or(u64::MAX),
                max: u64::try_from(MAX_DATAGRAM_CACHE).unwrap_or(u64::MAX),
            });
        }
        let storage = check_datagram(&dconfig, dconfig.server_storage_len(config.datagram_cache))?;
        fn core<P: Clone + PartialEq>(
            config: wirecall_core::datagram::DatagramConfig,
            storage: usize,
            entries: usize,
        ) -> Result<Core<P>, Error> {
            let entries = std::iter::repeat_with(|| DatagramEntry::EMPTY)
                .take(entries)
                .collect();
            Ok(DatagramServer::new(
                config,
                vec![0u8; storage].into_boxed_slice(),
                entries,
            )?)
        }
        let max = dconfig.max_datagram;
        match endpoint {
            Endpoint::Udp(..) => {
                let core = core(dconfig, storage, config.datagram_cache)?;
                let (socket, actual) = bind_udp_shared(endpoint, share)?;
                let datagram = Datagram::new(socket, core, max, actual.to_string(), completions);
                Ok((Self::Udp(datagram), actual))
            }
            Endpoint::UnixDatagram(path) => {
                let core = core(dconfig, storage, config.datagram_cache)?;
                let (socket, file) = bind_unix_datagram(endpoint, path, config.unix_mode)?;
                if check_credentials {
                    // Set before the server says it listens; a datagram that came in the
                    // moment since bind carries no credentials and is dropped (fail closed).
                    rustix::net::sockopt::set_socket_passcred(&socket, true).map_err(|e| {
                        Error::Listen {
                            endpoint: endpoint.clone(),
                            source: e.into(),
                        }
                    })?;
                }
                let mut datagram =
                    Datagram::new(socket, core, max, endpoint.to_string(), completions);
                datagram.check_credentials = check_credentials;
                let listener = Self::Unix {
                    datagram,
                    file: Some(file),
                };
                Ok((listener, endpoint.clone()))
            }
            Endpoint::Unix(_) | Endpoint::Tcp(..) | Endpoint::Tls(..) => Err(Error::Listen {
                endpoint: endpoint.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a stream endpoint has no datagram socket",
                ),
            }),
        }
    }

    /// The socket may have datagrams waiting.
    pub(super) fn set_readable(&mut self) {
        each!(self, d => d.readable = true);
    }

    /// `true` when the last read stopped before the socket would block.
    pub(super) fn is_readable(&self) -> bool {
        each!(self, d => d.readable)
    }

    /// Sends held answers that are due or waiting for room, then reads what waits
    /// (unless too many answers wait for room).
    pub(super) fn drive(&mut self, now: Instant, shared: &Shared) {
        each!(self, d => {
            d.retry_unsent(now, &shared.stats);
            d.release_due(now, &shared.stats);
            if d.readable {
                d.read(now, shared);
            }
        });
    }

    /// An answer from a worker or a responder.
    pub(super) fn complete(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        answer: Answer,
        not_before: Option<Instant>,
        stats: &Stats,
    ) {
        each!(self, d => d.complete(now, handle, answer, not_before, stats));
    }

    /// When a held answer is due.
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        each!(self, d => d.next_wakeup())
    }

    /// In a shutdown: no call is running or held, and the clients have acknowledged
    /// their answers or had time to.
    pub(super) fn drain_over(&mut self, now: Instant) -> bool {
        each!(self, d => d.drain_over(now))
    }

    /// Calls running or held.
    pub(super) fn busy_calls(&self) -> usize {
        each!(self, d => d.running.len().max(d.delayed.len()))
    }

    /// The shutdown begins: the socket file goes (new clients cannot reach the socket any
    /// more; connected ones still can, and their new calls are rejected).
    pub(super) fn begin_drain(&mut self) {
        each!(self, d => d.core.drain());
        if let Self::Unix { file, .. } = self {
            drop(file.take());
        }
    }

    /// The loop ends: calls still running leave the counters.
    pub(super) fn abandon(&mut self, stats: &Stats) {
        each!(self, d => d.abandon(stats));
    }
}

impl Source for DatagramListener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        each!(self, d => d.socket.register(registry, token, interest))
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        each!(self, d => d.socket.reregister(registry, token, interest))
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        each!(self, d => d.socket.deregister(registry))
    }
}
