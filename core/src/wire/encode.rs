//! Hand-written encoders for the frames of every call: a [`Request`], a
//! [`TypedRequest`] and a [`Response`] with [`Reply::Ok`]. They write exactly the bytes
//! postcard's serializer writes (the tests in `wire/test.rs` check them against it, byte
//! for byte, for any field values and every buffer too short), in fewer instructions: the
//! serde path costs about 270 instructions per 32-byte request, most of it per-field
//! dispatch and bounds checks a fixed layout does not need (docs/BENCHMARKS.md). Every
//! other frame, rare on the wire, stays with postcard.

use super::WireError;
use super::frames::{Reply, Request, Response, TypedRequest};

/// Tags of the frames written here: their variant indices in [`super::Frame`].
const TAG_REQUEST: u8 = 1;
const TAG_RESPONSE: u8 = 2;
const TAG_TYPED_REQUEST: u8 = 8;
/// [`Reply::Ok`]'s variant index.
const REPLY_OK: u8 = 0;

/// A cursor over the caller's buffer; every write checks the room first.
struct Out<'o> {
    buf: &'o mut [u8],
    at: usize,
}

impl<'o> Out<'o> {
    fn new(buf: &'o mut [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn byte(&mut self, b: u8) -> Result<(), WireError> {
        let slot = self.buf.get_mut(self.at).ok_or(WireError::BufferTooSmall)?;
        *slot = b;
        self.at = self.at.saturating_add(1);
        Ok(())
    }

    /// An unsigned integer as a LEB128 varint (postcard's form for `u32`, `u64`, `usize`
    /// and enum tags).
    fn varint(&mut self, mut v: u64) -> Result<(), WireError> {
        loop {
            // The low 7 bits, with the high bit set while more follow.
            let low = u8::try_from(v & 0x7f).unwrap_or_default();
            v = v.wrapping_shr(7);
            if v == 0 {
                return self.byte(low);
            }
            self.byte(low | 0x80)?;
        }
    }

    /// A byte string or text: its length as a varint, then the bytes.
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.varint(u64::try_from(bytes.len()).map_err(|_| WireError::BufferTooSmall)?)?;
        self.raw(bytes)
    }

    /// Bytes as they are (a fixed-size array: no length).
    fn raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self
            .at
            .checked_add(bytes.len())
            .ok_or(WireError::BufferTooSmall)?;
        let dst = self
            .buf
            .get_mut(self.at..end)
            .ok_or(WireError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    /// An `Option<u32>`: `0`, or `1` then the value.
    fn option_u32(&mut self, v: Option<u32>) -> Result<(), WireError> {
        match v {
            None => self.byte(0),
            Some(v) => {
                self.byte(1)?;
                self.varint(u64::from(v))
            }
        }
    }
}

/// A [`Request`] frame's body; returns its length.
pub(super) fn request(r: &Request<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    let mut out = Out::new(buf);
    out.byte(TAG_REQUEST)?;
    out.varint(r.id.0)?;
    out.bytes(r.method.as_bytes())?;
    out.option_u32(r.budget_ms)?;
    out.bytes(r.body)?;
    Ok(out.at)
}

/// A [`TypedRequest`] frame's body; returns its length.
pub(super) fn typed_request(r: &TypedRequest<'_>, buf: &mut [u8]) -> Result<usize, WireError> {
    let mut out = Out::new(buf);
    out.byte(TAG_TYPED_REQUEST)?;
    out.varint(r.id.0)?;
    // The key as two big-endian 8-byte arrays (its `Serialize`).
    out.raw(&r.key.path.to_be_bytes())?;
    out.raw(&r.key.schema.to_be_bytes())?;
    out.option_u32(r.budget_ms)?;
    out.bytes(r.body)?;
    Ok(out.at)
}

/// A [`Response`] frame's body if its reply is [`Reply::Ok`] (`None` for the others,
/// which postcard writes).
pub(super) fn response_ok(r: &Response<'_>, buf: &mut [u8]) -> Option<Result<usize, WireError>> {
    let Reply::Ok(body) = r.reply else {
        return None;
    };
    Some(response_with_ok(r, body, buf))
}

fn response_with_ok(r: &Response<'_>, body: &[u8], buf: &mut [u8]) -> Result<usize, WireError> {
    let mut out = Out::new(buf);
    out.byte(TAG_RESPONSE)?;
    out.varint(r.id.0)?;
    out.byte(REPLY_OK)?;
    out.bytes(body)?;
    Ok(out.at)
}
