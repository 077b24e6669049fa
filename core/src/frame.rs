//! Stream framing: each frame body travels behind a 4-byte big-endian length prefix.
//!
//! [`encode_frame`] writes prefix and body into a caller's buffer. [`FrameDecoder`] is the
//! incremental decoder: feed it bytes split at any boundary, and take whole frame bodies
//! out. It reads each length prefix as soon as its four bytes are in, and refuses a length
//! above its limit *before* buffering the body, so a peer cannot make it hold more than one
//! buffer's worth of bytes, and its storage is the caller's: no heap.
//!
//! ```
//! use wirecall_core::frame::{encode_frame, FrameDecoder};
//! use wirecall_core::wire::{Frame, RequestId};
//!
//! let mut wire = [0u8; 64];
//! let n = encode_frame(&Frame::Ping { nonce: 7 }, &mut wire)?;
//!
//! let mut decoder = FrameDecoder::new([0u8; 64], 32);
//! // Bytes may arrive in any pieces.
//! for piece in wire[..n].chunks(3) {
//!     assert_eq!(decoder.feed(piece), piece.len());
//! }
//! let body = decoder.next_frame()?.expect("one whole frame is buffered");
//! assert_eq!(Frame::decode(body)?, Frame::Ping { nonce: 7 });
//! assert!(decoder.next_frame()?.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::cell::Cell;
use core::fmt;
use core::ops::Range;

use crate::buffer::Buffer;
use crate::wire::{Frame, LEN_PREFIX, WireError};

/// Why the byte stream cannot be split into frames. The stream is unusable after this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// A length prefix announced a frame longer than the limit.
    TooLong {
        /// The announced body length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len, max } => {
                write!(f, "frame of {len} bytes is over the limit of {max}")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Writes `frame` with its length prefix at the start of `out`; returns the bytes written.
///
/// # Errors
///
/// [`WireError::BufferTooSmall`] when `out` cannot hold prefix and body.
pub fn encode_frame(frame: &Frame<'_>, out: &mut [u8]) -> Result<usize, WireError> {
    let (prefix, body) = out
        .split_first_chunk_mut::<LEN_PREFIX>()
        .ok_or(WireError::BufferTooSmall)?;
    let len = frame.encode(body)?;
    let len32 = u32::try_from(len).map_err(|_| WireError::BufferTooSmall)?;
    *prefix = len32.to_be_bytes();
    len.checked_add(LEN_PREFIX).ok_or(WireError::BufferTooSmall)
}

/// An incremental frame decoder over caller-provided storage `B` (an array, a boxed slice,
/// a `Vec`: anything that is a mutable byte slice of fixed length).
///
/// Put bytes in with [`feed`](Self::feed), or read straight into
/// [`space`](Self::space) and [`commit`](Self::commit) them; take frames out with
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder<B> {
    buf: B,
    /// First byte not yet consumed. A `Cell` so that a frame borrowed from the buffer can
    /// be marked consumed while the borrow lives (the bytes stay until the next `&mut` call).
    start: Cell<usize>,
    /// One past the last byte received.
    end: usize,
    max_frame_len: u32,
    /// The framing error found, kept: the stream cannot be read past it. A cell so that
    /// peeking takes `&self` and a decoded frame can borrow the buffer across a peek.
    error: Cell<Option<DecodeError>>,
    /// Bumped whenever buffered bytes move or may be overwritten (compaction, a reset to
    /// the front, a shrink), so a range taken earlier can be checked before it is read.
    moves: u32,
}

impl<B: Buffer> FrameDecoder<B> {
    /// A decoder that accepts bodies up to `max_frame_len` bytes, clamped to what `buf` can
    /// hold behind a prefix.
    pub fn new(buf: B, max_frame_len: u32) -> Self {
        let mut decoder = Self {
            buf,
            start: Cell::new(0),
            end: 0,
            max_frame_len: 0,
            error: Cell::new(None),
            moves: 0,
        };
        decoder.set_max_frame_len(max_frame_len);
        decoder
    }

    /// Changes the limit (clamped to what the storage can hold); frames already announced
    /// are not re-checked.
    pub fn set_max_frame_len(&mut self, max_frame_len: u32) {
        let room = self.buf.max_len().saturating_sub(LEN_PREFIX);
        let room = u32::try_from(room).unwrap_or(u32::MAX);
        self.max_frame_len = max_frame_len.min(room);
    }

    /// The largest body this decoder accepts.
    #[must_use]
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Bytes received and not yet taken out as frames.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.end.saturating_sub(self.start.get())
    }

    /// Storage in bytes now (a growable buffer may grow to the frame limit).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.bytes().len()
    }

    /// Asks a growable [`Buffer`] for room to read `additional` more bytes at once (within
    /// what the storage can reach); fixed storage is left as it is. A runtime calls this
    /// when a read filled all the room there was, so busy connections read in large
    /// batches while idle ones stay small.
    pub fn reserve(&mut self, additional: usize) {
        self.make_room();
        let want = self.end.saturating_add(additional).min(self.buf.max_len());
        if self.buf.bytes().len() < want {
            self.buf.grow(want);
        }
    }

    /// Gives storage back, down to `keep` bytes, when nothing is buffered (for a growable
    /// [`Buffer`]; fixed storage stays as it is). Returns whether it was empty.
    pub fn shrink(&mut self, keep: usize) -> bool {
        if self.buffered() > 0 {
            return false;
        }
        self.start.set(0);
        self.end = 0;
        self.moves = self.moves.wrapping_add(1);
        self.buf.shrink(keep);
        true
    }

    /// Free storage to read into; then call [`commit`](Self::commit). Empty when the
    /// buffer holds frames the caller has not taken yet: take them first.
    pub fn space(&mut self) -> &mut [u8] {
        self.make_room();
        self.buf.bytes_mut().get_mut(self.end..).unwrap_or_default()
    }

    /// Marks `n` bytes written into [`space`](Self::space) as received (clamped to the
    /// space there was).
    pub fn commit(&mut self, n: usize) {
        let cap = self.buf.bytes().len();
        self.end = self.end.saturating_add(n).min(cap);
    }

    /// Copies as much of `data` as fits; returns how much that was. Offer the rest again
    /// after taking frames out.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(data.len());
        if let (Some(dst), Some(src)) = (space.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.commit(n);
        n
    }

    /// The next whole frame body, if one is buffered. The body stays valid until the next
    /// call that takes `&mut self`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLong`] as soon as a length prefix is over the limit; every later
    /// call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, DecodeError> {
        match self.peek()? {
            Some(range) => {
                self.start.set(range.end);
                Ok(self.buf.bytes().get(range))
            }
            None => Ok(None),
        }
    }

    /// The byte range of the next whole frame body, without taking it; see
    /// [`consume`](Self::consume).
    pub(crate) fn peek(&self) -> Result<Option<Range<usize>>, DecodeError> {
        if let Some(e) = self.error.get() {
            return Err(e);
        }
        let start = self.start.get();
        let pending = self.buf.bytes().get(start..self.end).unwrap_or_default();
        let Some(prefix) = pending.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > self.max_frame_len {
            let e = DecodeError::TooLong {
                len,
                max: self.max_frame_len,
            };
            self.error.set(Some(e));
            return Err(e);
        }
        // `len <= max_frame_len <= capacity`, so these sums stay within `usize`.
        let body_start = start.saturating_add(LEN_PREFIX);
        let body_end = body_start.saturating_add(len as usize);
        if body_end > self.end {
            return Ok(None);
        }
        Ok(Some(body_start..body_end))
    }

    /// Counts the times buffered bytes moved or could be overwritten: a range from
    /// [`locate`](Self::locate) is still good while this has not changed.
    pub(crate) fn moves(&self) -> u32 {
        self.moves
    }

    /// The bodies of the whole frames buffered and not yet taken, in order, without taking
    /// them (it stops at a prefix over the limit).
    pub(crate) fn buffered_frames(&self) -> impl Iterator<Item = &[u8]> {
        let bytes = self.buf.bytes().get(..self.end).unwrap_or_default();
        let max = self.max_frame_len;
        let mut at = self.start.get();
        core::iter::from_fn(move || {
            let prefix = bytes.get(at..)?.first_chunk::<LEN_PREFIX>()?;
            let len = u32::from_be_bytes(*prefix);
            if len > max {
                return None;
            }
            let body_start = at.checked_add(LEN_PREFIX)?;
            let body_end = body_start.checked_add(len as usize)?;
            let body = bytes.get(body_start..body_end)?;
            at = body_end;
            Some(body)
        })
    }

    /// The first length prefix buffered, if its four bytes are in; used to recognise a
    /// peer that does not speak wirecall before the limit check would say "too long".
    pub(crate) fn peek_len(&self) -> Option<u32> {
        let pending = self.buf.bytes().get(self.start.get()..self.end)?;
        pending
            .first_chunk::<LEN_PREFIX>()
            .map(|p| u32::from_be_bytes(*p))
    }

    /// Takes the frame that [`peek`](Self::peek) returned.
    pub(crate) fn consume(&self, range: &Range<usize>) {
        self.start.set(range.end.min(self.end));
    }

    /// Bytes of a range from [`peek`](Self::peek).
    pub(crate) fn get(&self, range: Range<usize>) -> &[u8] {
        self.buf.bytes().get(range).unwrap_or_default()
    }

    /// Where `part` (a slice borrowed from this buffer, e.g. a decoded body) sits in it, so
    /// it can be found again after the borrow ends. An empty range if it is not inside.
    pub(crate) fn locate(&self, part: &[u8]) -> Range<usize> {
        let base = self.buf.bytes().as_ptr() as usize;
        let start = (part.as_ptr() as usize).wrapping_sub(base);
        match start.checked_add(part.len()) {
            Some(end) if end <= self.buf.bytes().len() => start..end,
            _ => 0..0,
        }
    }

    /// Text at a range from [`locate`](Self::locate) (checked again: it is short).
    pub(crate) fn get_str(&self, range: Range<usize>) -> &str {
        core::str::from_utf8(self.get(range)).unwrap_or_default()
    }

    /// Makes room to read: moves the unconsumed bytes to the front when the free tail could
    /// not hold the rest of the next frame (a whole frame up to the limit, while its length
    /// is not known yet), and grows a growable buffer when the next frame is larger than it.
    fn make_room(&mut self) {
        let (start, end) = (self.start.get(), self.end);
        if start == end {
            if end > 0 {
                self.moves = self.moves.wrapping_add(1);
            }
            self.start.set(0);
            self.end = 0;
            // Room for at least a length prefix, or it would never learn how much to grow.
            if self.buf.bytes().len() < LEN_PREFIX {
                self.buf.grow(LEN_PREFIX);
            }
            return;
        }
        let limit = (self.max_frame_len as usize).saturating_add(LEN_PREFIX);
        // The whole next frame, prefix included, once its length is known.
        let next = self
            .peek_len()
            .map(|len| (len as usize).saturating_add(LEN_PREFIX).min(limit));
        let cap = self.buf.bytes().len();
        let compact = start > 0
            && match next {
                // The frame does not fit where it starts.
                Some(next) => cap.saturating_sub(start) < next,
                // Keep room for a whole frame up to the limit (or the buffer) behind.
                None => cap.saturating_sub(end) < limit.min(cap),
            };
        if compact {
            self.moves = self.moves.wrapping_add(1);
            self.buf.bytes_mut().copy_within(start..end, 0);
            self.end = end.saturating_sub(start);
            self.start.set(0);
        }
        // Room for the whole next frame, or at least for its length prefix: storage too
        // small even for that would never learn how much to grow. But never more than twice
        // the bytes that have arrived: a peer that declares a long frame and sends little
        // makes the storage grow with what it sends (doubling as it fills), not with what
        // it declares.
        let (start, end) = (self.start.get(), self.end);
        let want = start.saturating_add(next.unwrap_or(LEN_PREFIX));
        let earned = end
            .saturating_mul(2)
            .max(start.saturating_add(LEN_PREFIX))
            .max(self.buf.bytes().len());
        let want = want.min(earned);
        if self.buf.bytes().len() < want {
            self.buf.grow(want);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::RequestId;

    /// A peer that declares a 16 MiB frame and sends a few bytes of it makes growable
    /// storage grow with the bytes that came (doubling as they fill it), not with the
    /// declared length; a frame that really comes in full is still taken whole.
    #[cfg(feature = "alloc")]
    #[test]
    fn storage_grows_with_the_bytes_that_arrive_not_the_declared_length() {
        use crate::buffer::GrowBuf;
        const DECLARED: u32 = 16 << 20;
        let max = usize::try_from(DECLARED).unwrap();
        let mut d = FrameDecoder::new(GrowBuf::new(512, max + 4), DECLARED);
        let mut wire = std::vec::Vec::from(DECLARED.to_be_bytes());
        wire.extend_from_slice(&[0x55; 22]);
        let space = d.space();
        space[..wire.len()].copy_from_slice(&wire);
        d.commit(wire.len());
        for _ in 0..4 {
            let _ = d.space();
        }
        assert_eq!(d.capacity(), 512, "26 bytes held in the first 512");
        // Feed the rest: the storage doubles as it fills, up to the whole frame.
        let mut sent = wire.len();
        let mut growths = 0;
        while sent < max + 4 {
            let before = d.capacity();
            let space = d.space();
            assert!(!space.is_empty());
            let n = space.len().min(max + 4 - sent);
            space[..n].fill(0x55);
            d.commit(n);
            sent += n;
            assert!(
                d.capacity() <= 2 * sent.max(512),
                "{} for {sent}",
                d.capacity()
            );
            growths += usize::from(d.capacity() > before);
        }
        assert!(d.peek().unwrap().is_some(), "the whole frame is there");
        assert!(growths <= 16, "{growths} doublings");
    }

    #[test]
    fn test_split_anywhere() {
        let mut wire = [0u8; 128];
        let a = encode_frame(&Frame::Ping { nonce: 1 }, &mut wire).unwrap();
        let b = encode_frame(&Frame::Cancel { id: RequestId(300) }, &mut wire[a..]).unwrap();
        let stream = &wire[..a + b];
        for split in 0..=stream.len() {
            let mut d = FrameDecoder::new([0u8; 32], 16);
            let mut got = std::vec::Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                assert_eq!(d.feed(part), part.len());
                while let Some(body) = d.next_frame().unwrap() {
                    got.push(Frame::decode(body).unwrap().encoded_len());
                }
            }
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn test_too_long_refused_before_buffering() {
        let mut d = FrameDecoder::new([0u8; 64], 16);
        assert_eq!(d.feed(&[0, 0, 0, 17]), 4);
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::TooLong { len: 17, max: 16 })
        );
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::TooLong { len: 17, max: 16 })
        );
    }

    #[test]
    fn test_limit_clamped_to_storage() {
        let d = FrameDecoder::new([0u8; 10], 1000);
        assert_eq!(d.max_frame_len(), 6);
    }

    #[test]
    fn test_full_buffer_makes_room_after_consume() {
        let mut d = FrameDecoder::new([0u8; 12], 8);
        // Two 2-byte frames, then the start of a third.
        let bytes = [0, 0, 0, 2, 1, 2, 0, 0, 0, 2, 3, 4, 0, 0];
        assert_eq!(d.feed(&bytes), 12);
        assert_eq!(d.next_frame().unwrap(), Some(&[1u8, 2][..]));
        assert_eq!(d.next_frame().unwrap(), Some(&[3u8, 4][..]));
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.feed(&bytes[12..]), 2);
        assert_eq!(d.buffered(), 2);
    }
}
