//! The frame types. Field order here *is* the wire order: do not reorder.

use core::fmt;
use serde::{Deserialize, Serialize};

use super::{CloseCode, RejectCode};

/// Identifies one call on one connection. A client numbers its requests 1, 2, 3, ... and a
/// server refuses an id that does not increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The first frame each side sends on a stream: who we are and what we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// Always [`MAGIC`](super::MAGIC).
    pub magic: [u8; 4],
    /// The lowest protocol version the sender speaks.
    pub min_version: u8,
    /// The highest protocol version the sender speaks.
    pub max_version: u8,
    /// The longest frame body the sender accepts, at least
    /// [`BASELINE_MAX_FRAME_LEN`](super::BASELINE_MAX_FRAME_LEN).
    pub max_frame_len: u32,
    /// Requests the sender accepts in flight at once (a server's table size; `0` from a
    /// client, which accepts no requests).
    pub max_in_flight: u32,
}

/// A call: run `method` on `body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// The call's id, greater than every id before it on this connection.
    pub id: RequestId,
    /// The function to run.
    pub method: &'a str,
    /// The time the client will wait, in milliseconds from when it sent the request; the
    /// server skips the call once this has passed since it arrived. `None`: no deadline.
    pub budget_ms: Option<u32>,
    /// The function's argument, opaque to wirecall.
    #[serde(with = "bytes")]
    pub body: &'a [u8],
}

/// How a call ended, in a [`Response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reply<'a> {
    /// The function ran and returned this body.
    Ok(#[serde(with = "bytes")] &'a [u8]),
    /// The function ran and failed; `code` is the application's.
    Error {
        /// Application-defined error number.
        code: u32,
        /// A short human-readable explanation.
        message: &'a str,
    },
    /// The server refused the call before running its function.
    Rejected {
        /// Why: one of [`RejectCode`]'s constants, or an application code (>= 256).
        code: RejectCode,
        /// A short human-readable explanation.
        message: &'a str,
    },
    /// The server is overloaded and did not run the function; try again after the hint.
    Busy {
        /// How long the client should wait before retrying, in milliseconds.
        retry_after_ms: u32,
    },
}

/// The answer to the request with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Response<'a> {
    /// The id of the request this answers.
    pub id: RequestId,
    /// The outcome.
    #[serde(borrow)]
    pub reply: Reply<'a>,
}

/// One protocol message. The variant order fixes the tags `0..=7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Frame<'a> {
    /// Tag 0: the first frame in each direction of a stream.
    Hello(Hello),
    /// Tag 1: client to server, a call.
    #[serde(borrow)]
    Request(Request<'a>),
    /// Tag 2: server to client, the answer to a call.
    #[serde(borrow)]
    Response(Response<'a>),
    /// Tag 3: client to server, the client no longer wants the answer to `id`.
    Cancel {
        /// The request to cancel.
        id: RequestId,
    },
    /// Tag 4: either way, asks for a [`Frame::Pong`] with the same nonce.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Tag 5: the answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Tag 6: graceful close. From a server: requests up to and including `last_id` will
    /// be answered, later ones were not and will not be run. From a client: it sends no
    /// more requests; `last_id` is its last.
    GoAway {
        /// From a server: the highest request id it has received (answered, or refused
        /// with a reply). From a client: the highest id it has sent.
        last_id: RequestId,
    },
    /// Tag 7: the sender is closing the connection at once, for this reason.
    Close {
        /// Why.
        code: CloseCode,
        /// A short human-readable explanation.
        message: &'a str,
    },
}

/// Serde helper: a byte slice as postcard "bytes" (varint length + raw bytes) in one call,
/// rather than as a sequence of `u8` elements. Both give the same bytes on the wire.
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de: 'a, 'a, D: Deserializer<'de>>(
        d: D,
    ) -> Result<&'a [u8], D::Error> {
        <&'a [u8]>::deserialize(d)
    }
}
