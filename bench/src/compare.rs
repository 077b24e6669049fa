//! `wirecall-bench compare`: every figure in one run, servers and clients as separate
//! processes pinned with `taskset`, repeated, medians, one table.
//!
//! The repeats are the outer loop: pass 1 measures every cell once, then pass 2, and so
//! on, so a noisy minute on the shared machine spreads over all cells instead of sinking
//! one of them, and the ratios (taken within the run) stay fair.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::{Result, Transport};

/// The command line of `compare`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// One pass of 0.25 s per figure (about a minute), for a first look
    #[arg(long)]
    quick: bool,
    /// Passes over every figure; each figure is the median (default: 5, quick: 1)
    #[arg(long)]
    repeats: Option<usize>,
    /// Seconds of calls per figure and pass (default: 0.5, quick: 0.25)
    #[arg(long)]
    secs: Option<f64>,
    /// Body sizes in bytes
    #[arg(long, value_delimiter = ',', default_value = "32,4096")]
    sizes: Vec<usize>,
    /// The `wirecall` binary (default: next to this one)
    #[arg(long)]
    wirecall: Option<PathBuf>,
    /// Also write every sample as JSON to this file
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where the two ends run.
#[derive(Debug, Clone, Copy)]
struct Placement {
    name: &'static str,
    client_cpu: u32,
    server_cpu: u32,
}

const PLACEMENTS: [Placement; 2] = [
    Placement {
        name: "same CPU (both on 0)",
        client_cpu: 0,
        server_cpu: 0,
    },
    Placement {
        name: "split (client 0, server 1)",
        client_cpu: 0,
        server_cpu: 1,
    },
];

/// Which implementation: raw, tokio, or wirecall with this many worker threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Impl {
    Raw,
    Tokio,
    /// tarpc with its bincode serde transport: what a Rust user picks instead of wirecall.
    Tarpc,
    Wirecall(usize),
    /// wirecall (0 workers) calling the typed echo (`typed/echo`, by its key) instead of
    /// `echo`: what typing a call costs.
    WirecallTyped,
    /// wirecall's tokio driver, server and client.
    WirecallTokio,
    /// wirecall's tokio driver's server, with `wirecall bench` (the mio client) as the
    /// client: the server measured with the same client as `wirecall serve`.
    WirecallTokioServer,
    /// wirecall (0 workers) over `tls:` (TLS 1.3 over TCP, a certificate the run makes),
    /// next to wirecall over `tcp:`: what encrypting costs.
    WirecallTls,
}

impl Impl {
    /// The `server`/`client` kind of this binary that runs it.
    fn kind(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Tokio => "tokio",
            Self::Tarpc => "tarpc",
            Self::WirecallTokio | Self::WirecallTokioServer => "wirecall-tokio",
            Self::Wirecall(_) | Self::WirecallTyped | Self::WirecallTls => "wirecall",
        }
    }
}

/// One figure of the table (for each size and placement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    imp: Impl,
    transport: Transport,
    window: usize,
}

impl Cell {
    fn label(&self) -> String {
        let imp = match self.imp {
            Impl::Raw => "raw".to_owned(),
            Impl::Tokio => "tokio".to_owned(),
            Impl::Tarpc => "tarpc".to_owned(),
            Impl::Wirecall(w) => format!("wirecall {w}w"),
            Impl::WirecallTyped => "wirecall typed".to_owned(),
            Impl::WirecallTokio => "wc-tokio".to_owned(),
            Impl::WirecallTokioServer => "wc-tokio srv".to_owned(),
            Impl::WirecallTls => "wirecall 0w".to_owned(),
        };
        let scheme = match self.imp {
            Impl::WirecallTls => "tls",
            _ => self.transport.scheme(),
        };
        let mode = if self.window == 1 {
            "ping-pong".to_owned()
        } else {
            format!("window {}", self.window)
        };
        format!("{imp:<12} {scheme:<10} {mode}")
    }

    /// The plain wirecall figure (0 workers, same transport and window) a TLS or tarpc one
    /// is compared with.
    fn plain(&self) -> Cell {
        Cell {
            imp: Impl::Wirecall(0),
            ..*self
        }
    }

    /// The raw figure this one is compared with: same transport and window.
    fn raw(&self) -> Cell {
        Cell {
            imp: Impl::Raw,
            ..*self
        }
    }

    fn tokio(&self) -> Cell {
        Cell {
            imp: Impl::Tokio,
            ..*self
        }
    }
}

const WINDOW: usize = 64;

fn cells(wirecall_transports: &[Transport]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for transport in Transport::ALL {
        cells.push(Cell {
            imp: Impl::Raw,
            transport,
            window: 1,
        });
    }
    for transport in [Transport::Unix, Transport::Tcp] {
        cells.push(Cell {
            imp: Impl::Raw,
            transport,
            window: WINDOW,
        });
        for window in [1, WINDOW] {
            for imp in [Impl::Tokio, Impl::Tarpc] {
                cells.push(Cell {
                    imp,
                    transport,
                    window,
                });
            }
        }
    }
    for &transport in wirecall_transports {
        for window in [1, WINDOW] {
            for imp in [Impl::WirecallTokio, Impl::WirecallTokioServer] {
                cells.push(Cell {
                    imp,
                    transport,
                    window,
                });
            }
            for imp in [Impl::Wirecall(0), Impl::Wirecall(1), Impl::WirecallTyped] {
                cells.push(Cell {
                    imp,
                    transport,
                    window,
                });
            }
            if transport == Transport::Tcp {
                cells.push(Cell {
                    imp: Impl::WirecallTls,
                    transport,
                    window,
                });
            }
        }
    }
    cells.sort();
    cells
}

/// What every measurement needs.
struct Env {
    this: PathBuf,
    wirecall: PathBuf,
    dir: PathBuf,
    secs: f64,
    tls: Tls,
}

/// The files of the TLS figures: a CA the client trusts and the server's certificate
/// (for 127.0.0.1) and key, made by the run in its directory.
#[derive(Clone)]
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn make(dir: &Path) -> Result<Self> {
        let ca = wirecall_tests::tls::TestCa::new(dir, "bench")?;
        let server = ca.issue("bench-server", &["127.0.0.1"], None)?;
        Ok(Self {
            ca: ca.cert.clone(),
            cert: server.cert,
            key: server.key,
        })
    }
}

/// A started server process, stopped (by its pid) on drop.
struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, then SIGKILL if it has not gone within 5 s; only ever the child we started.
pub(crate) fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn pinned(cpu: u32, program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(cpu.to_string()).arg(program);
    command
}

/// Starts a server for `cell` on `cpu` and waits for its `listening on` line.
fn start_server(env: &Env, cell: &Cell, cpu: u32) -> Result<Server> {
    let path = env.dir.join(format!("{}.sock", cell.transport.scheme()));
    let _ = std::fs::remove_file(&path);
    let addr = if matches!(cell.transport, Transport::Unix | Transport::UnixDgram) {
        path.display().to_string()
    } else {
        "127.0.0.1:0".to_owned()
    };
    let mut command = match cell.imp {
        Impl::Raw | Impl::Tokio | Impl::Tarpc | Impl::WirecallTokio | Impl::WirecallTokioServer => {
            let kind = cell.imp.kind();
            let mut c = pinned(cpu, &env.this);
            c.args(["server", kind, "--transport", cell.transport.scheme()])
                .args(["--addr", &addr, "--lifetime", "300"]);
            c
        }
        Impl::Wirecall(_) | Impl::WirecallTyped | Impl::WirecallTls => {
            let workers = match cell.imp {
                Impl::Wirecall(workers) => workers,
                _ => 0,
            };
            let mut c = pinned(cpu, &env.wirecall);
            let scheme = match cell.imp {
                Impl::WirecallTls => "tls",
                _ => cell.transport.scheme(),
            };
            c.arg("serve")
                .arg("--listen")
                .arg(format!("{scheme}:{addr}"))
                .args(["--workers", &workers.to_string()]);
            if cell.imp == Impl::WirecallTls {
                c.arg("--cert").arg(&env.tls.cert);
                c.arg("--key").arg(&env.tls.key);
            }
            if cell.transport == Transport::Udp {
                // Room for 4 KiB bodies (the default, 1232, fits any network path).
                c.args(["--max-datagram", "8192"]);
            }
            c
        }
    };
    let stderr = std::fs::File::create(env.dir.join("server.stderr"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut server = Server {
        child,
        endpoint: String::new(),
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.starts_with("listening on ") => {
            server.endpoint = line
                .trim_end()
                .trim_start_matches("listening on ")
                .to_owned();
            Ok(server)
        }
        _ => {
            stop(&mut server.child);
            let log = std::fs::read_to_string(env.dir.join("server.stderr")).unwrap_or_default();
            Err(format!("server did not start: {}", log.trim()).into())
        }
    }
}

/// Runs the client for `cell` against `endpoint` on `cpu`; returns calls per second.
fn run_client(env: &Env, cell: &Cell, size: usize, endpoint: &str, cpu: u32) -> Result<f64> {
    let mut command = match cell.imp {
        Impl::Raw | Impl::Tokio | Impl::Tarpc | Impl::WirecallTokio => {
            let kind = cell.imp.kind();
            let (_, addr) = endpoint.split_once(':').ok_or("bad endpoint")?;
            let mut c = pinned(cpu, &env.this);
            c.args(["client", kind, "--transport", cell.transport.scheme()])
                .args(["--addr", addr, "--size", &size.to_string()])
                .args(["--window", &cell.window.to_string()])
                .args(["--secs", &env.secs.to_string()]);
            c
        }
        Impl::Wirecall(_) | Impl::WirecallTyped | Impl::WirecallTokioServer | Impl::WirecallTls => {
            let mut c = pinned(cpu, &env.wirecall);
            // A lost call ends after 1 s (and the figure fails), not the default 5 s.
            c.args(["bench", endpoint, "--json", "--timeout", "1000"])
                .args(["--size", &size.to_string()])
                .args(["--window", &cell.window.to_string()])
                .args(["--duration", &env.secs.to_string()]);
            if cell.imp == Impl::WirecallTyped {
                c.args(["--method", "typed/echo"]);
            }
            if cell.imp == Impl::WirecallTls {
                c.arg("--ca").arg(&env.tls.ca);
            }
            if cell.transport == Transport::Udp {
                // The server's datagrams (above); the client keeps the default otherwise.
                c.args(["--max-datagram", "8192"]);
            }
            c
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = Duration::from_secs_f64(env.secs) + Duration::from_secs(30);
    let output = match rx.recv_timeout(limit) {
        Ok(output) => output?,
        Err(_) => {
            // Bounded: the client we started is ended by its pid.
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return Err("the client did not finish in time".into());
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(text.trim()).map_err(|_| {
        format!(
            "client failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    let errors = json["errors"].as_u64().unwrap_or(u64::MAX);
    let timeouts = json["timeouts"].as_u64().unwrap_or(u64::MAX);
    if !output.status.success() || errors > 0 || timeouts > 0 {
        return Err(format!(
            "client reported {errors} errors, {timeouts} timeouts ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    json["calls_per_sec"]
        .as_f64()
        .ok_or_else(|| "no calls_per_sec".into())
}

fn measure(env: &Env, cell: &Cell, size: usize, placement: &Placement) -> Result<f64> {
    let server = start_server(env, cell, placement.server_cpu)?;
    let result = run_client(env, cell, size, &server.endpoint, placement.client_cpu);
    drop(server);
    result
}

/// The wirecall transports and sizes that work (a short ping-pong run succeeds), with a
/// note for each that does not.
fn probe_wirecall(env: &Env, sizes: &[usize], notes: &mut Vec<String>) -> Vec<(Transport, usize)> {
    let mut works = Vec::new();
    let probe = Env {
        secs: 0.05,
        this: env.this.clone(),
        wirecall: env.wirecall.clone(),
        dir: env.dir.clone(),
        tls: env.tls.clone(),
    };
    for transport in Transport::ALL {
        let cell = Cell {
            imp: Impl::Wirecall(0),
            transport,
            window: 1,
        };
        for &size in sizes {
            match measure(&probe, &cell, size, &PLACEMENTS[1]) {
                Ok(_) => works.push((transport, size)),
                Err(e) => notes.push(format!(
                    "wirecall over {} not measured with {size}-byte bodies: {e}",
                    transport.scheme()
                )),
            }
        }
    }
    works
}

type Samples = BTreeMap<(usize, usize, Cell), Vec<f64>>;

/// Runs the comparison and prints the table.
pub(crate) fn run(args: &Args) -> Result<()> {
    let this = std::env::current_exe()?;
    let wirecall = match &args.wirecall {
        Some(path) => path.clone(),
        None => this.with_file_name("wirecall"),
    };
    if !wirecall.exists() {
        return Err(format!(
            "no wirecall binary at {} (build it: cargo build --release -p wirecall-cli -p wirecall-bench, or pass --wirecall PATH)",
            wirecall.display()
        )
        .into());
    }
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 1 } else { 5 })
        .max(1);
    let secs = args.secs.unwrap_or(if args.quick { 0.25 } else { 0.5 });
    let dir = std::env::temp_dir().join(format!("wirecall-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tls = Tls::make(&dir)?;
    let env = Env {
        this,
        wirecall,
        dir,
        secs,
        tls,
    };
    let result = run_in(&env, args, repeats);
    let _ = std::fs::remove_dir_all(&env.dir);
    result
}

fn run_in(env: &Env, args: &Args, repeats: usize) -> Result<()> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let works = probe_wirecall(env, &args.sizes, &mut notes);
    let mut transports: Vec<Transport> = works.iter().map(|(t, _)| *t).collect();
    transports.dedup();
    let cells = cells(&transports);
    let total = repeats * args.sizes.len() * PLACEMENTS.len() * cells.len();
    eprintln!(
        "{} figures x {} sizes x {} placements x {repeats} passes of {} s = {total} runs",
        cells.len(),
        args.sizes.len(),
        PLACEMENTS.len(),
        env.secs
    );
    let mut samples: Samples = BTreeMap::new();
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut done = 0;
    for pass in 0..repeats {
        for (p, placement) in PLACEMENTS.iter().enumerate() {
            for &size in &args.sizes {
                for cell in &cells {
                    if matches!(
                        cell.imp,
                        Impl::Wirecall(_)
                            | Impl::WirecallTyped
                            | Impl::WirecallTokio
                            | Impl::WirecallTokioServer
                            | Impl::WirecallTls
                    ) && !works.contains(&(cell.transport, size))
                    {
                        continue;
                    }
                    let key = format!("{} {size} B, {}", cell.label(), placement.name);
                    if failures.contains_key(&key) {
                        // Failed in an earlier pass: not retried (its timeouts cost time).
                        continue;
                    }
                    match measure(env, cell, size, placement) {
                        Ok(rate) => samples.entry((size, p, *cell)).or_default().push(rate),
                        Err(e) => {
                            failures.insert(key, e.to_string());
                        }
                    }
                    done += 1;
                }
                eprintln!(
                    "pass {}/{repeats}: {} done, {done}/{total} runs, {:.0} s",
                    pass + 1,
                    placement.name,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let table = table(&samples, &cells, &args.sizes);
    println!("{table}");
    println!("{}", tls_ratios(&samples, &cells, &args.sizes));
    println!("{}", tarpc_ratios(&samples, &cells, &args.sizes));
    for note in &notes {
        println!("note: {note}");
    }
    for (what, why) in &failures {
        println!("failed: {what}: {why}");
    }
    println!(
        "{repeats} passes of {} s per figure; medians; {:.0} s in all",
        env.secs,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.out {
        let json: Vec<serde_json::Value> = samples
            .iter()
            .map(|((size, p, cell), rates)| {
                serde_json::json!({
                    "figure": cell.label().split_whitespace().collect::<Vec<_>>().join(" "),
                    "size": size,
                    "placement": PLACEMENTS.get(*p).map_or("", |pl| pl.name),
                    "calls_per_sec": rates,
                    "median": median(rates),
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

pub(crate) fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted.get(n / 2).copied().unwrap_or(0.0),
        _ => {
            (sorted.get(n / 2 - 1).copied().unwrap_or(0.0)
                + sorted.get(n / 2).copied().unwrap_or(0.0))
                / 2.0
        }
    }
}

/// (max - min) / median, in percent: how much the passes disagreed.
fn spread(rates: &[f64]) -> f64 {
    let (min, max) = rates
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let m = median(rates);
    if m > 0.0 {
        (max - min) / m * 100.0
    } else {
        0.0
    }
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else {
        format!("{:.1}k", rate / 1e3)
    }
}

/// wirecall over `tls:` as a ratio of wirecall over `tcp:` (0 workers both), per size,
/// placement and window.
fn tls_ratios(samples: &Samples, cells: &[Cell], sizes: &[usize]) -> String {
    let mut out = String::from("wirecall tls: / tcp: (0 workers, same run)");
    for &size in sizes {
        for (p, placement) in PLACEMENTS.iter().enumerate() {
            for cell in cells.iter().filter(|c| c.imp == Impl::WirecallTls) {
                let get = |c: &Cell| {
                    samples
                        .get(&(size, p, *c))
                        .filter(|r| !r.is_empty())
                        .map(|r| median(r))
                };
                let ratio = match (get(cell), get(&cell.plain())) {
                    (Some(tls), Some(tcp)) if tcp > 0.0 => format!("{:.2}", tls / tcp),
                    _ => "-".to_owned(),
                };
                let mode = if cell.window == 1 {
                    "ping-pong".to_owned()
                } else {
                    format!("window {}", cell.window)
                };
                let _ = write!(out, "\n  {size} B, {mode}, {}: {ratio}", placement.name);
            }
        }
    }
    out
}

/// wirecall (0 workers: `wirecall serve` and `wirecall bench`) as a ratio of tarpc, per
/// size, placement, stream transport and window.
fn tarpc_ratios(samples: &Samples, cells: &[Cell], sizes: &[usize]) -> String {
    let mut out = String::from("wirecall 0w / tarpc (same run)");
    for &size in sizes {
        for (p, placement) in PLACEMENTS.iter().enumerate() {
            for cell in cells.iter().filter(|c| c.imp == Impl::Tarpc) {
                let get = |c: &Cell| {
                    samples
                        .get(&(size, p, *c))
                        .filter(|r| !r.is_empty())
                        .map(|r| median(r))
                };
                let ratio = match (get(&cell.plain()), get(cell)) {
                    (Some(wirecall), Some(tarpc)) if tarpc > 0.0 => {
                        format!("{:.2}", wirecall / tarpc)
                    }
                    _ => "-".to_owned(),
                };
                let mode = if cell.window == 1 {
                    "ping-pong".to_owned()
                } else {
                    format!("window {}", cell.window)
                };
                let scheme = cell.transport.scheme();
                let _ = write!(
                    out,
                    "\n  {size} B, {scheme}, {mode}, {}: {ratio}",
                    placement.name
                );
            }
        }
    }
    out
}

fn table(samples: &Samples, cells: &[Cell], sizes: &[usize]) -> String {
    let mut out = String::new();
    let get = |size: usize, p: usize, cell: &Cell| {
        samples
            .get(&(size, p, *cell))
            .filter(|r| !r.is_empty())
            .map(|r| median(r))
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    };
    for &size in sizes {
        let _ = writeln!(
            out,
            "\n{size}-byte bodies, calls/s (median), spread, x raw, x tokio"
        );
        let _ = write!(out, "{:<36}", "figure");
        for placement in PLACEMENTS {
            let _ = write!(out, " | {:<33}", placement.name);
        }
        let _ = writeln!(out);
        for cell in cells {
            let _ = write!(out, "{:<36}", cell.label());
            for p in 0..PLACEMENTS.len() {
                let own = get(size, p, cell);
                let spread = samples
                    .get(&(size, p, *cell))
                    .map_or("-".to_owned(), |r| format!("{:.0}%", spread(r)));
                let raw = (cell.imp != Impl::Raw)
                    .then(|| get(size, p, &cell.raw()))
                    .flatten();
                let tokio = (cell.imp != Impl::Tokio && cell.transport.is_stream())
                    .then(|| get(size, p, &cell.tokio()))
                    .flatten();
                let _ = write!(
                    out,
                    " | {:>8} {:>5} {:>6} {:>7}",
                    own.map_or("-".to_owned(), human),
                    spread,
                    ratio(own, raw),
                    ratio(own, tokio)
                );
            }
            let _ = writeln!(out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(spread(&[1.0, 2.0, 3.0]), 100.0);
    }

    #[test]
    fn every_wirecall_figure_has_a_raw_one_for_streams() {
        let cells = cells(&Transport::ALL);
        for cell in &cells {
            if cell.window == 1 || cell.transport.is_stream() {
                assert!(cells.contains(&cell.raw()), "{cell:?}");
            }
        }
        // Per wirecall transport and window: 0w, 1w, typed, wc-tokio, wc-tokio srv; and
        // over TCP also 0w over tls:, each with its plain figure.
        // tarpc: both streams, both windows.
        assert_eq!(cells.len(), 4 + 2 * 3 + 4 * 10 + 2 + 4);
        for cell in cells
            .iter()
            .filter(|c| matches!(c.imp, Impl::WirecallTls | Impl::Tarpc))
        {
            assert!(cells.contains(&cell.plain()), "{cell:?}");
        }
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("unix-dgram".parse::<Transport>(), Ok(Transport::UnixDgram));
    }
}
