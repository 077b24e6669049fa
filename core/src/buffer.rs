//! [`Buffer`]: the byte storage a connection reads into and writes from.
//!
//! Any fixed slice works as is (`[u8; N]`, `&mut [u8]`, `Box<[u8]>`, `Vec<u8>` at its
//! current length): every `AsRef<[u8]> + AsMut<[u8]>` type is a `Buffer` that never grows.
//! A runtime with a heap can do better for many mostly idle connections: give each a small
//! storage that grows to the frame limit only while a large frame passes through, and
//! shrinks back when idle (implement the three optional methods on a type of your own, e.g.
//! around a `Vec<u8>`). The core never allocates: it only asks the storage to grow.

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
