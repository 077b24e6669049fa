//! What the stream fuzz targets check, in one module tree shared by two builds:
//!
//! - the cargo-fuzz crate (`fuzz/`, nightly + libFuzzer), whose targets in
//!   `fuzz/fuzz_targets/` are one-line calls to the `check_*` functions here, and
//! - the stable replay test `core/tests/fuzz_corpus.rs`, which includes this module with
//!   `#[path = "../../fuzz/src/checks/mod.rs"] mod checks;` and runs every committed corpus and
//!   regression input through the same functions under a plain `cargo test`.
//!
//! So this file may use only `std` and `wirecall-core`'s public API: no `libfuzzer-sys`, no
//! `arbitrary`, nothing the core's test build does not have.
//!
//! # Input format
//!
//! The structured targets read their input with [`Input`], a small reader in the spirit of
//! `arbitrary::Unstructured`: a byte picks an operation, the bytes after it are its fields,
//! and an exhausted input reads as zeros, so every byte string is a valid script. We use our
//! own reader rather than `#[derive(Arbitrary)]` so that a corpus file means exactly the same
//! script to the fuzzer and to the stable replay (no second dependency whose version could
//! reinterpret committed files, and nothing to add to the core's manifest). [`Script`] and
//! the `*Script` builders write the same format; the seed-corpus generator uses them.
//!
//! Every check panics with a message naming the broken invariant; libFuzzer reports a panic
//! as a crash, the replay test as a failure.

use std::collections::{BTreeMap, BTreeSet};

use wirecall_core::buffer::GrowBuf;
use wirecall_core::client::{CallSlot, ClientConnection, ClientEvent, Failure, SendError};
use wirecall_core::frame::{DecodeError, FrameDecoder, encode_frame};
use wirecall_core::server::{
    CloseReason, PeerInfo, ProtocolError, RequestSlot, RespondError, ServerConnection, ServerEvent,
};
use wirecall_core::table::GrowTable;
use wirecall_core::wire::{
    BASELINE_MAX_FRAME_LEN, CloseCode, ERROR_ANSWER_TOO_LARGE, EndpointKey, Frame, Hello,
    LEN_PREFIX, MAGIC, MAX_HELLO_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RejectCode, Reply,
    Request, RequestId, Response, Target, WireError,
};
use wirecall_core::{Config, Duration, Instant};

mod client;
mod decoder;
mod frames;
mod known_bugs;
mod link;
mod model;
mod script;
mod server;
mod setup;

pub use client::*;
pub use decoder::*;
pub use frames::*;
pub use known_bugs::*;
pub(crate) use link::*;
pub(crate) use model::*;
pub use script::*;
pub use server::*;
pub use setup::*;

/// "Much later": far past every timer a script can set, far below `u64::MAX` microseconds.
pub(crate) const FAR: Duration = Duration::from_secs(1_000_000);

/// Bound on events from one round of polling, to turn a livelock into a clear failure.
pub(crate) const MAX_EVENTS_PER_POLL: usize = 100_000;
