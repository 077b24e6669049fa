//! A datagram endpoint (`udp:`, `unix-dgram:`): one task, one socket and one core
//! [`DatagramServer`].
//!
//! The core decides everything about a datagram (a new call to run, a retransmission to
//! answer again from the call cache, a late copy or garbage to drop, a call to refuse busy
//! or reject); the task only moves bytes: it receives datagrams until the socket would
//! block (into a buffer one byte longer than the largest datagram, so the core sees and
//! counts an oversized one), dispatches new calls to the same functions as stream
//! requests, and sends each answer the core returns to the peer it names. An answer the
//! peer has no room for is held and tried again ([`HeldAnswers`]).
//!
//! In a shutdown the core drains: the socket is still read, retransmissions of answered
//! calls are answered from the cache, calls running are answered when done, new calls are
//! rejected (`SHUTTING_DOWN`, not executed). The `unix-dgram:` socket file is removed as
//! the shutdown begins. The task ends once the core has no call in progress.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use wirecall::Answer;
use wirecall::driver::{
    DrainLinger, HeldAnswers, SendResult, SocketFile, is_peer_error, send_answer,
};
use wirecall::function::{CallContext, CallRef, Completions, Peer, reply_of};
use wirecall::stats::{DropKind, Stats};
use wirecall_core::Instant;
use wirecall_core::datagram::{
    DatagramEntry, DatagramRespondError, DatagramServer, DatagramServerStats, Received,
    RequestHandle,
};

use super::conn::{Completion, TaskCompletions};
use super::function::{Dispatched, dispatch};
use super::{Phase, Shared};
use crate::clock::Timer;
use crate::net::{interrupted, would_block};

/// Sends never wait (the socket is non-blocking anyway) and raise no SIGPIPE.
const SEND_FLAGS: rustix::net::SendFlags =
    rustix::net::SendFlags::DONTWAIT.union(rustix::net::SendFlags::NOSIGNAL);

/// Datagrams received per turn before answers and timers get a turn.
const READS_PER_TURN: usize = 256;

/// The core server with heap storage.
pub(super) type Core<P> = DatagramServer<P, Box<[u8]>, Box<[DatagramEntry<P>]>>;

/// A tokio datagram socket the endpoint task can receive from and answer on.
pub(super) trait Socket: Send + Sync + 'static {
    /// Who sent a datagram, as the core keys its cache by.
    type Peer: Clone + PartialEq + fmt::Debug + Send + Sync + 'static;

    /// Waits for readiness.
    fn ready(
        &self,
        interest: Interest,
    ) -> impl Future<Output = io::Result<tokio::io::Ready>> + Send;

    /// Receives one datagram without waiting: its length and its sender (`None` when the
    /// sender cannot be answered: a Unix socket with no name).
    fn try_recv_peer(&self, buf: &mut [u8]) -> io::Result<(usize, Option<Self::Peer>)>;

    /// Sends one datagram to `to` without waiting. It is a `sendto` on the descriptor
    /// itself, not tokio's `try_send_to`: on an unconnected socket "no room" is one peer's
    /// full queue, and tokio would take it as the socket's and skip every send to every
    /// peer until an event came, so one client that does not read would hold up the
    /// answers of all.
    fn try_send_peer(&self, buf: &[u8], to: &Self::Peer) -> io::Result<usize>;

    /// The sender as a function's [`CallContext`] names it.
    fn call_peer(peer: &Self::Peer) -> Peer<'_>;
}

impl Socket for UdpSocket {
    type Peer = SocketAddr;

    fn ready(
        &self,
        interest: Interest,
    ) -> impl Future<Output = io::Result<tokio::io::Ready>> + Send {
        UdpSocket::ready(self, interest)
    }

    fn try_recv_peer(&self, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>)> {
        self.try_recv_from(buf).map(|(n, from)| (n, Some(from)))
    }

    fn try_send_peer(&self, buf: &[u8], to: &SocketAddr) -> io::Result<usize> {
        Ok(rustix::net::sendto(self, buf, SEND_FLAGS, to)?)
    }

    fn call_peer(peer: &SocketAddr) -> Peer<'_> {
        Peer::Udp(*peer)
    }
}

impl Socket for UnixDatagram {
    type Peer = PathBuf;

    fn ready(
        &self,
        interest: Interest,
    ) -> impl Future<Output = io::Result<tokio::io::Ready>> + Send {
        UnixDatagram::ready(self, interest)
    }

    fn try_recv_peer(&self, buf: &mut [u8]) -> io::Result<(usize, Option<PathBuf>)> {
        self.try_recv_from(buf)
            .map(|(n, from)| (n, from.as_pathname().map(std::path::Path::to_path_buf)))
    }

    fn try_send_peer(&self, buf: &[u8], to: &PathBuf) -> io::Result<usize> {
        let to = rustix::net::SocketAddrUnix::new(to.as_path())?;
        Ok(rustix::net::sendto(self, buf, SEND_FLAGS, &to)?)
    }

    fn call_peer(peer: &PathBuf) -> Peer<'_> {
        Peer::UnixDatagram {
            path: peer,
            credentials: None,
        }
    }
}

/// One datagram endpoint, owned by its task.
struct DatagramEndpoint<S: Socket> {
    socket: S,
    core: Core<S::Peer>,
    /// The largest datagram plus one byte, so an oversized one is seen as such.
    buf: Box<[u8]>,
    label: String,
    /// Answers held until their time (`Responder::respond_after`), by (time, arrival).
    delayed: BTreeMap<(Instant, u64), (RequestHandle, Answer)>,
    next_seq: u64,
    /// The tasks of `async` functions still running, to stop on a cancel.
    tasks: HashMap<RequestHandle, AbortHandle>,
    /// Calls handed to a function that has not answered yet (the `in_progress` gauge).
    running: HashSet<RequestHandle>,
    held: HeldAnswers<S::Peer>,
    /// The last reply the core made on its own, copied out to be sent.
    reply: Vec<u8>,
    completions: Arc<dyn Completions>,
    seen: DatagramServerStats,
}

/// Serves one datagram endpoint until the shutdown has drained it. `file` is the
/// `unix-dgram:` socket file, removed as the shutdown begins.
pub(super) async fn serve<S: Socket>(
    socket: S,
    core: Core<S::Peer>,
    max_datagram: usize,
    label: String,
    mut file: Option<SocketFile>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut endpoint = DatagramEndpoint {
        socket,
        core,
        buf: vec![0u8; max_datagram.saturating_add(1)].into_boxed_slice(),
        label,
        delayed: BTreeMap::new(),
        next_seq: 0,
        tasks: HashMap::new(),
        running: HashSet::new(),
        held: HeldAnswers::new(),
        reply: Vec::new(),
        completions: Arc::new(TaskCompletions(tx)),
        seen: DatagramServerStats::default(),
    };
    let stats = shared.stats.recorder();
    let mut phase_open = true;
    let mut readable = true;
    let mut timer_wait = Timer::new();
    let mut linger = DrainLinger::default();
    loop {
        let now = shared.clock.now();
        match *phase.borrow_and_update() {
            Phase::Running => {}
            Phase::Graceful => {
                endpoint.core.drain();
                drop(file.take());
            }
            Phase::Now => break,
        }
        endpoint.held.retry(now, stats, |bytes, to| {
            send(&endpoint.socket, bytes, to, &endpoint.label, stats)
        });
        endpoint.release_due(now, stats);
        if readable {
            readable = endpoint.receive(now, &shared);
        }
        endpoint.sync_stats(stats);
        let idle = endpoint.is_idle() && endpoint.core.is_drained(now);
        if !readable && linger.is_over(now, idle, || endpoint.core.unacknowledged(now)) {
            log::debug!("{}: drained", endpoint.label);
            break;
        }
        if readable {
            // A turn's worth was read and more may wait: let other tasks run, then read on
            // (waiting here would wait for an event that already came).
            tokio::task::yield_now().await;
            while let Ok(completion) = rx.try_recv() {
                endpoint.complete(shared.clock.now(), completion, &shared);
            }
            continue;
        }
        let timer = [
            endpoint.delayed.keys().next().map(|(at, _)| *at),
            endpoint.held.next_retry(),
            linger.wakeup(),
        ]
        .into_iter()
        .flatten()
        .min();
        timer_wait.set(&shared.clock, timer);
        tokio::select! {
            ready = endpoint.socket.ready(Interest::READABLE), if !readable => match ready {
                Ok(_) => readable = true,
                Err(e) => {
                    log::warn!("{}: cannot receive: {e}", endpoint.label);
                    break;
                }
            },
            Some(completion) = rx.recv() => {
                let now = shared.clock.now();
                endpoint.complete(now, completion, &shared);
                while let Ok(completion) = rx.try_recv() {
                    endpoint.complete(now, completion, &shared);
                }
            }
            () = timer_wait.wait() => {}
            changed = phase.changed(), if phase_open => {
                if changed.is_err() {
                    phase_open = false;
                }
            }
        }
    }
    for (_, task) in endpoint.tasks.drain() {
        task.abort();
    }
    for _ in endpoint.running.drain() {
        stats.datagram_running(false);
    }
    endpoint.sync_stats(stats);
}

impl<S: Socket> DatagramEndpoint<S> {
    /// Receives and handles datagrams until the socket would block (`false`) or for one
    /// turn's worth (`true`: more may wait).
    fn receive(&mut self, now: Instant, shared: &Shared) -> bool {
        let stats = shared.stats.recorder();
        for _ in 0..READS_PER_TURN {
            let (len, peer) = match self.socket.try_recv_peer(&mut self.buf) {
                Ok(received) => received,
                Err(e) if would_block(&e) => return false,
                // A pending error from an earlier send (e.g. an ICMP port unreachable):
                // reading it cleared it.
                Err(e) if interrupted(&e) || is_peer_error(&e) => continue,
                Err(e) => {
                    log::warn!("{}: cannot receive: {e}", self.label);
                    return false;
                }
            };
            stats.datagram_received();
            let Some(peer) = peer else {
                log::debug!("{}: dropped a datagram from an unnamed socket", self.label);
                stats.datagram_dropped(DropKind::Unaddressable);
                continue;
            };
            self.take(now, &peer, len, shared);
        }
        true
    }

    /// Hands one datagram of `len` bytes from `peer` to the core and does what it says.
    fn take(&mut self, now: Instant, peer: &S::Peer, len: usize, shared: &Shared) {
        let stats = shared.stats.recorder();
        let datagram = self.buf.get(..len).unwrap_or_default();
        let (handle, dispatched) = match self.core.handle_datagram(now, peer, datagram) {
            Received::Request(request) => {
                let call = CallRef::Datagram(request.handle);
                let deadline = shared.clock.tokio_at(request.deadline).into_std();
                let dispatched = dispatch(
                    &shared.functions,
                    stats,
                    &self.completions,
                    call,
                    CallContext::new(S::call_peer(peer), Some(deadline)),
                    request.target,
                    request.body,
                );
                (request.handle, dispatched)
            }
            Received::Reply(tx) => {
                // Counted before it leaves (as the mio server does): a client that has the
                // reply and asks for `stats` sees it. Copied out: these are the rare replies.
                // It goes to the sender, `peer`.
                self.reply.clear();
                self.reply.extend_from_slice(tx.bytes);
                self.sync_stats(stats);
                let bytes = self.reply.as_slice();
                if send(&self.socket, bytes, peer, &self.label, stats) == SendResult::WouldBlock {
                    self.held.hold(now, peer, bytes, stats);
                }
                return;
            }
            Received::Cancelled(handle) => {
                log::debug!("{}: a call from {peer:?} was cancelled", self.label);
                self.forget(handle, stats);
                return;
            }
            Received::Dropped(reason) => {
                log::trace!("{}: dropped a datagram from {peer:?}: {reason}", self.label);
                stats.datagram_dropped(DropKind::of(reason));
                return;
            }
            _ => return,
        };
        match dispatched {
            Dispatched::Now(answer) => self.answer(now, handle, answer, stats),
            Dispatched::Later(task) => {
                if self.running.insert(handle) {
                    stats.datagram_running(true);
                }
                if let Some(task) = task {
                    self.tasks.insert(handle, task);
                }
            }
        }
    }

    /// The client cancelled a call: its task stops and its held answer goes (a deferred
    /// function may still answer; the core keeps that answer, though nobody waits).
    fn forget(&mut self, handle: RequestHandle, stats: &Stats) {
        if self.running.remove(&handle) {
            stats.datagram_running(false);
        }
        if let Some(task) = self.tasks.remove(&handle) {
            task.abort();
        }
        self.delayed.retain(|_, (held, _)| *held != handle);
    }

    /// An answer from a responder or a task, now or at its time.
    fn complete(&mut self, now: Instant, (call, answer, not_before): Completion, shared: &Shared) {
        let CallRef::Datagram(handle) = call else {
            return;
        };
        self.tasks.remove(&handle);
        let stats = shared.stats.recorder();
        match not_before.map(|at| shared.clock.core_at_std(at)) {
            Some(at) if at > now => {
                self.delayed.insert((at, self.next_seq), (handle, answer));
                self.next_seq = self.next_seq.wrapping_add(1);
            }
            _ => self.answer(now, handle, answer, stats),
        }
    }

    /// Sends the held answers whose time has come.
    fn release_due(&mut self, now: Instant, stats: &Stats) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (handle, answer) = entry.remove();
            self.answer(now, handle, answer, stats);
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
                    self.held.hold(now, to, bytes, stats);
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

    /// No answer is held for its time or for room.
    fn is_idle(&self) -> bool {
        self.delayed.is_empty() && self.held.is_empty()
    }

    fn sync_stats(&mut self, stats: &Stats) {
        stats.add_datagram_core(self.core.stats(), &mut self.seen);
    }
}

/// Sends one datagram, counted (see [`send_answer`]).
fn send<S: Socket>(
    socket: &S,
    bytes: &[u8],
    to: &S::Peer,
    label: &str,
    stats: &Stats,
) -> SendResult {
    send_answer(bytes, to, label, stats, |b, t| socket.try_send_peer(b, t))
}
