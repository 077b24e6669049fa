//! The client over a datagram transport (Unix datagram, UDP): a socket of its own,
//! connected to the server's address, and the core's [`CoreClient`] that decides what to
//! send when (first copies, retransmissions with backoff and jitter, cancels) and how each
//! call ends.
//!
//! A send the kernel refuses is only logged: the core counts every copy it hands out as
//! sent (a datagram may be lost anyway), and its next retransmission tries again.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Events, Interest, Poll, Registry, Token};
use wirecall_core::RequestId;
use wirecall_core::client::CallError as CoreCallError;
use wirecall_core::datagram::{DatagramCallSlot, DatagramClient as CoreClient, DatagramEvent};

use super::{CallError, Outcome};
use crate::clock::{Clock, to_core, to_std};
use crate::config::{ClientConfig, datagram_config, datagram_storage, table_len};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::stream::{interrupted, would_block};

/// The socket's token in the client's poller.
const SOCKET: Token = Token(0);
/// Datagrams read per turn before events are handled.
const READS_PER_TURN: usize = 64;
/// The receive buffer holds at least this much (a whole UDP datagram), so an answer from a
/// server with a larger `max_datagram` than this client's is not cut short.
const MIN_RECEIVE: usize = 64 * 1024;
/// The longest single wait, a safety net: the core always has a deadline to wake for
/// while a call is in flight.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The client's socket, connected to the server.
#[derive(Debug)]
enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

impl Socket {
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.send(buf),
            Self::Udp(s) => s.send(buf),
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.recv(buf),
            Self::Udp(s) => s.recv(buf),
        }
    }
}

impl Source for Socket {
    fn register(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.register(r, token, interest),
            Self::Udp(s) => s.register(r, token, interest),
        }
    }

    fn reregister(&mut self, r: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.reregister(r, token, interest),
            Self::Udp(s) => s.reregister(r, token, interest),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.deregister(r),
            Self::Udp(s) => s.deregister(r),
        }
    }
}

/// A blocking client of one datagram endpoint. See the [module docs](self).
pub(super) struct DatagramClient {
    endpoint: Endpoint,
    socket: Socket,
    /// On `unix-dgram:`, the private directory holding this client's socket file; removed
    /// (with the file) when the client is dropped, after the socket.
    _dir: Option<tempfile::TempDir>,
    poll: Poll,
    events: Events,
    core: CoreClient<Box<[u8]>, Box<[DatagramCallSlot]>>,
    clock: Clock,
    buf: Box<[u8]>,
    /// Call slots of the core.
    slots: usize,
    /// Calls submitted and not yet collected.
    waiting: HashSet<RequestId>,
    /// Outcomes not yet collected, in the order they came.
    done: VecDeque<(RequestId, Outcome)>,
}

impl std::fmt::Debug for DatagramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("epoch", &format_args!("{:016x}", self.core.epoch()))
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl DatagramClient {
    /// Binds a socket of its own and connects it to the server's address.
    pub(super) fn connect(endpoint: &Endpoint, config: &ClientConfig) -> Result<Self, Error> {
        let dconfig = datagram_config(&config.datagram, config.unix_max_datagram, endpoint);
        let slots = table_len(&config.connection);
        let storage = datagram_storage(dconfig.max_datagram, slots)?;
        let [epoch, seed] = random_words()?;
        let core = CoreClient::new(
            dconfig,
            epoch,
            seed,
            vec![0u8; storage].into_boxed_slice(),
            vec![DatagramCallSlot::EMPTY; slots].into_boxed_slice(),
        )?;
        let (mut socket, dir) = open(endpoint)?;
        let poll = Poll::new().map_err(Error::io("creating a poller"))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(Error::io("registering the socket"))?;
        log::debug!("{endpoint}: datagram client, epoch {epoch:016x}");
        Ok(Self {
            endpoint: endpoint.clone(),
            socket,
            _dir: dir,
            poll,
            events: Events::with_capacity(4),
            core,
            clock: Clock::default(),
            buf: vec![0u8; dconfig.max_datagram.max(MIN_RECEIVE).saturating_add(1)]
                .into_boxed_slice(),
            slots,
            waiting: HashSet::new(),
            done: VecDeque::new(),
        })
    }

    /// Starts a call and sends its first copy. Blocks only while every call slot is taken
    /// (until a call ends).
    pub(super) fn submit(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, CallError> {
        self.pump();
        loop {
            let now = self.clock.now();
            match self.core.call(now, method, body, timeout.map(to_core)) {
                Ok(id) => {
                    self.waiting.insert(id);
                    self.pump();
                    return Ok(id);
                }
                Err(CoreCallError::TooManyInFlight) => self.turn(),
                Err(e) => return Err(CallError::not_sent(e)),
            }
        }
    }

    /// Waits for the outcome of call `id`; others that end meanwhile are kept.
    pub(super) fn wait(&mut self, id: RequestId) -> Result<Vec<u8>, CallError> {
        if !self.waiting.contains(&id) {
            return Err(CallError::unknown(id));
        }
        loop {
            if let Some(pos) = self.done.iter().position(|(d, _)| *d == id) {
                self.waiting.remove(&id);
                return match self.done.remove(pos) {
                    Some((_, outcome)) => outcome,
                    None => Err(CallError::unknown(id)),
                };
            }
            self.turn();
        }
    }

    /// Waits for the next call to end; `None` when no call is waiting.
    pub(super) fn wait_any(&mut self) -> Option<(RequestId, Outcome)> {
        loop {
            if let Some((id, outcome)) = self.done.pop_front() {
                self.waiting.remove(&id);
                return Some((id, outcome));
            }
            if self.waiting.is_empty() {
                return None;
            }
            self.turn();
        }
    }

    /// Does whatever I/O is due without blocking.
    pub(super) fn service(&mut self) {
        self.pump();
    }

    /// Calls submitted and not yet collected.
    pub(super) fn pending(&self) -> usize {
        self.waiting.len()
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

    /// Moves datagrams and events; waits for the socket or the core's next timer only
    /// when nothing could be done.
    fn turn(&mut self) {
        if !self.pump() {
            self.block();
            self.pump();
        }
    }

    /// One round of reading, timers, events and sending; `true` if anything happened.
    /// Answers that already wait are read first, so a client that was busy elsewhere does
    /// not retransmit calls that are already answered.
    fn pump(&mut self) -> bool {
        let mut progress = self.read_in();
        self.core.handle_timeout(self.clock.now());
        progress |= self.take_events();
        progress |= self.send_out();
        progress
    }

    fn block(&mut self) {
        let now = self.clock.now();
        let timeout = self
            .core
            .poll_timeout()
            .map_or(MAX_WAIT, |at| to_std(at.saturating_duration_since(now)))
            .min(MAX_WAIT);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                // Nothing to wait on: calls still end at their deadlines, checked each turn.
                log::error!("{}: cannot wait for the socket: {e}", self.endpoint);
                std::thread::sleep(timeout.min(Duration::from_millis(10)));
            }
        }
    }

    /// Sends every datagram the core has due.
    fn send_out(&mut self) -> bool {
        let mut progress = false;
        let now = self.clock.now();
        while let Some(datagram) = self.core.poll_transmit(now) {
            progress = true;
            loop {
                match self.socket.send(datagram) {
                    Ok(_) => break,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => {
                        // Lost like any datagram: the core retransmits it if it is a request.
                        log::debug!("{}: a datagram was not sent: {e}", self.endpoint);
                        break;
                    }
                }
            }
        }
        progress
    }

    /// Reads datagrams from the server and hands them to the core.
    fn read_in(&mut self) -> bool {
        let mut progress = false;
        for _ in 0..READS_PER_TURN {
            let len = match self.socket.recv(&mut self.buf) {
                Ok(len) => len,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    // E.g. connection refused: nobody listens there (yet). Calls keep
                    // retransmitting until their deadlines.
                    log::debug!("{}: receive: {e}", self.endpoint);
                    progress = true;
                    continue;
                }
            };
            progress = true;
            let datagram = self.buf.get(..len).unwrap_or_default();
            match self.core.handle_datagram(self.clock.now(), datagram) {
                Some(DatagramEvent::Response { id, body }) => {
                    self.done.push_back((id, Ok(body.to_vec())));
                }
                Some(DatagramEvent::Failed { id, failure }) => {
                    self.done.push_back((id, Err(CallError::from(&failure))));
                }
                _ => {}
            }
        }
        progress
    }

    /// Takes the calls the core ended without an answer (timeouts).
    fn take_events(&mut self) -> bool {
        let mut progress = false;
        while let Some(event) = self.core.poll_event() {
            progress = true;
            match event {
                DatagramEvent::Failed { id, failure } => {
                    self.done.push_back((id, Err(CallError::from(&failure))));
                }
                DatagramEvent::Response { id, body } => {
                    self.done.push_back((id, Ok(body.to_vec())));
                }
                _ => {}
            }
        }
        progress
    }
}

/// Two random 64-bit words from the OS: the client's epoch and its jitter seed.
fn random_words() -> Result<[u64; 2], Error> {
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
/// address family that connects.
fn open(endpoint: &Endpoint) -> Result<(Socket, Option<tempfile::TempDir>), Error> {
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
            socket.connect(path).map_err(connect_error)?;
            std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o666))
                .map_err(connect_error)?;
            socket.set_nonblocking(true).map_err(connect_error)?;
            Ok((Socket::Unix(UnixDatagram::from_std(socket)), Some(dir)))
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
                    s.set_nonblocking(true)?;
                    Ok(s)
                });
                match socket {
                    Ok(socket) => return Ok((Socket::Udp(UdpSocket::from_std(socket)), None)),
                    Err(e) => last = Some(e),
                }
            }
            Err(connect_error(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
            })))
        }
        Endpoint::Unix(_) | Endpoint::Tcp(..) => Err(connect_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a stream endpoint is not a datagram one",
        ))),
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
            .submit("echo", b"hi", Some(Duration::from_secs(1)))
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
