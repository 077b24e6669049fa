//! # wirecall-core
//!
//! The protocol heart of wirecall: a request/response protocol for sockets, written so any
//! runtime can drive it. **No IO, no clock, no heap, no panics**: this crate never touches a
//! socket, never reads the time and never allocates. The caller hands it received bytes and
//! the current [`Instant`], and pulls from it the bytes to send, the events to act on, and
//! the next time it wants to be woken. Given the same inputs it always does the same thing,
//! which is what makes it testable in simulation and fuzzable.
//!
//! ## Layers
//!
//! - [`wire`]: the frames and their byte encoding (postcard), with the contract that
//!   decoding never panics and borrows bodies from the input; `wire::datagram` is the
//!   29-byte header of datagram mode.
//! - [`frame`]: stream framing: a length-prefixed frame encoder and an incremental
//!   decoder that checks a frame's declared length before buffering it.
//! - [`client`] and [`server`]: the connection state machines for stream transports
//!   (`ClientConnection`, `ServerConnection`): handshake and version negotiation, many calls
//!   in flight answered in any order, deadlines, cancel, keepalive, busy replies, graceful
//!   close, and an outcome for every call that says whether the server may have run it.
//! - [`datagram`]: connectionless calls (`DatagramClient`, `DatagramServer`) for Unix
//!   datagram and UDP sockets: retransmission with backoff and jitter, and a bounded cache
//!   that runs each call at most once however often it arrives.
//! - `sim` (feature `sim`): a deterministic in-memory network and clock for testing a
//!   runtime that embeds the core.
//!
//! ## Driving a stream connection
//!
//! Every connection is driven the same way, in a loop:
//!
//! 1. put received bytes in with `handle_input(now, bytes)` (or read straight into
//!    `input_buffer()` and call `commit_input(now, n)`); on end of stream, `handle_eof(now)`;
//! 2. when `poll_timeout()` has passed, call `handle_timeout(now)`;
//! 3. take events with `poll_event(now)` until it returns `None`, and act on them
//!    (`respond`, `call`, `cancel`, `close`);
//! 4. send what `transmit()` returns and report it with `advance_transmit(n)`;
//! 5. sleep until `poll_timeout()` or more input.
//!
//! After any call that changes the connection (`call`, `respond`, `cancel`, `close`,
//! `abort`), go through steps 3 and 4 again before sleeping: events and bytes may be owed
//! (a graceful close, for one, sends its go-away from `poll_event`).
//!
//! ## Driving datagram mode
//!
//! A client: `call`, then send every datagram `poll_transmit(now)` returns (one the
//! transport has no room for goes back with `not_sent(transmit.kind)`: no driver parses
//! its own output); pass each datagram from the server to `handle_datagram(now, bytes)`
//! (an answer comes back at once); take failures from `poll_event()`; sleep until
//! `poll_timeout()`, then call `poll_transmit` again (it fires due deadlines itself, and
//! never sends past one). A server: pass each datagram to
//! `handle_datagram(now, from, bytes)` and do what the returned `Received` says; `respond`
//! returns the answer to send (an answer too large for a datagram becomes the reserved
//! error `ERROR_ANSWER_TOO_LARGE` there); `drain()` begins a shutdown, after which the core
//! itself rejects new calls until `is_drained()`.
//!
//! ## Features
//!
//! - `log` / `defmt` (exclusive): where the core's log lines go; none by default.
//! - `sim`: the simulation harness.
#![cfg_attr(not(test), no_std)]
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

pub mod buffer;
pub mod client;
pub mod config;
mod conn;
pub mod datagram;
pub mod frame;
mod rng;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod time;
pub mod wire;

pub use buffer::Buffer;
pub use client::ClientConnection;
pub use config::Config;
pub use server::ServerConnection;
pub use time::{Duration, Instant};
pub use wire::{Frame, RequestId};
