//! Warnings that may repeat once per peer (a refused connection, a peer breaking the
//! protocol, a failed TLS handshake, an accept that fails for want of descriptors): logged at most once per
//! interval, with a count of the ones left out, so a flood of bad peers cannot flood the
//! log.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::stats::CloseKind;

/// How often one kind of warning is logged at most.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// One kind of repeating warning. The first occurrence is logged at once; the ones within
/// [`INTERVAL`] after a logged one are only counted, and the next one logged says how many
/// were left out (as does [`Throttle::flush`] at the end). Single-threaded (the event
/// loop's).
#[derive(Debug, Default)]
pub(super) struct Throttle {
    last: Cell<Option<Instant>>,
    left_out: Cell<u64>,
}

impl Throttle {
    /// Logs `message` at warn level unless one like it was logged within the interval;
    /// a logged message carries the count left out since the last one.
    pub(super) fn warn(&self, message: std::fmt::Arguments<'_>) {
        self.warn_at(Instant::now(), message);
    }

    /// [`warn`](Self::warn) at `now`.
    fn warn_at(&self, now: Instant, message: std::fmt::Arguments<'_>) {
        if self
            .last
            .get()
            .is_some_and(|at| now.saturating_duration_since(at) < INTERVAL)
        {
            self.left_out.set(self.left_out.get().saturating_add(1));
            return;
        }
        self.last.set(Some(now));
        match self.left_out.replace(0) {
            0 => log::warn!("{message}"),
            n => log::warn!("{message} (and {n} more like it left out)"),
        }
    }

    /// Says how many were left out since the last one logged, if any (at the end).
    pub(super) fn flush(&self, what: &str) {
        let n = self.left_out.replace(0);
        if n > 0 {
            log::warn!("{what}: {n} more like the last were left out");
        }
    }
}

/// The server's repeating warnings, one [`Throttle`] each.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    /// A connection refused at `max_connections`.
    pub(super) refused: Throttle,
    /// A connection refused for want of a file descriptor: apart from `refused`, as its
    /// remedy (a higher open-file limit) is another, and it must not hide behind those.
    pub(super) no_descriptor: Throttle,
    /// A peer refused because it is not on the allowlist (a connection or a datagram).
    pub(super) not_allowed: Throttle,
    /// An idle connection evicted at `max_connections` for a new one.
    pub(super) evicted: Throttle,
    /// A connection closed because its peer broke the protocol, one per kind of close
    /// (indexed by [`CloseKind::index`]), so each kind is still seen.
    protocol: [Throttle; CloseKind::ALL.len()],
    /// An accept that failed (e.g. out of file descriptors).
    pub(super) accept: Throttle,
    /// A datagram dropped as not wirecall or malformed.
    pub(super) bad_datagram: Throttle,
    /// A TLS handshake that failed, or a client identity refused.
    pub(super) tls: Throttle,
    /// A connection on a PROXY protocol listener without a valid header.
    pub(super) proxy: Throttle,
}

impl Warnings {
    /// The throttle of protocol-error closes of `kind`.
    pub(super) fn protocol(&self, kind: CloseKind) -> Option<&Throttle> {
        self.protocol.get(kind.index())
    }

    /// Says what was left out, at the end.
    pub(super) fn flush(&self) {
        self.refused.flush("refused connections");
        self.no_descriptor
            .flush("connections refused for want of descriptors");
        self.not_allowed.flush("peers not allowed");
        self.evicted.flush("evicted connections");
        for (kind, throttle) in CloseKind::ALL.iter().zip(&self.protocol) {
            throttle.flush(&format!("connections closed: {}", kind.name()));
        }
        self.accept.flush("failed accepts");
        self.bad_datagram.flush("bad datagrams");
        self.tls.flush("refused TLS connections");
        self.proxy.flush("connections without a PROXY header");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_interval_are_counted_not_logged() {
        let t = Throttle::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        t.warn_at(at(0), format_args!("a"));
        assert_eq!(t.left_out.get(), 0);
        t.warn_at(at(10), format_args!("b"));
        t.warn_at(at(999), format_args!("c"));
        assert_eq!(t.left_out.get(), 2);
        // Once the interval has passed, the next one is logged and the count starts over.
        t.warn_at(at(1000), format_args!("d"));
        assert_eq!(t.left_out.get(), 0);
        t.warn_at(at(1001), format_args!("e"));
        t.flush("e");
        assert_eq!(t.left_out.get(), 0);
    }
}
