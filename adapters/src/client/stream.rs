//! The client over a stream transport (Unix stream, TCP): one connection and the core's
//! [`ClientConnection`].
//!
//! The client makes the system calls raw blocking code would make (see
//! [`socket`](super::socket)): `submit` sends its call at once, except right after a
//! wait that left outcomes to collect: then the caller is working through a batch of
//! answers, so the call is queued in the core's transmit buffer, and the queue goes out in
//! one `send` with the call submitted after the batch's last outcome is collected, or when
//! the client next waits (or once [`FLUSH_AT`] bytes are queued). A loop that collects an
//! answer and submits a new call thus writes once per batch of answers read. A wait is one
//! blocking `recv` for whatever answers have come, bounded by the core's next timer so
//! call timeouts and keepalive work while it waits. It is blocking: it does I/O only inside its methods, so an idle client answers
//! no keepalive pings (call `Client::service` now and then to keep one open); a call made
//! after the server has closed the connection fails as not sent.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use wirecall_core::client::{
    CallSlot, ClientConnection, ClientEvent, CloseReason, PeerInfo, SendError,
};
use wirecall_core::wire::Target;
use wirecall_core::{Instant, RequestId};

use super::outcomes::Outcomes;
use super::socket::{Socket, StreamSocket};
use super::{CallError, Outcome};
use crate::clock::{Clock, to_core, to_std};
use crate::config::ClientConfig;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::stream::{interrupted, would_block};
use crate::tls::{TlsClientConfig, TlsConnector, TlsFailure, failure_of};

/// Reads per turn before events are handled.
const READS_PER_TURN: usize = 16;
/// Queued calls go out without waiting for the next wait once this many bytes are queued,
/// so a long run of submits keeps the server busy meanwhile.
const FLUSH_AT: usize = 16 * 1024;
/// A call submitted after the client has read nothing for this long first looks at what
/// came meanwhile: a close (keepalive, idle timeout, shutdown) then fails it as not sent,
/// rather than "maybe executed". Back-to-back calls skip that look (a system call).
const IDLE_LOOK: Duration = Duration::from_millis(1);

/// A blocking client over one stream connection. See the [module docs](self).
pub(super) struct StreamClient {
    endpoint: Endpoint,
    socket: StreamSocket,
    core: ClientConnection<Box<[u8]>, Box<[CallSlot]>>,
    clock: Clock,
    outcomes: Outcomes,
    closed: Option<CloseReason>,
    eof: bool,
    write_failed: bool,
    /// Our end of the transport is shut (after the close).
    shut: bool,
    /// When the client last read from the socket (on the client's clock).
    last_read: Instant,
    /// The last wait handed back an outcome and left others to collect: the caller is
    /// working through a batch, so calls it submits meanwhile are queued, not sent.
    batching: bool,
    /// The server's hello, once it has arrived.
    server: Option<PeerInfo>,
    /// Why TLS ended the connection (e.g. the server refused our certificate after the
    /// handshake), if it did.
    tls_failure: Option<TlsFailure>,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("waiting", &self.outcomes.pending())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl StreamClient {
    /// Connects to a server and sends the hello (the server's hello is not waited for:
    /// calls can follow at once). On `tls:` the TLS handshake is done first, within the
    /// connect timeout, with `tls` (without it, the system's trust roots and no client
    /// certificate).
    pub(super) fn connect(
        endpoint: &Endpoint,
        config: &ClientConfig,
        tls: Option<&TlsConnector>,
    ) -> Result<Self, Error> {
        let fd = connect(endpoint, config.connect_timeout)?;
        let socket = Socket::new(fd).map_err(Error::io("setting up the socket"))?;
        let socket = match endpoint {
            Endpoint::Tls(host, _) => {
                let default;
                let tls = match tls {
                    Some(tls) => tls,
                    None => {
                        default = TlsClientConfig::new().build()?;
                        &default
                    }
                };
                let session = tls.session(host).map_err(|source| Error::Connect {
                    endpoint: endpoint.clone(),
                    source,
                })?;
                StreamSocket::tls(socket, session, config.connect_timeout).map_err(|e| {
                    match failure_of(&e) {
                        Some(failure) => Error::TlsHandshake {
                            endpoint: endpoint.clone(),
                            failure: failure.clone(),
                        },
                        None => Error::Connect {
                            endpoint: endpoint.clone(),
                            source: e,
                        },
                    }
                })?
            }
            _ => StreamSocket::Plain(socket),
        };
        let clock = Clock::default();
        let buffer = || vec![0u8; config.connection.buffer_len()].into_boxed_slice();
        let slots = vec![CallSlot::EMPTY; config.connection.table_len()].into_boxed_slice();
        let core =
            ClientConnection::new(config.connection, buffer(), buffer(), slots, clock.now())?;
        let mut client = Self {
            endpoint: endpoint.clone(),
            socket,
            core,
            clock,
            outcomes: Outcomes::default(),
            closed: None,
            eof: false,
            write_failed: false,
            shut: false,
            last_read: Instant::ZERO,
            batching: false,
            server: None,
            tls_failure: None,
        };
        client.write_out();
        Ok(client)
    }

    /// Waits until the server's hello has arrived, at most `timeout`. `Err(Some(reason))`
    /// when the connection ended first (the peer is not wirecall, refused us, closed),
    /// `Err(None)` when no hello came in time.
    pub(super) fn handshake(&mut self, timeout: Duration) -> Result<(), Option<CloseReason>> {
        let start = std::time::Instant::now();
        loop {
            self.take_events(self.clock.now());
            if let Some(reason) = self.closed {
                return Err(Some(reason));
            }
            if self.server.is_some() {
                return Ok(());
            }
            if self.eof {
                // The core reports the end as a close at its next event; a safety net.
                return Err(Some(CloseReason::TransportClosed));
            }
            let Some(left) = timeout
                .checked_sub(start.elapsed())
                .filter(|d| !d.is_zero())
            else {
                return Err(None);
            };
            self.turn_within(Some(left));
        }
    }

    /// Sends a call without waiting for its answer. Right after a wait that left outcomes
    /// to collect, the call is only queued: it goes out with the others in one write when
    /// the client next waits or services, or with the first call submitted after the last
    /// of those outcomes is collected, or once [`FLUSH_AT`] bytes are queued. Blocks only while as
    /// many calls are in flight as the server allows (until one ends) or the transmit
    /// buffer is full.
    pub(super) fn submit(
        &mut self,
        target: Target<'_>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, CallError> {
        let mut now = self.clock.now();
        if now.saturating_duration_since(self.last_read) >= to_core(IDLE_LOOK) {
            self.pump();
            now = self.clock.now();
        }
        loop {
            match self.core.call(now, target, body, timeout.map(to_core)) {
                Ok(id) => {
                    self.outcomes.submitted(id);
                    if !self.batching || self.core.transmit().len() >= FLUSH_AT {
                        self.write_out();
                    }
                    return Ok(id);
                }
                Err(e @ (SendError::TooManyInFlight | SendError::WouldBlock)) => {
                    if self.closed.is_some() {
                        return Err(CallError::not_sent(e));
                    }
                    self.turn();
                    now = self.clock.now();
                }
                Err(e) => return Err(CallError::not_sent(e)),
            }
        }
    }

    /// Waits for the outcome of call `id`; outcomes of other calls that arrive meanwhile
    /// are kept for later.
    pub(super) fn wait(&mut self, id: RequestId) -> Result<Vec<u8>, CallError> {
        if !self.outcomes.is_waiting(id) {
            return Err(CallError::unknown(id));
        }
        loop {
            if let Some(outcome) = self.outcomes.take(id) {
                self.batching = self.outcomes.has_done();
                return outcome;
            }
            if self.closed.is_some() {
                // The core reports every call before the close; this is a safety net.
                self.outcomes.forget(id);
                return Err(self.lost());
            }
            self.turn();
        }
    }

    /// Waits for the next call to finish, in whatever order they finish; `None` when no
    /// call is waiting.
    pub(super) fn wait_any(&mut self) -> Option<(RequestId, Outcome)> {
        self.wait_any_until(None)
    }

    /// As [`wait_any`](Self::wait_any), but waits no longer than `timeout`: `None` also
    /// when no call ended in time.
    pub(super) fn wait_any_timeout(&mut self, timeout: Duration) -> Option<(RequestId, Outcome)> {
        // A timeout past the clock's range waits as long as `wait_any` does.
        self.wait_any_until(std::time::Instant::now().checked_add(timeout))
    }

    /// [`wait_any`](Self::wait_any) until `until` (`None`: for ever).
    fn wait_any_until(
        &mut self,
        until: Option<std::time::Instant>,
    ) -> Option<(RequestId, Outcome)> {
        self.ready_until(until);
        let done = self.outcomes.take_any();
        self.batching = self.outcomes.has_done();
        done
    }

    /// As [`wait_any_timeout`](Self::wait_any_timeout) (`None`: as
    /// [`wait_any`](Self::wait_any)), with the answer borrowed from the client's store.
    pub(super) fn wait_any_borrowed(
        &mut self,
        timeout: Option<Duration>,
    ) -> Option<(RequestId, Result<&[u8], CallError>)> {
        self.ready_until(timeout.and_then(|t| std::time::Instant::now().checked_add(t)));
        // Whether more outcomes wait after this one (see `batching`).
        self.batching = self.outcomes.pending_done() > 1;
        self.outcomes.take_any_borrowed()
    }

    /// Drives the client until an outcome waits to be collected, no call is waiting, or
    /// `until` (`None`: for ever). A closed connection's waiting calls end lost (the core
    /// reports every call before the close; this is a safety net).
    fn ready_until(&mut self, until: Option<std::time::Instant>) {
        loop {
            if self.outcomes.has_done() {
                return;
            }
            let Some(id) = self.outcomes.any_waiting() else {
                return;
            };
            if self.closed.is_some() {
                let lost = self.lost();
                self.outcomes.failed(id, lost);
                return;
            }
            let left = until.map(|u| u.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                self.pump();
                return;
            }
            self.turn_within(left);
        }
    }

    /// Cancels a call in flight; the Cancel frame goes out at once.
    pub(super) fn cancel(&mut self, id: RequestId) -> bool {
        if !self.outcomes.is_waiting(id) || !self.core.cancel(id) {
            return false;
        }
        self.write_out();
        true
    }

    /// Does whatever I/O is pending without blocking: sends what is queued, reads answers,
    /// answers the server's keepalive pings.
    pub(super) fn service(&mut self) {
        self.pump();
    }

    /// Calls submitted and not yet collected.
    #[must_use]
    pub(super) fn pending(&self) -> usize {
        self.outcomes.pending()
    }

    /// Calls the connection allows in flight now (the server's limit once its hello is in).
    #[must_use]
    pub(super) fn max_in_flight(&self) -> usize {
        self.core.max_in_flight()
    }

    /// What the server's hello said, once it has arrived.
    pub(super) fn server(&self) -> Option<PeerInfo> {
        self.server
    }

    /// Whether a new call may be sent (no go-away, not closed).
    pub(super) fn accepts_calls(&self) -> bool {
        self.closed.is_none() && self.core.accepts_calls()
    }

    /// Why the connection ended, once it has.
    #[must_use]
    pub(super) fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Why TLS ended the connection, if it did.
    pub(super) fn tls_failure(&self) -> Option<&TlsFailure> {
        self.tls_failure.as_ref()
    }

    /// Closes gracefully: no new calls; calls in flight still get their answers (which
    /// are then dropped: collect them first); returns how the connection ended.
    pub(super) fn close(mut self) -> CloseReason {
        self.core.close(self.clock.now());
        while self.closed.is_none() {
            self.turn();
        }
        self.write_out();
        self.closed.unwrap_or(CloseReason::Aborted)
    }

    fn lost(&self) -> CallError {
        let reason = self.closed.unwrap_or(CloseReason::Aborted);
        CallError::from(&wirecall_core::client::Failure::ConnectionLost { reason, sent: true })
    }

    /// Sends what is queued, then, unless timers ended something, waits for the socket or
    /// the core's next timer and takes what came: one `send` and one `recv` in the common
    /// case.
    fn turn(&mut self) {
        self.turn_within(None);
    }

    /// [`turn`](Self::turn), waiting no longer than `limit` (the caller's own deadline).
    fn turn_within(&mut self, limit: Option<Duration>) {
        self.write_out();
        let now = self.clock.now();
        if self.take_events(now) || self.closed.is_some() || self.eof {
            self.write_out();
            self.shut_when_done();
            return;
        }
        let timeout = self
            .core
            .poll_timeout()
            .map(|at| to_std(at.saturating_duration_since(now)))
            .into_iter()
            .chain(limit)
            .min();
        let now = if !self.write_failed
            && (!self.core.transmit().is_empty() || self.socket.wants_write())
        {
            // The socket took only part: wait for room, reading answers meanwhile.
            let ready = self.socket.wait_ready(true, timeout);
            let now = self.clock.now();
            match ready {
                Ok(_) => {
                    self.write_out();
                    self.read_now(now);
                }
                Err(e) => self.broken("wait for the socket", &e),
            }
            now
        } else {
            self.read_wait(timeout)
        };
        self.take_events(now);
        self.write_out();
        self.shut_when_done();
    }

    /// One round of writing, reading and events (which fire due timers) without waiting;
    /// `true` if anything happened.
    fn pump(&mut self) -> bool {
        let now = self.clock.now();
        let mut progress = self.write_out();
        progress |= self.read_now(now);
        progress |= self.take_events(now);
        progress |= self.write_out();
        self.shut_when_done();
        progress
    }

    /// Once the core is done with the connection and its last bytes are out, closes the
    /// transport, so the server sees the end at once rather than when the client is
    /// dropped.
    fn shut_when_done(&mut self) {
        if self.closed.is_some()
            && !self.shut
            && (self.write_failed
                || (self.core.transmit().is_empty() && !self.socket.wants_write()))
        {
            self.shut = true;
            if let Err(e) = self.socket.shutdown_write() {
                log::debug!("{}: shutdown: {e}", self.endpoint);
            }
        }
    }

    fn take_events(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some(event) = self.core.poll_event(now) {
            progress = true;
            match event {
                ClientEvent::Response { id, body } => self.outcomes.answered(id, body),
                ClientEvent::Failed { id, failure } => {
                    self.outcomes.failed(id, CallError::from(&failure));
                }
                ClientEvent::Closed(reason) => {
                    log::debug!("{}: connection closed: {reason}", self.endpoint);
                    self.closed = Some(reason);
                }
                ClientEvent::Connected(info) => self.server = Some(info),
                _ => {}
            }
        }
        progress
    }

    /// Sends what the core has queued until the socket takes no more.
    fn write_out(&mut self) -> bool {
        if self.write_failed {
            return false;
        }
        // Ciphertext TLS could not send last time goes first.
        let mut progress = match self.socket.flush_pending() {
            Ok(sent) => sent,
            Err(e) => {
                log::debug!("{}: write failed: {e}", self.endpoint);
                self.write_failed = true;
                return true;
            }
        };
        loop {
            let pending = self.core.transmit();
            if pending.is_empty() {
                return progress;
            }
            match self.socket.send_now(pending) {
                Ok(n) if n > 0 => {
                    self.core.advance_transmit(n);
                    progress = true;
                }
                Err(e) if would_block(&e) => return progress,
                Err(e) if interrupted(&e) => {}
                result => {
                    // The server is gone; reading will see the end of the stream.
                    if let Err(e) = result {
                        log::debug!("{}: write failed: {e}", self.endpoint);
                    }
                    self.write_failed = true;
                    return true;
                }
            }
        }
    }

    /// Waits up to `timeout` for bytes, then takes whatever else has come; returns the
    /// time after the wait.
    fn read_wait(&mut self, timeout: Option<Duration>) -> Instant {
        let buf = self.core.input_buffer();
        if buf.is_empty() {
            // The core holds a full buffer of input it has not taken: nothing to wait for.
            return self.clock.now();
        }
        let room = buf.len();
        let received = self.socket.recv_wait(buf, timeout);
        let now = self.clock.now();
        match received {
            Ok(None) => {}
            Ok(Some(n)) => {
                if self.took(n, now) && n == room {
                    // It filled the buffer: there may be more.
                    self.read_now(now);
                }
            }
            Err(e) => self.broken("read", &e),
        }
        now
    }

    /// Reads what has come without waiting, until a read comes back short (the socket
    /// had no more then; more later wakes the next wait).
    fn read_now(&mut self, now: Instant) -> bool {
        if self.eof || self.closed.is_some() {
            return false;
        }
        self.last_read = now;
        let mut progress = false;
        for _ in 0..READS_PER_TURN {
            let buf = self.core.input_buffer();
            if buf.is_empty() {
                break;
            }
            let room = buf.len();
            match self.socket.recv_now(buf) {
                Ok(n) => {
                    progress = true;
                    if !self.took(n, now) || n < room {
                        break;
                    }
                }
                Err(e) if would_block(&e) || interrupted(&e) => break,
                Err(e) => {
                    self.broken("read", &e);
                    return true;
                }
            }
        }
        progress
    }

    /// Hands `n` bytes read at `now` to the core (0: the end of the stream); `false` at
    /// the end.
    fn took(&mut self, n: usize, now: Instant) -> bool {
        self.last_read = now;
        if n == 0 {
            self.core.handle_eof();
            self.eof = true;
            return false;
        }
        self.core.commit_input(now, n);
        true
    }

    /// A socket error other than "try again": the connection is over.
    fn broken(&mut self, what: &str, e: &io::Error) {
        log::debug!("{}: {what} failed: {e}", self.endpoint);
        if let Some(failure) = failure_of(e) {
            self.tls_failure = Some(failure.clone());
        }
        self.core.handle_eof();
        self.eof = true;
    }
}

/// Connects to a stream endpoint, blocking up to `timeout` (TCP; a Unix connect does not
/// wait on the network). For a host name with several addresses, each is tried in turn.
/// TCP gets `TCP_NODELAY`: frames are small, and the client batches them itself.
fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<OwnedFd, Error> {
    let connect_error = |source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    match endpoint {
        Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path)
            .map(OwnedFd::from)
            .map_err(|e| connect_error(crate::driver::explain_connect_error(endpoint, e))),
        Endpoint::Tcp(..) | Endpoint::Tls(..) => {
            let mut last = None;
            for addr in endpoint.resolve()? {
                match std::net::TcpStream::connect_timeout(&addr, timeout) {
                    Ok(stream) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            log::debug!("cannot set TCP_NODELAY: {e}");
                        }
                        return Ok(stream.into());
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(connect_error(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
            })))
        }
        Endpoint::UnixDatagram(_) | Endpoint::Udp(..) => Err(connect_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a datagram endpoint has no stream",
        ))),
    }
}
