//! `wirecall call`: one call, its outcome as the answer on stdout or one line on stderr
//! (or, with `--json-output`, one JSON object on stdout), its exit code from the table in
//! `CALL_HELP`, and with `-v` the steps on stderr.

use std::cell::Cell;
use std::fmt::Display;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use wirecall::config::MAX_FRAME_LIMIT;
use wirecall::core::client::{CloseReason, Execution, PeerInfo, SendError};
use wirecall::core::wire::{CloseCode, RejectCode, Target};
use wirecall::typed::{EndpointInfo, ListEndpoints};
use wirecall::{
    CallError, CallErrorKind, Client, ClientConfig, Endpoint, Error, HandshakeFailure,
    TlsClientConfig, TlsConnector, TypedCallError,
};

use crate::{
    EXIT_BUSY, EXIT_CONNECT, EXIT_FAILURE, EXIT_LOST, EXIT_NOT_ALLOWED, EXIT_REJECTED, EXIT_REMOTE,
    EXIT_TIMEOUT, EXIT_USAGE, fail, json,
};

/// `wirecall call`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// Where the server listens
    #[arg(value_name = "ENDPOINT")]
    pub(crate) endpoint: Endpoint,
    /// The method to call
    #[arg(value_name = "METHOD")]
    pub(crate) method: String,
    /// The request body; `-` reads it from stdin, `@FILE` from a file; none sends an
    /// empty body
    #[arg(value_name = "ARG")]
    pub(crate) arg: Option<String>,
    /// Milliseconds to wait for the answer (0: no timeout)
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub(crate) timeout: u64,
    /// Call the typed endpoint at METHOD (a path such as kv/get) with this JSON value
    /// (`@FILE` reads it from a file), encoded from the request type the server
    /// publishes; prints the answer as JSON
    #[arg(long, value_name = "JSON", conflicts_with = "arg")]
    pub(crate) json: Option<String>,
    /// Print the outcome as one JSON object on stdout (answer, exit code, execution,
    /// round trip), whatever it is
    #[arg(long)]
    pub(crate) json_output: bool,
    /// Say on stderr what happens: the endpoint resolved, the server's limits, the
    /// request id, the round trip and the outcome
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

/// A client's TLS flags (`call`, `list`, `bench` on `tls:` endpoints).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TlsArgs {
    /// tls: trust the CA certificates in this PEM file (default: the system's store)
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// tls: present this client certificate chain (PEM), for servers that require one
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// tls: the private key of --cert (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// tls: accept TLS 1.2 as well as 1.3
    #[arg(long)]
    pub(crate) tls12: bool,
}

impl TlsArgs {
    /// The TLS settings for `endpoint`: `None` unless it is `tls:`. A usage error (exit 2)
    /// for TLS flags on another endpoint, or files that cannot be read.
    pub(crate) fn connector(&self, endpoint: &Endpoint) -> Result<Option<TlsConnector>, String> {
        if !matches!(endpoint, Endpoint::Tls(..)) {
            if self.ca.is_some() || self.cert.is_some() || self.tls12 {
                return Err(format!(
                    "--ca, --cert, --key and --tls12 are for tls: endpoints, not {endpoint}"
                ));
            }
            return Ok(None);
        }
        let mut config = TlsClientConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.client_cert(cert, key);
        }
        if self.tls12 {
            config = config.allow_tls12();
        }
        config.build().map(Some).map_err(|e| e.to_string())
    }
}

/// How a `call` reports: text (the answer on stdout, one line on stderr on failure) or
/// one JSON object on stdout; with `verbose`, steps on stderr as it goes.
pub(crate) struct Report {
    json: bool,
    verbose: bool,
    /// The call's request id and round trip, once it has been made.
    id: Cell<Option<u64>>,
    rtt: Cell<Option<Duration>>,
}

/// A successful call's answer.
enum Answer<'a> {
    Bytes(&'a [u8]),
    Json(Value),
}

impl Report {
    fn new(args: &CallArgs) -> Self {
        Self {
            json: args.json_output,
            verbose: args.verbose,
            id: Cell::new(None),
            rtt: Cell::new(None),
        }
    }

    /// Text mode without steps: what `list` uses.
    pub(crate) fn plain() -> Self {
        Self {
            json: false,
            verbose: false,
            id: Cell::new(None),
            rtt: Cell::new(None),
        }
    }

    /// One step, with `-v`.
    fn step(&self, text: impl Display) {
        if self.verbose {
            eprintln!("* {text}");
        }
    }

    /// A failure: `message`, whether it may have run (when that is a question: not for a
    /// usage error), and the exit code.
    pub(crate) fn failed(
        &self,
        message: impl Display,
        code: u8,
        execution: Option<Execution>,
    ) -> ExitCode {
        if !self.json {
            return match execution {
                Some(e) => fail(format!("{message} [{e}]"), code),
                None => fail(message, code),
            };
        }
        let mut object = json!({
            "outcome": "failed",
            "error": message.to_string(),
            "execution": execution.map(|e| e.to_string()),
            "exit_code": code,
        });
        self.add_call(&mut object);
        print_json(&object, code)
    }

    /// A call that succeeded.
    fn answered(&self, answer: Answer<'_>) -> ExitCode {
        if !self.json {
            return match answer {
                Answer::Bytes(bytes) => crate::write_out(bytes),
                Answer::Json(value) => crate::write_out(format!("{value}\n").as_bytes()),
            };
        }
        let mut object = json!({
            "outcome": "ok",
            "execution": Execution::Executed.to_string(),
            "exit_code": 0,
        });
        match answer {
            Answer::Json(value) => object["answer"] = value,
            Answer::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => object["answer"] = Value::from(text),
                Err(_) => object["answer_base64"] = Value::from(base64(bytes)),
            },
        }
        self.add_call(&mut object);
        print_json(&object, 0)
    }

    /// The request id and round trip, once the call was made.
    fn add_call(&self, object: &mut Value) {
        if let Some(id) = self.id.get() {
            object["id"] = Value::from(id);
        }
        if let Some(rtt) = self.rtt.get() {
            object["rtt_ms"] = Value::from(rtt.as_secs_f64() * 1000.0);
        }
    }
}

/// Prints one JSON object on stdout; the exit code is `code` (a reader gone is no error).
fn print_json(object: &Value, code: u8) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{object}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            fail(format!("cannot write the answer: {e}"), EXIT_FAILURE)
        }
        _ => ExitCode::from(code),
    }
}

/// `wirecall call`.
pub(crate) fn command(args: &CallArgs) -> ExitCode {
    let report = Report::new(args);
    if let Some(json) = &args.json {
        return call_json(args, json, &report);
    }
    let body = match read_body(args.arg.as_deref()) {
        Ok(body) => body,
        Err(message) => return report.failed(message, EXIT_FAILURE, None),
    };
    let timeout = (args.timeout > 0).then(|| Duration::from_millis(args.timeout));
    let start = Instant::now();
    let tls = match args.tls.connector(&args.endpoint) {
        Ok(tls) => tls,
        Err(message) => return report.failed(message, EXIT_USAGE, None),
    };
    let mut client = match connect(&args.endpoint, tls.as_ref(), hello_wait(timeout), &report) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let outcome = make_call(
        &mut client,
        Target::Method(&args.method),
        &body,
        remaining(timeout, start),
        &report,
    );
    let busy = all_copies_busy(&client);
    let _ = client.close();
    match outcome {
        Ok(answer) => report.answered(Answer::Bytes(&answer)),
        Err(e) => call_failed(&e, args, body.len(), busy, &report),
    }
}

/// The call itself, its id and round trip noted (and said, with `-v`).
fn make_call(
    client: &mut Client,
    target: Target<'_>,
    body: &[u8],
    timeout: Option<Duration>,
    report: &Report,
) -> Result<Vec<u8>, CallError> {
    let start = Instant::now();
    let id = client.submit(target, body, timeout)?;
    report.id.set(Some(id.0));
    report.step(format_args!(
        "call {}: {target}, {}-byte body, timeout {}",
        id.0,
        body.len(),
        timeout.map_or_else(|| "none".to_owned(), |t| format!("{} ms", t.as_millis()))
    ));
    let outcome = client.wait(id);
    let rtt = start.elapsed();
    report.rtt.set(Some(rtt));
    let ms = rtt.as_secs_f64() * 1000.0;
    match &outcome {
        Ok(answer) => report.step(format_args!(
            "answered after {ms:.3} ms: {} bytes [executed]",
            answer.len()
        )),
        Err(e) => report.step(format_args!(
            "failed after {ms:.3} ms: {e} [{}]",
            e.execution()
        )),
    }
    if let Some(s) = client.datagram_stats() {
        let held = if s.held_back > 0 {
            format!(
                " ({} of them holding the answer back until the copies added up to a third \
                 of it: the server's anti-amplification rule)",
                s.held_back
            )
        } else {
            String::new()
        };
        report.step(format_args!(
            "{} cop{} sent, {} answered busy{held}",
            s.transmissions,
            if s.transmissions == 1 { "y" } else { "ies" },
            s.busy
        ));
    }
    outcome
}

/// The body from `ARG`: the text itself, stdin for `-`, a file for `@FILE`, or empty.
fn read_body(arg: Option<&str>) -> Result<Vec<u8>, String> {
    match arg {
        None => Ok(Vec::new()),
        Some("-") => read_limited(std::io::stdin().lock(), "stdin"),
        Some(text) => match text.strip_prefix('@') {
            Some(path) => read_file(path),
            None => Ok(text.as_bytes().to_vec()),
        },
    }
}

/// A file's bytes, up to the largest frame the adapter handles.
fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(Path::new(path))
        .map_err(|e| format!("cannot read the body from {path}: {e}"))?;
    read_limited(file, path)
}

/// All of `from` (`what` names it in messages), up to the largest frame the adapter
/// handles.
fn read_limited(from: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let limit = u64::from(MAX_FRAME_LIMIT);
    let mut body = Vec::new();
    from.take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read the body from {what}: {e}"))?;
    if body.len() as u64 > limit {
        return Err(format!("the body in {what} is over {limit} bytes"));
    }
    Ok(body)
}

/// Connects a client and, on a stream, waits up to `hello` for the server's hello, so that
/// a peer that is not a wirecall server (or says nothing) is told apart before anything
/// is sent; or says why not: exit 8 when there is no wirecall server to talk to, 5 when it
/// refused the connection (at its limit, shutting down).
pub(crate) fn connect(
    endpoint: &Endpoint,
    tls: Option<&TlsConnector>,
    hello: Duration,
    report: &Report,
) -> Result<Client, ExitCode> {
    if report.verbose {
        match endpoint {
            Endpoint::Tcp(..) | Endpoint::Tls(..) | Endpoint::Udp(..) => match endpoint.resolve() {
                Ok(addrs) => {
                    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                    report.step(format_args!("{endpoint}: resolved to {}", list.join(", ")));
                }
                Err(e) => report.step(e),
            },
            _ => report.step(format_args!("{endpoint}: a Unix socket")),
        }
    }
    let start = Instant::now();
    let config = ClientConfig::default();
    let handshake = |mut client: Client| client.handshake(hello).map(|()| client);
    let connected = match tls {
        Some(tls) => Client::connect_tls(endpoint, config, tls),
        None => Client::connect(endpoint, config),
    };
    let client = match connected.and_then(handshake) {
        Ok(client) => client,
        Err(
            e @ Error::Handshake {
                failure: HandshakeFailure::Closed(CloseReason::PeerClosed(CloseCode::REFUSED)),
                ..
            },
        ) => return Err(report.failed(e, EXIT_BUSY, Some(Execution::NotExecuted))),
        Err(
            e @ Error::Handshake {
                failure: HandshakeFailure::Closed(CloseReason::PeerClosed(CloseCode::NOT_ALLOWED)),
                ..
            },
        ) => return Err(report.failed(e, EXIT_NOT_ALLOWED, Some(Execution::NotExecuted))),
        Err(
            e @ (Error::Connect { .. }
            | Error::Resolve { .. }
            | Error::Handshake { .. }
            | Error::TlsHandshake { .. }),
        ) => {
            return Err(report.failed(e, EXIT_CONNECT, Some(Execution::NotExecuted)));
        }
        Err(e) => return Err(report.failed(e, EXIT_FAILURE, None)),
    };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match client.server_info() {
        Some(PeerInfo {
            version,
            max_frame_len,
            max_in_flight,
            ..
        }) => report.step(format_args!(
            "connected in {ms:.3} ms; the server speaks protocol version {version}, takes \
             frames up to {max_frame_len} bytes and {max_in_flight} calls in flight"
        )),
        None => {
            let max = match endpoint {
                Endpoint::UnixDatagram(_) => config.unix_max_datagram,
                _ => config.datagram.max_datagram,
            };
            report.step(format_args!(
                "datagram socket ready (no handshake); requests up to {max} bytes, sent again \
                 until answered or the deadline"
            ));
        }
    }
    Ok(client)
}

/// How long `call` and `list` wait for the server's hello: the call's timeout, or the
/// client's connect timeout when the call has none.
pub(crate) fn hello_wait(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(ClientConfig::default().connect_timeout)
}

/// What is left of `timeout` after `since`, for the call that follows the handshake (at
/// least 1 ms, so a call still gets its one chance).
pub(crate) fn remaining(timeout: Option<Duration>, since: Instant) -> Option<Duration> {
    timeout.map(|t| {
        t.saturating_sub(since.elapsed())
            .max(Duration::from_millis(1))
    })
}

/// Connects and asks the server for its typed endpoints (its discovery endpoint).
pub(crate) fn discover(
    endpoint: &Endpoint,
    tls: &TlsArgs,
    timeout: Option<Duration>,
    report: &Report,
) -> Result<(Client, Vec<EndpointInfo>), ExitCode> {
    let start = Instant::now();
    let tls = tls
        .connector(endpoint)
        .map_err(|message| report.failed(message, EXIT_USAGE, None))?;
    let mut client = connect(endpoint, tls.as_ref(), hello_wait(timeout), report)?;
    match client.call_typed::<ListEndpoints>(&(), remaining(timeout, start)) {
        Ok(list) => Ok((client, list)),
        Err(e) => {
            let (code, execution) = match &e {
                TypedCallError::Call(call) => (exit_code(call), Some(call.execution())),
                _ => (EXIT_FAILURE, None),
            };
            Err(report.failed(
                format_args!("cannot list the server's typed endpoints: {e}"),
                code,
                execution,
            ))
        }
    }
}

/// `call --json`: the typed endpoint at `args.method`, its request encoded from `json` by
/// the schema the server publishes, its answer printed as JSON.
fn call_json(args: &CallArgs, json: &str, report: &Report) -> ExitCode {
    let text = match json.strip_prefix('@') {
        Some(path) => match read_file(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(message) => return report.failed(message, EXIT_FAILURE, None),
        },
        None => json.to_owned(),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => return report.failed(format_args!("--json is not JSON: {e}"), EXIT_USAGE, None),
    };
    let timeout = (args.timeout > 0).then(|| Duration::from_millis(args.timeout));
    let start = Instant::now();
    let (mut client, endpoints) = match discover(&args.endpoint, &args.tls, timeout, report) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let Some(info) = endpoints.iter().find(|e| e.path == args.method) else {
        let paths: Vec<&str> = endpoints.iter().map(|e| e.path.as_str()).collect();
        return report.failed(
            format_args!(
                "the server has no typed endpoint {:?} (it has: {})",
                args.method,
                paths.join(", ")
            ),
            EXIT_REJECTED,
            Some(Execution::NotExecuted),
        );
    };
    let body = match json::encode(&info.request, &value) {
        Ok(body) => body,
        Err(e) => {
            return report.failed(
                format_args!("--json is not a request of {}: {e}", info.path),
                EXIT_USAGE,
                None,
            );
        }
    };
    report.step(format_args!(
        "{} is typed endpoint key {}",
        info.path,
        info.key()
    ));
    let outcome = make_call(
        &mut client,
        Target::Endpoint(info.key()),
        &body,
        remaining(timeout, start),
        report,
    );
    let busy = all_copies_busy(&client);
    let _ = client.close();
    let answer = match outcome {
        Ok(answer) => answer,
        Err(e) => return call_failed(&e, args, body.len(), busy, report),
    };
    // The answer is the endpoint's `Result<Response, Error>`: a variant number, then the
    // value.
    let decoded = match answer.split_first() {
        Some((0, rest)) => json::decode_all(&info.response, rest).map(Ok),
        Some((1, rest)) => json::decode_all(&info.error, rest).map(Err),
        _ => Err(json::JsonError {
            at: String::new(),
            message: "neither a response nor an error".into(),
        }),
    };
    match decoded {
        Ok(Ok(response)) => report.answered(Answer::Json(response)),
        Ok(Err(error)) => report.failed(
            format_args!("the function failed: {error}"),
            EXIT_REMOTE,
            Some(Execution::Executed),
        ),
        Err(e) => report.failed(
            format_args!("the answer is not a value of {}'s types: {e}", info.path),
            EXIT_FAILURE,
            Some(Execution::Executed),
        ),
    }
}

/// `true` when a datagram client has sent copies of its calls and the server answered
/// every one busy (`call` makes one call, so this is that call's story).
fn all_copies_busy(client: &Client) -> bool {
    client
        .datagram_stats()
        .is_some_and(|s| s.transmissions > 0 && s.busy >= s.transmissions)
}

/// The report and exit code of a failed call whose request body was `body_len` bytes;
/// `busy`: every copy of it was answered busy.
fn call_failed(
    e: &CallError,
    args: &CallArgs,
    body_len: usize,
    busy: bool,
    report: &Report,
) -> ExitCode {
    let message = match e.kind() {
        // Over UDP a call busy until its deadline still may run: a duplicate of a copy
        // can reach the server once it has room.
        CallErrorKind::TimedOut if busy => format!(
            "timed out after {} ms; the server answered every copy busy, but the network may \
             still deliver a duplicate of one",
            datagram_deadline_ms(args.timeout)
        ),
        CallErrorKind::TimedOut => format!("timed out after {} ms", args.timeout),
        CallErrorKind::Busy { .. } if args.endpoint.is_datagram() => format!(
            "server busy: every copy sent was answered busy until the deadline ({} ms)",
            datagram_deadline_ms(args.timeout)
        ),
        CallErrorKind::Unreachable => {
            format!("nothing listens at {} (connection refused)", args.endpoint)
        }
        CallErrorKind::NotSent(SendError::TooLarge { len, limit }) => {
            too_large(&args.endpoint, *len, *limit, body_len)
        }
        _ => e.to_string(),
    };
    report.failed(message, exit_code(e), Some(e.execution()))
}

/// Why a request of `len` bytes encoded (`body_len` of them the body) was not sent: over
/// `limit`, one datagram's or the frame limit (also what `bench` says).
pub(crate) fn too_large(endpoint: &Endpoint, len: usize, limit: usize, body_len: usize) -> String {
    let what = if endpoint.is_datagram() {
        "one datagram"
    } else {
        "the frame limit"
    };
    format!(
        "not sent: the request is {len} bytes encoded, over {what} of {limit} bytes \
         ({body_len} of them the body)"
    )
}

/// The deadline of a datagram call made with `--timeout ms`: 0 means the client's default
/// (a datagram call always has one).
fn datagram_deadline_ms(ms: u64) -> u64 {
    if ms == 0 {
        ClientConfig::default().datagram.default_timeout.as_micros() / 1000
    } else {
        ms
    }
}

/// The exit code for a failed call (see `CALL_HELP`).
pub(crate) fn exit_code(e: &CallError) -> u8 {
    match e.kind() {
        CallErrorKind::Remote { .. } => EXIT_REMOTE,
        // How a datagram server says it is shutting down: a call it did not run.
        CallErrorKind::Rejected { code, .. } if *code == RejectCode::SHUTTING_DOWN => EXIT_BUSY,
        CallErrorKind::Rejected { .. } | CallErrorKind::NotSent(SendError::TooLarge { .. }) => {
            EXIT_REJECTED
        }
        CallErrorKind::Busy { .. } | CallErrorKind::Refused => EXIT_BUSY,
        // At the server's connection limit (or shutting down): nothing ran.
        CallErrorKind::ConnectionLost(CloseReason::PeerClosed(CloseCode::REFUSED)) => EXIT_BUSY,
        // Not on the server's allowlist: nothing ran.
        CallErrorKind::ConnectionLost(CloseReason::PeerClosed(CloseCode::NOT_ALLOWED)) => {
            EXIT_NOT_ALLOWED
        }
        CallErrorKind::TimedOut => EXIT_TIMEOUT,
        // A datagram server's address where the kernel says nothing listens.
        CallErrorKind::Unreachable => EXIT_CONNECT,
        _ => EXIT_LOST,
    }
}

/// Standard base64 (RFC 4648, with padding), for an answer that is not UTF-8 in
/// `--json-output`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }
}
