//! [`CallError`]: how a call failed, and whether the server may have run it.

use std::fmt;
use std::time::Duration;

use wirecall_core::RequestId;
use wirecall_core::client::{CloseReason, Execution, Failure, SendError};
use wirecall_core::wire::{CloseCode, RejectCode, reserved_error_name};

use crate::clock::to_std;

/// How a call failed. [`execution`](Self::execution) says whether the server may have run
/// the function, which decides whether a retry is safe.
#[derive(Debug)]
pub struct CallError {
    kind: CallErrorKind,
    execution: Execution,
}

/// What happened to a failed call.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallErrorKind {
    /// The function ran and returned an error.
    Remote {
        /// The application's error number.
        code: u32,
        /// Its explanation.
        message: String,
    },
    /// The server refused the call before running it (unknown method, bad arguments, ...).
    Rejected {
        /// Why.
        code: RejectCode,
        /// Its explanation.
        message: String,
    },
    /// The server was too busy to take the call.
    Busy {
        /// Wait this long before retrying.
        retry_after: Duration,
    },
    /// No answer came before the timeout.
    TimedOut,
    /// The call was cancelled.
    Cancelled,
    /// The server is closing and did not take the call.
    Refused,
    /// Datagrams only: nothing listens at the server's address (the kernel refused every
    /// copy of the request); not executed.
    Unreachable,
    /// The connection ended before the answer came.
    ConnectionLost(CloseReason),
    /// The call could not be sent (too large, connection closed or closing).
    NotSent(SendError),
    /// No call with this id is waiting on this client.
    UnknownCall(RequestId),
    /// A failure this adapter does not know by name (its text from the core).
    Other(String),
}

impl CallError {
    /// Whether the server may have run the function.
    #[must_use]
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// What happened.
    #[must_use]
    pub fn kind(&self) -> &CallErrorKind {
        &self.kind
    }

    /// The rejection's code, when the server refused the call before running it.
    #[must_use]
    pub fn rejection(&self) -> Option<RejectCode> {
        match self.kind {
            CallErrorKind::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A call that was never sent (so it was not executed): what a driver reports when the
    /// core's `call` refuses it.
    #[must_use]
    pub fn not_sent(e: SendError) -> Self {
        Self {
            kind: CallErrorKind::NotSent(e),
            execution: Execution::NotExecuted,
        }
    }

    /// No call `id` is waiting on this client.
    #[must_use]
    pub fn unknown(id: RequestId) -> Self {
        Self {
            kind: CallErrorKind::UnknownCall(id),
            execution: Execution::NotExecuted,
        }
    }

    /// A call whose deadline passed before it could be sent at all.
    pub(crate) fn timed_out_unsent() -> Self {
        Self {
            kind: CallErrorKind::TimedOut,
            execution: Execution::NotExecuted,
        }
    }
}

impl From<&Failure<'_>> for CallError {
    fn from(failure: &Failure<'_>) -> Self {
        let kind = match failure {
            Failure::Remote { code, message } => CallErrorKind::Remote {
                code: *code,
                message: (*message).to_owned(),
            },
            Failure::Rejected { code, message } => CallErrorKind::Rejected {
                code: *code,
                message: (*message).to_owned(),
            },
            Failure::Busy { retry_after } => CallErrorKind::Busy {
                retry_after: to_std(*retry_after),
            },
            Failure::TimedOut { .. } => CallErrorKind::TimedOut,
            Failure::Cancelled { .. } => CallErrorKind::Cancelled,
            Failure::Refused { .. } => CallErrorKind::Refused,
            Failure::Unreachable => CallErrorKind::Unreachable,
            Failure::ConnectionLost { reason, .. } => CallErrorKind::ConnectionLost(*reason),
            other => CallErrorKind::Other(other.to_string()),
        };
        // Whether it ran is the core's judgement, not re-derived here.
        Self {
            kind,
            execution: failure.execution(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // wirecall's own error numbers by name (they are not the application's).
            Self::Remote { code, message } => match reserved_error_name(*code) {
                Some(name) => write!(f, "remote error: {name} ({code:#x}): {message}"),
                None => write!(f, "remote error {code}: {message}"),
            },
            Self::Rejected { code, message } => write!(f, "rejected, {code}: {message}"),
            Self::Busy { retry_after } => write!(f, "server busy, retry after {retry_after:?}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Refused => f.write_str("refused: the server is closing"),
            Self::Unreachable => {
                f.write_str("connection refused: nothing listens at the server's address")
            }
            // Refused before anything ran: not a lost connection, and its words say so.
            Self::ConnectionLost(
                reason @ CloseReason::PeerClosed(CloseCode::REFUSED | CloseCode::NOT_ALLOWED),
            ) => {
                write!(f, "{reason}")
            }
            Self::ConnectionLost(reason) => write!(f, "connection lost: {reason}"),
            Self::NotSent(e) => write!(f, "not sent: {e}"),
            Self::UnknownCall(id) => write!(f, "no call {id} is waiting"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for CallError {}
