//! The answer buffers an event loop lends to functions that answer into one
//! ([`Register::function_into`](crate::function::Register::function_into)), kept once their
//! answers are with the core so the next call reuses the allocation: a steady stream of
//! such calls allocates nothing.
//!
//! Any answer's `Vec` comes back here once the core has it (a function that returns a new
//! `Vec` gives the pool its allocation too), so the pool is bounded: it keeps at most
//! [`MAX_KEPT`] buffers of at most [`MAX_CAPACITY`] bytes each, and drops the rest.

use std::cell::RefCell;

/// Buffers kept for lending; beyond, returned ones are freed.
const MAX_KEPT: usize = 64;
/// A buffer grown past this (a large answer) is freed, not kept.
const MAX_CAPACITY: usize = 16 * 1024;

/// Buffers ready to lend (one event loop's; not shared between threads).
#[derive(Debug, Default)]
pub(super) struct AnswerBuffers {
    free: RefCell<Vec<Vec<u8>>>,
}

impl AnswerBuffers {
    /// An empty buffer, with the capacity of an earlier answer when one is kept.
    pub(super) fn lend(&self) -> Vec<u8> {
        self.free.borrow_mut().pop().unwrap_or_default()
    }

    /// An answer's buffer the core no longer needs.
    pub(super) fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > MAX_CAPACITY {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < MAX_KEPT {
            buffer.clear();
            free.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_bounded() {
        let buffers = AnswerBuffers::default();
        let mut first = buffers.lend();
        assert_eq!(first.capacity(), 0);
        first.extend_from_slice(b"answer");
        let capacity = first.capacity();
        buffers.give_back(first);
        let again = buffers.lend();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        buffers.give_back(Vec::with_capacity(MAX_CAPACITY + 1));
        assert_eq!(buffers.lend().capacity(), 0, "a large buffer is not kept");
        for _ in 0..MAX_KEPT + 10 {
            buffers.give_back(Vec::with_capacity(8));
        }
        assert_eq!(buffers.free.borrow().len(), MAX_KEPT);
    }
}
