//! [`Error`]: everything that can go wrong in the adapter outside a single call's outcome
//! (which is a [`CallError`]).

use std::io;

use wirecall_core::client::CloseReason;
use wirecall_core::config::ConfigError;
use wirecall_core::datagram::DatagramConfigError;
use wirecall_core::wire::CloseCode;

use crate::client::CallError;
use crate::endpoint::{Endpoint, ParseEndpointError};

/// An error of the `wirecall` library. Every message is one line that names what was being
/// done and to which endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Text that is not an endpoint.
    #[error(transparent)]
    Endpoint(#[from] ParseEndpointError),
    /// A host name did not resolve.
    #[error("cannot resolve {endpoint}: {source}")]
    Resolve {
        /// The endpoint whose host was looked up.
        endpoint: Endpoint,
        /// What the resolver said.
        source: io::Error,
    },
    /// Binding or listening failed.
    #[error("cannot listen on {endpoint}: {source}")]
    Listen {
        /// The endpoint.
        endpoint: Endpoint,
        /// What the OS said.
        source: io::Error,
    },
    /// A live server already listens on this Unix socket path (a connection to it succeeded),
    /// so it was left alone.
    #[error("cannot listen on {0}: address in use (a live server is listening there)")]
    AddressInUse(Endpoint),
    /// The Unix socket path exists and is not a socket, so it was left alone.
    #[error("cannot listen on {0}: the path exists and is not a socket")]
    NotASocket(Endpoint),
    /// A `tls:` endpoint to listen on without TLS settings (a certificate and key).
    #[error(
        "cannot listen on {0}: a tls: endpoint needs a certificate and key (listen_tls; --cert and --key)"
    )]
    TlsNotConfigured(Endpoint),
    /// PROXY protocol headers asked for on a datagram endpoint: only connections carry
    /// them.
    #[error(
        "cannot accept PROXY headers on {0}: only stream endpoints (unix:, tcp:, tls:) carry them"
    )]
    ProxyOnDatagram(Endpoint),
    /// TLS settings that cannot be used (a PEM file that cannot be read, a key that does
    /// not fit its certificate, ...).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The TLS handshake with a server failed (its certificate does not verify, it is not
    /// a TLS server, it refused our certificate): nothing was sent, so nothing ran.
    #[error("TLS with {endpoint} failed: {failure}")]
    TlsHandshake {
        /// The endpoint.
        endpoint: Endpoint,
        /// What went wrong.
        failure: crate::tls::TlsFailure,
    },
    /// Connecting to a server failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: Endpoint,
        /// What the OS said.
        source: io::Error,
    },
    /// The core refused the configuration (a limit below the protocol's baseline).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The core refused the datagram configuration (no cache entries or call slots, a
    /// `max_datagram` too small for the protocol, no attempts).
    #[error("invalid datagram configuration: {0}")]
    DatagramConfig(#[from] DatagramConfigError),
    /// A limit below what the server can work with (it would refuse every call).
    #[error("invalid configuration: {what} of {got} is below the minimum of {min}")]
    LimitTooSmall {
        /// Which limit.
        what: &'static str,
        /// The configured value.
        got: u64,
        /// The smallest value allowed.
        min: u64,
    },
    /// A limit above what this adapter allocates for one connection.
    #[error("invalid configuration: {what} of {got} is above the maximum of {max}")]
    LimitTooLarge {
        /// Which limit.
        what: &'static str,
        /// The configured value.
        got: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A function name that is empty, too long, or holds whitespace or control characters.
    #[error("invalid function name {0:?}: use 1 to 255 bytes without spaces or control characters")]
    InvalidFunctionName(String),
    /// Two functions registered under one name.
    #[error("function {0:?} is registered twice")]
    DuplicateFunction(String),
    /// A call failed; see [`CallError::execution`] for whether it may have run.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The server's hello did not come ([`Client::handshake`](crate::Client::handshake)):
    /// nothing was sent, so nothing ran.
    #[error("{}", handshake_message(endpoint, failure))]
    Handshake {
        /// The endpoint.
        endpoint: Endpoint,
        /// What happened instead.
        failure: HandshakeFailure,
    },
    /// A server stopped at once (a second signal, `shutdown_now`, or the shutdown
    /// deadline) while calls it had taken were still unanswered: their clients learn that
    /// their connection was lost (maybe executed) or their datagram calls time out.
    #[error(
        "stopped with {calls} call(s) taken and not answered ({connections} connection(s) closed at once)"
    )]
    Abandoned {
        /// Calls taken and not answered.
        calls: usize,
        /// Connections still open, closed without waiting.
        connections: usize,
    },
    /// One of the server's event loops panicked (a bug: a function's panic is caught and
    /// answered as an error); the other loops were stopped at once.
    #[error("an event loop panicked: {0}")]
    EventLoopPanicked(String),
    /// Any other I/O failure (the event loop's poll, a thread that could not start, ...).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// What the OS said.
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with what was being done.
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// Why the server's hello did not come ([`Error::Handshake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The connection ended first: the peer is not a wirecall server
    /// ([`CloseReason::NotWirecall`]), has no protocol version in common, refused the
    /// connection, or closed it.
    Closed(CloseReason),
    /// No hello came within this long: a silent peer, or a server too slow to answer.
    NoHello(std::time::Duration),
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(CloseReason::NotWirecall) => {
                f.write_str("what the peer sent first is not a wirecall hello")
            }
            Self::Closed(reason) => write!(f, "the connection ended first: {reason}"),
            Self::NoHello(waited) => write!(f, "no hello within {} ms", waited.as_millis()),
        }
    }
}

impl std::error::Error for HandshakeFailure {}

/// [`Error::Handshake`]'s one line: what happened, with the endpoint, in the words a user
/// of `wirecall call` needs (is it a wirecall server at all?).
fn handshake_message(endpoint: &Endpoint, failure: &HandshakeFailure) -> String {
    match failure {
        HandshakeFailure::Closed(CloseReason::NotWirecall) => format!(
            "{endpoint} is not a wirecall server: what it sent first is not a wirecall hello"
        ),
        // Refused before anything ran: its words say so (at the connection limit, or
        // shutting down).
        HandshakeFailure::Closed(
            reason @ CloseReason::PeerClosed(CloseCode::REFUSED | CloseCode::NOT_ALLOWED),
        ) => reason.to_string(),
        HandshakeFailure::Closed(CloseReason::TransportClosed) => {
            format!("{endpoint} closed the connection before its hello: is it a wirecall server?")
        }
        HandshakeFailure::Closed(reason) => {
            format!("the handshake with {endpoint} failed: {reason}")
        }
        HandshakeFailure::NoHello(waited) => format!(
            "no hello from {endpoint} within {} ms: is it a wirecall server?",
            waited.as_millis()
        ),
    }
}
