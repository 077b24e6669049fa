//! Server functions: what an application registers, how it answers, and the table the
//! event loop looks methods up in.
//!
//! A function answers with [`Answer`]: the body, or a [`CallFailure`]. The synchronous form
//! returns it; the deferred form gets a [`Responder`] that it completes later, from any
//! thread (or lets the event loop complete after a delay, with no thread waiting).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant as StdInstant};

use mio::{Token, Waker};
use wirecall_core::RequestId;
use wirecall_core::datagram::RequestHandle;
use wirecall_core::wire::{RejectCode, Reply};

use crate::error::Error;
use crate::id_hasher::IdMap;
use crate::stats::StatsHandle;

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

/// A synchronous function: gets the request body and returns its answer.
pub type SyncFn = Arc<dyn Fn(&[u8]) -> Answer + Send + Sync>;
/// A deferred function: must not block, and completes the [`Responder`] now or later.
pub type DeferredFn = Arc<dyn Fn(&[u8], Responder) + Send + Sync>;

/// A registered function of the mio server.
#[derive(Clone)]
pub(crate) enum Function {
    Sync(SyncFn),
    Deferred(DeferredFn),
}

/// Runs a synchronous function, turning a panic in it into an error answer
/// ([`ERROR_FUNCTION_PANICKED`]): the call was executed, and the server goes on.
pub fn run_sync(function: &SyncFn, body: &[u8]) -> Answer {
    catch_unwind(AssertUnwindSafe(|| function(body))).unwrap_or_else(|_| {
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
        }
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

    /// The server's counters (for functions that report them).
    #[must_use]
    fn stats(&self) -> StatsHandle;
}

/// The functions of a server by name, fixed once the server is built: what a server looks
/// a request's method up in. `F` is the driver's own function type.
pub struct Registry<F> {
    names: Vec<String>,
    functions: Vec<F>,
    /// Name -> position. A cheap hash: peers only look names up in this fixed table, they
    /// never insert, so they cannot aim collisions at it.
    index: IdMap<String, usize>,
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
    /// duplicates) and builds the table.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFunctionName`] or [`Error::DuplicateFunction`].
    pub fn new(entries: Vec<(String, F)>) -> Result<Self, Error> {
        let mut registry = Self {
            names: Vec::with_capacity(entries.len()),
            functions: Vec::with_capacity(entries.len()),
            index: IdMap::with_capacity_and_hasher(entries.len(), Default::default()),
        };
        for (name, function) in entries {
            if !valid_name(&name) {
                return Err(Error::InvalidFunctionName(name));
            }
            if registry.index.contains_key(&name) {
                return Err(Error::DuplicateFunction(name));
            }
            registry.index.insert(name.clone(), registry.names.len());
            registry.names.push(name);
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
        Function::Sync(Arc::new(|b: &[u8]| Ok(b.to_vec())))
    }

    #[test]
    fn test_registry_lookup_and_checks() {
        let r = Registry::new(vec![("a".into(), echo()), ("b".into(), echo())]).unwrap();
        assert_eq!(r.lookup("b").map(|(i, _)| i), Some(1));
        assert!(r.lookup("c").is_none());
        assert_eq!(r.names(), ["a", "b"]);
        let dup = Registry::new(vec![("a".into(), echo()), ("a".into(), echo())]);
        assert!(matches!(dup, Err(Error::DuplicateFunction(n)) if n == "a"));
        for bad in ["", "a b", "tab\t", &"x".repeat(256)] {
            let r = Registry::new(vec![(bad.to_owned(), echo())]);
            assert!(matches!(r, Err(Error::InvalidFunctionName(_))), "{bad:?}");
        }
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
