//! The core's time from the OS clock: [`std::time::Instant`] mapped to
//! [`wirecall_core::Instant`] (microseconds) against a fixed epoch.
//!
//! The core never reads a clock; the adapter passes it `clock.now()`. [`Clock::default`] uses
//! one epoch for the whole process (the first time any clock is made), so instants from
//! different clocks compare.

use std::sync::OnceLock;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use wirecall_core::{Duration, Instant};

/// Maps the monotonic OS clock to core instants. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    epoch: StdInstant,
}

impl Default for Clock {
    /// A clock on the process-wide epoch.
    fn default() -> Self {
        static EPOCH: OnceLock<StdInstant> = OnceLock::new();
        Self {
            epoch: *EPOCH.get_or_init(StdInstant::now),
        }
    }
}

impl Clock {
    /// A clock whose [`Instant::ZERO`] is `epoch`.
    #[must_use]
    pub fn with_epoch(epoch: StdInstant) -> Self {
        Self { epoch }
    }

    /// Now, as a core instant.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.from_std(StdInstant::now())
    }

    /// A std instant as a core instant; instants before the epoch map to the epoch.
    #[must_use]
    pub fn from_std(&self, at: StdInstant) -> Instant {
        let micros = at.saturating_duration_since(self.epoch).as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// A core instant as a std instant (saturating far in the future).
    #[must_use]
    pub fn to_std(&self, at: Instant) -> StdInstant {
        let since = StdDuration::from_micros(at.as_micros());
        self.epoch
            .checked_add(since)
            .unwrap_or_else(|| far_future(self.epoch))
    }
}

/// A std duration as a core duration (saturating).
#[must_use]
pub fn to_core(d: StdDuration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A core duration as a std duration.
#[must_use]
pub fn to_std(d: Duration) -> StdDuration {
    StdDuration::from_micros(d.as_micros())
}

/// About thirty years after `from`: as far as a std instant safely goes.
fn far_future(from: StdInstant) -> StdInstant {
    let thirty_years = StdDuration::from_secs(30 * 365 * 24 * 3600);
    from.checked_add(thirty_years).unwrap_or(from)
}

/// A random word for spreading things out (connection-age deadlines, a fleet client's
/// first endpoint): a fresh `RandomState` is seeded anew each time, so this needs no
/// random-number crate and no descriptor (unlike [`crate::driver::random_words`], which
/// reads the OS's random source for what must not be guessed). Not for secrets.
#[must_use]
pub fn spread_random() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_round_trip_and_order() {
        let clock = Clock::default();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        let std_now = StdInstant::now();
        let core_now = clock.from_std(std_now);
        let back = clock.to_std(core_now);
        // Microsecond resolution: the round trip loses less than a microsecond.
        assert!(std_now.saturating_duration_since(back) < StdDuration::from_micros(1));
    }

    #[test]
    fn test_before_epoch_and_far_future() {
        let epoch = StdInstant::now();
        let clock = Clock::with_epoch(epoch + StdDuration::from_secs(10));
        assert_eq!(clock.from_std(epoch), Instant::ZERO);
        let far = clock.to_std(Instant::from_micros(u64::MAX));
        assert!(far > epoch);
    }

    #[test]
    fn test_durations() {
        assert_eq!(
            to_core(StdDuration::from_millis(3)),
            Duration::from_millis(3)
        );
        assert_eq!(
            to_std(Duration::from_micros(7)),
            StdDuration::from_micros(7)
        );
    }
}
