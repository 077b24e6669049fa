//! The drivers under test, each a few lines around its own API: the mio server and the
//! blocking client of `wirecall`, the server and the client of `wirecall-tokio`.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wirecall::core::wire::Target;
use wirecall::{CallError, ClientConfig, Endpoint, ServerConfig};

use super::{
    ClientDriver, Executions, RunningServer, ServerDriver, Ticket, register_test_functions,
};

/// The mio server (`wirecall::Server`), on a thread of its own.
#[derive(Debug)]
pub struct MioServer;

impl ServerDriver for MioServer {
    const NAME: &'static str = "mio";

    fn start(endpoint: Endpoint, config: ServerConfig) -> Result<RunningServer, String> {
        let executions = Executions::default();
        let builder = wirecall::ServerBuilder::new(config);
        let builder = register_test_functions(builder, &executions);
        let builder = match endpoint {
            Endpoint::Tls(..) => builder.listen_tls(endpoint, super::test_pki().server_config()),
            endpoint => builder.listen(endpoint),
        };
        let server = builder.build().map_err(|e| e.to_string())?;
        let endpoint = server.endpoints().first().cloned().ok_or("no endpoint")?;
        let stats = server.stats();
        let handle = server.shutdown_handle();
        let (tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Err(e) = server.run() {
                eprintln!("mio server: {e}");
            }
            let _ = tx.send(());
        });
        let stop = Box::new(move |now: bool| {
            if now {
                handle.shutdown_now();
            } else {
                handle.shutdown();
            }
        });
        Ok(RunningServer::new(
            endpoint, stats, executions, stop, done, thread,
        ))
    }
}

/// The tokio server (`wirecall_tokio::Server`), on a multi-threaded runtime of two workers
/// on a thread of its own.
#[derive(Debug)]
pub struct TokioServer;

impl ServerDriver for TokioServer {
    const NAME: &'static str = "tokio";

    fn start(endpoint: Endpoint, config: ServerConfig) -> Result<RunningServer, String> {
        let executions = Executions::default();
        let builder = wirecall_tokio::ServerBuilder::new(config);
        let builder = register_test_functions(builder, &executions);
        let builder = match endpoint {
            Endpoint::Tls(..) => builder.listen_tls(endpoint, super::test_pki().server_config()),
            endpoint => builder.listen(endpoint),
        };
        let server = builder.build().map_err(|e| e.to_string())?;
        let endpoint = server.endpoints().first().cloned().ok_or("no endpoint")?;
        let stats = server.stats();
        let handle = server.shutdown_handle();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Err(e) = runtime.block_on(server.run()) {
                eprintln!("tokio server: {e}");
            }
            let _ = tx.send(());
        });
        let stop = Box::new(move |now: bool| {
            if now {
                handle.shutdown_now();
            } else {
                handle.shutdown();
            }
        });
        Ok(RunningServer::new(
            endpoint, stats, executions, stop, done, thread,
        ))
    }
}

/// The blocking client (`wirecall::Client`).
#[derive(Debug)]
pub struct BlockingClient {
    client: wirecall::Client,
    cancelled: HashSet<u64>,
}

impl ClientDriver for BlockingClient {
    const NAME: &'static str = "blocking";

    fn connect(endpoint: &Endpoint, config: ClientConfig) -> Result<Self, String> {
        let client = match endpoint {
            Endpoint::Tls(..) => {
                wirecall::Client::connect_tls(endpoint, config, &super::test_pki().client)
            }
            _ => wirecall::Client::connect(endpoint, config),
        }
        .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            cancelled: HashSet::new(),
        })
    }

    fn call<'t>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        self.client.call(target, body, timeout)
    }

    fn submit(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Ticket, CallError> {
        self.client.submit(method, body, timeout).map(|id| id.0)
    }

    fn wait_any(&mut self) -> Option<(Ticket, Result<Vec<u8>, CallError>)> {
        loop {
            let (id, outcome) = self.client.wait_any()?;
            if self.cancelled.remove(&id.0) {
                // Its outcome is the cancel (or an answer that came first).
                continue;
            }
            return Some((id.0, outcome));
        }
    }

    fn cancel(&mut self, ticket: Ticket) {
        self.client.cancel(wirecall::core::RequestId(ticket));
        self.cancelled.insert(ticket);
    }

    fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.client.service();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A submitted call's outcome, sent by its task.
type Finished = (Ticket, Result<Vec<u8>, CallError>);

/// The tokio client (`wirecall_tokio::Client`) on a runtime of one worker: each submitted
/// call is a task, and cancelling aborts the task, which drops the call's future (that is
/// how a tokio user cancels).
pub struct TokioClient {
    runtime: tokio::runtime::Runtime,
    client: wirecall_tokio::Client,
    next: Ticket,
    tasks: std::collections::HashMap<Ticket, tokio::task::JoinHandle<()>>,
    outcomes: (mpsc::Sender<Finished>, mpsc::Receiver<Finished>),
}

impl std::fmt::Debug for TokioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioClient").finish_non_exhaustive()
    }
}

impl ClientDriver for TokioClient {
    const NAME: &'static str = "tokio";

    fn connect(endpoint: &Endpoint, config: ClientConfig) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = runtime
            .block_on(async {
                match endpoint {
                    Endpoint::Tls(..) => {
                        let tls = &super::test_pki().client;
                        wirecall_tokio::Client::connect_tls(endpoint, config, tls).await
                    }
                    _ => wirecall_tokio::Client::connect(endpoint, config).await,
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            runtime,
            client,
            next: 0,
            tasks: std::collections::HashMap::new(),
            outcomes: mpsc::channel(),
        })
    }

    fn call<'t>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        self.runtime
            .block_on(self.client.call(target, body, timeout))
    }

    fn submit(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Ticket, CallError> {
        // Started here, so calls go out in the order they are submitted; awaited (and
        // cancelled, by aborting) in a task of their own.
        let call = self
            .runtime
            .block_on(self.client.start(method, body, timeout))?;
        self.next += 1;
        let ticket = self.next;
        let tx = self.outcomes.0.clone();
        let task = self.runtime.spawn(async move {
            let _ = tx.send((ticket, call.await));
        });
        self.tasks.insert(ticket, task);
        Ok(ticket)
    }

    fn wait_any(&mut self) -> Option<(Ticket, Result<Vec<u8>, CallError>)> {
        loop {
            if self.tasks.is_empty() {
                return None;
            }
            // Every live task sends one outcome; a bound keeps a broken driver from hanging
            // the suite.
            match self.outcomes.1.recv_timeout(Duration::from_secs(60)) {
                Ok((ticket, outcome)) => {
                    if self.tasks.remove(&ticket).is_some() {
                        return Some((ticket, outcome));
                    }
                }
                Err(_) => panic!(
                    "no outcome for 60 s with {} call(s) in flight",
                    self.tasks.len()
                ),
            }
        }
    }

    fn cancel(&mut self, ticket: Ticket) {
        if let Some(task) = self.tasks.remove(&ticket) {
            task.abort();
        }
    }

    fn idle(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// The embedded driver's client (`wirecall_embedded::Client`) over tokio sockets through
/// `embedded-io-adapters`, on a current-thread runtime: the same driver code that runs on
/// embassy-net. One call at a time, so the cases that need calls in flight together do
/// not apply to it ([`ClientDriver::PIPELINES`]); submitted calls run one by one when
/// their outcomes are asked for.
pub struct EmbeddedClient {
    runtime: tokio::runtime::Runtime,
    client: wirecall_embedded::Client<'static, EmbeddedIo, EmbeddedTimer>,
    /// Submitted calls not yet run: ticket, method, body, timeout.
    queued: std::collections::VecDeque<(Ticket, String, Vec<u8>, Option<Duration>)>,
    next: Ticket,
    out: Vec<u8>,
}

impl std::fmt::Debug for EmbeddedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedClient").finish_non_exhaustive()
    }
}

/// A tokio stream socket of either transport, as one type.
trait StreamIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> StreamIo for T {}

/// The embedded client's transport: a tokio socket behind `embedded-io-async`.
type EmbeddedIo = embedded_io_adapters::tokio_1::FromTokio<Box<dyn StreamIo>>;

/// Buffers of the embedded client: one default frame (64 KiB) and its prefix.
const EMBEDDED_BUF: usize = 64 * 1024 + 4;

/// The embedded driver's clock on tokio.
pub struct EmbeddedTimer {
    epoch: tokio::time::Instant,
}

impl wirecall_embedded::Timer for EmbeddedTimer {
    fn now(&self) -> wirecall::core::Instant {
        let micros = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        wirecall::core::Instant::from_micros(micros)
    }

    fn sleep_until(&mut self, at: wirecall::core::Instant) -> impl Future<Output = ()> {
        tokio::time::sleep_until(self.epoch + Duration::from_micros(at.as_micros()))
    }
}

impl ClientDriver for EmbeddedClient {
    const NAME: &'static str = "embedded";
    const PIPELINES: bool = false;

    fn supports(transport: super::Transport) -> bool {
        !transport.is_datagram() && transport != super::Transport::Tls
    }

    fn connect(endpoint: &Endpoint, config: ClientConfig) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let io: Box<dyn StreamIo> = runtime
            .block_on(async {
                match endpoint {
                    Endpoint::Unix(path) => tokio::net::UnixStream::connect(path)
                        .await
                        .map(|s| Box::new(s) as Box<dyn StreamIo>),
                    Endpoint::Tcp(host, port) => {
                        let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                        stream.set_nodelay(true)?;
                        Ok(Box::new(stream) as Box<dyn StreamIo>)
                    }
                    _ => Err(std::io::Error::other(
                        "the embedded client speaks streams only",
                    )),
                }
            })
            .map_err(|e| format!("connect: {e}"))?;
        // Static storage, as on a device: leaked for the test process's life (one per
        // connection the suite makes).
        let storage = Box::leak(Box::new(
            wirecall_embedded::ClientStorage::<EMBEDDED_BUF, 64>::new(),
        ));
        let timer = runtime.block_on(async {
            EmbeddedTimer {
                epoch: tokio::time::Instant::now(),
            }
        });
        let settings = wirecall_embedded::Settings::new(config.connection);
        let client = wirecall_embedded::Client::new(
            embedded_io_adapters::tokio_1::FromTokio::new(io),
            storage,
            settings,
            timer,
        )
        .map_err(|e| format!("{e:?}"))?;
        Ok(Self {
            runtime,
            client,
            queued: std::collections::VecDeque::new(),
            next: 0,
            out: vec![0; EMBEDDED_BUF],
        })
    }

    fn call<'t>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let timeout = timeout.map(wirecall::clock::to_core);
        let result = self
            .runtime
            .block_on(self.client.call(target, body, timeout, &mut self.out));
        match result {
            Ok(answer) => Ok(answer.to_vec()),
            Err(e) => Err(embedded_error(&e)),
        }
    }

    fn submit(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Ticket, CallError> {
        self.next += 1;
        self.queued
            .push_back((self.next, method.to_owned(), body.to_vec(), timeout));
        Ok(self.next)
    }

    fn wait_any(&mut self) -> Option<(Ticket, Result<Vec<u8>, CallError>)> {
        let (ticket, method, body, timeout) = self.queued.pop_front()?;
        Some((ticket, self.call(&method, &body, timeout)))
    }

    fn cancel(&mut self, ticket: Ticket) {
        self.queued.retain(|(t, ..)| *t != ticket);
    }

    fn idle(&mut self, d: Duration) {
        // The driver answers the server's keepalive pings while it idles.
        let until = self
            .client
            .now()
            .saturating_add(wirecall::clock::to_core(d));
        let _ = self.runtime.block_on(self.client.idle_until(until));
    }
}

/// The embedded client's failure as the suite's `CallError`, through the core's `Failure`
/// it was made from (so the execution answer is the core's).
fn embedded_error<E: std::fmt::Debug>(e: &wirecall_embedded::CallError<'_, E>) -> CallError {
    use wirecall::core::client::{CloseReason, Failure, SendError};
    use wirecall_embedded::CallErrorKind as K;
    let sent = e.execution() != wirecall::core::client::Execution::NotExecuted;
    let failure = match e.kind() {
        K::Remote { code, message } => Failure::Remote {
            code: *code,
            message,
        },
        K::Rejected { code, message } => Failure::Rejected {
            code: *code,
            message,
        },
        K::Busy { retry_after } => Failure::Busy {
            retry_after: *retry_after,
        },
        K::TimedOut => Failure::TimedOut { sent },
        K::Cancelled => Failure::Cancelled { sent },
        K::Refused => Failure::Refused,
        K::ConnectionLost(reason) => Failure::ConnectionLost {
            reason: *reason,
            sent,
        },
        K::NotSent(wirecall_embedded::Error::Send(e)) => return CallError::not_sent(*e),
        K::NotSent(_) => return CallError::not_sent(SendError::Closed),
        _ => Failure::ConnectionLost {
            reason: CloseReason::Aborted,
            sent,
        },
    };
    CallError::from(&failure)
}
