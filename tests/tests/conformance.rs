//! The conformance matrix: every case of `wirecall_tests::conformance::cases` for every
//! server driver against every client driver, over each transport the pair speaks. Each
//! test prints one line per transport; `cargo test -p wirecall-tests --test conformance --
//! --nocapture | grep '^conformance:'` shows the whole matrix.
//!
//! A new driver joins with one line in `matrix!` below (and its `ServerDriver` or
//! `ClientDriver` impl in `tests/src/conformance/drivers.rs`).

use wirecall_tests::conformance::drivers::{
    BlockingClient, EmbeddedClient, MioServer, TokioClient, TokioServer,
};
use wirecall_tests::conformance::{LOSSY_RELAY, cases};

/// One test per case for the pair `$server` × `$client`, in module `$name`.
macro_rules! pair {
    ($name:ident, $server:ty, $client:ty) => {
        mod $name {
            use super::*;
            pair!(@cases $server, $client; basics, typed, pipelining, deadline, cancel,
                cancel_frees_the_slot, busy, goaway, keepalive, oversize, garbage, deaf_peer,
                refused_at_the_limit, idle_timeout, max_connection_age, load, shutdown_under_load, shutdown_now,
                lossy_exactly_once);
        }
    };
    (@cases $server:ty, $client:ty; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let _ = LOSSY_RELAY.set(env!("CARGO_BIN_EXE_lossy_relay").into());
                cases::run::<$server, $client>(stringify!($case), cases::$case::<$server, $client>);
            }
        )*
    };
}

pair!(mio_server_blocking_client, MioServer, BlockingClient);
pair!(mio_server_tokio_client, MioServer, TokioClient);
pair!(tokio_server_blocking_client, TokioServer, BlockingClient);
pair!(tokio_server_tokio_client, TokioServer, TokioClient);
pair!(mio_server_embedded_client, MioServer, EmbeddedClient);
pair!(tokio_server_embedded_client, TokioServer, EmbeddedClient);
