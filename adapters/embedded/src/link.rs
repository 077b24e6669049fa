//! What both roles share: moving bytes between a transport and a stream connection, and
//! waiting, steps 3 and 4 of the core's driver contract. Events (step 2) are role-specific
//! and live in `client.rs` and `server.rs`.
//!
//! The transport is one `Read + Write` value, so a turn either writes or reads, never both
//! at once: while the connection has bytes to send the driver waits for the transport to
//! take them (racing the timer), and reads only when nothing is queued. The core applies
//! backpressure the same way (it stops taking frames while its transmit buffer is full).

use embedded_io_async::{Read, Write};
use wirecall_core::{Duration, Instant, StreamConnection};

use crate::error::Error;
use crate::race::{Stop, Won, race};
use crate::timer::Timer;

/// How long a connection that has reported its end may still spend sending what it
/// holds (a close frame, answers), unless [`Settings::linger`] says otherwise.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// What the driver needs besides storage: the connection's protocol settings and the
/// transport's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Settings {
    /// The connection's limits and timers, as the core takes them. Its `max_frame_len`
    /// is clamped to what the storage's receive buffer holds.
    pub connection: wirecall_core::Config,
    /// How long the driver keeps sending after the connection reported its end (the
    /// close frame, answers still queued) before it gives up on a peer that does not read.
    /// A transport matter, not a protocol one. Default: [`DEFAULT_LINGER`].
    pub linger: Duration,
}

impl Settings {
    /// Settings with these connection limits and the default linger.
    #[must_use]
    pub const fn new(connection: wirecall_core::Config) -> Self {
        Self {
            connection,
            linger: DEFAULT_LINGER,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new(wirecall_core::Config::default())
    }
}

/// What ended one wait.
pub(crate) enum Wake {
    /// Bytes moved (or the transport ended): take events.
    Moved,
    /// The deadline passed: take events (they fire the timers).
    Timer,
    /// The stop signal completed.
    Stop,
}

/// A transport and the clock that drive one connection.
pub(crate) struct Link<T, C> {
    pub(crate) io: T,
    pub(crate) timer: C,
}

impl<T, C> Link<T, C>
where
    T: Read + Write,
    C: Timer,
{
    /// One wait: writes what `conn` has to send, or else reads into its receive buffer,
    /// until that completes, `deadline` passes or `stop` completes. A read of 0 bytes is
    /// the end of the stream.
    ///
    /// Cancel safety: when the deadline or stop wins, the unfinished `read` or `write`
    /// future is dropped. This relies on the transport's `read` and `write` taking no
    /// bytes unless they complete (embedded-io-async asks implementations to be so, and
    /// embassy-net's `TcpSocket` and embedded-io-adapters' tokio wrapper are).
    pub(crate) async fn pump<K: StreamConnection>(
        &mut self,
        conn: &mut K,
        deadline: Option<Instant>,
        stop: Option<Stop<'_, '_>>,
    ) -> Result<Wake, Error<T::Error>> {
        let Self { io, timer } = self;
        let sleep = sleep_until(timer, deadline);
        if !conn.transmit().is_empty() {
            let won = race(io.write(conn.transmit()), sleep, stop).await;
            return match won {
                Won::Io(Ok(0)) => Err(Error::WriteZero),
                Won::Io(Ok(n)) => {
                    trace!("wrote {} bytes", n);
                    conn.advance_transmit(n);
                    Ok(Wake::Moved)
                }
                Won::Io(Err(e)) => Err(Error::Io(e)),
                Won::Timer => Ok(Wake::Timer),
                Won::Stop => Ok(Wake::Stop),
            };
        }
        if conn.input_buffer().is_empty() {
            // Frames wait to be taken but the caller took none: only time can change that.
            if deadline.is_none() && stop.is_none() {
                return Err(Error::Stalled);
            }
            let won = race(core::future::pending::<()>(), sleep, stop).await;
            return Ok(match won {
                Won::Stop => Wake::Stop,
                Won::Io(()) | Won::Timer => Wake::Timer,
            });
        }
        let won = race(io.read(conn.input_buffer()), sleep, stop).await;
        match won {
            Won::Io(Ok(0)) => {
                debug!("transport ended");
                conn.handle_eof();
                Ok(Wake::Moved)
            }
            Won::Io(Ok(n)) => {
                trace!("read {} bytes", n);
                conn.commit_input(timer.now(), n);
                Ok(Wake::Moved)
            }
            Won::Io(Err(e)) => Err(Error::Io(e)),
            Won::Timer => Ok(Wake::Timer),
            Won::Stop => Ok(Wake::Stop),
        }
    }

    /// Sends what `conn` still holds, until it is all out or `until` passes; then flushes
    /// the transport (within the same bound). For a connection that has reported its end.
    pub(crate) async fn linger<K: StreamConnection>(
        &mut self,
        conn: &mut K,
        until: Instant,
    ) -> Result<(), Error<T::Error>> {
        while !conn.transmit().is_empty() {
            match self.pump(conn, Some(until), None).await? {
                Wake::Moved => {}
                Wake::Timer | Wake::Stop => return Ok(()),
            }
        }
        let Self { io, timer } = self;
        match race(io.flush(), sleep_until(timer, Some(until)), None).await {
            Won::Io(r) => r.map_err(Error::Io),
            Won::Timer | Won::Stop => Ok(()),
        }
    }

    /// Reads and drops what the peer still sends until it closes its end or `until`
    /// passes. A socket closed with unread input is reset, and a reset can destroy the
    /// last answers before the peer has read them; waiting for the peer's end first lets
    /// them arrive.
    pub(crate) async fn discard_until_eof(&mut self, until: Instant) {
        let mut sink = [0u8; 64];
        loop {
            let Self { io, timer } = &mut *self;
            match race(io.read(&mut sink), sleep_until(timer, Some(until)), None).await {
                Won::Io(Ok(n)) if n > 0 => {}
                Won::Io(_) | Won::Timer | Won::Stop => return,
            }
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until<C: Timer>(timer: &mut C, at: Option<Instant>) {
    match at {
        Some(at) => timer.sleep_until(at).await,
        None => core::future::pending().await,
    }
}

/// The earlier of two optional instants (`None` is never).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
