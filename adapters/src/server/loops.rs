//! What a server's event loops share: their wakers (a shutdown, or one loop finishing its
//! drain, wakes them all), the shutdown's one deadline, the count of open connections (so
//! `max_connections` holds for the server, not per loop) and each loop's own, connections
//! handed from one loop to another, and the count of loops that have drained.
//!
//! Connections are spread by the kernel, which is not even for a few of them: a shared
//! Unix listener wakes one idle loop per connection (`EPOLLEXCLUSIVE`), which piles every
//! connection on the first loop while the loops are idle, and `SO_REUSEPORT` picks a TCP
//! socket by a hash of the peer's address, which puts two connections on one loop half the
//! time. So the loop that accepts a connection first settles its admission (a slot under
//! `max_connections`, evicting one of its own idle connections if it must; with none to
//! evict it passes the connection on to the next loop, which tries its own, and so on
//! round the loops), then hands it, slot and all, to the loop with the fewest connections
//! when that one has fewer than itself: a cross-thread wake per connection, none per call.
//! (A UDP flow stays on the socket the kernel picks: its calls are in that loop's cache.)
//!
//! A loop that has drained does not stop until every loop has, or the shared deadline has
//! passed: a UDP endpoint's sockets form one `SO_REUSEPORT` group, and a socket leaving it
//! moves its clients' flows to the sockets left, whose caches do not know their calls.
//! Until then each keeps its socket and answers copies of the calls it took from its
//! cache. A loop that leaves closes its hand-off queue first (under the queue's lock, so
//! nothing handed to it is left behind: what is queued then is refused).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant as StdInstant};

use mio::Waker;

use super::listener::{Accepted, Admission};

/// Connections waiting to be taken by one loop at most; past it, the loop that has one
/// keeps it (a loop that does not take its hand-offs is busy anyway).
const MAX_HANDOFFS: usize = 64;

/// One loop's queue of connections handed to it.
#[derive(Default)]
struct Queue {
    waiting: Vec<Accepted>,
    /// The loop has left: nothing more is queued.
    closed: bool,
}

/// Shared by the event loops of one server.
pub(super) struct Loops {
    wakers: Vec<Arc<Waker>>,
    /// Connections open across all loops (refusals in progress not counted).
    open: AtomicUsize,
    /// Connections open in each loop, and admitted ones handed to it but not yet taken.
    each: Vec<AtomicUsize>,
    /// Connections handed to each loop.
    queues: Vec<Mutex<Queue>>,
    /// Each loop's queue may hold connections: set under its lock when one is queued, so
    /// a loop looks at (and locks) its queue only then, not on every turn.
    queued: Vec<AtomicBool>,
    /// Loops whose connections are closed and datagram calls answered (or gone).
    drained: AtomicUsize,
    /// When a graceful shutdown gives up: one instant for all loops, set by the first that
    /// sees the shutdown, so none leaves (and moves UDP flows) before the others.
    deadline: OnceLock<StdInstant>,
    /// When a graceful shutdown asked for with a drain delay begins (the delay's end).
    graceful_at: OnceLock<StdInstant>,
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
            queues: (0..n).map(|_| Mutex::new(Queue::default())).collect(),
            queued: (0..n).map(|_| AtomicBool::new(false)).collect(),
            drained: AtomicUsize::new(0),
            deadline: OnceLock::new(),
            graceful_at: OnceLock::new(),
        }
    }

    /// Asks for a graceful shutdown (of a server in `state` [`RUNNING`](super::event_loop::RUNNING)):
    /// at once without a drain `delay`, else after it, the server meanwhile serving as
    /// before but failing health checks ([`DELAYING`](super::event_loop::DELAYING)).
    /// Returns `false` if a shutdown was already under way. Wakes every loop.
    pub(super) fn request_shutdown(&self, state: &AtomicU8, delay: Duration) -> bool {
        use super::event_loop::{DELAYING, GRACEFUL, RUNNING};
        let next = if delay.is_zero() {
            GRACEFUL
        } else {
            let _ = self.graceful_at.get_or_init(|| {
                StdInstant::now()
                    .checked_add(delay)
                    .unwrap_or_else(StdInstant::now)
            });
            DELAYING
        };
        let started = state
            .compare_exchange(RUNNING, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.wake_all();
        started
    }

    /// When the drain delay of a shutdown asked for with one ends.
    pub(super) fn graceful_at(&self) -> Option<StdInstant> {
        self.graceful_at.get().copied()
    }

    /// How many loops there are.
    pub(super) fn len(&self) -> usize {
        self.wakers.len()
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

    /// The graceful shutdown's deadline: `proposed` if no loop has set one yet.
    pub(super) fn deadline(&self, proposed: StdInstant) -> StdInstant {
        *self.deadline.get_or_init(|| proposed)
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
        let released = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        debug_assert!(released.is_ok(), "a connection slot given back twice");
    }

    /// Loop `index` has one more connection.
    pub(super) fn count_in(&self, index: usize) {
        if let Some(n) = self.each.get(index) {
            n.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Loop `index` has one connection fewer.
    pub(super) fn count_out(&self, index: usize) {
        if let Some(n) = self.each.get(index) {
            let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    fn load(&self, index: usize) -> usize {
        self.each
            .get(index)
            .map_or(usize::MAX, |n| n.load(Ordering::Acquire))
    }

    /// Hands `accepted` (admitted by loop `from`) to the loop with the fewest connections
    /// if that one has fewer than `from`; gives it back when `from` should set it up
    /// itself (it has the fewest, or the other's queue is full or closed).
    pub(super) fn hand_off(&self, from: usize, accepted: Accepted) -> Option<Accepted> {
        let mine = self.load(from);
        let least = (0..self.each.len())
            .map(|i| (self.load(i), i))
            .min()
            .filter(|&(load, to)| to != from && load < mine);
        match least {
            Some((_, to)) => self.push(to, accepted),
            None => Some(accepted),
        }
    }

    /// Passes `accepted`, for which loop `from` has no slot and nothing to evict, to the
    /// next loop, which may have an idle connection to evict; gives it back when every
    /// loop has tried (then it is refused) or the next one's queue is full or closed.
    pub(super) fn pass_on(&self, from: usize, mut accepted: Accepted) -> Option<Accepted> {
        let Admission::Seeking { tried } = accepted.admission else {
            return Some(accepted);
        };
        let tried = tried.saturating_add(1);
        if tried >= self.len() {
            return Some(accepted);
        }
        accepted.admission = Admission::Seeking { tried };
        self.push(from.saturating_add(1) % self.len(), accepted)
    }

    /// Queues `accepted` for loop `to` (an admitted one counted in its load at once, so the
    /// next connection sees the load it will have) and wakes it; gives it back when the
    /// queue is full or closed.
    fn push(&self, to: usize, accepted: Accepted) -> Option<Accepted> {
        let (Some(queue), Some(waker)) = (self.queues.get(to), self.wakers.get(to)) else {
            return Some(accepted);
        };
        {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.closed || queue.waiting.len() >= MAX_HANDOFFS {
                return Some(accepted);
            }
            if accepted.admission == Admission::Admitted {
                self.count_in(to);
            }
            queue.waiting.push(accepted);
            if let Some(queued) = self.queued.get(to) {
                queued.store(true, Ordering::Release);
            }
        }
        if let Err(e) = waker.wake() {
            log::warn!("cannot wake an event loop: {e}");
        }
        None
    }

    /// Moves the connections handed to loop `index` into `into` (admitted ones are counted
    /// in its load: the loop sets each up, which counts it again, or gives its slot back).
    pub(super) fn take_handoffs(&self, index: usize, into: &mut Vec<Accepted>) {
        let (Some(queue), Some(queued)) = (self.queues.get(index), self.queued.get(index)) else {
            return;
        };
        // Cleared before the queue is locked and emptied: a connection pushed after the
        // swap sets it again (and wakes the loop), so none waits unseen. Loaded first: on
        // nearly every turn nothing was handed over, and a load is cheaper than a swap.
        if queued.load(Ordering::Relaxed) && queued.swap(false, Ordering::Acquire) {
            into.append(&mut queue.lock().unwrap_or_else(PoisonError::into_inner).waiting);
        }
    }

    /// Loop `index` leaves: its queue takes nothing more; returns what was still in it.
    pub(super) fn close_queue(&self, index: usize) -> Vec<Accepted> {
        let Some(queue) = self.queues.get(index) else {
            return Vec::new();
        };
        let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.closed = true;
        std::mem::take(&mut queue.waiting)
    }

    /// Says a loop has drained (each loop once) and wakes the others.
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
        assert!(loops.try_open(1));
        assert!(!loops.try_open(1));
    }

    /// Two loops' shared state, with real wakers, and an accepted connection to move.
    fn two_loops() -> (Loops, Vec<mio::Poll>) {
        let polls: Vec<mio::Poll> = (0..2).map(|_| mio::Poll::new().unwrap()).collect();
        let wakers = polls
            .iter()
            .map(|p| Arc::new(Waker::new(p.registry(), mio::Token(0)).unwrap()))
            .collect();
        (Loops::new(wakers), polls)
    }

    fn accepted(admission: Admission) -> Accepted {
        let (stream, _peer) = mio::net::UnixStream::pair().unwrap();
        Accepted {
            stream: crate::stream::Stream::Unix(stream),
            peer: crate::function::OwnedPeer::Unix(None),
            label: "test".into(),
            admission,
            proxy_header: crate::server::listener::ProxyHeader::None,
        }
    }

    #[test]
    fn an_admitted_connection_goes_to_the_loop_with_fewer() {
        let (loops, _polls) = two_loops();
        // Equal loads: the accepting loop keeps it.
        assert!(loops.hand_off(0, accepted(Admission::Admitted)).is_some());
        loops.count_in(0);
        // Loop 1 has fewer: it gets the next one, counted there at once.
        assert!(loops.hand_off(0, accepted(Admission::Admitted)).is_none());
        assert_eq!(loops.load(1), 1);
        // Now even: loop 0 keeps the next.
        assert!(loops.hand_off(0, accepted(Admission::Admitted)).is_some());
        let mut taken = Vec::new();
        loops.take_handoffs(1, &mut taken);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].admission, Admission::Admitted);
    }

    #[test]
    fn a_connection_without_a_slot_goes_round_the_loops_once() {
        let (loops, _polls) = two_loops();
        let first = accepted(Admission::Seeking { tried: 0 });
        assert!(loops.pass_on(0, first).is_none(), "to loop 1");
        let mut taken = Vec::new();
        loops.take_handoffs(1, &mut taken);
        let again = taken.pop().unwrap();
        assert_eq!(again.admission, Admission::Seeking { tried: 1 });
        // Not counted in a load: it holds no slot.
        assert_eq!(loops.load(1), 0);
        // Every loop has tried: back to the caller, to refuse.
        assert!(loops.pass_on(1, again).is_some());
    }

    #[test]
    fn a_closed_queue_takes_nothing_and_gives_back_what_it_had() {
        let (loops, _polls) = two_loops();
        loops.count_in(0);
        assert!(loops.hand_off(0, accepted(Admission::Admitted)).is_none());
        let left = loops.close_queue(1);
        assert_eq!(left.len(), 1);
        loops.count_in(0);
        loops.count_in(0);
        assert!(loops.hand_off(0, accepted(Admission::Admitted)).is_some());
        assert!(
            loops
                .pass_on(0, accepted(Admission::Seeking { tried: 0 }))
                .is_some()
        );
    }

    #[test]
    fn the_first_deadline_holds_for_every_loop() {
        let loops = Loops::new(Vec::new());
        let first = StdInstant::now();
        assert_eq!(loops.deadline(first), first);
        let later = first + std::time::Duration::from_secs(1);
        assert_eq!(loops.deadline(later), first);
    }
}
