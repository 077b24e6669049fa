//! [`Table`]: the storage of a stream connection's request or call table.
//!
//! Any fixed slice works as is (`[RequestSlot; N]`, `Box<[CallSlot]>`, `Vec<_>` at its
//! current length): every `AsRef<[T]> + AsMut<[T]>` type is a `Table` that never grows.
//! A runtime with a heap can do better for many mostly idle connections: a table that is
//! empty until the first request, grows (doubling) only as far as the calls in flight need,
//! and is given back when the connection is idle (implement the optional methods on a type
//! of your own, or take `GrowTable` with the `alloc` feature). The core never allocates:
//! it only asks the storage to grow, as it does a [`Buffer`](crate::buffer::Buffer).

/// Storage for a connection's table of requests (server) or calls (client).
pub trait Table<T> {
    /// The slots as they are now.
    fn entries(&self) -> &[T];

    /// The slots as they are now, to write into.
    fn entries_mut(&mut self) -> &mut [T];

    /// The most slots this storage can ever hold; fixed storage: its length. It bounds
    /// the calls in flight the connection allows (and, on a server, announces).
    fn max_len(&self) -> usize {
        self.entries().len()
    }

    /// Grows to `len` slots if it can (never past [`max_len`](Self::max_len)), keeping
    /// the slots there are and filling the new ones with `empty`. Fixed storage does
    /// nothing. Storage that stays short of what it announced in `max_len` costs calls, not
    /// correctness: past its slots a server answers busy and a client refuses the call
    /// (`TooManyInFlight`).
    fn grow(&mut self, len: usize, empty: T) {
        let _ = (len, empty);
    }

    /// May give back every slot. Called only when every slot is free. Fixed storage does
    /// nothing.
    fn release(&mut self) {}
}

impl<T, S: AsRef<[T]> + AsMut<[T]>> Table<T> for S {
    fn entries(&self) -> &[T] {
        self.as_ref()
    }

    fn entries_mut(&mut self) -> &mut [T] {
        self.as_mut()
    }
}

/// Heap storage for a table that is empty until it is needed (feature `alloc`): a `Vec`
/// that grows, when the core asks, up to `max` slots, and is given back when the
/// connection is idle. A connection with one call at a time holds a few slots rather
/// than its whole in-flight limit, so thousands of idle connections cost little memory.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowTable<T> {
    entries: alloc::vec::Vec<T>,
    max: usize,
}

#[cfg(feature = "alloc")]
impl<T> GrowTable<T> {
    /// No slots now, up to `max` later.
    ///
    /// ```
    /// use wirecall_core::buffer::GrowBuf;
    /// use wirecall_core::server::{RequestSlot, ServerConnection};
    /// use wirecall_core::table::GrowTable;
    /// use wirecall_core::{Config, Instant};
    ///
    /// // Up to 64 requests in flight (announced in the hello), slots only as they come.
    /// let config = Config::default();
    /// let buffer = || GrowBuf::new(0, config.buffer_len());
    /// let table = GrowTable::<RequestSlot>::new(64);
    /// let conn = ServerConnection::new(config, buffer(), buffer(), table, Instant::ZERO)?;
    /// assert_eq!(conn.peer(), None);
    /// # Ok::<(), wirecall_core::config::ConfigError>(())
    /// ```
    #[must_use]
    pub const fn new(max: usize) -> Self {
        Self {
            entries: alloc::vec::Vec::new(),
            max,
        }
    }
}

#[cfg(feature = "alloc")]
impl<T: Copy> Table<T> for GrowTable<T> {
    fn entries(&self) -> &[T] {
        &self.entries
    }

    fn entries_mut(&mut self) -> &mut [T] {
        &mut self.entries
    }

    fn max_len(&self) -> usize {
        self.max
    }

    fn grow(&mut self, len: usize, empty: T) {
        let len = len.min(self.max);
        if len > self.entries.len() {
            // Exactly `len`: a table doubles on its own, so no slack on top.
            self.entries
                .reserve_exact(len.saturating_sub(self.entries.len()));
            self.entries.resize(len, empty);
        }
    }

    fn release(&mut self) {
        self.entries = alloc::vec::Vec::new();
    }
}

/// A slot type the table helpers can move: a key of 0 marks a free slot.
pub(crate) trait Keyed: Copy {
    /// A free slot.
    const FREE: Self;
    /// The slot's id, 0 when free.
    fn key(&self) -> u64;
}

/// The smallest table a growable one starts at: a few slots, since most connections have
/// one call or a handful in flight.
const FIRST_LEN: usize = 4;

/// A free slot for a new entry with key `id`, growing the table first when it is three
/// quarters full (or empty) and may grow: never past `limit`, the calls in flight allowed
/// (the callers' limits never exceed the storage's [`Table::max_len`]). `occupied` is the
/// number of slots in use. `None` only when the table is full.
// Always inlined: out of line, the call's prologue alone cost more than the check.
#[inline(always)]
pub(crate) fn claim<T: Keyed, S: Table<T>>(
    table: &mut S,
    id: u64,
    occupied: usize,
    limit: usize,
) -> Option<usize> {
    let len = table.entries().len();
    if occupied >= len.saturating_sub(len / 4) && len < limit {
        grow_table(table, limit);
    }
    crate::conn::find_slot(table.entries(), id, |s| s.key() == 0)
}

/// Doubles the table (to [`FIRST_LEN`] from empty), never past `limit` or its storage's
/// most; a fixed table stays as it is. Out of line: a table grows a handful of times.
#[cold]
#[inline(never)]
fn grow_table<T: Keyed, S: Table<T>>(table: &mut S, limit: usize) {
    let len = table.entries().len();
    let limit = limit.min(table.max_len());
    if len < limit {
        table.grow(len.saturating_mul(2).max(FIRST_LEN).min(limit), T::FREE);
        rehash(table.entries_mut(), len);
    }
}

/// After a table grew from `old` slots, moves each entry of the old part to the first
/// free slot from its new home, so lookups stay one comparison in the common case.
/// Lookups scan the whole table (they never stop at a free slot), so an entry is found
/// wherever it sits: this only restores speed, never correctness.
fn rehash<T: Keyed>(entries: &mut [T], old: usize) {
    if entries.len() <= old {
        return;
    }
    for index in 0..old {
        let Some(slot) = entries.get_mut(index) else {
            return;
        };
        let entry = *slot;
        if entry.key() == 0 {
            continue;
        }
        *slot = T::FREE;
        // The slot just freed is free, so there is always one.
        if let Some(to) = crate::conn::find_slot(entries, entry.key(), |s| s.key() == 0)
            && let Some(free) = entries.get_mut(to)
        {
            *free = entry;
        }
    }
}

/// Gives the table back when every slot is free (`occupied` is 0).
pub(crate) fn release_if_empty<T, S: Table<T>>(table: &mut S, occupied: usize) {
    if occupied == 0 && !table.entries().is_empty() {
        table.release();
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Slot(u64);

    impl Keyed for Slot {
        const FREE: Self = Self(0);
        fn key(&self) -> u64 {
            self.0
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn test_grows_by_doubling_to_its_limit_and_keeps_every_entry() {
        let mut table = GrowTable::<Slot>::new(64);
        assert!(table.entries().is_empty());
        let mut occupied = 0;
        let mut lens = alloc::vec::Vec::new();
        for id in 1..=64u64 {
            let index = claim(&mut table, id, occupied, 64).expect("a free slot under the limit");
            table.entries_mut()[index] = Slot(id);
            occupied += 1;
            if lens.last() != Some(&table.entries().len()) {
                lens.push(table.entries().len());
            }
        }
        assert_eq!(lens, [4, 8, 16, 32, 64]);
        assert_eq!(
            claim(&mut table, 65, occupied, 64),
            None,
            "full at the limit"
        );
        for id in 1..=64u64 {
            let at = crate::conn::find_slot(table.entries(), id, |s| s.0 == id);
            assert_eq!(
                at,
                Some(usize::try_from(id % 64).unwrap()),
                "{id} at its home"
            );
        }
        release_if_empty(&mut table, occupied);
        assert_eq!(table.entries().len(), 64, "not given back while in use");
        table.entries_mut().fill(Slot::FREE);
        release_if_empty(&mut table, 0);
        assert!(table.entries().is_empty());
        assert_eq!(table.entries.capacity(), 0);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn test_rehash_keeps_entries_that_wrapped() {
        // Ids 3, 7, 11 all have home 3 in a table of 4: two of them wrap to 0 and 1.
        let mut table = GrowTable::<Slot>::new(16);
        let mut occupied = 0;
        for id in [3u64, 7, 11] {
            let index = claim(&mut table, id, occupied, 16).expect("room");
            table.entries_mut()[index] = Slot(id);
            occupied += 1;
        }
        assert_eq!(table.entries().len(), 4);
        let index = claim(&mut table, 2, occupied, 16).expect("room after growing");
        assert_eq!(table.entries().len(), 8);
        table.entries_mut()[index] = Slot(2);
        let mut keys: alloc::vec::Vec<u64> = table
            .entries()
            .iter()
            .map(|s| s.0)
            .filter(|&k| k != 0)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, [2, 3, 7, 11], "nothing lost or doubled");
    }

    #[test]
    fn test_a_fixed_table_never_grows() {
        let mut table = [Slot::FREE; 2];
        let a = claim(&mut table, 1, 0, 64).expect("room");
        table[a] = Slot(1);
        let b = claim(&mut table, 2, 1, 64).expect("room");
        table[b] = Slot(2);
        assert_eq!(claim(&mut table, 3, 2, 64), None);
        release_if_empty(&mut table, 0);
        assert_eq!(table.entries().len(), 2);
        let mut empty: [Slot; 0] = [];
        assert_eq!(claim(&mut empty, 1, 0, 64), None, "no slots, no panic");
    }
}
