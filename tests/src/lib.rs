//! End-to-end tests of the `wirecall` binary over real sockets live in `tests/tests/`.
//! They arrive with the std adapter; this crate holds their shared helpers.
