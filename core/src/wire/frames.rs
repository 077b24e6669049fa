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

/// A call of a typed endpoint (protocol version 2): run the endpoint named by `key` on
/// `body`. Sent only on a stream whose handshake agreed on version 2 or later, or in a
/// datagram whose header says version 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TypedRequest<'a> {
    /// The call's id, greater than every id before it on this connection.
    pub id: RequestId,
    /// Which endpoint, and the schema the caller's types have.
    pub key: EndpointKey,
    /// As in [`Request::budget_ms`].
    pub budget_ms: Option<u32>,
    /// The postcard encoding of the endpoint's request type.
    #[serde(with = "bytes")]
    pub body: &'a [u8],
}

/// A typed endpoint's identity on the wire: a hash of its path alone, by which a server
/// finds the endpoint, and a hash of the path with the request, response and error
/// schemas, by which it checks that the caller's types are its own. 16 fixed bytes on the
/// wire: each hash as 8 big-endian bytes.
///
/// Both hashes are 64 bits: resistant to mistakes, not to an attacker (the server still
/// decodes every request with serde, which never panics on bad input). `wirecall_core::typed`
/// computes keys from Rust types at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EndpointKey {
    /// FNV-1a 64 of the path's bytes.
    pub path: u64,
    /// `postcard_schema`'s key of the path and the tuple `(&Request, &Response, &Error)`,
    /// as a big-endian number.
    pub schema: u64,
}

impl Serialize for EndpointKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.path.to_be_bytes(), self.schema.to_be_bytes()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for EndpointKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (path, schema) = <([u8; 8], [u8; 8])>::deserialize(d)?;
        Ok(Self {
            path: u64::from_be_bytes(path),
            schema: u64::from_be_bytes(schema),
        })
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{:016x}", self.path, self.schema)
    }
}

/// What a call names: a function by its method name (any version), or a typed endpoint by
/// its key (version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Target<'a> {
    /// An untyped function, by name ([`Frame::Request`]).
    Method(&'a str),
    /// A typed endpoint, by key ([`Frame::TypedRequest`]).
    Endpoint(EndpointKey),
}

impl<'a> Target<'a> {
    /// The method name, for an untyped call.
    #[must_use]
    pub const fn method(&self) -> Option<&'a str> {
        match *self {
            Self::Method(method) => Some(method),
            Self::Endpoint(_) => None,
        }
    }

    /// The endpoint's key, for a typed call.
    #[must_use]
    pub const fn endpoint(&self) -> Option<EndpointKey> {
        match *self {
            Self::Method(_) => None,
            Self::Endpoint(key) => Some(key),
        }
    }
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(method: &'a str) -> Self {
        Self::Method(method)
    }
}

/// So a `&String` names a method as a `&str` does (with the `alloc` feature).
#[cfg(feature = "alloc")]
impl<'a> From<&'a alloc::string::String> for Target<'a> {
    fn from(method: &'a alloc::string::String) -> Self {
        Self::Method(method)
    }
}

impl From<EndpointKey> for Target<'_> {
    fn from(key: EndpointKey) -> Self {
        Self::Endpoint(key)
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Method(method) => f.write_str(method),
            Self::Endpoint(key) => write!(f, "endpoint {key}"),
        }
    }
}

/// A request frame's parts, whichever kind it is ([`Frame::as_call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Call<'a> {
    /// The call's id.
    pub id: RequestId,
    /// What it calls.
    pub target: Target<'a>,
    /// Its budget in milliseconds, if any.
    pub budget_ms: Option<u32>,
    /// Its argument.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The request frame for a call of `target`: [`Frame::Request`] for a method,
    /// [`Frame::TypedRequest`] for an endpoint.
    #[must_use]
    pub const fn request(
        id: RequestId,
        target: Target<'a>,
        budget_ms: Option<u32>,
        body: &'a [u8],
    ) -> Self {
        match target {
            Target::Method(method) => Self::Request(Request {
                id,
                method,
                budget_ms,
                body,
            }),
            Target::Endpoint(key) => Self::TypedRequest(TypedRequest {
                id,
                key,
                budget_ms,
                body,
            }),
        }
    }

    /// The parts of a request frame, either kind. `None` for other frames.
    #[must_use]
    pub const fn as_call(&self) -> Option<Call<'a>> {
        match *self {
            Self::Request(r) => Some(Call {
                id: r.id,
                target: Target::Method(r.method),
                budget_ms: r.budget_ms,
                body: r.body,
            }),
            Self::TypedRequest(r) => Some(Call {
                id: r.id,
                target: Target::Endpoint(r.key),
                budget_ms: r.budget_ms,
                body: r.body,
            }),
            _ => None,
        }
    }

    /// The lowest protocol version that defines this frame: 2 for a
    /// [`TypedRequest`](Frame::TypedRequest), 1 for the others.
    #[must_use]
    pub const fn version(&self) -> u8 {
        match self {
            Self::TypedRequest(_) => super::TYPED_VERSION,
            _ => super::MIN_PROTOCOL_VERSION,
        }
    }
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

/// One protocol message. The variant order fixes the tags `0..=8`.
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
    /// Tag 8 (version 2): client to server, a call of a typed endpoint.
    #[serde(borrow)]
    TypedRequest(TypedRequest<'a>),
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
