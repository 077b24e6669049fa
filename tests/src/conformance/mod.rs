//! The conformance suite every wirecall driver passes: each [case](cases) runs for a
//! server driver ([`ServerDriver`]: the mio server, the tokio server) and a client driver
//! ([`ClientDriver`]: the blocking client, the tokio client) over every transport the pair
//! supports, over real sockets. `tests/tests/conformance.rs` instantiates the matrix.
//!
//! A new runtime joins by implementing [`ServerDriver`] or [`ClientDriver`] (a few lines
//! around its own API; see [`drivers`]) and adding one line to the matrix.

pub mod cases;
pub mod drivers;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wirecall::core::wire::Target;
use wirecall::function::Register;
use wirecall::{CallError, CallFailure, ClientConfig, Endpoint, ServerConfig, StatsHandle};

/// The `lossy_relay` binary (`env!("CARGO_BIN_EXE_lossy_relay")` of the test that runs the
/// suite), for [`cases::lossy_exactly_once`].
pub static LOSSY_RELAY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `unix:`
    Unix,
    /// `tcp:`
    Tcp,
    /// `tls:`, with the suite's certificates ([`test_pki`]).
    Tls,
    /// `unix-dgram:`
    UnixDgram,
    /// `udp:`
    Udp,
}

impl Transport {
    /// Every transport, in the order the suite runs them.
    pub const ALL: [Self; 5] = [Self::Unix, Self::Tcp, Self::Tls, Self::UnixDgram, Self::Udp];

    /// `true` for the connectionless ones.
    #[must_use]
    pub fn is_datagram(self) -> bool {
        matches!(self, Self::UnixDgram | Self::Udp)
    }

    /// An endpoint of this transport to listen on: a socket file in `dir`, or loopback
    /// port 0.
    #[must_use]
    pub fn endpoint(self, dir: &Path) -> Endpoint {
        match self {
            Self::Unix => Endpoint::Unix(dir.join("server.sock")),
            Self::UnixDgram => Endpoint::UnixDatagram(dir.join("server.dgram")),
            Self::Tcp => Endpoint::Tcp("127.0.0.1".into(), 0),
            Self::Tls => Endpoint::Tls("127.0.0.1".into(), 0),
            Self::Udp => Endpoint::Udp("127.0.0.1".into(), 0),
        }
    }

    /// Its scheme, for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::UnixDgram => "unix-dgram",
            Self::Udp => "udp",
        }
    }
}

/// The suite's certificates for `tls:`: a CA, and a server certificate for 127.0.0.1 and
/// localhost that it signed, made once per test process (rcgen) in a temporary directory
/// that lasts as long as the process.
#[derive(Debug)]
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The server's certificate and key.
    pub server: crate::tls::CertFiles,
    /// A client's settings trusting the CA.
    pub client: wirecall::TlsConnector,
}

impl TestPki {
    /// The server's TLS settings.
    #[must_use]
    pub fn server_config(&self) -> wirecall::TlsServerConfig {
        wirecall::TlsServerConfig::new(&self.server.cert, &self.server.key)
    }
}

/// The suite's certificates (see [`TestPki`]).
///
/// # Panics
///
/// When they cannot be made (no temporary directory, rcgen failing).
pub fn test_pki() -> &'static TestPki {
    static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ca = crate::tls::TestCa::new(dir.path(), "suite").unwrap_or_else(|e| panic!("{e}"));
        let server = ca
            .issue("server", &["127.0.0.1", "localhost"], None)
            .unwrap_or_else(|e| panic!("{e}"));
        let client = wirecall::TlsClientConfig::new()
            .ca(&ca.cert)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        TestPki {
            _dir: dir,
            server,
            client,
        }
    })
}

/// How many times each request body ran `count`, on one server.
#[derive(Debug, Clone, Default)]
pub struct Executions(Arc<Mutex<HashMap<Vec<u8>, u32>>>);

impl Executions {
    fn record(&self, body: &[u8]) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(body.to_vec()).or_insert(0);
        *n += 1;
        *n
    }

    /// Runs of `count` in all.
    #[must_use]
    pub fn total(&self) -> u64 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(|n| u64::from(*n)).sum()
    }

    /// Bodies that ran more than once.
    #[must_use]
    pub fn repeated(&self) -> Vec<Vec<u8>> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|(_, n)| **n > 1)
            .map(|(b, _)| b.clone())
            .collect()
    }
}

/// The functions every server of the suite serves, on top of the built-ins (`echo`,
/// `upper`, `sleep`, `stats`, ...):
///
/// - `count`: records that its body ran (see [`Executions`]) and echoes it;
/// - `busy_once`: busy (retry after 20 ms) the first time a body comes, then echoes it;
/// - `fail`: the application error 1000;
/// - `panic`: panics;
/// - the typed endpoint [`TestAdd`] (`test/add`): adds two numbers, the error `7` on
///   overflow.
pub fn register_test_functions<B: Register>(builder: B, executions: &Executions) -> B {
    let count = executions.clone();
    let busy = Executions::default();
    wirecall::builtins::register(builder)
        .function("count", move |body| {
            count.record(body);
            Ok(body.to_vec())
        })
        .function("busy_once", move |body| {
            if busy.record(body) == 1 {
                Err(CallFailure::Busy {
                    retry_after: Duration::from_millis(20),
                })
            } else {
                Ok(body.to_vec())
            }
        })
        .function("fail", |_| Err(CallFailure::error(1000, "always fails")))
        .function("panic", |_| panic!("the test function panics"))
        .endpoint::<TestAdd, _>(|(a, b): (u32, u32)| a.checked_add(b).ok_or(7))
}

wirecall::core::endpoints! {
    /// The suite's typed endpoint: two numbers in, their sum out, error `7` on overflow.
    pub TestAdd = "test/add": (u32, u32) => u32, u32;
    /// `test/add` as a client built with other types has it (the first number wider): its
    /// calls must be refused as a schema mismatch.
    pub TestAddWide = "test/add": (u64, u32) => u32, u32;
    /// A path no server of the suite serves.
    pub TestMissing = "test/missing": (u32, u32) => u32, u32;
}

/// A running server of some driver.
pub struct RunningServer {
    /// The endpoint it listens on, as bound.
    pub endpoint: Endpoint,
    /// Its counters.
    pub stats: StatsHandle,
    /// The runs of its `count` function.
    pub executions: Executions,
    stop: Box<dyn Fn(bool) + Send>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Wraps a server running on `thread`, which sends on `done` when it has returned;
    /// `stop(now)` shuts it down (gracefully, or at once when `now`).
    pub fn new(
        endpoint: Endpoint,
        stats: StatsHandle,
        executions: Executions,
        stop: Box<dyn Fn(bool) + Send>,
        done: std::sync::mpsc::Receiver<()>,
        thread: std::thread::JoinHandle<()>,
    ) -> Self {
        Self {
            endpoint,
            stats,
            executions,
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        (self.stop)(false);
    }

    /// Stops at once.
    pub fn shutdown_now(&self) {
        (self.stop)(true);
    }

    /// Waits up to `timeout` for the server to return; `true` if it did.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let done = self.done.recv_timeout(timeout).is_ok();
        if done {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        done
    }

    /// One counter of its `stats` text (0 when absent).
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        crate::parse_stats(&self.stats.snapshot().to_string())
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            (self.stop)(true);
            let _ = self.wait(Duration::from_secs(10));
        }
    }
}

/// A server of one runtime, as the suite starts it.
pub trait ServerDriver {
    /// Its name in reports.
    const NAME: &'static str;

    /// Starts a server with the [test functions](register_test_functions) on `endpoint`,
    /// in threads of its own.
    ///
    /// # Errors
    ///
    /// When it cannot be built or bound.
    fn start(endpoint: Endpoint, config: ServerConfig) -> Result<RunningServer, String>;

    /// Whether it serves `transport`.
    #[must_use]
    fn supports(_transport: Transport) -> bool {
        true
    }
}

/// A call the suite made with [`ClientDriver::submit`].
pub type Ticket = u64;

/// A client of one runtime, behind the blocking interface the suite drives.
pub trait ClientDriver: Sized {
    /// Its name in reports.
    const NAME: &'static str;

    /// Whether it keeps many calls in flight at once; the cases that need that do not
    /// apply to a client that does not.
    const PIPELINES: bool = true;

    /// Whether it speaks `transport`.
    #[must_use]
    fn supports(_transport: Transport) -> bool {
        true
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// The driver's connect error, as text.
    fn connect(endpoint: &Endpoint, config: ClientConfig) -> Result<Self, String>;

    /// One call (of a method, or of a typed endpoint by its key), waiting for its outcome.
    ///
    /// # Errors
    ///
    /// The call's failure.
    fn call<'t>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError>;

    /// Starts a call (many may be in flight); its outcome comes from
    /// [`wait_any`](Self::wait_any).
    ///
    /// # Errors
    ///
    /// A call that could not be started.
    fn submit(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Ticket, CallError>;

    /// The next outcome of a submitted call, in the order they end; `None` when none is
    /// waiting (cancelled calls give none).
    fn wait_any(&mut self) -> Option<(Ticket, Result<Vec<u8>, CallError>)>;

    /// Cancels a submitted call: it gives no outcome from now on.
    fn cancel(&mut self, ticket: Ticket);

    /// Stays idle for `d`, doing what the driver needs to keep its connection (a blocking
    /// client services it now and then; an async one has a task for that).
    fn idle(&mut self, d: Duration);
}
