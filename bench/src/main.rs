//! `wirecall-bench`: wirecall side by side with raw std sockets, tokio and tarpc, in one run.
//!
//! ```sh
//! cargo build --release -p wirecall-cli -p wirecall-bench
//! target/release/wirecall-bench compare            # the full table (~6 minutes)
//! target/release/wirecall-bench compare --quick    # one quick pass (~1 minute)
//! target/release/wirecall-bench rss                # RSS of 10,000 idle connections
//! target/release/wirecall-bench threads            # spin calls/s, --threads 2 over 1
//! target/release/alloc                             # heap allocations per call
//! ```
//!
//! `compare` runs every server as its own process and every client as another, each
//! pinned with `taskset`; the raw and tokio servers and clients are the `server` and
//! `client` modes of this binary, wirecall's are `wirecall serve` and `wirecall bench`.
//! See docs/BENCHMARKS.md for what each figure means.

mod compare;
mod driver;
mod peer;
mod raw;
mod rss;
mod tarpc_peer;
mod threads;

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Errors of the harness: its messages are for the person running it.
pub(crate) type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The four socket kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Transport {
    /// Unix-domain datagram.
    UnixDgram,
    /// Unix-domain stream.
    Unix,
    /// TCP (with `TCP_NODELAY`).
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    pub(crate) const ALL: [Self; 4] = [Self::UnixDgram, Self::Unix, Self::Tcp, Self::Udp];

    /// The endpoint scheme, as wirecall writes it.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::UnixDgram => "unix-dgram",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    pub(crate) fn is_stream(self) -> bool {
        matches!(self, Self::Unix | Self::Tcp)
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.scheme() == s)
            .ok_or_else(|| format!("unknown transport {s:?}"))
    }
}

/// What a client mode prints: one JSON line with the fields `wirecall bench --json` has
/// for the same things.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientReport {
    calls: u64,
    errors: u64,
    elapsed: Duration,
}

impl ClientReport {
    pub(crate) fn new(calls: u64, errors: u64, elapsed: Duration) -> Self {
        Self {
            calls,
            errors,
            elapsed,
        }
    }

    fn to_json(self) -> serde_json::Value {
        let secs = self.elapsed.as_secs_f64();
        serde_json::json!({
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": 0,
            "elapsed_secs": secs,
            "calls_per_sec": if secs > 0.0 { self.calls as f64 / secs } else { 0.0 },
        })
    }
}

/// Tells the harness where a server listens, as `wirecall serve` does.
pub(crate) fn announce(endpoint: &str) {
    let mut out = std::io::stdout().lock();
    // The harness waits for this line; if stdout is gone, nobody is waiting.
    let _ = writeln!(out, "listening on {endpoint}");
    let _ = out.flush();
}

/// wirecall side by side with raw std sockets and tokio.
#[derive(Debug, Parser)]
#[command(name = "wirecall-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure everything and print the table
    Compare(compare::Args),
    /// Measure the RSS of `wirecall serve` holding many idle Unix-stream connections
    Rss(rss::Args),
    /// Measure how `wirecall serve` scales over --threads with a CPU-bound function
    Threads(threads::Args),
    /// Run a raw or tokio echo server (used by `compare`)
    Server {
        /// raw (blocking std sockets), tokio (LengthDelimitedCodec), wirecall-tokio or tarpc
        #[arg(value_enum)]
        kind: Kind,
        /// The transport
        #[arg(long, value_enum)]
        transport: Transport,
        /// A socket path, or host:port
        #[arg(long)]
        addr: String,
        /// Exit after this many seconds whatever happens
        #[arg(long, default_value_t = 900)]
        lifetime: u64,
    },
    /// Run a raw or tokio client and print one JSON line (used by `compare`)
    Client {
        /// raw (blocking std sockets), tokio (LengthDelimitedCodec), wirecall-tokio or tarpc
        #[arg(value_enum)]
        kind: Kind,
        /// The transport
        #[arg(long, value_enum)]
        transport: Transport,
        /// A socket path, or host:port
        #[arg(long)]
        addr: String,
        /// Body size in bytes
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Calls in flight
        #[arg(long, default_value_t = 1)]
        window: usize,
        /// Seconds of calls
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
}

/// The two implementations this binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Kind {
    /// Blocking std sockets.
    Raw,
    /// tokio + LengthDelimitedCodec.
    Tokio,
    /// wirecall's tokio driver (`wirecall-tokio`).
    WirecallTokio,
    /// tarpc with its bincode serde transport.
    Tarpc,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Compare(args) => compare::run(&args),
        Command::Rss(args) => rss::run(&args),
        Command::Threads(args) => threads::run(&args),
        Command::Server {
            kind,
            transport,
            addr,
            lifetime,
        } => {
            // Bounded: a server nobody stops still goes away.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(lifetime));
                std::process::exit(0);
            });
            match kind {
                Kind::Raw => raw::serve(transport, &addr),
                Kind::Tokio => peer::serve(transport, &addr),
                Kind::WirecallTokio => driver::serve(transport, &addr),
                Kind::Tarpc => tarpc_peer::serve(transport, &addr),
            }
        }
        Command::Client {
            kind,
            transport,
            addr,
            size,
            window,
            secs,
        } => {
            let report = match kind {
                Kind::Raw => raw::client(transport, &addr, size, window, secs),
                Kind::Tokio => peer::client(transport, &addr, size, window, secs),
                Kind::WirecallTokio => driver::client(transport, &addr, size, window, secs),
                Kind::Tarpc => tarpc_peer::client(transport, &addr, size, window, secs),
            };
            report.map(|r| println!("{}", r.to_json()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wirecall-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
