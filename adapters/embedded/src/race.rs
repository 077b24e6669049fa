//! The one combinator the driver needs: a transport operation raced against the
//! connection's next timer and, for a server, its stop signal.

use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::Poll;

/// A stop signal as the driver holds it: borrowed and pinned, so no allocation is needed.
pub(crate) type Stop<'a, 'f> = Pin<&'a mut (dyn Future<Output = ()> + 'f)>;

/// Which of the raced futures finished first.
pub(crate) enum Won<T> {
    /// The transport operation, with its result.
    Io(T),
    /// The timer.
    Timer,
    /// The stop signal.
    Stop,
}

/// Polls `io`, then `stop`, then `timer`, until one is ready; the others are dropped
/// unfinished. `io` comes first so that input already there is never lost to a timer that
/// is due at the same time (the timer fires at the next turn anyway).
pub(crate) async fn race<A, B>(io: A, timer: B, stop: Option<Stop<'_, '_>>) -> Won<A::Output>
where
    A: Future,
    B: Future<Output = ()>,
{
    let mut io = pin!(io);
    let mut timer = pin!(timer);
    let mut stop = stop;
    poll_fn(move |cx| {
        if let Poll::Ready(out) = io.as_mut().poll(cx) {
            return Poll::Ready(Won::Io(out));
        }
        if let Some(stop) = stop.as_mut() {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Won::Stop);
            }
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Won::Timer);
        }
        Poll::Pending
    })
    .await
}
