//! `wirecall-bench threads`: how `wirecall serve` scales over its event loops when the
//! server, not the client, is the bottleneck: calls per second of the CPU-bound builtin
//! `spin` (each call keeps its loop busy for `--spin` µs) with `--threads 1` and with
//! `--threads N`, from `--connections` client connections keeping `--window` calls in flight
//! each, and the ratio.
//!
//! Server and client may both run on every CPU of `--cpus` (`taskset`): the point is that
//! one loop cannot use more than one of them. As in `compare`, the passes are the outer
//! loop (one figure of each server per pass) and the figures are medians.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

use crate::Result;

/// The command line of `threads`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Event loops of the server measured against one
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Microseconds of CPU each call takes on the server
    #[arg(long, default_value_t = 20)]
    spin: u64,
    /// Client connections (one thread each)
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Calls in flight per connection
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Seconds of calls per figure and pass
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Passes; each figure is the median
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The CPUs server and client may run on (`taskset -c`)
    #[arg(long, default_value = "0,1")]
    cpus: String,
    /// The `wirecall` binary (default: next to this one)
    #[arg(long)]
    wirecall: Option<PathBuf>,
}

/// A `wirecall serve` this run started; stopped by its pid on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        crate::compare::stop(&mut self.0);
    }
}

/// Starts `wirecall serve --threads threads` on a Unix socket in `dir`; returns it and the
/// endpoint.
fn serve(
    args: &Args,
    wirecall: &PathBuf,
    dir: &std::path::Path,
    threads: usize,
) -> Result<(Serve, String)> {
    let endpoint = format!("unix:{}", dir.join(format!("t{threads}.sock")).display());
    let mut child = Command::new("taskset")
        .args(["-c", &args.cpus])
        .arg(wirecall)
        .args([
            "serve",
            "--listen",
            &endpoint,
            "--threads",
            &threads.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let server = Serve(child);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.starts_with("listening on ") => Ok((server, endpoint)),
        _ => Err("the server did not start".into()),
    }
}

/// One figure: calls per second of `spin` against `endpoint`.
fn measure(args: &Args, wirecall: &PathBuf, endpoint: &str) -> Result<f64> {
    let output = Command::new("taskset")
        .args(["-c", &args.cpus])
        .arg(wirecall)
        .args(["bench", endpoint, "--json", "--method", "spin"])
        .args(["--body", &args.spin.to_string()])
        .args(["--connections", &args.connections.to_string()])
        .args(["--window", &args.window.to_string()])
        .args(["--duration", &args.secs.to_string()])
        .stdin(Stdio::null())
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|_| format!("bench failed: {}", String::from_utf8_lossy(&output.stderr)))?;
    let errors = json["errors"].as_u64().unwrap_or(u64::MAX);
    let timeouts = json["timeouts"].as_u64().unwrap_or(u64::MAX);
    if !output.status.success() || errors > 0 || timeouts > 0 {
        return Err(format!("bench reported {errors} errors, {timeouts} timeouts").into());
    }
    json["calls_per_sec"]
        .as_f64()
        .ok_or_else(|| "no calls_per_sec".into())
}

/// Runs the measurement and prints the figures.
pub(crate) fn run(args: &Args) -> Result<()> {
    let this = std::env::current_exe()?;
    let wirecall = args
        .wirecall
        .clone()
        .unwrap_or_else(|| this.with_file_name("wirecall"));
    let dir = tempdir()?;
    let result = run_in(args, &wirecall, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wirecall-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn run_in(args: &Args, wirecall: &PathBuf, dir: &std::path::Path) -> Result<()> {
    let mut one = Vec::new();
    let mut many = Vec::new();
    for pass in 0..args.repeats.max(1) {
        for (threads, into) in [(1, &mut one), (args.threads, &mut many)] {
            let (server, endpoint) = serve(args, wirecall, dir, threads)?;
            into.push(measure(args, wirecall, &endpoint)?);
            drop(server);
        }
        eprintln!("pass {}/{} done", pass + 1, args.repeats.max(1));
    }
    let (one, many) = (crate::compare::median(&one), crate::compare::median(&many));
    println!(
        "spin {} µs, {} connections x window {}, server and client on CPUs {}, {} passes of {} s (medians)",
        args.spin, args.connections, args.window, args.cpus, args.repeats, args.secs
    );
    println!("  --threads 1: {one:.0} calls/s");
    println!("  --threads {}: {many:.0} calls/s", args.threads);
    let ratio = if one > 0.0 { many / one } else { 0.0 };
    println!("  ratio: {ratio:.2}");
    Ok(())
}
