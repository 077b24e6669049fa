//! [`Timer`]: the clock and the sleep the driver needs, from whatever runtime runs it.

use core::future::Future;

use wirecall_core::Instant;

/// The time source of a connection: the current instant, and a way to wait until one.
///
/// The core counts time in microseconds from an epoch the caller picks; a `Timer` supplies
/// that count and sleeps until a given count. The driver never reads a clock of its own,
/// so it runs on any executor: on embassy, implement it over `embassy_time` (the epoch is
/// boot); on tokio (as the host tests do) over `tokio::time`.
///
/// ```ignore
/// use core::future::Future;
/// use wirecall_core::Instant;
///
/// /// embassy-time as the driver's clock: its ticks since boot, in microseconds.
/// struct EmbassyTimer;
///
/// impl wirecall_embedded::Timer for EmbassyTimer {
///     fn now(&self) -> Instant {
///         Instant::from_micros(embassy_time::Instant::now().as_micros())
///     }
///
///     fn sleep_until(&mut self, at: Instant) -> impl Future<Output = ()> {
///         embassy_time::Timer::at(embassy_time::Instant::from_micros(at.as_micros()))
///     }
/// }
/// ```
pub trait Timer {
    /// The current instant, on the same clock as every earlier call (never going back).
    fn now(&self) -> Instant;

    /// A future that completes at `at` or soon after (at once if `at` has passed). The
    /// driver drops it unfinished when input arrives first, so dropping it must be
    /// harmless.
    fn sleep_until(&mut self, at: Instant) -> impl Future<Output = ()>;
}

impl<T: Timer + ?Sized> Timer for &mut T {
    fn now(&self) -> Instant {
        T::now(self)
    }

    fn sleep_until(&mut self, at: Instant) -> impl Future<Output = ()> {
        T::sleep_until(self, at)
    }
}
