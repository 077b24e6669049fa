//! `wirecall bench`: the command line of the load generator in [`load`]: flags, the body
//! from the command line or a file, progress on stderr, the report (text or JSON) and
//! the exit code. A failure before any report is one line on stderr and, with `--json`,
//! one JSON object on stdout ([`Failure`]).

mod load;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wirecall::config::{MAX_DATAGRAM_LIMIT, MAX_FRAME_LIMIT, MAX_IN_FLIGHT_LIMIT};
use wirecall::core::client::Execution;
use wirecall::core::datagram::MIN_DATAGRAM;
use wirecall::{Endpoint, Error};

use self::load::{BenchConfig, Body, Check, Limit, RunError, run};

/// The largest body bench sends: the largest frame, less room for the rest of the request.
const MAX_BODY: u32 = MAX_FRAME_LIMIT - 1024;

/// The help text after `wirecall bench --help`'s options.
pub(crate) const HELP: &str = "\
Opens --connections clients and calls METHOD until --requests calls are made or
--duration seconds have passed (default: 10 s). Connecting is not timed.

Closed loop (the default): each connection keeps --window calls in flight (1:
ping-pong) and sends the next call as soon as one ends; latency runs from each send.
Open loop (--rate N): N calls per second over all connections, each due at a fixed
time, spread evenly over the connections (as wrk2 does). Latency runs from the time a
call was due, not when it was sent, so a stalled server shows in the percentiles
(no coordinated omission). --window still bounds the calls in flight per connection:
while it is full, calls fall behind and the delay counts in their latency; calls due
but never sent by the end are reported as unsent, and count in the latencies with the
time they had waited by the end (a lower bound: leaving them out would hide the stall).

The body is --size bytes carrying each call's number (default: 32), or --body: the
text given, or with --body @FILE the file's bytes, the same in every call. Answers are
checked: for echo each must be its request body byte for byte, for upper (with the
default body) the body upper-cased; a wrong answer counts as an error. Other methods
are only checked for success. `--method sleep --body 5` makes each call take 5 ms. A
--body that starts with @ names a file; put a body that starts with @ in a file.

Over unix-dgram: and udp: each request must fit one datagram (--max-datagram; by
default 1232 bytes on udp:, 65536 on unix-dgram:, the server's defaults): a larger
one is refused before anything is sent, with its size and the limit (exit 4).

On tls: every connection does its TLS handshake before the clock starts (--ca FILE,
--cert FILE --key FILE as for call).

Prints calls per second, errors, timeouts and the latency percentiles (p50, p90, p99,
p99.9, max); with --json one JSON object on stdout instead, with the fields calls, ok,
errors, mismatches, timeouts, unsent, elapsed_secs, calls_per_sec, p50_us, p90_us,
p99_us, p999_us, max_us, mean_us, mode (closed-loop or open-loop), target_rate (null
in a closed loop), achieved_rate (calls per second over the run),
latency_from_intended_send (true in an open loop), checked, first_error, and the
settings (endpoint, method, size, body: counter or fixed, connections, window).

When bench fails before a report (cannot connect, a body it cannot read or send), with
--json it prints one JSON object on stdout instead: {\"error\": the message,
\"exit_code\": the exit code, \"execution\": \"not executed\"} (nothing ran). The exit
code is the same as without --json, and the message goes to stderr too. Usage errors
(exit 2) are clap's text.

A progress bar is drawn on stderr when it is a terminal; otherwise --progress prints
one line a second to stderr (seconds, calls so far, calls per second), and nothing is
printed without it.

Exit codes:
  0  every call succeeded with the right answer
  1  some calls failed, timed out or got a wrong answer (the report says how many), or
     another error (such as a --body file that cannot be read)
  2  usage error
  4  the request does not fit one datagram (or the frame limit): nothing was sent
  8  could not connect (TLS included: a certificate that does not verify)

Examples:
  wirecall bench unix:/tmp/wirecall.sock --requests 100000
  wirecall bench tcp:127.0.0.1:7000 --connections 4 --window 64 --duration 10
  wirecall bench tcp:127.0.0.1:7000 --size 4096 --window 64 --requests 200 --json
  wirecall bench tcp:127.0.0.1:7000 --method sleep --body 5 --rate 2000 --duration 2 -w 64
  wirecall bench udp:127.0.0.1:7000 --body @request.bin --progress
  wirecall bench tls:localhost:7443 --ca ca.pem --connections 4 --window 64";

/// The command line of `wirecall bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Where the server listens
    #[arg(value_name = "ENDPOINT")]
    pub(crate) endpoint: Endpoint,
    /// The method to call
    #[arg(long, value_name = "NAME", default_value = "echo")]
    pub(crate) method: String,
    /// Request body size in bytes (a body carrying each call's number)
    #[arg(long, value_name = "BYTES", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_BODY)))]
    pub(crate) size: u32,
    /// The request body of every call: TEXT, or @FILE for a file's bytes
    #[arg(long, value_name = "TEXT|@FILE", conflicts_with = "size")]
    pub(crate) body: Option<String>,
    /// Client connections (one thread each)
    #[arg(long, short = 'c', value_name = "C", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) connections: u32,
    /// Calls in flight per connection at most (1: ping-pong)
    #[arg(long, short = 'w', value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_IN_FLIGHT_LIMIT)))]
    pub(crate) window: u32,
    /// Open loop: this many calls per second over all connections, at fixed times;
    /// latency from each call's intended send time
    #[arg(long, short = 'r', value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub(crate) rate: Option<u64>,
    /// Stop after this many calls in all
    #[arg(long, short = 'n', value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) requests: Option<u64>,
    /// Stop making calls after this many seconds (default: 10)
    #[arg(long, short = 'd', value_name = "SECS", value_parser = parse_secs)]
    pub(crate) duration: Option<Duration>,
    /// Milliseconds each call may take before it counts as timed out (0: no timeout)
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub(crate) timeout: u64,
    /// Largest datagram sent on unix-dgram: and udp: (default: 1232 on udp:, 65536 on
    /// unix-dgram:; 104 to 16777216)
    #[arg(long, value_name = "BYTES",
          value_parser = crate::usize_in(MIN_DATAGRAM, MAX_DATAGRAM_LIMIT))]
    pub(crate) max_datagram: Option<usize>,
    /// Print one JSON object instead of the text report (and errors as JSON)
    #[arg(long)]
    pub(crate) json: bool,
    /// Show progress on stderr even when it is not a terminal: one line a second
    #[arg(long)]
    pub(crate) progress: bool,
    #[command(flatten)]
    pub(crate) tls: crate::call::TlsArgs,
}

/// Seconds as a decimal number (`2`, `0.5`), above zero and at most a day.
fn parse_secs(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected seconds above 0 and at most 86400, got {text:?}"
        )),
    }
}

/// Why bench stopped before a report: one line, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// Says it: `wirecall: <message>` on stderr, and with `json` one JSON object on stdout
    /// (`error`, `exit_code`, `execution`: nothing ran, whatever the failure).
    fn report(&self, json: bool) -> ExitCode {
        eprintln!("wirecall: {}", self.message);
        if json {
            let object = serde_json::json!({
                "error": self.message,
                "exit_code": self.code,
                "execution": Execution::NotExecuted.to_string(),
            });
            let mut out = std::io::stdout().lock();
            // Best effort: the exit code says it too.
            let _ = writeln!(out, "{object}").and_then(|()| out.flush());
        }
        ExitCode::from(self.code)
    }
}

impl BenchArgs {
    /// The run these arguments ask for.
    ///
    /// # Errors
    ///
    /// A `--body @FILE` that cannot be read, or is larger than bench sends.
    fn config(&self) -> Result<BenchConfig, Failure> {
        let mut config = BenchConfig::new(self.endpoint.clone());
        config.method.clone_from(&self.method);
        config.body = match &self.body {
            None => Body::Counter(self.size as usize),
            Some(text) => match text.strip_prefix('@') {
                Some(path) => Body::Fixed(read_body(path)?),
                None => Body::Fixed(text.as_bytes().to_vec()),
            },
        };
        config.check = Check::for_method(&self.method, &config.body);
        config.connections = self.connections as usize;
        config.window = self.window as usize;
        config.rate = self.rate;
        config.limit = match (self.requests, self.duration) {
            (Some(n), _) => Limit::Requests(n),
            (None, Some(d)) => Limit::Duration(d),
            (None, None) => Limit::Duration(Duration::from_secs(10)),
        };
        config.timeout = (self.timeout > 0).then(|| Duration::from_millis(self.timeout));
        config.max_datagram = self.max_datagram;
        config.tls = self
            .tls
            .connector(&self.endpoint)
            .map_err(|message| Failure {
                message,
                code: crate::EXIT_USAGE,
            })?;
        Ok(config)
    }
}

/// The bytes of `--body @path`, up to [`MAX_BODY`].
fn read_body(path: &str) -> Result<Vec<u8>, Failure> {
    let failure = |message: String| Failure {
        message,
        code: crate::EXIT_FAILURE,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| failure(format!("cannot read the body from {path}: {e}")))?;
    let mut body = Vec::new();
    file.take(u64::from(MAX_BODY) + 1)
        .read_to_end(&mut body)
        .map_err(|e| failure(format!("cannot read the body from {path}: {e}")))?;
    if body.len() > MAX_BODY as usize {
        return Err(failure(format!(
            "the body in {path} is over {MAX_BODY} bytes, the most bench sends"
        )));
    }
    Ok(body)
}

/// `wirecall bench`: runs the load and prints the report; the exit code is described in
/// [`HELP`].
#[must_use]
pub(crate) fn command(args: &BenchArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(failure) => return failure.report(args.json),
    };
    let mut progress = Progress::new(&config, args.progress);
    let shown = progress.is_shown();
    let result = {
        let mut tick = |n: u64| progress.tick(n);
        run(&config, shown.then_some(&mut tick as &mut dyn FnMut(u64)))
    };
    progress.finish();
    let report = match result {
        Ok(report) => report,
        Err(e) => return run_failure(&e, &config).report(args.json),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", report.to_json(&config))
    } else {
        writeln!(out, "{}\n{report}", heading(&config))
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        eprintln!("wirecall: cannot write the report: {e}");
        return ExitCode::FAILURE;
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        if let Some(e) = &report.first_error {
            eprintln!(
                "wirecall: {} of {} calls failed ({} timed out); first: {e}",
                report.errors.saturating_add(report.timeouts),
                report.calls,
                report.timeouts
            );
        }
        ExitCode::FAILURE
    }
}

/// The text report's first line: what was run.
fn heading(config: &BenchConfig) -> String {
    let body = match &config.body {
        Body::Counter(size) => format!("{size}-byte bodies"),
        Body::Fixed(bytes) => format!("a {}-byte body (--body)", bytes.len()),
    };
    let pace = match config.rate {
        Some(rate) => format!(", open loop at {rate} calls/s"),
        None => String::new(),
    };
    format!(
        "wirecall bench {}: {} with {body}, {} connection(s) x window {}{pace}",
        config.endpoint, config.method, config.connections, config.window
    )
}

/// The line and exit code of a run that stopped before its report.
fn run_failure(e: &RunError, config: &BenchConfig) -> Failure {
    match e {
        RunError::Client(
            e @ (Error::Connect { .. } | Error::Resolve { .. } | Error::TlsHandshake { .. }),
        ) => Failure {
            message: e.to_string(),
            code: crate::EXIT_CONNECT,
        },
        RunError::TooLarge { len, limit } => Failure {
            message: format!(
                "{} [not executed]",
                crate::call::too_large(&config.endpoint, *len, *limit, config.body.len())
            ),
            code: crate::EXIT_REJECTED,
        },
        RunError::Client(e) => Failure {
            message: e.to_string(),
            code: crate::EXIT_FAILURE,
        },
    }
}

/// Progress on stderr: a bar on a terminal; with `--progress` elsewhere, a line a second.
enum Progress {
    None,
    Bar(indicatif::ProgressBar),
    Lines {
        start: Instant,
        /// When the last line was printed, and the calls then.
        last: (Instant, u64),
    },
}

impl Progress {
    fn new(config: &BenchConfig, asked: bool) -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bar(progress_bar(config))
        } else if asked {
            let now = Instant::now();
            Self::Lines {
                start: now,
                last: (now, 0),
            }
        } else {
            Self::None
        }
    }

    fn is_shown(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// `calls` have ended so far.
    fn tick(&mut self, calls: u64) {
        match self {
            Self::None => {}
            Self::Bar(bar) => bar.set_position(calls),
            Self::Lines { start, last } => {
                let now = Instant::now();
                let secs = now.saturating_duration_since(last.0).as_secs_f64();
                if secs < 1.0 {
                    return;
                }
                let rate = calls.saturating_sub(last.1) as f64 / secs;
                eprintln!(
                    "wirecall bench: {:.0} s, {calls} calls, {rate:.0} calls/s",
                    now.saturating_duration_since(*start).as_secs_f64()
                );
                *last = (now, calls);
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The progress bar on a terminal, with the rate rounded to whole calls per second.
fn progress_bar(config: &BenchConfig) -> indicatif::ProgressBar {
    let bar = match config.limit {
        Limit::Requests(n) => indicatif::ProgressBar::new(n),
        Limit::Duration(_) => indicatif::ProgressBar::new_spinner(),
    };
    let template = match config.limit {
        Limit::Requests(_) => "{bar:40} {pos}/{len} calls, {rate}, {elapsed}",
        Limit::Duration(_) => "{spinner} {pos} calls, {rate}, {elapsed}",
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} calls/s", state.per_sec());
            },
        ));
    }
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut all = vec!["bench", "tcp:127.0.0.1:7000"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|cli| cli.args)
    }

    #[test]
    fn a_body_is_text_or_a_file_and_conflicts_with_size() {
        let config = parse(&["--body", "5", "--method", "sleep"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(config.body, Body::Fixed(b"5".to_vec()));
        assert_eq!(config.check, Check::Success);
        assert!(parse(&["--body", "x", "--size", "8"]).is_err());
        let failure = parse(&["--body", "@/no/such/file"])
            .unwrap()
            .config()
            .unwrap_err();
        assert_eq!(failure.code, crate::EXIT_FAILURE);
        assert!(failure.message.contains("/no/such/file"), "{failure:?}");
        let default = parse(&[]).unwrap().config().unwrap();
        assert_eq!(default.body, Body::Counter(32));
        assert_eq!(default.check, Check::Echo);
        assert_eq!(default.rate, None);
    }

    #[test]
    fn a_rate_is_whole_calls_per_second_above_zero() {
        assert_eq!(parse(&["--rate", "2000"]).unwrap().rate, Some(2000));
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--rate", "1.5"]).is_err());
    }
}
