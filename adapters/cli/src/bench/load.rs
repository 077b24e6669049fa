//! The load generator of `wirecall bench`, over the library's [`Client`].
//!
//! [`run`] opens `connections` clients, each on its own thread, and calls on each with
//! [`Client::submit`] and [`Client::wait_any_borrowed`], keeping at most `window` calls in flight
//! per connection. Two ways to pace the calls:
//!
//! - **Closed loop** (the default): each connection keeps its window full, sending a new
//!   call as soon as one ends (window 1 is plain ping-pong). Latency runs from just before
//!   `submit` to the moment the outcome is handed back.
//! - **Open loop** (`rate`): calls are due at fixed times, `rate` per second over all
//!   connections, spread evenly (call `k` of connection `i` of `C` is due at
//!   `(i + k·C) / rate` seconds), as wrk2 does. Latency runs from the time a call was
//!   *due*, not from when it was sent, so a server that stalls shows in the percentiles
//!   instead of slowing the load down (no coordinated omission). The window still bounds
//!   the calls in flight: while it is full, calls fall behind their times, and the delay
//!   counts in their latency. Between sends a connection collects answers with
//!   [`Client::wait_any_timeout_borrowed`] until the next call is due.
//!
//! Answers are checked where they are known: for `echo` an answer must be the request
//! body byte for byte, for `upper` the body upper-cased; a wrong answer counts as an
//! error, like a failed call. The default body carries its call's number, so an answer
//! delivered to the wrong call is caught too; a body given by the caller ([`Body::Fixed`])
//! is the same in every call, and only `echo` (and the typed echo) answers are checked
//! then. Latencies go into an [HdrHistogram](hdrhistogram) per connection (3 significant
//! digits), merged at the end.
//!
//! Connecting is not timed: every connection is made first, then the clock starts. The run
//! ends after a number of calls (split evenly over the connections) or after a duration (no
//! new calls after it; the ones in flight are still collected and counted). A request too
//! large to be sent at all (over one datagram, or the frame limit) stops the run before
//! anything is sent: every call has the same size, so the first one tells.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use wirecall::builtins::TypedEcho;
use wirecall::config::{ClientConfig, MAX_DATAGRAM_LIMIT, MAX_FRAME_LIMIT, MAX_IN_FLIGHT_LIMIT};
use wirecall::core::RequestId;
use wirecall::core::client::SendError;
use wirecall::core::wire::Target;
use wirecall::id_hasher::IdMap;
use wirecall::typed::Endpoint as _;
use wirecall::{CallErrorKind, Client, Endpoint, Error, TlsConnector};

/// The largest latency the histograms hold exactly: one hour, in nanoseconds (longer ones
/// are recorded as this).
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;
/// Room in a frame for everything but the body (id, method name, budget, prefix).
const FRAME_OVERHEAD: usize = 1024;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// After this many calls in all (split evenly over the connections).
    Requests(u64),
    /// No new calls after this long; calls in flight are still collected.
    Duration(Duration),
}

/// The request body of every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// This many bytes carrying the call's number in hex, then letters and digits
    /// ([`fill_body`]); the answers of `echo`, `upper` and the typed echo are checked
    /// against it, call by call.
    Counter(usize),
    /// These bytes in every call (`--body`).
    Fixed(Vec<u8>),
}

impl Body {
    /// Its length in bytes.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Counter(len) => *len,
            Self::Fixed(bytes) => bytes.len(),
        }
    }

    /// The name `--json` gives it: `counter` or `fixed`.
    #[must_use]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Counter(_) => "counter",
            Self::Fixed(_) => "fixed",
        }
    }
}

/// How an answer is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Check {
    /// The answer must be the request body (the `echo` method).
    Echo,
    /// The answer must be the request body upper-cased (the `upper` method with the
    /// counter body, which is ASCII).
    Upper,
    /// The typed echo (`typed/echo`, a typed endpoint called by its key): the request is
    /// the body as postcard bytes, the answer must be `Ok` of the same bytes.
    TypedEcho,
    /// Only success is checked (any other method: its answer is not known here).
    Success,
}

impl Check {
    /// The check for a method of the reference server with `body`. A fixed body's
    /// upper-casing is not checked: the server follows Unicode rules for UTF-8 text.
    #[must_use]
    pub(crate) fn for_method(method: &str, body: &Body) -> Self {
        match (method, body) {
            ("echo", _) => Self::Echo,
            ("upper", Body::Counter(_)) => Self::Upper,
            ("typed/echo", _) => Self::TypedEcho,
            _ => Self::Success,
        }
    }
}

/// What [`run`] does. Start from [`BenchConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) struct BenchConfig {
    /// Where the server listens.
    pub(crate) endpoint: Endpoint,
    /// The method to call. Default: `echo`.
    pub(crate) method: String,
    /// The request body. Default: a 32-byte counter body.
    pub(crate) body: Body,
    /// Client connections, one thread each. Default: 1.
    pub(crate) connections: usize,
    /// Calls in flight per connection at most (1: ping-pong). Default: 1.
    pub(crate) window: usize,
    /// Calls per second over all connections, due at fixed times (open loop); `None`:
    /// as fast as answers come (closed loop). Default: `None`.
    pub(crate) rate: Option<u64>,
    /// When to stop. Default: 10 s.
    pub(crate) limit: Limit,
    /// Each call's timeout (`None`: none). Default: 5 s.
    pub(crate) timeout: Option<Duration>,
    /// The largest datagram a client sends on a datagram endpoint (`None`: the client's
    /// default, 1232 bytes on `udp:`, 65,536 on `unix-dgram:`). Default: `None`.
    pub(crate) max_datagram: Option<usize>,
    /// How answers are checked. Default: from the method ([`Check::for_method`]).
    pub(crate) check: Check,
    /// The TLS settings of a `tls:` endpoint (`None`: the system's trust roots).
    pub(crate) tls: Option<TlsConnector>,
}

impl BenchConfig {
    /// `echo` with 32-byte bodies over one connection, ping-pong, for 10 seconds.
    #[must_use]
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            method: "echo".to_owned(),
            body: Body::Counter(32),
            connections: 1,
            window: 1,
            rate: None,
            limit: Limit::Duration(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(5)),
            max_datagram: None,
            check: Check::Echo,
            tls: None,
        }
    }

    /// The client configuration for this load: a call table of at least `window` slots,
    /// frames that hold the body, and the datagram size asked for.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::default();
        let window = u32::try_from(self.window).unwrap_or(u32::MAX);
        config.connection.max_in_flight = config
            .connection
            .max_in_flight
            .max(window)
            .min(MAX_IN_FLIGHT_LIMIT);
        let frame =
            u32::try_from(self.body.len().saturating_add(FRAME_OVERHEAD)).unwrap_or(u32::MAX);
        config.connection.max_frame_len = config
            .connection
            .max_frame_len
            .max(frame)
            .min(MAX_FRAME_LIMIT);
        // Datagram endpoints: a request must fit one datagram of the size the server takes,
        // so the client's defaults stay unless asked otherwise; a larger request is refused
        // at its first call.
        if let Some(datagram) = self.max_datagram {
            let datagram = datagram.min(MAX_DATAGRAM_LIMIT);
            config.datagram.max_datagram = datagram;
            config.unix_max_datagram = datagram;
        }
        config
    }
}

/// Why [`run`] stopped before it could report.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum RunError {
    /// A client could not connect (or its endpoint is not supported), or a thread could not
    /// start.
    Client(Error),
    /// The request does not fit one datagram, or the frame limit: nothing was sent.
    TooLarge {
        /// The request's encoded size in bytes (the whole datagram on a datagram
        /// endpoint, the frame body on a stream).
        len: usize,
        /// The most that may be sent, counted the same way.
        limit: usize,
    },
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        Self::Client(e)
    }
}

/// The outcome of a run. Latencies are in microseconds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) struct Report {
    /// Calls that ended (with an answer, an error or a timeout).
    pub(crate) calls: u64,
    /// Calls answered with the right bytes.
    pub(crate) ok: u64,
    /// Calls that failed (other than by timing out) or got a wrong answer.
    pub(crate) errors: u64,
    /// Calls among `errors` whose answer had wrong bytes.
    pub(crate) mismatches: u64,
    /// Calls that timed out.
    pub(crate) timeouts: u64,
    /// Open loop: calls that were due before the run ended but never sent (the window was
    /// full, or the connection broke). Always 0 in a closed loop.
    pub(crate) unsent: u64,
    /// From the first call to the last outcome.
    pub(crate) elapsed: Duration,
    /// Median latency.
    pub(crate) p50_us: f64,
    /// 90th percentile latency.
    pub(crate) p90_us: f64,
    /// 99th percentile latency.
    pub(crate) p99_us: f64,
    /// 99.9th percentile latency.
    pub(crate) p999_us: f64,
    /// Largest latency.
    pub(crate) max_us: f64,
    /// Mean latency.
    pub(crate) mean_us: f64,
    /// The open loop's calls per second (`None`: closed loop). Latency then runs from each
    /// call's due time.
    pub(crate) target_rate: Option<u64>,
    /// Whether answers were checked byte for byte (not [`Check::Success`]).
    pub(crate) checked: bool,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
}

impl Report {
    /// Calls per second over the run (in an open loop, the rate achieved).
    #[must_use]
    pub(crate) fn calls_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.calls as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether every call succeeded with the right answer.
    #[must_use]
    pub(crate) fn is_clean(&self) -> bool {
        self.errors == 0 && self.timeouts == 0
    }

    /// The report as one JSON object (what `wirecall bench --json` prints), with the run's
    /// settings.
    #[must_use]
    pub(crate) fn to_json(&self, config: &BenchConfig) -> serde_json::Value {
        serde_json::json!({
            "endpoint": config.endpoint.to_string(),
            "method": config.method,
            "size": config.body.len(),
            "body": config.body.kind(),
            "connections": config.connections,
            "window": config.window,
            "mode": if self.target_rate.is_some() { "open-loop" } else { "closed-loop" },
            "target_rate": self.target_rate,
            "achieved_rate": self.calls_per_sec(),
            "latency_from_intended_send": self.target_rate.is_some(),
            "calls": self.calls,
            "ok": self.ok,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "timeouts": self.timeouts,
            "unsent": self.unsent,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "calls_per_sec": self.calls_per_sec(),
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
            "checked": self.checked,
            "first_error": self.first_error,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "calls     {} in {:.2} s: {:.0} calls/s",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.calls_per_sec()
        )?;
        if let Some(rate) = self.target_rate {
            writeln!(
                f,
                "rate      target {rate} calls/s, achieved {:.0} calls/s; {} due but not sent \
                 (in the latencies with the time they had waited by the end)",
                self.calls_per_sec(),
                self.unsent
            )?;
        }
        writeln!(
            f,
            "errors    {} (wrong answers {}), timeouts {}{}",
            self.errors,
            self.mismatches,
            self.timeouts,
            if self.checked {
                ""
            } else {
                "; answers not checked (only echo, and upper with the default body, are known)"
            }
        )?;
        write!(
            f,
            "latency   p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            Latency(self.p50_us),
            Latency(self.p90_us),
            Latency(self.p99_us),
            Latency(self.p999_us),
            Latency(self.max_us)
        )?;
        if self.target_rate.is_some() {
            write!(
                f,
                "\n          (from each call's intended send time, not when it was sent)"
            )?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst     {e}")?;
        }
        Ok(())
    }
}

/// A latency in µs, shown in µs below 10 ms and in ms above, so figures stay readable from
/// a loopback ping-pong to an overloaded open loop.
struct Latency(f64);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 10_000.0 {
            write!(f, "{:.1} µs", self.0)
        } else {
            write!(f, "{:.1} ms", self.0 / 1000.0)
        }
    }
}

/// Runs the load: connects every client, then calls until the limit. `progress`, when
/// given, is told the number of calls ended so far about ten times a second, and once at
/// the end.
///
/// # Errors
///
/// Only what stops the run before any call: a client that cannot connect (or an endpoint
/// the client does not support), a thread that cannot start, or a request too large to
/// send. Failed calls are counted in the [`Report`], not returned.
pub(crate) fn run(
    config: &BenchConfig,
    progress: Option<&mut dyn FnMut(u64)>,
) -> Result<Report, RunError> {
    let connections = config.connections.max(1);
    let client_config = config.client_config();
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(match &config.tls {
            Some(tls) => Client::connect_tls(&config.endpoint, client_config, tls)?,
            None => Client::connect(&config.endpoint, client_config)?,
        });
    }
    let ended = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = match config.limit {
        Limit::Duration(d) => start.checked_add(d),
        Limit::Requests(_) => None,
    };
    let plans = (0..connections).map(|i| {
        let (c, i) = (connections as u64, i as u64);
        Plan {
            quota: match config.limit {
                Limit::Requests(n) => n / c + u64::from(i < n % c),
                Limit::Duration(_) => u64::MAX,
            },
            deadline,
            schedule: config.rate.map(|rate| Schedule {
                start,
                rate: rate.max(1),
                first: i,
                step: c,
            }),
        }
    });
    let tallies = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(connections);
        // A thread that cannot start ends the start-up, but the ones running finish and
        // their calls are reported (some of them ran).
        let mut not_started = None;
        for (client, plan) in clients.into_iter().zip(plans) {
            let ended = &ended;
            match std::thread::Builder::new()
                .name("bench".to_owned())
                .spawn_scoped(scope, move || drive(client, config, &plan, ended))
            {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    not_started = Some(Tally::failed(&format!("cannot start a bench thread: {e}")));
                    break;
                }
            }
        }
        if let Some(progress) = progress {
            while !handles
                .iter()
                .all(std::thread::ScopedJoinHandle::is_finished)
            {
                progress(ended.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(100));
            }
            progress(ended.load(Ordering::Relaxed));
        }
        let mut tallies = Vec::with_capacity(connections);
        for handle in handles {
            match handle.join() {
                Ok(tally) => tallies.push(tally),
                // A panic in a bench thread is a bug here; its calls are lost, say so.
                Err(_) => tallies.push(Tally::failed("a bench thread panicked")),
            }
        }
        tallies.extend(not_started);
        Ok::<_, Error>(tallies)
    })?;
    if let Some((len, limit)) = tallies.iter().find_map(|t| t.too_large) {
        return Err(RunError::TooLarge { len, limit });
    }
    Ok(merge(tallies, start, config))
}

/// What one connection does.
struct Plan {
    /// Calls to make at most.
    quota: u64,
    /// No new calls from then on.
    deadline: Option<Instant>,
    /// When each call is due (open loop); `None`: at once (closed loop).
    schedule: Option<Schedule>,
}

/// The due times of one connection's calls in an open loop: call `k` is due at
/// `start + (first + k·step) / rate` seconds, so `step` connections starting at
/// `first = 0, 1, ..` share the rate evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    start: Instant,
    rate: u64,
    first: u64,
    step: u64,
}

impl Schedule {
    /// When call `k` is due (`None`: beyond what a clock holds, never).
    fn due(&self, k: u64) -> Option<Instant> {
        let slot = u128::from(k)
            .saturating_mul(u128::from(self.step))
            .saturating_add(u128::from(self.first));
        let ns = slot.saturating_mul(NANOS_PER_SEC) / u128::from(self.rate.max(1));
        self.start
            .checked_add(Duration::from_nanos(u64::try_from(ns).ok()?))
    }

    /// How many calls, counting from call `from`, are due before `until`, at most `most`.
    fn due_before(&self, from: u64, until: Instant, most: u64) -> u64 {
        let due_in_time = |k: u64| self.due(k).is_some_and(|at| at < until);
        // Due times only grow: the answer is the largest `n` whose last call is in time.
        let (mut lo, mut hi) = (0u64, most);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if due_in_time(from.saturating_add(mid - 1)) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

/// What one connection saw.
struct Tally {
    ok: u64,
    errors: u64,
    mismatches: u64,
    timeouts: u64,
    unsent: u64,
    /// The request was too large to send: its size and the limit.
    too_large: Option<(usize, usize)>,
    /// When its last outcome came.
    last: Option<Instant>,
    histogram: Option<Histogram<u64>>,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            mismatches: 0,
            timeouts: 0,
            unsent: 0,
            too_large: None,
            last: None,
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).ok(),
            first_error: None,
        }
    }

    fn failed(message: &str) -> Self {
        let mut tally = Self::new();
        tally.error(message.to_owned());
        tally
    }

    fn error(&mut self, message: String) {
        self.errors = self.errors.saturating_add(1);
        self.first_error.get_or_insert(message);
    }
}

/// One connection's request and the answer it expects: the counter body is stamped with
/// each call's number in both.
struct Bodies {
    request: Vec<u8>,
    /// Where the body starts in `request` (after a typed echo's length prefix).
    request_at: usize,
    expected: Vec<u8>,
    /// Where the body starts in `expected`.
    expected_at: usize,
    /// Whether each call's number is stamped into the bodies.
    stamped: bool,
    check: Check,
}

impl Bodies {
    fn new(body: &Body, check: Check) -> Self {
        // A typed echo's request is the body behind its postcard length, its answer that
        // behind `Ok` (`00`).
        let typed = check == Check::TypedEcho;
        let mut request = if typed {
            postcard_len(body.len())
        } else {
            Vec::new()
        };
        let request_at = request.len();
        let stamped = match body {
            Body::Counter(size) => {
                request.resize(request_at + size, 0);
                fill_body(request.get_mut(request_at..).unwrap_or_default(), 0);
                true
            }
            Body::Fixed(bytes) => {
                request.extend_from_slice(bytes);
                false
            }
        };
        let mut expected = if typed {
            let mut answer = vec![0u8];
            answer.extend_from_slice(&request);
            answer
        } else {
            request.clone()
        };
        let expected_at = expected.len() - body.len();
        if check == Check::Upper {
            expected.make_ascii_uppercase();
        }
        Self {
            request,
            request_at,
            expected,
            expected_at,
            stamped,
            check,
        }
    }

    /// The request of call `number`.
    fn request(&mut self, number: u64) -> &[u8] {
        if self.stamped {
            stamp_body(
                self.request.get_mut(self.request_at..).unwrap_or_default(),
                number,
            );
        }
        &self.request
    }

    /// Whether `answer` is right for call `number`.
    fn is_right(&mut self, answer: &[u8], number: u64) -> bool {
        if self.check == Check::Success {
            return true;
        }
        if self.stamped {
            let tail = self
                .expected
                .get_mut(self.expected_at..)
                .unwrap_or_default();
            let stamp = stamp_body(tail, number);
            if self.check == Check::Upper {
                if let Some(stamp) = tail.get_mut(..stamp) {
                    stamp.make_ascii_uppercase();
                }
            }
        }
        answer == self.expected
    }
}

/// One connection's loop: keep up to `window` calls in flight (at once in a closed loop,
/// each when due in an open one) until `quota` calls were made or the deadline passed,
/// then collect what is in flight.
fn drive(mut client: Client, config: &BenchConfig, plan: &Plan, ended: &AtomicU64) -> Tally {
    let mut tally = Tally::new();
    let window = config.window.max(1);
    let mut bodies = Bodies::new(&config.body, config.check);
    let target = if config.check == Check::TypedEcho {
        Target::Endpoint(TypedEcho::KEY)
    } else {
        Target::Method(&config.method)
    };
    // Call id -> (when it was due, its number), for latency and the check.
    let mut in_flight: InFlight = IdMap::with_capacity_and_hasher(window, Default::default());
    let mut made = 0u64;
    let mut broken = false;
    loop {
        // Send what is due while the window has room; `next`: the next call's time, when
        // it is not due yet.
        let mut next = None;
        while !broken && in_flight.len() < window && made < plan.quota {
            let now = Instant::now();
            let due = match plan.schedule.map(|s| s.due(made)) {
                None => now,
                Some(Some(due)) => due,
                Some(None) => break,
            };
            // Open loop: calls behind their times are not sent after the end either.
            if plan.deadline.is_some_and(|d| due >= d || now >= d) {
                break;
            }
            if due > now {
                next = Some(due);
                break;
            }
            match client.submit(target, bodies.request(made), config.timeout) {
                Ok(id) => {
                    in_flight.insert(id, (due, made));
                    made = made.saturating_add(1);
                }
                Err(e) => {
                    if let CallErrorKind::NotSent(SendError::TooLarge { len, limit }) = e.kind() {
                        // Every call is this size: none can be sent.
                        tally.too_large = Some((*len, *limit));
                    }
                    // Not sent: the connection is closed or the call cannot be made at all.
                    tally.error(format!("{}: {e}", config.endpoint));
                    ended.fetch_add(1, Ordering::Relaxed);
                    made = made.saturating_add(1);
                    broken = true;
                }
            }
        }
        let got = match next {
            Some(at) if in_flight.is_empty() => {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                continue;
            }
            // Answers are checked where they lie in the client's store: no copy, no
            // allocation per call.
            Some(at) => {
                client.wait_any_timeout_borrowed(at.saturating_duration_since(Instant::now()))
            }
            None => client.wait_any_borrowed(),
        };
        let Some((id, outcome)) = got else {
            if next.is_some() && client.pending() > 0 {
                // The next call is due.
                continue;
            }
            break;
        };
        let now = Instant::now();
        let Some((at, number)) = in_flight.remove(&id) else {
            continue;
        };
        tally.last = Some(now);
        ended.fetch_add(1, Ordering::Relaxed);
        if let Some(histogram) = &mut tally.histogram {
            let ns =
                u64::try_from(now.saturating_duration_since(at).as_nanos()).unwrap_or(u64::MAX);
            histogram.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
        }
        match outcome {
            Ok(answer) => {
                if bodies.is_right(answer, number) {
                    tally.ok = tally.ok.saturating_add(1);
                } else {
                    tally.mismatches = tally.mismatches.saturating_add(1);
                    tally.error(format!(
                        "call {number}: wrong answer ({} bytes, expected {})",
                        answer.len(),
                        bodies.expected.len()
                    ));
                }
            }
            Err(e) if matches!(e.kind(), CallErrorKind::TimedOut) => {
                tally.timeouts = tally.timeouts.saturating_add(1);
                tally
                    .first_error
                    .get_or_insert_with(|| format!("call {number}: {e}"));
            }
            Err(e) => {
                if matches!(e.kind(), CallErrorKind::ConnectionLost(_)) {
                    broken = true;
                }
                tally.error(format!("call {number}: {e} [{}]", e.execution()));
            }
        }
    }
    if let (Some(schedule), Some(deadline)) = (plan.schedule, plan.deadline) {
        tally.unsent = schedule.due_before(made, deadline, plan.quota.saturating_sub(made));
        // A call due and never sent is the slowest of all: leaving it out would hide the
        // stall that kept it back (coordinated omission at the end of the run). It counts
        // with the time it had waited by the end, a lower bound.
        if let Some(histogram) = &mut tally.histogram {
            for n in made..made.saturating_add(tally.unsent) {
                if let Some(due) = schedule.due(n) {
                    let waited = deadline.saturating_duration_since(due).as_nanos();
                    let ns = u64::try_from(waited).unwrap_or(u64::MAX);
                    histogram.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
                }
            }
        }
    } else if plan.schedule.is_some() {
        tally.unsent = plan.quota.saturating_sub(made);
    }
    let _ = client.close();
    tally
}

/// The postcard length prefix of a byte string of `len` bytes (a LEB128 varint).
fn postcard_len(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = len;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The calls in flight on one connection, by id.
type InFlight = IdMap<RequestId, (Instant, u64)>;

/// The body of call `number`: its number in hex at the front (so an answer given to the
/// wrong call is caught), lower-case letters and digits after it.
fn fill_body(body: &mut [u8], number: u64) {
    const FILL: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for (i, byte) in body.iter_mut().enumerate() {
        *byte = FILL.get(i % FILL.len()).copied().unwrap_or(b'a');
    }
    stamp_body(body, number);
}

/// Writes call `number`'s stamp (its number in hex, up to 16 digits) at the front of a body
/// [`fill_body`] made; returns the stamp's length.
fn stamp_body(body: &mut [u8], number: u64) -> usize {
    let digits = hex_digits(number);
    // The last `stamp` digits: all 16, or as many as a shorter body holds.
    let stamp = body.len().min(16);
    if let (Some(to), Some(from)) = (body.get_mut(..stamp), digits.get(16 - stamp..)) {
        to.copy_from_slice(from);
    }
    stamp
}

/// `n` as 16 lower-case hex digits, most significant first, without a loop or a table: a
/// benchmark stamps every request and every expected answer, so this is on the path of
/// every call it measures.
fn hex_digits(n: u64) -> [u8; 16] {
    // Each nibble of a 32-bit half into a byte of its own, the highest nibble lowest.
    fn spread(half: u32) -> u64 {
        let x = u64::from(half.swap_bytes());
        let x = (x | x << 16) & 0x0000_ffff_0000_ffff;
        let x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
        // Each byte now holds two nibbles, high then low: put the high one first.
        ((x >> 4) & 0x0f0f_0f0f_0f0f_0f0f) | ((x & 0x0f0f_0f0f_0f0f_0f0f) << 8)
    }
    // A nibble v becomes b'0' + v, plus 39 more (to b'a' + v - 10) where v >= 10, which
    // is where v + 6 carries into bit 4.
    fn ascii(nibbles: u64) -> [u8; 8] {
        let letters = ((nibbles + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (nibbles + 0x3030_3030_3030_3030 + letters * 39).to_le_bytes()
    }
    let mut out = [0u8; 16];
    let (high, low) = out.split_at_mut(8);
    high.copy_from_slice(&ascii(spread((n >> 32) as u32)));
    low.copy_from_slice(&ascii(spread(n as u32)));
    out
}

fn merge(tallies: Vec<Tally>, start: Instant, config: &BenchConfig) -> Report {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3).ok();
    let mut report = Report {
        calls: 0,
        ok: 0,
        errors: 0,
        mismatches: 0,
        timeouts: 0,
        unsent: 0,
        elapsed: Duration::ZERO,
        p50_us: 0.0,
        p90_us: 0.0,
        p99_us: 0.0,
        p999_us: 0.0,
        max_us: 0.0,
        mean_us: 0.0,
        target_rate: config.rate,
        checked: config.check != Check::Success,
        first_error: None,
    };
    let mut last = start;
    for tally in tallies {
        report.ok = report.ok.saturating_add(tally.ok);
        report.errors = report.errors.saturating_add(tally.errors);
        report.mismatches = report.mismatches.saturating_add(tally.mismatches);
        report.timeouts = report.timeouts.saturating_add(tally.timeouts);
        report.unsent = report.unsent.saturating_add(tally.unsent);
        if report.first_error.is_none() {
            report.first_error = tally.first_error;
        }
        if let Some(at) = tally.last {
            last = last.max(at);
        }
        if let (Some(all), Some(one)) = (&mut histogram, &tally.histogram) {
            // Same bounds on both sides, so this cannot fail.
            let _ = all.add(one);
        }
    }
    // Calls that failed to be sent are errors that never reached the histogram.
    report.calls = report
        .ok
        .saturating_add(report.errors)
        .saturating_add(report.timeouts);
    report.elapsed = last.saturating_duration_since(start);
    if let Some(h) = histogram.filter(|h| !h.is_empty()) {
        let us = |ns: u64| ns as f64 / 1000.0;
        report.p50_us = us(h.value_at_quantile(0.50));
        report.p90_us = us(h.value_at_quantile(0.90));
        report.p99_us = us(h.value_at_quantile(0.99));
        report.p999_us = us(h.value_at_quantile(0.999));
        report.max_us = us(h.max());
        report.mean_us = h.mean() / 1000.0;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_the_number_in_hex() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            0x2a,
            0xabcdef,
            0x0123_4567_89ab_cdef,
            u64::MAX,
        ] {
            assert_eq!(hex_digits(n), *format!("{n:016x}").as_bytes(), "{n:#x}");
        }
        let mut n = 1u64;
        for _ in 0..1000 {
            n = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7);
            assert_eq!(hex_digits(n), *format!("{n:016x}").as_bytes(), "{n:#x}");
        }
    }

    #[test]
    fn bodies_carry_their_number() {
        let mut body = [0u8; 20];
        fill_body(&mut body, 0x1234);
        assert_eq!(&body, b"0000000000001234qrst");
        let mut short = [0u8; 2];
        fill_body(&mut short, 0x1234);
        assert_eq!(&short, b"34");
        fill_body(&mut [], 7);
        // Re-stamping a filled body is the same as filling it for the new number.
        stamp_body(&mut body, 0xabcdef);
        let mut fresh = [0u8; 20];
        fill_body(&mut fresh, 0xabcdef);
        assert_eq!(body, fresh);
    }

    #[test]
    fn a_fixed_body_is_sent_as_it_is_and_echo_answers_must_equal_it() {
        let mut bodies = Bodies::new(&Body::Fixed(b"hello".to_vec()), Check::Echo);
        assert_eq!(bodies.request(0), b"hello");
        assert_eq!(bodies.request(7), b"hello");
        assert!(bodies.is_right(b"hello", 7));
        assert!(!bodies.is_right(b"HELLO", 7));
        // Other methods: only success counts.
        let body = Body::Fixed(b"5".to_vec());
        let check = Check::for_method("sleep", &body);
        assert_eq!(check, Check::Success);
        assert!(Bodies::new(&body, check).is_right(b"anything", 0));
        assert_eq!(Check::for_method("upper", &body), Check::Success);
        assert_eq!(Check::for_method("upper", &Body::Counter(8)), Check::Upper);
    }

    #[test]
    fn counter_bodies_are_checked_call_by_call() {
        let mut bodies = Bodies::new(&Body::Counter(20), Check::Upper);
        let request = bodies.request(0x2a).to_vec();
        assert_eq!(request, b"000000000000002aqrst");
        assert!(bodies.is_right(b"000000000000002AQRST", 0x2a));
        assert!(!bodies.is_right(b"000000000000002AQRST", 0x2b));
        let mut typed = Bodies::new(&Body::Counter(3), Check::TypedEcho);
        assert_eq!(typed.request(1), b"\x03001");
        assert!(typed.is_right(b"\x00\x03001", 1));
    }

    #[test]
    fn an_open_loop_spreads_the_rate_over_the_connections() {
        let start = Instant::now();
        // 1000 calls/s over 4 connections: connection 1's calls are due at 1, 5, 9, .. ms.
        let schedule = Schedule {
            start,
            rate: 1000,
            first: 1,
            step: 4,
        };
        assert_eq!(schedule.due(0), Some(start + Duration::from_millis(1)));
        assert_eq!(schedule.due(2), Some(start + Duration::from_millis(9)));
        assert_eq!(schedule.due(u64::MAX), None);
        // Due before 10 ms: calls 0, 1 and 2; from call 1 on: 2 of them; at most 1.
        let until = start + Duration::from_millis(10);
        assert_eq!(schedule.due_before(0, until, u64::MAX), 3);
        assert_eq!(schedule.due_before(1, until, u64::MAX), 2);
        assert_eq!(schedule.due_before(0, until, 1), 1);
        assert_eq!(schedule.due_before(3, until, u64::MAX), 0);
    }

    #[test]
    fn an_empty_run_reports_nothing() {
        let config = BenchConfig::new(Endpoint::Tcp("127.0.0.1".into(), 1));
        let report = merge(Vec::new(), Instant::now(), &config);
        assert_eq!(report.calls, 0);
        assert_eq!(report.calls_per_sec(), 0.0);
        assert!(report.is_clean());
    }
}
