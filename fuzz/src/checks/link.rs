//! What both connection checks share: one end of a scripted stream connection and the
//! bytes around it, moved only through the core's driver contract
//! ([`StreamConnection`]), so the server and the client are driven by the same code.

#[allow(unused_imports)]
use super::*;
use wirecall_core::StreamConnection;

/// A connection under test and its transport: what the peer sent (and how much of it the
/// connection has taken), and what the connection transmitted.
pub(crate) struct Link<C> {
    pub(crate) conn: C,
    pub(crate) now: Instant,
    /// When `handle_timeout` last ran.
    pub(crate) last_timeout: Instant,
    /// Every byte the peer sent.
    pub(crate) inbound: Vec<u8>,
    /// How much of `inbound` the connection has taken.
    pub(crate) fed: usize,
    /// The peer's end of stream has been delivered.
    pub(crate) eof: bool,
    /// Every byte the connection transmitted.
    pub(crate) tx: Vec<u8>,
    /// The transmit buffer's size.
    pub(crate) tx_cap: usize,
}

impl<C: StreamConnection> Link<C> {
    pub(crate) fn new(conn: C, tx_cap: usize) -> Self {
        Self {
            conn,
            now: Instant::ZERO,
            last_timeout: Instant::ZERO,
            inbound: Vec::new(),
            fed: 0,
            eof: false,
            tx: Vec::new(),
            tx_cap,
        }
    }

    /// The peer sends `bytes` (nothing is sent after its end of stream).
    pub(crate) fn send(&mut self, bytes: &[u8], via_buffer: bool) {
        if !self.eof {
            self.inbound.extend_from_slice(bytes);
            self.deliver(via_buffer);
        }
    }

    /// Offers the connection what the peer sent and it has not taken, through
    /// `input_buffer`/`commit_input` or `handle_input`; returns what it took.
    pub(crate) fn deliver(&mut self, via_buffer: bool) -> usize {
        let rest = &self.inbound[self.fed..];
        if rest.is_empty() {
            return 0;
        }
        let n = if via_buffer {
            let space = self.conn.input_buffer();
            let n = space.len().min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            self.conn.commit_input(self.now, n);
            n
        } else {
            self.conn.handle_input(self.now, rest)
        };
        assert!(n <= rest.len(), "handle_input took more than offered");
        self.fed += n;
        n
    }

    /// Sends up to `n` transmitted bytes; returns how many.
    pub(crate) fn transmit(&mut self, n: usize) -> usize {
        let before = self.conn.transmit().to_vec();
        assert!(before.len() <= self.tx_cap, "transmit() over the buffer");
        let k = n.min(before.len());
        self.tx.extend_from_slice(&before[..k]);
        self.conn.advance_transmit(n);
        assert_eq!(self.conn.transmit(), &before[k..], "advance_transmit({n})");
        k
    }

    /// Moves time to `now` and fires the timers.
    pub(crate) fn advance(&mut self, now: Instant) {
        assert!(now >= self.now);
        self.now = now;
        let idle = self.conn.transmit().is_empty();
        self.conn.handle_timeout(now);
        self.last_timeout = now;
        let next = self.conn.poll_timeout();
        assert!(
            !idle || next.is_none_or(|at| at > now),
            "poll_timeout {next:?} is not after handle_timeout({now})"
        );
    }
}

/// A connection check: its [`Link`] and how it takes the connection's events; the rest of
/// the driving is written once here.
pub(crate) trait Driven {
    /// The connection under test.
    type Conn: StreamConnection;

    /// Which side, for messages.
    const WHO: &'static str;

    fn link(&mut self) -> &mut Link<Self::Conn>;

    /// Takes events until none (the role's own checks); returns how many.
    fn poll_events(&mut self) -> usize;

    /// Polls and delivers until neither does anything (backpressure may leave input
    /// pending: the transmit buffer only empties when the script says so).
    fn pump(&mut self, via_buffer: bool) {
        self.poll_events();
        for _ in 0..1000 {
            if self.link().deliver(via_buffer) == 0 {
                break;
            }
            self.poll_events();
        }
    }

    /// Delivers everything the peer sent, sending and polling as needed.
    fn flush(&mut self) {
        let mut rounds = 0;
        while self.link().fed < self.link().inbound.len() {
            rounds += 1;
            assert!(rounds < 100_000, "flush does not end");
            let sent = self.link().transmit(usize::MAX);
            let events = self.poll_events();
            let fed = self.link().deliver(false);
            let pending = self.link().inbound.len() - self.link().fed;
            assert!(
                sent + events + fed > 0,
                "{} stuck: takes no input ({pending} bytes pending), sends nothing, no event",
                Self::WHO
            );
        }
        self.link().transmit(usize::MAX);
        self.poll_events();
    }

    /// The peer's end of stream, after everything it sent.
    fn end_of_stream(&mut self) {
        if !self.link().eof {
            self.flush();
            self.link().eof = true;
            self.link().conn.handle_eof();
        }
    }
}
