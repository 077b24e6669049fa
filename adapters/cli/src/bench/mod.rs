//! `wirecall bench`: the command line of the load generator in [`load`].

mod load;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use wirecall::config::{MAX_FRAME_LIMIT, MAX_IN_FLIGHT_LIMIT};
use wirecall::{Endpoint, Error};

use self::load::{BenchConfig, Check, Limit, run};

/// The help text after `wirecall bench --help`'s options.
pub(crate) const HELP: &str = "\
Opens --connections clients, each keeping --window calls in flight (1: ping-pong), and
calls METHOD until --requests calls are made or --duration seconds have passed (default:
10 s). Connecting is not timed. Every answer is checked: for echo it must be the request
body byte for byte, for upper the body upper-cased; a wrong answer counts as an error.
Other methods are only checked for success.

Prints calls per second, errors, timeouts and the latency percentiles (p50, p90, p99,
p99.9, max); with --json one JSON object on stdout instead, with the fields calls, ok,
errors, mismatches, timeouts, elapsed_secs, calls_per_sec, p50_us, p90_us, p99_us,
p999_us, max_us, mean_us (and the settings). A progress bar is drawn on stderr when it
is a terminal.

Exit codes:
  0  every call succeeded with the right answer
  1  some calls failed, timed out or got a wrong answer (the report says how many), or
     another error
  2  usage error
  8  could not connect

Examples:
  wirecall bench unix:/tmp/wirecall.sock --requests 100000
  wirecall bench tcp:127.0.0.1:7000 --connections 4 --window 64 --duration 10
  wirecall bench tcp:127.0.0.1:7000 --size 4096 --window 64 --requests 200 --json";

/// The command line of `wirecall bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Where the server listens
    #[arg(value_name = "ENDPOINT")]
    pub(crate) endpoint: Endpoint,
    /// The method to call
    #[arg(long, value_name = "NAME", default_value = "echo")]
    pub(crate) method: String,
    /// Request body size in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_FRAME_LIMIT) - 1024))]
    pub(crate) size: u32,
    /// Client connections (one thread each)
    #[arg(long, short = 'c', value_name = "C", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) connections: u32,
    /// Calls in flight per connection (1: ping-pong)
    #[arg(long, short = 'w', value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_IN_FLIGHT_LIMIT)))]
    pub(crate) window: u32,
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
    /// Print one JSON object instead of the text report
    #[arg(long)]
    pub(crate) json: bool,
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

impl BenchArgs {
    /// The run these arguments ask for.
    #[must_use]
    pub(crate) fn config(&self) -> BenchConfig {
        let mut config = BenchConfig::new(self.endpoint.clone());
        config.method.clone_from(&self.method);
        config.check = Check::for_method(&self.method);
        config.size = self.size as usize;
        config.connections = self.connections as usize;
        config.window = self.window as usize;
        config.limit = match (self.requests, self.duration) {
            (Some(n), _) => Limit::Requests(n),
            (None, Some(d)) => Limit::Duration(d),
            (None, None) => Limit::Duration(Duration::from_secs(10)),
        };
        config.timeout = (self.timeout > 0).then(|| Duration::from_millis(self.timeout));
        config
    }
}

/// `wirecall bench`: runs the load and prints the report; the exit code is described in
/// [`HELP`].
#[must_use]
pub(crate) fn command(args: &BenchArgs) -> ExitCode {
    let config = args.config();
    let bar = progress_bar(&config);
    let tick = |n: u64| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    };
    let result = run(&config, bar.as_ref().map(|_| &tick as &dyn Fn(u64)));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(e @ (Error::Connect { .. } | Error::Resolve { .. })) => {
            eprintln!("wirecall: {e}");
            return ExitCode::from(8);
        }
        Err(e) => {
            eprintln!("wirecall: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", report.to_json(&config))
    } else {
        writeln!(
            out,
            "wirecall bench {}: {} with {}-byte bodies, {} connection(s) x window {}\n{report}",
            config.endpoint, config.method, config.size, config.connections, config.window
        )
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

/// A progress bar on stderr, only when stderr is a terminal.
fn progress_bar(config: &BenchConfig) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match config.limit {
        Limit::Requests(n) => indicatif::ProgressBar::new(n),
        Limit::Duration(_) => indicatif::ProgressBar::new_spinner(),
    };
    let template = match config.limit {
        Limit::Requests(_) => "{bar:40} {pos}/{len} calls, {per_sec}, {elapsed}",
        Limit::Duration(_) => "{spinner} {pos} calls, {per_sec}, {elapsed}",
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    Some(bar)
}
