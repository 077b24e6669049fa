//! The std server: functions registered by name, served over any number of Unix stream,
//! TCP, TLS, Unix datagram and UDP endpoints from one mio event loop, or several
//! ([`ServerBuilder::threads`]; see [`ServerConfig::threads`] for how they share the
//! endpoints).
//!
//! ```no_run
//! use wirecall::{CallFailure, Endpoint, ServerBuilder, ServerConfig};
//!
//! let server = ServerBuilder::new(ServerConfig::default())
//!     .function("reverse", |body| Ok(body.iter().rev().copied().collect()))
//!     .function("fail", |_| Err(CallFailure::error(1000, "always fails")))
//!     .deferred("later", |body, responder| {
//!         let body = body.to_vec();
//!         std::thread::spawn(move || responder.respond(Ok(body)));
//!     })
//!     .listen("unix:/tmp/example.sock".parse::<Endpoint>()?)
//!     .listen("tcp:127.0.0.1:7000".parse::<Endpoint>()?)
//!     .listen("udp:127.0.0.1:7000".parse::<Endpoint>()?)
//!     .workers(4)
//!     .build()?;
//! let stop = server.shutdown_handle(); // call stop.shutdown() from anywhere to end `run`
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With `workers(0)` (the default) synchronous functions run on the event-loop thread, so
//! they should be quick; with `workers(n)` they run on a pool of `n` threads and answers
//! go out in completion order. Deferred functions always run on the event loop and must
//! not block: they answer through their [`Responder`], now, later from another thread, or
//! after a delay with [`Responder::respond_after`].
//!
//! Datagram endpoints (`udp:`, `unix-dgram:`) serve the same functions. Each keeps a call
//! cache (`ServerConfig::datagram_cache` entries), so a request the client retransmits
//! runs its function at most once and gets the same answer again; the guarantee and its
//! conditions are in `docs/PROTOCOL.md`, section 11.4.

mod answer_buffers;
mod conn;
mod datagram;
mod event_loop;
mod fd_limit;
pub(crate) mod listener;
mod loops;
mod proxy_header;
// The one place the adapter calls libc itself (`recvmmsg`, which no safe wrapper offers
// correctly); each unsafe block there carries its proof.
#[allow(unsafe_code)]
mod recv_batch;

pub use self::fd_limit::raise_open_file_limit;
mod throttle;
mod workers;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, channel};

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use wirecall_core::ServerConnection;
use wirecall_core::server::RequestSlot;

use self::conn::Shared;
use self::datagram::DatagramListener;
use self::event_loop::{EventLoop, FIRST_LISTENER, NOW, SIGNALS, WAKER};
use self::listener::{Listener, Listening, ProxyHeader, Share};
use self::loops::Loops;
use crate::access::UnixAccess;
use crate::clock::Clock;
use crate::config::{ServerConfig, check_limits, check_server};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::function::{
    Answer, CallContext, CallFailure, Completion, CompletionSink, Function, LoopCompletions, Named,
    Register, Registry, Responder, deferred_without_context, without_context,
};
use crate::id_hasher::IdMap;
use crate::stats::StatsHandle;
use crate::tls::TlsServerConfig;
use crate::typed::{self, EndpointSpec, Outcome, TypedReply, TypedResponder};

/// Builds a [`Server`]: its functions, endpoints and limits. See the [module docs](self).
pub struct ServerBuilder {
    config: ServerConfig,
    functions: Vec<Named<Function>>,
    endpoints: Vec<Endpoint>,
    /// The TLS settings of `tls:` endpoints, by index into `endpoints`.
    tls: Vec<(usize, TlsServerConfig)>,
    /// The endpoints (indices into `endpoints`) whose connections begin with a PROXY
    /// protocol header.
    proxied: Vec<usize>,
    stats: StatsHandle,
    signals: bool,
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
            .field("signals", &self.signals)
            .finish()
    }
}

impl ServerBuilder {
    /// A server with these limits, no functions and no endpoints yet.
    #[must_use]
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            functions: Vec::new(),
            endpoints: Vec::new(),
            tls: Vec::new(),
            proxied: Vec::new(),
            stats: StatsHandle::default(),
            signals: false,
            access: UnixAccess::everyone(),
        }
    }

    /// Registers a synchronous function under `name` (1 to 255 bytes, no whitespace). It
    /// gets the request body and returns the answer. A panic in it answers the call with
    /// an error ([`ERROR_FUNCTION_PANICKED`](crate::function::ERROR_FUNCTION_PANICKED)).
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

    /// Registers a synchronous function under `name` that writes its answer into a
    /// buffer the server lends, so that with 0 workers a call allocates nothing (see
    /// [`Register::function_into`]). Otherwise as
    /// [`function_with_context`](Self::function_with_context).
    #[must_use]
    pub fn function_into<F>(mut self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure>
            + Send
            + Sync
            + 'static,
    {
        let function = Function::into_buffer(Arc::new(function));
        self.functions.push(Named::function(name, function));
        self
    }

    /// Registers a deferred function under `name`: it runs on the event loop, must not
    /// block, and answers through the [`Responder`] (from any thread, at any later time).
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

    /// Serves typed endpoint `E` with `handler`, which gets the decoded request and returns
    /// the endpoint's response or error ([`Register::endpoint`]; see
    /// [`typed`]).
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
    /// client CA and allowed identities. The files are read by [`build`](Self::build).
    /// The handshake runs on the event loop like everything else, bounded by the core's
    /// handshake timeout from the moment the connection is accepted.
    #[must_use]
    pub fn listen_tls(mut self, endpoint: Endpoint, tls: TlsServerConfig) -> Self {
        // An endpoint [`accept_proxy`](Self::accept_proxy) added first gets its TLS here.
        let proxied = self.proxied.iter().copied().find(|i| {
            self.endpoints.get(*i) == Some(&endpoint) && !self.tls.iter().any(|(t, _)| t == i)
        });
        match proxied {
            Some(index) => self.tls.push((index, tls)),
            None => {
                self.tls.push((self.endpoints.len(), tls));
                self.endpoints.push(endpoint);
            }
        }
        self
    }

    /// Takes connections on `endpoint` from a load balancer that starts each with a PROXY
    /// protocol header (HAProxy's `send-proxy` or `send-proxy-v2`, nginx's
    /// `proxy_protocol on`): the header is read first, and the client it names is the
    /// connection's peer from then on (in functions' [`CallContext`], in log lines). A
    /// connection without a valid header within the handshake timeout is closed without a
    /// word and counted (`connections.proxy_refused`); one with a header is counted in
    /// `connections.proxied`. Only for stream endpoints; `endpoint` is listened on if it is
    /// not already (a `tls:` endpoint: add it with [`listen_tls`](Self::listen_tls)).
    /// Endpoints without this never read a header: `PROXY ...` from a client there is not
    /// wirecall and closes its connection, so no client can claim another's address. The
    /// endpoint is matched by equality: to listen on `tcp:host:0` both plainly and behind
    /// a balancer, give two endpoints (two ports).
    #[must_use]
    pub fn accept_proxy(mut self, endpoint: Endpoint) -> Self {
        let index = match self.endpoints.iter().position(|e| *e == endpoint) {
            Some(i) => i,
            None => {
                self.endpoints.push(endpoint);
                self.endpoints.len() - 1
            }
        };
        self.proxied.push(index);
        self
    }

    /// Serves on `n` event loops, one thread each ([`ServerConfig::threads`]; 1 to
    /// [`MAX_THREADS`](crate::config::MAX_THREADS)).
    #[must_use]
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = n;
        self
    }

    /// Runs synchronous functions on `n` worker threads (0: on the event loop).
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (a second one stops at once).
    /// This installs process-wide signal handlers, so it is for programs that own the
    /// process, like the `wirecall` binary.
    #[must_use]
    pub fn stop_on_signals(mut self) -> Self {
        self.signals = true;
        self
    }

    /// Takes calls from Unix peers only when `access` allows their credentials (taken by
    /// the kernel, see [`crate::access`]); others are refused before anything they send
    /// runs, and counted (`connections.not_allowed`, `datagrams.dropped.not_allowed`).
    /// Default: every peer.
    #[must_use]
    pub fn unix_access(mut self, access: UnixAccess) -> Self {
        self.access = access;
        self
    }

    /// The server's counters, readable before it is built (e.g. by a function that reports
    /// them) and while it runs.
    #[must_use]
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Checks the configuration, binds every endpoint and starts the workers.
    ///
    /// # Errors
    ///
    /// A limit the core or the adapter refuses (for datagram endpoints: the cache size and
    /// the datagram configuration, [`Error::DatagramConfig`]), an invalid or duplicate
    /// function name, an endpoint that cannot be bound ([`Error::AddressInUse`] for a Unix
    /// socket a live server holds), or an OS failure setting up the loop.
    pub fn build(self) -> Result<Server, Error> {
        let mut config = self.config;
        check_server(&config)?;
        // Never more connections than there are descriptors for (said at start).
        // Each loop holds a poller, a waker, a spare and a socket (or descriptor) per endpoint.
        let per_loop = self.endpoints.len().saturating_add(3);
        config.max_connections = fd_limit::connection_room(
            config.max_connections,
            per_loop.saturating_mul(config.threads.max(1)),
        );
        check_limits(&config.connection)?;
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
        self.stats.0.set_methods(functions.names());

        let functions = Arc::new(functions);
        let threads = config.threads;

        // One poll, waker and completion channel per loop.
        let mut parts = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new().map_err(Error::io("creating the event loop"))?;
            let waker = Arc::new(
                Waker::new(poll.registry(), WAKER).map_err(Error::io("creating the waker"))?,
            );
            let (tx, completions) = channel();
            parts.push(LoopParts {
                poll,
                sink: CompletionSink { tx, waker },
                completions,
                listeners: Vec::with_capacity(self.endpoints.len()),
                datagrams: IdMap::default(),
            });
        }
        let mut tls = HashMap::new();
        for (i, config) in &self.tls {
            tls.insert(*i, config.build()?);
        }
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let token = Token(FIRST_LISTENER + i);
            let proxy_header = if self.proxied.contains(&i) {
                ProxyHeader::Expected
            } else {
                ProxyHeader::None
            };
            let actual = if endpoint.is_datagram() {
                if proxy_header == ProxyHeader::Expected {
                    return Err(Error::ProxyOnDatagram(endpoint.clone()));
                }
                bind_datagram(&mut parts, endpoint, token, &config, &self.access)?
            } else {
                let tls = tls.get(&i);
                bind_stream(&mut parts, endpoint, token, &config, tls, proxy_header)?
            };
            log::info!("listening on {actual}");
            endpoints.push(actual);
        }
        let mut signals = if self.signals {
            let mut signals =
                Signals::new([SIGINT, SIGTERM]).map_err(Error::io("installing signal handlers"))?;
            if let Some(first) = parts.first() {
                first
                    .poll
                    .registry()
                    .register(&mut signals, SIGNALS, Interest::READABLE)
                    .map_err(Error::io("registering signals"))?;
            }
            Some(signals)
        } else {
            None
        };
        let pool = match config.workers {
            0 => None,
            n => Some(Arc::new(
                workers::Pool::start(n, config.worker_queue, Arc::clone(&self.stats.0))
                    .map_err(Error::io("starting worker threads"))?,
            )),
        };
        let shutdown = Arc::new(AtomicU8::new(event_loop::RUNNING));
        let wakers: Vec<Arc<Waker>> = parts.iter().map(|p| Arc::clone(&p.sink.waker)).collect();
        let loops = Arc::new(Loops::new(wakers));
        let mut event_loops = Vec::with_capacity(threads);
        for (index, part) in parts.into_iter().enumerate() {
            let first_connection = FIRST_LISTENER + part.listeners.len();
            event_loops.push(EventLoop {
                poll: part.poll,
                events: Events::with_capacity(1024),
                listeners: part.listeners,
                datagrams: part.datagrams,
                conns: IdMap::default(),
                next_token: first_connection,
                timers: BTreeSet::new(),
                ready: VecDeque::new(),
                round: VecDeque::new(),
                completions: part.completions,
                shared: Shared {
                    functions: Arc::clone(&functions),
                    stats: Arc::clone(&self.stats.0),
                    pool: pool.clone(),
                    sink: part.sink,
                    clock: Clock::default(),
                    config,
                    draining: false,
                    warnings: throttle::Warnings::default(),
                    access: self.access.clone(),
                    buffers: answer_buffers::AnswerBuffers::default(),
                    last_function: std::cell::Cell::new(0),
                },
                spare: fd_limit::Spare::new(),
                accept_retry: None,
                accept_backoff: wirecall_core::Duration::from_millis(10),
                refusing: 0,
                shutdown: Arc::clone(&shutdown),
                signals: if index == 0 { signals.take() } else { None },
                draining: None,
                delay_until: None,
                loops: Arc::clone(&loops),
                index,
                told_drained: false,
                handed: Vec::new(),
            });
        }
        Ok(Server {
            event_loops,
            endpoints,
            shutdown: ShutdownHandle {
                state: shutdown,
                loops,
                drain_delay: config.drain_delay,
            },
            stats: self.stats,
        })
    }
}

/// One event loop's parts while the server is being built.
struct LoopParts {
    poll: Poll,
    sink: CompletionSink,
    completions: Receiver<Completion>,
    listeners: Vec<Option<Listening>>,
    datagrams: IdMap<Token, DatagramListener>,
}

/// How a loop of `threads` binds a TCP, TLS or UDP endpoint: the first alone or as the
/// first of a group, the others joining the first socket's address `first`.
fn share(threads: usize, first: Option<SocketAddr>) -> Share {
    match first {
        Some(addr) => Share::Join(addr),
        None if threads > 1 => Share::First,
        None => Share::Alone,
    }
}

/// The address the first socket of a TCP, TLS or UDP endpoint is bound at (`addr`, its
/// `local_addr`), for the others to join.
fn bound_addr(addr: Option<SocketAddr>, actual: &Endpoint) -> Result<SocketAddr, Error> {
    addr.ok_or_else(|| Error::Listen {
        endpoint: actual.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no bound address"),
    })
}

/// Registers endpoint `endpoint`'s socket `source` with a loop's `poll` for reading.
fn register(
    poll: &Poll,
    source: &mut impl mio::event::Source,
    token: Token,
    endpoint: &Endpoint,
) -> Result<(), Error> {
    poll.registry()
        .register(source, token, Interest::READABLE)
        .map_err(|source| Error::Listen {
            endpoint: endpoint.clone(),
            source,
        })
}

/// Binds datagram endpoint `endpoint` for every loop that serves it (a `udp:` one: each
/// loop, one socket each in a `SO_REUSEPORT` group; a `unix-dgram:` one: the first loop,
/// so one call cache sees every call) and registers it; returns it as bound.
fn bind_datagram(
    parts: &mut [LoopParts],
    endpoint: &Endpoint,
    token: Token,
    config: &ServerConfig,
    access: &UnixAccess,
) -> Result<Endpoint, Error> {
    let threads = parts.len();
    let udp = matches!(endpoint, Endpoint::Udp(..));
    let mut first: Option<(Endpoint, SocketAddr)> = None;
    for part in parts.iter_mut() {
        part.listeners.push(None);
        if first.is_some() && !udp {
            continue;
        }
        let port = Arc::new(LoopCompletions {
            token,
            sink: part.sink.clone(),
        });
        let share = share(threads, first.as_ref().map(|(_, addr)| *addr));
        let check = !access.is_everyone();
        let (mut datagram, actual) = DatagramListener::bind(endpoint, config, port, check, share)?;
        register(&part.poll, &mut datagram, token, endpoint)?;
        part.datagrams.insert(token, datagram);
        if first.is_none() {
            let addr = match part.datagrams.get(&token) {
                Some(datagram) if udp && threads > 1 => bound_addr(datagram.local_addr(), &actual)?,
                _ => SocketAddr::from(([0, 0, 0, 0], 0)),
            };
            first = Some((actual, addr));
        }
    }
    if udp && threads > 1 {
        // Every socket of the group is bound: from now on a flow stays on one of them.
        let dropped: usize = parts
            .iter_mut()
            .filter_map(|part| part.datagrams.get_mut(&token))
            .map(DatagramListener::discard_queued)
            .sum();
        if dropped > 0 {
            log::debug!("{endpoint}: dropped {dropped} datagram(s) that came while binding");
        }
    }
    first
        .map(|(actual, _)| actual)
        .ok_or_else(|| Error::io("binding")(std::io::Error::other("no event loop")))
}

/// Binds stream endpoint `endpoint` for every loop (TCP and TLS: a socket each in a
/// `SO_REUSEPORT` group; Unix: one listening socket, a descriptor of it each) and registers
/// it; returns it as bound.
fn bind_stream(
    parts: &mut [LoopParts],
    endpoint: &Endpoint,
    token: Token,
    config: &ServerConfig,
    tls: Option<&Arc<rustls::ServerConfig>>,
    proxy_header: ProxyHeader,
) -> Result<Endpoint, Error> {
    let threads = parts.len();
    let mode = config.unix_mode;
    let (mut first, actual) = Listener::bind_shared(endpoint, mode, tls, share(threads, None))?;
    let mut listeners = Vec::with_capacity(threads);
    for _ in 1..threads {
        let other = match first.share().map_err(Error::io("sharing a listener"))? {
            Some(unix) => unix,
            None => {
                let at = share(threads, Some(bound_addr(first.local_addr(), &actual)?));
                Listener::bind_shared(&actual, mode, tls, at)?.0
            }
        };
        listeners.push(other);
    }
    listeners.insert(0, first);
    for (part, mut listener) in parts.iter_mut().zip(listeners) {
        register(&part.poll, &mut listener, token, endpoint)?;
        part.listeners.push(Some(Listening {
            listener,
            endpoint: actual.clone(),
            proxy_header,
        }));
    }
    Ok(actual)
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

    fn function_into<F>(self, name: impl Into<String>, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure>
            + Send
            + Sync
            + 'static,
    {
        Self::function_into(self, name, function)
    }

    fn keyed_function<F>(mut self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static,
    {
        let function = Function::Sync(Arc::new(function));
        self.functions.push(Named::endpoint(spec, function));
        self
    }

    fn keyed_function_into<F>(mut self, spec: EndpointSpec, function: F) -> Self
    where
        F: Fn(&CallContext<'_>, &[u8], &mut Vec<u8>) -> Result<(), CallFailure>
            + Send
            + Sync
            + 'static,
    {
        let function = Function::into_buffer(Arc::new(function));
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

/// A built server, bound and ready: [`run`](Self::run) serves until shut down.
pub struct Server {
    /// One per [`ServerConfig::threads`]; the first runs on the thread that calls `run`.
    event_loops: Vec<EventLoop>,
    endpoints: Vec<Endpoint>,
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
    /// The endpoints it listens on, as bound: a `tcp:` or `udp:` endpoint shows the
    /// resolved address and the real port (so `tcp:localhost:0` may show as
    /// `tcp:127.0.0.1:41234`).
    #[must_use]
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// A handle that ends [`run`](Self::run) from any thread.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The server's counters.
    #[must_use]
    pub fn stats(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Serves until a shutdown is requested and done: stop accepting and remove socket
    /// files, ask every connection to close gracefully (each answers what it has received,
    /// then a go-away tells its client which calls were taken), reject new datagram calls
    /// (`SHUTTING_DOWN`, not executed) while answering the ones taken, keep serving until
    /// every connection has closed and every datagram call is answered, or
    /// `shutdown_timeout` has passed, then return.
    ///
    /// # Errors
    ///
    /// When an event loop itself fails (the OS refuses to poll) or its thread cannot be
    /// started ([`Error::Io`]), or a loop panicked ([`Error::EventLoopPanicked`]): the other
    /// loops are then stopped at once. [`Error::Abandoned`] when the shutdown turned hard
    /// (a second signal, [`ShutdownHandle::shutdown_now`], or `shutdown_timeout`) with calls
    /// still unanswered, summed over the loops. Connections failing are logged and
    /// counted, never an error here. With several loops ([`ServerConfig::threads`]), the
    /// first runs on the calling thread and the others on threads of their own
    /// (`wirecall-loop-1`, ...), all joined before `run` returns.
    pub fn run(self) -> Result<(), Error> {
        let mut loops = self.event_loops.into_iter();
        let first = loops.next();
        let mut others = Vec::new();
        for (k, event_loop) in loops.enumerate() {
            let guard = LoopGuard::new(&self.shutdown, k + 1);
            let spawned = std::thread::Builder::new()
                .name(format!("wirecall-loop-{}", k + 1))
                .spawn(move || guard.run(event_loop));
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    // The loops already running stop at once; the error says why.
                    self.shutdown.shutdown_now();
                    for handle in others {
                        let _ = handle.join();
                    }
                    return Err(Error::io("starting an event loop thread")(e));
                }
            }
        }
        let mut results = Vec::with_capacity(others.len() + 1);
        if let Some(event_loop) = first {
            let guard = LoopGuard::new(&self.shutdown, 0);
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guard.run(event_loop)));
            results.push(result.unwrap_or_else(|panic| Err(panicked(&*panic))));
        }
        for handle in others {
            results.push(handle.join().unwrap_or_else(|panic| Err(panicked(&*panic))));
        }
        combine(results)
    }
}

/// Runs one event loop; if it fails, or panics, the others are stopped at once (and a
/// panicked loop counts as drained and takes no more connections, so none waits for it).
struct LoopGuard {
    stop: ShutdownHandle,
    index: usize,
}

impl LoopGuard {
    fn new(stop: &ShutdownHandle, index: usize) -> Self {
        Self {
            stop: stop.clone(),
            index,
        }
    }

    fn run(self, event_loop: EventLoop) -> Result<(), Error> {
        let result = event_loop.run();
        if result.is_err() {
            self.stop.shutdown_now();
        }
        result
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            drop(self.stop.loops.close_queue(self.index));
            self.stop.loops.drained();
            self.stop.shutdown_now();
        }
    }
}

/// The error of a loop that panicked with `panic`.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    Error::EventLoopPanicked(message)
}

/// What the loops' results add up to: the first failure that is not an abandonment, else
/// every abandonment summed, else success.
fn combine(results: Vec<Result<(), Error>>) -> Result<(), Error> {
    let (mut calls, mut connections, mut abandoned) = (0usize, 0usize, false);
    for result in results {
        match result {
            Ok(()) => {}
            Err(Error::Abandoned {
                calls: c,
                connections: n,
            }) => {
                abandoned = true;
                calls = calls.saturating_add(c);
                connections = connections.saturating_add(n);
            }
            Err(e) => return Err(e),
        }
    }
    if abandoned {
        return Err(Error::Abandoned { calls, connections });
    }
    Ok(())
}

/// Ends a running server from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    state: Arc<AtomicU8>,
    loops: Arc<Loops>,
    drain_delay: std::time::Duration,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown (see [`Server::run`]), after the drain delay
    /// ([`ServerConfig::drain_delay`]) if there is one. Calling it again does nothing more.
    pub fn shutdown(&self) {
        self.loops.request_shutdown(&self.state, self.drain_delay);
    }

    /// Stops at once: connections are closed without waiting for answers.
    pub fn shutdown_now(&self) {
        self.state.store(NOW, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        self.loops.wake_all();
    }
}
