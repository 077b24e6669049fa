//! The client of one connection: [`Client::call`] sends a call and waits for its one
//! outcome; [`CallError`] says how a call failed and, from the core, whether it ran.

use core::fmt;

use embedded_io_async::{Read, Write};
use wirecall_core::client::{
    CallSlot, ClientConnection, ClientEvent, CloseReason, Execution, Failure, SendError,
};
use wirecall_core::typed;
use wirecall_core::wire::{RejectCode, Target};
use wirecall_core::{Duration, Instant, RequestId};

use crate::error::Error;
use crate::link::{Link, Settings, Wake, earliest};
use crate::storage::ClientStorage;
use crate::timer::Timer;

/// The connection type a [`Client`] drives: the core's, over borrowed static storage.
type Conn<'s> = ClientConnection<&'s mut [u8], &'s mut [CallSlot]>;

/// A client of one connected transport `T`, with its clock `C`, over storage borrowed for
/// `'s`. One call at a time: [`call`](Self::call) takes `&mut self`.
///
/// The client moves bytes only inside its methods. An idle client answers the server's
/// keepalive pings only while [`idle_until`](Self::idle_until) runs, so a client that
/// waits longer than the server's keepalive (30 s + 10 s by default) between calls should
/// call it, or expect the server to close the connection.
pub struct Client<'s, T: Read + Write, C> {
    link: Link<T, C>,
    conn: Conn<'s>,
    settings: Settings,
    /// The call whose future was dropped before its outcome: cancelled at the next call.
    abandoned: Option<RequestId>,
    /// The transport's failure, kept for the outcome of the call it ended.
    failed: Option<Error<T::Error>>,
    closed: Option<CloseReason>,
}

impl<T: Read + Write, C> fmt::Debug for Client<'_, T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("conn", &self.conn)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<'s, T, C> Client<'s, T, C>
where
    T: Read + Write,
    C: Timer,
{
    /// A client over `io`, a transport that has just connected. Our hello is queued at
    /// once and goes out with the first call (calls need not wait for the server's hello).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the core refuses the storage or settings.
    pub fn new<const BUF: usize, const SLOTS: usize>(
        io: T,
        storage: &'s mut ClientStorage<BUF, SLOTS>,
        settings: Settings,
        timer: C,
    ) -> Result<Self, Error<T::Error>> {
        let (rx, tx, slots) = storage.parts();
        let conn = ClientConnection::new(settings.connection, rx, tx, slots, timer.now())?;
        Ok(Self {
            link: Link { io, timer },
            conn,
            settings,
            abandoned: None,
            failed: None,
            closed: None,
        })
    }

    /// Calls `target` (a method name, or a typed endpoint's key) with `body` and waits for
    /// its outcome; the answer is copied into
    /// `out`, and the returned slice is the part of `out` it fills. With a `timeout`, the
    /// call fails with [`CallErrorKind::TimedOut`] when no answer comes in time, and the
    /// server is told its budget. While it waits, the connection's timers run (keepalive,
    /// the handshake's).
    ///
    /// Dropping the returned future before it completes abandons the call: the next call
    /// cancels it (the server is told), and its late outcome is ignored.
    ///
    /// # Errors
    ///
    /// [`CallError`], whose [`execution`](CallError::execution) is the core's judgement of
    /// whether the server may have run the function. A remote error's or rejection's
    /// message is copied into `out` too (cut to fit).
    pub async fn call<'o, 't>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
        out: &'o mut [u8],
    ) -> Result<&'o [u8], CallError<'o, T::Error>> {
        let target = target.into();
        if let Some(id) = self.abandoned.take() {
            let _ = self.conn.cancel(id);
        }
        let id = loop {
            let now = self.link.timer.now();
            match self.conn.call(now, target, body, timeout) {
                Ok(id) => break id,
                // Room or the server's limits come with the next turns.
                Err(SendError::WouldBlock | SendError::TooManyInFlight) => {
                    self.turn(None).await.map_err(CallError::not_sent)?;
                }
                Err(e) => return Err(CallError::not_sent(Error::Send(e))),
            }
        };
        self.abandoned = Some(id);
        let outcome = self.wait(id, out).await;
        self.abandoned = None;
        outcome
    }

    /// Calls typed endpoint `P` with `request`: encodes it into `scratch`, calls its key,
    /// and decodes the answer in place from `out` (borrowed fields borrow `out`). With the
    /// interface crate the server was built from, this is all a `no_std` client needs.
    ///
    /// # Errors
    ///
    /// [`TypedCallError`]: the endpoint's error value (executed), the call's failure (a
    /// server with other types for the path rejects it as a schema mismatch, not executed),
    /// an answer that is not a value of the endpoint's types, or a request that does not
    /// fit `scratch` (not sent).
    pub async fn call_typed<'o, P>(
        &mut self,
        request: &P::Request<'_>,
        timeout: Option<Duration>,
        scratch: &mut [u8],
        out: &'o mut [u8],
    ) -> Result<P::Response<'o>, TypedCallError<'o, P::Error<'o>, T::Error>>
    where
        P: typed::Endpoint + ?Sized,
    {
        let body = typed::encode_request::<P>(request, scratch).map_err(TypedCallError::Encode)?;
        let answer = self
            .call(P::KEY, body, timeout, out)
            .await
            .map_err(TypedCallError::Call)?;
        match typed::decode_answer::<P>(answer) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(TypedCallError::Application(e)),
            Err(_) => Err(TypedCallError::BadAnswer),
        }
    }

    /// Takes events until call `id` has its outcome, moving bytes in between.
    async fn wait<'o>(
        &mut self,
        id: RequestId,
        out: &'o mut [u8],
    ) -> Result<&'o [u8], CallError<'o, T::Error>> {
        loop {
            loop {
                let now = self.link.timer.now();
                let Some(event) = self.conn.poll_event(now) else {
                    break;
                };
                match event {
                    ClientEvent::Response { id: got, body } if got == id => {
                        let Some(answer) = out.get_mut(..body.len()) else {
                            return Err(CallError {
                                kind: CallErrorKind::AnswerTooLarge { len: body.len() },
                                execution: Execution::Executed,
                            });
                        };
                        answer.copy_from_slice(body);
                        return Ok(answer);
                    }
                    ClientEvent::Failed { id: got, failure } if got == id => {
                        let transport = self.failed.take();
                        return Err(CallError::of(&failure, transport, out));
                    }
                    ClientEvent::Closed(reason) => {
                        // The core reports every call's outcome before this, so it is not
                        // reached while a call waits; should it be, it errs on the safe side.
                        self.on_closed(reason).await;
                        return Err(CallError {
                            kind: CallErrorKind::ConnectionLost(reason),
                            execution: Execution::MaybeExecuted,
                        });
                    }
                    // Outcomes of abandoned calls, the server's hello.
                    _ => {}
                }
            }
            if let Err(e) = self.step(None).await {
                // The outcome follows from the core as a lost connection.
                self.failed = Some(e);
                self.conn.abort();
            }
        }
    }

    /// Keeps the connection alive without a call until `at`: answers the server's pings,
    /// sends ours, takes the outcomes of abandoned calls.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection ends (the server closed it, or a keepalive
    /// went unanswered); a transport error.
    pub async fn idle_until(&mut self, at: Instant) -> Result<(), Error<T::Error>> {
        while self.link.timer.now() < at {
            self.turn(Some(at)).await?;
        }
        Ok(())
    }

    /// Closes gracefully: the go-away goes out, the server answers what it took and
    /// closes, and the connection reports how it ended ([`CloseReason::Graceful`] when all
    /// went well). What is left to send goes out within [`Settings::linger`]; closing the
    /// transport itself is the caller's.
    ///
    /// # Errors
    ///
    /// A transport error; [`Error::Closed`] is not one here, it is the `Ok` value.
    pub async fn close(mut self) -> Result<CloseReason, Error<T::Error>> {
        self.conn.close(self.link.timer.now());
        loop {
            match self.turn(None).await {
                Ok(()) => {}
                Err(Error::Closed(reason)) => return Ok(reason),
                Err(e) => return Err(e),
            }
        }
    }

    /// The current instant on the client's clock (its [`Timer`]), e.g. for
    /// [`idle_until`](Self::idle_until).
    #[must_use]
    pub fn now(&self) -> Instant {
        self.link.timer.now()
    }

    /// How the connection ended, once it has.
    #[must_use]
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// One turn without a call of ours waiting: events (outcomes of abandoned calls are
    /// dropped), then one wait, until `at` at the latest.
    async fn turn(&mut self, at: Option<Instant>) -> Result<(), Error<T::Error>> {
        if let Some(reason) = self.closed {
            return Err(Error::Closed(reason));
        }
        self.take_events().await?;
        if let Err(e) = self.step(at).await {
            self.failed = Some(e);
            self.conn.abort();
        }
        // What the step read is handled now, so a caller that waits for the handshake
        // (a typed or large call before the server's hello) sees it at once.
        self.take_events().await
    }

    /// Handles the connection's events until it has none.
    async fn take_events(&mut self) -> Result<(), Error<T::Error>> {
        loop {
            let now = self.link.timer.now();
            let Some(event) = self.conn.poll_event(now) else {
                return Ok(());
            };
            if let ClientEvent::Closed(reason) = event {
                self.on_closed(reason).await;
                return Err(self.failed.take().unwrap_or(Error::Closed(reason)));
            }
        }
    }

    /// One wait for the transport or the connection's next timer (or `at`).
    async fn step(&mut self, at: Option<Instant>) -> Result<(), Error<T::Error>> {
        let deadline = earliest(self.conn.poll_timeout(), at);
        match self.link.pump(&mut self.conn, deadline, None).await? {
            Wake::Moved | Wake::Timer | Wake::Stop => Ok(()),
        }
    }

    /// After the closed event: what is left goes out within the linger time, as far as
    /// the transport still takes it.
    async fn on_closed(&mut self, reason: CloseReason) {
        debug!("client connection closed: {}", reason);
        self.closed = Some(reason);
        let until = self.link.timer.now().saturating_add(self.settings.linger);
        // The core has decided how the connection ended; a peer that is gone by now is
        // no news (a write into a closed socket fails).
        if self.link.linger(&mut self.conn, until).await.is_err() {
            debug!("the transport failed while lingering");
        }
    }
}

/// How a typed call ([`Client::call_typed`]) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TypedCallError<'o, Err, E> {
    /// The function ran and answered with this value of the endpoint's error type.
    Application(Err),
    /// The call failed in wirecall (see [`CallError`]); a server whose types for the path
    /// differ rejects it with `SCHEMA_MISMATCH`, not executed.
    Call(CallError<'o, E>),
    /// The function ran, but the answer is not a value of the endpoint's types.
    BadAnswer,
    /// The request could not be encoded into the scratch buffer; nothing was sent.
    Encode(typed::TypedError),
}

impl<Err, E> TypedCallError<'_, Err, E> {
    /// Whether the server may have run the function.
    #[must_use]
    pub fn execution(&self) -> Execution {
        match self {
            Self::Application(_) | Self::BadAnswer => Execution::Executed,
            Self::Call(e) => e.execution(),
            Self::Encode(_) => Execution::NotExecuted,
        }
    }
}

/// How a call failed, and whether the server may have run it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CallError<'o, E> {
    kind: CallErrorKind<'o, E>,
    execution: Execution,
}

/// What happened to a failed call. Messages borrow the caller's answer buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CallErrorKind<'o, E> {
    /// The function ran and returned an error.
    Remote {
        /// The application's error number.
        code: u32,
        /// Its explanation (cut to fit the answer buffer).
        message: &'o str,
    },
    /// The server refused the call before running it (unknown method, bad arguments, ...).
    Rejected {
        /// Why.
        code: RejectCode,
        /// Its explanation (cut to fit the answer buffer).
        message: &'o str,
    },
    /// The server was too busy to take the call.
    Busy {
        /// Wait this long before retrying.
        retry_after: Duration,
    },
    /// No answer came before the timeout.
    TimedOut,
    /// The call was cancelled.
    Cancelled,
    /// The server is closing and did not take the call.
    Refused,
    /// The connection ended before the answer came.
    ConnectionLost(CloseReason),
    /// The transport failed while the call waited; the connection was aborted.
    Transport(Error<E>),
    /// The call was not sent: the connection is closed or closing, or the request is too
    /// large ([`Error::Send`]), or the transport failed before it went out.
    NotSent(Error<E>),
    /// The function succeeded, but its answer of `len` bytes does not fit the buffer given.
    AnswerTooLarge {
        /// The answer's length.
        len: usize,
    },
    /// A failure this driver does not know by name (a newer core's).
    Other,
}

impl<'o, E> CallError<'o, E> {
    /// Whether the server may have run the function: the core's judgement, passed on.
    #[must_use]
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// What happened.
    #[must_use]
    pub fn kind(&self) -> &CallErrorKind<'o, E> {
        &self.kind
    }

    /// A call that never went out, so it was not executed.
    fn not_sent(e: Error<E>) -> Self {
        Self {
            kind: CallErrorKind::NotSent(e),
            execution: Execution::NotExecuted,
        }
    }

    /// The core's failure, its message copied into `out`, the transport's error in place of
    /// the lost connection it caused.
    fn of(failure: &Failure<'_>, transport: Option<Error<E>>, out: &'o mut [u8]) -> Self {
        let kind = match *failure {
            Failure::Remote { code, message } => CallErrorKind::Remote {
                code,
                message: copy_str(out, message),
            },
            Failure::Rejected { code, message } => CallErrorKind::Rejected {
                code,
                message: copy_str(out, message),
            },
            Failure::Busy { retry_after } => CallErrorKind::Busy { retry_after },
            Failure::TimedOut { .. } => CallErrorKind::TimedOut,
            Failure::Cancelled { .. } => CallErrorKind::Cancelled,
            Failure::Refused => CallErrorKind::Refused,
            Failure::ConnectionLost { reason, .. } => match transport {
                Some(e) => CallErrorKind::Transport(e),
                None => CallErrorKind::ConnectionLost(reason),
            },
            _ => CallErrorKind::Other,
        };
        Self {
            kind,
            execution: failure.execution(),
        }
    }
}

/// Copies as much of `s` as fits into `out`, cut at a character boundary.
fn copy_str<'o>(out: &'o mut [u8], s: &str) -> &'o str {
    let mut n = s.len().min(out.len());
    while !s.is_char_boundary(n) {
        n = n.saturating_sub(1);
    }
    let (Some(dst), Some(src)) = (out.get_mut(..n), s.as_bytes().get(..n)) else {
        return "";
    };
    dst.copy_from_slice(src);
    core::str::from_utf8(dst).unwrap_or_default()
}

impl<E: fmt::Debug> fmt::Display for CallError<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.kind, self.execution)
    }
}

impl<E: fmt::Debug> fmt::Display for CallErrorKind<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote { code, message } => write!(f, "remote error {code}: {message}"),
            Self::Rejected { code, message } => write!(f, "rejected, {code}: {message}"),
            Self::Busy { retry_after } => write!(f, "server busy, retry after {retry_after}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Refused => f.write_str("refused: the server is closing"),
            Self::ConnectionLost(reason) => write!(f, "connection lost: {reason}"),
            Self::Transport(e) => write!(f, "connection lost: {e}"),
            Self::NotSent(e) => write!(f, "not sent: {e}"),
            Self::AnswerTooLarge { len } => {
                write!(f, "answer of {len} bytes does not fit the buffer")
            }
            Self::Other => f.write_str("call failed"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for CallError<'_, E> {}
