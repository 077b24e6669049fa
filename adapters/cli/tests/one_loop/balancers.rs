//! `e2e_balancers.rs` again, with every server on one event loop (`serve --threads 1`; the
//! suite itself runs them on two: see `wirecall_tests::server_threads`).

#[path = "../e2e_balancers.rs"]
mod suite;
