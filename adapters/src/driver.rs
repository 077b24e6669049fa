//! Building blocks for the drivers of other runtimes (the tokio driver, `wirecall-tokio`)
//! over this crate's endpoints, configuration, functions and counters, so that every
//! wirecall server binds, names and counts the same way, and only moving bytes differs.
//!
//! None of this decides anything about the protocol (that is `wirecall-core`'s job): it
//! binds sockets with the Unix socket-file hygiene of the mio server, opens a datagram
//! client's own socket, draws a client's epoch, and checks the configuration's sizes.
//! The function table ([`Registry`](crate::function::Registry)), the [`Responder`]s and
//! their [`Completions`](crate::function::Completions), and the counters
//! ([`Stats`](crate::stats::Stats)) are in their own modules.
//!
//! Every socket returned here is a std socket; listeners and server sockets are in
//! non-blocking mode, ready for a runtime's `from_std`.
//!
//! [`Responder`]: crate::function::Responder

use std::os::fd::OwnedFd;

pub use crate::config::{UDP_RECEIVE_BUFFER, check_datagram, check_limits, datagram_config};
pub use crate::server::listener::SocketFile;

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::server::listener::{Listener, bind_udp, bind_unix_datagram};

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
    let (listener, actual) = Listener::bind(endpoint, unix_mode)?;
    let listener = match listener {
        Listener::Unix { listener, file } => StreamListener::Unix {
            listener: OwnedFd::from(listener).into(),
            file,
        },
        Listener::Tcp(listener) => StreamListener::Tcp(OwnedFd::from(listener).into()),
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

/// Two random words from the OS for a datagram client: its epoch and its jitter seed.
///
/// # Errors
///
/// [`Error::Io`] when `/dev/urandom` cannot be read.
pub fn random_words() -> Result<[u64; 2], Error> {
    crate::client::datagram::random_words()
}
