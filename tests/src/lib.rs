//! Helpers for the end-to-end tests of the `wirecall` binary. The tests themselves live in
//! `adapters/tests/`, because only there does Cargo build the binary for them and hand its
//! path over (`env!("CARGO_BIN_EXE_wirecall")`); this crate holds what they share:
//! starting a server process and reading the endpoints it listens on, sending it signals,
//! running `wirecall call` with a time bound, parsing `stats`, and polling with a deadline.
//!
//! Every wait here is bounded, and a test only ever signals or kills processes it started
//! (by their pid).
//!
//! [`netns`] makes the two "hosts" of the cross-host test (network namespaces joined by a
//! veth pair). Two small programs help that test too: `lossy_relay` (a UDP relay that
//! drops, duplicates and reorders datagrams from a seed) and `many_calls` (a client
//! making many pipelined calls and reporting every outcome).
//!
//! [`balancers`] starts the real HAProxy and nginx in front of servers (skipping loudly
//! where they are not installed, unless `WIRECALL_REQUIRE_BALANCERS=1`).
//!
//! [`tls`] makes test certificate authorities and the certificates they issue (rcgen).

pub mod balancers;
pub mod conformance;
pub mod lossy;
pub mod netns;
pub mod tls;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// How long a server may take to print its `listening on` lines.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The event loops (`serve --threads`) of every server a [`ServerProcess`] starts, unless
/// its arguments say: 2, so the suite tests the loops sharing endpoints, connection limits
/// and the shutdown on any machine; 1 in the test binaries named `one_loop_*` (the same
/// suites again, `adapters/cli/tests/one_loop/`), so the single loop is tested as well.
/// `WIRECALL_TEST_THREADS` overrides both.
#[must_use]
pub fn server_threads() -> String {
    if let Ok(n) = std::env::var("WIRECALL_TEST_THREADS") {
        return n;
    }
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.starts_with("one_loop_") {
        "1"
    } else {
        "2"
    }
    .to_string()
}

/// `args` with `--threads` [`server_threads`] added, unless they already have it.
fn with_threads(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    if !args
        .iter()
        .any(|a| *a == "--threads" || a.starts_with("--threads="))
    {
        all.push("--threads".to_string());
        all.push(server_threads());
    }
    all
}

/// A `wirecall serve` process started by a test; killed on drop if still running.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The endpoints from its `listening on <endpoint>` lines, in order.
    pub endpoints: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    lines: Receiver<String>,
    _stdin: Option<ChildStdin>,
}

impl ServerProcess {
    /// Starts `bin serve <args>` (with `--threads` [`server_threads`] unless `args` say)
    /// and waits until it has printed one `listening on` line per `--listen` argument.
    ///
    /// # Errors
    ///
    /// The process could not start, exited first (with its stderr), or did not get ready
    /// within [`START_TIMEOUT`].
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let mut command = Command::new(bin);
        command.arg("serve").args(with_threads(args));
        for (k, v) in env {
            command.env(k, v);
        }
        Self::start_command(command, args)
    }

    /// Starts `bin serve <args>` after the shell commands `setup` (say `umask 000` or
    /// `ulimit -n 48`), through `sh -c '<setup>; exec ...'`, so its pid is the server's.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_after(bin: &Path, setup: &str, args: &[&str]) -> Result<Self, String> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{setup}; exec \"$0\" serve \"$@\""))
            .arg(bin)
            .args(with_threads(args));
        Self::start_command(command, args)
    }

    /// Starts `bin serve <args>` inside the network namespace `netns`, through
    /// `ip netns exec` (which becomes the server process, so its pid is the server's).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_in_netns(bin: &Path, netns: &str, args: &[&str]) -> Result<Self, String> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(bin)
            .arg("serve")
            .args(with_threads(args));
        Self::start_command(command, args)
    }

    /// Runs `command` (a `serve` with the `--listen` and `--accept-proxy` arguments among
    /// `args`) and waits for its `listening on` lines, one per endpoint.
    fn start_command(mut command: Command, args: &[&str]) -> Result<Self, String> {
        let values = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|pair| pair.first().is_some_and(|f| *f == flag))
                .filter_map(|pair| pair.get(1).copied())
                .collect()
        };
        let listen = values("--listen");
        let proxied = values("--accept-proxy");
        let want = listen.len() + proxied.iter().filter(|e| !listen.contains(e)).count();
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr_pipe = child.stderr.take().ok_or("no stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let stderr_reader = thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&line);
                line.clear();
            }
        });
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            endpoints: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
            lines,
            _stdin: stdin,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.endpoints.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(ep) = line.strip_prefix("listening on ") {
                        server.endpoints.push(ep.to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "server not ready in time; stderr:\n{}",
                        server.stderr()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(5));
                    return Err(format!(
                        "server exited before it was ready ({status:?}); stderr:\n{}",
                        server.stderr()
                    ));
                }
            }
        }
        Ok(server)
    }

    /// What it printed to stdout after its `listening on` lines, up to its end of output
    /// (waiting at most `timeout` for each line): with `serve --stats-on-exit`, its final
    /// counters, once it has exited.
    #[must_use]
    pub fn rest_of_stdout(&self, timeout: Duration) -> String {
        let mut text = String::new();
        while let Ok(line) = self.lines.recv_timeout(timeout) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The endpoint of a transport (`"unix"`, `"tcp"`, `"unix-dgram"`, `"udp"`): the
    /// first one starting with it.
    #[must_use]
    pub fn endpoint(&self, transport: &str) -> Option<&str> {
        let prefix = format!("{transport}:");
        self.endpoints
            .iter()
            .find(|e| e.starts_with(&prefix))
            .map(String::as_str)
    }

    /// Sends a signal to this process (only ever to it).
    ///
    /// # Errors
    ///
    /// The process is gone or cannot be signalled.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        let raw = i32::try_from(self.child.id()).map_err(|e| e.to_string())?;
        let pid = rustix::process::Pid::from_raw(raw).ok_or("pid 0")?;
        rustix::process::kill_process(pid, signal).map_err(|e| format!("kill {raw}: {e}"))
    }

    /// Waits up to `timeout` for the process to exit; once it has, everything it wrote
    /// to stderr is in [`stderr`](Self::stderr).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(&mut self.child, timeout)?;
        // The pipe ends with the process, so the reader finishes promptly.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Waits up to `timeout` until its stderr contains `needle` (log lines reach the test
    /// through a pipe and a thread, a moment after they are written).
    #[must_use]
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, Duration::from_millis(5), || {
            self.stderr().contains(needle)
        })
    }

    /// Everything it has written to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `timeout` for a child to exit, checking every few milliseconds.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// What a finished command gave.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit code (`None` if killed by a signal or for taking too long).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr, as text.
    pub stderr: String,
}

impl Output {
    /// Stdout as text.
    #[must_use]
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `bin args`, feeding `stdin`, killing it after `timeout`.
///
/// # Errors
///
/// It could not be started, or had to be killed for taking too long.
pub fn run(bin: &Path, args: &[&str], stdin: &[u8], timeout: Duration) -> Result<Output, String> {
    let mut command = Command::new(bin);
    command.args(args);
    run_command(command, stdin, timeout)
}

/// Runs `command` (made with its program, arguments and whatever else, such as the user it
/// runs as), feeding `stdin`, killing it after `timeout`.
///
/// # Errors
///
/// It could not be started, or had to be killed for taking too long.
pub fn run_command(
    mut command: Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    let args: Vec<_> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e}",
                command.get_program().to_string_lossy()
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).map_err(|e| e.to_string())?;
    }
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = String::new();
        let _ = err.read_to_string(&mut v);
        v
    });
    let Some(status) = wait_child(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{args:?} took longer than {timeout:?}"));
    };
    Ok(Output {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Parses `stats` text (`name value` lines) into a map.
#[must_use]
pub fn parse_stats(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Parses `name value` lines (the builtin `whoami`'s answer) into a map of texts.
#[must_use]
pub fn parse_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Calls `f` every `interval` until it returns `true` or `timeout` passes; returns whether
/// it did.
pub fn wait_until(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(interval);
    }
}

/// Runs `bin args` in the network namespace `netns` (through `ip netns exec`), feeding
/// `stdin`, killing it after `timeout`.
///
/// # Errors
///
/// As [`run`].
pub fn run_in_netns(
    netns: &str,
    bin: &Path,
    args: &[&str],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    let bin = bin.to_str().ok_or("a binary path that is not UTF-8")?;
    let mut all = vec!["netns", "exec", netns, bin];
    all.extend_from_slice(args);
    run(Path::new("ip"), &all, stdin, timeout)
}

/// `Ok` if this machine has an IPv6 loopback to test on, else why not.
///
/// # Errors
///
/// The reason to print when skipping.
pub fn ipv6_loopback() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0")
        .map(drop)
        .map_err(|e| format!("no IPv6 loopback here (binding [::1]:0: {e})"))?;
    std::net::UdpSocket::bind("[::1]:0")
        .map(drop)
        .map_err(|e| format!("no IPv6 loopback here (binding udp [::1]:0: {e})"))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_parse_stats() {
        let stats = parse_stats("calls.echo 3\nconnections.open 1\nnot a pair\nbad x\n");
        assert_eq!(stats.get("calls.echo"), Some(&3));
        assert_eq!(stats.get("connections.open"), Some(&1));
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn test_wait_until_is_bounded() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(1), Duration::ZERO, || {
            n += 1;
            n == 3
        }));
        let start = Instant::now();
        assert!(!wait_until(
            Duration::from_millis(20),
            Duration::from_millis(5),
            || false
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn test_run_reports_exit_code_and_output() {
        let out = run(
            Path::new("sh"),
            &["-c", "cat; echo err >&2; exit 3"],
            b"in",
            START_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, "err\n");
        let slow = run(Path::new("sleep"), &["5"], b"", Duration::from_millis(50));
        assert!(slow.is_err());
    }
}
