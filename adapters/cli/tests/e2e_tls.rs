//! End-to-end: `tls:` endpoints with the real binary: calls, pipelined load and large
//! frames over TLS; a certificate from the wrong CA, a plaintext client on a TLS port and a
//! TLS client on a plain port are each refused with a clear error and exit 8, and nothing
//! runs; mutual TLS with and without client certificates and with an allowlist; a SIGTERM
//! with TLS calls in flight answers them. Every certificate is made by the test (rcgen) in
//! its temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use wirecall::{Client, ClientConfig, Endpoint, Error, TlsClientConfig};
use wirecall_tests::tls::{CertFiles, TestCa};
use wirecall_tests::{Output, ServerProcess, Signal, parse_stats, run, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn wirecall(args: &[&str]) -> Output {
    run(bin(), args, b"", TIMEOUT).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A CA, a server certificate for localhost and 127.0.0.1, in `dir`.
struct Pki {
    ca: TestCa,
    server: CertFiles,
}

fn pki(dir: &Path) -> Pki {
    let ca = TestCa::new(dir, "main").unwrap();
    let server = ca
        .issue(
            "server",
            &["localhost", "127.0.0.1"],
            Some("wirecall test server"),
        )
        .unwrap();
    Pki { ca, server }
}

/// `serve --listen tls:127.0.0.1:0 --cert --key` plus `extra`, with `--listen
/// tcp:127.0.0.1:0` too (for reading stats without TLS), frames up to 1 MiB.
fn serve_tls(pki: &Pki, extra: &[&str]) -> ServerProcess {
    let mut args = vec![
        "--max-frame",
        "1048576",
        "--listen",
        "tls:127.0.0.1:0",
        "--listen",
        "tcp:127.0.0.1:0",
        "--cert",
        s(&pki.server.cert),
        "--key",
        s(&pki.server.key),
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(bin(), &args, &[("RUST_LOG", "info")]).unwrap()
}

/// The server's counters, read over its plain TCP endpoint.
fn stats(server: &ServerProcess) -> std::collections::HashMap<String, u64> {
    let out = wirecall(&["call", server.endpoint("tcp").unwrap(), "stats"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    parse_stats(&out.stdout_text())
}

fn counter(server: &ServerProcess, name: &str) -> u64 {
    stats(server).get(name).copied().unwrap_or(0)
}

#[test]
fn a_call_over_tls_and_a_large_frame() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = serve_tls(&pki, &[]);
    let tls = server.endpoint("tls").unwrap();

    let out = wirecall(&[
        "call",
        tls,
        "--ca",
        s(&pki.ca.cert),
        "echo",
        "hello over tls",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"hello over tls");

    // By host name too (SNI localhost; the certificate names it).
    let port = tls.rsplit(':').next().unwrap();
    let by_name = format!("tls:localhost:{port}");
    let out = wirecall(&["call", &by_name, "--ca", s(&pki.ca.cert), "upper", "abc"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"ABC");

    // The library's client: a 64 KiB body each way (many TLS records, more than the
    // session buffers at once), then many calls in flight at once.
    let endpoint: Endpoint = tls.parse().unwrap();
    let connector = TlsClientConfig::new().ca(&pki.ca.cert).build().unwrap();
    let mut config = ClientConfig::default();
    config.connection.max_frame_len = 1 << 20;
    let mut client = Client::connect_tls(&endpoint, config, &connector).unwrap();
    let body: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let answer = client.call("echo", &body, Some(WAIT)).unwrap();
    assert!(answer == body, "the 64 KiB echo came back different");
    let ids: Vec<_> = (0..32)
        .map(|i| {
            let body = vec![u8::try_from(i).unwrap(); 4000 * i];
            (client.submit("echo", &body, Some(WAIT)).unwrap(), body)
        })
        .collect();
    for (id, body) in ids {
        assert_eq!(client.wait(id).unwrap(), body);
    }
    drop(client);
}

#[test]
fn bench_over_tls_makes_pipelined_calls_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = serve_tls(&pki, &[]);
    let tls = server.endpoint("tls").unwrap();
    let out = wirecall(&[
        "bench",
        tls,
        "--ca",
        s(&pki.ca.cert),
        "-c",
        "2",
        "-w",
        "16",
        "-d",
        "1",
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout_text(), out.stderr);
    let report: serde_json::Value = serde_json::from_str(out.stdout_text().trim()).unwrap();
    assert!(report["calls"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["timeouts"].as_u64(), Some(0), "{report}");
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let other = TestCa::new(dir.path(), "other").unwrap();
    let server = serve_tls(&pki, &[]);
    let tls = server.endpoint("tls").unwrap();

    let out = wirecall(&["call", tls, "--ca", s(&other.cert), "echo", "hi"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(
        out.stderr.contains("certificate does not verify") && out.stderr.contains("not executed"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stdout.is_empty());

    // A server whose certificate (from the trusted CA) does not name the host.
    let elsewhere = pki
        .ca
        .issue("elsewhere", &["elsewhere.example"], None)
        .unwrap();
    let misnamed = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "tls:127.0.0.1:0",
            "--cert",
            s(&elsewhere.cert),
            "--key",
            s(&elsewhere.key),
        ],
        &[],
    )
    .unwrap();
    let out = wirecall(&[
        "call",
        misnamed.endpoint("tls").unwrap(),
        "--ca",
        s(&pki.ca.cert),
        "echo",
        "hi",
    ]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(out.stderr.contains("not valid for name"), "{}", out.stderr);

    assert!(wait_until(WAIT, Duration::from_millis(20), || counter(
        &server,
        "tls.handshake_failed"
    ) >= 1));
    assert_eq!(counter(&server, "executions.echo"), 0);
    assert!(
        server.wait_for_log("TLS refused", WAIT),
        "{}",
        server.stderr()
    );
}

#[test]
fn plaintext_and_tls_on_the_wrong_ports_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = serve_tls(&pki, &[]);
    let tls = server.endpoint("tls").unwrap();
    let tcp = server.endpoint("tcp").unwrap();

    // A plaintext wirecall client on the TLS port: not a wirecall hello comes back.
    let plain_on_tls = tls.replacen("tls:", "tcp:", 1);
    let out = wirecall(&["call", &plain_on_tls, "echo", "hi"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(out.stderr.contains("not executed"), "{}", out.stderr);

    // A TLS client on the plain TCP port: the peer does not speak TLS.
    let tls_on_plain = tcp.replacen("tcp:", "tls:", 1);
    let out = wirecall(&["call", &tls_on_plain, "--ca", s(&pki.ca.cert), "echo", "hi"]);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);

    // Half a ClientHello and then silence: the server closes it (the handshake timeout).
    let port: u16 = tls.rsplit(':').next().unwrap().parse().unwrap();
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    let mut sink = Vec::new();
    let ended = raw.read_to_end(&mut sink);
    assert!(
        ended.is_ok(),
        "the server did not close a half handshake: {ended:?}"
    );

    assert!(wait_until(WAIT, Duration::from_millis(20), || counter(
        &server,
        "tls.handshake_failed"
    ) >= 1));
    assert_eq!(counter(&server, "executions.echo"), 0);
}

/// Mutual TLS: `clients` CA signs the allowed and the other client certificates.
#[test]
fn mutual_tls_requires_a_verified_and_allowed_client() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let clients = TestCa::new(dir.path(), "clients").unwrap();
    let alice = clients.issue("alice", &["alice.example"], None).unwrap();
    let mallory = clients.issue("mallory", &[], Some("mallory")).unwrap();
    let stranger_ca = TestCa::new(dir.path(), "stranger").unwrap();
    let stranger = stranger_ca
        .issue("stranger", &["alice.example"], None)
        .unwrap();
    let server = serve_tls(
        &pki,
        &[
            "--client-ca",
            s(&clients.cert),
            "--allow-client",
            "alice.example",
        ],
    );
    let tls = server.endpoint("tls").unwrap();
    let ca = s(&pki.ca.cert);
    let call_as = |files: Option<&CertFiles>| {
        let mut args = vec!["call", tls, "--ca", ca];
        if let Some(f) = files {
            args.extend_from_slice(&["--cert", s(&f.cert), "--key", s(&f.key)]);
        }
        args.extend_from_slice(&["echo", "hi"]);
        wirecall(&args)
    };

    // Without a client certificate.
    let out = call_as(None);
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(out.stderr.contains("not executed"), "{}", out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);

    // With one from another CA.
    let out = call_as(Some(&stranger));
    assert_eq!(out.code, Some(8), "{}", out.stderr);

    // Verified but not on the allowlist.
    let out = call_as(Some(&mallory));
    assert_eq!(out.code, Some(8), "{}", out.stderr);
    assert!(out.stderr.contains("access_denied"), "{}", out.stderr);

    // Allowed.
    let out = call_as(Some(&alice));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"hi");

    // The identity arrives in the function: the builtin whoami reads its CallContext.
    let out = wirecall(&[
        "call",
        tls,
        "--ca",
        ca,
        "--cert",
        s(&alice.cert),
        "--key",
        s(&alice.key),
        "whoami",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let who = out.stdout_text();
    assert!(
        who.starts_with("transport tls\naddress 127.0.0.1:"),
        "{who}"
    );
    assert!(who.contains("\nidentity dns:alice.example\n"), "{who}");

    let st = stats(&server);
    assert_eq!(st["tls.refused_identity"], 1, "{st:?}");
    assert!(st["tls.handshake_failed"] >= 2, "{st:?}");
    assert_eq!(st["executions.echo"], 1, "{st:?}");
    assert!(
        server.wait_for_log("client identity dns:alice.example", WAIT),
        "{}",
        server.stderr()
    );
}

#[test]
fn tls_flags_that_need_each_other_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let cases: Vec<Vec<&str>> = vec![
        vec!["serve", "--listen", "tls:127.0.0.1:0"],
        vec![
            "serve",
            "--listen",
            "tcp:127.0.0.1:0",
            "--cert",
            s(&pki.server.cert),
            "--key",
            s(&pki.server.key),
        ],
        vec![
            "serve",
            "--listen",
            "tls:127.0.0.1:0",
            "--cert",
            s(&pki.server.cert),
        ],
        vec![
            "serve",
            "--listen",
            "tls:127.0.0.1:0",
            "--cert",
            "/nonexistent.pem",
            "--key",
            "/nonexistent.pem",
        ],
        vec!["call", "tcp:127.0.0.1:1", "--ca", s(&pki.ca.cert), "echo"],
        vec![
            "call",
            "tls:127.0.0.1:1",
            "--ca",
            "/nonexistent.pem",
            "echo",
        ],
        vec![
            "call",
            "tls:127.0.0.1:1",
            "--cert",
            s(&pki.server.cert),
            "echo",
        ],
    ];
    for args in cases {
        let out = wirecall(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.trim().is_empty(), "{args:?}");
    }
    // And --help says how.
    let text = wirecall(&["--help"]).stdout_text();
    assert!(text.contains("tls:host:port"), "{text}");
    let text = wirecall(&["serve", "--help"]).stdout_text();
    for part in [
        "--cert",
        "--key",
        "--client-ca",
        "--allow-client",
        "--tls12",
        "tls:0.0.0.0:7443",
    ] {
        assert!(text.contains(part), "{part} in\n{text}");
    }
    for command in ["call", "list", "bench"] {
        let text = wirecall(&[command, "--help"]).stdout_text();
        for part in ["--ca", "--cert", "--key", "tls:localhost:7443"] {
            assert!(text.contains(part), "{command}: {part} in\n{text}");
        }
    }
}

#[test]
fn sigterm_with_tls_calls_in_flight_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut server = serve_tls(&pki, &[]);
    let endpoint: Endpoint = server.endpoint("tls").unwrap().parse().unwrap();
    let connector = TlsClientConfig::new().ca(&pki.ca.cert).build().unwrap();
    let mut client = Client::connect_tls(&endpoint, ClientConfig::default(), &connector).unwrap();
    client.handshake(WAIT).unwrap();
    let sleeps: Vec<_> = (0..4)
        .map(|_| client.submit("sleep", b"300", Some(WAIT)).unwrap())
        .collect();
    // The calls reach the server before the signal (the sleeps last 300 ms, so the
    // signal still finds them running).
    client.service();
    std::thread::sleep(Duration::from_millis(50));
    server.signal(Signal::TERM).unwrap();
    for id in sleeps {
        let answer = client.wait(id);
        assert_eq!(
            answer.as_deref().ok(),
            Some(&b"300"[..]),
            "{answer:?}\n{}",
            server.stderr()
        );
    }
    // The server closes through TLS (close_notify), and then exits 0.
    let status = server.wait_exit(WAIT).expect("the server did not exit");
    assert!(status.success(), "{}", server.stderr());
    let later = client.call("echo", b"late", Some(WAIT));
    assert!(later.is_err());
}

#[test]
fn library_errors_name_tls_failures() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let other = TestCa::new(dir.path(), "other").unwrap();
    let server = serve_tls(&pki, &[]);
    let endpoint: Endpoint = server.endpoint("tls").unwrap().parse().unwrap();
    let connector = TlsClientConfig::new().ca(&other.cert).build().unwrap();
    let err = Client::connect_tls(&endpoint, ClientConfig::default(), &connector).unwrap_err();
    assert!(matches!(err, Error::TlsHandshake { .. }), "{err}");
    assert!(err.to_string().contains(&endpoint.to_string()), "{err}");
}

#[test]
fn a_tls_client_over_the_connection_limit_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // One connection allowed: the TLS one the test holds. (The stats come over TLS too.)
    let server = ServerProcess::start(
        bin(),
        &[
            "--listen",
            "tls:127.0.0.1:0",
            "--cert",
            s(&pki.server.cert),
            "--key",
            s(&pki.server.key),
            "--max-connections",
            "1",
        ],
        &[],
    )
    .unwrap();
    let tls = server.endpoint("tls").unwrap();
    let endpoint: Endpoint = tls.parse().unwrap();
    let connector = TlsClientConfig::new().ca(&pki.ca.cert).build().unwrap();
    let mut held = Client::connect_tls(&endpoint, ClientConfig::default(), &connector).unwrap();
    held.handshake(WAIT).unwrap();

    // The refusal goes through a TLS handshake of its own, so the client reads it: busy,
    // exit 5, not "not TLS".
    let out = wirecall(&["call", tls, "--ca", s(&pki.ca.cert), "echo", "hi"]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(out.stderr.contains("not executed"), "{}", out.stderr);

    let text = held.call("stats", b"connections.", Some(WAIT)).unwrap();
    let st = parse_stats(&String::from_utf8(text).unwrap());
    assert_eq!(st["connections.refused"], 1, "{st:?}");
    assert_eq!(st["connections.open"], 1, "{st:?}");
}
