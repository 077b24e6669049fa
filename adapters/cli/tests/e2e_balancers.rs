//! End-to-end: `wirecall serve` behind real load balancers (HAProxy, nginx's stream
//! module), started by the tests with generated configurations on loopback ports.
//!
//! - `--accept-proxy` takes the PROXY protocol header HAProxy sends (`send-proxy` is v1,
//!   `send-proxy-v2` is v2): the server's functions, log lines and counters see the
//!   client HAProxy names, not HAProxy's own connection (which the tests make come from
//!   another address, 127.0.0.3, with HAProxy's `source`).
//! - A connection without a header on such a listener is closed and counted; a header
//!   sent to a plain listener is not trusted (it is not wirecall: a protocol error).
//!
//! Without HAProxy or nginx installed the tests say so loudly and pass, unless
//! `WIRECALL_REQUIRE_BALANCERS=1` (set by `.ci/run`, which installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use wirecall::{Client, ClientConfig, Endpoint};
use wirecall_tests::balancers::{Balancer, Kind, free_port};
use wirecall_tests::{ServerProcess, parse_stats};

const WAIT: Duration = Duration::from_secs(10);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn connect(endpoint: &str) -> Result<Client, wirecall::Error> {
    let endpoint: Endpoint = endpoint.parse().unwrap();
    Client::connect(&endpoint, ClientConfig::default())
}

/// `whoami`'s answer as a map of its `name value` lines.
fn whoami(endpoint: &str) -> HashMap<String, String> {
    let text = connect(endpoint)
        .unwrap()
        .call("whoami", b"", Some(WAIT))
        .unwrap();
    wirecall_tests::parse_fields(&String::from_utf8(text).unwrap())
}

fn stats(endpoint: &str) -> HashMap<String, u64> {
    let text = connect(endpoint)
        .unwrap()
        .call("stats", b"", Some(WAIT))
        .unwrap();
    parse_stats(&String::from_utf8(text).unwrap())
}

/// The port of a `tcp:host:port` endpoint.
fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

/// An HAProxy configuration: frontend `fe_v1` on `v1` and `fe_v2` on `v2`, each to the
/// server at `server`, connecting from 127.0.0.3 and sending the header of its version;
/// and one on `ready` that takes connections and closes them, to see that it is up
/// without a connection to the server.
fn haproxy_config(ready: u16, v1: u16, v2: u16, server: u16) -> String {
    format!(
        "global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend ready
    bind 127.0.0.1:{ready}
    tcp-request connection reject

frontend fe_v1
    bind 127.0.0.1:{v1}
    default_backend be_v1

frontend fe_v2
    bind 127.0.0.1:{v2}
    default_backend be_v2

backend be_v1
    server s1 127.0.0.1:{server} source 127.0.0.3 send-proxy

backend be_v2
    server s1 127.0.0.1:{server} source 127.0.0.3 send-proxy-v2
"
    )
}

#[test]
fn haproxy_headers_v1_and_v2_name_the_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("unix:{}", dir.path().join("plain.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--accept-proxy", "tcp:127.0.0.1:0", "--listen", &plain],
        &[("RUST_LOG", "wirecall=debug")],
    )
    .unwrap();
    let proxied = server.endpoint("tcp").unwrap().to_owned();
    let [ready, v1, v2] = [(); 3].map(|()| free_port().unwrap());
    let config = haproxy_config(ready, v1, v2, port_of(&proxied));
    let ready: SocketAddr = format!("127.0.0.1:{ready}").parse().unwrap();
    let _haproxy = match Balancer::start(Kind::Haproxy, dir.path(), &config, ready).unwrap() {
        Ok(b) => b,
        Err(_) => return,
    };

    for (version, port) in [(1, v1), (2, v2)] {
        let who = whoami(&format!("tcp:127.0.0.1:{port}"));
        let address = &who["address"];
        // The client's address (127.0.0.1, a port of its own), not HAProxy's 127.0.0.3.
        assert!(address.starts_with("127.0.0.1:"), "v{version}: {who:?}");
        assert_eq!(who["transport"], "tcp", "{who:?}");
        let line = format!("client {address}): PROXY v{version} header");
        assert!(
            server.wait_for_log(&line, WAIT),
            "no {line:?} in the log:\n{}",
            server.stderr()
        );
    }
    let counters = stats(&plain);
    assert_eq!(counters["connections.proxied"], 2, "{counters:?}");
    assert_eq!(counters["connections.proxy_refused"], 0, "{counters:?}");
    // HAProxy's own address only ever shows as the connection's socket peer.
    assert!(server.stderr().contains("tcp peer 127.0.0.3:"));
}

#[test]
fn tls_passes_through_haproxy_with_the_header_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = wirecall_tests::tls::TestCa::new(dir.path(), "fleet").unwrap();
    let cert = ca
        .issue("server", &["127.0.0.1", "localhost"], None)
        .unwrap();
    let plain = format!("unix:{}", dir.path().join("plain.sock").display());
    let (cert_file, key_file) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let server = ServerProcess::start(
        bin(),
        &[
            "--accept-proxy",
            "tls:127.0.0.1:0",
            "--listen",
            &plain,
            "--cert",
            cert_file,
            "--key",
            key_file,
        ],
        &[("RUST_LOG", "wirecall=debug")],
    )
    .unwrap();
    let proxied = server.endpoint("tls").unwrap();
    let [ready, v1, v2] = [(); 3].map(|()| free_port().unwrap());
    // HAProxy in TCP mode: the TLS session is the client's and the server's, HAProxy
    // only puts its header in front of it.
    let config = haproxy_config(ready, v1, v2, port_of(proxied));
    let ready: SocketAddr = format!("127.0.0.1:{ready}").parse().unwrap();
    let _haproxy = match Balancer::start(Kind::Haproxy, dir.path(), &config, ready).unwrap() {
        Ok(b) => b,
        Err(_) => return,
    };
    let connector = wirecall::TlsClientConfig::new()
        .ca(&ca.cert)
        .build()
        .unwrap();
    let endpoint: Endpoint = format!("tls:127.0.0.1:{v2}").parse().unwrap();
    let mut client = Client::connect_tls(&endpoint, ClientConfig::default(), &connector).unwrap();
    let text = String::from_utf8(client.call("whoami", b"", Some(WAIT)).unwrap()).unwrap();
    assert!(text.contains("transport tls\n"), "{text}");
    assert!(text.contains("address 127.0.0.1:"), "{text}");
    assert_eq!(stats(&plain)["connections.proxied"], 1);
}

#[test]
fn an_old_connection_is_told_to_go_away_after_its_calls_are_answered() {
    let server = ServerProcess::start(
        bin(),
        &["--listen", "tcp:127.0.0.1:0", "--max-connection-age", "1"],
        &[("RUST_LOG", "wirecall=debug")],
    )
    .unwrap();
    let endpoint = server.endpoint("tcp").unwrap();
    let mut client = connect(endpoint).unwrap();
    // In flight across the go-away, which comes at 0.9 to 1 s: still answered.
    let long = client.submit("sleep", b"1500", Some(WAIT)).unwrap();
    assert_eq!(client.wait(long).unwrap(), b"1500");
    // Sent after the go-away: not sent, so not executed; the connection ended gracefully.
    let after = client.call("echo", b"late", Some(WAIT)).unwrap_err();
    assert_eq!(
        after.execution(),
        wirecall::Execution::NotExecuted,
        "{after}"
    );
    assert_eq!(
        client.closed(),
        Some(wirecall::core::client::CloseReason::Graceful)
    );
    assert!(server.wait_for_log("older than max_connection_age, going away", WAIT));
    // A new connection is served as before.
    let mut again = connect(endpoint).unwrap();
    assert_eq!(again.call("echo", b"x", Some(WAIT)).unwrap(), b"x");
    let counters = stats(endpoint);
    assert!(counters["connections.aged_out"] >= 1, "{counters:?}");
    assert_eq!(counters["executions.echo"], 1, "{counters:?}");
}

#[test]
fn a_proxy_listener_closes_connections_without_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("unix:{}", dir.path().join("plain.sock").display());
    let server = ServerProcess::start(
        bin(),
        &["--accept-proxy", "tcp:127.0.0.1:0", "--listen", &plain],
        &[],
    )
    .unwrap();
    let proxied = server.endpoint("tcp").unwrap();

    // A wirecall client straight to it: its hello is not a PROXY header.
    let direct = connect(proxied).and_then(|mut c| Ok(c.call("echo", b"x", Some(WAIT))?));
    assert!(direct.is_err(), "a direct client got in: {direct:?}");
    // Something that starts like a header and stops: closed at the handshake timeout
    // (10 s), not kept forever.
    let addr: SocketAddr = proxied.strip_prefix("tcp:").unwrap().parse().unwrap();
    let mut dribble = TcpStream::connect(addr).unwrap();
    dribble.write_all(b"PROXY TCP4 192.0.2.").unwrap();
    dribble
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    // Closed without a word (nothing of wirecall's is said before the header): an end of
    // stream, or a reset as the bytes it sent were never read.
    match dribble.read_to_end(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{other:?}: {rest:?}"),
    }

    let counters = stats(&plain);
    assert_eq!(counters["connections.proxy_refused"], 2, "{counters:?}");
    assert_eq!(counters["connections.proxied"], 0, "{counters:?}");
    assert!(
        server.wait_for_log("closed on a PROXY protocol listener", WAIT),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_header_sent_to_a_plain_listener_is_not_trusted() {
    let server = ServerProcess::start(
        bin(),
        &["--listen", "tcp:127.0.0.1:0"],
        &[("RUST_LOG", "wirecall=debug")],
    )
    .unwrap();
    let endpoint = &server.endpoints[0];
    let addr: SocketAddr = endpoint.strip_prefix("tcp:").unwrap().parse().unwrap();
    let mut forged = TcpStream::connect(addr).unwrap();
    forged
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 1111 2222\r\n")
        .unwrap();
    forged.set_read_timeout(Some(WAIT)).unwrap();
    // The server's hello, then its close as the bytes are not wirecall; then the end.
    let mut answer = Vec::new();
    forged.read_to_end(&mut answer).unwrap();

    let counters = stats(endpoint);
    assert_eq!(counters["closed.not_wirecall"], 1, "{counters:?}");
    assert_eq!(counters["connections.proxied"], 0, "{counters:?}");
    // A real client there is still itself.
    let who = whoami(endpoint);
    assert!(who["address"].starts_with("127.0.0.1:"), "{who:?}");
    assert!(
        !server.stderr().contains("203.0.113.9"),
        "{}",
        server.stderr()
    );
}

/// The first fenced block of language `lang` after `marker` in docs/DEPLOYING.md: a
/// configuration the page gives and these tests run.
fn deploying_block(marker: &str, lang: &str) -> &'static str {
    let doc = include_str!("../../../docs/DEPLOYING.md");
    doc.split_once(marker)
        .and_then(|(_, rest)| rest.split_once(&format!("```{lang}\n")))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("DEPLOYING.md has the tested {lang} block"))
}

/// The HAProxy configuration of docs/DEPLOYING.md ("HAProxy in front of three servers"),
/// with its frontend on `front`, its servers at `servers`, and a stats socket at `stats`.
fn deploying_haproxy_config(front: u16, servers: &[String; 3], stats: &Path) -> String {
    let block = deploying_block("<!-- e2e_balancers.rs runs the block below", "haproxy");
    let mut config = block
        .replace("bind :7000", &format!("bind 127.0.0.1:{front}"))
        .replace("10.0.0.5:7000", &servers[0])
        .replace("10.0.0.6:7000", &servers[1])
        .replace("10.0.0.7:7000", &servers[2]);
    assert!(config.starts_with("global\n"), "{config}");
    config.insert_str(
        "global\n".len(),
        &format!("    stats socket {}\n", stats.display()),
    );
    config
}

/// A fleet of three `wirecall serve --accept-proxy ... --drain-delay N` behind HAProxy
/// with the configuration of docs/DEPLOYING.md, each with a Unix socket of its own for
/// the test to read its counters.
struct Fleet {
    servers: Vec<ServerProcess>,
    unix: Vec<String>,
    haproxy: Balancer,
    front: String,
    stats: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// The fleet, each server with `--drain-delay drain` and `extra`.
    fn start(drain: &str, extra: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = Vec::new();
        let mut unix = Vec::new();
        let mut addresses = Vec::new();
        for i in 0..3 {
            let sock = format!("unix:{}", dir.path().join(format!("s{i}.sock")).display());
            let mut args = vec![
                "--accept-proxy",
                "tcp:127.0.0.1:0",
                "--listen",
                &sock,
                "--drain-delay",
                drain,
            ];
            args.extend_from_slice(extra);
            let server = ServerProcess::start(bin(), &args, &[("RUST_LOG", "info")]).unwrap();
            addresses.push(
                server
                    .endpoint("tcp")
                    .unwrap()
                    .strip_prefix("tcp:")
                    .unwrap()
                    .to_owned(),
            );
            unix.push(sock);
            servers.push(server);
        }
        let front = free_port().unwrap();
        let stats = dir.path().join("haproxy-stats.sock");
        let addresses: [String; 3] = addresses.try_into().unwrap();
        let config = deploying_haproxy_config(front, &addresses, &stats);
        let ready: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
        let haproxy = Balancer::start(Kind::Haproxy, dir.path(), &config, ready)
            .unwrap()
            .ok()?;
        let fleet = Self {
            servers,
            unix,
            haproxy,
            front: format!("tcp:127.0.0.1:{front}"),
            stats,
            _dir: dir,
        };
        assert!(
            fleet.wait_status(|s| s.iter().all(|(_, st)| st == "UP"), WAIT),
            "every server up: {:?}\n{}",
            fleet.status(),
            fleet.haproxy.output()
        );
        Some(fleet)
    }

    fn status(&self) -> Vec<(String, String)> {
        wirecall_tests::balancers::haproxy_status(&self.stats, "wirecall_servers")
            .unwrap_or_default()
    }

    fn wait_status(&self, want: impl Fn(&[(String, String)]) -> bool, timeout: Duration) -> bool {
        wirecall_tests::wait_until(timeout, Duration::from_millis(50), || {
            let status = self.status();
            status.len() == 3 && want(&status)
        })
    }

    /// `executions.echo` of each server.
    fn echoes(&self) -> Vec<u64> {
        self.unix
            .iter()
            .map(|u| stats(u).get("executions.echo").copied().unwrap_or(0))
            .collect()
    }
}

#[test]
fn haproxy_health_checks_take_a_draining_server_out_before_its_go_away() {
    // A drain delay well past HAProxy's two checks a second apart, so the checks below
    // run within it even on a loaded machine.
    let Some(mut fleet) = Fleet::start("8", &[]) else {
        return;
    };
    // A long-lived connection through HAProxy; which server has it?
    let mut held = connect(&fleet.front).unwrap();
    assert_eq!(held.call("echo", b"0", Some(WAIT)).unwrap(), b"0");
    let before = fleet.echoes();
    let x = before.iter().position(|n| *n == 1).unwrap();
    let name = format!("s{}", x + 1);

    // SIGTERM: the server's health fails at once, HAProxy takes it out within two checks.
    fleet.servers[x]
        .signal(wirecall_tests::Signal::TERM)
        .unwrap();
    let x_down =
        |s: &[(String, String)]| s.iter().any(|(n, st)| *n == name && st.starts_with("DOWN"));
    assert!(
        fleet.wait_status(x_down, Duration::from_secs(4)),
        "{name} down: {:?}",
        fleet.status()
    );
    // Still within its drain delay: it serves the connection it has, and says it drains.
    assert_eq!(held.call("echo", b"1", Some(WAIT)).unwrap(), b"1");
    let x_stats = stats(&fleet.unix[x]);
    assert_eq!(x_stats["server.draining"], 1, "{x_stats:?}");
    let health = connect(&fleet.unix[x])
        .unwrap()
        .call("health", b"", Some(WAIT))
        .unwrap_err();
    assert!(
        matches!(
            health.kind(),
            wirecall::CallErrorKind::Remote { code: 503, message } if message == "draining"
        ),
        "{health}"
    );
    // New connections go to the other two.
    for i in 0..12u8 {
        let mut c = connect(&fleet.front).unwrap();
        assert_eq!(c.call("echo", &[i], Some(WAIT)).unwrap(), [i]);
    }
    let during = fleet.echoes();
    assert_eq!(during[x], 2, "only the held connection's calls: {during:?}");
    assert_eq!(during.iter().sum::<u64>(), 14, "{during:?}");

    // The delay over, the graceful shutdown: the held connection is told to go away, a
    // call after it is not executed, and the server exits 0.
    let status = fleet.servers[x].wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let late = held.call("echo", b"2", Some(WAIT)).unwrap_err();
    assert_eq!(late.execution(), wirecall::Execution::NotExecuted, "{late}");
    // Reconnecting through HAProxy reaches the others.
    let mut again = connect(&fleet.front).unwrap();
    assert_eq!(again.call("echo", b"3", Some(WAIT)).unwrap(), b"3");
}

/// Pipelined calls (window 8) from a [`wirecall::FleetClient`] of `endpoints` for about
/// `run` (at most 200,000 calls), each echoing its own number: every call must be answered
/// with its own body. Returns the calls made and the client's counters.
fn fleet_calls(
    endpoints: Vec<Endpoint>,
    run: Duration,
) -> (u64, wirecall::client::fleet::FleetStats) {
    let mut fleet =
        wirecall::FleetClient::new(endpoints, wirecall::FleetConfig::default()).unwrap();
    let start = std::time::Instant::now();
    let mut bodies = HashMap::new();
    let mut made = 0u64;
    let mut retried = 0u64;
    let more = |made: u64| made < 200_000 && start.elapsed() < run;
    while more(made) || !bodies.is_empty() {
        while bodies.len() < 8 && more(made) {
            let body = made.to_string().into_bytes();
            let id = fleet.submit("echo", &body, Some(WAIT));
            bodies.insert(id, body);
            made += 1;
        }
        let Some((id, outcome)) = fleet.wait_any() else {
            break;
        };
        let answer = outcome.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(Some(&answer.body), bodies.get(&id), "{id}");
        if answer.attempts > 1 {
            retried += 1;
        }
        bodies.remove(&id);
    }
    assert!(
        bodies.is_empty(),
        "{} calls without an outcome",
        bodies.len()
    );
    assert!(fleet.stats().retries >= retried);
    eprintln!(
        "{made} calls, {retried} answered after a retry; {:?}",
        fleet.stats()
    );
    (made, fleet.stats())
}

#[test]
fn a_fleet_client_follows_go_aways_over_servers_without_a_call_lost_or_run_twice() {
    // Direct to three servers that send every connection away after about a second.
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let server = ServerProcess::start(
            bin(),
            &["--listen", "tcp:127.0.0.1:0", "--max-connection-age", "1"],
            &[],
        )
        .unwrap();
        endpoints.push(server.endpoint("tcp").unwrap().parse().unwrap());
        servers.push(server);
    }
    let _ = dir;
    let (made, fleet) = fleet_calls(endpoints, Duration::from_secs(3));
    let counters: Vec<_> = servers
        .iter()
        .map(|s| stats(s.endpoint("tcp").unwrap()))
        .collect();
    // Each call ran exactly once, across the servers.
    let executed: u64 = counters.iter().map(|c| c["executions.echo"]).sum();
    assert_eq!(executed, made, "{counters:?}");
    let aged: u64 = counters.iter().map(|c| c["connections.aged_out"]).sum();
    assert!(aged >= 2, "{counters:?}");
    assert!(fleet.connections >= 3, "{fleet:?}");
}

#[test]
fn a_fleet_client_behind_haproxy_spreads_as_connections_age() {
    let Some(fleet) = Fleet::start("5", &["--max-connection-age", "1"]) else {
        return;
    };
    let (made, client) = fleet_calls(vec![fleet.front.parse().unwrap()], Duration::from_secs(3));
    let echoes = fleet.echoes();
    assert_eq!(echoes.iter().sum::<u64>(), made, "{echoes:?}");
    // Reconnected through HAProxy, which spread the connections over the servers.
    assert!(client.connections >= 3, "{client:?}");
    assert!(echoes.iter().filter(|n| **n > 0).count() >= 2, "{echoes:?}");
}

#[test]
fn a_fleet_datagram_call_refused_by_a_server_shutting_down_runs_on_another() {
    let start = || ServerProcess::start(bin(), &["--listen", "udp:127.0.0.1:0"], &[]).unwrap();
    let (a, b) = (start(), start());
    let (ua, ub) = (a.endpoint("udp").unwrap(), b.endpoint("udp").unwrap());
    // A call that holds A in its graceful shutdown, which rejects new datagram calls as
    // shutting down (not executed).
    let mut holder = connect(ua).unwrap();
    let held = holder.submit("sleep", b"4000", Some(WAIT)).unwrap();
    holder.service();
    // Running on A (taken) before A is told to stop.
    let running = wirecall_tests::wait_until(WAIT, Duration::from_millis(20), || {
        let text = connect(ua)
            .unwrap()
            .call("stats", b"datagrams.in_progress", Some(WAIT))
            .unwrap();
        parse_stats(&String::from_utf8(text).unwrap())["datagrams.in_progress"] == 1
    });
    assert!(running);
    a.signal(wirecall_tests::Signal::TERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let endpoints: Vec<Endpoint> = vec![ua.parse().unwrap(), ub.parse().unwrap()];
    let (mut calls, mut retried) = (0u64, 0u64);
    // The first endpoint is picked at random: new clients until one has started at A.
    for i in 0..40u8 {
        let mut fleet =
            wirecall::FleetClient::new(endpoints.clone(), wirecall::FleetConfig::default())
                .unwrap();
        let answer = fleet.call("echo", &[i], Some(WAIT)).unwrap();
        assert_eq!(answer.body, [i]);
        calls += 1;
        if answer.attempts == 2 {
            retried += 1;
            break;
        }
        assert_eq!(answer.attempts, 1);
    }
    assert_eq!(retried, 1, "no client started at the server shutting down");
    // Every call ran on B, once (a part of stats: the whole does not fit a datagram).
    let text = connect(ub)
        .unwrap()
        .call("stats", b"executions.echo", Some(WAIT))
        .unwrap();
    assert_eq!(
        parse_stats(&String::from_utf8(text).unwrap())["executions.echo"],
        calls
    );
    assert_eq!(holder.wait(held).unwrap(), b"4000");
}

/// The nginx configuration of docs/DEPLOYING.md ("nginx in front of three servers"), with
/// its listeners on `udp` and `tcp`, its servers at `servers` (UDP, TCP), and its pid file
/// in `dir`.
fn deploying_nginx_config(udp: u16, tcp: u16, servers: &[(String, String)], dir: &Path) -> String {
    let block = deploying_block("<!-- e2e_balancers.rs runs the nginx block below", "nginx");
    let mut config = block
        .replace("listen 7000 udp", &format!("listen 127.0.0.1:{udp} udp"))
        .replace("listen 7001;", &format!("listen 127.0.0.1:{tcp};"));
    for (i, (u, t)) in servers.iter().enumerate() {
        let host = format!("10.0.0.{}", 5 + i);
        config = config
            .replace(&format!("{host}:7000"), u)
            .replace(&format!("{host}:7001"), t);
    }
    let module = wirecall_tests::balancers::nginx_stream_module();
    if module.is_empty() {
        // Built in rather than a module.
        config = config.replace(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
            "",
        );
    }
    format!("pid {}/nginx.pid;\n{config}", dir.display())
}

/// Three servers (UDP, and TCP with `--accept-proxy`, and a Unix socket for the test's own
/// calls) behind nginx with the configuration of docs/DEPLOYING.md.
struct NginxFleet {
    servers: Vec<(ServerProcess, String)>,
    nginx: Balancer,
    udp: u16,
    tcp: u16,
    _dir: tempfile::TempDir,
}

impl NginxFleet {
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = Vec::new();
        let mut addresses = Vec::new();
        for i in 0..3 {
            let sock = format!("unix:{}", dir.path().join(format!("s{i}.sock")).display());
            let server = ServerProcess::start(
                bin(),
                &[
                    "--listen",
                    "udp:127.0.0.1:0",
                    "--accept-proxy",
                    "tcp:127.0.0.1:0",
                    "--listen",
                    &sock,
                    "--stats-on-exit",
                ],
                &[],
            )
            .unwrap();
            let strip = |t: &str| {
                let e = server.endpoint(t).unwrap();
                e.split_once(':').unwrap().1.to_owned()
            };
            addresses.push((strip("udp"), strip("tcp")));
            servers.push((server, sock));
        }
        let (udp, tcp) = (free_port().unwrap(), free_port().unwrap());
        let config = deploying_nginx_config(udp, tcp, &addresses, dir.path());
        let ready: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
        let nginx = Balancer::start(Kind::Nginx, dir.path(), &config, ready)
            .unwrap()
            .ok()?;
        Some(Self {
            servers,
            nginx,
            udp,
            tcp,
            _dir: dir,
        })
    }

    /// `executions.echo` of each server still running.
    fn executions(&self) -> Vec<Option<u64>> {
        self.servers
            .iter()
            .map(|(_, sock)| {
                let endpoint: Endpoint = sock.parse().unwrap();
                let mut c = Client::connect(&endpoint, ClientConfig::default()).ok()?;
                let text = c.call("stats", b"executions.echo", Some(WAIT)).ok()?;
                parse_stats(&String::from_utf8(text).ok()?)
                    .get("executions.echo")
                    .copied()
            })
            .collect()
    }
}

/// `clients` runs of `many_calls` at once against `endpoint` (`calls` each, window 16,
/// 10 s per call), each its own UDP flow; their reports.
fn many_clients(endpoint: &str, clients: usize, calls: usize) -> Vec<wirecall_tests::Output> {
    let calls_bin = wirecall_tests::lossy::helper(bin(), "many_calls").unwrap();
    let runs: Vec<_> = (0..clients)
        .map(|_| {
            let (calls_bin, endpoint) = (calls_bin.clone(), endpoint.to_owned());
            std::thread::spawn(move || {
                let calls = calls.to_string();
                let args = [
                    endpoint.as_str(),
                    "--calls",
                    &calls,
                    "--window",
                    "16",
                    "--timeout-ms",
                    "10000",
                ];
                wirecall_tests::run(&calls_bin, &args, b"", Duration::from_secs(120)).unwrap()
            })
        })
        .collect();
    runs.into_iter().map(|r| r.join().unwrap()).collect()
}

#[test]
fn datagrams_through_nginx_and_a_lossy_path_run_each_call_at_most_once() {
    let relay_bin = wirecall_tests::lossy::helper(bin(), "lossy_relay").unwrap();
    let Some(fleet) = NginxFleet::start() else {
        return;
    };
    let (udp, tcp) = (fleet.udp, fleet.tcp);

    // TCP through nginx: the PROXY v1 header names the client.
    let who = whoami(&format!("tcp:127.0.0.1:{tcp}"));
    assert!(who["address"].starts_with("127.0.0.1:"), "{who:?}");

    // Clients, each its own flow through the lossy relay, then nginx.
    let seed = std::env::var("WIRECALL_RELAY_SEED").unwrap_or_else(|_| "20261207".into());
    let faults = wirecall_tests::lossy::Faults {
        loss: 20,
        dup: 10,
        delay_ms: 4,
    };
    let relay = wirecall_tests::lossy::Relay::start(
        std::process::Command::new(&relay_bin),
        &format!("127.0.0.1:{udp}"),
        &seed,
        faults,
    )
    .unwrap();
    let through = format!("udp:{}", relay.addr);
    // Eight flows: nginx hashes each flow's (ephemeral) port onto one of three servers, so
    // all flows land on one server in about one run of 2,000 (with four: one of 27). The
    // same 600 calls in all.
    const CLIENTS: usize = 8;
    const CALLS: usize = 75;
    let mut answered = 0;
    let mut retransmissions = 0;
    for out in many_clients(&through, CLIENTS, CALLS) {
        let summary = wirecall_tests::lossy::checked_summary(&out, CALLS);
        answered += summary["answered"];
        retransmissions += summary["retransmissions"];
    }
    let relayed = relay.finish();
    let per_server: Vec<u64> = fleet
        .servers
        .iter()
        .map(|(_, sock)| {
            let s = stats(sock);
            assert_eq!(s["calls.echo"], s["executions.echo"], "{s:?}");
            s["executions.echo"]
        })
        .collect();
    let executed: u64 = per_server.iter().sum();
    println!(
        "through the lossy relay (seed {seed}) and nginx: {CLIENTS} x {CALLS} calls, \
         {answered} answered, {retransmissions} retransmissions; relay dropped {}+{}, \
         duplicated {}+{}; executions per server {per_server:?}",
        relayed["to_server.dropped"],
        relayed["to_client.dropped"],
        relayed["to_server.duplicated"],
        relayed["to_client.duplicated"],
    );
    // At most once per call, at least once per answered call.
    assert!(executed >= answered, "{per_server:?}");
    assert!(executed <= (CLIENTS * CALLS) as u64, "{per_server:?}");
    assert!(answered >= (CLIENTS * CALLS) as u64 * 9 / 10);
    assert!(retransmissions > 0 && relayed["to_client.duplicated"] > 0);
    // The flows were spread over more than one server.
    assert!(
        per_server.iter().filter(|n| **n > 0).count() >= 2,
        "{per_server:?}"
    );
    drop(fleet.nginx);
}

#[test]
fn when_an_upstream_of_nginx_dies_its_flows_go_to_the_next_server() {
    let Some(fleet) = NginxFleet::start() else {
        return;
    };
    let front = format!("udp:127.0.0.1:{}", fleet.udp);
    const CLIENTS: usize = 6;
    const CALLS: usize = 3000;
    let front_for_clients = front.clone();
    let clients = std::thread::spawn(move || many_clients(&front_for_clients, CLIENTS, CALLS));
    // Kill (SIGKILL) a server that has flows, once calls are under way.
    let mut victim = None;
    wirecall_tests::wait_until(WAIT, Duration::from_millis(20), || {
        victim = fleet
            .executions()
            .iter()
            .enumerate()
            .find_map(|(i, n)| n.filter(|n| *n > 200).map(|n| (i, n)));
        victim.is_some()
    });
    let (victim, seen) = victim.expect("a server with calls");
    fleet.servers[victim]
        .0
        .signal(wirecall_tests::Signal::KILL)
        .unwrap();
    let outs = clients.join().unwrap();
    let (mut answered, mut timeouts, mut failed) = (0, 0, 0);
    for out in &outs {
        let summary = wirecall_tests::lossy::checked_summary(out, CALLS);
        answered += summary["answered"];
        timeouts += summary["timeouts"];
        failed += summary["failed"];
    }
    let survivors: u64 = fleet.executions().iter().flatten().sum();
    let total = (CLIENTS * CALLS) as u64;
    println!(
        "nginx, server {victim} killed (SIGKILL) after at least {seen} executions: \
         {CLIENTS} x {CALLS} calls, {answered} answered, {timeouts} timed out, {failed} \
         failed; the two others executed {survivors}"
    );
    // Every call ended once (checked above), and the dead server's flows moved on: its
    // clients' retransmissions started new sessions that nginx sent to the others.
    assert_eq!(answered, total, "{timeouts} timed out, {failed} failed");
    assert!(survivors <= total);
    // Calls run twice are at most the ones in flight on the dead server when it died
    // (each client has 16 in flight): what it ran before, plus what the others ran.
    assert!(
        survivors + seen <= total + (CLIENTS as u64) * 16,
        "{survivors} + {seen}"
    );
}

/// Outcomes of the fault run's clients, added up.
#[derive(Debug, Default)]
struct Tally {
    submitted: std::sync::atomic::AtomicU64,
    ok: std::sync::atomic::AtomicU64,
    ok_after_retry: std::sync::atomic::AtomicU64,
    not_executed: std::sync::atomic::AtomicU64,
    maybe: std::sync::atomic::AtomicU64,
    executed_error: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
    connections: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One client of the fault run: a FleetClient through HAProxy, 8 calls in flight, each
/// echoing its own body, until `stop` (at most 1,000,000 calls); every outcome tallied.
fn fault_client(front: Endpoint, n: usize, stop: &std::sync::atomic::AtomicBool, tally: &Tally) {
    use wirecall::Execution;
    let mut fleet =
        wirecall::FleetClient::new(vec![front], wirecall::FleetConfig::default()).unwrap();
    let mut bodies = HashMap::new();
    let mut made = 0u64;
    let more = |made: u64| made < 1_000_000 && !stop.load(std::sync::atomic::Ordering::SeqCst);
    while more(made) || !bodies.is_empty() {
        while bodies.len() < 8 && more(made) {
            let body = format!("client {n} call {made}").into_bytes();
            bodies.insert(fleet.submit("echo", &body, Some(WAIT)), body);
            made += 1;
            Tally::add(&tally.submitted, 1);
        }
        let Some((id, outcome)) = fleet.wait_any() else {
            break;
        };
        let body = bodies
            .remove(&id)
            .expect("an outcome for a call made, once");
        match outcome {
            Ok(answer) => {
                assert_eq!(answer.body, body);
                Tally::add(&tally.ok, 1);
                if answer.attempts > 1 {
                    Tally::add(&tally.ok_after_retry, 1);
                }
            }
            Err(e) => match e.execution() {
                Execution::NotExecuted => Tally::add(&tally.not_executed, 1),
                Execution::Executed => Tally::add(&tally.executed_error, 1),
                _ => Tally::add(&tally.maybe, 1),
            },
        }
    }
    assert!(bodies.is_empty());
    Tally::add(&tally.retries, fleet.stats().retries);
    Tally::add(&tally.connections, fleet.stats().connections);
}

#[test]
fn a_fleet_behind_haproxy_through_a_sigterm_and_a_sigkill() {
    let Some(mut fleet) = Fleet::start("5", &["--stats-on-exit"]) else {
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tally = std::sync::Arc::new(Tally::default());
    const CLIENTS: usize = 8;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (stop, tally) = (stop.clone(), tally.clone());
            let front: Endpoint = fleet.front.parse().unwrap();
            std::thread::spawn(move || fault_client(front, n, &stop, &tally))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // 1. SIGTERM server 0: out of HAProxy's rotation during its drain delay, then its
    // go-aways; its clients move on without a maybe-executed failure.
    fleet.servers[0]
        .signal(wirecall_tests::Signal::TERM)
        .unwrap();
    let status = fleet.servers[0].wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let drained = parse_stats(&fleet.servers[0].rest_of_stdout(WAIT));
    let moved = (
        Tally::get(&tally.maybe),
        Tally::get(&tally.executed_error),
        Tally::get(&tally.not_executed),
    );
    assert_eq!(
        moved,
        (0, 0, 0),
        "failures while server 0 drained: {tally:?}"
    );

    // 2. SIGKILL server 1, its counters read just before.
    let seen = stats(&fleet.unix[1])["executions.echo"];
    fleet.servers[1]
        .signal(wirecall_tests::Signal::KILL)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let alive = stats(&fleet.unix[2])["executions.echo"];

    let t = |c: &std::sync::atomic::AtomicU64| Tally::get(c);
    let (submitted, ok, maybe) = (t(&tally.submitted), t(&tally.ok), t(&tally.maybe));
    let (not_executed, executed_error) = (t(&tally.not_executed), t(&tally.executed_error));
    let drained_executions = drained["executions.echo"];
    println!(
        "fault run through HAProxy: {CLIENTS} clients, {submitted} calls: {ok} answered \
         ({} after a retry), {not_executed} not executed, {maybe} maybe executed, \
         {executed_error} executed with an error; {} retries, {} connections; executions: SIGTERMed \
         server {drained_executions} (final), SIGKILLed server at least {seen}, third \
         server {alive}",
        t(&tally.ok_after_retry),
        t(&tally.retries),
        t(&tally.connections),
    );
    // Every call ended in one outcome.
    assert_eq!(ok + not_executed + maybe + executed_error, submitted);
    // Only the calls in flight on the killed server (8 per client at most) may be lost.
    assert!(maybe <= (CLIENTS as u64) * 8, "{maybe}");
    // No call ran twice: the executions seen are at most the calls that may have run.
    assert!(
        drained_executions + seen + alive <= ok + maybe + executed_error,
        "{drained_executions} + {seen} + {alive}"
    );
    // The go-aways and the kill made clients connect again (calls sent again after a
    // go-away are counted in `retries`, but there may be none: a client that has read the
    // go-away before sending opens its next connection first).
    assert!(t(&tally.connections) > CLIENTS as u64, "{tally:?}");
    assert_eq!(drained["server.draining"], 1);
}

/// `GET path` from the HTTP endpoint at `addr`: the whole response.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_metrics_endpoint_serves_counters_and_call_durations_to_a_scrape() {
    let port = free_port().unwrap();
    let metrics = format!("tcp:127.0.0.1:{port}");
    let server = ServerProcess::start(
        bin(),
        &["--listen", "tcp:127.0.0.1:0", "--metrics", &metrics],
        &[],
    )
    .unwrap();
    let endpoint = server.endpoint("tcp").unwrap();
    let mut client = connect(endpoint).unwrap();
    for _ in 0..3 {
        assert_eq!(client.call("echo", b"x", Some(WAIT)).unwrap(), b"x");
    }
    assert_eq!(client.call("sleep", b"30", Some(WAIT)).unwrap(), b"30");
    assert!(client.call("nosuch", b"", Some(WAIT)).is_err());

    let addr = format!("127.0.0.1:{port}");
    let response = http_get(&addr, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples: HashMap<&str, f64> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(name, value)| (name, value.parse().unwrap()))
        .collect();
    let get = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("{name} in\n{body}"))
    };
    assert_eq!(get("wirecall_calls_total{method=\"echo\"}"), 3.0);
    assert_eq!(get("wirecall_executions_total{method=\"sleep\"}"), 1.0);
    assert_eq!(get("wirecall_unknown_method_calls_total"), 1.0);
    assert_eq!(get("wirecall_connections_open"), 1.0);
    assert_eq!(
        get("wirecall_call_duration_seconds_count{method=\"echo\"}"),
        3.0
    );
    // The 30 ms sleep: past the 25 ms bound, within the 50 ms one.
    let sleep = |le: &str| {
        get(&format!(
            "wirecall_call_duration_seconds_bucket{{method=\"sleep\",le=\"{le}\"}}"
        ))
    };
    assert_eq!(sleep("0.025"), 0.0);
    assert_eq!(sleep("0.05"), 1.0);
    assert_eq!(sleep("+Inf"), 1.0);
    assert!(get("wirecall_call_duration_seconds_sum{method=\"sleep\"}") >= 0.03);
    assert!(http_get(&addr, "/").starts_with("HTTP/1.1 404"));
}

#[test]
fn a_fleet_over_udp_through_a_lossy_path_and_nginx_through_a_sigterm_and_a_sigkill() {
    let relay_bin = wirecall_tests::lossy::helper(bin(), "lossy_relay").unwrap();
    let Some(mut fleet) = NginxFleet::start() else {
        return;
    };
    let seed = std::env::var("WIRECALL_RELAY_SEED").unwrap_or_else(|_| "20261207".into());
    let faults = wirecall_tests::lossy::Faults {
        loss: 10,
        dup: 10,
        delay_ms: 4,
    };
    let relay = wirecall_tests::lossy::Relay::start(
        std::process::Command::new(&relay_bin),
        &format!("127.0.0.1:{}", fleet.udp),
        &seed,
        faults,
    )
    .unwrap();
    let front: Endpoint = format!("udp:{}", relay.addr).parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tally = std::sync::Arc::new(Tally::default());
    const CLIENTS: usize = 6;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (stop, tally, front) = (stop.clone(), tally.clone(), front.clone());
            std::thread::spawn(move || fault_client(front, n, &stop, &tally))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // 1. SIGTERM the busiest server: new calls are rejected as shutting down (not
    // executed) and sent again on new flows; it answers what it took, then exits.
    let busiest = |fleet: &NginxFleet, skip: Option<usize>| {
        let e = fleet.executions();
        (0..e.len())
            .filter(|i| Some(*i) != skip)
            .max_by_key(|i| e[*i].unwrap_or(0))
            .unwrap()
    };
    let x = busiest(&fleet, None);
    fleet.servers[x]
        .0
        .signal(wirecall_tests::Signal::TERM)
        .unwrap();
    let status = fleet.servers[x].0.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let drained = parse_stats(&fleet.servers[x].0.rest_of_stdout(WAIT));
    let moved = (Tally::get(&tally.maybe), Tally::get(&tally.executed_error));
    assert_eq!(
        moved,
        (0, 0),
        "maybe executed or failed while it drained: {tally:?}"
    );

    // 2. SIGKILL another, its counters read just before.
    let y = busiest(&fleet, Some(x));
    let seen = fleet.executions()[y].unwrap_or(0);
    fleet.servers[y]
        .0
        .signal(wirecall_tests::Signal::KILL)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let z = (0..3).find(|i| *i != x && *i != y).unwrap();
    let alive = fleet.executions()[z].unwrap_or(0);
    let relayed = relay.finish();

    let t = |c: &std::sync::atomic::AtomicU64| Tally::get(c);
    let (submitted, ok, maybe) = (t(&tally.submitted), t(&tally.ok), t(&tally.maybe));
    let (not_executed, executed_error) = (t(&tally.not_executed), t(&tally.executed_error));
    let drained_executions = drained["executions.echo"];
    println!(
        "fault run over UDP through the lossy relay (seed {seed}, 10% loss, 10% \
         duplication) and nginx: {CLIENTS} clients, {submitted} calls: {ok} answered ({} \
         after a retry), {not_executed} not executed, {maybe} maybe executed, \
         {executed_error} executed with an error; {} retries, {} client sockets; \
         executions: SIGTERMed server {drained_executions} (final, {} rejected as shutting \
         down), SIGKILLed server at least {seen}, third server {alive}; relay dropped \
         {}+{}",
        t(&tally.ok_after_retry),
        t(&tally.retries),
        t(&tally.connections),
        drained["datagrams.rejected"],
        relayed["to_server.dropped"],
        relayed["to_client.dropped"],
    );
    // Every call ended in one outcome; the drain sent calls elsewhere, not executed.
    assert_eq!(ok + not_executed + maybe + executed_error, submitted);
    assert!(drained["datagrams.rejected"] > 0 && t(&tally.retries) > 0);
    // Calls that may have run twice are at most those in flight on the killed server (8
    // per client), as its cache died with it (docs/DEPLOYING.md).
    assert!(
        drained_executions + seen + alive <= ok + maybe + executed_error + (CLIENTS as u64) * 8,
        "{drained_executions} + {seen} + {alive}"
    );
    assert!(ok >= submitted * 99 / 100, "{tally:?}");
}

#[test]
fn a_refusal_at_the_limit_on_a_proxy_listener_waits_for_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("unix:{}", dir.path().join("plain.sock").display());
    let server = ServerProcess::start(
        bin(),
        &[
            "--accept-proxy",
            "tcp:127.0.0.1:0",
            "--listen",
            &plain,
            "--max-connections",
            "2",
            "--evict-idle",
            "0",
        ],
        &[],
    )
    .unwrap();
    let addr: SocketAddr = server
        .endpoint("tcp")
        .unwrap()
        .strip_prefix("tcp:")
        .unwrap()
        .parse()
        .unwrap();
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 7000\r\n";
    // One slot for a proxied connection that holds it, one for the test's stats client.
    let mut holder = TcpStream::connect(addr).unwrap();
    holder.write_all(header).unwrap();
    let mut stats_client = connect(&plain).unwrap();
    assert!(wirecall_tests::wait_until(
        WAIT,
        Duration::from_millis(20),
        || {
            let text = stats_client
                .call("stats", b"connections.", Some(WAIT))
                .unwrap();
            parse_stats(&String::from_utf8(text).unwrap())["connections.proxied"] == 1
        }
    ));
    // Over the limit: nothing is said before the header...
    let mut refused = TcpStream::connect(addr).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = refused.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{early:?}"
    );
    // ...then the hello and the REFUSED close.
    refused.write_all(header).unwrap();
    refused.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = refused.read_to_end(&mut answer);
    assert!(answer.windows(4).any(|w| w == b"WCAL"), "{answer:?}");
    let text = stats_client
        .call("stats", b"connections.", Some(WAIT))
        .unwrap();
    let counters = parse_stats(&String::from_utf8(text).unwrap());
    assert_eq!(counters["connections.refused"], 1, "{counters:?}");
    assert_eq!(counters["connections.proxied"], 2, "{counters:?}");
    drop(holder);
}

#[test]
fn a_fleet_client_sees_an_idle_connection_closed_before_it_sends_on_it() {
    let server = ServerProcess::start(
        bin(),
        &["--listen", "tcp:127.0.0.1:0", "--idle-timeout", "1"],
        &[],
    )
    .unwrap();
    let endpoint: Endpoint = server.endpoint("tcp").unwrap().parse().unwrap();
    let mut fleet =
        wirecall::FleetClient::new(vec![endpoint], wirecall::FleetConfig::default()).unwrap();
    assert_eq!(fleet.call("echo", b"1", Some(WAIT)).unwrap().attempts, 1);
    // The server closes the idle connection (a go-away, then the end) after 1 s.
    assert!(wirecall_tests::wait_until(
        WAIT,
        Duration::from_millis(50),
        || { stats(server.endpoint("tcp").unwrap())["connections.idle_closed"] >= 1 }
    ));
    std::thread::sleep(Duration::from_millis(600));
    // The next call reads that first and goes out on a new connection, at its first try.
    let answer = fleet.call("echo", b"2", Some(WAIT)).unwrap();
    assert_eq!((answer.body.as_slice(), answer.attempts), (&b"2"[..], 1));
    assert_eq!(fleet.stats().connections, 2);
    assert_eq!(fleet.stats().retries, 0);
}
