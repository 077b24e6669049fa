//! Time as the core sees it: an [`Instant`] the caller supplies and a [`Duration`] between two.
//!
//! The core never reads a clock. Every entry point takes `now`, and timers are reported back
//! through `poll_timeout`. Both types count microseconds in a `u64` (about 584,000 years), so
//! arithmetic saturates instead of overflowing and a runtime may pick any epoch it likes.

use core::fmt;

/// A point in time, in microseconds since an epoch chosen by the caller.
///
/// Only differences between instants from the same clock are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    micros: u64,
}

/// A span of time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration {
    micros: u64,
}

impl Instant {
    /// The epoch itself.
    pub const ZERO: Self = Self { micros: 0 };

    /// An instant `micros` microseconds after the epoch.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// An instant `millis` milliseconds after the epoch (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the epoch.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// This instant plus `d`, saturating at the far future.
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self {
            micros: self.micros.saturating_add(d.micros),
        }
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration {
            micros: self.micros.saturating_sub(earlier.micros),
        }
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Self = Self { micros: 0 };

    /// A duration of `micros` microseconds.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// A duration of `millis` milliseconds (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            micros: millis.saturating_mul(1000),
        }
    }

    /// A duration of `secs` seconds (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            micros: secs.saturating_mul(1_000_000),
        }
    }

    /// Whole microseconds.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Milliseconds, rounded up, so a non-zero duration never becomes zero.
    #[must_use]
    pub const fn as_millis_ceil(self) -> u64 {
        self.micros.div_ceil(1000)
    }

    /// The sum, saturating.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self {
            micros: self.micros.saturating_add(other.micros),
        }
    }

    /// The duration times `n`, saturating.
    #[must_use]
    pub const fn saturating_mul(self, n: u64) -> Self {
        Self {
            micros: self.micros.saturating_mul(n),
        }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.micros < 1000 {
            write!(f, "{}us", self.micros)
        } else if self.micros < 1_000_000 {
            write!(f, "{}.{:03}ms", self.micros / 1000, self.micros % 1000)
        } else {
            write!(
                f,
                "{}.{:06}s",
                self.micros / 1_000_000,
                self.micros % 1_000_000
            )
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let far = Instant::from_micros(u64::MAX);
        assert_eq!(far.saturating_add(Duration::from_secs(1)), far);
        assert_eq!(Instant::ZERO.saturating_duration_since(far), Duration::ZERO);
        assert_eq!(Duration::from_micros(1).as_millis_ceil(), 1);
        assert_eq!(Duration::from_micros(1000).as_millis_ceil(), 1);
        assert_eq!(Duration::from_micros(1001).as_millis_ceil(), 2);
    }

    #[test]
    fn display() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{}", Duration::from_micros(12)), "12us");
        assert_eq!(format!("{}", Duration::from_micros(1500)), "1.500ms");
        assert_eq!(format!("{}", Instant::from_millis(2500)), "2.500000s");
    }
}
