//! The `wirecall` binary: `serve`, `call` and `demo` over the `wirecall` library. Thin on
//! purpose: parse the command line, set up logging, call the library, map errors to one
//! line and an exit code.

mod bench;
mod call;
mod json;
mod kv;

use std::fmt::{Display, Write as _};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wirecall::access::UnixAccess;
use wirecall::config::{
    MAX_BUDGET_LIMIT, MAX_CONNECTIONS_LIMIT, MAX_DATAGRAM_CACHE, MAX_DATAGRAM_LIMIT,
    MAX_FRAME_LIMIT, MAX_IN_FLIGHT_LIMIT, MAX_THREADS, MAX_WORKER_QUEUE, MAX_WORKERS,
};
use wirecall::core::datagram::{EPOCH_ENTRIES, MIN_DATAGRAM};
use wirecall::core::wire::{BASELINE_MAX_FRAME_LEN, BASELINE_MAX_IN_FLIGHT};
use wirecall::{Endpoint, Error, ServerBuilder, ServerConfig, TlsServerConfig, builtins};

/// Any other error: bad arguments the parser let through, stdin, a socket that failed.
const EXIT_FAILURE: u8 = 1;
/// A usage error: a flag out of its range, a configuration the server cannot run with.
const EXIT_USAGE: u8 = 2;
/// The function ran and returned an error.
const EXIT_REMOTE: u8 = 3;
/// The server refused the call before running it.
const EXIT_REJECTED: u8 = 4;
/// The server was busy or shutting down.
const EXIT_BUSY: u8 = 5;
/// No answer within the timeout.
const EXIT_TIMEOUT: u8 = 6;
/// The connection was lost during the call.
const EXIT_LOST: u8 = 7;
/// Could not connect.
const EXIT_CONNECT: u8 = 8;
/// The server does not allow this client (its credentials or identity).
const EXIT_NOT_ALLOWED: u8 = 9;

const MAIN_HELP: &str = "\
Endpoints:
  unix:/path        Unix-domain stream socket
  tcp:host:port     TCP; IPv6 in brackets: tcp:[::1]:7000
  tls:host:port     TLS over TCP (serve --cert/--key; call --ca), same host syntax
  unix-dgram:/path  Unix-domain datagram socket
  udp:host:port     UDP; IPv6 in brackets: udp:[::1]:7000

Logging goes to stderr; set RUST_LOG=info (or debug, trace) for more.

Examples:
  wirecall demo
  wirecall serve --listen unix:/tmp/wirecall.sock --listen tcp:127.0.0.1:7000
  wirecall call unix:/tmp/wirecall.sock echo hello
  echo hi | wirecall call tcp:127.0.0.1:7000 upper -
  wirecall serve --listen tls:127.0.0.1:7443 --cert cert.pem --key key.pem
  wirecall call tls:localhost:7443 --ca ca.pem echo hello";

const SERVE_HELP: &str = "\
Once ready, prints one line per endpoint to stdout: \"listening on <endpoint>\", with
the real address and port (so tcp:127.0.0.1:0 shows the port the system chose).

Stops gracefully on SIGINT or SIGTERM: no new connections, socket files removed, every
call already received is answered, then exit 0. A second signal stops at once (as
--shutdown-timeout passing does): calls still unanswered then are counted in one line,
exit 1.

A stale Unix socket file (no server behind it) is replaced; a live server's is not.

Unix peers: --unix-mode sets who may open the socket file; --allow-uid and --allow-gid
check the credentials the kernel gives for each connection (and each datagram) and
refuse others before anything they send runs (a stream gets the close NOT_ALLOWED, the
client exits 9; a datagram is dropped), counted in connections.not_allowed and
datagrams.dropped.not_allowed. The builtin whoami answers what the server knows of its
caller (uid, gid and pid on unix:).

tls: endpoints need --cert and --key (PEM: the certificate chain, leaf first, and its
private key); TLS 1.3 only unless --tls12. With --client-ca every client must present a
certificate that verifies against that CA (mutual TLS); the verified identity (the
certificate's DNS and URI names, or its subject's CN without any) is logged at info
level. With --allow-client NAME (repeatable) a verified client whose identity holds none
of the names is refused in the handshake (TLS alert access_denied), before any call.
Failed handshakes and refused identities are counted (stats: tls.handshake_failed,
tls.refused_identity) and warned about at most once a second.

On datagram endpoints (unix-dgram:, udp:) each call runs at most once however often
its client retransmits it: the server remembers calls in a cache of --datagram-cache
entries and answers a retransmission from it. During a shutdown new datagram calls are
rejected (not executed) while the ones taken are answered.

Behind a load balancer: --accept-proxy ENDPOINT listens on a stream endpoint whose
connections begin with a PROXY protocol header (HAProxy's send-proxy or send-proxy-v2,
nginx's proxy_protocol on). The client it names is the connection's peer (in whoami, in
log lines); a connection without a valid header within 10 s is closed without a word.
Counted in connections.proxied and connections.proxy_refused. Other endpoints never
read a header, so a client cannot claim another address. --max-connection-age SECS
tells connections that old to go away gracefully (calls sent before are answered), so
long-lived clients reconnect and spread over servers added since (connections.aged_out).
With --drain-delay SECS, SIGTERM first makes the builtin health fail (it answers up
otherwise) for that long while the server serves as before, so a balancer's health
check takes it out of rotation before any connection is told to go away.
--stats-on-exit prints the final counters when the server stops. --metrics ENDPOINT
serves them to Prometheus (http://ENDPOINT/metrics), with per-method call durations.
docs/DEPLOYING.md has tested HAProxy and nginx configurations.

Built-in methods: echo, upper, time (server clock, RFC 3339 UTC), sleep (body:
milliseconds), spin (body: microseconds of busy CPU), stats (counters, one \"name value\"
per line), list (method names), whoami, health (up, or an error while shutting down).
Typed endpoints (see `wirecall list`): the example key-value store kv/get, kv/put,
kv/delete, kv/scan (in memory, at most 1024 entries), typed/echo, and
wirecall/endpoints.

Examples:
  wirecall serve --listen unix:/run/wirecall.sock --unix-mode 0660
  wirecall serve --listen tcp:0.0.0.0:7000 --listen 'tcp:[::]:7001' --workers 4
  wirecall serve --listen tcp:0.0.0.0:7000 --threads 1   # one event loop, one CPU
  wirecall serve --listen udp:0.0.0.0:7000 --listen unix-dgram:/run/wirecall-dgram.sock
  wirecall serve --listen tls:0.0.0.0:7443 --cert cert.pem --key key.pem
  wirecall serve --listen tls:0.0.0.0:7443 --cert cert.pem --key key.pem \\
      --client-ca clients-ca.pem --allow-client alice.example --allow-client bob.example
  wirecall serve --accept-proxy tcp:10.0.0.5:7000   # behind HAProxy with send-proxy-v2
  RUST_LOG=info wirecall serve --listen tcp:127.0.0.1:0";

const CALL_HELP: &str = "\
The body is ARG as text, stdin with `-`, or a file's bytes with `@FILE` (a body that
starts with @ goes through a file or stdin). The answer's body goes to stdout as it is
(no newline added). On failure one line goes to stderr, ending with whether the server
may have run the function: [not executed], [maybe executed] or [executed].

-v says each step on stderr (lines starting with `* `): the endpoint resolved, the
server's limits from its hello, the request id, the round trip, the outcome.
--json-output prints the outcome as one JSON object on stdout instead, for scripts:
  {\"outcome\": \"ok\", \"answer\": \"hi\", \"execution\": \"executed\", \"exit_code\": 0,
   \"id\": 1, \"rtt_ms\": 0.21}
with \"answer_base64\" for an answer that is not UTF-8, and on failure \"outcome\":
\"failed\" with \"error\" (the one line), \"execution\" and \"exit_code\"; the exit code is
the same.

Exit codes:
  0  the call succeeded
  1  another error (reading stdin, a socket that failed, ...)
  2  usage error
  3  the function ran and returned an error                  [executed]
  4  the server refused the call (unknown method, bad body)  [not executed]
  5  the server was busy, is shutting down, or at its
     connection limit (it refused the connection)            [not executed]
  6  no answer within --timeout                              [maybe executed]
  7  the connection was lost during the call                 [as the message says]
  8  could not connect, nothing listens there, the peer
     is not a wirecall server (no wirecall hello came), or
     TLS failed (certificate not trusted, client refused)    [not executed]
  9  the server does not allow this client (its Unix
     credentials are not on the server's allowlist)          [not executed]

On tls: the server's certificate must verify against --ca (or the system's store) for
the endpoint's host name; the TLS handshake is done before anything is sent.

On unix:, tcp: and tls: the call waits for the server's hello before it sends anything (at
most --timeout, or 10 s with --timeout 0), so a peer that is not a wirecall server, or
says nothing, ran nothing.

Over unix-dgram: and udp: the request is retransmitted with backoff until the answer
comes or --timeout passes, and the server runs it at most once. A datagram call always
has a deadline: --timeout 0 means the default of 5000 ms there, and the server refuses
one over its limit (60 s by default). A unix-dgram: call answered busy on every copy
until then exits 5; over udp: it exits 6, since the network may still deliver a
duplicate of a copy. Where the kernel reports that nothing listens at the address
(ICMP port unreachable), the call ends at once with exit 8; a udp: server that is down
on a host that says nothing shows as a timeout.

Examples:
  wirecall call unix:/tmp/wirecall.sock echo hello
  wirecall call tcp:localhost:7000 sleep 200 --timeout 1000
  wirecall call 'tcp:[::1]:7000' stats
  wirecall call udp:127.0.0.1:7000 echo hello
  wirecall call tls:localhost:7443 --ca ca.pem echo hello
  wirecall call tls:localhost:7443 --ca ca.pem --cert alice.pem --key alice-key.pem echo hi
  wirecall call unix:/tmp/wirecall.sock upper - < notes.txt
  wirecall call unix:/tmp/wirecall.sock echo @notes.txt --json-output
  wirecall call -v tcp:localhost:7000 echo hello
  wirecall call tcp:localhost:7000 kv/put --json '{\"key\": \"a\", \"value\": \"1\"}'
  wirecall call tcp:localhost:7000 kv/get --json '\"a\"'

With --json, METHOD is a typed endpoint's path (see `wirecall list`): the JSON is
encoded from the request type the server publishes (exit 2 naming the field when it
does not fit), and the answer is printed as one line of JSON; an application error is
printed as JSON on stderr, exit 3. Byte strings read from a JSON string (its UTF-8) or
an array of numbers, and print as a string when they are UTF-8.";

const LIST_HELP: &str = "\
Asks the server for its typed endpoints (protocol version 2, the built-in endpoint
wirecall/endpoints) and prints each one's path and key with its request, response and
error types. Any of them can then be called with `wirecall call ENDPOINT PATH --json`.
Exit codes as for `call`.

Examples:
  wirecall list unix:/tmp/wirecall.sock
  wirecall list udp:127.0.0.1:7000
  wirecall list tls:localhost:7443 --ca ca.pem";

const DEMO_HELP: &str = "\
Starts the reference server inside this process on all four transports: a Unix stream
and a Unix datagram socket in a temporary directory, and tcp:127.0.0.1 and
udp:127.0.0.1 on free ports. Calls echo, upper, time and list over each, prints the
answers with their round-trip times, shuts the server down and removes the sockets.
Needs nothing installed.

Example:
  wirecall demo";

/// Request/response calls over Unix stream, Unix datagram, TCP and UDP sockets.
#[derive(Debug, Parser)]
#[command(name = "wirecall", version, after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference server on one or more endpoints
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Make one call and print the answer
    #[command(after_help = CALL_HELP)]
    Call(call::CallArgs),
    /// Run a server and a client in this process over each transport and show the calls
    #[command(after_help = DEMO_HELP)]
    Demo,
    /// Load a server with calls and report calls/s and latency percentiles
    #[command(after_help = bench::HELP)]
    Bench(bench::BenchArgs),
    /// List the typed endpoints a server serves, with their types
    #[command(after_help = LIST_HELP)]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Where the server listens
    #[arg(value_name = "ENDPOINT")]
    endpoint: Endpoint,
    /// Milliseconds to wait for the answer (0: no timeout)
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout: u64,
    #[command(flatten)]
    tls: call::TlsArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Endpoint to listen on; repeat for more
    #[arg(
        long = "listen",
        value_name = "ENDPOINT",
        required_unless_present = "accept_proxy"
    )]
    listen: Vec<Endpoint>,
    /// Stream endpoint (unix:, tcp:, tls:) to listen on for connections from a load
    /// balancer, each beginning with a PROXY protocol header (v1 or v2) that names the
    /// client; a connection without one is closed and counted. Repeat for more
    #[arg(long = "accept-proxy", value_name = "ENDPOINT")]
    accept_proxy: Vec<Endpoint>,
    /// Event loops, one thread each (1 to 256; default: the CPUs this process may run on)
    #[arg(long, value_name = "N", value_parser = usize_in(1, MAX_THREADS))]
    threads: Option<usize>,
    /// Threads running functions (0: on the event-loop thread; at most 1024)
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().workers,
          value_parser = usize_in(0, MAX_WORKERS))]
    workers: usize,
    /// Calls waiting for a worker; more are answered busy (1 to 1048576)
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().worker_queue,
          value_parser = usize_in(1, MAX_WORKER_QUEUE))]
    worker_queue: usize,
    /// Connections open at once; more are accepted and closed at once (1 to 1048576)
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_connections,
          value_parser = usize_in(1, MAX_CONNECTIONS_LIMIT))]
    max_connections: usize,
    /// Longest frame body accepted and sent (1024 to 16777216)
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().connection.max_frame_len,
          value_parser = clap::value_parser!(u32).range(i64::from(BASELINE_MAX_FRAME_LEN)..=i64::from(MAX_FRAME_LIMIT)))]
    max_frame: u32,
    /// Calls in flight per connection; more are answered busy (4 to 65536)
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().connection.max_in_flight,
          value_parser = clap::value_parser!(u32).range(i64::from(BASELINE_MAX_IN_FLIGHT)..=i64::from(MAX_IN_FLIGHT_LIMIT)))]
    max_in_flight: u32,
    /// Idle seconds before a ping (0: no keepalive)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    keepalive: u64,
    /// Seconds a frame may take to arrive once its first bytes have; a connection that
    /// dribbles a frame for longer is closed (1 to 3600)
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    frame_timeout: u64,
    /// Seconds without calls before a connection is closed gracefully (0: never)
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// At --max-connections, a new connection takes the place of one that has had no call
    /// for this many seconds (none in flight); 0: never, refuse instead (0 to 3600)
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    evict_idle: u64,
    /// Seconds after which a connection is told to go away gracefully (less up to a
    /// tenth at random), so clients behind a load balancer reconnect and spread over the
    /// servers; 0: never (0 to 31536000)
    #[arg(long, value_name = "SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    max_connection_age: u64,
    /// Seconds between SIGTERM (or SIGINT) and the graceful shutdown, spent serving as
    /// before while the builtin health fails, so load balancers stop sending new
    /// connections first (0 to 3600)
    #[arg(long, value_name = "SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_delay: u64,
    /// Seconds a graceful shutdown may take before connections are cut
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_timeout: u64,
    /// File mode of Unix socket files, in octal (e.g. 0660)
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    unix_mode: Option<u32>,
    /// Take Unix peers (stream connections and datagrams) only from this user id, as the
    /// kernel reports the peer; repeat for more. With --allow-uid or --allow-gid, a peer
    /// whose uid and gid are both unlisted is refused before anything it sends runs
    #[arg(long, value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Take Unix peers whose effective group id is this one; repeat for more
    #[arg(long, value_name = "GID")]
    allow_gid: Vec<u32>,
    /// Calls (and clients) each datagram endpoint remembers at once; new calls beyond
    /// are answered busy, not run (1 to 1048576)
    #[arg(long, value_name = "ENTRIES", default_value_t = ServerConfig::default().datagram_cache,
          value_parser = usize_in(1, MAX_DATAGRAM_CACHE))]
    datagram_cache: usize,
    /// Cache entries one peer address may hold on each datagram endpoint, each client
    /// epoch counting as 66; calls of an epoch past that share are answered busy, not run
    /// (66 to 1048576)
    #[arg(long, value_name = "ENTRIES", default_value_t = ServerConfig::default().datagram.max_peer_entries,
          value_parser = usize_in(EPOCH_ENTRIES, MAX_DATAGRAM_CACHE))]
    datagram_peer_entries: usize,
    /// Largest datagram taken or sent on udp: endpoints, header included (104 to 16777216)
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().datagram.max_datagram,
          value_parser = usize_in(MIN_DATAGRAM, MAX_DATAGRAM_LIMIT))]
    max_datagram: usize,
    /// Largest datagram taken or sent on unix-dgram: endpoints (104 to 16777216)
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::default().unix_max_datagram,
          value_parser = usize_in(MIN_DATAGRAM, MAX_DATAGRAM_LIMIT))]
    unix_max_datagram: usize,
    /// Longest deadline a datagram call may ask for, in seconds; longer ones are rejected
    /// (1 to 86400)
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BUDGET_LIMIT.as_secs()))]
    max_budget: u64,
    /// tls: the server's certificate chain, leaf first (PEM)
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// tls: the private key of --cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// tls: require client certificates that verify against the CA certificates in this
    /// PEM file (mutual TLS)
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// tls: let in only verified clients whose identity holds NAME (a DNS name or URI of
    /// the certificate, or its CN); repeat for more
    #[arg(long = "allow-client", value_name = "NAME", requires = "client_ca")]
    allow_client: Vec<String>,
    /// tls: accept TLS 1.2 as well as 1.3
    #[arg(long)]
    tls12: bool,
    /// When the server stops, print its final counters (the stats text) to stdout
    #[arg(long)]
    stats_on_exit: bool,
    /// Serve the counters and per-method call-duration histograms to Prometheus at
    /// http://ENDPOINT/metrics (a tcp: endpoint, e.g. tcp:127.0.0.1:9090; bind it to an
    /// internal address)
    #[arg(long, value_name = "ENDPOINT")]
    metrics: Option<Endpoint>,
}

impl ServeArgs {
    /// Every endpoint to listen on: the --listen ones, then the --accept-proxy ones not
    /// among them.
    fn endpoints(&self) -> Vec<Endpoint> {
        let mut all = self.listen.clone();
        for endpoint in &self.accept_proxy {
            if !all.contains(endpoint) {
                all.push(endpoint.clone());
            }
        }
        all
    }

    /// The TLS settings of the `tls:` endpoints, or a usage error: `tls:` without
    /// --cert/--key, or TLS flags without any `tls:` endpoint.
    fn tls(&self) -> Result<Option<TlsServerConfig>, String> {
        let any_tls = self
            .endpoints()
            .iter()
            .any(|e| matches!(e, Endpoint::Tls(..)));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) if any_tls => {
                let mut tls = TlsServerConfig::new(cert, key);
                if let Some(ca) = &self.client_ca {
                    tls = tls.client_ca(ca);
                }
                for name in &self.allow_client {
                    tls = tls.allow_client(name);
                }
                if self.tls12 {
                    tls = tls.allow_tls12();
                }
                Ok(Some(tls))
            }
            _ if any_tls => Err(
                "a tls: endpoint needs --cert FILE and --key FILE (its certificate chain and key)"
                    .to_owned(),
            ),
            _ if self.cert.is_some() || self.client_ca.is_some() || self.tls12 => Err(
                "--cert, --key, --client-ca, --allow-client and --tls12 need a tls: endpoint \
                 (--listen tls:host:port)"
                    .to_owned(),
            ),
            _ => Ok(None),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Call(args) => call::command(&args),
        Command::Demo => demo(),
        Command::Bench(args) => bench::command(&args),
        Command::List(args) => list(&args),
    }
}

/// Prints `wirecall: <message>` to stderr and gives the exit code.
fn fail(message: impl Display, code: u8) -> ExitCode {
    eprintln!("wirecall: {message}");
    ExitCode::from(code)
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = ServerConfig::default();
    config.connection.max_frame_len = args.max_frame;
    config.connection.max_in_flight = args.max_in_flight;
    config.connection.keepalive_interval =
        (args.keepalive > 0).then(|| wirecall::clock::to_core(Duration::from_secs(args.keepalive)));
    config.idle_timeout = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    config.evict_idle = (args.evict_idle > 0).then(|| Duration::from_secs(args.evict_idle));
    config.shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    config.drain_delay = Duration::from_secs(args.drain_delay);
    config.max_connection_age =
        (args.max_connection_age > 0).then(|| Duration::from_secs(args.max_connection_age));
    config.connection.frame_timeout =
        wirecall::clock::to_core(Duration::from_secs(args.frame_timeout));
    config.max_connections = args.max_connections;
    config.unix_mode = args.unix_mode;
    config.threads = args
        .threads
        .unwrap_or_else(|| wirecall::available_cpus().min(MAX_THREADS));
    config.workers = args.workers;
    config.worker_queue = args.worker_queue;
    config.datagram_cache = args.datagram_cache;
    config.datagram.max_peer_entries = args.datagram_peer_entries;
    config.datagram.max_datagram = args.max_datagram;
    config.unix_max_datagram = args.unix_max_datagram;
    config.datagram.max_budget = wirecall::clock::to_core(Duration::from_secs(args.max_budget));
    // Every connection --max-connections allows needs a descriptor: lift the soft limit
    // (often 1,024) to the hard one first.
    wirecall::server::raise_open_file_limit();
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(message) => return fail(message, EXIT_USAGE),
    };
    let access = args
        .allow_uid
        .iter()
        .fold(UnixAccess::everyone(), |a, uid| a.allow_uid(*uid));
    let access = args
        .allow_gid
        .iter()
        .fold(access, |a, gid| a.allow_gid(*gid));
    let mut builder = kv::register(builtins::register(ServerBuilder::new(config)))
        .unix_access(access)
        .stop_on_signals();
    for endpoint in args.endpoints() {
        builder = match (&endpoint, &tls) {
            (Endpoint::Tls(..), Some(tls)) => builder.listen_tls(endpoint, tls.clone()),
            _ => builder.listen(endpoint),
        };
    }
    for endpoint in args.accept_proxy {
        builder = builder.accept_proxy(endpoint);
    }
    let server = match builder.build() {
        Ok(server) => server,
        // The flags' ranges catch each flag alone; what is left is a configuration the
        // server cannot run with, which is a usage error too.
        Err(
            e @ (Error::Config(_)
            | Error::DatagramConfig(_)
            | Error::LimitTooSmall { .. }
            | Error::LimitTooLarge { .. }
            | Error::ProxyOnDatagram(_)
            | Error::Tls(_)),
        ) => return fail(e, EXIT_USAGE),
        Err(e) => return fail(e, EXIT_FAILURE),
    };
    {
        let mut out = std::io::stdout().lock();
        for endpoint in server.endpoints() {
            // Best effort: a closed stdout does not stop the server.
            let _ = writeln!(out, "listening on {endpoint}");
        }
        let _ = out.flush();
    }
    let stats = server.stats();
    // Stopped (its thread joined) when dropped, after the server has stopped.
    let _metrics = match &args.metrics {
        Some(endpoint) => {
            match wirecall::metrics::MetricsEndpoint::start(endpoint, stats.clone()) {
                Ok(metrics) => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "metrics on http://{}/metrics", metrics.local_addr());
                    let _ = out.flush();
                    Some(metrics)
                }
                Err(e) => return fail(e, EXIT_FAILURE),
            }
        }
        None => None,
    };
    let result = server.run();
    if args.stats_on_exit {
        // What it did, to the last call: a final scrape no monitor can make any more.
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", stats.snapshot());
        let _ = out.flush();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, EXIT_FAILURE),
    }
}

fn list(args: &ListArgs) -> ExitCode {
    let timeout = (args.timeout > 0).then(|| Duration::from_millis(args.timeout));
    let (client, endpoints) =
        match call::discover(&args.endpoint, &args.tls, timeout, &call::Report::plain()) {
            Ok(found) => found,
            Err(code) => return code,
        };
    let _ = client.close();
    let mut text = String::new();
    for e in &endpoints {
        let _ = writeln!(text, "{}  (key {})", e.path, e.key());
        let _ = writeln!(text, "  request:  {}", e.request.to_pseudocode());
        let _ = writeln!(text, "  response: {}", e.response.to_pseudocode());
        let _ = writeln!(text, "  error:    {}", e.error.to_pseudocode());
    }
    write_out(text.as_bytes())
}

/// Writes an answer to stdout; a reader that went away (`| head`) is no error.
fn write_out(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write the answer: {e}"), EXIT_FAILURE),
    }
}

fn demo() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match wirecall::demo::run(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`demo | head`): stop quietly, as other tools do.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => fail(e, EXIT_FAILURE),
    }
}

/// A `usize` flag's parser that refuses values outside `min..=max` (clap then names the
/// flag and the range, and exits 2).
fn usize_in(min: usize, max: usize) -> clap::builder::RangedU64ValueParser<usize> {
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    clap::builder::RangedU64ValueParser::<usize>::new().range(wide(min)..=wide(max))
}

/// An octal file mode: `0660`, `660` or `0o660`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!(
            "expected an octal file mode like 0660, got {text:?}"
        )),
    }
}
