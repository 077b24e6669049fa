//! # wirecall-embedded
//!
//! wirecall on embassy and any other `no_std` async runtime: a [`Client`] and a server
//! ([`serve`]) of one stream connection over an [`embedded_io_async`] `Read + Write`
//! transport (embassy-net's `TcpSocket` is one), with static storage only: no allocator,
//! no `std`, no runtime of its own.
//!
//! This crate is a driver of [`wirecall_core`], and nothing more: it moves bytes between
//! the transport and the core's connection, passes the time, sleeps until the transport
//! is ready or the connection's next timer is due, and hands requests to a [`Handler`].
//! Every protocol decision (framing, the handshake, limits, busy and rejection answers,
//! deadlines, keepalive, the graceful close, whether a failed call ran) is the core's.
//!
//! - [`ServerStorage`] / [`ClientStorage`]: a connection's buffers and table, with a
//!   `const fn new()` for a `static`.
//! - [`Timer`]: the clock and the sleep, implemented by the caller (over `embassy_time` on
//!   embassy; over `tokio::time` in this crate's host tests).
//! - [`serve`] with a [`Handler`]: answers requests until the client leaves or a stop
//!   signal closes the connection gracefully.
//! - [`Client`]: one call at a time, the answer copied into the caller's buffer, every
//!   failure a [`CallError`] carrying the core's [`Execution`]; a graceful
//!   [`close`](Client::close).
//!
//! ## On embassy
//!
//! Storage in a `StaticCell`, the connection over an embassy-net `TcpSocket` (which needs
//! buffers of its own), the clock from embassy-time. A server task:
//!
//! ```ignore
//! use embassy_net::tcp::TcpSocket;
//! use static_cell::StaticCell;
//! use wirecall_core::server::IncomingRequest;
//! use wirecall_core::wire::{RejectCode, Reply};
//! use wirecall_core::{Config, Instant};
//! use wirecall_embedded::{serve, Handler, ServerStorage, Settings, Timer};
//!
//! struct EmbassyTimer;
//! impl Timer for EmbassyTimer {
//!     fn now(&self) -> Instant {
//!         Instant::from_micros(embassy_time::Instant::now().as_micros())
//!     }
//!     fn sleep_until(&mut self, at: Instant) -> impl core::future::Future<Output = ()> {
//!         embassy_time::Timer::at(embassy_time::Instant::from_micros(at.as_micros()))
//!     }
//! }
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn handle<'a>(&'a mut self, request: IncomingRequest<'a>) -> Reply<'a> {
//!         match request.target.method() {
//!             Some("echo") => Reply::Ok(request.body),
//!             _ => Reply::Rejected { code: RejectCode::UNKNOWN_METHOD, message: "no such method" },
//!         }
//!     }
//! }
//!
//! // 2 x 1028 bytes of buffers: frames up to the 1024-byte baseline; 4 requests in flight.
//! static STORAGE: StaticCell<ServerStorage<1028, 4>> = StaticCell::new();
//!
//! #[embassy_executor::task]
//! async fn wirecall_server(stack: embassy_net::Stack<'static>) -> ! {
//!     let storage = STORAGE.init(ServerStorage::new());
//!     let (mut rx, mut tx) = ([0u8; 1536], [0u8; 1536]);
//!     let settings = Settings::new(Config { max_frame_len: 1024, max_in_flight: 4, ..Config::default() });
//!     loop {
//!         let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
//!         if socket.accept(7000).await.is_err() {
//!             continue;
//!         }
//!         let ended = serve(&mut socket, storage, settings, EmbassyTimer, &mut Echo,
//!                           core::future::pending()).await;
//!         defmt::info!("connection ended: {:?}", ended);
//!         socket.close();
//!         let _ = socket.flush().await;
//!     }
//! }
//! ```
//!
//! A client is the same with `socket.connect(remote).await`, then
//! `Client::new(&mut socket, storage, settings, EmbassyTimer)?` and
//! `client.call("echo", b"hi", Some(Duration::from_secs(1)), &mut answer).await`.
//!
//! ## What the driver relies on
//!
//! - **Cancel-safe reads and writes.** While it waits for input, the driver races the
//!   transport's `read` against the connection's next timer (and `write` likewise while
//!   it has bytes to send), and drops the loser. It relies on an unfinished `read` or
//!   `write` having taken no bytes, as embedded-io-async asks of implementations;
//!   embassy-net's `TcpSocket` and embedded-io-adapters' tokio wrapper are so. A
//!   transport that reads by DMA straight into the buffer is not, and would lose input.
//! - **One transport, half duplex.** `Read + Write` on one value cannot read and write at
//!   once, so a turn writes while the connection has something to send and reads
//!   otherwise. A peer that sends without ever reading stalls the writes, and then the
//!   connection's timers (keepalive, drain) end it.
//! - **Timers.** [`Timer::sleep_until`] must complete at or after the instant; the core
//!   takes care of timers that fire early or late.
//!
//! ## Features
//!
//! - `log` / `defmt` (exclusive, as the core's): where this crate's and the core's log
//!   lines go; `defmt` also derives `defmt::Format` on the public types. None by default.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]
#![warn(
    clippy::use_self,
    clippy::doc_markdown,
    clippy::semicolon_if_nothing_returned,
    clippy::must_use_candidate
)]

#[macro_use]
mod fmt;

mod client;
mod error;
mod link;
mod race;
mod server;
mod storage;
mod timer;

pub use client::{CallError, CallErrorKind, Client, TypedCallError};
pub use error::Error;
pub use link::{DEFAULT_LINGER, Settings};
pub use server::{Handler, serve};
pub use storage::{ClientStorage, ServerStorage};
pub use timer::Timer;
pub use wirecall_core::client::{CloseReason, Execution};
