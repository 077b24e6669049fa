//! The async server: functions registered by name (synchronous, deferred or `async`),
//! served over any number of Unix stream, TCP, Unix datagram and UDP endpoints, one task
//! per connection and one per datagram endpoint.
//!
//! ```no_run
//! use wirecall::{CallFailure, Endpoint, ServerConfig};
//! use wirecall_tokio::ServerBuilder;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let server = wirecall::builtins::register(ServerBuilder::new(ServerConfig::default()))
//!     .function("reverse", |body| Ok(body.iter().rev().copied().collect()))
//!     .async_function("later", |body| async move {
//!         tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//!         Ok(body)
//!     })
//!     .function("fail", |_| Err(CallFailure::error(1000, "always fails")))
//!     .listen("tcp:127.0.0.1:7000".parse::<Endpoint>()?)
//!     .listen("udp:127.0.0.1:7000".parse::<Endpoint>()?)
//!     .build()?;
//! // Ends on Ctrl-C, after answering what was received.
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! **Where functions run.** A synchronous function runs on the connection's task (on a
//! multi-threaded runtime, connections run in parallel on its worker threads), so it
//! should be quick; work that blocks belongs in an `async` function that uses
//! `tokio::task::spawn_blocking`. A deferred function runs on the task too and answers
//! through its `Responder`, now or later, from anywhere. An `async` function's future runs
//! as a task of its own; a call the client cancels (or whose deadline passes) stops it.
//!
//! **Why one task per connection.** Each connection's state is owned by its task, so no
//! lock is taken on the call path, connections are spread over the runtime's worker threads
//! by tokio's scheduler (a server uses every core it is given), and a slow function stalls
//! only its own connection. The alternative, one task driving every connection (as the mio
//! server's single event loop does), would keep the server on one core and put every
//! connection behind the slowest function. `docs/BENCHMARKS.md` has the measurements.
//!
//! **Shutdown.** [`ShutdownHandle::shutdown`] (or the future given to
//! [`Server::run_until`]) starts a graceful shutdown: stop accepting and remove socket
//! files, ask every connection to close (each answers what it has received, then its
//! go-away tells the client which calls were taken), reject new datagram calls
//! (`SHUTTING_DOWN`, not executed) while answering the ones taken; `run` returns once all
//! is done, or after `shutdown_timeout`, when the rest is cut.

mod conn;
mod datagram;
mod function;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;
use tokio::task::JoinSet;
use wirecall::access::UnixAccess;
use wirecall::driver::{self, StreamListener};
use wirecall::function::{
    CallContext, Named, OwnedPeer, Register, Registry, Responder, deferred_without_context,
    without_context,
};
use wirecall::typed::{self, EndpointSpec, Outcome, TypedReply, TypedResponder};
use wirecall::{Answer, Endpoint, Error, ServerConfig, StatsHandle};
use wirecall_core::ServerConnection;
use wirecall_core::datagram::DatagramEntry;
use wirecall_core::server::RequestSlot;

use self::function::Function;
pub use self::function::{AsyncFn, BoxAnswer};
use crate::clock::Clock;
use crate::net::StreamSocket;

/// The server's shutdown phase, watched by every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving.
    Running,
    /// A graceful shutdown: no new connections, every connection closes after answering
    /// what it took, datagram endpoints drain.
    Graceful,
    /// Stop at once: connections are aborted.
    Now,
}

/// What every task of a server shares.
struct Shared {
    functions: Registry<Function>,
    stats: StatsHandle,
    config: ServerConfig,
    clock: Clock,
    /// Connections open now, across listeners.
    open: AtomicUsize,
    /// The Unix peers calls are taken from.
    access: UnixAccess,
    /// TLS connections over the limit being refused through a handshake of their own.
    refusing: AtomicUsize,
}

/// TLS connections over the limit refused through a TLS handshake of their own (a refusal
/// in plaintext would read as "not TLS" to the client) at most at once; more are closed
/// without a word. Each lasts at most `close_linger`.
const MAX_TLS_REFUSING: usize = 16;

/// Builds a [`Server`]: its functions, endpoints and limits. See the [module docs](self).
pub struct ServerBuilder {
    config: ServerConfig,
    functions: Vec<Named<Function>>,
    endpoints: Vec<Endpoint>,
    /// The TLS settings of `tls:` endpoints, by index into `endpoints`.
    tls: Vec<(usize, wirecall::TlsServerConfig)>,
    stats: StatsHandle,
    access: UnixAccess,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field(
                "functions",
                &self.functions.iter().map(Named::name).collect::<Vec<_>>(),
            )
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl ServerBuilder {
    /// A server with these limits (`workers` and `worker_queue` do not apply: see the
    /// [module docs](self) for where functions run), no functions and no endpoints yet.
    #[must_use]
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            functions: Vec::new(),
            endpoints: Vec::new(),
            tls: Vec::new(),
            stats: StatsHandle::default(),
            access: UnixAccess::everyone(),
        }
    }

    /// Takes calls from Unix stream peers only when `access` allows their credentials
    /// (see [`wirecall::access`]); others are refused (`NOT_ALLOWED`) before anything they
    /// send runs, and counted (`connections.not_allowed`). Default: every peer. (This
    /// driver does not check Unix datagram senders: a server with an allowlist and a
    /// `unix-dgram:` endpoint is refused at build.)
    #[must_use]
    pub fn unix_access(mut self, access: UnixAccess) -> Self {
        self.access = access;
        self
    }

    /// Registers a synchronous function under `name` (1 to 255 bytes, no whitespace). It
    /// runs on the connection's task. A panic in it answers the call with an error.
    #[must_use]
    pub fn function<F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8]) -> Answer + Send + Sync + 'static,
    {
        self.functions.push(Named::function(
            name,
            Function::Sync(without_context(function)),
        ));
        self
    }

    /// Registers a synchronous function under `name` that also gets the call's
    /// [`CallContext`]: who sent it (its address, its Unix credentials) and by when its
    /// client stops waiting. Otherwise as [`function`](Self::function).
    #[must_use]
    pub fn function_with_context<F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static,
    {
        self.functions
            .push(Named::function(name, Function::Sync(Arc::new(function))));
        self
    }

    /// Registers a deferred function under `name` that also gets the call's
    /// [`CallContext`]. Otherwise as [`deferred`](Self::deferred).
    #[must_use]
    pub fn deferred_with_context<F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], Responder) + Send + Sync + 'static,
    {
        self.functions.push(Named::function(
            name,
            Function::Deferred(Arc::new(function)),
        ));
        self
    }

    /// Registers a deferred function under `name`: it runs on the connection's task, must
    /// not block, and answers through the [`Responder`] (from any thread, at any time).
    #[must_use]
    pub fn deferred<F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8], Responder) + Send + Sync + 'static,
    {
        self.functions.push(Named::function(
            name,
            Function::Deferred(deferred_without_context(function)),
        ));
        self
    }

    /// Registers an `async` function under `name`: `function(body)` makes the future of
    /// its answer, which runs as a task of its own; a cancel (or the call's deadline)
    /// stops it, and a panic in it answers the call with an error.
    #[must_use]
    pub fn async_function<F, Fut>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let function: AsyncFn = Arc::new(move |body| Box::pin(function(body)));
        self.functions
            .push(Named::function(name, Function::Async(function)));
        self
    }

    /// Serves typed endpoint `E` with `handler`, which gets the decoded request and returns
    /// the endpoint's response or error ([`Register::endpoint`]; see
    /// [`wirecall::typed`]).
    #[must_use]
    pub fn endpoint<E, H>(self, handler: H) -> Self
    where
        E: typed::Endpoint + ?Sized + 'static,
        H: for<'a> Fn(E::Request<'a>) -> Outcome<'static, E> + Send + Sync + 'static,
    {
        Register::endpoint::<E, H>(self, handler)
    }

    /// Serves typed endpoint `E` with a `handler` that also gets the call's
    /// [`CallContext`] ([`Register::endpoint_with_context`]).
    #[must_use]
    pub fn endpoint_with_context<E, H>(self, handler: H) -> Self
    where
        E: typed::Endpoint + ?Sized + 'static,
        H: for<'a> Fn(&CallContext<'_>, E::Request<'a>) -> Outcome<'static, E>
            + Send
            + Sync
            + 'static,
    {
        Register::endpoint_with_context::<E, H>(self, handler)
    }

    /// Serves typed endpoint `E` with a `handler` that answers through a [`TypedReply`] before
    /// it returns, so the answer may borrow ([`Register::endpoint_reply`]).
    #[must_use]
    pub fn endpoint_reply<E, H>(self, handler: H) -> Self
    where
        E: typed::Endpoint + ?Sized + 'static,
        H: for<'a> Fn(E::Request<'a>, &mut TypedReply<E>) + Send + Sync + 'static,
    {
        Register::endpoint_reply::<E, H>(self, handler)
    }

    /// Serves typed endpoint `E` with a deferred `handler` that answers through its
    /// [`TypedResponder`] ([`Register::endpoint_deferred`]).
    #[must_use]
    pub fn endpoint_deferred<E, H>(self, handler: H) -> Self
    where
        E: typed::Endpoint + ?Sized + 'static,
        H: for<'a> Fn(E::Request<'a>, TypedResponder<E>) + Send + Sync + 'static,
    {
        Register::endpoint_deferred::<E, H>(self, handler)
    }

    /// Adds an endpoint to listen on (call it once per endpoint): any of the four
    /// transports. `tcp:host:0` and `udp:host:0` get a port from the OS: see
    /// [`Server::endpoints`].
    #[must_use]
    pub fn listen(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds a `tls:` endpoint to listen on, with its certificate, key and (for mutual TLS)
    /// client CA and allowed identities, as the mio server's
    /// [`listen_tls`](wirecall::ServerBuilder::listen_tls). The files are read by
    /// [`build`](Self::build).
    #[must_use]
    pub fn listen_tls(mut self, endpoint: Endpoint, tls: wirecall::TlsServerConfig) -> Self {
        self.tls.push((self.endpoints.len(), tls));
        self.endpoints.push(endpoint);
        self
    }

    /// The server's counters, readable before it is built and while it runs.
    #[must_use]
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Checks the configuration and binds every endpoint (no runtime is needed yet: the
    /// sockets join the runtime in [`Server::run`]).
    ///
    /// # Errors
    ///
    /// A limit the core or the adapter refuses, an invalid or duplicate function name, an
    /// endpoint that cannot be bound ([`Error::AddressInUse`] for a Unix socket a live
    /// server holds).
    pub fn build(self) -> Result<Server, Error> {
        let config = self.config;
        driver::check_server(&config)?;
        driver::check_limits(&config.connection)?;
        // The core checks its limits when a connection is made: make one now, so a bad
        // configuration fails here rather than on every accepted connection.
        ServerConnection::new(
            config.connection,
            vec![0u8; config.connection.buffer_len()],
            vec![0u8; config.connection.buffer_len()],
            vec![RequestSlot::EMPTY; config.connection.table_len()],
            wirecall_core::Instant::ZERO,
        )?;
        let mut functions = self.functions;
        let (spec, list) = typed::discovery(&functions);
        functions.push(Named::endpoint(spec, Function::Sync(without_context(list))));
        let functions = Registry::new(functions)?;
        self.stats.recorder().set_methods(functions.names());
        let mut bound = Vec::with_capacity(self.endpoints.len());
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let (socket, actual) = if let Endpoint::Tls(host, port) = endpoint {
                let Some((_, tls)) = self.tls.iter().find(|(at, _)| *at == i) else {
                    return Err(Error::TlsNotConfigured(endpoint.clone()));
                };
                let tls = tls.build()?;
                let tcp = Endpoint::Tcp(host.clone(), *port);
                let (listener, actual) = driver::bind_stream(&tcp, config.unix_mode)?;
                let actual = match actual {
                    Endpoint::Tcp(host, port) => Endpoint::Tls(host, port),
                    other => other,
                };
                (Bound::Tls(listener, tls), actual)
            } else if endpoint.is_datagram() {
                let (socket, actual) = driver::bind_datagram(endpoint, config.unix_mode)?;
                let dconfig =
                    driver::datagram_config(&config.datagram, config.unix_max_datagram, endpoint);
                let cache = config.datagram_cache;
                if cache > wirecall::config::MAX_DATAGRAM_CACHE {
                    return Err(Error::LimitTooLarge {
                        what: "datagram_cache",
                        got: u64::try_from(cache).unwrap_or(u64::MAX),
                        max: u64::try_from(wirecall::config::MAX_DATAGRAM_CACHE)
                            .unwrap_or(u64::MAX),
                    });
                }
                let storage = driver::check_datagram(&dconfig, dconfig.server_storage_len(cache))?;
                let bound = match socket {
                    driver::DatagramSocket::Udp(socket) => Bound::Udp {
                        socket,
                        core: core(dconfig, storage, cache)?,
                        max: dconfig.max_datagram,
                    },
                    driver::DatagramSocket::Unix { .. } if !self.access.is_everyone() => {
                        return Err(Error::Listen {
                            endpoint: endpoint.clone(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::Unsupported,
                                "this driver does not check the credentials of Unix datagram \
                                 senders, so it cannot serve them with an allowlist",
                            ),
                        });
                    }
                    driver::DatagramSocket::Unix { socket, file } => Bound::UnixDatagram {
                        socket,
                        file,
                        core: core(dconfig, storage, cache)?,
                        max: dconfig.max_datagram,
                    },
                    _ => return Err(unsupported(endpoint)),
                };
                (bound, actual)
            } else {
                let (listener, actual) = driver::bind_stream(endpoint, config.unix_mode)?;
                (Bound::Stream(listener), actual)
            };
            log::info!("listening on {actual}");
            bound.push((socket, actual.clone()));
            endpoints.push(actual);
        }
        let (phase, _) = watch::channel(Phase::Running);
        Ok(Server {
            bound,
            endpoints,
            shared: Arc::new(Shared {
                functions,
                stats: self.stats.clone(),
                config,
                clock: Clock::new(),
                open: AtomicUsize::new(0),
                access: self.access,
                refusing: AtomicUsize::new(0),
            }),
            shutdown: ShutdownHandle {
                phase: Arc::new(phase),
            },
            stats: self.stats,
        })
    }
}

impl Register for ServerBuilder {
    fn function<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8]) -> Answer + Send + Sync + 'static,
    {
        Self::function(self, name, function)
    }

    fn deferred<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&[u8], Responder) + Send + Sync + 'static,
    {
        Self::deferred(self, name, function)
    }

    fn function_with_context<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static,
    {
        Self::function_with_context(self, name, function)
    }

    fn deferred_with_context<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], Responder) + Send + Sync + 'static,
    {
        Self::deferred_with_context(self, name, function)
    }

    fn keyed_function<F>(mut self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static,
    {
        let function = Function::Sync(Arc::new(function));
        self.functions.push(Named::endpoint(spec, function));
        self
    }

    fn keyed_deferred<F>(mut self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], Responder) + Send + Sync + 'static,
    {
        let function = Function::Deferred(Arc::new(function));
        self.functions.push(Named::endpoint(spec, function));
        self
    }

    fn stats(&self) -> StatsHandle {
        Self::stats(self)
    }
}

/// A datagram endpoint's core with heap storage.
fn core<P: Clone + PartialEq>(
    config: wirecall_core::datagram::DatagramConfig,
    storage: usize,
    entries: usize,
) -> Result<datagram::Core<P>, Error> {
    let entries = std::iter::repeat_with(|| DatagramEntry::EMPTY)
        .take(entries)
        .collect();
    Ok(wirecall_core::datagram::DatagramServer::new(
        config,
        vec![0u8; storage].into_boxed_slice(),
        entries,
    )?)
}

fn unsupported(endpoint: &Endpoint) -> Error {
    Error::Listen {
        endpoint: endpoint.clone(),
        source: std::io::Error::new(std::io::ErrorKind::Unsupported, "unknown socket kind"),
    }
}

/// A bound endpoint, waiting for [`Server::run`].
enum Bound {
    Stream(StreamListener),
    /// A TCP listener whose connections speak TLS with this configuration.
    Tls(StreamListener, Arc<wirecall::tls::rustls::ServerConfig>),
    Udp {
        socket: std::net::UdpSocket,
        core: datagram::Core<std::net::SocketAddr>,
        max: usize,
    },
    UnixDatagram {
        socket: std::os::unix::net::UnixDatagram,
        file: driver::SocketFile,
        core: datagram::Core<std::path::PathBuf>,
        max: usize,
    },
}

/// A built server, bound and ready: [`run`](Self::run) serves until shut down.
pub struct Server {
    bound: Vec<(Bound, Endpoint)>,
    endpoints: Vec<Endpoint>,
    shared: Arc<Shared>,
    shutdown: ShutdownHandle,
    stats: StatsHandle,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The endpoints it listens on, as bound (a `tcp:` or `udp:` endpoint shows the real
    /// port).
    #[must_use]
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// A handle that shuts the server down from anywhere.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The server's counters.
    #[must_use]
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Serves until a shutdown through a [`ShutdownHandle`] is done (see the
    /// [module docs](self)). Must run inside a tokio runtime with IO and time enabled.
    ///
    /// # Errors
    ///
    /// Only when a bound socket cannot join the runtime; failing connections are logged
    /// and counted, never an error here.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `signal` completes (or a [`ShutdownHandle`] is used), then shuts down
    /// gracefully: e.g. `server.run_until(async { tokio::signal::ctrl_c().await.ok(); })`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), Error> {
        let mut tasks = JoinSet::new();
        for (bound, endpoint) in self.bound {
            let shared = Arc::clone(&self.shared);
            let phase = self.shutdown.phase.subscribe();
            let join_error = |source| Error::Listen {
                endpoint: endpoint.clone(),
                source,
            };
            match bound {
                Bound::Stream(listener) => {
                    let listener = Listening::new(listener).map_err(join_error)?;
                    tasks.spawn(accept(listener, endpoint, shared, phase));
                }
                Bound::Tls(listener, config) => {
                    let listener = match Listening::new(listener).map_err(join_error)? {
                        Listening::Tcp(listener) => Listening::Tls { listener, config },
                        _ => {
                            return Err(join_error(std::io::Error::other(
                                "a tls: endpoint bound no TCP listener",
                            )));
                        }
                    };
                    tasks.spawn(accept(listener, endpoint, shared, phase));
                }
                Bound::Udp { socket, core, max } => {
                    let socket = tokio::net::UdpSocket::from_std(socket).map_err(join_error)?;
                    let label = endpoint.to_string();
                    tasks.spawn(datagram::serve(
                        socket, core, max, label, None, shared, phase,
                    ));
                }
                Bound::UnixDatagram {
                    socket,
                    file,
                    core,
                    max,
                } => {
                    let socket = tokio::net::UnixDatagram::from_std(socket).map_err(join_error)?;
                    let label = endpoint.to_string();
                    let file = Some(file);
                    tasks.spawn(datagram::serve(
                        socket, core, max, label, file, shared, phase,
                    ));
                }
            }
        }
        let mut signal = pin!(signal);
        let mut signalled = false;
        let mut phase = self.shutdown.phase.subscribe();
        let mut deadline = None;
        let mut hard = false;
        loop {
            tokio::select! {
                () = &mut signal, if !signalled => {
                    signalled = true;
                    log::info!("shutting down gracefully");
                    self.shutdown.shutdown();
                }
                changed = phase.changed(), if deadline.is_none() && !hard => {
                    if changed.is_ok() && *phase.borrow_and_update() != Phase::Running {
                        // `health` fails from now on (this driver has no drain delay).
                        self.shared.stats.recorder().set_draining();
                        let timeout = self.shared.config.shutdown_timeout;
                        deadline = Some(tokio::time::Instant::now() + timeout);
                    }
                }
                () = sleep_opt(deadline) => {
                    log::warn!("shutdown deadline passed: closing what is still open");
                    self.shutdown.shutdown_now();
                    deadline = None;
                    hard = true;
                }
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Err(e)) if e.is_panic() => log::error!("a server task panicked: {e}"),
                    Some(_) => {}
                },
            }
        }
        log::info!("every connection closed and every datagram call answered; shutdown complete");
        Ok(())
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends a running server from anywhere.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    phase: Arc<watch::Sender<Phase>>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown (see the [module docs](self)). Calling it again does
    /// nothing more.
    pub fn shutdown(&self) {
        self.phase.send_if_modified(|phase| {
            if *phase == Phase::Running {
                *phase = Phase::Graceful;
                true
            } else {
                false
            }
        });
    }

    /// Stops at once: connections are closed without waiting for answers.
    pub fn shutdown_now(&self) {
        self.phase.send_replace(Phase::Now);
    }
}

/// A stream listener in the runtime, with its socket file (removed when dropped).
enum Listening {
    Unix {
        listener: tokio::net::UnixListener,
        _file: driver::SocketFile,
    },
    Tcp(tokio::net::TcpListener),
    Tls {
        listener: tokio::net::TcpListener,
        config: Arc<wirecall::tls::rustls::ServerConfig>,
    },
}

impl Listening {
    fn new(listener: StreamListener) -> std::io::Result<Self> {
        Ok(match listener {
            StreamListener::Unix { listener, file } => Self::Unix {
                listener: tokio::net::UnixListener::from_std(listener)?,
                _file: file,
            },
            StreamListener::Tcp(listener) => {
                Self::Tcp(tokio::net::TcpListener::from_std(listener)?)
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "unknown listener kind",
                ));
            }
        })
    }

    /// Accepts one connection: the socket (`TCP_NODELAY` on TCP), who is at the other end
    /// and a label for logs.
    async fn accept(&self, endpoint: &Endpoint) -> std::io::Result<Accepted> {
        match self {
            Self::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let credentials = driver::peer_credentials(&stream);
                let label = match credentials {
                    Some(c) => format!("{endpoint} {c}"),
                    None => endpoint.to_string(),
                };
                Ok((
                    StreamSocket::Unix(stream),
                    OwnedPeer::Unix(credentials),
                    label,
                ))
            }
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("cannot set TCP_NODELAY: {e}");
                }
                let label = format!("tcp peer {peer}");
                Ok((StreamSocket::Tcp(stream), OwnedPeer::Tcp(peer), label))
            }
            Self::Tls { listener, config } => {
                let (stream, peer) = listener.accept().await?;
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("cannot set TCP_NODELAY: {e}");
                }
                // The handshake runs in the connection task's reads and writes.
                let session = wirecall::tls::Session::server(config)?;
                Ok((
                    StreamSocket::tls(stream, session),
                    OwnedPeer::Tls(peer, None),
                    format!("tls peer {peer}"),
                ))
            }
        }
    }
}

/// One stream listener: accepts connections (each served by a task of its own) until the
/// shutdown, then waits for its connections to end.
async fn accept(
    listener: Listening,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut conns = JoinSet::new();
    let mut next = 0u64;
    let mut listener = Some(listener);
    loop {
        let accepting = listener.as_ref();
        tokio::select! {
            accepted = accept_one(accepting, &endpoint) => match accepted {
                Ok((socket, peer, label)) => {
                    next = next.wrapping_add(1);
                    let label = format!("conn {next} ({label})");
                    admit(socket, peer, label, &shared, &phase, &mut conns);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // E.g. out of file descriptors: try again after a moment.
                    log::warn!("cannot accept on {endpoint}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            changed = phase.changed() => {
                let current = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Now };
                if current != Phase::Running && listener.is_some() {
                    // Stop accepting: the listener and its socket file go.
                    listener = None;
                    log::debug!("stopped listening on {endpoint}");
                }
                if current == Phase::Now || changed.is_err() {
                    // Connections see the phase too and abort; wait for them below.
                    break;
                }
            }
            joined = conns.join_next(), if !conns.is_empty() => {
                if let Some(Err(e)) = joined {
                    if e.is_panic() {
                        log::error!("a connection task panicked: {e}");
                    }
                }
            }
        }
        if listener.is_none() && conns.is_empty() {
            return;
        }
    }
    while conns.join_next().await.is_some() {}
}

/// Accepts from the listener, or waits for ever once it is gone.
/// An accepted connection: its socket, who is at the other end, its label for logs.
type Accepted = (StreamSocket, OwnedPeer, String);

async fn accept_one(
    listener: Option<&Listening>,
    endpoint: &Endpoint,
) -> std::io::Result<Accepted> {
    match listener {
        Some(listener) => listener.accept(endpoint).await,
        None => std::future::pending().await,
    }
}

/// One place of `max_connections`, given back when dropped: however the connection's task
/// ends (returned, panicked, aborted).
struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes an accepted connection in, or refuses it over the connection limit.
fn admit(
    socket: StreamSocket,
    peer: OwnedPeer,
    label: String,
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
    conns: &mut JoinSet<()>,
) {
    if let OwnedPeer::Unix(credentials) = peer {
        if !shared.access.allows(credentials) {
            shared.stats.recorder().not_allowed();
            log::warn!("{label}: refused, not on the allowlist");
            driver::refuse_not_allowed(&socket, &shared.config.connection);
            return;
        }
    }
    let max = shared.config.max_connections;
    let open = shared.open.fetch_add(1, Ordering::AcqRel);
    if open >= max {
        shared.open.fetch_sub(1, Ordering::AcqRel);
        shared.stats.recorder().refused();
        log::warn!("{label}: refused, {max} connections are open (max_connections)");
        if !matches!(socket, StreamSocket::Tls(_)) {
            driver::refuse(&socket, &shared.config.connection);
            return;
        }
        // TLS: the refusal goes through a handshake, in a task of its own.
        if shared.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_TLS_REFUSING {
            shared.refusing.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let shared = Arc::clone(shared);
        let phase = phase.clone();
        conns.spawn(async move {
            conn::serve(socket, peer, label, Arc::clone(&shared), phase, true).await;
            shared.refusing.fetch_sub(1, Ordering::AcqRel);
        });
        return;
    }
    shared.stats.recorder().accepted();
    let open = OpenConnection(Arc::clone(shared));
    let phase = phase.clone();
    conns.spawn(async move {
        let shared = Arc::clone(&open.0);
        conn::serve(socket, peer, label, shared, phase, false).await;
        drop(open);
    });
}
