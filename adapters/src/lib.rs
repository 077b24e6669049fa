//! # wirecall
//!
//! wirecall over real sockets: the std adapter that drives the sans-IO
//! [`wirecall_core`] with [mio](https://docs.rs/mio), as a library and as the `wirecall`
//! binary. The adapter moves bytes, reads the clock and runs functions; every protocol
//! decision (framing, handshake, limits, deadlines, busy replies, graceful close) is the
//! core's.
//!
//! - [`Endpoint`]: `unix:/path`, `unix-dgram:/path`, `tcp:host:port`, `tls:host:port`,
//!   `udp:host:port` (IPv6 as `tcp:[::1]:7000`): Unix stream, Unix datagram, TCP, TLS over
//!   TCP ([`tls`], with mutual TLS) and UDP.
//! - [`ServerBuilder`] / [`Server`]: functions registered by name, served over several
//!   endpoints of any transport from one mio event loop, optionally on worker threads;
//!   limits from [`ServerConfig`]; graceful shutdown through a [`ShutdownHandle`] or
//!   SIGINT/SIGTERM. On datagram endpoints the core's call cache makes a retransmitted
//!   call run at most once.
//! - [`Client`]: a blocking client with one call at a time or many in flight, over any
//!   transport (on datagrams the core retransmits until an answer or the deadline).
//! - [`builtins`]: the reference server's functions (`echo`, `upper`, `time`, `sleep`,
//!   `stats`, `list`); [`demo`]: `wirecall demo`.
//!
//! ```no_run
//! use std::time::Duration;
//! use wirecall::{builtins, Client, ClientConfig, Endpoint, ServerBuilder, ServerConfig};
//!
//! let server = builtins::register(ServerBuilder::new(ServerConfig::default()))
//!     .listen("tcp:127.0.0.1:0".parse()?)
//!     .build()?;
//! let endpoint = server.endpoints()[0].clone();
//! let stop = server.shutdown_handle();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut client = Client::connect(&endpoint, ClientConfig::default())?;
//! assert_eq!(client.call("echo", b"hi", Some(Duration::from_secs(1)))?, b"hi");
//!
//! stop.shutdown();
//! thread.join().expect("server thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod access;
pub mod builtins;
pub mod client;
pub mod clock;
pub mod config;
pub mod demo;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod function;
pub mod id_hasher;
pub mod metrics;
pub mod server;
pub mod stats;
mod stream;
pub mod tls;
pub mod typed;

pub use client::fleet::{FleetAnswer, FleetCallId, FleetClient, FleetConfig, FleetError};
pub use client::{CallError, CallErrorKind, Client};
pub use config::{ClientConfig, ServerConfig, available_cpus};
pub use endpoint::{Endpoint, ParseEndpointError};
pub use error::{Error, HandshakeFailure};
pub use function::{Answer, CallFailure, Responder};
pub use server::{Server, ServerBuilder, ShutdownHandle};
pub use stats::{StatsHandle, StatsSnapshot};
pub use tls::{TlsClientConfig, TlsConnector, TlsIdentity, TlsServerConfig};
pub use typed::{TypedCallError, TypedReply, TypedResponder};
/// The protocol core this adapter drives.
pub use wirecall_core as core;
pub use wirecall_core::client::Execution;
