//! [`Error`]: why a connection's driver stopped, as opposed to how the connection closed
//! (a [`CloseReason`], which the core decides and the driver returns).

use core::fmt;

use wirecall_core::client::{CloseReason, SendError};
use wirecall_core::config::ConfigError;
use wirecall_core::server::RespondError;

/// Why the driver of a connection gave up. `E` is the transport's error type
/// (`embedded_io_async::ErrorType::Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error<E> {
    /// The transport failed a read or a write; the connection was aborted.
    Io(E),
    /// The transport took none of a non-empty write: it cannot send any more.
    WriteZero,
    /// The storage or configuration was refused by the core (a buffer under 1028 bytes,
    /// too few slots, a frame limit under the baseline).
    Config(ConfigError),
    /// The core refused an answer it should always take: a sign of storage too small for
    /// the answers given (the transmit buffer was empty when the answer was offered).
    Respond(RespondError),
    /// The connection waits for nothing: its receive buffer is full of frames it does not
    /// take, nothing is to be sent and no timer is set. Cannot happen with the core's
    /// contract; reported instead of waiting for ever.
    Stalled,
    /// The core would not send a call ([`SendError`]: closed, closing, too large).
    Send(SendError),
    /// The connection has already closed, for this reason.
    Closed(CloseReason),
}

impl<E> From<ConfigError> for Error<E> {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "transport error: {e:?}"),
            Self::WriteZero => f.write_str("transport wrote nothing"),
            Self::Config(e) => write!(f, "bad storage or configuration: {e}"),
            Self::Respond(e) => write!(f, "answer refused: {e}"),
            Self::Stalled => f.write_str("connection stalled"),
            Self::Send(e) => write!(f, "call not sent: {e}"),
            Self::Closed(reason) => write!(f, "connection closed: {reason}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}
