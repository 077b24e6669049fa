//! [`Error`]: everything that can go wrong in the adapter outside a single call's outcome
//! (which is a [`CallError`]).

use std::io;

use wirecall_core::config::ConfigError;
use wirecall_core::datagram::DatagramConfigError;

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
