//! The async client over a stream transport (Unix stream, TCP): one connection and the
//! core's [`ClientConnection`], shared by every clone of the client.
//!
//! The socket is shared through `&self` (tokio's readiness and `try_` calls): a caller
//! queues its call in the core and writes it out itself, at once, so a call costs no
//! hand-off to another task on its way out. One driver task per connection reads the
//! socket, takes the core's events (answers, failures, the close) and hands each outcome
//! to the caller's future, fires the core's timers (deadlines, keepalive) and writes what
//! a caller's write left over (the socket's buffer was full) or what the core queued on its
//! own (keepalive pongs, cancels). So an idle client still answers keepalive pings.
//!
//! Dropping a call's future cancels the call: the core queues a Cancel frame and the
//! server may skip the work. When the last clone of the client is dropped the connection
//! closes gracefully (calls still in flight are answered first, then dropped).

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::io::Interest;
use tokio::sync::Notify;
use wirecall::id_hasher::IdMap;
use wirecall::{CallError, ClientConfig, Endpoint, Error};
use wirecall_core::client::{
    CallSlot, ClientConnection, ClientEvent, CloseReason, Failure, SendError,
};
use wirecall_core::wire::Target;
use wirecall_core::{Instant, RequestId};

use super::Outcome;
use crate::clock::{Clock, Timer};
use crate::net::{StreamSocket, interrupted, would_block};

/// Reads per turn of the driver before events are handled.
const READS_PER_TURN: usize = 16;
/// Calls queued while the driver batches go out without waiting for it once this many
/// bytes are queued.
const FLUSH_AT: usize = 16 * 1024;

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
    core: ClientConnection<Box<[u8]>, Box<[CallSlot]>>,
    calls: IdMap<RequestId, Waiting>,
    /// Why the connection ended, once the core said so.
    closed: Option<CloseReason>,
    /// The driver task has finished: the socket's sending half is shut.
    finished: bool,
    /// A write failed: the peer is gone (reading will see the end).
    write_failed: bool,
    /// The peer's end of stream (or a read error) was seen.
    eof: bool,
    /// The timer the driver sleeps until (`None`: none); a call whose deadline comes
    /// sooner wakes it.
    sleeping_until: Option<Instant>,
    /// The driver has just handed outcomes to callers and writes once they have had their
    /// turn: calls made meanwhile are only queued, and go out together in one write.
    batching: bool,
}

/// One connection, shared by the client's clones and its driver task.
pub(super) struct Shared {
    endpoint: Endpoint,
    socket: StreamSocket,
    clock: Clock,
    state: Mutex<State>,
    /// Wakes the driver: bytes the socket did not take, an earlier timer, a close.
    driver: Notify,
    /// Wakes callers waiting for room (a call slot, transmit space, the server's hello)
    /// and for the end of the connection.
    room: Notify,
}

/// The stream client: a handle on the shared connection.
pub(super) struct StreamClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamClient")
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl StreamClient {
    /// Connects, queues the hello and starts the driver task (the server's hello is not
    /// waited for: calls can follow at once).
    pub(super) async fn connect(
        endpoint: &Endpoint,
        config: &ClientConfig,
        tls: Option<&wirecall::TlsConnector>,
    ) -> Result<Self, Error> {
        let socket = connect(endpoint, config.connect_timeout).await?;
        let socket = match (socket, endpoint) {
            (StreamSocket::Tcp(tcp), Endpoint::Tls(host, _)) => {
                tls_handshake(endpoint, host, tcp, tls, config.connect_timeout).await?
            }
            (socket, _) => socket,
        };
        let clock = Clock::new();
        let buffer = || vec![0u8; config.connection.buffer_len()].into_boxed_slice();
        let slots = vec![CallSlot::EMPTY; config.connection.table_len()].into_boxed_slice();
        let core =
            ClientConnection::new(config.connection, buffer(), buffer(), slots, clock.now())?;
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            socket,
            clock,
            state: Mutex::new(State {
                core,
                calls: IdMap::default(),
                closed: None,
                finished: false,
                write_failed: false,
                eof: false,
                sleeping_until: None,
                batching: false,
            }),
            driver: Notify::new(),
            room: Notify::new(),
        });
        shared.flush_for_caller(&mut shared.lock());
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

    /// Queues a call in the core and writes it out, waiting while the connection has no
    /// room for it (every call slot busy, the transmit buffer full, or a large request
    /// before the server's hello).
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
                let now = self.shared.clock.now();
                match state.core.call(now, target, body, timeout) {
                    Ok(id) => {
                        state.calls.insert(id, Waiting::Pending(None));
                        if !state.batching || state.core.transmit().len() >= FLUSH_AT {
                            self.shared.flush_for_caller(&mut state);
                        }
                        self.shared.wake_for_timer(&state);
                        return Ok(id);
                    }
                    Err(SendError::TooManyInFlight | SendError::WouldBlock)
                        if state.closed.is_none() => {}
                    Err(e) => return Err(CallError::not_sent(e)),
                }
            }
            // The driver writes out what is queued and takes answers; it wakes us then.
            self.shared.driver.notify_one();
            room.await;
        }
    }

    /// Calls the connection allows in flight now.
    pub(super) fn max_in_flight(&self) -> usize {
        self.shared.lock().core.max_in_flight()
    }

    /// Why the connection ended, once it has.
    pub(super) fn closed(&self) -> Option<CloseReason> {
        self.shared.lock().closed
    }

    /// Closes gracefully and waits until the connection has ended: calls in flight are
    /// answered first.
    pub(super) async fn close(&self) -> CloseReason {
        self.shared.begin_close();
        loop {
            let mut room = pin!(self.shared.room.notified());
            room.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.finished {
                    return state.closed.unwrap_or(CloseReason::Aborted);
                }
            }
            room.await;
        }
    }

    /// The last handle is gone: close gracefully in the background.
    pub(super) fn release(&self) {
        self.shared.begin_close();
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
        let finished = state.finished;
        match state.calls.get_mut(&self.id) {
            Some(Waiting::Pending(slot)) if !finished => {
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                Poll::Pending
            }
            Some(Waiting::Pending(_)) => {
                // The driver ended without an outcome for it (the core reports every call
                // before the close, so this is a safety net).
                state.calls.remove(&self.id);
                self.done = true;
                let reason = state.closed.unwrap_or(CloseReason::Aborted);
                let failure = Failure::ConnectionLost { reason, sent: true };
                Poll::Ready(Err(CallError::from(&failure)))
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
            // The core queues the Cancel frame; its cancelled outcome goes nowhere. Taking
            // the events now frees the call's slot (a caller may be waiting for one) and
            // lets a closing connection see it has nothing left in flight.
            if state.core.cancel(self.id) {
                let now = self.shared.clock.now();
                self.shared.take_events(&mut state, now);
                self.shared.flush_for_caller(&mut state);
                drop(state);
                self.shared.driver.notify_one();
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

    /// Queues the go-away and wakes the driver, which ends the connection once calls in
    /// flight are answered.
    fn begin_close(&self) {
        let mut state = self.lock();
        let now = self.clock.now();
        state.core.close(now);
        self.flush(&mut state);
        drop(state);
        // The driver ends the connection once it is closed.
        self.driver.notify_one();
    }

    /// Writes what the core has queued until the socket takes no more; what is left is
    /// the driver's to write when the socket has room. Returns `true` when the driver must
    /// look (bytes left, or the write failed): a caller then wakes it; the driver itself
    /// just goes round (waking itself would spin).
    fn flush(&self, state: &mut State) -> bool {
        if state.write_failed {
            return false;
        }
        // Ciphertext TLS could not send last time goes first.
        if let Err(e) = self.socket.flush_pending() {
            log::debug!("{}: write failed: {e}", self.endpoint);
            state.write_failed = true;
            return true;
        }
        loop {
            let pending = state.core.transmit();
            if pending.is_empty() {
                // TLS may hold ciphertext the socket did not take: the driver waits for
                // room and sends it.
                return self.socket.wants_write();
            }
            match self.socket.try_write(pending) {
                Ok(n) if n > 0 => state.core.advance_transmit(n),
                Err(e) if would_block(&e) => return true,
                Err(e) if interrupted(&e) => {}
                result => {
                    if let Err(e) = result {
                        log::debug!("{}: write failed: {e}", self.endpoint);
                    }
                    // The server is gone; reading will see the end of the stream.
                    state.write_failed = true;
                    return true;
                }
            }
        }
    }

    /// [`flush`](Self::flush) for a caller (not the driver): wakes the driver if it must
    /// write the rest.
    fn flush_for_caller(&self, state: &mut State) {
        if self.flush(state) {
            self.driver.notify_one();
        }
    }

    /// Takes the core's events (which fire due timers): each outcome goes to its caller.
    /// Returns how many outcomes were handed over.
    fn take_events(&self, state: &mut State, now: Instant) -> usize {
        let mut any = false;
        let mut delivered = 0;
        while let Some(event) = state.core.poll_event(now) {
            any = true;
            let (id, outcome) = match event {
                ClientEvent::Response { id, body } => (id, Ok(body.to_vec())),
                ClientEvent::Failed { id, failure } => (id, Err(CallError::from(&failure))),
                ClientEvent::Closed(reason) => {
                    log::debug!("{}: connection closed: {reason}", self.endpoint);
                    state.closed = Some(reason);
                    continue;
                }
                _ => continue,
            };
            // A call whose future was dropped (cancelled) has no entry: its outcome goes.
            if let Some(waiting) = state.calls.get_mut(&id) {
                if let Waiting::Pending(Some(waker)) =
                    std::mem::replace(waiting, Waiting::Done(outcome))
                {
                    waker.wake();
                    delivered += 1;
                }
            }
        }
        if any {
            self.room.notify_waiters();
        }
        delivered
    }

    /// Reads what has come into the core's receive buffer, taking events whenever it is
    /// full of frames not yet taken, until a read comes back short (the socket is empty:
    /// its readiness is cleared, so the next wait sleeps without a read that finds
    /// nothing).
    fn read_in(&self, state: &mut State, now: Instant) {
        for _ in 0..READS_PER_TURN {
            if state.core.input_buffer().is_empty() {
                self.take_events(state, now);
                if state.core.input_buffer().is_empty() {
                    return;
                }
            }
            match self.socket.read_until_short(state.core.input_buffer()) {
                Ok((0, _)) => {
                    state.core.handle_eof();
                    state.eof = true;
                    return;
                }
                Ok((n, short)) => {
                    state.core.commit_input(now, n);
                    if short {
                        return;
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.endpoint);
                    state.core.handle_eof();
                    state.eof = true;
                    return;
                }
            }
        }
    }
}

/// The connection's driver task: reads, takes events, fires timers and writes what is
/// left, until the core reports the connection closed and its last bytes are out.
async fn drive(shared: Arc<Shared>) {
    let mut timer_wait = Timer::new();
    loop {
        let (timer, interest) = {
            let mut state = shared.lock();
            let now = shared.clock.now();
            state.batching = false;
            shared.take_events(&mut state, now);
            let queued = state.core.transmit().len();
            shared.flush(&mut state);
            if state.core.transmit().len() < queued {
                // Room in the transmit buffer: callers waiting for it try again.
                shared.room.notify_waiters();
            }
            if state.closed.is_some() && (state.write_failed || state.core.transmit().is_empty()) {
                if let Err(e) = shared.socket.shutdown_write() {
                    log::debug!("{}: shutdown: {e}", shared.endpoint);
                }
                state.finished = true;
                // Callers still polling see the end (none should be waiting).
                for waiting in state.calls.values_mut() {
                    if let Waiting::Pending(waker) = waiting {
                        if let Some(waker) = waker.take() {
                            waker.wake();
                        }
                    }
                }
                drop(state);
                shared.room.notify_waiters();
                return;
            }
            let mut interest = None;
            if !state.eof {
                interest = Some(Interest::READABLE);
            }
            if !state.write_failed
                && (!state.core.transmit().is_empty() || shared.socket.wants_write())
            {
                interest = Some(interest.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE));
            }
            state.sleeping_until = state.core.poll_timeout();
            (state.sleeping_until, interest)
        };
        timer_wait.set(&shared.clock, timer);
        let mut handed_over = false;
        tokio::select! {
            ready = ready(&shared.socket, interest) => {
                let mut state = shared.lock();
                match ready {
                    Ok(ready) if ready.is_readable() || ready.is_read_closed() => {
                        let now = shared.clock.now();
                        shared.read_in(&mut state, now);
                        if shared.take_events(&mut state, now) > 0 {
                            state.batching = true;
                            handed_over = true;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("{}: socket failed: {e}", shared.endpoint);
                        state.core.handle_eof();
                        state.eof = true;
                    }
                }
            }
            () = timer_wait.wait() => {}
            () = shared.driver.notified() => {}
        }
        if handed_over {
            // The callers run first (their next calls are queued), then one write.
            tokio::task::yield_now().await;
        }
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

/// Connects to a stream endpoint within `timeout`; TCP tries each address the host
/// resolves to and gets `TCP_NODELAY` (frames are small, and the core batches them).
async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<StreamSocket, Error> {
    let connect_error = |source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    match endpoint {
        Endpoint::Unix(path) => {
            match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
                Ok(Ok(stream)) => Ok(StreamSocket::Unix(stream)),
                Ok(Err(e)) => Err(connect_error(wirecall::driver::explain_connect_error(
                    endpoint, e,
                ))),
                Err(_) => Err(connect_error(timed_out())),
            }
        }
        Endpoint::Tcp(..) | Endpoint::Tls(..) => {
            let mut last = None;
            for addr in resolve(endpoint).await? {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            log::debug!("cannot set TCP_NODELAY: {e}");
                        }
                        return Ok(StreamSocket::Tcp(stream));
                    }
                    Ok(Err(e)) => last = Some(e),
                    Err(_) => last = Some(timed_out()),
                }
            }
            Err(connect_error(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")
            })))
        }
        Endpoint::UnixDatagram(_) | Endpoint::Udp(..) => Err(connect_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a datagram endpoint has no stream",
        ))),
    }
}

/// The TLS session over a connected TCP socket, its handshake done within `timeout` with
/// `tls` (without it, the system's trust roots and no client certificate).
async fn tls_handshake(
    endpoint: &Endpoint,
    host: &str,
    tcp: tokio::net::TcpStream,
    tls: Option<&wirecall::TlsConnector>,
    timeout: Duration,
) -> Result<StreamSocket, Error> {
    let default;
    let tls = match tls {
        Some(tls) => tls,
        None => {
            default = wirecall::TlsClientConfig::new().build()?;
            &default
        }
    };
    let connect_error = |source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    let session = tls.session(host).map_err(connect_error)?;
    let socket = StreamSocket::tls(tcp, session);
    match tokio::time::timeout(timeout, socket.finish_handshake()).await {
        Ok(Ok(())) => Ok(socket),
        Ok(Err(e)) => Err(match wirecall::tls::failure_of(&e) {
            Some(failure) => Error::TlsHandshake {
                endpoint: endpoint.clone(),
                failure: failure.clone(),
            },
            None => connect_error(e),
        }),
        Err(_) => Err(connect_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no TLS handshake within {} ms: is it a TLS server?",
                timeout.as_millis()
            ),
        ))),
    }
}

/// Resolves a network endpoint off the runtime's threads (the system resolver blocks).
async fn resolve(endpoint: &Endpoint) -> Result<Vec<std::net::SocketAddr>, Error> {
    let owned = endpoint.clone();
    match tokio::task::spawn_blocking(move || owned.resolve()).await {
        Ok(result) => result,
        Err(e) => Err(Error::Resolve {
            endpoint: endpoint.clone(),
            source: std::io::Error::other(e),
        }),
    }
}
