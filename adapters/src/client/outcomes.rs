//! The calls a client has submitted and not yet handed back, and the outcomes that came
//! for them: the bookkeeping `wait` and `wait_any` share on every transport.

use std::collections::VecDeque;

use wirecall_core::RequestId;

use super::Outcome;
use crate::id_hasher::IdSet;

/// Calls submitted and not yet collected, and the outcomes not yet collected.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    /// Every call submitted and not yet collected, whether or not it has ended.
    waiting: IdSet<RequestId>,
    /// Outcomes not yet collected, in the order they came.
    done: VecDeque<(RequestId, Outcome)>,
}

impl Outcomes {
    /// A call was submitted.
    pub(super) fn submitted(&mut self, id: RequestId) {
        self.waiting.insert(id);
    }

    /// A call ended; its outcome waits to be collected.
    pub(super) fn ended(&mut self, id: RequestId, outcome: Outcome) {
        self.done.push_back((id, outcome));
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
        Some(outcome)
    }

    /// Collects the oldest outcome that has come.
    pub(super) fn take_any(&mut self) -> Option<(RequestId, Outcome)> {
        let (id, outcome) = self.done.pop_front()?;
        self.waiting.remove(&id);
        Some((id, outcome))
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
        o.ended(RequestId(2), Ok(b"two".to_vec()));
        o.ended(RequestId(1), Ok(b"one".to_vec()));
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
}
