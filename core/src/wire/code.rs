//! Numbered codes carried in [`Reply::Rejected`](super::Reply::Rejected),
//! [`Reply::Error`](super::Reply::Error) and [`Frame::Close`](super::Frame::Close) frames.
//!
//! Codes are plain `u16` newtypes rather than closed enums, so a code this version does not
//! know is still data: it is shown by number and never makes a frame undecodable.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Why a server refused a request *before running its function*.
///
/// A client that receives a rejection knows the call was not executed, and may retry it
/// elsewhere or later without risk of running it twice. Codes below 256 are reserved for
/// wirecall; applications use 256 and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct RejectCode(pub u16);

impl RejectCode {
    /// The server has no function of that name.
    pub const UNKNOWN_METHOD: Self = Self(1);
    /// The request's deadline had passed before the function could start.
    pub const DEADLINE_EXCEEDED: Self = Self(2);
    /// The server is shutting down and takes no new requests.
    pub const SHUTTING_DOWN: Self = Self(3);
    /// The request's arguments were refused before the function ran.
    pub const INVALID_REQUEST: Self = Self(4);
    /// The request is larger than the function accepts; it was not run. (An *answer* too
    /// large for the client is found only after the function ran: the core sends
    /// [`ERROR_ANSWER_TOO_LARGE`] for that, since the call was executed.)
    pub const TOO_LARGE: Self = Self(5);
    /// The server serves the endpoint's path, but with other request, response or error
    /// types than the caller's (the schema half of the
    /// [`EndpointKey`](super::EndpointKey) differs): decoding either way would be wrong, so
    /// nothing ran.
    pub const SCHEMA_MISMATCH: Self = Self(6);

    /// A short name for a known code, `None` for others.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::UNKNOWN_METHOD => "unknown method",
            Self::DEADLINE_EXCEEDED => "deadline exceeded",
            Self::SHUTTING_DOWN => "shutting down",
            Self::INVALID_REQUEST => "invalid request",
            Self::TOO_LARGE => "too large",
            Self::SCHEMA_MISMATCH => "schema mismatch",
            _ => return None,
        })
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "code {}", self.0),
        }
    }
}

/// The error numbers of [`Reply::Error`](super::Reply::Error) that wirecall itself uses:
/// the top 256 values of `u32`. Applications use the others, so a client can always tell a
/// wirecall error from its application's. Every one of them means the function *ran*.
pub const RESERVED_ERROR_CODES: core::ops::RangeInclusive<u32> = 0xFFFF_FF00..=u32::MAX;

/// The function ran, but its answer is larger than the client accepts (its announced
/// `max_frame_len` on a stream, one datagram in datagram mode). The core sends this in
/// place of such an answer.
pub const ERROR_ANSWER_TOO_LARGE: u32 = 0xFFFF_FF00;

/// The function panicked (sent by the `wirecall` library, which catches the panic).
pub const ERROR_FUNCTION_PANICKED: u32 = 0xFFFF_FF01;

/// The function gave up its way to answer without answering (sent by the `wirecall`
/// library when a deferred function drops its responder).
pub const ERROR_NO_ANSWER: u32 = 0xFFFF_FF02;

/// A typed endpoint's function answered with a value that its type's serializer refused
/// (sent by the `wirecall` library): the function ran, its answer is lost.
pub const ERROR_ANSWER_NOT_ENCODABLE: u32 = 0xFFFF_FF03;

/// A short name for a reserved error number, `None` for others (application errors, and
/// reserved numbers this version does not know).
#[must_use]
pub const fn reserved_error_name(code: u32) -> Option<&'static str> {
    Some(match code {
        ERROR_ANSWER_TOO_LARGE => "answer too large",
        ERROR_FUNCTION_PANICKED => "function panicked",
        ERROR_NO_ANSWER => "no answer",
        ERROR_ANSWER_NOT_ENCODABLE => "answer not encodable",
        _ => return None,
    })
}

/// Why a peer is closing the connection at once, sent in a [`Close`](super::Frame::Close)
/// frame just before it closes the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The peer broke a rule of the protocol (a malformed frame, a frame out of place, a
    /// request id that did not increase, ...).
    pub const PROTOCOL_VIOLATION: Self = Self(1);
    /// The two version ranges in the hellos do not overlap.
    pub const UNSUPPORTED_VERSION: Self = Self(2);
    /// A frame was longer than the limit its receiver announced.
    pub const FRAME_TOO_LARGE: Self = Self(3);
    /// The first frame was not a wirecall hello.
    pub const NOT_WIRECALL: Self = Self(4);
    /// No hello arrived in time.
    pub const HANDSHAKE_TIMEOUT: Self = Self(5);
    /// Nothing arrived for too long, not even a pong.
    pub const KEEPALIVE_TIMEOUT: Self = Self(6);
    /// A graceful close could not finish in time.
    pub const DRAIN_TIMEOUT: Self = Self(7);
    /// The server takes no connection now (it is at its connection limit, or shutting
    /// down) and ran nothing sent on this one: every request on it is *not executed*.
    pub const REFUSED: Self = Self(8);
    /// A frame that had begun to arrive did not complete in time.
    pub const FRAME_TIMEOUT: Self = Self(9);
    /// The server does not take connections from this peer (its Unix credentials or its
    /// TLS identity are not on the server's allowlist) and ran nothing sent on this one:
    /// every request on it is *not executed*. Retrying as the same peer does not help.
    pub const NOT_ALLOWED: Self = Self(10);

    /// A short name for a known code, `None` for others.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::PROTOCOL_VIOLATION => "protocol violation",
            Self::UNSUPPORTED_VERSION => "unsupported version",
            Self::FRAME_TOO_LARGE => "frame too large",
            Self::NOT_WIRECALL => "not wirecall",
            Self::HANDSHAKE_TIMEOUT => "handshake timeout",
            Self::KEEPALIVE_TIMEOUT => "keepalive timeout",
            Self::DRAIN_TIMEOUT => "drain timeout",
            Self::REFUSED => "connection refused",
            Self::FRAME_TIMEOUT => "frame timeout",
            Self::NOT_ALLOWED => "not allowed",
            _ => return None,
        })
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "code {}", self.0),
        }
    }
}
