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
//! path the sender's socket is bound to (a [`UnixPeerPath`], kept inline so a datagram
//! costs no allocation); a Unix sender with no name cannot
//! be answered, so its datagrams are dropped (`unaddressable`) before the core sees them.
//!
//! In a shutdown the core is put in drain mode and the socket is still read:
//! retransmissions of answered calls are still answered from the cache, calls running are
//! answered when done, and the core rejects new calls (`SHUTTING_DOWN`, not executed)
//! rather than leave them to time out. A `unix-dgram:`
//! socket file is removed as the shutdown begins (clients already connected to the socket
//! still reach it). The event loop ends once no call is running.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Interest, Registry, Token};
use wirecall_core::Instant;
use wirecall_core::datagram::{
    DatagramEntry, DatagramRespondError, DatagramServer, DatagramServerStats, DropReason, Received,
    RequestHandle,
};

use super::answer_buffers::AnswerBuffers;
use super::conn::{Shared, dispatch};
use super::listener::{Share, SocketFile, bind_udp_shared, bind_unix_datagram};
use super::recv_batch::{self, RecvBatch};
use crate::config::{MAX_DATAGRAM_CACHE, ServerConfig, check_datagram, datagram_config};
use crate::driver::{DrainLinger, HeldAnswers, SendResult, is_peer_error, send_answer};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::function::{Answer, CallRef, Completions, Peer, UnixCredentials, reply_of};
use crate::id_hasher::IdSet;
use crate::stats::{DropKind, Stats};
use crate::stream::{interrupted, would_block};

/// Datagrams read from one socket per turn of the loop before other work gets a turn.
const READS_PER_TURN: usize = 256;
/// A datagram socket the loop can read from and answer on, with its peer address type.
pub(super) trait DatagramSocket: Source + AsFd {
    /// Who sent a datagram, as the core keys its cache by.
    type Peer: Clone + PartialEq + fmt::Debug;

    /// The sender of a datagram from the address bytes `recvmmsg` wrote (see
    /// [`RecvBatch`]); `None` when it cannot be answered.
    fn peer_of_name(name: &[u8]) -> Option<Self::Peer>;

    /// Sends one datagram to `to`.
    fn send_peer(&self, buf: &[u8], to: &Self::Peer) -> io::Result<usize>;

    /// The sender as a function's [`CallContext`](crate::function::CallContext) names it.
    fn call_peer(peer: &Self::Peer, credentials: Option<UnixCredentials>) -> Peer<'_>;

    /// Receives one datagram (the batches of [`RecvBatch`] are the usual way): its length,
    /// its sender (`None` when it cannot be answered: a Unix socket with no name) and the
    /// sender's credentials when the kernel attaches them (a Unix datagram socket with
    /// `SO_PASSCRED` set; `None` otherwise).
    fn recv_peer_credentials(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<Self::Peer>, Option<UnixCredentials>)>;
}

impl DatagramSocket for UdpSocket {
    type Peer = SocketAddr;

    fn peer_of_name(name: &[u8]) -> Option<SocketAddr> {
        recv_batch::inet_addr(name)
    }

    fn recv_peer_credentials(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<SocketAddr>, Option<UnixCredentials>)> {
        self.recv_from(buf).map(|(n, from)| (n, Some(from), None))
    }

    fn send_peer(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
        self.send_to(buf, *to)
    }

    fn call_peer(peer: &SocketAddr, _: Option<UnixCredentials>) -> Peer<'_> {
        Peer::Udp(*peer)
    }
}

impl DatagramSocket for UnixDatagram {
    type Peer = UnixPeerPath;

    fn peer_of_name(name: &[u8]) -> Option<UnixPeerPath> {
        recv_batch::unix_path(name).and_then(UnixPeerPath::new)
    }

    fn send_peer(&self, buf: &[u8], to: &UnixPeerPath) -> io::Result<usize> {
        self.send_to(buf, to.as_path())
    }

    fn call_peer(peer: &UnixPeerPath, credentials: Option<UnixCredentials>) -> Peer<'_> {
        Peer::UnixDatagram {
            path: peer.as_path(),
            credentials,
        }
    }

    fn recv_peer_credentials(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<UnixPeerPath>, Option<UnixCredentials>)> {
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
        let peer = msg
            .address
            .and_then(|a| a.path().and_then(UnixPeerPath::new));
        Ok((msg.bytes, peer, credentials))
    }
}

/// The longest path a `sockaddr_un` holds (`sun_path` on Linux).
const UNIX_PATH_MAX: usize = 108;

/// A Unix datagram sender's path, kept inline rather than in a `PathBuf`: the core keeps
/// one per call in its cache and the driver makes one per datagram, so an allocation each
/// would be one per call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct UnixPeerPath {
    len: u8,
    bytes: [u8; UNIX_PATH_MAX],
}

impl UnixPeerPath {
    /// `None` for a path longer than a socket address holds (no sender has one).
    fn new(path: &Path) -> Option<Self> {
        let from = path.as_os_str().as_bytes();
        let mut bytes = [0u8; UNIX_PATH_MAX];
        bytes.get_mut(..from.len())?.copy_from_slice(from);
        Some(Self {
            len: u8::try_from(from.len()).ok()?,
            bytes,
        })
    }

    fn as_path(&self) -> &Path {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        Path::new(std::ffi::OsStr::from_bytes(bytes))
    }
}

impl fmt::Debug for UnixPeerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_path(), f)
    }
}

/// The core server with heap storage sized from the configuration.
type Core<P> = DatagramServer<P, Box<[u8]>, Box<[DatagramEntry<P>]>>;

/// One datagram endpoint of either kind. See the [module docs](self).
pub(super) struct Datagram<S: DatagramSocket> {
    socket: S,
    core: Core<S::Peer>,
    /// Receive slots of the largest datagram plus one byte each, so an oversized one is
    /// seen as such.
    batch: RecvBatch,
    /// The endpoint, for log lines.
    label: String,
    /// Calls taken and not yet answered or cancelled.
    running: IdSet<RequestHandle>,
    /// Answers held until their time (`Responder::respond_after`), by (time, arrival).
    delayed: BTreeMap<(Instant, u64), (RequestHandle, Answer)>,
    next_seq: u64,
    /// The core's counters already added to the server's.
    seen: DatagramServerStats,
    /// The last read stopped before the socket would block: read again next turn.
    readable: bool,
    /// Answers the socket had no room for.
    unsent: HeldAnswers<S::Peer>,
    /// The last reply the core made on its own, copied out to be sent.
    reply: Vec<u8>,
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
            batch: RecvBatch::new(max_datagram.saturating_add(1)),
            label,
            running: IdSet::default(),
            delayed: BTreeMap::new(),
            next_seq: 0,
            seen: DatagramServerStats::default(),
            readable: false,
            unsent: HeldAnswers::new(),
            reply: Vec::new(),
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
        // The batch is moved out while its datagrams are handled (which needs `self`).
        let mut batch = std::mem::take(&mut self.batch);
        self.readable = if self.check_credentials {
            self.read_each(&mut batch, now, shared)
        } else {
            self.read_batches(&mut batch, now, shared)
        };
        self.batch = batch;
        self.sync_stats(&shared.stats);
    }

    /// Reads batches of datagrams (`recvmmsg`) until one comes back short, which found the
    /// queue empty (see [`RecvBatch`]), or for one turn's worth; `true` when more may wait.
    fn read_batches(&mut self, batch: &mut RecvBatch, now: Instant, shared: &Shared) -> bool {
        let mut read = 0usize;
        while read < READS_PER_TURN {
            match batch.recv(self.socket.as_fd()) {
                Ok(n) => {
                    read = read.saturating_add(n.max(1));
                    for i in 0..n {
                        let Some((datagram, name)) = batch.get(i) else {
                            break;
                        };
                        shared.stats.datagram_received();
                        match S::peer_of_name(name) {
                            Some(peer) => self.take(now, &peer, None, datagram, shared),
                            None => unaddressable(&self.label, &shared.stats),
                        }
                    }
                    if !batch.was_full() {
                        return false;
                    }
                }
                Err(e) if would_block(&e) => return false,
                // A pending error from an earlier send (e.g. an ICMP port unreachable):
                // reading it cleared it.
                Err(e) if interrupted(&e) || is_peer_error(&e) => read = read.saturating_add(1),
                Err(e) => {
                    log::warn!("{}: cannot receive: {e}", self.label);
                    return false;
                }
            }
        }
        // More may be waiting; the loop comes back after the others had a turn.
        true
    }

    /// Reads one datagram at a time with its sender's credentials (`recvmsg`), checked
    /// against the allowlist, until the socket would block or for one turn's worth;
    /// `true` when more may wait.
    fn read_each(&mut self, batch: &mut RecvBatch, now: Instant, shared: &Shared) -> bool {
        for _ in 0..READS_PER_TURN {
            let buf = batch.first_slot_mut();
            let (len, peer, credentials) = match self.socket.recv_peer_credentials(buf) {
                Ok(received) => received,
                Err(e) if would_block(&e) => return false,
                Err(e) if interrupted(&e) || is_peer_error(&e) => continue,
                Err(e) => {
                    log::warn!("{}: cannot receive: {e}", self.label);
                    return false;
                }
            };
            shared.stats.datagram_received();
            if !shared.access.allows(credentials) {
                shared.stats.datagram_dropped(DropKind::NotAllowed);
                shared.warnings.not_allowed.warn(format_args!(
                    "{}: dropped a datagram from {peer:?} ({}): not on the allowlist",
                    self.label,
                    credentials.map_or_else(|| "no credentials".to_owned(), |c| c.to_string())
                ));
                continue;
            }
            let Some(peer) = peer else {
                unaddressable(&self.label, &shared.stats);
                continue;
            };
            let datagram = batch.first_slot_mut().get(..len).unwrap_or_default();
            self.take(now, &peer, credentials, datagram, shared);
        }
        true
    }

    /// Hands one datagram from `peer` to the core and does what it says.
    fn take(
        &mut self,
        now: Instant,
        peer: &S::Peer,
        credentials: Option<UnixCredentials>,
        datagram: &[u8],
        shared: &Shared,
    ) {
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
                // A reply the core made itself (a replayed answer, busy, a rejection) is
                // counted before it leaves, so a client that has it and then asks for
                // `stats` sees it counted: copied out (these are the rare replies) so the
                // core's counters can be read first.
                // It goes to the sender, `peer`.
                self.reply.clear();
                self.reply.extend_from_slice(tx.bytes);
                self.sync_stats(&shared.stats);
                let (stats, bytes) = (&shared.stats, self.reply.as_slice());
                if send(&self.socket, bytes, peer, &self.label, stats) == SendResult::WouldBlock {
                    self.unsent.hold(now, peer, bytes, stats);
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
            Some(answer) => self.answer(now, handle, answer, &shared.stats, &shared.buffers),
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
        shared: &Shared,
    ) {
        match not_before {
            Some(at) if at > now => {
                self.delayed.insert((at, self.next_seq), (handle, answer));
                self.next_seq = self.next_seq.wrapping_add(1);
            }
            _ => self.answer(now, handle, answer, &shared.stats, &shared.buffers),
        }
        self.sync_stats(&shared.stats);
    }

    /// Sends the held answers whose time has come.
    fn release_due(&mut self, now: Instant, shared: &Shared) {
        let mut any = false;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (handle, answer) = entry.remove();
            self.answer(now, handle, answer, &shared.stats, &shared.buffers);
            any = true;
        }
        if any {
            self.sync_stats(&shared.stats);
        }
    }

    /// Gives the core the answer to a call and sends what it returns; the answer's buffer
    /// goes back to `buffers`.
    fn answer(
        &mut self,
        now: Instant,
        handle: RequestHandle,
        answer: Answer,
        stats: &Stats,
        buffers: &AnswerBuffers,
    ) {
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
        if let Ok(buffer) = answer {
            buffers.give_back(buffer);
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

/// A datagram from a sender that cannot be answered (a Unix socket with no name): dropped
/// and counted.
fn unaddressable(label: &str, stats: &Stats) {
    log::debug!("{label}: dropped a datagram from an unnamed socket");
    stats.datagram_dropped(DropKind::Unaddressable);
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
            match datagram.socket.recv_from(datagram.batch.first_slot_mut()) {
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
            d.release_due(now, shared);
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
        shared: &Shared,
    ) {
        each!(self, d => d.complete(now, handle, answer, not_before, shared));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_peer_path_is_kept_whole_up_to_a_socket_address() {
        let path = Path::new("/tmp/wirecall-client.sock");
        let peer = UnixPeerPath::new(path).unwrap();
        assert_eq!(peer.as_path(), path);
        assert_eq!(peer, UnixPeerPath::new(path).unwrap());
        assert_ne!(
            peer,
            UnixPeerPath::new(Path::new("/tmp/other.sock")).unwrap()
        );
        assert_eq!(format!("{peer:?}"), format!("{path:?}"));
        let longest = "x".repeat(UNIX_PATH_MAX);
        assert_eq!(
            UnixPeerPath::new(Path::new(&longest)).unwrap().as_path(),
            Path::new(&longest)
        );
        assert!(UnixPeerPath::new(Path::new(&"x".repeat(UNIX_PATH_MAX + 1))).is_none());
    }
}
