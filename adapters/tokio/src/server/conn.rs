//! One accepted connection: a task that drives the core's [`ServerConnection`] over a
//! tokio stream socket.
//!
//! A turn: answers that came back (from responders and `async` functions) go to the core,
//! the core's events are acted on (a request is dispatched; a cancel stops its task), what
//! the core queued is written, and the task sleeps until the socket is readable (or
//! writable while bytes wait), an answer comes, a timer is due (the core's, a held answer's,
//! the idle timeout) or the server's shutdown phase changes. A read that comes back short
//! of the room it had found the socket empty, so the task does not read again until the
//! socket says it has more: a call costs one read and one write. Reading pauses while
//! answers wait for room in the core's transmit buffer, so a client that does not read its
//! answers stops being read (memory stays bounded by the buffers and the request table).
//! After the core reports the connection closed, its last bytes go out, the sending half
//! is shut, and the socket lingers until the peer closes too (or `close_linger` passes).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use wirecall::Answer;
use wirecall::function::{CallContext, CallRef, Completions, OwnedPeer, reply_of};
use wirecall::id_hasher::IdMap;
use wirecall::stats::CloseKind;
use wirecall_core::buffer::GrowBuf;
use wirecall_core::server::{
    CloseReason, RequestSlot, RespondError, ServerConnection, ServerEvent, ServerStats,
};
use wirecall_core::table::GrowTable;
use wirecall_core::{Instant, RequestId};

use super::function::{Dispatched, dispatch};
use super::{Phase, Shared};
use crate::clock::Timer;
use crate::net::{StreamSocket, interrupted, would_block};

/// Bytes each connection buffer starts at: enough for a small call, so an idle connection
/// costs little; it grows to the frame limit only while a large frame passes through.
const INITIAL: usize = 512;
/// Reads per turn before events are handled.
const READS_PER_TURN: usize = 16;

/// An answer on its way back to the connection.
pub(super) type Completion = (CallRef, Answer, Option<StdInstant>);

/// The [`Completions`] of one connection or datagram endpoint: its task's channel.
pub(super) struct TaskCompletions(pub(super) mpsc::UnboundedSender<Completion>);

impl Completions for TaskCompletions {
    fn complete(&self, call: CallRef, answer: Answer, not_before: Option<StdInstant>) {
        // Fails only when the task has ended, and then nobody waits for the answer.
        let _ = self.0.send((call, answer, not_before));
    }
}

/// One connection's state, owned by its task.
struct Conn {
    /// Who is at the other end, for functions' contexts.
    peer: OwnedPeer,
    socket: StreamSocket,
    core: ServerConnection<GrowBuf, GrowTable<RequestSlot>>,
    label: String,
    /// Answers waiting for room in the core's transmit buffer, oldest first.
    answers: VecDeque<(RequestId, Answer)>,
    /// Answers held until their time (`Responder::respond_after`).
    delayed: Vec<(Instant, RequestId, Answer)>,
    /// The tasks of `async` functions still running, to stop on a cancel.
    tasks: IdMap<RequestId, AbortHandle>,
    completions: Arc<dyn Completions>,
    /// The last read came back short: the socket is empty until it says otherwise.
    drained: bool,
    eof: bool,
    write_failed: bool,
    closed: Option<CloseReason>,
    last_active: Instant,
    idle_closing: bool,
    /// When to tell the connection to go away for its age (`max_connection_age`).
    aged_at: Option<Instant>,
    seen: ServerStats,
    /// Taken in only to be refused (a TLS connection over the connection limit, whose
    /// refusal must go through the handshake): not counted as open or closed.
    refusing: bool,
}

/// Serves one accepted connection until it has ended; with `refuse`, only sends the
/// refusal (our hello and `Close(REFUSED)`) and closes.
pub(super) async fn serve(
    socket: StreamSocket,
    peer: OwnedPeer,
    label: String,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    refuse: bool,
) {
    let now = shared.clock.now();
    let config = &shared.config;
    let buffer = || GrowBuf::new(INITIAL, config.connection.buffer_len());
    let slots = GrowTable::new(config.connection.table_len());
    let core = match ServerConnection::new(config.connection, buffer(), buffer(), slots, now) {
        Ok(core) => core,
        Err(e) => {
            // The builder made one with this configuration already.
            log::error!("{label}: cannot set up a connection: {e}");
            if !refuse {
                shared.stats.recorder().dropped();
            }
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        socket,
        peer,
        core,
        label,
        answers: VecDeque::new(),
        delayed: Vec::new(),
        tasks: IdMap::default(),
        completions: Arc::new(TaskCompletions(tx)),
        drained: false,
        eof: false,
        write_failed: false,
        closed: None,
        last_active: now,
        idle_closing: false,
        aged_at: if refuse { None } else { config.aged_at(now) },
        seen: ServerStats::default(),
        refusing: refuse,
    };
    let mut phase_open = true;
    if refuse {
        conn.core.refuse();
    } else {
        log::debug!("{}: accepted", conn.label);
        if *phase.borrow_and_update() != Phase::Running {
            conn.core.close(now);
        }
    }
    let mut timer_wait = Timer::new();
    loop {
        let now = shared.clock.now();
        conn.turn(now, &shared);
        if conn.closed.is_some() {
            break;
        }
        let timer = conn.next_wakeup(&shared);
        let interest = conn.interest();
        timer_wait.set(&shared.clock, timer);
        tokio::select! {
            ready = ready(&conn.socket, interest) => match ready {
                Ok(ready) => {
                    if ready.is_readable() || ready.is_read_closed() {
                        conn.drained = false;
                    }
                }
                Err(e) => {
                    log::debug!("{}: socket failed: {e}", conn.label);
                    conn.core.handle_eof();
                    conn.eof = true;
                }
            },
            Some(completion) = rx.recv() => {
                conn.complete(completion, &shared);
                while let Ok(completion) = rx.try_recv() {
                    conn.complete(completion, &shared);
                }
            }
            () = timer_wait.wait() => {}
            changed = phase.changed(), if phase_open => {
                let now = shared.clock.now();
                match changed.map(|()| *phase.borrow_and_update()) {
                    Ok(Phase::Running) => {}
                    Ok(Phase::Graceful) => conn.core.close(now),
                    Ok(Phase::Now) | Err(_) => {
                        phase_open = false;
                        conn.core.abort();
                    }
                }
            }
        }
    }
    for (_, task) in conn.tasks.drain() {
        task.abort();
    }
    shared
        .stats
        .recorder()
        .add_core(conn.core.stats(), &mut conn.seen);
    conn.linger(&shared, &mut phase).await;
    if !conn.refusing {
        shared.stats.recorder().dropped();
    }
    log::debug!("{}: gone", conn.label);
}

impl Conn {
    /// Does everything that can be done without waiting.
    fn turn(&mut self, now: Instant, shared: &Shared) {
        self.release_delayed(now);
        self.check_idle(now, shared);
        self.check_age(now, shared);
        // A few passes: reading can make answers, answers can make room to read.
        for _ in 0..4 {
            let before = (self.core.transmit().len(), self.answers.len());
            self.read_in(now);
            self.flush_answers(now);
            self.take_events(now, shared);
            self.write_out();
            if self.closed.is_some() {
                break;
            }
            if (self.core.transmit().len(), self.answers.len()) == before && self.drained_input() {
                break;
            }
        }
        shared
            .stats
            .recorder()
            .add_core(self.core.stats(), &mut self.seen);
    }

    /// `true` when there is nothing to read now.
    fn drained_input(&self) -> bool {
        self.drained || self.eof || !self.answers.is_empty()
    }

    /// What to wait for on the socket.
    fn interest(&mut self) -> Option<Interest> {
        let read = !self.eof && self.answers.is_empty() && !self.core.input_buffer().is_empty();
        let write =
            !self.write_failed && (!self.core.transmit().is_empty() || self.socket.wants_write());
        match (read, write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }

    /// When the task must wake without any event: the core's timers, held answers, the
    /// idle timeout.
    fn next_wakeup(&self, shared: &Shared) -> Option<Instant> {
        let mut next = self.core.poll_timeout();
        for (at, _, _) in &self.delayed {
            next = Some(next.map_or(*at, |n| n.min(*at)));
        }
        if let Some(idle) = shared.config.idle_timeout {
            if !self.idle_closing && self.is_idle() {
                let at = self
                    .last_active
                    .saturating_add(wirecall::clock::to_core(idle));
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if let Some(at) = self.aged_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// Tells a connection older than `max_connection_age` to go away (gracefully).
    fn check_age(&mut self, now: Instant, shared: &Shared) {
        if self.aged_at.is_none_or(|at| now < at) {
            return;
        }
        self.aged_at = None;
        if self.closed.is_some() || self.idle_closing {
            return;
        }
        log::debug!("{}: older than max_connection_age, going away", self.label);
        shared.stats.recorder().aged_out();
        self.core.close(now);
    }

    fn is_idle(&self) -> bool {
        self.core.in_flight() == 0 && self.answers.is_empty() && self.delayed.is_empty()
    }

    /// Closes gracefully a connection with no call for the idle timeout.
    fn check_idle(&mut self, now: Instant, shared: &Shared) {
        let Some(idle) = shared.config.idle_timeout else {
            return;
        };
        if !self.idle_closing
            && self.is_idle()
            && now
                >= self
                    .last_active
                    .saturating_add(wirecall::clock::to_core(idle))
        {
            log::info!("{}: idle for {idle:?}, closing gracefully", self.label);
            self.idle_closing = true;
            shared.stats.recorder().idle_closed();
            self.core.close(now);
        }
    }

    /// An answer that came back through the channel.
    fn complete(&mut self, (call, answer, not_before): Completion, shared: &Shared) {
        let CallRef::Stream(id) = call else {
            return;
        };
        self.tasks.remove(&id);
        match not_before {
            Some(at) => self
                .delayed
                .push((shared.clock.core_at_std(at), id, answer)),
            None => self.answers.push_back((id, answer)),
        }
    }

    /// Moves held answers whose time has come to the answer queue, earliest first.
    fn release_delayed(&mut self, now: Instant) {
        if !self.delayed.iter().any(|(at, _, _)| *at <= now) {
            return;
        }
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.delayed = later;
        due.sort_by_key(|(at, _, _)| *at);
        self.answers
            .extend(due.into_iter().map(|(_, id, answer)| (id, answer)));
    }

    /// Hands waiting answers to the core until its transmit buffer is full.
    fn flush_answers(&mut self, now: Instant) {
        while let Some((id, answer)) = self.answers.front() {
            let id = *id;
            match self.core.respond(id, reply_of(answer)) {
                Ok(()) => self.last_active = now,
                Err(RespondError::WouldBlock) => return,
                Err(e) => log::debug!("{}: answer to {id} dropped: {e}", self.label),
            }
            self.answers.pop_front();
        }
    }

    /// Acts on the core's events until it has none.
    fn take_events(&mut self, now: Instant, shared: &Shared) {
        while let Some(event) = self.core.poll_event(now) {
            match event {
                ServerEvent::Request(request) => {
                    self.last_active = now;
                    let id = request.id;
                    // A TLS peer's verified identity, once its handshake is done.
                    if let OwnedPeer::Tls(_, identity @ None) = &mut self.peer {
                        *identity = self.socket.tls_identity();
                    }
                    let deadline = request
                        .deadline
                        .map(|d| shared.clock.tokio_at(d).into_std());
                    let dispatched = dispatch(
                        &shared.functions,
                        shared.stats.recorder(),
                        &self.completions,
                        CallRef::Stream(id),
                        CallContext::new(self.peer.as_peer(), deadline),
                        request.target,
                        request.body,
                    );
                    match dispatched {
                        Dispatched::Now(answer) => self.answers.push_back((id, answer)),
                        Dispatched::Later(Some(task)) => {
                            self.tasks.insert(id, task);
                        }
                        Dispatched::Later(None) => {}
                    }
                }
                ServerEvent::Cancelled { id } | ServerEvent::Expired { id } => {
                    log::debug!("{}: request {id} cancelled or expired", self.label);
                    if let Some(task) = self.tasks.remove(&id) {
                        task.abort();
                    }
                    self.delayed.retain(|(_, d, _)| *d != id);
                    self.answers.retain(|(a, _)| *a != id);
                }
                ServerEvent::Closed(reason) => {
                    self.on_closed(reason, shared);
                    return;
                }
                _ => {}
            }
            // Keep the queue short: answers go to the core as soon as they exist.
            self.flush_answers(now);
        }
    }

    fn on_closed(&mut self, reason: CloseReason, shared: &Shared) {
        let kind = if self.write_failed {
            CloseKind::IoError
        } else {
            CloseKind::of(&reason)
        };
        if kind.is_protocol_error() {
            log::warn!("{}: closed: {reason}", self.label);
        } else {
            log::debug!("{}: closed: {reason}", self.label);
        }
        if !self.refusing {
            shared.stats.recorder().closed(kind);
        }
        if let Some(failure) = self.socket.tls_failure() {
            if failure.is_refused_identity() {
                shared.stats.recorder().tls_refused_identity();
            } else {
                shared.stats.recorder().tls_handshake_failed();
            }
            log::warn!("{}: TLS refused: {failure}", self.label);
        }
        self.answers.clear();
        self.delayed.clear();
        self.closed = Some(reason);
    }

    /// Writes what the core wants sent until the socket would block.
    fn write_out(&mut self) {
        // Ciphertext TLS could not send last time goes first.
        if !self.write_failed {
            if let Err(e) = self.socket.flush_pending() {
                log::debug!("{}: write failed: {e}", self.label);
                self.write_failed = true;
                self.core.abort();
            }
        }
        while !self.write_failed {
            let pending = self.core.transmit();
            if pending.is_empty() {
                return;
            }
            match self.socket.try_write(pending) {
                Ok(n) if n > 0 => self.core.advance_transmit(n),
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                result => {
                    if let Err(e) = result {
                        log::debug!("{}: write failed: {e}", self.label);
                    }
                    self.write_failed = true;
                    self.core.abort();
                }
            }
        }
    }

    /// Reads into the core's receive buffer until a read comes back short, unless the
    /// socket is known empty, answers wait for room, or the buffer is full of frames not
    /// yet taken.
    fn read_in(&mut self, now: Instant) {
        if self.eof || self.drained || !self.answers.is_empty() {
            return;
        }
        for _ in 0..READS_PER_TURN {
            let buf = self.core.input_buffer();
            if buf.is_empty() {
                return;
            }
            match self.socket.read_until_short(buf) {
                Ok((0, _)) => {
                    self.core.handle_eof();
                    self.eof = true;
                    return;
                }
                Ok((n, short)) => {
                    self.core.commit_input(now, n);
                    if short {
                        self.drained = true;
                        return;
                    }
                    // A busy connection: read in larger batches next time.
                    self.core.reserve_input(n.saturating_mul(2));
                }
                Err(e) if would_block(&e) => {
                    self.drained = true;
                    return;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.label);
                    self.core.handle_eof();
                    self.eof = true;
                    return;
                }
            }
        }
    }

    /// After the close: the last bytes go out, the sending half is shut, and what the peer
    /// still sends is read and dropped until its end of stream or `close_linger`; in a
    /// shutdown, until nothing more waits to be read (closing then sends no reset), and at
    /// once when the shutdown turns hard (`shutdown_now`, or its deadline).
    async fn linger(&mut self, shared: &Shared, phase: &mut watch::Receiver<Phase>) {
        let until = tokio::time::Instant::now() + shared.config.close_linger;
        let lingering = async {
            // TLS: a handshake still going on (a refusal, a close before it was done)
            // finishes first: what was written waits for it. What the peer sends is
            // dropped.
            let mut scratch = [0u8; 4096];
            while !self.write_failed && self.socket.is_handshaking() {
                match self.socket.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) if would_block(&e) => {}
                    Err(e) if interrupted(&e) => continue,
                    Err(_) => return,
                }
                if self.socket.flush_pending().is_err() {
                    return;
                }
                if !self.socket.is_handshaking() {
                    break;
                }
                let interest = if self.socket.wants_write() {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                tokio::select! {
                    ready = self.socket.ready(interest) => {
                        if ready.is_err() {
                            return;
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow_and_update() == Phase::Now {
                            return;
                        }
                    }
                }
            }
            while !self.write_failed
                && (!self.core.transmit().is_empty() || self.socket.wants_write())
            {
                tokio::select! {
                    ready = self.socket.ready(Interest::WRITABLE) => {
                        if ready.is_err() {
                            return;
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow_and_update() == Phase::Now {
                            return;
                        }
                    }
                }
                self.write_out();
            }
            if let Err(e) = self.socket.shutdown_write() {
                log::debug!("{}: shutdown: {e}", self.label);
            }
            loop {
                loop {
                    match self.socket.try_read(&mut scratch) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if would_block(&e) => break,
                        Err(e) if interrupted(&e) => {}
                        Err(_) => return,
                    }
                }
                if *phase.borrow() != Phase::Running {
                    // Shutting down and nothing waits unread: closing sends no reset.
                    return;
                }
                tokio::select! {
                    ready = self.socket.ready(Interest::READABLE) => {
                        if ready.is_err() {
                            return;
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout_at(until, lingering).await;
    }
}

/// Waits for `interest` on the socket, or for ever when there is none.
async fn ready(
    socket: &StreamSocket,
    interest: Option<Interest>,
) -> std::io::Result<tokio::io::Ready> {
    match interest {
        Some(interest) => socket.ready(interest).await,
        None => std::future::pending().await,
    }
}
