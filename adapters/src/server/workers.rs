//! The worker pool: threads that run synchronous functions off the event loop, so a slow
//! function never stalls other calls. Answers go back through the [`Responder`] (a channel
//! and the loop's waker), in completion order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant as StdInstant;

use wirecall_core::wire::RejectCode;

use crate::function::{CallContext, CallFailure, OwnedPeer, Responder, SyncFn, run_sync};
use crate::stats::Stats;

/// One call for a worker.
pub(super) struct Job {
    pub(super) function: SyncFn,
    /// Index of the method, for the executions counter.
    pub(super) method: usize,
    pub(super) body: Vec<u8>,
    /// Who sent the call, for the function's context.
    pub(super) peer: OwnedPeer,
    /// When the client stops waiting; a job picked up later is not run.
    pub(super) deadline: Option<StdInstant>,
    pub(super) responder: Responder,
}

/// A fixed set of worker threads fed from one queue of at most `limit` jobs.
pub(super) struct Pool {
    jobs: Sender<Job>,
    /// Jobs queued and not yet picked up by a worker.
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl Pool {
    /// Starts `n` workers with a queue of at most `limit` jobs.
    pub(super) fn start(n: usize, limit: usize, stats: Arc<Stats>) -> std::io::Result<Self> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let queued = Arc::new(AtomicUsize::new(0));
        for i in 0..n {
            let queue = Arc::clone(&queue);
            let queued = Arc::clone(&queued);
            let stats = Arc::clone(&stats);
            thread::Builder::new()
                .name(format!("wirecall-worker-{i}"))
                .spawn(move || work(&queue, &queued, &stats))?;
        }
        Ok(Self {
            jobs,
            queued,
            limit,
        })
    }

    /// `true` when the queue is full: answer busy instead of submitting.
    pub(super) fn is_full(&self) -> bool {
        self.queued.load(Ordering::Acquire) >= self.limit
    }

    /// Queues a job. If every worker has gone (they do not, short of a bug), the job's
    /// responder is dropped, which answers the call with an error.
    pub(super) fn submit(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(job) = self.jobs.send(job) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            drop(job);
            log::error!("worker pool has stopped; call answered with an error");
        }
    }
}

/// A worker: takes jobs until the pool is dropped (the queue's sender goes away).
fn work(queue: &Mutex<Receiver<Job>>, queued: &AtomicUsize, stats: &Stats) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.recv()
        };
        let Ok(job) = job else { return };
        queued.fetch_sub(1, Ordering::AcqRel);
        if job.deadline.is_some_and(|d| StdInstant::now() >= d) {
            // The client has stopped waiting and the core has expired the request: this
            // answer will be dropped, and the function is not run.
            job.responder.respond(Err(CallFailure::rejected(
                RejectCode::DEADLINE_EXCEEDED,
                "deadline passed before a worker was free",
            )));
            continue;
        }
        stats.execution(job.method);
        let context = CallContext::new(job.peer.as_peer(), job.deadline);
        let answer = run_sync(&job.function, &context, &job.body);
        job.responder.respond(answer);
    }
}
