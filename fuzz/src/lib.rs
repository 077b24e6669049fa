//! The checks behind wirecall's cargo-fuzz targets.
//!
//! The core's checks live in `checks/` (stream mode, a module per concept: the script
//! format, set-up, the reference model, the shared driving, one module per target) and `datagram_checks.rs` (datagram
//! mode), which `core/tests/fuzz_corpus.rs` also includes by path so that the committed
//! corpora replay through the very same checks on stable Rust. `endpoint_checks.rs` needs
//! the adapter crate and is fuzzed only. Each target in `fuzz_targets/` is one call into
//! them. See `docs/FUZZING.md`.

pub mod checks;
pub mod datagram_checks;
pub mod endpoint_checks;

pub use checks::{
    check_client_connection, check_frame_decode, check_server_connection, check_stream_decoder,
};
pub use datagram_checks::{check_datagram_client, check_datagram_server};
pub use endpoint_checks::check_endpoint_parse;
