//! Running `lossy_relay` (this crate's UDP relay that drops, duplicates and reorders
//! datagrams from a seed) in front of a server, and checking `many_calls`'s report: the
//! parts the end-to-end tests over a bad network share.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::Duration;

use crate::{Output, parse_stats, wait_child};

/// How long the relay may take to start and to stop.
const WAIT: Duration = Duration::from_secs(20);

/// The relay's faults, both ways: percent of datagrams dropped, percent duplicated, and
/// the longest delay of a copy in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Percent dropped.
    pub loss: u32,
    /// Percent duplicated.
    pub dup: u32,
    /// Longest delay of a copy, in milliseconds.
    pub delay_ms: u32,
}

/// A helper program of this crate (`lossy_relay`, `many_calls`), built next to the
/// `wirecall` binary at `bin`.
///
/// # Errors
///
/// It is not built.
pub fn helper(bin: &Path, name: &str) -> Result<PathBuf, String> {
    let path = bin.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built (cargo test --workspace, or cargo build -p wirecall-tests --bins)",
            path.display()
        ))
    }
}

/// A running `lossy_relay`; stopped (its stdin closed) by [`finish`](Self::finish), killed
/// if dropped before.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Where clients send (the relay's address).
    pub addr: String,
}

impl Relay {
    /// Starts `command` (the relay program, perhaps behind `ip netns exec`) relaying to
    /// `upstream` with `faults` from `seed`, for at most 120 s, and waits for its address.
    ///
    /// # Errors
    ///
    /// It did not start or did not say where it listens.
    pub fn start(
        mut command: Command,
        upstream: &str,
        seed: &str,
        faults: Faults,
    ) -> Result<Self, String> {
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(["--seed", seed])
            .args(["--loss", &faults.loss.to_string()])
            .args(["--dup", &faults.dup.to_string()])
            .args(["--delay-ms", &faults.delay_ms.to_string()])
            .args(["--run-for", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the relay: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("the relay's stdout")?;
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(WAIT)
            .map_err(|e| format!("the relay did not start: {e}"))?;
        let addr = first
            .strip_prefix("relay listening on ")
            .ok_or_else(|| format!("the relay said {first:?}"))?
            .to_owned();
        Ok(Self {
            child,
            stdin,
            lines,
            addr,
        })
    }

    /// Stops the relay and returns its counters.
    ///
    /// # Panics
    ///
    /// It does not exit cleanly in time.
    #[must_use]
    pub fn finish(mut self) -> HashMap<String, u64> {
        drop(self.stdin.take());
        assert!(
            wait_child(&mut self.child, WAIT).is_some_and(|s| s.success()),
            "the relay exits cleanly"
        );
        // Every line up to its end of output: the reader thread may still be forwarding
        // the last ones after the process has exited (a bounded wait for each).
        let mut text = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            text.push(line);
        }
        parse_stats(&text.join("\n"))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `name value` lines of `many_calls`'s report `out` on `calls` calls, after checking
/// that every call ended exactly once and no answer was another call's.
///
/// # Panics
///
/// When it did not.
#[must_use]
pub fn checked_summary(out: &Output, calls: usize) -> HashMap<String, u64> {
    let text = out.stdout_text();
    assert_eq!(out.code, Some(0), "{text}\n{}", out.stderr);
    let mut seen = vec![0u32; calls];
    for line in text.lines().filter(|l| l.starts_with("call ")) {
        let n: Option<usize> = line.split(' ').nth(1).and_then(|n| n.parse().ok());
        match n.and_then(|n| seen.get_mut(n)) {
            Some(count) => *count += 1,
            None => panic!("a call that was not made: {line}"),
        }
        assert!(!line.ends_with(" mismatch"), "{line}");
    }
    assert!(
        seen.iter().all(|n| *n == 1),
        "one outcome per call:\n{text}"
    );
    let summary = parse_stats(&text);
    let get = |name: &str| summary.get(name).copied().unwrap_or(u64::MAX);
    assert_eq!(get("outcomes"), calls as u64, "{text}");
    assert_eq!(get("duplicates"), 0, "{text}");
    assert_eq!(get("unended"), 0, "{text}");
    assert_eq!(get("mismatched"), 0, "{text}");
    assert_eq!(
        get("answered") + get("timeouts") + get("failed"),
        calls as u64,
        "{text}"
    );
    summary
}
