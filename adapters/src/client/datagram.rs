//! The client over a datagram transport (Unix datagram, UDP): a socket of its own,
//! connected to the server's address, and the core's [`CoreClient`] that decides what to
//! send when (first copies, retransmissions with backoff and jitter, cancels) and how each
//! call ends.
//!
//! A send the kernel refuses is only logged: the core counts every copy it hands out as
//! sent (a datagram may be lost anyway), and its next retransmission tries again.

use std::fs::File;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use wirecall_core::client::{Failure, SendError};
use wirecall_core::datagram::{DatagramCallSlot, DatagramClient as CoreClient, DatagramEvent};
use wirecall_core::wire::Target;
use wirecall_core::{Instant, RequestId};

use super::outcomes::Outcomes;
use super::socket::Socket;
use super::{CallError, Outcome};
use crate::clock::{Clock, to_core, to_std};
use crate::config::{ClientConfig, UDP_RECEIVE_BUFFER, check_datagram, datagram_config};
use crate::driver::{datagram_send_refused, is_refusal, reconnect_datagram};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::stream::{interrupted, would_block};

/// Datagrams read per turn before events are handled.
const READS_PER_TURN: usize = 64;
/// The longest single wait, a safety net: the core always has a deadline to wake for
/// while a call is in flight.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// The shortest wait for room for a datagram the socket refused.
const HELD_WAIT: Duration = Duration::from_millis(1);
/// A call submitted after the client has read nothing for this long first takes the
/// answers that came meanwhile, so it does not retransmit calls already answered.
const IDLE_LOOK: Duration = Duration::from_millis(1);

/// A blocking client of one datagram endpoint. See the [module docs](self).
pub(super) struct DatagramClient {
    endpoint: Endpoint,
    socket: Socket,
    /// On `unix-dgram:`, the private directory holding this client's socket file; removed
    /// (with the file) when the client is dropped, after the socket.
    _dir: Option<tempfile::TempDir>,
    core: CoreClient<Box<[u8]>, Box<[DatagramCallSlot]>>,
    clock: Clock,
    /// The socket had no room for the last datagram (the server's queue was full): it was
    /// handed back to the core, and nothing is sent until the socket can send again.
    blocked: bool,
    /// Call slots of the core.
    slots: usize,
    outcomes: Outcomes,
    /// When the client last read from the socket (on the client's clock).
    last_read: Instant,
}

impl std::fmt::Debug for DatagramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("epoch", &format_args!("{:016x}", self.core.epoch()))
            .field("waiting", &self.outcomes.pending())
            .finish_non_exhaustive()
    }
}

impl DatagramClient {
    /// Binds a socket of its own and connects it to the server's address.
    pub(super) fn connect(endpoint: &Endpoint, config: &ClientConfig) -> Result<Self, Error> {
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
        let (fd, dir) = open(endpoint)?;
        let socket = Socket::new(fd).map_err(Error::io("setting up the socket"))?;
        log::debug!("{endpoint}: datagram client, epoch {epoch:016x}");
        Ok(Self {
            endpoint: endpoint.clone(),
            socket,
            _dir: dir,
            core,
            clock: Clock::default(),
            blocked: false,
            slots,
            outcomes: Outcomes::default(),
            last_read: Instant::ZERO,
        })
    }

    /// Starts a call and sends its first copy. Blocks only while every call slot is taken,
    /// or while the call would be more than 64 ids past the oldest call still waiting (so
    /// the server can be told it ended), until a call ends.
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
                    // The call was made at `now`: its first copy goes out as of then.
                    self.send_out(now);
                    return Ok(id);
                }
                Err(SendError::TooManyInFlight) => {
                    self.turn();
                    now = self.clock.now();
                }
                Err(e) => return Err(CallError::not_sent(e)),
            }
        }
    }

    /// Waits for the outcome of call `id`; others that end meanwhile are kept.
    pub(super) fn wait(&mut self, id: RequestId) -> Result<Vec<u8>, CallError> {
        if !self.outcomes.is_waiting(id) {
            return Err(CallError::unknown(id));
        }
        loop {
            if let Some(outcome) = self.outcomes.take(id) {
                return outcome;
            }
            self.turn();
        }
    }

    /// Waits for the next call to end; `None` when no call is waiting.
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
        self.outcomes.take_any()
    }

    /// As [`wait_any_timeout`](Self::wait_any_timeout) (`None`: as
    /// [`wait_any`](Self::wait_any)), with the answer borrowed from the client's store.
    pub(super) fn wait_any_borrowed(
        &mut self,
        timeout: Option<Duration>,
    ) -> Option<(RequestId, Result<&[u8], CallError>)> {
        self.ready_until(timeout.and_then(|t| std::time::Instant::now().checked_add(t)));
        self.outcomes.take_any_borrowed()
    }

    /// Drives the client until an outcome waits to be collected, no call is waiting, or
    /// `until` (`None`: for ever).
    fn ready_until(&mut self, until: Option<std::time::Instant>) {
        loop {
            if self.outcomes.has_done() || self.outcomes.any_waiting().is_none() {
                return;
            }
            let left = until.map(|u| u.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                self.pump();
                return;
            }
            self.turn_within(left.unwrap_or(MAX_WAIT));
        }
    }

    /// Cancels a call in flight: it stops retransmitting; the cancel goes out at once.
    pub(super) fn cancel(&mut self, id: RequestId) -> bool {
        if !self.outcomes.is_waiting(id) || !self.core.cancel(id) {
            return false;
        }
        let now = self.clock.now();
        self.take_events(now);
        self.send_out(now);
        true
    }

    /// Does whatever I/O is due without blocking.
    pub(super) fn service(&mut self) {
        self.pump();
    }

    /// Calls submitted and not yet collected.
    pub(super) fn pending(&self) -> usize {
        self.outcomes.pending()
    }

    /// The core's counters.
    pub(super) fn stats(&self) -> wirecall_core::datagram::DatagramClientStats {
        *self.core.stats()
    }

    /// Call slots: the most calls in flight at once.
    pub(super) fn max_in_flight(&self) -> usize {
        self.slots
    }

    /// Lets every call in flight end (answer or deadline) and sends the cancels owed.
    pub(super) fn close(mut self) -> wirecall_core::client::CloseReason {
        while self.core.in_flight() > 0 {
            self.turn();
        }
        self.pump();
        wirecall_core::client::CloseReason::Graceful
    }

    /// Waits for one datagram or the core's next timer, whichever comes first, and acts
    /// on it: one `recv` in the common case. When a timer is already due, the answers that
    /// came are read first, so a client that was busy elsewhere does not retransmit calls
    /// that are already answered.
    fn turn(&mut self) {
        self.turn_within(MAX_WAIT);
    }

    /// [`turn`](Self::turn), waiting no longer than `limit` (the caller's own deadline,
    /// or [`MAX_WAIT`]).
    fn turn_within(&mut self, limit: Duration) {
        let now = self.clock.now();
        let timeout = self
            .core
            .poll_timeout()
            .map_or(MAX_WAIT, |at| to_std(at.saturating_duration_since(now)))
            .min(MAX_WAIT)
            .min(limit);
        if self.blocked {
            // Wait for room (at least a moment, or a due timer would spin), reading answers
            // meanwhile; then the core hands out again what was not sent.
            let ready = self.socket.wait_ready(true, Some(timeout.max(HELD_WAIT)));
            let now = self.clock.now();
            match ready {
                Ok(_) => {
                    self.read_now(now);
                }
                Err(e) => self.receive_failed(&e),
            }
            self.blocked = false;
            self.take_events(now);
            self.send_out(now);
        } else if timeout.is_zero() {
            self.pump();
        } else {
            let received = self
                .socket
                .recv_wait(self.core.input_buffer(), Some(timeout));
            // One clock read after the wait serves everything this turn does.
            let now = self.clock.now();
            match received {
                Ok(Some(len)) => self.take_datagram(now, len),
                Ok(None) => {}
                Err(e) => self.receive_failed(&e),
            }
            self.take_events(now);
            self.send_out(now);
        }
    }

    /// One round of reading, events (which fire due timers) and sending without waiting;
    /// `true` if anything happened.
    fn pump(&mut self) -> bool {
        let now = self.clock.now();
        let mut progress = self.read_now(now);
        progress |= self.take_events(now);
        progress |= self.send_out(now);
        progress
    }

    /// Sends every datagram the core has due, until the socket has no room: the one it
    /// refused goes back to the core ([`not_sent`](CoreClient::not_sent)), which hands it
    /// out again once there is room (and never past its call's deadline).
    fn send_out(&mut self, now: Instant) -> bool {
        if self.blocked {
            return false;
        }
        let mut progress = false;
        while let Some(transmit) = self.core.poll_transmit(now) {
            progress = true;
            let kind = transmit.kind;
            match self.socket.send_now(transmit.bytes) {
                Ok(_) => {}
                Err(e) if interrupted(&e) => self.core.not_sent(kind),
                Err(e) if would_block(&e) => {
                    // The server's queue is full (Unix datagram sockets queue only a few).
                    self.core.not_sent(kind);
                    self.blocked = true;
                    break;
                }
                Err(e) if reconnect_datagram(self.socket.fd(), &self.endpoint, &e) => {
                    // A server restarted on the path: this copy never left, send it again.
                    self.core.not_sent(kind);
                }
                Err(e) if datagram_send_refused(&mut self.core, &self.endpoint, kind, &e) => {
                    log::debug!("{}: nothing listens there: {e}", self.endpoint);
                }
                Err(e) => {
                    // Lost like any datagram: the core retransmits it if it is a request.
                    log::debug!("{}: a datagram was not sent: {e}", self.endpoint);
                }
            }
        }
        progress
    }

    /// Reads the datagrams that have come, without waiting (taken in as of `now`, read
    /// just before).
    fn read_now(&mut self, now: Instant) -> bool {
        let mut progress = false;
        for _ in 0..READS_PER_TURN {
            match self.socket.recv_now(self.core.input_buffer()) {
                Ok(len) => self.take_datagram(now, len),
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => self.receive_failed(&e),
            }
            progress = true;
        }
        self.last_read = now;
        progress
    }

    /// A receive error: connection refused (nothing listens there: the core ends the
    /// calls that proves were never delivered), or another, which is only logged.
    fn receive_failed(&mut self, e: &io::Error) {
        log::debug!("{}: receive: {e}", self.endpoint);
        if is_refusal(e) {
            self.core.refused();
        }
    }

    /// Hands the datagram of `len` bytes received into the core's receive area to it, and
    /// takes the outcome it ended (the area is free again for the next one).
    fn take_datagram(&mut self, now: Instant, len: usize) {
        self.last_read = now;
        self.core.commit_datagram(now, len);
        self.take_events(now);
    }

    /// Takes the calls the core ended as of `now`: answers, and calls that ended without
    /// one.
    fn take_events(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some(event) = self.core.poll_event(now) {
            progress = true;
            match event {
                DatagramEvent::Failed { id, failure } => {
                    self.outcomes
                        .failed(id, CallError::from(&Failure::from(failure)));
                }
                DatagramEvent::Response { id, body } => {
                    self.outcomes.answered(id, body);
                }
                _ => {}
            }
        }
        progress
    }
}

impl Drop for DatagramClient {
    /// Tells the server, with one datagram and without waiting, which calls it may forget
    /// (if it has not been told yet), so it need not keep them until their windows close.
    /// Nothing else is sent: no retransmission of an abandoned call.
    fn drop(&mut self) {
        if let Some(ack) = self.core.acknowledgement() {
            if let Err(e) = self.socket.send_now(ack) {
                log::debug!(
                    "{}: the last acknowledgement was not sent: {e}",
                    self.endpoint
                );
            }
        }
    }
}

/// Two random 64-bit words from the OS: the client's epoch and its jitter seed.
pub(crate) fn random_words() -> Result<[u64; 2], Error> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("reading /dev/urandom for the client's epoch"))?;
    let (epoch, seed) = bytes.split_at(8);
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or_default());
    Ok([word(epoch), word(seed)])
}

/// A socket connected to the server: on `unix-dgram:` bound at a fresh path in a private
/// directory (returned, to remove it later); on `udp:` on an ephemeral port of the first
/// address family that connects, with a receive buffer of [`UDP_RECEIVE_BUFFER`] (room for
/// the answers to a window of calls arriving together). The socket is in blocking mode.
pub(crate) fn open(endpoint: &Endpoint) -> Result<(OwnedFd, Option<tempfile::TempDir>), Error> {
    let connect_error = |source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    match endpoint {
        Endpoint::UnixDatagram(path) => {
            // Nobody else may list the directory or make files in it, but a server running
            // as another user may reach the socket to answer. Nobody else can send to it:
            // it is connected to the server, and the kernel refuses datagrams to a
            // connected Unix socket from any other socket.
            let dir = tempfile::Builder::new()
                .prefix("wirecall-client-")
                .permissions(std::fs::Permissions::from_mode(0o711))
                .tempdir()
                .map_err(connect_error)?;
            let own = dir.path().join("client.sock");
            let socket = std::os::unix::net::UnixDatagram::bind(&own).map_err(connect_error)?;
            socket
                .connect(path)
                .map_err(|e| connect_error(crate::driver::explain_connect_error(endpoint, e)))?;
            std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o666))
                .map_err(connect_error)?;
            Ok((socket.into(), Some(dir)))
        }
        Endpoint::Udp(..) => {
            let mut last = None;
            for addr in endpoint.resolve()? {
                let any: SocketAddr = if addr.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = std::net::UdpSocket::bind(any).and_then(|s| {
                    s.connect(addr)?;
                    Ok(s)
                });
                match socket {
                    Ok(socket) => {
                        let size = UDP_RECEIVE_BUFFER;
                        if let Err(e) =
                            rustix::net::sockopt::set_socket_recv_buffer_size(&socket, size)
                        {
                            log::debug!("{endpoint}: cannot enlarge the receive buffer: {e}");
                        }
                        return Ok((socket.into(), None));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(connect_error(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
            })))
        }
        Endpoint::Unix(_) | Endpoint::Tcp(..) | Endpoint::Tls(..) => {
            Err(connect_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a stream endpoint is not a datagram one",
            )))
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_unix_client_binds_a_private_name_and_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let server_path = dir.path().join("server.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&server_path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let endpoint = Endpoint::UnixDatagram(server_path);
        let mut client = DatagramClient::connect(&endpoint, &ClientConfig::default()).unwrap();
        let own = client._dir.as_ref().unwrap().path().to_path_buf();
        let mode = std::fs::metadata(&own).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o711,
            "nobody else lists it or makes files in it"
        );

        // The socket is connected to the server: nobody else gets a datagram into it.
        let stranger = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let refused = stranger.send_to(b"forged", own.join("client.sock"));
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::PermissionDenied);

        client
            .submit("echo".into(), b"hi", Some(Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 256];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(from.as_pathname(), Some(own.join("client.sock").as_path()));

        drop(client);
        assert!(!own.exists(), "removed with the client");
    }

    #[test]
    fn test_each_client_has_its_own_epoch() {
        let a = random_words().unwrap();
        let b = random_words().unwrap();
        assert_ne!(a, b);
    }
}
