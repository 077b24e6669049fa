//! The reference server's built-in functions, as served by `wirecall serve`:
//!
//! | method | body | answer |
//! | --- | --- | --- |
//! | `echo` | anything | the body |
//! | `upper` | text | the body upper-cased (Unicode rules if it is UTF-8, else ASCII) |
//! | `time` | ignored | the server's wall clock in RFC 3339, UTC, microseconds: `2026-11-26T15:31:02.123456Z` |
//! | `sleep` | milliseconds as decimal text, at most 600000 | the same number, after that long |
//! | `spin` | microseconds as decimal text, at most 10000 | the same number, after keeping its thread busy that long (a CPU-bound function for benchmarks: it holds the event loop, or a worker with `--workers`) |
//! | `stats` | empty, or a name prefix | the server's counters, one `name value` per line (see [`crate::stats`]); with a prefix such as `datagrams.`, only the lines whose name starts with it |
//! | `list` | ignored | the method names, one per line (typed endpoints by their paths, `wirecall/endpoints` included) |
//! | `whoami` | ignored | who the server takes the caller for, one `name value` per line: `transport` (`tcp`, `tls`, `unix`, `udp`, `unix-dgram`), then `address` (IP peers), `identity` (a TLS peer's verified certificate names, with mutual TLS), `uid`, `gid` and `pid` (Unix stream peers, from the kernel), `path` (Unix datagram peers, with `uid`, `gid` and `pid` when the server has an allowlist and so reads them), and `remaining_ms` (time left before the call's deadline, when it has one) |
//! | `health` | ignored | `up` while the server serves; once it is shutting down (its drain delay included: [`ServerConfig::drain_delay`](crate::ServerConfig::drain_delay)), the error [`ERROR_DRAINING`] `draining`, so a load balancer's health check that calls it (docs/DEPLOYING.md) stops sending new connections before any is told to go away |
//! | `typed/echo` ([`TypedEcho`], a typed endpoint) | bytes | the same bytes |
//!
//! `sleep` waits without holding any thread: it answers through
//! [`Responder::respond_after`], and the event loop sends the answer when the time comes.
//! A bad `sleep` or `spin` body is rejected (`invalid request`), so the call was not
//! executed.
//!
//! The whole `stats` text is about 2 KB, more than one UDP datagram holds by default
//! (1232 bytes): over `udp:`, ask for a part (`stats datagrams.`), or use another
//! transport.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::fmt::Write as _;

use crate::function::{Answer, CallContext, CallFailure, Peer, Register, Responder};
use wirecall_core::typed::Bytes;

/// The longest `sleep`, in milliseconds (10 minutes).
pub const MAX_SLEEP_MS: u64 = 600_000;

/// The longest `spin`, in microseconds (10 ms): enough to make a server CPU-bound, short
/// enough that one call cannot hold a loop for long (any client may call it).
pub const MAX_SPIN_US: u64 = 10_000;

/// The built-in method names, in the order they are registered.
pub const NAMES: [&str; 9] = [
    "echo", "upper", "time", "sleep", "spin", "stats", "list", "whoami", "health",
];

/// The error code of `health` while the server is shutting down: 503, as HTTP says a
/// server is unavailable for now.
pub const ERROR_DRAINING: u32 = 503;

wirecall_core::endpoints! {
    /// The typed echo: the request's bytes back, borrowed from the request (no copy but
    /// the answer's encoding). The benchmarks call it next to the untyped `echo`.
    pub TypedEcho = "typed/echo": Bytes<'a> => Bytes<'a>, ();
}

/// Adds the built-in functions to a server: the mio [`ServerBuilder`](crate::ServerBuilder)
/// or any other runtime's builder that implements [`Register`].
#[must_use]
pub fn register<B: Register>(builder: B) -> B {
    let stats = builder.stats();
    let methods = builder.stats();
    let health = builder.stats();
    builder
        // Into a lent buffer: the benchmarks' calls allocate nothing on the server.
        .function_into("echo", |_, body, answer| {
            answer.extend_from_slice(body);
            Ok(())
        })
        .function("upper", upper)
        .function("time", |_| Ok(rfc3339(SystemTime::now()).into_bytes()))
        .deferred("sleep", sleep)
        .function("spin", spin)
        .function("stats", move |body| {
            let text = stats.snapshot().to_string();
            let prefix = std::str::from_utf8(body).unwrap_or_default().trim();
            Ok(filter_lines(&text, prefix).into_bytes())
        })
        .function("list", move |_| {
            let mut text = String::new();
            for name in methods.methods() {
                text.push_str(&name);
                text.push('\n');
            }
            Ok(text.into_bytes())
        })
        .function_with_context("whoami", |context, _| Ok(whoami(context).into_bytes()))
        .function("health", move |_| {
            if health.recorder().is_draining() {
                Err(CallFailure::error(ERROR_DRAINING, "draining"))
            } else {
                Ok(b"up".to_vec())
            }
        })
        .endpoint_reply::<TypedEcho, _>(|body: Bytes<'_>, reply| reply.send(&Ok(body)))
}

/// The lines of `text` that start with `prefix` (all of them for an empty prefix).
fn filter_lines(text: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        return text.to_owned();
    }
    text.split_inclusive('\n')
        .filter(|line| line.starts_with(prefix))
        .collect()
}

/// `whoami`: the caller as the transport knows it, one `name value` per line.
fn whoami(context: &CallContext<'_>) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = match context.peer() {
        Peer::Tcp(addr) => writeln!(text, "transport tcp\naddress {addr}"),
        Peer::Udp(addr) => writeln!(text, "transport udp\naddress {addr}"),
        Peer::Tls { addr, identity } => {
            let _ = writeln!(text, "transport tls\naddress {addr}");
            match identity {
                Some(identity) => writeln!(text, "identity {identity}"),
                None => Ok(()),
            }
        }
        Peer::Unix(Some(c)) => writeln!(
            text,
            "transport unix\nuid {}\ngid {}\npid {}",
            c.uid, c.gid, c.pid
        ),
        Peer::Unix(None) => writeln!(text, "transport unix"),
        Peer::UnixDatagram { path, credentials } => {
            let _ = writeln!(text, "transport unix-dgram\npath {}", path.display());
            match credentials {
                Some(c) => writeln!(text, "uid {}\ngid {}\npid {}", c.uid, c.gid, c.pid),
                None => Ok(()),
            }
        }
    };
    if let Some(left) = context.remaining() {
        let _ = writeln!(text, "remaining_ms {}", left.as_millis());
    }
    text
}

fn upper(body: &[u8]) -> Answer {
    Ok(match std::str::from_utf8(body) {
        Ok(text) => text.to_uppercase().into_bytes(),
        Err(_) => body.to_ascii_uppercase(),
    })
}

fn sleep(body: &[u8], responder: Responder) {
    match parse_millis(body) {
        Ok(ms) => {
            responder.respond_after(Duration::from_millis(ms), Ok(ms.to_string().into_bytes()))
        }
        Err(failure) => responder.respond(Err(failure)),
    }
}

/// Keeps its thread busy for the body's microseconds (reading the clock, no sleep), then
/// answers the number.
fn spin(body: &[u8]) -> Answer {
    let us = parse_decimal(body, MAX_SPIN_US, "spin takes microseconds")?;
    let start = std::time::Instant::now();
    let until = Duration::from_micros(us);
    while start.elapsed() < until {
        std::hint::spin_loop();
    }
    Ok(us.to_string().into_bytes())
}

/// Decimal milliseconds, surrounding whitespace allowed, at most [`MAX_SLEEP_MS`].
fn parse_millis(body: &[u8]) -> Result<u64, CallFailure> {
    parse_decimal(body, MAX_SLEEP_MS, "sleep takes milliseconds")
}

/// A decimal number from 0 to `max`, surrounding whitespace allowed; `what` starts the
/// rejection's message.
fn parse_decimal(body: &[u8], max: u64, what: &str) -> Result<u64, CallFailure> {
    let text = std::str::from_utf8(body).unwrap_or_default().trim();
    let bad = || CallFailure::invalid_request(format!("{what} as decimal text, 0 to {max}"));
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bad()),
    }
}

/// A wall-clock time as RFC 3339 in UTC with microseconds (times before 1970 show as
/// 1970-01-01T00:00:00.000000Z).
#[must_use]
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian; after
/// Howard Hinnant's `civil_from_days`, for non-negative days only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod test {
    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::new(secs, micros * 1000))
    }

    #[test]
    fn test_rfc3339() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_700_000_000, 123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn test_parse_millis() {
        assert_eq!(parse_millis(b"200").unwrap(), 200);
        assert_eq!(parse_millis(b" 20\n").unwrap(), 20);
        assert_eq!(parse_millis(b"600000").unwrap(), MAX_SLEEP_MS);
        for bad in [
            &b""[..],
            b"-1",
            b"+5",
            b"1.5",
            b"600001",
            b"\xff",
            b"99999999999999999999",
        ] {
            assert!(parse_millis(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn test_filter_lines() {
        let text = "calls.echo 1\nexecutions.echo 1\ndatagrams.sent 2\ndatagrams.dropped 0\n";
        assert_eq!(filter_lines(text, ""), text);
        assert_eq!(
            filter_lines(text, "datagrams."),
            "datagrams.sent 2\ndatagrams.dropped 0\n"
        );
        assert_eq!(filter_lines(text, "nothing"), "");
    }

    #[test]
    fn test_upper() {
        assert_eq!(upper(b"shout").unwrap(), b"SHOUT");
        assert_eq!(upper("straße".as_bytes()).unwrap(), "STRASSE".as_bytes());
        assert_eq!(upper(b"a\xffb").unwrap(), b"A\xffB");
    }
}
