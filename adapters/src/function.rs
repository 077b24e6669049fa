//! Server functions: what an application registers, how it answers, and the table the
//! event loop looks methods up in.
//!
//! A function answers with [`Answer`]: the body, or a [`CallFailure`]. The synchronous form
//! returns it; the deferred form gets a [`Responder`] that it completes later, from any
//! thread (or lets the event loop complete after a delay, with no thread waiting).
//!
//! Either form may also take a [`CallContext`] (`function_with_context`,
//! `deferred_with_context`, `endpoint_with_context` of [`Register`]): who made the call
//! ([`Peer`]: its address, its Unix credentials) and by when its client stops waiting.
//! The plain `Fn(&[u8])` forms do not see it and pay nothing for it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant as StdInstant};

use mio::{Token, Waker};
use wirecall_core::RequestId;
use wirecall_core::datagram::RequestHandle;
use wirecall_core::typed::path_hash;
use wirecall_core::wire::{RejectCode, Reply, Target};

use crate::error::Error;
use crate::id_hasher::IdMap;
use crate::stats::StatsHandle;
use crate::tls::TlsIdentity;
use crate::typed::{self, Endpoint, EndpointSpec, Outcome, TypedReply, TypedResponder};

/// The error numbers wirecall reserves in [`Reply::Error`] (the top 256 values of `u32`):
/// the core sends [`ERROR_ANSWER_TOO_LARGE`] in place of an answer larger than the client
/// accepts, the server [`ERROR_FUNCTION_PANICKED`] when a function panicked and
/// [`ERROR_NO_ANSWER`] when a deferred function dropped its [`Responder`] unused. Each
/// means the function ran. Applications use the other numbers.
pub use wirecall_core::wire::{
    ERROR_ANSWER_TOO_LARGE, ERROR_FUNCTION_PANICKED, ERROR_NO_ANSWER, RESERVED_ERROR_CODES,
};

/// What a function returns: the answer's body, or why there is none.
pub type Answer = Result<Vec<u8>, CallFailure>;

/// How a call failed on the server side.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallFailure {
    /// The function ran and failed. Sent as an error reply: the client learns the call
    /// was executed.
    Error {
        /// Application-defined error number.
        code: u32,
        /// A short explanation.
        message: String,
    },
    /// The call was refused before the function did anything. Sent as a rejection: the
    /// client learns the call was not executed and may retry it.
    Rejected {
        /// Why: a [`RejectCode`] constant, or an application code (256 and up).
        code: RejectCode,
        /// A short explanation.
        message: String,
    },
    /// The server is too busy to run the call now. Sent as a busy reply: not executed,
    /// retry after the hint. (On a datagram endpoint the client retransmits the same call
    /// after the hint, and that copy is taken as a new call.)
    Busy {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
}

impl CallFailure {
    /// The function ran and failed with this application code.
    pub fn error(code: u32, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// The arguments were refused before anything ran ([`RejectCode::INVALID_REQUEST`]).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::Rejected {
            code: RejectCode::INVALID_REQUEST,
            message: message.into(),
        }
    }

    /// The call was refused before anything ran, with this code.
    pub fn rejected(code: RejectCode, message: impl Into<String>) -> Self {
        Self::Rejected {
            code,
            message: message.into(),
        }
    }
}

/// The reply frame for an answer, borrowing from it: what a driver hands the core's
/// `respond` for an [`Answer`].
#[must_use]
pub fn reply_of(answer: &Answer) -> Reply<'_> {
    match answer {
        Ok(body) => Reply::Ok(body),
        Err(CallFailure::Error { code, message }) => Reply::Error {
            code: *code,
            message,
        },
        Err(CallFailure::Rejected { code, message }) => Reply::Rejected {
            code: *code,
            message,
        },
        Err(CallFailure::Busy { retry_after }) => Reply::Busy {
            retry_after_ms: u32::try_from(retry_after.as_millis().max(1)).unwrap_or(u32::MAX),
        },
    }
}

/// A synchronous function as the server holds it: gets the call's context and the request
/// body, and returns its answer. (Functions registered without a context are wrapped.)
pub type SyncFn = Arc<dyn Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync>;
/// A synchronous function that writes its answer into a buffer the server lends (empty,
/// with the capacity of earlier answers), so a call allocates nothing: see
/// [`Register::function_into`].
pub type IntoFn =
    Arc<dyn Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure> + Send + Sync>;
/// A deferred function as the server holds it: must not block, and completes the
/// [`Responder`] now or later.
pub type DeferredFn = Arc<dyn Fn(&CallContext<'_>, &[u8], Responder) + Send + Sync>;

/// Who sent a call, as the transport knows it. Borrowed from the connection or the
/// datagram for the length of the call; copy what you keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer<'a> {
    /// A TCP connection from this address.
    Tcp(SocketAddr),
    /// A TLS connection from this address, with the verified identity of its client
    /// certificate when the server asks for one (`--client-ca`); `None` without.
    Tls {
        /// The peer's address.
        addr: SocketAddr,
        /// Its certificate's verified identity (its DNS and URI names, or its CN).
        identity: Option<&'a TlsIdentity>,
    },
    /// A Unix stream connection. Its credentials are the connecting process's, taken by the
    /// kernel when it connected (`SO_PEERCRED`); `None` only where the kernel gave none.
    Unix(Option<UnixCredentials>),
    /// A UDP datagram from this address. Nothing proves it: a UDP source address can be
    /// forged (docs/SECURITY.md).
    Udp(SocketAddr),
    /// A Unix datagram from the socket bound at this path. The path names the sender's
    /// socket; the kernel vouches for it, but it says nothing of the sending user.
    UnixDatagram {
        /// The path the sender's socket is bound at.
        path: &'a Path,
        /// The sender's credentials (`SCM_CREDENTIALS`), when the server reads them: with
        /// an allowlist of Unix users or groups (`--allow-uid`, `--allow-gid`).
        credentials: Option<UnixCredentials>,
    },
}

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp peer {addr}"),
            Self::Tls {
                addr,
                identity: Some(identity),
            } => write!(f, "tls peer {addr} ({identity})"),
            Self::Tls {
                addr,
                identity: None,
            } => write!(f, "tls peer {addr}"),
            Self::Unix(Some(c)) => write!(f, "unix peer {c}"),
            Self::Unix(None) => f.write_str("unix peer (no credentials)"),
            Self::Udp(addr) => write!(f, "udp peer {addr}"),
            Self::UnixDatagram {
                path,
                credentials: Some(c),
            } => write!(f, "unix-dgram peer {} {c}", path.display()),
            Self::UnixDatagram {
                path,
                credentials: None,
            } => write!(f, "unix-dgram peer {}", path.display()),
        }
    }
}

/// A Unix peer's process credentials, as the kernel recorded them when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct UnixCredentials {
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
    /// Its process id, as seen from the server's pid namespace (0 when not visible).
    pub pid: i32,
}

impl UnixCredentials {
    /// Credentials with these ids.
    #[must_use]
    pub fn new(uid: u32, gid: u32, pid: i32) -> Self {
        Self { uid, gid, pid }
    }
}

impl std::fmt::Display for UnixCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid={} gid={} pid={}", self.uid, self.gid, self.pid)
    }
}

/// What a function may know about the call it runs for: who sent it and by when its client
/// stops waiting.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    peer: Peer<'a>,
    deadline: Option<StdInstant>,
}

impl<'a> CallContext<'a> {
    /// The context of a call from `peer` whose client waits until `deadline` (`None`: the
    /// client gave none). Drivers make these; functions are handed them.
    #[must_use]
    pub fn new(peer: Peer<'a>, deadline: Option<StdInstant>) -> Self {
        Self { peer, deadline }
    }

    /// Who sent the call.
    #[must_use]
    pub fn peer(&self) -> Peer<'a> {
        self.peer
    }

    /// When the client stops waiting (the deadline it sent, from when the request
    /// arrived); `None` when it sent none. Work after it is wasted: the answer is dropped.
    #[must_use]
    pub fn deadline(&self) -> Option<StdInstant> {
        self.deadline
    }

    /// How long is left until the [`deadline`](Self::deadline), zero once it has passed;
    /// `None` when there is none.
    #[must_use]
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(StdInstant::now()))
    }
}

/// A [`Peer`] that owns its parts, for a call handed to another thread (a worker) or kept
/// by a connection for its life. Its variants are [`Peer`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnedPeer {
    /// [`Peer::Tcp`].
    Tcp(SocketAddr),
    /// A connection keeps `None` here: its identity is its stream's, known only after the
    /// handshake (see [`as_peer_with`](Self::as_peer_with)); a call handed to a worker
    /// carries a copy.
    Tls(SocketAddr, Option<TlsIdentity>),
    /// [`Peer::Unix`].
    Unix(Option<UnixCredentials>),
    /// [`Peer::Udp`].
    Udp(SocketAddr),
    /// [`Peer::UnixDatagram`]: the path and the credentials.
    UnixDatagram(PathBuf, Option<UnixCredentials>),
}

impl OwnedPeer {
    /// The borrowed form handed to functions.
    #[must_use]
    pub fn as_peer(&self) -> Peer<'_> {
        self.as_peer_with(None)
    }

    /// The borrowed form, with the TLS identity the connection verified (for a TLS peer).
    #[must_use]
    pub fn as_peer_with<'a>(&'a self, identity: Option<&'a TlsIdentity>) -> Peer<'a> {
        match self {
            Self::Tcp(a) => Peer::Tcp(*a),
            Self::Tls(addr, own) => Peer::Tls {
                addr: *addr,
                identity: identity.or(own.as_ref()),
            },
            Self::Unix(c) => Peer::Unix(*c),
            Self::Udp(a) => Peer::Udp(*a),
            Self::UnixDatagram(path, credentials) => Peer::UnixDatagram {
                path,
                credentials: *credentials,
            },
        }
    }
}

impl From<Peer<'_>> for OwnedPeer {
    fn from(peer: Peer<'_>) -> Self {
        match peer {
            Peer::Tcp(a) => Self::Tcp(a),
            Peer::Tls { addr, identity } => Self::Tls(addr, identity.cloned()),
            Peer::Unix(c) => Self::Unix(c),
            Peer::Udp(a) => Self::Udp(a),
            Peer::UnixDatagram { path, credentials } => {
                Self::UnixDatagram(path.to_path_buf(), credentials)
            }
        }
    }
}

/// Wraps a function that takes no context into the form the server holds.
pub fn without_context<F>(function: F) -> SyncFn
where
    F: Fn(&[u8]) -> Answer + Send + Sync + 'static,
{
    Arc::new(move |_: &CallContext<'_>, body: &[u8]| function(body))
}

/// Wraps a deferred function that takes no context into the form the server holds.
pub fn deferred_without_context<F>(function: F) -> DeferredFn
where
    F: Fn(&[u8], Responder) + Send + Sync + 'static,
{
    Arc::new(move |_: &CallContext<'_>, body: &[u8], r: Responder| function(body, r))
}

/// A registered function of the mio server.
#[derive(Clone)]
pub(crate) enum Function {
    Sync(SyncFn),
    /// A function that answers into a lent buffer (on the event loop), with the same
    /// function as a [`SyncFn`] that answers into a new `Vec` (on worker threads).
    Into {
        lent: IntoFn,
        owned: SyncFn,
    },
    Deferred(DeferredFn),
}

impl Function {
    /// A function that answers into a lent buffer.
    pub(crate) fn into_buffer(function: IntoFn) -> Self {
        let lent = Arc::clone(&function);
        let owned: SyncFn = Arc::new(answer_in_new_vec(move |c: &CallContext<'_>, b, a| {
            function(c, b, a)
        }));
        Self::Into { lent, owned }
    }
}

/// A function that answers into a buffer, as one that returns its answer in a new `Vec`:
/// what runs where no buffer is lent (worker threads, other runtimes' servers).
fn answer_in_new_vec<F>(function: F) -> impl Fn(&CallContext<'_>, &[u8]) -> Answer
where
    F: Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure>,
{
    move |context: &CallContext<'_>, body: &[u8]| {
        let mut answer = Vec::new();
        function(context, body, &mut answer).map(|()| answer)
    }
}

/// Runs a function that answers into `buffer` (cleared first) as [`run_sync`] runs one
/// that returns its answer: a panic in it is an error answer. On `Ok(())` the answer is in
/// `buffer`; either way the buffer stays the caller's, to lend again once the answer is
/// sent.
pub fn run_into(
    function: &IntoFn,
    context: &CallContext<'_>,
    body: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<(), CallFailure> {
    buffer.clear();
    match catch_unwind(AssertUnwindSafe(|| function(context, body, buffer))) {
        Ok(outcome) => outcome,
        Err(_) => {
            log::error!("a function panicked; its call is answered with an error");
            Err(CallFailure::error(
                ERROR_FUNCTION_PANICKED,
                "the function panicked",
            ))
        }
    }
}

/// Runs a synchronous function, turning a panic in it into an error answer
/// ([`ERROR_FUNCTION_PANICKED`]): the call was executed, and the server goes on.
pub fn run_sync(function: &SyncFn, context: &CallContext<'_>, body: &[u8]) -> Answer {
    catch_unwind(AssertUnwindSafe(|| function(context, body))).unwrap_or_else(|_| {
        log::error!("a function panicked; its call is answered with an error");
        Err(CallFailure::error(
            ERROR_FUNCTION_PANICKED,
            "the function panicked",
        ))
    })
}

/// Which call an answer is for, on the connection or datagram endpoint whose
/// [`Completions`] carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallRef {
    /// A request on a stream connection.
    Stream(RequestId),
    /// A request taken by a datagram endpoint's core.
    Datagram(RequestHandle),
}

/// Where a [`Responder`] delivers its answer: the connection or datagram endpoint that
/// took the call, in whatever runtime drives it (the mio event loop's channel and waker,
/// a tokio task's channel). One is made per connection or endpoint and shared by its
/// responders, so answering later costs no allocation beyond the answer.
pub trait Completions: Send + Sync {
    /// The answer to `call`, to be sent at once or, with `not_before`, once that instant
    /// has passed (the driver holds it; no thread waits). Called once per call, from any
    /// thread; a call that has gone (cancelled, expired, its connection closed) drops it.
    fn complete(&self, call: CallRef, answer: Answer, not_before: Option<StdInstant>);
}

/// An answer finished off the event loop, on its way back to its connection or datagram
/// listener.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The connection or datagram listener.
    pub(crate) token: Token,
    /// The call.
    pub(crate) call: CallRef,
    /// The answer.
    pub(crate) answer: Answer,
    /// Hold the answer until this instant (from [`Responder::respond_after`]).
    pub(crate) not_before: Option<StdInstant>,
}

/// Where completions go in the mio server: a channel to the event loop and the waker that
/// rouses it.
#[derive(Clone)]
pub(crate) struct CompletionSink {
    pub(crate) tx: Sender<Completion>,
    pub(crate) waker: Arc<Waker>,
}

/// The mio server's [`Completions`] of one connection or datagram listener.
pub(crate) struct LoopCompletions {
    pub(crate) token: Token,
    pub(crate) sink: CompletionSink,
}

impl Completions for LoopCompletions {
    fn complete(&self, call: CallRef, answer: Answer, not_before: Option<StdInstant>) {
        let completion = Completion {
            token: self.token,
            call,
            answer,
            not_before,
        };
        // Both fail only when the event loop has ended, and then nobody waits for it.
        if self.sink.tx.send(completion).is_ok() {
            if let Err(e) = self.sink.waker.wake() {
                log::warn!("cannot wake the event loop: {e}");
            }
        }
    }
}

/// The way to answer one call later, from any thread. Every request gets exactly one
/// answer: dropping a responder unused answers the call with an error
/// ([`ERROR_NO_ANSWER`]).
pub struct Responder {
    target: Option<(CallRef, Arc<dyn Completions>)>,
    /// When timed: the server's counters, the method's index, when the call was taken.
    timer: Option<(Arc<crate::stats::Stats>, usize, StdInstant)>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("request", &self.target.as_ref().map(|t| t.0))
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// The responder of `call`, delivering to `to`. A driver makes one per deferred call;
    /// applications get theirs from the server.
    #[must_use]
    pub fn new(call: CallRef, to: Arc<dyn Completions>) -> Self {
        Self {
            target: Some((call, to)),
            timer: None,
        }
    }

    /// Times the call: when it is answered, its duration since `started` goes to method
    /// `method`'s histogram in `stats`.
    #[must_use]
    pub(crate) fn timed(
        mut self,
        stats: Arc<crate::stats::Stats>,
        method: usize,
        started: StdInstant,
    ) -> Self {
        self.timer = Some((stats, method, started));
        self
    }

    /// Answers the call now. If the call was cancelled, expired or its connection is gone,
    /// the answer is dropped.
    pub fn respond(mut self, answer: Answer) {
        self.finish(answer, None);
    }

    /// Answers the call once `delay` has passed. No thread waits: the server holds the
    /// answer and sends it when the time comes (or drops it if the call was cancelled or
    /// expired meanwhile).
    pub fn respond_after(mut self, delay: Duration, answer: Answer) {
        let at = StdInstant::now().checked_add(delay);
        // A delay beyond what the clock represents is answered at once rather than never.
        self.finish(answer, at);
    }

    fn finish(&mut self, answer: Answer, not_before: Option<StdInstant>) {
        if let Some((stats, method, started)) = self.timer.take() {
            let done = not_before.unwrap_or_else(StdInstant::now);
            stats.observe(method, done.saturating_duration_since(started));
        }
        if let Some((call, to)) = self.target.take() {
            to.complete(call, answer, not_before);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.target.is_some() {
            self.finish(
                Err(CallFailure::error(
                    ERROR_NO_ANSWER,
                    "the function dropped its responder without answering",
                )),
                None,
            );
        }
    }
}

/// What builds a server's function table: the mio [`ServerBuilder`](crate::ServerBuilder)
/// and the builders of other runtimes' servers, so one set of functions (such as
/// [`builtins`](crate::builtins)) registers on any of them.
pub trait Register: Sized {
    /// Registers a synchronous function under `name` (1 to 255 bytes, no whitespace).
    #[must_use]
    fn function<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8]) -> Answer + Send + Sync + 'static;

    /// Registers a deferred function under `name`: it must not block, and answers through
    /// its [`Responder`].
    #[must_use]
    fn deferred<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8], Responder) + Send + Sync + 'static;

    /// Registers a synchronous function under `name` that also gets the call's
    /// [`CallContext`]: who sent it (address, Unix credentials) and its deadline.
    #[must_use]
    fn function_with_context<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static;

    /// Registers a deferred function under `name` that also gets the call's
    /// [`CallContext`].
    #[must_use]
    fn deferred_with_context<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], Responder) + Send + Sync + 'static;

    /// Registers a synchronous function under `name` that writes its answer into
    /// `answer`, a buffer the server lends: empty, with the capacity earlier answers gave
    /// it, and sent as the answer when the function returns `Ok(())`. On the mio server's
    /// event loop (0 workers) buffers are kept and lent again once their answers are with
    /// the core, so such a function costs no allocation per call; on worker threads, and
    /// on servers without a pool (this default), each call gets a new `Vec`. Otherwise as
    /// [`function_with_context`](Self::function_with_context).
    #[must_use]
    fn function_into<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure>
            + Send
            + Sync
            + 'static,
    {
        self.function_with_context(name, answer_in_new_vec(function))
    }

    /// Registers a synchronous untyped function as the typed endpoint `spec`: what
    /// [`endpoint`](Self::endpoint) builds on.
    #[must_use]
    fn keyed_function<F>(self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static;

    /// Registers a synchronous untyped function that answers into a lent buffer (as
    /// [`function_into`](Self::function_into)) as the typed endpoint `spec`: what
    /// [`endpoint_reply`](Self::endpoint_reply) builds on. This default answers into a new
    /// `Vec` per call.
    #[must_use]
    fn keyed_function_into<F>(self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure>
            + Send
            + Sync
            + 'static,
    {
        self.keyed_function(spec, answer_in_new_vec(function))
    }

    /// Registers a deferred untyped function as the typed endpoint `spec`: what
    /// [`endpoint_deferred`](Self::endpoint_deferred) builds on.
    #[must_use]
    fn keyed_deferred<F>(self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], Responder) + Send + Sync + 'static;

    /// Serves typed endpoint `E` with `handler`, which gets the decoded request and returns
    /// the endpoint's response or error (see [`typed`]). Callers with other
    /// types for `E`'s path are rejected before it runs.
    #[must_use]
    fn endpoint<E, H>(self, handler: H) -> Self
    where
        E: Endpoint + ?Sized + 'static,
        H: for<'a> Fn(E::Request<'a>) -> Outcome<'static, E> + Send + Sync + 'static,
    {
        let function = typed::sync_function::<E, H>(handler);
        self.keyed_function(
            EndpointSpec::of::<E>(),
            move |_: &CallContext<'_>, b: &[u8]| function(b),
        )
    }

    /// Serves typed endpoint `E` with a `handler` that also gets the call's
    /// [`CallContext`] (who sent it, its deadline), as [`endpoint`](Self::endpoint).
    #[must_use]
    fn endpoint_with_context<E, H>(self, handler: H) -> Self
    where
        E: Endpoint + ?Sized + 'static,
        H: for<'a> Fn(&CallContext<'_>, E::Request<'a>) -> Outcome<'static, E>
            + Send
            + Sync
            + 'static,
    {
        self.keyed_function(
            EndpointSpec::of::<E>(),
            typed::context_function::<E, H>(handler),
        )
    }

    /// Serves typed endpoint `E` with a `handler` that answers through a [`TypedReply`] before
    /// it returns, so the answer may borrow (from the request, from a map behind a lock)
    /// and is encoded at once: a typed function that costs what an untyped one does.
    #[must_use]
    fn endpoint_reply<E, H>(self, handler: H) -> Self
    where
        E: Endpoint + ?Sized + 'static,
        H: for<'a> Fn(E::Request<'a>, &mut TypedReply<E>) + Send + Sync + 'static,
    {
        let function = typed::reply_function_into::<E, H>(handler);
        self.keyed_function_into(
            EndpointSpec::of::<E>(),
            move |_: &CallContext<'_>, b: &[u8], answer: &mut Vec<u8>| function(b, answer),
        )
    }

    /// Serves typed endpoint `E` with a deferred `handler`: it must not block, and answers
    /// through its [`TypedResponder`], now or later from any thread.
    #[must_use]
    fn endpoint_deferred<E, H>(self, handler: H) -> Self
    where
        E: Endpoint + ?Sized + 'static,
        H: for<'a> Fn(E::Request<'a>, TypedResponder<E>) + Send + Sync + 'static,
    {
        let function = typed::deferred_function::<E, H>(handler);
        self.keyed_deferred(
            EndpointSpec::of::<E>(),
            move |_: &CallContext<'_>, b: &[u8], r: Responder| function(b, r),
        )
    }

    /// The server's counters (for functions that report them).
    #[must_use]
    fn stats(&self) -> StatsHandle;
}

/// Why [`Registry::find`] found nothing to run: the rejection to answer with, and the
/// function it concerns when there is one (a typed call of a served path with other
/// types), so its counters show a call that was not executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The function's index, for its counters; `None` for an unknown name or path.
    pub method: Option<usize>,
    /// The answer.
    pub failure: CallFailure,
}

/// One function for a [`Registry`]: its name, and for a typed endpoint its key (the name
/// is then the endpoint's path).
#[derive(Debug, Clone)]
pub struct Named<F> {
    name: String,
    spec: Option<EndpointSpec>,
    function: F,
}

impl<F> Named<F> {
    /// An untyped function, called by `name`.
    pub fn function(name: impl Into<String>, function: F) -> Self {
        Self {
            name: name.into(),
            spec: None,
            function,
        }
    }

    /// A typed endpoint, called by its key (or, untyped, by its path with a raw postcard
    /// body).
    pub fn endpoint(spec: EndpointSpec, function: F) -> Self {
        Self {
            name: spec.path.to_owned(),
            spec: Some(spec),
            function,
        }
    }

    /// The endpoint's spec, for a typed endpoint.
    #[must_use]
    pub fn spec(&self) -> Option<&EndpointSpec> {
        self.spec.as_ref()
    }

    /// The name (a typed endpoint's path).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The functions of a server by name and, for typed endpoints, by key, fixed once the
/// server is built: what a server looks a request's target up in. `F` is the driver's own
/// function type.
pub struct Registry<F> {
    names: Vec<String>,
    specs: Vec<Option<EndpointSpec>>,
    functions: Vec<F>,
    /// Name -> position. A cheap hash: peers only look names up in this fixed table, they
    /// never insert, so they cannot aim collisions at it.
    index: IdMap<String, usize>,
    /// Path hash -> position, for typed endpoints.
    by_path: IdMap<u64, usize>,
}

impl<F> std::fmt::Debug for Registry<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl<F> Registry<F> {
    /// Checks the names (1 to 255 bytes, no whitespace or control characters, no
    /// duplicates, a typed endpoint's path among them) and builds the table.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFunctionName`] or [`Error::DuplicateFunction`] (also for two paths
    /// whose hashes collide, which a server could not tell apart).
    pub fn new(entries: Vec<Named<F>>) -> Result<Self, Error> {
        let n = entries.len();
        let mut registry = Self {
            names: Vec::with_capacity(n),
            specs: Vec::with_capacity(n),
            functions: Vec::with_capacity(n),
            index: IdMap::with_capacity_and_hasher(n, Default::default()),
            by_path: IdMap::default(),
        };
        for Named {
            name,
            spec,
            function,
        } in entries
        {
            if !valid_name(&name) {
                return Err(Error::InvalidFunctionName(name));
            }
            let position = registry.names.len();
            if registry.index.contains_key(&name) {
                return Err(Error::DuplicateFunction(name));
            }
            if let Some(spec) = spec {
                let path = spec.key.path;
                if path != path_hash(&name) || registry.by_path.contains_key(&path) {
                    return Err(Error::DuplicateFunction(name));
                }
                registry.by_path.insert(path, position);
            }
            registry.index.insert(name.clone(), position);
            registry.names.push(name);
            registry.specs.push(spec);
            registry.functions.push(function);
        }
        Ok(registry)
    }

    /// The function for a method name, with its index (for the per-method counters).
    #[must_use]
    pub fn lookup(&self, method: &str) -> Option<(usize, &F)> {
        let i = *self.index.get(method)?;
        self.functions.get(i).map(|f| (i, f))
    }

    /// The function a request calls, with its index; or the rejection that answers it
    /// without running anything: [`RejectCode::UNKNOWN_METHOD`] for a name or path the
    /// server does not serve, [`RejectCode::SCHEMA_MISMATCH`] for a typed call whose
    /// types differ from the endpoint's.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn find(&self, target: Target<'_>) -> Result<(usize, &F), Refusal> {
        let unknown = |message: String| Refusal {
            method: None,
            failure: CallFailure::rejected(RejectCode::UNKNOWN_METHOD, message),
        };
        match target {
            Target::Method(method) => self.lookup(method).ok_or_else(|| {
                let shown: String = method.chars().take(64).collect();
                unknown(format!("no such method: {shown:?}"))
            }),
            Target::Endpoint(key) => {
                let Some(&i) = self.by_path.get(&key.path) else {
                    return Err(unknown(format!(
                        "no endpoint with path hash {:016x}",
                        key.path
                    )));
                };
                let served = self.specs.get(i).copied().flatten().map(|s| s.key);
                let name = self.names.get(i).map_or("", String::as_str);
                if served.map(|k| k.schema) != Some(key.schema) {
                    return Err(Refusal {
                        method: Some(i),
                        failure: CallFailure::rejected(
                            RejectCode::SCHEMA_MISMATCH,
                            format!(
                                "{name} is served with other types (schema {:016x}, not {:016x})",
                                served.map_or(0, |k| k.schema),
                                key.schema
                            ),
                        ),
                    });
                }
                self.functions
                    .get(i)
                    .map(|f| (i, f))
                    .ok_or_else(|| unknown(name.to_owned()))
            }
        }
    }

    /// [`find`](Self::find), trying the function at `hint` first and leaving `hint` at
    /// what was found: a caller that keeps one hint per event loop finds a run of calls to
    /// one method with one comparison of its name, without hashing it.
    ///
    /// # Errors
    ///
    /// The [`Refusal`], as `find`.
    pub fn find_hinted(
        &self,
        target: Target<'_>,
        hint: &Cell<usize>,
    ) -> Result<(usize, &F), Refusal> {
        let i = hint.get();
        let same = match target {
            Target::Method(method) => self.names.get(i).is_some_and(|name| name == method),
            // The path names the endpoint, the schema is the one it is served with.
            Target::Endpoint(key) => self
                .specs
                .get(i)
                .is_some_and(|spec| spec.is_some_and(|s| s.key == key)),
        };
        if let Some(function) = self.functions.get(i).filter(|_| same) {
            return Ok((i, function));
        }
        let found = self.find(target)?;
        hint.set(found.0);
        Ok(found)
    }

    /// Every typed endpoint, in registration order.
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointSpec> {
        self.specs.iter().flatten()
    }

    /// The names, in registration order.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// 1 to 255 bytes, no whitespace or control characters (names appear in `stats` lines).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod test {
    use super::*;

    fn echo() -> Function {
        Function::Sync(without_context(|b: &[u8]| Ok(b.to_vec())))
    }

    #[test]
    fn test_registry_lookup_and_checks() {
        let r = Registry::new(vec![
            Named::function("a", echo()),
            Named::function("b", echo()),
        ])
        .unwrap();
        assert_eq!(r.lookup("b").map(|(i, _)| i), Some(1));
        assert!(r.lookup("c").is_none());
        assert_eq!(r.names(), ["a", "b"]);
        let dup = Registry::new(vec![
            Named::function("a", echo()),
            Named::function("a", echo()),
        ]);
        assert!(matches!(dup, Err(Error::DuplicateFunction(n)) if n == "a"));
        for bad in ["", "a b", "tab\t", &"x".repeat(256)] {
            let r = Registry::new(vec![Named::function(bad, echo())]);
            assert!(matches!(r, Err(Error::InvalidFunctionName(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_hinted_find_finds_what_find_finds_and_keeps_the_hint() {
        let r = Registry::new(vec![
            Named::function("a", echo()),
            Named::function("b", echo()),
        ])
        .unwrap();
        let found = |target, hint: &Cell<usize>| r.find_hinted(target, hint).map(|(i, _)| i);
        let hint = Cell::new(0);
        // A miss on the hint finds by name and moves the hint there.
        assert_eq!(found(Target::Method("b"), &hint).ok(), Some(1));
        assert_eq!(hint.get(), 1);
        assert_eq!(found(Target::Method("b"), &hint).ok(), Some(1));
        assert_eq!(found(Target::Method("a"), &hint).ok(), Some(0));
        assert_eq!(hint.get(), 0);
        // An unknown name is refused as `find` refuses it; the hint stays.
        let refusal = found(Target::Method("c"), &hint).unwrap_err();
        assert!(
            matches!(refusal.failure, CallFailure::Rejected { code, .. } if code == RejectCode::UNKNOWN_METHOD)
        );
        assert_eq!(hint.get(), 0);
        // A hint past the table (never set by a find) is only a miss.
        hint.set(7);
        assert_eq!(found(Target::Method("a"), &hint).ok(), Some(0));
    }

    #[test]
    fn a_hinted_find_of_an_endpoint_checks_its_schema() {
        use wirecall_core::typed::Endpoint;
        let typed = crate::builtins::TypedEcho::KEY;
        let spec = EndpointSpec::of::<crate::builtins::TypedEcho>();
        let r = Registry::new(vec![
            Named::function("a", echo()),
            Named::endpoint(spec, echo()),
        ])
        .unwrap();
        let hint = Cell::new(0);
        let found = |target| r.find_hinted(target, &hint).map(|(i, _)| i);
        assert_eq!(found(Target::Endpoint(typed)).ok(), Some(1));
        assert_eq!(hint.get(), 1);
        assert_eq!(found(Target::Endpoint(typed)).ok(), Some(1));
        // The same path with other types: refused on the hint as by `find`.
        let other = wirecall_core::wire::EndpointKey {
            schema: typed.schema ^ 1,
            ..typed
        };
        let refusal = found(Target::Endpoint(other)).unwrap_err();
        assert!(
            matches!(refusal.failure, CallFailure::Rejected { code, .. } if code == RejectCode::SCHEMA_MISMATCH)
        );
        assert_eq!(found(Target::Method("a")).ok(), Some(0));
    }

    #[test]
    fn test_reply_of() {
        assert_eq!(reply_of(&Ok(b"x".to_vec())), Reply::Ok(b"x"));
        assert_eq!(
            reply_of(&Err(CallFailure::error(7, "no"))),
            Reply::Error {
                code: 7,
                message: "no"
            }
        );
        assert_eq!(
            reply_of(&Err(CallFailure::invalid_request("bad"))),
            Reply::Rejected {
                code: RejectCode::INVALID_REQUEST,
                message: "bad"
            }
        );
    }
}
