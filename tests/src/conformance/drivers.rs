//! The drivers under test, each a few lines around its own API: the mio server and the
//! blocking client of `wirecall`, the server and the client of `wirecall-tokio`.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
        let server = register_test_functions(builder, &executions)
            .listen(endpoint)
            .build()
            .map_err(|e| e.to_string())?;
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
        let server = register_test_functions(builder, &executions)
            .listen(endpoint)
            .build()
            .map_err(|e| e.to_string())?;
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
        let client = wirecall::Client::connect(endpoint, config).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            cancelled: HashSet::new(),
        })
    }

    fn call(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        self.client.call(method, body, timeout)
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
            .block_on(wirecall_tokio::Client::connect(endpoint, config))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            runtime,
            client,
            next: 0,
            tasks: std::collections::HashMap::new(),
            outcomes: mpsc::channel(),
        })
    }

    fn call(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        self.runtime
            .block_on(self.client.call(method, body, timeout))
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
