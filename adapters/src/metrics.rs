//! The server's counters in the Prometheus text exposition format (version 0.0.4), and a
//! small HTTP endpoint that serves them (`serve --metrics tcp:127.0.0.1:9090`, then
//! scrape `http://127.0.0.1:9090/metrics`).
//!
//! Names follow Prometheus's conventions: a `wirecall_` prefix, `_total` on counters,
//! base units (`_seconds`), labels for what the `stats` text spells in its names:
//! `method` (`wirecall_calls_total{method="echo"}`), `reason`
//! (`wirecall_connections_closed_total{reason="graceful"}`,
//! `wirecall_datagrams_dropped_total{reason="oversize"}`). Gauges: `wirecall_connections_open`,
//! `wirecall_datagram_calls_in_progress`, `wirecall_draining`. Per method, the histogram
//! `wirecall_call_duration_seconds` (from the request taken to its answer made; buckets
//! from 100 µs to 10 s, [`DURATION_BUCKETS_US`]), filled once
//! [`Stats::enable_timing`](crate::stats::Stats::enable_timing) is on, which the endpoint
//! turns on: timing costs two clock reads a call, so a server without metrics does not pay
//! it.
//!
//! The endpoint is one thread answering one request at a time: `GET /metrics` (or `HEAD`)
//! gets the text, other paths 404, other methods 405; a request head is read for at most
//! 2 s in all and 8 KiB, the answer written within 2 s, then the connection is closed. It is for scrapers on a network you
//! trust: bind it to an internal address.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::stats::{DURATION_BUCKETS_US, StatsHandle, StatsSnapshot};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The longest request head read, and how long its reading may take.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// `snapshot` in the Prometheus text format.
#[must_use]
pub fn prometheus(snapshot: &StatsSnapshot) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let s = snapshot;
    gauge(
        &mut out,
        "wirecall_draining",
        "1 once the server is shutting down (its drain delay included).",
        u64::from(s.draining),
    );
    gauge(
        &mut out,
        "wirecall_connections_open",
        "Connections open now.",
        s.connections_open,
    );
    for (name, help, value) in [
        (
            "wirecall_connections_accepted_total",
            "Connections accepted.",
            s.connections_accepted,
        ),
        (
            "wirecall_connections_refused_total",
            "Connections refused at the connection limit or for want of descriptors.",
            s.connections_refused,
        ),
        (
            "wirecall_connections_not_allowed_total",
            "Unix connections refused by the credentials allowlist.",
            s.connections_not_allowed,
        ),
        (
            "wirecall_connections_evicted_total",
            "Idle connections evicted at the connection limit.",
            s.connections_evicted,
        ),
        (
            "wirecall_connections_accept_failed_total",
            "Accepts that failed for want of descriptors.",
            s.connections_accept_failed,
        ),
        (
            "wirecall_connections_idle_closed_total",
            "Connections closed by the idle timeout.",
            s.connections_idle_closed,
        ),
        (
            "wirecall_connections_aged_out_total",
            "Connections told to go away for their age.",
            s.connections_aged_out,
        ),
        (
            "wirecall_connections_proxied_total",
            "PROXY protocol headers taken.",
            s.connections_proxied,
        ),
        (
            "wirecall_connections_proxy_refused_total",
            "Connections on PROXY listeners closed without a valid header.",
            s.connections_proxy_refused,
        ),
        (
            "wirecall_unknown_method_calls_total",
            "Requests for a method the server does not have.",
            s.unknown_method_calls,
        ),
        (
            "wirecall_requests_busy_total",
            "Requests answered busy.",
            s.busy,
        ),
        (
            "wirecall_requests_expired_total",
            "Requests whose deadline passed before their answer.",
            s.expired,
        ),
        (
            "wirecall_requests_cancelled_total",
            "Requests cancelled by their client.",
            s.cancelled,
        ),
        (
            "wirecall_requests_after_goaway_total",
            "Requests dropped as they came after the go-away.",
            s.after_goaway,
        ),
        (
            "wirecall_answers_too_large_total",
            "Answers larger than their client takes.",
            s.answers_too_large,
        ),
        (
            "wirecall_protocol_errors_total",
            "Connections ended because the peer broke the protocol.",
            s.protocol_errors(),
        ),
        (
            "wirecall_tls_handshake_failed_total",
            "TLS handshakes that failed.",
            s.tls_handshake_failed,
        ),
        (
            "wirecall_tls_refused_identity_total",
            "TLS clients whose identity is not allowed.",
            s.tls_refused_identity,
        ),
        (
            "wirecall_datagrams_received_total",
            "Datagrams read.",
            s.datagrams_received,
        ),
        (
            "wirecall_datagrams_sent_total",
            "Datagrams sent.",
            s.datagrams_sent,
        ),
        (
            "wirecall_datagram_calls_replayed_total",
            "Retransmitted datagram calls answered from the call cache.",
            s.datagrams_replayed,
        ),
        (
            "wirecall_datagram_calls_busy_total",
            "Datagram calls refused busy for want of cache room.",
            s.datagrams_busy,
        ),
        (
            "wirecall_datagram_calls_busy_peer_quota_total",
            "Datagram calls refused busy as their peer held its share of the cache.",
            s.datagrams_busy_peer_quota,
        ),
        (
            "wirecall_datagram_answers_withheld_total",
            "UDP answers held back by the anti-amplification rule.",
            s.datagrams_withheld,
        ),
        (
            "wirecall_datagram_calls_rejected_total",
            "Datagram calls rejected before running.",
            s.datagrams_rejected,
        ),
        (
            "wirecall_datagram_late_answers_total",
            "Answers to datagram calls the cache had forgotten.",
            s.datagrams_late_answers,
        ),
        (
            "wirecall_datagram_acks_total",
            "Acknowledgements received.",
            s.datagrams_acks,
        ),
    ] {
        counter(&mut out, name, help, value);
    }
    gauge(
        &mut out,
        "wirecall_datagram_calls_in_progress",
        "Datagram calls running now.",
        s.datagrams_in_progress,
    );

    family(
        &mut out,
        "wirecall_connections_closed_total",
        "counter",
        "Ended connections by reason.",
    );
    for (kind, n) in &s.closed {
        let _ = writeln!(
            out,
            "wirecall_connections_closed_total{{reason=\"{}\"}} {n}",
            kind.name()
        );
    }
    family(
        &mut out,
        "wirecall_datagrams_dropped_total",
        "counter",
        "Datagrams dropped by reason.",
    );
    for (kind, n) in &s.datagrams_dropped_by {
        let _ = writeln!(
            out,
            "wirecall_datagrams_dropped_total{{reason=\"{}\"}} {n}",
            kind.name()
        );
    }
    family(
        &mut out,
        "wirecall_calls_total",
        "counter",
        "Requests taken, by method.",
    );
    for m in &s.methods {
        let _ = writeln!(
            out,
            "wirecall_calls_total{{method=\"{}\"}} {}",
            label(&m.name),
            m.calls
        );
    }
    family(
        &mut out,
        "wirecall_executions_total",
        "counter",
        "Times a method's function ran.",
    );
    for m in &s.methods {
        let _ = writeln!(
            out,
            "wirecall_executions_total{{method=\"{}\"}} {}",
            label(&m.name),
            m.executions
        );
    }
    family(
        &mut out,
        "wirecall_call_duration_seconds",
        "histogram",
        "Calls by the time from the request taken to its answer made.",
    );
    for m in &s.methods {
        let method = label(&m.name);
        let mut cumulative = 0u64;
        for (i, n) in m.durations.iter().enumerate() {
            cumulative = cumulative.saturating_add(*n);
            match DURATION_BUCKETS_US.get(i) {
                Some(us) => {
                    let le = seconds(*us);
                    let _ = writeln!(
                        out,
                        "wirecall_call_duration_seconds_bucket{{method=\"{method}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "wirecall_call_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "wirecall_call_duration_seconds_sum{{method=\"{method}\"}} {}",
            m.duration_sum.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "wirecall_call_duration_seconds_count{{method=\"{method}\"}} {cumulative}"
        );
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A bucket bound in seconds, as short as it can be written (`0.0001`, `2.5`, `10`).
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A running metrics endpoint; stopped when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Serves `stats` at `http://<endpoint>/metrics` from a thread of its own, and turns
    /// call timing on (the duration histograms). `endpoint` is a `tcp:` endpoint
    /// (`tcp:host:0` takes a port from the OS: see [`local_addr`](Self::local_addr)).
    ///
    /// # Errors
    ///
    /// Not a `tcp:` endpoint, or it cannot be bound ([`Error::Listen`]).
    pub fn start(endpoint: &Endpoint, stats: StatsHandle) -> Result<Self, Error> {
        let listen_error = |source| Error::Listen {
            endpoint: endpoint.clone(),
            source,
        };
        if !matches!(endpoint, Endpoint::Tcp(..)) {
            return Err(listen_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "metrics are served over HTTP on a tcp: endpoint",
            )));
        }
        let addrs = endpoint.resolve()?;
        let listener = TcpListener::bind(addrs.as_slice()).map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        stats.recorder().enable_timing();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("wirecall-metrics".into())
                .spawn(move || serve(&listener, &stats, &stop))
                .map_err(Error::io("starting the metrics thread"))?
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept (a connection to ourselves, closed at once).
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, stats: &StatsHandle, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(stream, stats) {
                    log::debug!("metrics request: {e}");
                }
            }
            Err(e) => {
                log::debug!("metrics accept: {e}");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, stats: &StatsHandle) -> io::Result<()> {
    // One deadline for the whole head: a client sending a byte now and then gets no more.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            );
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = prometheus(&stats.snapshot());
            respond(&mut stream, "200 OK", &body, method == "HEAD")
        }
        ("GET" | "HEAD", _) => respond(&mut stream, "404 Not Found", "try /metrics\n", false),
        _ => respond(&mut stream, "405 Method Not Allowed", "", false),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_the_text_format_names_and_labels() {
        let stats = StatsHandle::default();
        stats
            .recorder()
            .set_methods(&["echo".to_owned(), "we\"ird\\name".to_owned()]);
        stats.recorder().call(Some(0));
        stats.recorder().execution(0);
        stats
            .recorder()
            .observe(0, std::time::Duration::from_micros(300));
        stats
            .recorder()
            .observe(0, std::time::Duration::from_secs(20));
        let text = prometheus(&stats.snapshot());
        for line in [
            "# TYPE wirecall_calls_total counter\n",
            "wirecall_calls_total{method=\"echo\"} 1\n",
            "wirecall_executions_total{method=\"we\\\"ird\\\\name\"} 0\n",
            "wirecall_call_duration_seconds_bucket{method=\"echo\",le=\"0.00025\"} 0\n",
            "wirecall_call_duration_seconds_bucket{method=\"echo\",le=\"0.0005\"} 1\n",
            "wirecall_call_duration_seconds_bucket{method=\"echo\",le=\"10\"} 1\n",
            "wirecall_call_duration_seconds_bucket{method=\"echo\",le=\"+Inf\"} 2\n",
            "wirecall_call_duration_seconds_count{method=\"echo\"} 2\n",
            "wirecall_connections_closed_total{reason=\"graceful\"} 0\n",
            "# TYPE wirecall_connections_open gauge\n",
            "wirecall_draining 0\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        // Every sample line: a name (with labels) and a number.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            assert!(name.starts_with("wirecall_"), "{l}");
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        assert_eq!(seconds(100), "0.0001");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
    }

    #[test]
    fn test_a_client_that_dribbles_its_request_is_cut_off() {
        let endpoint: Endpoint = "tcp:127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let metrics = MetricsEndpoint::start(&endpoint, StatsHandle::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut slow = TcpStream::connect(metrics.local_addr()).unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        // A byte every 500 ms: each read is short of its timeout, the whole is not.
        let mut cut = false;
        for _ in 0..12 {
            if slow.write_all(b"G").is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut rest = Vec::new();
        slow.set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
        // Closed by the server (an end of stream or a reset), well before 6 s of bytes.
        cut |= slow.read_to_end(&mut rest).map_or(true, |n| n == 0);
        assert!(cut);
        assert!(started.elapsed() < Duration::from_secs(8));
    }

    #[test]
    fn test_the_endpoint_answers_a_scrape_and_refuses_the_rest() {
        let stats = StatsHandle::default();
        let endpoint: Endpoint = "tcp:127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
        let metrics =
            MetricsEndpoint::start(&endpoint, stats.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert!(stats.recorder().timing());
        let get = |request: &str| {
            let mut s = TcpStream::connect(metrics.local_addr()).unwrap_or_else(|e| panic!("{e}"));
            s.write_all(request.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            let mut text = String::new();
            s.read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{e}"));
            text
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("wirecall_connections_open 0\n"), "{ok}");
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert!(get(&huge).starts_with("HTTP/1.1 431"));
        drop(metrics);
    }
}
