//! A cheap hasher for tables keyed by call ids, registered function names, or the
//! server's own handles (event-loop tokens, a datagram endpoint's request handles).
//!
//! A connection's call ids are its own counter, never chosen by a peer, and the function
//! table is fixed when the server is built (a peer's method name is only looked up in
//! it); tokens and request handles are the server's own numbering. So a multiplicative
//! hash spreads the keys well enough and nobody can aim collisions at a table. SipHash, the std default, would cost about 100 instructions per lookup on the
//! path of every call.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by call ids or the server's own handles.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A `HashSet` of call ids or the server's own handles.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`] and [`IdSet`]. See the [module docs](self).
#[derive(Debug, Default)]
pub struct IdHasher(u64);

/// The odd multiplier (2^64 / golden ratio) that spreads consecutive ids over the table.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(SPREAD);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(SPREAD);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn consecutive_ids_land_in_different_buckets() {
        let mut set: IdSet<u64> = IdSet::default();
        for id in 0..1000u64 {
            assert!(set.insert(id));
        }
        assert_eq!(set.len(), 1000);
        // hashbrown takes the bucket from the low bits and a tag from the top seven.
        let hash = |id: u64| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish()
        };
        let low: std::collections::HashSet<u64> = (0..64u64).map(|id| hash(id) & 63).collect();
        assert_eq!(low.len(), 64, "64 consecutive ids, 64 low-bit buckets");
        let top: std::collections::HashSet<u64> = (0..64u64).map(|id| hash(id) >> 58).collect();
        assert!(top.len() > 32, "{} of 64 top-bit tags used", top.len());
    }
}
