//! The functions a tokio server runs: the mio server's synchronous and deferred forms, and
//! `async` ones; and the dispatch of one request to them, shared by stream connections and
//! datagram endpoints.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::task::AbortHandle;
use wirecall::core::wire::Target;
use wirecall::function::{
    CallContext, CallRef, Completions, DeferredFn, ERROR_FUNCTION_PANICKED, Registry, Responder,
    SyncFn, run_sync,
};
use wirecall::stats::Stats;
use wirecall::{Answer, CallFailure};

/// The future an `async` function returns, boxed.
pub type BoxAnswer = Pin<Box<dyn Future<Output = Answer> + Send + 'static>>;

/// An `async` function: gets the request body (owned: the future may outlive the receive
/// buffer) and returns its answer's future, which runs as a task of its own.
pub type AsyncFn = Arc<dyn Fn(Vec<u8>) -> BoxAnswer + Send + Sync>;

/// A registered function.
#[derive(Clone)]
pub(crate) enum Function {
    Sync(SyncFn),
    Deferred(DeferredFn),
    Async(AsyncFn),
}

/// What became of a dispatched request.
pub(crate) enum Dispatched {
    /// Its answer, ready now.
    Now(Answer),
    /// A responder or a task brings the answer through the [`Completions`] later; a task
    /// can be stopped with its handle when the call is cancelled.
    Later(Option<AbortHandle>),
}

/// Runs or starts the function for one request (`target` with `body`) of `call`; its
/// answer is ready at once or comes back through `completions`.
pub(crate) fn dispatch(
    functions: &Registry<Function>,
    stats: &Stats,
    completions: &Arc<dyn Completions>,
    call: CallRef,
    context: CallContext<'_>,
    target: Target<'_>,
    body: &[u8],
) -> Dispatched {
    let (index, function) = match functions.find(target) {
        Ok(found) => found,
        Err(refusal) => {
            stats.call(refusal.method);
            return Dispatched::Now(Err(refusal.failure));
        }
    };
    stats.call(Some(index));
    stats.execution(index);
    match function {
        Function::Sync(function) => Dispatched::Now(run_sync(function, &context, body)),
        Function::Deferred(function) => {
            let responder = Responder::new(call, Arc::clone(completions));
            if catch_unwind(AssertUnwindSafe(|| function(&context, body, responder))).is_err() {
                // The responder was dropped while unwinding: the call gets an error.
                log::error!("function {target} panicked");
            }
            Dispatched::Later(None)
        }
        Function::Async(function) => {
            let future = match catch_unwind(AssertUnwindSafe(|| function(body.to_vec()))) {
                Ok(future) => future,
                Err(_) => return Dispatched::Now(panicked()),
            };
            let completions = Arc::clone(completions);
            let task = tokio::spawn(async move {
                let answer = CatchUnwind(future).await;
                completions.complete(call, answer, None);
            });
            Dispatched::Later(Some(task.abort_handle()))
        }
    }
}

/// The answer to a call whose function panicked.
fn panicked() -> Answer {
    log::error!("a function panicked; its call is answered with an error");
    Err(CallFailure::error(
        ERROR_FUNCTION_PANICKED,
        "the function panicked",
    ))
}

/// An answer future whose panic becomes the [`ERROR_FUNCTION_PANICKED`] answer, so a call
/// whose `async` function panics is still answered (and the server goes on).
struct CatchUnwind(BoxAnswer);

impl Future for CatchUnwind {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => Poll::Ready(panicked()),
        }
    }
}
