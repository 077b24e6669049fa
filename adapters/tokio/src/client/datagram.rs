//! The async client over a datagram transport (Unix datagram, UDP): a socket of its own,
//! connected to the server's address, and the core's [`CoreClient`], which decides what to
//! send when (first copies, retransmissions with backoff and jitter, cancels) and how each
//! call ends; shared by every clone of the client.
//!
//! As on streams, a caller hands its first copy to the socket itself, and one driver task
//! receives answers, fires the core's timers (retransmissions, deadlines) and sends what
//! they make. A datagram the socket has no room for goes back to the core
//! ([`not_sent`](CoreClient::not_sent)), which hands it out again when the socket can send.
//! Dropping a call's future cancels it: it stops retransmitting, and the server is told.

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::io::Interest;
use tokio::sync::Notify;
use wirecall::config::datagram_config;
use wirecall::driver::{
    check_datagram, connect_datagram, datagram_send_refused, is_refusal, random_words,
    reconnect_datagram,
};
use wirecall::id_hasher::IdMap;
use wirecall::{CallError, ClientConfig, Endpoint, Error};
use wirecall_core::client::{Failure, SendError};
use wirecall_core::datagram::{DatagramCallSlot, DatagramClient as CoreClient, DatagramEvent};
use wirecall_core::wire::Target;
use wirecall_core::{Instant, RequestId};

use super::Outcome;
use crate::clock::{Clock, Timer};
use crate::net::{DatagramSocket, interrupted, would_block};

/// Datagrams received per turn of the driver before other work.
const READS_PER_TURN: usize = 64;
/// The longest wait before a datagram the socket refused is tried again.
const HELD_WAIT: wirecall_core::Duration = wirecall_core::Duration::from_millis(1);

/// A call's place between its caller and the driver.
#[derive(Debug)]
enum Waiting {
    /// No outcome yet; the waker of the caller's future, once it has been polled.
    Pending(Option<Waker>),
    /// The outcome, not yet taken by the caller.
    Done(Outcome),
}

/// What the callers and the driver task share under the lock.
struct State {
    core: CoreClient<Box<[u8]>, Box<[DatagramCallSlot]>>,
    calls: IdMap<RequestId, Waiting>,
    /// The socket had no room for the last datagram: nothing more is sent until it has.
    blocked: bool,
    /// No more calls: the last handle is gone or `close` was called.
    closing: bool,
    /// The driver task has ended.
    finished: bool,
    /// The timer the driver sleeps until (`None`: none); a call whose timer comes sooner
    /// wakes it.
    sleeping_until: Option<Instant>,
}

/// One datagram client, shared by the client's clones and its driver task.
pub(super) struct Shared {
    endpoint: Endpoint,
    socket: DatagramSocket,
    /// On `unix-dgram:`, the private directory of this client's socket file; removed with
    /// the client.
    _dir: Option<tempfile::TempDir>,
    clock: Clock,
    slots: usize,
    state: Mutex<State>,
    /// Wakes the driver: an earlier timer, a datagram the socket refused, a close.
    driver: Notify,
    /// Wakes callers waiting for a call slot, and `close` for the driver's end.
    room: Notify,
}

/// The datagram client: a handle on the shared socket and core.
pub(super) struct DatagramClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DatagramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramClient")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl DatagramClient {
    /// Binds a socket of its own, connects it to the server's address and starts the
    /// driver task (nothing is sent yet).
    pub(super) async fn connect(endpoint: &Endpoint, config: &ClientConfig) -> Result<Self, Error> {
        let dconfig = datagram_config(&config.datagram, config.unix_max_datagram, endpoint);
        let slots = config.connection.table_len();
        let storage = check_datagram(&dconfig, dconfig.client_storage_len(slots))?;
        let [epoch, seed] = random_words()?;
        let core = CoreClient::new(
            dconfig,
            epoch,
            seed,
            vec![0u8; storage].into_boxed_slice(),
            vec![DatagramCallSlot::EMPTY; slots].into_boxed_slice(),
        )?;
        let owned = endpoint.clone();
        let opened = tokio::task::spawn_blocking(move || connect_datagram(&owned))
            .await
            .map_err(|e| Error::Connect {
                endpoint: endpoint.clone(),
                source: std::io::Error::other(e),
            })??;
        let (fd, dir) = opened;
        let socket = into_tokio(endpoint, fd).map_err(|source| Error::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        log::debug!("{endpoint}: datagram client, epoch {epoch:016x}");
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            socket,
            _dir: dir,
            clock: Clock::new(),
            slots,
            state: Mutex::new(State {
                core,
                calls: IdMap::default(),
                blocked: false,
                closing: false,
                finished: false,
                sleeping_until: None,
            }),
            driver: Notify::new(),
            room: Notify::new(),
        });
        tokio::spawn(drive(Arc::clone(&shared)));
        Ok(Self { shared })
    }

    /// Starts a call: queued in the core and handed to the socket (or, when the socket has
    /// no room, to the driver); the returned guard polls for its outcome and cancels the
    /// call when dropped first.
    pub(super) async fn start(
        &self,
        target: Target<'_>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<PendingCall, CallError> {
        let id = self.submit(target, body, timeout).await?;
        Ok(PendingCall {
            shared: Arc::clone(&self.shared),
            id,
            done: false,
        })
    }

    async fn submit(
        &self,
        target: Target<'_>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, CallError> {
        let timeout = timeout.map(wirecall::clock::to_core);
        loop {
            let mut room = pin!(self.shared.room.notified());
            room.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if state.closing {
                    return Err(CallError::not_sent(SendError::Closing));
                }
                let now = self.shared.clock.now();
                match state.core.call(now, target, body, timeout) {
                    Ok(id) => {
                        state.calls.insert(id, Waiting::Pending(None));
                        self.shared.send_out_for_caller(&mut state, now);
                        self.shared.wake_for_timer(&state);
                        return Ok(id);
                    }
                    Err(SendError::TooManyInFlight) => {}
                    Err(e) => return Err(CallError::not_sent(e)),
                }
            }
            room.await;
        }
    }

    /// Call slots: the most calls in flight at once.
    pub(super) fn max_in_flight(&self) -> usize {
        self.shared.slots
    }

    /// The core's counters.
    pub(super) fn stats(&self) -> wirecall_core::datagram::DatagramClientStats {
        *self.shared.lock().core.stats()
    }

    /// No new calls; waits until every call in flight has ended and the cancels owed are
    /// sent.
    pub(super) async fn close(&self) {
        self.release();
        loop {
            let mut room = pin!(self.shared.room.notified());
            room.as_mut().enable();
            if self.shared.lock().finished {
                return;
            }
            room.await;
        }
    }

    /// The last handle is gone: the driver ends once the calls in flight have.
    pub(super) fn release(&self) {
        self.shared.lock().closing = true;
        self.shared.driver.notify_one();
    }
}

/// A call in flight, from its caller's side: polls for the outcome; dropped before it
/// came, it cancels the call.
pub(crate) struct PendingCall {
    shared: Arc<Shared>,
    id: RequestId,
    done: bool,
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PendingCall {
    /// The call's id on its connection.
    pub(super) fn id(&self) -> RequestId {
        self.id
    }

    /// Its outcome, once it has come.
    pub(super) fn poll(&mut self, waker: &Waker) -> Poll<Outcome> {
        let mut state = self.shared.lock();
        match state.calls.get_mut(&self.id) {
            Some(Waiting::Pending(slot)) => {
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                Poll::Pending
            }
            Some(Waiting::Done(_)) => {
                self.done = true;
                match state.calls.remove(&self.id) {
                    Some(Waiting::Done(outcome)) => Poll::Ready(outcome),
                    _ => Poll::Ready(Err(CallError::unknown(self.id))),
                }
            }
            None => {
                self.done = true;
                Poll::Ready(Err(CallError::unknown(self.id)))
            }
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if let Some(Waiting::Pending(_)) = state.calls.remove(&self.id) {
            if state.core.cancel(self.id) {
                let now = self.shared.clock.now();
                // The cancel outcome goes nowhere; the cancel datagram goes out now.
                self.shared.take_events(&mut state, now);
                self.shared.send_out_for_caller(&mut state, now);
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the driver when the core's next timer (a new call's deadline or
    /// retransmission) comes before the one it sleeps until; otherwise a call costs it no
    /// wake-up.
    fn wake_for_timer(&self, state: &State) {
        let next = state.core.poll_timeout();
        let sooner = match (next, state.sleeping_until) {
            (Some(next), Some(sleeping)) => next < sleeping,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if sooner {
            self.driver.notify_one();
        }
    }

    /// Sends every datagram the core has due until the socket has no room: the one it
    /// refused goes back to the core, which hands it out again later. Returns `true` when
    /// the socket had no room (the driver waits for it; a caller wakes it).
    fn send_out(&self, state: &mut State, now: Instant) -> bool {
        if state.blocked {
            return false;
        }
        while let Some(transmit) = state.core.poll_transmit(now) {
            let kind = transmit.kind;
            match self.socket.try_send(transmit.bytes) {
                Ok(_) => {}
                Err(e) if interrupted(&e) => state.core.not_sent(kind),
                Err(e) if would_block(&e) => {
                    state.core.not_sent(kind);
                    state.blocked = true;
                    return true;
                }
                Err(e) if reconnect_datagram(&self.socket, &self.endpoint, &e) => {
                    // A server restarted on the path: this copy never left, send it again.
                    state.core.not_sent(kind);
                }
                Err(e) if datagram_send_refused(&mut state.core, &self.endpoint, kind, &e) => {
                    log::debug!("{}: nothing listens there: {e}", self.endpoint);
                }
                Err(e) => {
                    // Lost like any datagram: the core retransmits it if it is a request.
                    log::debug!("{}: a datagram was not sent: {e}", self.endpoint);
                }
            }
        }
        false
    }

    /// [`send_out`](Self::send_out) for a caller (not the driver): wakes the driver when
    /// the socket had no room.
    fn send_out_for_caller(&self, state: &mut State, now: Instant) {
        if self.send_out(state, now) {
            self.driver.notify_one();
        }
        // A send the kernel refused may have ended calls (nothing listens there): hand
        // their outcomes over now, since the driver may be asleep with no timer for them.
        self.take_events(state, now);
    }

    /// Takes the calls the core ended (which fires due timers first).
    fn take_events(&self, state: &mut State, now: Instant) {
        let mut any = false;
        while let Some(event) = state.core.poll_event(now) {
            any = true;
            let (id, outcome) = match event {
                DatagramEvent::Response { id, body } => (id, Ok(body.to_vec())),
                DatagramEvent::Failed { id, failure } => {
                    (id, Err(CallError::from(&Failure::from(failure))))
                }
                _ => continue,
            };
            if let Some(waiting) = state.calls.get_mut(&id) {
                if let Waiting::Pending(Some(waker)) =
                    std::mem::replace(waiting, Waiting::Done(outcome))
                {
                    waker.wake();
                }
            }
        }
        if any {
            self.room.notify_waiters();
        }
    }

    /// Receives the datagrams that have come, without waiting.
    fn receive(&self, state: &mut State) {
        for _ in 0..READS_PER_TURN {
            match self.socket.try_recv(state.core.input_buffer()) {
                Ok(len) => {
                    let now = self.clock.now();
                    state.core.commit_datagram(now, len);
                    self.take_events(state, now);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    // Connection refused: nothing listens there; the core ends the calls
                    // that proves were never delivered. Others are only logged.
                    log::debug!("{}: receive: {e}", self.endpoint);
                    if is_refusal(&e) {
                        state.core.refused();
                        self.take_events(state, self.clock.now());
                    }
                }
            }
        }
    }
}

/// The driver task: receives answers, fires timers and sends what is due, until the client
/// is closed and no call is in flight.
async fn drive(shared: Arc<Shared>) {
    let mut timer_wait = Timer::new();
    loop {
        let (timer, interest) = {
            let mut state = shared.lock();
            let now = shared.clock.now();
            shared.take_events(&mut state, now);
            let _ = shared.send_out(&mut state, now);
            if state.closing && state.core.in_flight() == 0 {
                // Tell the server which calls it may forget, once, without waiting.
                if let Some(ack) = state.core.acknowledgement() {
                    if let Err(e) = shared.socket.try_send(ack) {
                        log::debug!(
                            "{}: the last acknowledgement was not sent: {e}",
                            shared.endpoint
                        );
                    }
                }
                state.finished = true;
                drop(state);
                shared.room.notify_waiters();
                return;
            }
            let interest = if state.blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            state.sleeping_until = state.core.poll_timeout();
            let mut timer = state.sleeping_until;
            if state.blocked {
                // The refused datagram is due again at once, so the core's timer says
                // "now": wait for room (a connected socket is told when the server's queue
                // drains) or a moment at most, as the blocking client does, instead of
                // spinning on a socket with no room. Other timers wait that moment too.
                timer = Some(now.saturating_add(HELD_WAIT));
            }
            (timer, interest)
        };
        timer_wait.set(&shared.clock, timer);
        tokio::select! {
            ready = shared.socket.ready(interest) => {
                let mut state = shared.lock();
                match ready {
                    Ok(ready) => {
                        if ready.is_readable() {
                            shared.receive(&mut state);
                        }
                    }
                    Err(e) => log::debug!("{}: socket failed: {e}", shared.endpoint),
                }
            }
            () = timer_wait.wait() => {}
            () = shared.driver.notified() => {}
        }
        // Whatever woke us (room, answers, the moment passed), the refused datagram is
        // tried again; the core hands it out.
        shared.lock().blocked = false;
    }
}

/// The connected std socket as a tokio one of its transport.
fn into_tokio(endpoint: &Endpoint, fd: std::os::fd::OwnedFd) -> std::io::Result<DatagramSocket> {
    Ok(match endpoint {
        Endpoint::UnixDatagram(_) => {
            let socket = std::os::unix::net::UnixDatagram::from(fd);
            socket.set_nonblocking(true)?;
            DatagramSocket::Unix(tokio::net::UnixDatagram::from_std(socket)?)
        }
        _ => {
            let socket = std::net::UdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            DatagramSocket::Udp(tokio::net::UdpSocket::from_std(socket)?)
        }
    })
}
