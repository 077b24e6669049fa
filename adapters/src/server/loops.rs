//! What a server's event loops share: their wakers (a shutdown, or one loop finishing its
//! drain, wakes them all), the count of open connections (so `max_connections` holds for
//! the server, not per loop) and each loop's own, connections handed from one loop to
//! another, and the count of loops that have drained.
//!
//! Connections are spread by the kernel, which is not even for a few of them: a shared
//! Unix listener wakes one idle loop per connection (`EPOLLEXCLUSIVE`), which piles every
//! connection on the first loop while the loops are idle, and `SO_REUSEPORT` picks a TCP
//! socket by a hash of the peer's address, which puts two connections on one loop half the
//! time. So the loop that accepts hands the connection to the loop with the fewest when
//! that one has fewer than itself: a cross-thread wake per connection, none per call. (A
//! UDP flow stays on the socket the kernel picks: its calls are in that loop's cache.)
//!
//! A loop that has drained does not stop until every loop has: a UDP endpoint's sockets
//! form one `SO_REUSEPORT` group, and a socket leaving it moves its clients' flows to the
//! sockets left, whose caches do not know their calls. Until the last loop is done, each
//! keeps its socket and answers copies of the calls it took from its cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mio::Waker;

use super::listener::Accepted;

/// Connections waiting to be taken by one loop at most; past it, the accepting loop keeps
/// them (a loop that does not take its hand-offs is busy anyway).
const MAX_HANDOFFS: usize = 64;

/// Shared by the event loops of one server.
pub(super) struct Loops {
    wakers: Vec<Arc<Waker>>,
    /// Connections open across all loops (refusals in progress not counted).
    open: AtomicUsize,
    /// Connections open in each loop, and handed to it but not yet taken.
    each: Vec<AtomicUsize>,
    /// Connections handed to each loop.
    handoffs: Vec<Mutex<Vec<Accepted>>>,
    /// Loops whose connections are closed and datagram calls answered.
    drained: AtomicUsize,
}

impl std::fmt::Debug for Loops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loops")
            .field("loops", &self.wakers.len())
            .field("open", &self.open)
            .field("each", &self.each)
            .finish_non_exhaustive()
    }
}

impl Loops {
    /// The shared state of loops woken by `wakers` (one per loop).
    pub(super) fn new(wakers: Vec<Arc<Waker>>) -> Self {
        let n = wakers.len();
        Self {
            wakers,
            open: AtomicUsize::new(0),
            each: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            handoffs: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            drained: AtomicUsize::new(0),
        }
    }

    /// Wakes every loop (a failed wake is logged: that loop then notices at its next
    /// event or timer).
    pub(super) fn wake_all(&self) {
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::warn!("cannot wake an event loop: {e}");
            }
        }
    }

    /// Takes one of `max` connection slots; `false` when all are taken.
    pub(super) fn try_open(&self, max: usize) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n.saturating_add(1))
            })
            .is_ok()
    }

    /// Gives a slot taken with [`try_open`](Self::try_open) back.
    pub(super) fn close(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Loop `index` has one more connection (`true`) or one fewer.
    pub(super) fn count(&self, index: usize, more: bool) {
        if let Some(n) = self.each.get(index) {
            let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(if more {
                    n.saturating_add(1)
                } else {
                    n.saturating_sub(1)
                })
            });
        }
    }

    /// Hands `accepted`, just accepted by loop `from`, to the loop with the fewest
    /// connections if that one has fewer than `from` and room in its queue; gives it back
    /// when `from` should take it itself.
    pub(super) fn hand_off(&self, from: usize, accepted: Accepted) -> Option<Accepted> {
        let load = |i: usize| {
            self.each
                .get(i)
                .map_or(usize::MAX, |n| n.load(Ordering::Acquire))
        };
        let mine = load(from);
        let Some((to, least)) = (0..self.each.len())
            .map(|i| (i, load(i)))
            .min_by_key(|l| l.1)
        else {
            return Some(accepted);
        };
        if to == from || least >= mine {
            return Some(accepted);
        }
        self.push(to, accepted)
    }

    /// Hands `accepted`, which loop `from` would refuse at the connection limit for want
    /// of an idle connection to evict, to the next loop, which may have one; gives it back
    /// when there is no other loop or its queue is full.
    pub(super) fn pass_on(&self, from: usize, accepted: Accepted) -> Option<Accepted> {
        let n = self.each.len();
        if n < 2 {
            return Some(accepted);
        }
        self.push(from.saturating_add(1) % n, accepted)
    }

    /// Queues `accepted` for loop `to`, counts it there and wakes it; gives it back when
    /// the queue is full.
    fn push(&self, to: usize, accepted: Accepted) -> Option<Accepted> {
        let (Some(queue), Some(waker)) = (self.handoffs.get(to), self.wakers.get(to)) else {
            return Some(accepted);
        };
        {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.len() >= MAX_HANDOFFS {
                return Some(accepted);
            }
            queue.push(accepted);
        }
        // Counted at once, so the next connection sees the load it will have.
        self.count(to, true);
        if let Err(e) = waker.wake() {
            log::warn!("cannot wake an event loop: {e}");
        }
        None
    }

    /// The connections handed to loop `index` (each already counted in its load: the
    /// loop takes it over or uncounts it).
    pub(super) fn take_handoffs(&self, index: usize, into: &mut Vec<Accepted>) {
        if let Some(queue) = self.handoffs.get(index) {
            into.append(&mut queue.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Says this loop has drained (call once) and wakes the others.
    pub(super) fn drained(&self) {
        self.drained.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// Whether every loop has drained.
    pub(super) fn all_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire) >= self.wakers.len()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn slots_hold_across_loops_and_come_back() {
        let loops = Loops::new(Vec::new());
        assert!(loops.try_open(2));
        assert!(loops.try_open(2));
        assert!(!loops.try_open(2));
        loops.close();
        assert!(loops.try_open(2));
        loops.close();
        loops.close();
        loops.close(); // one too many: stays at 0
        assert!(loops.try_open(1));
        assert!(!loops.try_open(1));
    }
}
