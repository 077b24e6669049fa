//! The core's clock, fed from [`tokio::time::Instant`]: microseconds since the driver
//! started, so tokio's paused time (`tokio::time::pause`) drives the core too.

use tokio::time::Instant as TokioInstant;
use wirecall_core::Instant;

/// Converts between tokio's instants and the core's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: TokioInstant,
}

impl Clock {
    /// A clock whose zero is now.
    pub(crate) fn new() -> Self {
        Self {
            epoch: TokioInstant::now(),
        }
    }

    /// Now, on the core's clock.
    pub(crate) fn now(&self) -> Instant {
        self.core_at(TokioInstant::now())
    }

    /// A tokio instant on the core's clock (instants before the epoch are its zero).
    pub(crate) fn core_at(&self, at: TokioInstant) -> Instant {
        let micros = at.saturating_duration_since(self.epoch).as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// A core instant as a tokio instant, to sleep until (far in the future when it does
    /// not fit).
    pub(crate) fn tokio_at(&self, at: Instant) -> TokioInstant {
        let d = std::time::Duration::from_micros(at.as_micros());
        self.epoch
            .checked_add(d)
            .unwrap_or_else(|| far_future(self.epoch))
    }

    /// A std instant (from a `Responder::respond_after`) on the core's clock.
    pub(crate) fn core_at_std(&self, at: std::time::Instant) -> Instant {
        self.core_at(TokioInstant::from_std(at))
    }
}

/// About thirty years on: "never" for a timer.
fn far_future(from: TokioInstant) -> TokioInstant {
    from + std::time::Duration::from_secs(86_400 * 365 * 30)
}

/// A task's one timer: a tokio `Sleep` made once and moved only when the instant it should
/// wake at changes, so a turn of a busy connection does not register a new timer each time.
#[derive(Debug)]
pub(crate) struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    /// A timer that is not set.
    pub(crate) fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(far_future(TokioInstant::now()))),
            armed: None,
        }
    }

    /// Makes the timer fire by `at` on `clock` (`None`: no need to). It is only ever moved
    /// earlier: a timer armed earlier than needed fires, the task finds nothing due and
    /// sets it again, which is cheaper than moving it later on every turn (a connection's
    /// keepalive deadline moves with every byte received).
    pub(crate) fn set(&mut self, clock: &Clock, at: Option<Instant>) {
        let Some(at) = at else {
            return;
        };
        if self.armed.is_none_or(|armed| at < armed) {
            self.armed = Some(at);
            self.sleep.as_mut().reset(clock.tokio_at(at));
        }
    }

    /// Waits until the instant set, or for ever when none is.
    pub(crate) async fn wait(&mut self) {
        if self.armed.is_some() {
            self.sleep.as_mut().await;
            // Fired: the next `set` re-arms it even for the same instant.
            self.armed = None;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let clock = Clock::new();
        let at = Instant::from_micros(1_234_567);
        assert_eq!(clock.core_at(clock.tokio_at(at)), at);
        assert_eq!(clock.core_at(clock.epoch), Instant::ZERO);
        let huge = clock.tokio_at(Instant::from_micros(u64::MAX));
        assert!(huge > clock.epoch);
    }
}
