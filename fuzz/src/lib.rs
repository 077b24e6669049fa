//! The checks behind wirecall's cargo-fuzz targets.
//!
//! Everything lives in `checks.rs`, which `core/tests/fuzz_corpus.rs` also includes by path so
//! that the committed corpora replay through the very same checks on stable Rust. Each target
//! in `fuzz_targets/` is one call into it. See `docs/FUZZING.md`.

pub mod checks;

pub use checks::{
    check_client_connection, check_frame_decode, check_server_connection, check_stream_decoder,
};
