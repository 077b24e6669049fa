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
///
/// [`now`](Self::now) reads `CLOCK_MONOTONIC` itself on Linux (through nix and the C
/// library, from the vDSO: no system call; not rustix's own vDSO reader, which valgrind
/// cannot run) and converts its microseconds with one subtraction: the event
/// loops read the clock on every turn, and going through [`std::time::Instant`] (its
/// checked subtraction and 128-bit microseconds) cost about 60 more instructions a read.
/// std's `Instant` reads the same clock on Linux, so [`from_std`](Self::from_std) and
/// [`to_std`](Self::to_std) agree with it (a test holds them to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    epoch: StdInstant,
    /// The epoch on the monotonic clock read directly, in microseconds.
    #[cfg(target_os = "linux")]
    epoch_micros: u64,
}

impl Default for Clock {
    /// A clock on the process-wide epoch.
    fn default() -> Self {
        static EPOCH: OnceLock<Clock> = OnceLock::new();
        *EPOCH.get_or_init(|| Self::with_epoch(StdInstant::now()))
    }
}

impl Clock {
    /// A clock whose [`Instant::ZERO`] is `epoch`.
    #[must_use]
    pub fn with_epoch(epoch: StdInstant) -> Self {
        Self {
            epoch,
            #[cfg(target_os = "linux")]
            epoch_micros: monotonic_epoch(epoch),
        }
    }

    /// Now, as a core instant.
    #[must_use]
    pub fn now(&self) -> Instant {
        #[cfg(target_os = "linux")]
        return Instant::from_micros(monotonic_micros().saturating_sub(self.epoch_micros));
        #[cfg(not(target_os = "linux"))]
        return self.from_std(StdInstant::now());
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

/// `CLOCK_MONOTONIC` now, in microseconds.
#[cfg(target_os = "linux")]
fn monotonic_micros() -> u64 {
    // Cannot fail for this clock on Linux; a zero would read as the epoch, never a panic.
    let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else {
        return 0;
    };
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000;
    secs.saturating_mul(1_000_000).saturating_add(micros)
}

/// Where the std instant `epoch` falls on the monotonic clock read directly, in
/// microseconds: the two clocks are read back to back, a few times if a read pair is
/// far apart (the thread was preempted between them), and the pair closest together is
/// taken.
#[cfg(target_os = "linux")]
fn monotonic_epoch(epoch: StdInstant) -> u64 {
    let mut best: Option<(u64, u64)> = None; // (gap, epoch)
    for _ in 0..8 {
        let before = monotonic_micros();
        let std_now = StdInstant::now();
        let after = monotonic_micros();
        let mid = before.saturating_add(after.saturating_sub(before) / 2);
        let at = match epoch.checked_duration_since(std_now) {
            Some(ahead) => mid.saturating_add(micros_of(ahead)),
            None => mid.saturating_sub(micros_of(std_now.saturating_duration_since(epoch))),
        };
        let gap = after.saturating_sub(before);
        if best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, at));
        }
        if gap <= 2 {
            break;
        }
    }
    best.map_or(0, |(_, at)| at)
}

#[cfg(target_os = "linux")]
fn micros_of(d: StdDuration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
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
    fn the_clock_read_directly_agrees_with_std_instants() {
        for clock in [
            Clock::default(),
            Clock::with_epoch(StdInstant::now() - StdDuration::from_secs(5)),
            Clock::with_epoch(StdInstant::now() + StdDuration::from_secs(5)),
        ] {
            // One clock: a std instant read between two reads of `now` falls between
            // them, give or take the microseconds the epoch's read pair was apart.
            let slack = Duration::from_micros(50);
            let a = clock.now();
            let b = clock.from_std(StdInstant::now());
            let c = clock.now();
            assert!(a <= b.saturating_add(slack), "{a:?} {b:?}");
            assert!(b <= c.saturating_add(slack), "{b:?} {c:?}");
        }
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
