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
/// cannot run) and converts its microseconds with one subtraction, since the event loops
/// read the clock on every turn and std's `Instant` differences (checked, in 128-bit
/// microseconds) cost several times that. std's `Instant` reads the same clock on Linux;
/// one calibration per process maps between the two, so [`from_std`](Self::from_std),
/// [`to_std`](Self::to_std) and `now` agree, and clocks with the same epoch are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    epoch: StdInstant,
    /// The epoch on the monotonic clock read directly, in microseconds (below zero for an
    /// epoch before the clock's start).
    #[cfg(target_os = "linux")]
    epoch_micros: i64,
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
            epoch_micros: monotonic_at(epoch),
        }
    }

    /// Now, as a core instant (the epoch, before it).
    #[cfg(target_os = "linux")]
    #[must_use]
    pub fn now(&self) -> Instant {
        let since = monotonic_micros().saturating_sub(self.epoch_micros);
        Instant::from_micros(u64::try_from(since).unwrap_or(0))
    }

    /// Now, as a core instant (the epoch, before it).
    #[cfg(not(target_os = "linux"))]
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

/// `CLOCK_MONOTONIC` now, in microseconds.
#[cfg(target_os = "linux")]
fn monotonic_micros() -> i64 {
    // Cannot fail for this clock on Linux; a zero would read as an early time, never a panic.
    let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else {
        return 0;
    };
    let micros = t.tv_nsec() / 1000;
    t.tv_sec().saturating_mul(1_000_000).saturating_add(micros)
}

/// One std instant and the same moment on the monotonic clock read directly, in
/// microseconds, taken once per process so that every clock maps between the two the same
/// way. The two clocks are read back to back a few times, and the pair read closest
/// together is kept (a pair far apart was preempted between its reads).
#[cfg(target_os = "linux")]
fn calibration() -> (StdInstant, i64) {
    /// One reading: how far apart its monotonic reads were, the std instant, and the
    /// monotonic time midway.
    struct Pair {
        gap: i64,
        at: StdInstant,
        micros: i64,
    }
    static PAIR: OnceLock<(StdInstant, i64)> = OnceLock::new();
    *PAIR.get_or_init(|| {
        let mut best: Option<Pair> = None;
        for _ in 0..8 {
            let before = monotonic_micros();
            let at = StdInstant::now();
            let after = monotonic_micros();
            let gap = after.saturating_sub(before);
            let pair = Pair {
                gap,
                at,
                micros: before.saturating_add(gap / 2),
            };
            if best.as_ref().is_none_or(|b| pair.gap < b.gap) {
                best = Some(pair);
            }
            if gap <= 2 {
                break;
            }
        }
        best.map_or_else(
            || (StdInstant::now(), monotonic_micros()),
            |b| (b.at, b.micros),
        )
    })
}

/// Where the std instant `at` falls on the monotonic clock read directly, in microseconds.
#[cfg(target_os = "linux")]
fn monotonic_at(at: StdInstant) -> i64 {
    let micros = |d: StdDuration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let (base, base_micros) = calibration();
    match at.checked_duration_since(base) {
        Some(after) => base_micros.saturating_add(micros(after)),
        None => base_micros.saturating_sub(micros(base.saturating_duration_since(at))),
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
    fn the_clock_read_directly_agrees_with_std_instants() {
        let now = StdInstant::now();
        let mut clocks = vec![Clock::default(), Clock::with_epoch(now)];
        clocks.extend(
            now.checked_sub(StdDuration::from_secs(5))
                .map(Clock::with_epoch),
        );
        for clock in clocks {
            // One clock: a std instant read between two reads of `now` falls between
            // them, give or take the microseconds the calibration's reads were apart.
            let slack = Duration::from_micros(50);
            let a = clock.now();
            let b = clock.from_std(StdInstant::now());
            let c = clock.now();
            assert!(a <= b.saturating_add(slack), "{a:?} {b:?}");
            assert!(b <= c.saturating_add(slack), "{b:?} {c:?}");
        }
        // Before its epoch a clock reads its zero, as `from_std` maps it.
        let ahead = Clock::with_epoch(now + StdDuration::from_secs(5));
        assert_eq!(ahead.now(), Instant::ZERO);
        // A clock whose epoch was 5 s ago reads at least 5 s.
        if let Some(past) = now.checked_sub(StdDuration::from_secs(5)) {
            let five = Instant::ZERO.saturating_add(Duration::from_secs(5));
            assert!(Clock::with_epoch(past).now() >= five);
        }
        // The same epoch, the same clock.
        assert_eq!(Clock::with_epoch(now), Clock::with_epoch(now));
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
