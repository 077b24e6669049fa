//! A hand-written decoder for the frames of every call (a [`Request`], a
//! [`TypedRequest`], a [`Response`] with [`Reply::Ok`]), tried before postcard's.
//!
//! It only ever says yes: it returns a frame when the body is one of these in its plain
//! form (shortest varints, ids below 2^63, budgets and lengths below 2^28, valid UTF-8, no
//! trailing bytes), and `None` for anything else, which postcard then decodes or refuses
//! with its own error. So postcard stays the one judge of what is valid: whatever is
//! decoded here, postcard decodes to the same frame (the tests in `wire/test.rs` check
//! this on valid, mutated and arbitrary bytes, and the
//! `frame_decode` fuzz target on whatever it finds). It saves most of postcard's ~170
//! instructions per call frame (docs/BENCHMARKS.md).

use super::frames::{EndpointKey, Frame, Reply, Request, RequestId, Response, TypedRequest};

/// A cursor over a frame body.
struct In<'a> {
    rest: &'a [u8],
}

impl<'a> In<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    /// A LEB128 varint of at most `max_bytes` bytes (9 for a `u64` here, 4 for a `u32`), in
    /// its shortest form only.
    fn varint(&mut self, max_bytes: u32) -> Option<u64> {
        // One byte, the common case: every length of a call frame, and ids below 128.
        let (&first, mut rest) = self.rest.split_first()?;
        if first & 0x80 == 0 && max_bytes > 0 {
            self.rest = rest;
            return Some(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        let mut shift = 7u32;
        for _ in 1..max_bytes {
            let (&b, tail) = rest.split_first()?;
            rest = tail;
            // A shift past the type's width (a `max_bytes` over 9) refuses the varint.
            value |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                self.rest = rest;
                // A last byte of 0 after others is a longer form than needed.
                return (b != 0).then_some(value);
            }
            shift = shift.saturating_add(7);
        }
        None
    }

    /// A `u64` (up to 63 bits here).
    fn u64(&mut self) -> Option<u64> {
        self.varint(9)
    }

    /// A `u32` (up to 28 bits here).
    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint(4)?).ok()
    }

    /// A byte string: a length, then the bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    /// Text: as [`bytes`](Self::bytes), valid UTF-8.
    fn str(&mut self) -> Option<&'a str> {
        core::str::from_utf8(self.bytes()?).ok()
    }

    /// An `Option<u32>`.
    fn option_u32(&mut self) -> Option<Option<u32>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(self.u32()?)),
            _ => None,
        }
    }

    /// An 8-byte array as a big-endian number.
    fn be_u64(&mut self) -> Option<u64> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(u64::from_be_bytes(*bytes))
    }
}

/// `body` as a call frame in its plain form, or `None` (postcard decides).
pub(super) fn call_frame(body: &[u8]) -> Option<Frame<'_>> {
    let mut i = In { rest: body };
    let frame = match i.byte()? {
        1 => Frame::Request(Request {
            id: RequestId(i.u64()?),
            method: i.str()?,
            budget_ms: i.option_u32()?,
            body: i.bytes()?,
        }),
        2 => {
            let id = RequestId(i.u64()?);
            if i.byte()? != 0 {
                return None;
            }
            Frame::Response(Response {
                id,
                reply: Reply::Ok(i.bytes()?),
            })
        }
        8 => Frame::TypedRequest(TypedRequest {
            id: RequestId(i.u64()?),
            key: EndpointKey {
                path: i.be_u64()?,
                schema: i.be_u64()?,
            },
            budget_ms: i.option_u32()?,
            body: i.bytes()?,
        }),
        _ => return None,
    };
    i.rest.is_empty().then_some(frame)
}
