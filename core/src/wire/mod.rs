//! The wire format: what one frame looks like in bytes.
//!
//! A frame body is the [postcard] encoding of a [`Frame`]: a varint tag naming the frame
//! type, then its fields in order (unsigned integers as LEB128 varints, `u8` as one raw
//! byte, byte strings and text as a varint length and the bytes, `Option` as a `0`/`1` byte
//! then the value). On a stream each body is preceded by its length as a big-endian `u32`
//! ([`LEN_PREFIX`] bytes); see [`crate::frame`]. `docs/PROTOCOL.md` is the byte-exact
//! description, with test vectors that the tests in this module check.
//!
//! # Contract
//!
//! - [`Frame::decode`] takes any bytes and returns a frame or a [`WireError`]; it never
//!   panics and never allocates. A decoded frame borrows its method, body and message from
//!   the input (zero-copy).
//! - [`Frame::encode`] writes the body into a caller's buffer and returns its length, or
//!   [`WireError::BufferTooSmall`] with the buffer's contents unspecified.
//! - Decoding is strict: trailing bytes after a frame are an error, so a body has exactly
//!   one valid length.
//!
//! [postcard]: https://docs.rs/postcard

mod code;
pub mod datagram;
mod decode;
mod encode;
mod frames;

pub use code::{
    CloseCode, ERROR_ANSWER_NOT_ENCODABLE, ERROR_ANSWER_TOO_LARGE, ERROR_FUNCTION_PANICKED,
    ERROR_NO_ANSWER, RESERVED_ERROR_CODES, RejectCode, reserved_error_name,
};
pub use frames::{
    Call, EndpointKey, Frame, Hello, Reply, Request, RequestId, Response, Target, TypedRequest,
};

use core::fmt;

/// The four bytes that open every [`Hello`]: `"WCAL"`.
pub const MAGIC: [u8; 4] = *b"WCAL";

/// The highest protocol version this crate speaks (its hello's `max_version`).
pub const PROTOCOL_VERSION: u8 = 2;

/// The lowest protocol version this crate speaks (its hello's `min_version`): version 1
/// peers, which know no typed endpoints, still work with untyped calls.
pub const MIN_PROTOCOL_VERSION: u8 = 1;

/// The version that added typed endpoints ([`Frame::TypedRequest`]).
pub const TYPED_VERSION: u8 = 2;

/// Bytes of the big-endian length prefix in front of every frame on a stream.
pub const LEN_PREFIX: usize = 4;

/// The largest frame body every conforming peer accepts, whatever its hello will say.
///
/// A client may send requests up to this size before the server's hello has arrived.
pub const BASELINE_MAX_FRAME_LEN: u32 = 1024;

/// Requests every conforming server accepts in flight, whatever its hello will say.
///
/// A client may send up to this many requests before the server's hello has arrived.
pub const BASELINE_MAX_IN_FLIGHT: u32 = 4;

/// The largest body a [`Hello`] can have. A first frame whose length prefix says more than
/// this cannot be a hello, so the peer is not speaking wirecall.
pub const MAX_HELLO_LEN: u32 = 32;

/// Why bytes are not a valid frame, or a frame did not fit a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// The bytes end in the middle of a field.
    Truncated,
    /// A varint is longer than its type allows, or its value does not fit.
    BadVarint,
    /// A frame tag or a reply tag that this version does not define (in a datagram: that
    /// the version in its header does not define).
    UnknownTag,
    /// An `Option` or `bool` byte other than `0` or `1`.
    BadFlag,
    /// A method name or message that is not UTF-8.
    BadUtf8,
    /// Bytes left over after a complete frame.
    TrailingBytes,
    /// The output buffer is too small for the frame.
    BufferTooSmall,
}

impl WireError {
    fn from_postcard(e: postcard::Error) -> Self {
        use postcard::Error as P;
        match e {
            P::DeserializeUnexpectedEnd => Self::Truncated,
            P::DeserializeBadVarint => Self::BadVarint,
            P::DeserializeBadBool | P::DeserializeBadOption => Self::BadFlag,
            P::DeserializeBadUtf8 | P::DeserializeBadChar => Self::BadUtf8,
            P::SerializeBufferFull => Self::BufferTooSmall,
            // Enum tags, and anything postcard adds later: the bytes are not a frame.
            _ => Self::UnknownTag,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "frame ends in the middle of a field",
            Self::BadVarint => "malformed varint",
            Self::UnknownTag => "unknown frame or reply tag",
            Self::BadFlag => "option or bool byte is not 0 or 1",
            Self::BadUtf8 => "text field is not UTF-8",
            Self::TrailingBytes => "bytes left over after the frame",
            Self::BufferTooSmall => "buffer too small for the frame",
        })
    }
}

impl core::error::Error for WireError {}

impl<'a> Frame<'a> {
    /// Decodes one frame body (without a length prefix).
    ///
    /// # Errors
    ///
    /// Any [`WireError`] but `BufferTooSmall` when the bytes are not exactly one frame.
    pub fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        // The frames of every call in their plain form by hand; anything else, and every
        // error, is postcard's to judge.
        if let Some(frame) = decode::call_frame(body) {
            return Ok(frame);
        }
        Self::decode_serde(body)
    }

    /// [`decode`](Self::decode) through postcard's deserializer alone.
    fn decode_serde(body: &'a [u8]) -> Result<Self, WireError> {
        match postcard::take_from_bytes::<Frame<'a>>(body) {
            Ok((frame, [])) => Ok(frame),
            Ok(_) => Err(WireError::TrailingBytes),
            Err(e) => Err(WireError::from_postcard(e)),
        }
    }

    /// Encodes this frame's body (without a length prefix) at the start of `out`.
    ///
    /// Returns the number of bytes written.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] when `out` cannot hold the body.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        // The frames of every call by hand (the same bytes, fewer instructions); the
        // rest through postcard.
        match self {
            Self::Request(r) => return encode::request(r, out),
            Self::TypedRequest(r) => return encode::typed_request(r, out),
            Self::Response(r) => {
                if let Some(written) = encode::response_ok(r, out) {
                    return written;
                }
            }
            _ => {}
        }
        self.encode_serde(out)
    }

    /// [`encode`](Self::encode) through postcard's serializer, for every frame.
    fn encode_serde(&self, out: &mut [u8]) -> Result<usize, WireError> {
        postcard::to_slice(self, out)
            .map(|written| written.len())
            .map_err(|_| WireError::BufferTooSmall)
    }

    /// The body's encoded length in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default())
            .unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod test;
