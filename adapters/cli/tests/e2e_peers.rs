//! End-to-end: who the server takes a caller for, against the real `wirecall serve`. The
//! builtin `whoami` shows what reaches a function's context on every transport (the
//! kernel's credentials of a Unix stream peer, the address of an IP peer, the socket path
//! of a Unix datagram peer, the time left before the deadline); `--allow-uid` refuses a
//! Unix peer of another user before anything it sends runs (a client run as `nobody`,
//! when the test runs as root), on a stream (exit 9, `NOT_ALLOWED`) and on a datagram
//! socket (dropped, counted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wirecall::{Client, ClientConfig, Endpoint};
use wirecall_tests::{ServerProcess, parse_stats, run_command};

const WAIT: Duration = Duration::from_secs(10);

/// `nobody` on Debian.
const NOBODY: u32 = 65534;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn connect(endpoint: &str) -> Client {
    let endpoint: Endpoint = endpoint.parse().unwrap();
    Client::connect(&endpoint, ClientConfig::default()).unwrap()
}

/// `whoami`'s answer as a map of its `name value` lines (values as text).
fn whoami(endpoint: &str, timeout: Duration) -> HashMap<String, String> {
    let text = connect(endpoint)
        .call("whoami", b"", Some(timeout))
        .unwrap();
    wirecall_tests::parse_fields(&String::from_utf8(text).unwrap())
}

fn stats(endpoint: &str) -> HashMap<String, u64> {
    let text = connect(endpoint).call("stats", b"", Some(WAIT)).unwrap();
    parse_stats(&String::from_utf8(text).unwrap())
}

#[test]
fn whoami_names_the_caller_as_each_transport_knows_it() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("who.sock").display());
    let unix_dgram = format!("unix-dgram:{}", dir.path().join("who-dgram.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            &unix_dgram,
            "--listen",
            "tcp:127.0.0.1:0",
            "--listen",
            "udp:127.0.0.1:0",
        ],
        &[],
    )
    .unwrap();
    let uid = rustix::process::geteuid().as_raw().to_string();
    let gid = rustix::process::getegid().as_raw().to_string();

    let me = whoami(&unix, WAIT);
    assert_eq!(me["transport"], "unix", "{me:?}");
    assert_eq!(me["uid"], uid, "{me:?}");
    assert_eq!(me["gid"], gid, "{me:?}");
    assert_eq!(me["pid"], std::process::id().to_string(), "{me:?}");
    // The deadline arrives too: what is left of this call's 10 s.
    let left: u64 = me["remaining_ms"].parse().unwrap();
    assert!(left > 0 && left <= 10_000, "{me:?}");

    // An IP peer is its address: the client's own socket.
    let tcp = server.endpoint("tcp").unwrap().to_owned();
    let me = whoami(&tcp, WAIT);
    assert_eq!(me["transport"], "tcp", "{me:?}");
    assert!(me["address"].starts_with("127.0.0.1:"), "{me:?}");
    let udp = server.endpoint("udp").unwrap().to_owned();
    let me = whoami(&udp, Duration::from_millis(1500));
    assert_eq!(me["transport"], "udp", "{me:?}");
    assert!(me["address"].starts_with("127.0.0.1:"), "{me:?}");
    let left: u64 = me["remaining_ms"].parse().unwrap();
    assert!(left <= 1500, "{me:?}");

    // A Unix datagram peer is the path its socket is bound at.
    let me = whoami(&unix_dgram, WAIT);
    assert_eq!(me["transport"], "unix-dgram", "{me:?}");
    assert!(me["path"].starts_with('/'), "{me:?}");
}

#[test]
fn allow_uid_refuses_another_user_before_anything_runs() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: the test must run as root to start a client as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Other users must reach the sockets: the directory is searchable, the files 0666.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let unix = format!("unix:{}", dir.path().join("allow.sock").display());
    let unix_dgram = format!(
        "unix-dgram:{}",
        dir.path().join("allow-dgram.sock").display()
    );
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            &unix_dgram,
            "--unix-mode",
            "0666",
            "--allow-uid",
            "0",
        ],
        &[],
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new(bin());
        command.args(args).uid(NOBODY).gid(NOBODY);
        run_command(command, b"", WAIT).unwrap()
    };

    // Root is on the list; with the list the server reads a datagram sender's credentials
    // too, and they reach the function.
    assert_eq!(
        connect(&unix).call("echo", b"root", Some(WAIT)).unwrap(),
        b"root"
    );
    let me = whoami(&unix_dgram, WAIT);
    assert_eq!(me["transport"], "unix-dgram", "{me:?}");
    assert_eq!(me["uid"], "0", "{me:?}");
    assert_eq!(me["pid"], std::process::id().to_string(), "{me:?}");
    // nobody is not: refused with NOT_ALLOWED, nothing ran, exit 9.
    let out = as_nobody(&["call", &unix, "echo", "nobody"]);
    assert_eq!(out.code, Some(9), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("does not allow this client (NOT_ALLOWED)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("[not executed]"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    // On the datagram socket nobody's request is dropped unanswered: its call times out
    // and nothing ran.
    let out = as_nobody(&["call", &unix_dgram, "echo", "nobody", "--timeout", "300"]);
    assert_eq!(out.code, Some(6), "{}", out.stderr);

    let s = stats(&unix);
    assert_eq!(s["connections.not_allowed"], 1, "{s:?}");
    assert!(s["datagrams.dropped.not_allowed"] >= 1, "{s:?}");
    // Only root's two calls (echo, stats) ran.
    assert_eq!(s["executions.echo"], 1, "{s:?}");
    assert!(
        server.wait_for_log("not on the allowlist", WAIT),
        "{}",
        server.stderr()
    );
}
