//! The calls a client has submitted and not yet handed back, and the outcomes that came
//! for them: the bookkeeping `wait` and `wait_any` share on every transport.
//!
//! The answers' bytes are kept in one growing store, one after another in the order they
//! came, not in a `Vec` each: a caller that collects with
//! [`Client::wait_any_borrowed`](super::Client::wait_any_borrowed) borrows them from there,
//! so a steady stream of calls allocates nothing once the store has grown to the most
//! answers ever waiting at once. The store is emptied whenever every answer in it was
//! collected, and
//! compacted when the bytes of collected answers outweigh the ones still waiting, so it
//! stays within about twice what waits (plus [`COMPACT_AFTER`]).

use std::collections::VecDeque;

use wirecall_core::RequestId;

use super::{CallError, Outcome};
use crate::id_hasher::IdSet;

/// Collected bytes the store tolerates before compacting, so small answers never move.
const COMPACT_AFTER: usize = 16 * 1024;
/// Capacity the store keeps when it empties; beyond it, what a burst of large answers
/// grew is given back.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Where an answer's bytes are in the store: start and length.
type Span = (usize, usize);

/// Calls submitted and not yet collected, and the outcomes not yet collected.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    /// Every call submitted and not yet collected, whether or not it has ended.
    waiting: IdSet<RequestId>,
    /// Outcomes not yet collected, in the order they came; answers as spans of `bodies`.
    done: VecDeque<(RequestId, Result<Span, CallError>)>,
    /// The answers' bytes, in the order they came (the spans of `done` rise).
    bodies: Vec<u8>,
    /// Bytes of `bodies` whose answers were collected.
    collected: usize,
}

impl Outcomes {
    /// A call was submitted.
    pub(super) fn submitted(&mut self, id: RequestId) {
        self.waiting.insert(id);
    }

    /// A call was answered with `body`; its outcome waits to be collected.
    pub(super) fn answered(&mut self, id: RequestId, body: &[u8]) {
        if body.is_empty() {
            // Stored nowhere: a span of (0, 0) stays valid whatever the store does.
            self.done.push_back((id, Ok((0, 0))));
            return;
        }
        self.make_room();
        let start = self.bodies.len();
        self.bodies.extend_from_slice(body);
        self.done.push_back((id, Ok((start, body.len()))));
    }

    /// A call failed; its outcome waits to be collected.
    pub(super) fn failed(&mut self, id: RequestId, error: CallError) {
        self.done.push_back((id, Err(error)));
    }

    /// `true` while call `id` was submitted and not yet collected.
    pub(super) fn is_waiting(&self, id: RequestId) -> bool {
        self.waiting.contains(&id)
    }

    /// Collects the outcome of call `id` if it has come.
    pub(super) fn take(&mut self, id: RequestId) -> Option<Outcome> {
        let pos = self.done.iter().position(|(d, _)| *d == id)?;
        let (_, outcome) = self.done.remove(pos)?;
        self.waiting.remove(&id);
        Some(self.collect(outcome).map(<[u8]>::to_vec))
    }

    /// Collects the oldest outcome that has come.
    pub(super) fn take_any(&mut self) -> Option<(RequestId, Outcome)> {
        let (id, outcome) = self.take_any_borrowed()?;
        Some((id, outcome.map(<[u8]>::to_vec)))
    }

    /// Collects the oldest outcome that has come, its answer borrowed from the store
    /// until the next change.
    pub(super) fn take_any_borrowed(&mut self) -> Option<(RequestId, Result<&[u8], CallError>)> {
        let (id, outcome) = self.done.pop_front()?;
        self.waiting.remove(&id);
        Some((id, self.collect(outcome)))
    }

    /// The bytes of a collected answer's span, which now count as collected.
    fn collect(&mut self, outcome: Result<Span, CallError>) -> Result<&[u8], CallError> {
        let (start, len) = outcome?;
        self.collected = self.collected.saturating_add(len);
        let end = start.saturating_add(len);
        Ok(self.bodies.get(start..end).unwrap_or_default())
    }

    /// Before an answer is stored: empties the store when every answer in it was
    /// collected (empty answers are kept as `(0, 0)`, in no store), or compacts it when
    /// collected bytes outweigh waiting ones.
    fn make_room(&mut self) {
        if self.collected >= self.bodies.len() {
            self.bodies.clear();
            self.bodies.shrink_to(KEEP_CAPACITY);
            self.collected = 0;
            return;
        }
        let waiting = self.bodies.len().saturating_sub(self.collected);
        if self.collected < COMPACT_AFTER || self.collected < waiting {
            return;
        }
        // The spans rise and do not overlap, so each moves down over collected bytes only.
        let mut to = 0usize;
        for (_, outcome) in &mut self.done {
            if let Ok((start, len)) = outcome
                && *len > 0
            {
                self.bodies
                    .copy_within(*start..start.saturating_add(*len), to);
                *start = to;
                to = to.saturating_add(*len);
            }
        }
        self.bodies.truncate(to);
        // What a burst grew is given back while other answers still wait.
        self.bodies
            .shrink_to(KEEP_CAPACITY.max(to.saturating_mul(2)));
        self.collected = 0;
    }

    /// Some call still waiting for its outcome, if any.
    pub(super) fn any_waiting(&self) -> Option<RequestId> {
        self.waiting.iter().next().copied()
    }

    /// Gives up on call `id`: it is no longer waiting.
    pub(super) fn forget(&mut self, id: RequestId) {
        self.waiting.remove(&id);
    }

    /// Calls submitted and not yet collected.
    pub(super) fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Outcomes waiting to be collected.
    pub(super) fn pending_done(&self) -> usize {
        self.done.len()
    }

    /// `true` when an outcome waits to be collected.
    pub(super) fn has_done(&self) -> bool {
        !self.done.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn outcomes_come_back_once_by_id_or_in_order() {
        let mut o = Outcomes::default();
        for id in 1..=3 {
            o.submitted(RequestId(id));
        }
        o.answered(RequestId(2), b"two");
        o.answered(RequestId(1), b"one");
        assert!(o.take(RequestId(3)).is_none());
        assert_eq!(
            o.take(RequestId(1)).map(Result::ok),
            Some(Some(b"one".to_vec()))
        );
        assert!(!o.is_waiting(RequestId(1)));
        assert_eq!(o.pending(), 2);
        let (id, _) = o.take_any().unwrap();
        assert_eq!(id, RequestId(2));
        assert!(o.take_any().is_none());
        assert_eq!(o.any_waiting(), Some(RequestId(3)));
        o.forget(RequestId(3));
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn borrowed_answers_and_failures_in_order() {
        let mut o = Outcomes::default();
        o.submitted(RequestId(1));
        o.submitted(RequestId(2));
        o.failed(RequestId(1), CallError::unknown(RequestId(1)));
        o.answered(RequestId(2), b"two");
        let (id, outcome) = o.take_any_borrowed().unwrap();
        assert_eq!(id, RequestId(1));
        assert!(outcome.is_err());
        let (id, outcome) = o.take_any_borrowed().unwrap();
        assert_eq!((id, outcome.unwrap()), (RequestId(2), &b"two"[..]));
        assert!(o.take_any_borrowed().is_none());
    }

    /// An empty answer waits while the store is emptied and later compacted: its span
    /// must stay valid (it is kept in no store).
    #[test]
    fn an_empty_answer_survives_emptying_and_compaction() {
        let mut o = Outcomes::default();
        o.submitted(RequestId(1));
        o.answered(RequestId(1), b"");
        for id in 2..40u64 {
            o.submitted(RequestId(id));
            o.answered(RequestId(id), &[7u8; 4096]);
        }
        for id in 2..40u64 {
            assert_eq!(o.take(RequestId(id)).unwrap().unwrap().len(), 4096);
        }
        o.submitted(RequestId(100));
        o.answered(RequestId(100), b"waits");
        for id in 200..220u64 {
            o.submitted(RequestId(id));
            o.answered(RequestId(id), &[1u8; 2048]);
            assert_eq!(o.take(RequestId(id)).unwrap().unwrap().len(), 2048);
        }
        assert_eq!(o.take(RequestId(1)).unwrap().unwrap(), b"");
        assert_eq!(o.take(RequestId(100)).unwrap().unwrap(), b"waits");
    }

    /// A window of calls where some outcome always waits: the store is never emptied, so
    /// only compaction bounds it, and every answer still reads back whole.
    #[test]
    fn the_store_stays_bounded_while_outcomes_always_wait() {
        let mut o = Outcomes::default();
        let body = |id: u64| vec![u8::try_from(id % 251).unwrap(); 1000];
        for id in 0..8 {
            o.submitted(RequestId(id));
            o.answered(RequestId(id), &body(id));
        }
        for id in 8..10_000u64 {
            let (got, outcome) = o.take_any_borrowed().unwrap();
            assert_eq!(outcome.unwrap(), body(got.0).as_slice());
            o.submitted(RequestId(id));
            o.answered(RequestId(id), &body(id));
            // A call collected by id from the middle leaves a hole the compaction closes.
            if id % 7 == 0 {
                o.submitted(RequestId(id + 1_000_000));
                o.answered(RequestId(id + 1_000_000), b"by id");
                assert_eq!(
                    o.take(RequestId(id + 1_000_000)).unwrap().unwrap(),
                    b"by id"
                );
            }
            assert!(
                o.bodies.len() <= 2 * 8 * 1000 + COMPACT_AFTER + 1000,
                "{}",
                o.bodies.len()
            );
        }
        while let Some((got, outcome)) = o.take_any_borrowed() {
            assert_eq!(outcome.unwrap(), body(got.0).as_slice());
        }
        // Nothing waits: the next answer starts the store afresh.
        o.submitted(RequestId(1));
        o.answered(RequestId(1), b"x");
        assert_eq!(o.bodies.len(), 1);
    }
}
