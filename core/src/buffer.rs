//! [`Buffer`]: the byte storage a connection reads into and writes from.
//!
//! Any fixed slice works as is (`[u8; N]`, `&mut [u8]`, `Box<[u8]>`, `Vec<u8>` at its
//! current length): every `AsRef<[u8]> + AsMut<[u8]>` type is a `Buffer` that never grows.
//! A runtime with a heap can do better for many mostly idle connections: give each a small
//! storage that grows to the frame limit only while a large frame passes through, and
//! shrinks back when idle (implement the three optional methods on a type of your own, e.g.
//! around a `Vec<u8>`, or take `GrowBuf` with the `alloc` feature). The core never
//! allocates: it only asks the storage to grow.

/// Byte storage for a connection's receive or transmit buffer.
pub trait Buffer {
    /// The storage as it is now.
    fn bytes(&self) -> &[u8];

    /// The storage as it is now, to write into.
    fn bytes_mut(&mut self) -> &mut [u8];

    /// The most bytes this storage can ever hold; fixed storage: its length.
    fn max_len(&self) -> usize {
        self.bytes().len()
    }

    /// Grows to at least `len` bytes if it can (never past [`max_len`](Self::max_len)),
    /// keeping the contents. Fixed storage does nothing.
    fn grow(&mut self, len: usize) {
        let _ = len;
    }

    /// May give back storage past the first `len` bytes; the contents past `len` are lost.
    /// Called only when the buffer holds nothing. Fixed storage does nothing.
    fn shrink(&mut self, len: usize) {
        let _ = len;
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Buffer for T {
    fn bytes(&self) -> &[u8] {
        self.as_ref()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut()
    }
}

/// Heap storage that starts small and grows only while it has to (feature `alloc`): a
/// `Vec<u8>` of `initial` bytes that grows, when the core asks, up to `max`, and shrinks
/// back when the connection is idle. A connection needs room for a whole frame only while a
/// large frame passes through, so thousands of mostly idle connections cost little memory.
/// Growing or shrinking may move the bytes; the core keeps no address across either.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowBuf {
    bytes: alloc::vec::Vec<u8>,
    max: usize,
}

#[cfg(feature = "alloc")]
impl GrowBuf {
    /// `initial` bytes now (at most `max`), up to `max` later.
    ///
    /// ```
    /// use wirecall_core::buffer::GrowBuf;
    /// use wirecall_core::server::{RequestSlot, ServerConnection};
    /// use wirecall_core::{Config, Instant};
    ///
    /// // Each buffer starts at 512 bytes and grows to a whole frame only when one comes.
    /// let config = Config::default();
    /// let buffer = || GrowBuf::new(512, config.buffer_len());
    /// let conn = ServerConnection::new(
    ///     config, buffer(), buffer(), vec![RequestSlot::EMPTY; 64], Instant::ZERO,
    /// )?;
    /// assert!(conn.is_open());
    /// # Ok::<(), wirecall_core::config::ConfigError>(())
    /// ```
    #[must_use]
    pub fn new(initial: usize, max: usize) -> Self {
        Self {
            bytes: alloc::vec![0; initial.min(max)],
            max,
        }
    }
}

#[cfg(feature = "alloc")]
impl Buffer for GrowBuf {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn max_len(&self) -> usize {
        self.max
    }

    fn grow(&mut self, len: usize) {
        let len = len.min(self.max);
        if len > self.bytes.len() {
            self.bytes.resize(len, 0);
        }
    }

    fn shrink(&mut self, len: usize) {
        if self.bytes.len() > len {
            self.bytes.truncate(len);
            self.bytes.shrink_to_fit();
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod test {
    use super::*;

    #[test]
    fn test_grows_to_its_limit_and_shrinks_back() {
        let mut b = GrowBuf::new(512, 4096);
        assert_eq!(b.bytes().len(), 512);
        b.bytes_mut()[0] = 7;
        b.grow(2000);
        assert_eq!(b.bytes().len(), 2000);
        assert_eq!(b.bytes()[0], 7, "contents kept");
        b.grow(100_000);
        assert_eq!(b.bytes().len(), 4096, "never past the limit");
        b.shrink(512);
        assert_eq!(b.bytes().len(), 512);
        assert!(b.bytes.capacity() <= 4096);
        assert_eq!(GrowBuf::new(10_000, 100).bytes().len(), 100);
    }
}
