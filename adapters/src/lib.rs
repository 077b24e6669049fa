//! wirecall over real sockets.
//!
//! This crate will drive [`wirecall_core`] with mio over Unix datagram, Unix stream, TCP and
//! UDP sockets. For now it only re-exports the core; the adapter lands with its own issue.

pub use wirecall_core as core;
