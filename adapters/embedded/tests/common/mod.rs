//! What the host tests share: the driver's clock over `tokio::time`, the embedded server's
//! functions, the mio server on a thread, and a bound on every wait.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::thread;
use std::time::Duration as StdDuration;

use wirecall::{CallFailure, Endpoint, ServerBuilder, ServerConfig, ShutdownHandle, builtins};
use wirecall_core::server::IncomingRequest;
use wirecall_core::wire::{RejectCode, Reply};
use wirecall_core::{Config, Instant};
use wirecall_embedded::{Handler, Settings, Timer};

/// Every test's bound on one wait.
pub(crate) const BOUND: StdDuration = StdDuration::from_secs(10);

/// Buffers of 4 KiB frames: what the tests' connections use.
pub(crate) const BUF: usize = 4096 + 4;

/// Settings for `BUF`-byte buffers.
pub(crate) fn settings() -> Settings {
    Settings::new(Config {
        max_frame_len: 4096,
        max_in_flight: 8,
        ..Config::default()
    })
}

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("the wait is bounded")
}

/// The driver's clock on tokio: microseconds since the timer was made.
pub(crate) struct TokioTimer {
    epoch: tokio::time::Instant,
}

impl TokioTimer {
    pub(crate) fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl Timer for TokioTimer {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap())
    }

    fn sleep_until(&mut self, at: Instant) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.epoch + StdDuration::from_micros(at.as_micros()))
    }
}

/// The embedded server's functions: `echo` in place, `upper` into its own buffer, `fail`
/// as a remote error 7; anything else is rejected as unknown. Counts what it ran.
pub(crate) struct Functions {
    pub(crate) out: [u8; 256],
    pub(crate) ran: usize,
}

impl Functions {
    pub(crate) fn new() -> Self {
        Self {
            out: [0; 256],
            ran: 0,
        }
    }
}

impl Handler for Functions {
    fn handle<'a>(&'a mut self, request: IncomingRequest<'a>) -> Reply<'a> {
        self.ran += 1;
        match request.target.method() {
            Some("echo") => Reply::Ok(request.body),
            Some("upper") => {
                let n = request.body.len().min(self.out.len());
                let (out, _) = self.out.split_at_mut(n);
                for (o, b) in out.iter_mut().zip(request.body) {
                    *o = b.to_ascii_uppercase();
                }
                Reply::Ok(out)
            }
            Some("fail") => Reply::Error {
                code: 7,
                message: "failed on purpose",
            },
            _ => {
                self.ran -= 1;
                Reply::Rejected {
                    code: RejectCode::UNKNOWN_METHOD,
                    message: "no such method",
                }
            }
        }
    }
}

/// The mio server with the built-in functions and `fail` (remote error 42), on a TCP and
/// a Unix endpoint; shut down and joined on drop.
pub(crate) struct MioServer {
    pub(crate) tcp: Endpoint,
    pub(crate) unix: Endpoint,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<Result<(), wirecall::Error>>>,
    _dir: tempfile::TempDir,
}

wirecall_core::endpoints! {
    /// Two numbers in, their sum out; the error 7 on overflow.
    pub(crate) Sum = "t/sum": (u32, u32) => u32, u32;
    /// `t/sum` as a client of another interface version declares it.
    pub(crate) SumWide = "t/sum": (u64, u32) => u32, u32;
    /// Borrowed both ways.
    pub(crate) Shout = "t/shout": &'a str => &'a str, ();
}

impl MioServer {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let builder = builtins::register(ServerBuilder::new(ServerConfig::default()))
            .function("fail", |_| Err(CallFailure::error(42, "failed on purpose")))
            .endpoint::<Sum, _>(|(a, b): (u32, u32)| a.checked_add(b).ok_or(7))
            .endpoint_deferred::<Shout, _>(|text: &str, responder| {
                responder.respond(&Ok(text.to_uppercase().as_str()));
            });
        let server = builder
            .listen(Endpoint::Tcp("127.0.0.1".into(), 0))
            .listen(Endpoint::Unix(dir.path().join("mio.sock")))
            .build()
            .unwrap();
        let endpoints = server.endpoints().to_vec();
        let stop = server.shutdown_handle();
        let thread = thread::spawn(move || server.run());
        Self {
            tcp: endpoints[0].clone(),
            unix: endpoints[1].clone(),
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for MioServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}
