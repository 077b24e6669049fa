//! `many_calls`: makes many pipelined calls with unique bodies over one `wirecall`
//! client, on any transport, and reports every outcome, for the end-to-end tests (run
//! inside a network namespace, where the test cannot call the library itself).
//!
//! ```text
//! many_calls ENDPOINT [--calls 300] [--window 16] [--timeout-ms 10000] [--method echo|upper]
//! ```
//!
//! Prints one line per call, `call N ok`, `call N mismatch` (an answer that is not the
//! call's own, i.e. its body, upper-cased for `upper`) or `call N failed <execution>
//! <error>`, then `name value` lines:
//! `calls`, `outcomes`, `answered`, `mismatched`, `timeouts`, `failed`, `duplicates`
//! (calls that ended more than once: must be 0) and the client's datagram counters
//! (`transmissions`, `retransmissions`, `busy`, `late_responses`, `dropped`). Exits 0 when
//! every call ended exactly once and no answer was another call's.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wirecall::{CallErrorKind, Client, ClientConfig, Endpoint};

#[derive(Debug)]
struct Options {
    endpoint: Endpoint,
    calls: usize,
    window: usize,
    timeout: Duration,
    method: String,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("many_calls: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("many_calls: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let endpoint = args
        .next()
        .ok_or("usage: many_calls ENDPOINT [flags]")?
        .parse::<Endpoint>()
        .map_err(|e| e.to_string())?;
    let mut options = Options {
        endpoint,
        calls: 300,
        window: 16,
        timeout: Duration::from_secs(10),
        method: "echo".into(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--calls" => options.calls = usize::try_from(number()?).map_err(|e| e.to_string())?,
            "--window" => {
                options.window = usize::try_from(number()?).map_err(|e| e.to_string())?;
            }
            "--timeout-ms" => options.timeout = Duration::from_millis(number()?),
            "--method" if value == "echo" || value == "upper" => options.method = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(options)
}

/// The answer a call with `body` must get.
fn expected(options: &Options, body: &str) -> Vec<u8> {
    if options.method == "upper" {
        body.to_uppercase().into_bytes()
    } else {
        body.as_bytes().to_vec()
    }
}

fn run(options: &Options) -> Result<bool, String> {
    let mut client =
        Client::connect(&options.endpoint, ClientConfig::default()).map_err(|e| e.to_string())?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{}-{nanos}", std::process::id());
    // Call number by request id, and each call's body.
    let mut numbers = HashMap::new();
    let mut bodies = Vec::with_capacity(options.calls);
    let mut ended = vec![0u32; options.calls];
    let mut out = std::io::stdout().lock();
    let (mut answered, mut mismatched, mut timeouts, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut next = 0;
    let started = Instant::now();
    while next < options.calls || client.pending() > 0 {
        while next < options.calls && client.pending() < options.window.max(1) {
            // Unique, and of varied length.
            let body = format!("{tag} call {next} {}", "x".repeat(next % 37));
            let sent = client.submit(&options.method, body.as_bytes(), Some(options.timeout));
            match sent {
                Ok(id) => {
                    numbers.insert(id, next);
                }
                Err(e) => {
                    failed += 1;
                    if let Some(n) = ended.get_mut(next) {
                        *n += 1;
                    }
                    let _ = writeln!(out, "call {next} failed {} {e}", e.execution());
                }
            }
            bodies.push(body);
            next += 1;
        }
        let Some((id, outcome)) = client.wait_any() else {
            break;
        };
        let Some(&n) = numbers.get(&id) else {
            return Err(format!("an outcome for call {id}, which was never made"));
        };
        if let Some(count) = ended.get_mut(n) {
            *count += 1;
        }
        match outcome {
            Ok(answer)
                if bodies
                    .get(n)
                    .is_some_and(|b| expected(options, b) == answer) =>
            {
                answered += 1;
                let _ = writeln!(out, "call {n} ok");
            }
            Ok(_) => {
                mismatched += 1;
                let _ = writeln!(out, "call {n} mismatch");
            }
            Err(e) => {
                if matches!(e.kind(), CallErrorKind::TimedOut) {
                    timeouts += 1;
                } else {
                    failed += 1;
                }
                let _ = writeln!(out, "call {n} failed {} {e}", e.execution());
            }
        }
    }
    let elapsed = started.elapsed();
    let outcomes: u64 = ended.iter().map(|n| u64::from(*n)).sum();
    let duplicates = ended.iter().filter(|n| **n > 1).count();
    let never = ended.iter().filter(|n| **n == 0).count();
    let _ = writeln!(out, "calls {}", options.calls);
    let _ = writeln!(out, "outcomes {outcomes}");
    let _ = writeln!(out, "answered {answered}");
    let _ = writeln!(out, "mismatched {mismatched}");
    let _ = writeln!(out, "timeouts {timeouts}");
    let _ = writeln!(out, "failed {failed}");
    let _ = writeln!(out, "duplicates {duplicates}");
    let _ = writeln!(out, "unended {never}");
    let _ = writeln!(out, "elapsed_ms {}", elapsed.as_millis());
    if let Some(s) = client.datagram_stats() {
        let _ = writeln!(out, "transmissions {}", s.transmissions);
        let _ = writeln!(out, "retransmissions {}", s.retransmissions);
        let _ = writeln!(out, "busy {}", s.busy);
        let _ = writeln!(out, "late_responses {}", s.late_responses);
        let _ = writeln!(out, "dropped {}", s.dropped);
    }
    let _ = out.flush();
    let _ = client.close();
    Ok(mismatched == 0 && duplicates == 0 && never == 0)
}
