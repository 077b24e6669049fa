//! # wirecall-tokio
//!
//! wirecall on [tokio](https://tokio.rs): an async [`Client`] and an async [`Server`] over
//! the unchanged sans-IO [`wirecall_core`], on all four transports (`unix:`, `tcp:`,
//! `unix-dgram:`, `udp:`) and TLS over TCP (`tls:`, with [`wirecall::tls`]'s settings and
//! session), with the endpoint syntax, configuration, functions, built-ins
//! and counters of the mio adapter ([`wirecall`]). This crate moves bytes and time; every
//! protocol decision (framing, handshake, limits, deadlines, busy answers, the go-away,
//! retransmission, the call cache) is the core's.
//!
//! - [`Client`]: `client.call(method, body, timeout).await` from many tasks at once over
//!   one connection; dropping a call's future cancels the call; every failure says
//!   whether the server may have run it.
//! - [`ServerBuilder`] / [`Server`]: synchronous, deferred and `async` functions, served
//!   over any number of endpoints, one task per connection; graceful shutdown from a
//!   [`ShutdownHandle`] or any future ([`Server::run_until`]).
//!
//! The core's clock is fed from [`tokio::time::Instant`], and its timers sleep on
//! `tokio::time`, so paused time in tests drives it too.

pub mod client;
mod clock;
mod net;
pub mod server;

pub use client::{Call, Client, Outcome};
pub use server::{AsyncFn, BoxAnswer, Server, ServerBuilder, ShutdownHandle};
/// The std adapter whose endpoints, configuration, functions and counters this crate
/// shares.
pub use wirecall;
