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
//! - `typed` (feature `typed`, on by default): typed endpoints declared once as Rust
//!   types (`endpoints!`), their schema keys, and typed encode/decode over caller buffers.
//! - `sim` (feature `sim`): a deterministic in-memory network and clock for testing a
//!   runtime that embeds the core.
//!
//! ## The driver contract
//!
//! A runtime (a driver) moves bytes and time; the core decides everything else. Every
//! endpoint kind is driven with the same verbs, quinn-proto style: `handle_*` puts input
//! in, `poll_*` takes output out until it returns `None`, and `now` is passed to every
//! call where time matters. Anything that changes a connection (`call`, `respond`,
//! `cancel`, `close`) queues its bytes at once, so the next transmit sends them.
//!
//! One turn of a **stream** connection ([`ClientConnection`] or [`ServerConnection`]; the
//! [`StreamConnection`] trait has the same verbs, for a driver of either role) is four
//! steps and five calls (`commit_input`, `poll_event`, `transmit`, `advance_transmit`,
//! `poll_timeout`):
//!
//! 1. **bytes in**: read the transport straight into `input_buffer()` and
//!    `commit_input(now, n)` (or copy with `handle_input(now, bytes)`); a read of 0 bytes
//!    (end of stream) is `handle_eof()`. While `input_buffer()` is empty the connection holds
//!    frames not yet taken: take events (step 2) first, and never read into the empty
//!    slice (a read into it returns 0, which is not an end of stream);
//! 2. **events**: `poll_event(now)` until `None`. It fires due timers first (deadlines,
//!    handshake, keepalive, drain), so `handle_timeout` is only for a driver that wants to
//!    fire them without taking events. Act on each event: `respond` (or `respond_with`,
//!    which answers from the request's bytes in place, without copying them), `call`,
//!    `cancel`, `close`;
//! 3. **bytes out**: write `transmit()` and report what the transport took with
//!    `advance_transmit(n)`;
//! 4. **sleep** until the transport is readable (or writable, while `transmit()` is not
//!    empty) or until `poll_timeout()`.
//!
//! The turn is a cycle: a driver may enter it at any step. A client that has just made a
//! call starts with step 3, so the call goes out before it waits; a server starts with 1.
//!
//! An event borrows the connection (a response body, a request's method and body are
//! read in place from the receive buffer), so a call that changes the connection comes
//! after the event is done with: take the id out of the event, then `respond_with(id, ..)`
//! reads the request again where it lies. A reply kept for later must be copied out.
//! The last event of a connection is `Closed`: send what `transmit()` still holds, then
//! close the transport.
//!
//! A **datagram client** ([`datagram::DatagramClient`]) is driven the same way, with
//! whole datagrams: a turn is bytes in (receive the server's datagram straight into
//! `input_buffer()` and `commit_datagram(now, n)`, or copy it with
//! `handle_datagram(now, bytes)`), events (`poll_event(now)` until `None`: each call's one
//! outcome, an answer borrowing the receive area or a timeout or cancel; due deadlines
//! fire here), bytes out (send every datagram `poll_transmit(now)` hands out; one the
//! socket has no room for goes back with `not_sent(transmit.kind)`, so no driver parses its
//! own output) and sleep until `poll_timeout()`. A **datagram server**
//! ([`datagram::DatagramServer`]) takes each datagram with
//! `handle_datagram(now, from, bytes)`, whose `Received` is its one outcome: a request to
//! run (borrowing the datagram, so it can be answered without a copy), a reply to send
//! (a `Transmit`, as `respond` returns), a cancel, a drop. It has no timers: everything it
//! decides in time (a call's window, a client's record) is decided when a datagram
//! arrives, so nothing happens between datagrams. `drain()` begins a shutdown: from then on
//! the core rejects every new call, and the server may stop once `is_drained(now)`.
//!
//! Where the protocol decides something, the core decides it: busy answers when a table
//! or cache is full, rejections (a zero or too long budget, a shutdown), an answer too
//! large for the client ([`wire::ERROR_ANSWER_TOO_LARGE`]), the go-away, retransmission and
//! deadlines. A driver never builds or parses a frame. `docs/ARCHITECTURE.md` says where
//! each rule lives.
//!
//! ## Features
//!
//! - `log` / `defmt` (exclusive): where the core's log lines go; none by default.
//! - `sim`: the simulation harness.
//! - `alloc`: `buffer::GrowBuf`, a heap-backed growable [`Buffer`], and
//!   `table::GrowTable`, a request or call table that grows with the calls in flight (the
//!   state machines still never allocate).
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

#[cfg(feature = "alloc")]
extern crate alloc;

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
mod stream;
pub mod table;
pub mod time;
#[cfg(feature = "typed")]
pub mod typed;
pub mod wire;

pub use buffer::Buffer;
pub use client::ClientConnection;
pub use config::Config;
pub use server::ServerConnection;
pub use stream::StreamConnection;
pub use time::{Duration, Instant};
pub use wire::{Frame, RequestId};
