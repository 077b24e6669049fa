//! [`GrowBuf`]: connection storage that starts small and grows only while it has to.
//!
//! A connection needs room for a whole frame only while a large frame passes through; an
//! idle one needs almost nothing. Each connection's receive and transmit storage starts at
//! [`INITIAL`] bytes, grows (up to the frame limit) when the core asks, and is shrunk back
//! by the server once the connection has been idle for a while, so thousands of idle
//! connections cost little memory.

use wirecall_core::Buffer;

/// Bytes a connection's buffer starts (and shrinks back) to.
pub(crate) const INITIAL: usize = 512;

/// A growable connection buffer: a `Vec<u8>` that grows up to `max` bytes.
#[derive(Debug)]
pub(crate) struct GrowBuf {
    bytes: Vec<u8>,
    max: usize,
}

impl GrowBuf {
    /// A buffer of [`INITIAL`] bytes (or `max`, if smaller) that may grow to `max`.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            bytes: vec![0; INITIAL.min(max)],
            max,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_its_limit_and_shrinks_back() {
        let mut b = GrowBuf::new(4096);
        assert_eq!(b.bytes().len(), INITIAL);
        b.bytes_mut()[0] = 7;
        b.grow(2000);
        assert_eq!(b.bytes().len(), 2000);
        assert_eq!(b.bytes()[0], 7, "contents kept");
        b.grow(100_000);
        assert_eq!(b.bytes().len(), 4096, "never past the limit");
        b.shrink(INITIAL);
        assert_eq!(b.bytes().len(), INITIAL);
        assert!(b.bytes.capacity() <= 4096);
    }
}
