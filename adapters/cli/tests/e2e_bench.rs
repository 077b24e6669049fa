//! End-to-end: `wirecall bench` against a real `wirecall serve` over every transport:
//! the closed and the open loop, its default bodies and bodies given on the command line
//! or in a file, requests too large for one datagram refused before any load, and
//! failures before a report as JSON, and progress lines on stderr. Behaviour only (counts, fields, exit codes, JSON
//! shape), never timing; every load is bounded by a count or a duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use wirecall_tests::{Output, ServerProcess, parse_stats, run};

const TIMEOUT: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn bench(args: &[&str]) -> (Output, Value) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let out = run(bin(), &all, b"", TIMEOUT).unwrap();
    let text = out.stdout_text();
    let mut lines = text.lines();
    let json: Value = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text:?}; stderr: {}", out.stderr));
    assert!(
        lines.next().is_none(),
        "one JSON object, nothing else: {text:?}"
    );
    (out, json)
}

fn count(json: &Value, field: &str) -> u64 {
    json[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {json}"))
}

#[test]
fn bench_json_over_unix_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--listen", &unix, "--listen", "tcp:127.0.0.1:0"],
        &[],
    )
    .unwrap();
    for ep in &server.endpoints {
        for extra in [
            &[][..],
            &["--window", "16", "--connections", "3"][..],
            &["--size", "4096", "--window", "64", "--method", "upper"][..],
        ] {
            let mut args = vec![ep.as_str(), "--requests", "200", "--json"];
            args.extend_from_slice(extra);
            let (out, json) = bench(&args);
            assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
            for field in [
                "calls_per_sec",
                "p50_us",
                "p90_us",
                "p99_us",
                "p999_us",
                "max_us",
            ] {
                let value = json[field]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{field} missing: {json}"));
                assert!(value > 0.0, "{field} = {value}: {json}");
            }
            assert_eq!(count(&json, "calls"), 200, "{json}");
            assert_eq!(count(&json, "ok"), 200, "{json}");
            assert_eq!(count(&json, "errors"), 0, "{json}");
            assert_eq!(count(&json, "timeouts"), 0, "{json}");
            assert_eq!(json["checked"], Value::Bool(true), "{json}");
        }
    }
}

#[test]
fn bench_json_over_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix-dgram:{}", dir.path().join("d.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--listen", &unix, "--listen", "udp:127.0.0.1:0"],
        &[],
    )
    .unwrap();
    for ep in &server.endpoints {
        // A window under the Unix datagram queue limit (net.unix.max_dgram_qlen, 10).
        for extra in [&[][..], &["--window", "8", "--connections", "2"][..]] {
            let mut args = vec![ep.as_str(), "--requests", "200", "--json"];
            args.extend_from_slice(extra);
            let (out, json) = bench(&args);
            assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
            assert_eq!(count(&json, "calls"), 200, "{json}");
            assert_eq!(count(&json, "errors"), 0, "{json}");
            assert_eq!(count(&json, "timeouts"), 0, "{json}");
        }
    }
}

#[test]
fn failed_calls_are_counted_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let _server = ServerProcess::start(bin(), &["--listen", &unix], &[]).unwrap();
    let (out, json) = bench(&[
        &unix,
        "--method",
        "no-such-method",
        "--requests",
        "50",
        "--json",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(count(&json, "calls"), 50, "{json}");
    assert_eq!(count(&json, "errors"), 50, "{json}");
    assert!(out.stderr.contains("no such method"), "{}", out.stderr);
}

#[test]
fn no_server_is_a_connect_error_and_json_says_so_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("none.sock").display());
    let out = run(bin(), &["bench", &unix, "--requests", "1"], b"", TIMEOUT).unwrap();
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    // With --json: one JSON object on stdout, the same exit code.
    let (out, json) = bench(&[&unix, "--requests", "1", "--json"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert_eq!(count(&json, "exit_code"), 8, "{json}");
    assert_eq!(json["execution"], "not executed", "{json}");
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("cannot connect"), "{json}");
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
}

#[test]
fn a_body_from_the_command_line_or_a_file_is_sent_and_echo_answers_checked() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let dgram = format!("unix-dgram:{}", dir.path().join("d.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            &unix,
            "--listen",
            "tcp:127.0.0.1:0",
            "--listen",
            &dgram,
        ],
        &[],
    )
    .unwrap();
    // Every byte value, and more than one UDP datagram holds (Unix datagrams hold 64 KiB).
    let file = dir.path().join("body.bin");
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let at_file = format!("@{}", file.display());
    for ep in &server.endpoints {
        for (body, size) in [("hello", 5), (at_file.as_str(), 3000)] {
            let args = [
                ep.as_str(),
                "--body",
                body,
                "-n",
                "100",
                "-w",
                "4",
                "--json",
            ];
            let (out, json) = bench(&args);
            assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
            assert_eq!(count(&json, "calls"), 100, "{json}");
            assert_eq!(count(&json, "ok"), 100, "{json}");
            assert_eq!(count(&json, "errors"), 0, "{json}");
            assert_eq!(count(&json, "size"), size, "{json}");
            assert_eq!(json["body"], "fixed", "{json}");
            assert_eq!(json["checked"], Value::Bool(true), "{json}");
        }
        // The sleep method takes milliseconds as its body: only success is checked.
        let (out, json) = bench(&[ep, "--method", "sleep", "--body", "5", "-n", "20", "--json"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(count(&json, "ok"), 20, "{json}");
        assert_eq!(json["checked"], Value::Bool(false), "{json}");
    }
    let ep = server.endpoint("tcp").unwrap();
    // A file that cannot be read: one line, exit 1.
    let missing = format!("@{}", dir.path().join("none.bin").display());
    let out = run(
        bin(),
        &["bench", ep, "--body", &missing, "-n", "1"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("none.bin"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // With --json, the same as one JSON object on stdout.
    let (out, json) = bench(&[ep, "--body", &missing, "-n", "1", "--json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(count(&json, "exit_code"), 1, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("none.bin"),
        "{json}"
    );
    // --body and --size do not go together: a usage error.
    let out = run(
        bin(),
        &["bench", ep, "--body", "x", "--size", "8"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn a_body_over_one_datagram_is_refused_before_any_load() {
    let dir = tempfile::tempdir().unwrap();
    let dgram = format!("unix-dgram:{}", dir.path().join("d.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "udp:127.0.0.1:0",
            "--listen",
            &dgram,
            "--listen",
            "tcp:127.0.0.1:0",
        ],
        &[],
    )
    .unwrap();
    let udp = server.endpoint("udp").unwrap();
    let out = run(
        bin(),
        &["bench", udp, "--size", "2000", "-n", "10"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("one datagram of 1232 bytes"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("2000 of them the body"),
        "{}",
        out.stderr
    );
    // A duration does not start the load either.
    let out = run(
        bin(),
        &["bench", udp, "--size", "2000", "--duration", "5"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let (out, json) = bench(&[udp, "--size", "2000", "-n", "10", "--json"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(count(&json, "exit_code"), 4, "{json}");
    assert_eq!(json["execution"], "not executed", "{json}");
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("1232") && error.contains("2000"), "{json}");
    // Unix datagram sockets take 64 KiB.
    let unix = server.endpoint("unix-dgram").unwrap();
    let out = run(
        bin(),
        &["bench", unix, "--size", "70000", "-n", "10"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("one datagram of 65536 bytes"),
        "{}",
        out.stderr
    );
    // Nothing reached the server.
    let tcp = server.endpoint("tcp").unwrap();
    let stats = run(
        bin(),
        &["call", tcp, "stats", "datagrams.received"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    let stats = parse_stats(&stats.stdout_text());
    assert_eq!(stats.get("datagrams.received"), Some(&0), "{stats:?}");
    // A body that fits: the same size is fine once both sides take larger datagrams.
    let big = ServerProcess::start(
        bin(),
        &["--listen", "udp:127.0.0.1:0", "--max-datagram", "4096"],
        &[],
    )
    .unwrap();
    let args = [
        big.endpoints[0].as_str(),
        "--size",
        "2000",
        "--max-datagram",
        "4096",
    ];
    let (out, json) = bench(&[args.as_slice(), &["-n", "20", "--json"]].concat());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(count(&json, "ok"), 20, "{json}");
}

#[test]
fn an_open_loop_reports_latency_from_the_intended_send_times() {
    let server = ServerProcess::start(bin(), &["--listen", "tcp:127.0.0.1:0"], &[]).unwrap();
    let ep = server.endpoints[0].as_str();
    for window in ["1", "64"] {
        let args = [
            ep,
            "--method",
            "sleep",
            "--body",
            "5",
            "--rate",
            "2000",
            "--duration",
            "2",
            "-w",
            window,
            "--json",
        ];
        let (out, json) = bench(&args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        assert_eq!(json["mode"], "open-loop", "{json}");
        assert_eq!(count(&json, "target_rate"), 2000, "{json}");
        assert_eq!(
            json["latency_from_intended_send"],
            Value::Bool(true),
            "{json}"
        );
        assert!(json["achieved_rate"].as_f64().unwrap() > 0.0, "{json}");
        assert!(count(&json, "calls") > 0, "{json}");
        assert_eq!(count(&json, "errors"), 0, "{json}");
        assert_eq!(count(&json, "timeouts"), 0, "{json}");
        // Every call takes 5 ms, so every latency is at least that, whenever it was sent.
        for field in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            assert!(json[field].as_f64().unwrap() >= 5000.0, "{field}: {json}");
        }
        if window == "1" {
            // One call in flight at a time, 5 ms each: at most 200 a second of the 2000
            // due, so calls fall behind; the ones never sent count as unsent, and the
            // latency from their due times shows the schedule slipping (the last call
            // sent was due at least a second before it went).
            assert!(count(&json, "calls") <= 2 * 200 + 1, "{json}");
            assert!(count(&json, "unsent") > 0, "{json}");
            assert!(json["max_us"].as_f64().unwrap() >= 1_000_000.0, "{json}");
        }
    }
    // Bounded by a count, every call is sent in the end, over several connections.
    let (out, json) = bench(&[
        ep, "--rate", "1000", "-n", "200", "-c", "2", "-w", "4", "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(count(&json, "ok"), 200, "{json}");
    assert_eq!(count(&json, "unsent"), 0, "{json}");
    assert_eq!(json["checked"], Value::Bool(true), "{json}");
    // The text report says so too.
    let out = run(
        bin(),
        &["bench", ep, "--rate", "1000", "-n", "50"],
        b"",
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let text = out.stdout_text();
    assert!(text.contains("intended send time"), "{text}");
    assert!(text.contains("target 1000 calls/s"), "{text}");
    // Without --rate: the closed loop, as before.
    let (_, json) = bench(&[ep, "-n", "10", "--json"]);
    assert_eq!(json["mode"], "closed-loop", "{json}");
    assert_eq!(json["target_rate"], Value::Null, "{json}");
    assert_eq!(
        json["latency_from_intended_send"],
        Value::Bool(false),
        "{json}"
    );
}

#[test]
fn progress_lines_go_to_stderr_only_when_asked() {
    let server = ServerProcess::start(bin(), &["--listen", "tcp:127.0.0.1:0"], &[]).unwrap();
    let ep = server.endpoints[0].as_str();
    // stderr is a pipe here: lines, one a second, with whole numbers.
    let (out, json) = bench(&[
        ep,
        "--duration",
        "2.5",
        "--rate",
        "500",
        "--progress",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(count(&json, "calls") > 0, "{json}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!lines.is_empty(), "no progress: {}", out.stderr);
    for line in &lines {
        let rest = line
            .strip_prefix("wirecall bench: ")
            .unwrap_or_else(|| panic!("{line}"));
        let fields: Vec<&str> = rest.split(", ").collect();
        assert_eq!(fields.len(), 3, "{line}");
        for (field, unit) in fields.iter().zip([" s", " calls", " calls/s"]) {
            let number = field.strip_suffix(unit).unwrap_or_else(|| panic!("{line}"));
            number
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
    // Without --progress: nothing on a stderr that is not a terminal.
    let (out, _) = bench(&[ep, "--duration", "1.5", "--rate", "500", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}
