//! Typed endpoints: a call declared once as Rust types, in a crate both sides share.
//!
//! An [`Endpoint`] is a marker type that names a path (`"kv/get"`), the request, response
//! and error types (serde, postcard-encoded), and an [`EndpointKey`] computed at compile
//! time from the path and the three types' schemas ([`postcard_schema`]). The key is what
//! lets a server tell a caller whose types differ from its own (a schema mismatch) from a
//! caller of a path it does not serve. The [`endpoints!`](crate::endpoints) macro declares
//! many endpoints at once, in an *interface crate* that builds `no_std` like this one.
//!
//! The types are generic over a lifetime, so borrowed fields (`&str`, `&[u8]`) decode in
//! place from the received bytes, without copying: [`decode_request`] and
//! [`decode_answer`] return values that borrow the buffer they were given. Owned types
//! simply ignore the lifetime.
//!
//! An answer carries the function's outcome as postcard's encoding of
//! `Result<Response, Error>`: an application error is a typed value the caller decodes,
//! not a number and a string. (The protocol's own failures, an unknown path or a panic,
//! stay protocol errors.)
//!
//! Everything here works over caller buffers and never allocates, so an embedded client or
//! server needs nothing else.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use wirecall_core::typed::{self, Endpoint, Schema};
//!
//! #[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
//! pub struct Add {
//!     pub a: i32,
//!     pub b: i32,
//! }
//!
//! #[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
//! pub enum CalcError {
//!     Overflow,
//! }
//!
//! wirecall_core::endpoints! {
//!     /// Adds two numbers.
//!     pub AddEndpoint = "calc/add": Add => i32, CalcError;
//!     /// Says hello, borrowing the name from the request and the answer from the caller.
//!     pub Hello = "calc/hello": &'a str => &'a str, CalcError;
//! }
//!
//! let mut buf = [0u8; 64];
//! let body = typed::encode_request::<AddEndpoint>(&Add { a: 2, b: 3 }, &mut buf).unwrap();
//! let request = typed::decode_request::<AddEndpoint>(body).unwrap();
//! let outcome = request.a.checked_add(request.b).ok_or(CalcError::Overflow);
//!
//! let mut out = [0u8; 64];
//! let answer = typed::encode_answer::<AddEndpoint>(&outcome, &mut out).unwrap();
//! assert_eq!(typed::decode_answer::<AddEndpoint>(answer).unwrap(), Ok(5));
//! assert_ne!(AddEndpoint::KEY, Hello::KEY);
//! ```

use serde::{Deserialize, Serialize};

pub use crate::wire::EndpointKey;
pub use postcard_schema;
pub use postcard_schema::Schema;

/// A typed endpoint: a path and the types of its request, response and error. Declare
/// endpoints with [`endpoints!`](crate::endpoints) rather than by hand; see the
/// [module docs](self).
pub trait Endpoint {
    /// Where the endpoint lives: a `/`-separated name such as `"kv/get"`, unique on a
    /// server.
    const PATH: &'static str;
    /// The key computed from [`PATH`](Self::PATH) and the three types' schemas.
    const KEY: EndpointKey;
    /// What the caller sends. May borrow from the received bytes (`'a`).
    type Request<'a>: Serialize + Deserialize<'a> + Schema;
    /// What a successful call returns. May borrow from the received bytes (`'a`).
    type Response<'a>: Serialize + Deserialize<'a> + Schema;
    /// What a failed call returns, as a value of the application's (an enum, usually).
    type Error<'a>: Serialize + Deserialize<'a> + Schema;
}

impl EndpointKey {
    /// The key of an endpoint at `path` with these types (used by
    /// [`endpoints!`](crate::endpoints); a `const fn`, so it is computed at compile time).
    #[must_use]
    pub const fn new<Req, Resp, Err>(path: &str) -> Self
    where
        Req: Schema + ?Sized,
        Resp: Schema + ?Sized,
        Err: Schema + ?Sized,
    {
        let schema = postcard_schema::key::Key::for_path::<(&Req, &Resp, &Err)>(path);
        Self {
            path: path_hash(path),
            schema: u64::from_be_bytes(schema.to_bytes()),
        }
    }

    /// The key of endpoint `E`.
    #[must_use]
    pub const fn of<E: Endpoint + ?Sized>() -> Self {
        E::KEY
    }
}

/// FNV-1a, 64 bits, of `path`'s bytes: how a server finds a typed endpoint.
#[must_use]
pub const fn path_hash(path: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut rest = path.as_bytes();
    while let [byte, tail @ ..] = rest {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(PRIME);
        rest = tail;
    }
    hash
}

/// A byte string in a typed endpoint's types, borrowed from the bytes it was decoded from.
///
/// Use it instead of `&[u8]`: serde writes a `&[u8]` as a sequence of `u8` values, one
/// serializer call per byte (the bytes on the wire are the same, a varint length and the
/// bytes, but 4 KiB take thousands of calls), while `Bytes` is written and read in one
/// piece. Its schema is the data model's byte array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    /// The bytes.
    #[must_use]
    pub const fn as_slice(&self) -> &'a [u8] {
        self.0
    }
}

impl core::ops::Deref for Bytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0
    }
}

impl<'a> From<&'a [u8]> for Bytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Bytes)
    }
}

impl Schema for Bytes<'_> {
    const SCHEMA: &'static postcard_schema::schema::NamedType =
        &postcard_schema::schema::NamedType {
            name: "Bytes",
            ty: &postcard_schema::schema::DataModelType::ByteArray,
        };
}

/// What can go wrong encoding or decoding a typed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TypedError {
    /// The buffer is too small for the encoded value.
    BufferTooSmall,
    /// The bytes are not a value of the type: truncated, malformed, or followed by bytes
    /// the value does not account for.
    Malformed,
    /// The value cannot be encoded (a serde error of the type's own).
    Unencodable,
}

impl core::fmt::Display for TypedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BufferTooSmall => "the buffer is too small for the encoded value",
            Self::Malformed => "the bytes are not a value of the endpoint's type",
            Self::Unencodable => "the value cannot be encoded",
        })
    }
}

impl core::error::Error for TypedError {}

fn encode<'b, T: Serialize + ?Sized>(value: &T, out: &'b mut [u8]) -> Result<&'b [u8], TypedError> {
    match postcard::to_slice(value, out) {
        Ok(written) => Ok(written),
        Err(postcard::Error::SerializeBufferFull) => Err(TypedError::BufferTooSmall),
        Err(_) => Err(TypedError::Unencodable),
    }
}

/// Decodes a whole value: bytes left over are an error, so a body is never taken for a
/// shorter value of another type.
fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, TypedError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(TypedError::Malformed),
    }
}

/// Encodes a request for `E` into `out`; returns the encoded body (the start of `out`).
///
/// # Errors
///
/// [`TypedError::BufferTooSmall`] or [`TypedError::Unencodable`].
pub fn encode_request<'b, E: Endpoint + ?Sized>(
    request: &E::Request<'_>,
    out: &'b mut [u8],
) -> Result<&'b [u8], TypedError> {
    encode(request, out)
}

/// Decodes a request body for `E`; borrowed fields borrow `body`.
///
/// # Errors
///
/// [`TypedError::Malformed`].
pub fn decode_request<'a, E: Endpoint + ?Sized>(
    body: &'a [u8],
) -> Result<E::Request<'a>, TypedError> {
    decode(body)
}

/// Encodes a function's outcome for `E` (its response or its error) into `out`; returns
/// the encoded answer body.
///
/// # Errors
///
/// [`TypedError::BufferTooSmall`] or [`TypedError::Unencodable`].
pub fn encode_answer<'b, E: Endpoint + ?Sized>(
    outcome: &Result<E::Response<'_>, E::Error<'_>>,
    out: &'b mut [u8],
) -> Result<&'b [u8], TypedError> {
    encode(outcome, out)
}

/// Decodes an answer body for `E` into the function's outcome; borrowed fields borrow
/// `body`.
///
/// # Errors
///
/// [`TypedError::Malformed`].
pub fn decode_answer<'a, E: Endpoint + ?Sized>(
    body: &'a [u8],
) -> Result<Result<E::Response<'a>, E::Error<'a>>, TypedError> {
    decode(body)
}

/// Declares typed endpoints: for each line, a unit struct that implements
/// [`Endpoint`](crate::typed::Endpoint), with its path, request, response and error types
/// and its key computed at compile time. A type may borrow with the lifetime `'a`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use wirecall_core::typed::{Endpoint, Schema};
/// # #[derive(Serialize, Deserialize, Schema)] pub struct Value;
/// # #[derive(Serialize, Deserialize, Schema)] pub enum KvError { Full }
/// wirecall_core::endpoints! {
///     /// Reads a key.
///     pub Get = "kv/get": &'a str => Option<Value>, KvError;
///     /// Stores a key.
///     pub Put = "kv/put": (&'a str, Value) => (), KvError;
/// }
/// assert_eq!(Get::PATH, "kv/get");
/// ```
#[macro_export]
macro_rules! endpoints {
    ($(
        $(#[$meta:meta])*
        $vis:vis $name:ident = $path:literal : $req:ty => $resp:ty, $err:ty;
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis struct $name;

        impl $crate::typed::Endpoint for $name {
            const PATH: &'static str = $path;
            const KEY: $crate::typed::EndpointKey = $crate::typed::EndpointKey::new::<
                <Self as $crate::typed::Endpoint>::Request<'static>,
                <Self as $crate::typed::Endpoint>::Response<'static>,
                <Self as $crate::typed::Endpoint>::Error<'static>,
            >($path);
            type Request<'a> = $req;
            type Response<'a> = $resp;
            type Error<'a> = $err;
        }
    )*};
}
