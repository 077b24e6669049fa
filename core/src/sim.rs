//! A deterministic simulated network for testing code that embeds the core (feature `sim`).
//!
//! Nothing here sleeps or touches a socket: time is a number the harness advances, and
//! "the network" is a [`Pipe`] per direction that holds bytes for a latency, releases them
//! in order but in randomly sized pieces (so every frame boundary gets split sooner or later),
//! all decided by a seeded [`Rng`]. The same seed gives the same run, byte for byte, so a
//! failing seed is a reproducible bug report.
//!
//! [`Pair`] wires a [`ClientConnection`] and a [`ServerConnection`] together through two pipes
//! and runs them with [`Pair::drive`], which moves bytes, fires timers, lets the test's
//! application code act, and jumps the clock to the next thing that can happen. A run that
//! stops making progress, or goes on past its step budget, is reported instead of hanging.
//!
//! An embedder testing its own runtime can use [`Pipe`] and [`Rng`] alone: write what the
//! core transmits into one pipe, read from the other into the core.

use core::fmt;

use heapless::Deque;

use crate::client::{CallSlot, ClientConnection};
use crate::config::{Config, ConfigError};
use crate::server::{RequestSlot, ServerConnection};
use crate::time::{Duration, Instant};

/// A small, fast, seeded pseudo-random generator (`SplitMix64`). Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator; the same seed gives the same sequence.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        crate::rng::splitmix64(&mut self.state)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// A number in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo.saturating_add(self.below(hi.saturating_sub(lo).saturating_add(1)))
    }

    /// `true` with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// How a [`Pipe`] delays and splits bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Time every byte spends in flight at least.
    pub latency: Duration,
    /// Extra random delay per piece, up to this (order is still kept).
    pub jitter: Duration,
    /// Largest piece bytes are written and delivered in; pieces are 1 to this many bytes.
    pub max_chunk: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(50),
            jitter: Duration::from_micros(20),
            max_chunk: 64,
        }
    }
}

/// How many pieces a pipe tracks at once.
const MAX_SEGMENTS: usize = 512;

/// One direction of a simulated byte stream: ordered, delayed, re-chunked, bounded to `N`
/// bytes in flight (a writer sees a short write when it is full, as with a socket).
#[derive(Debug)]
pub struct Pipe<const N: usize> {
    bytes: Deque<u8, N>,
    /// Pieces in order: (when deliverable, bytes left in the piece).
    segments: Deque<(Instant, usize), MAX_SEGMENTS>,
    net: NetConfig,
    /// The writer closed its end; the reader sees end-of-stream once the bytes are read.
    closed: bool,
    eof_delivered: bool,
}

impl<const N: usize> Pipe<N> {
    /// An empty pipe.
    #[must_use]
    pub fn new(net: NetConfig) -> Self {
        Self {
            bytes: Deque::new(),
            segments: Deque::new(),
            net,
            closed: false,
            eof_delivered: false,
        }
    }

    /// Writes up to all of `data` in random pieces; returns how many bytes it took.
    pub fn write(&mut self, now: Instant, data: &[u8], rng: &mut Rng) -> usize {
        let mut taken = 0usize;
        let mut rest = data;
        while !rest.is_empty() && !self.closed {
            let room = N.saturating_sub(self.bytes.len());
            let want = usize::try_from(rng.between(1, self.net.max_chunk.max(1) as u64))
                .unwrap_or(1)
                .min(rest.len())
                .min(room);
            if want == 0 || self.segments.is_full() {
                break;
            }
            let jitter =
                Duration::from_micros(rng.below(self.net.jitter.as_micros().saturating_add(1)));
            let mut at = now.saturating_add(self.net.latency).saturating_add(jitter);
            if let Some(&(last, _)) = self.segments.back() {
                at = at.max(last);
            }
            let (piece, tail) = rest.split_at(want);
            for &b in piece {
                let _ = self.bytes.push_back(b);
            }
            let _ = self.segments.push_back((at, want));
            taken = taken.saturating_add(want);
            rest = tail;
        }
        taken
    }

    /// Reads into `out` the bytes due by `now`, in one random piece; returns how many.
    pub fn read(&mut self, now: Instant, out: &mut [u8], rng: &mut Rng) -> usize {
        let limit = usize::try_from(rng.between(1, self.net.max_chunk.max(1) as u64))
            .unwrap_or(1)
            .min(out.len());
        let mut n = 0usize;
        while n < limit {
            let Some((at, left)) = self.segments.front_mut() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some(b) = self.bytes.pop_front() else {
                break;
            };
            if let Some(slot) = out.get_mut(n) {
                *slot = b;
            }
            n = n.saturating_add(1);
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.segments.pop_front();
            }
        }
        n
    }

    /// When the next piece becomes deliverable, if any is in flight.
    #[must_use]
    pub fn next_delivery(&self) -> Option<Instant> {
        self.segments.front().map(|&(at, _)| at)
    }

    /// Bytes in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// No bytes in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The writer closes its end: later writes are refused, and the reader gets
    /// end-of-stream after the last byte.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// `true` exactly once: when the pipe is closed and every byte has been read.
    pub fn take_eof(&mut self) -> bool {
        if self.closed && self.bytes.is_empty() && !self.eof_delivered {
            self.eof_delivered = true;
            return true;
        }
        false
    }

    /// Drops every byte in flight (a cut cable), keeping the pipe usable.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.segments.clear();
    }
}

/// What the application closure of [`Pair::drive`] tells the harness after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The scenario is over: stop driving.
    Done,
    /// Keep going; nothing of the application's own is scheduled.
    Continue,
    /// Keep going, and the application wants to act again at this time (e.g. to answer a
    /// deferred request), so time must not jump past it.
    WakeAt(Instant),
}

/// Why [`Pair::drive`] stopped without the application saying [`Step::Done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimError {
    /// Nothing can happen any more: no bytes in flight, no timer, no application wake-up.
    Stalled {
        /// The simulated time it stalled at.
        at: Instant,
    },
    /// The step budget ran out (a livelock, or a budget too small for the scenario).
    StepLimit {
        /// The simulated time it stopped at.
        at: Instant,
    },
}

impl core::error::Error for SimError {}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stalled { at } => write!(f, "simulation stalled at {at}"),
            Self::StepLimit { at } => write!(f, "simulation step limit reached at {at}"),
        }
    }
}

/// The client connection type a [`Pair`] holds.
pub type SimClient<const BUF: usize, const SLOTS: usize> =
    ClientConnection<[u8; BUF], [CallSlot; SLOTS]>;
/// The server connection type a [`Pair`] holds.
pub type SimServer<const BUF: usize, const SLOTS: usize> =
    ServerConnection<[u8; BUF], [RequestSlot; SLOTS]>;

/// A client and a server connected by two [`Pipe`]s under one simulated clock.
///
/// `BUF` is each connection buffer's size, `SLOTS` each table's, `PIPE` the bytes each
/// direction holds in flight.
#[derive(Debug)]
pub struct Pair<const BUF: usize, const SLOTS: usize, const PIPE: usize> {
    /// The client end.
    pub client: SimClient<BUF, SLOTS>,
    /// The server end.
    pub server: SimServer<BUF, SLOTS>,
    /// Client to server.
    pub c2s: Pipe<PIPE>,
    /// Server to client.
    pub s2c: Pipe<PIPE>,
    /// The simulated time.
    pub now: Instant,
    /// The randomness of this run.
    pub rng: Rng,
    /// Bytes moved so far, both ways.
    pub bytes_moved: u64,
}

impl<const BUF: usize, const SLOTS: usize, const PIPE: usize> Pair<BUF, SLOTS, PIPE> {
    /// Two freshly connected ends at time zero.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `BUF` or `SLOTS` are under the protocol's baseline.
    pub fn new(
        seed: u64,
        client_config: Config,
        server_config: Config,
        net: NetConfig,
    ) -> Result<Self, ConfigError> {
        let now = Instant::ZERO;
        Ok(Self {
            client: ClientConnection::new(
                client_config,
                [0; BUF],
                [0; BUF],
                [CallSlot::EMPTY; SLOTS],
                now,
            )?,
            server: ServerConnection::new(
                server_config,
                [0; BUF],
                [0; BUF],
                [RequestSlot::EMPTY; SLOTS],
                now,
            )?,
            c2s: Pipe::new(net),
            s2c: Pipe::new(net),
            now,
            rng: Rng::new(seed),
            bytes_moved: 0,
        })
    }

    /// Moves bytes: what each end transmits into its pipe, and what each pipe has due into
    /// the other end (reading straight into its input buffer). Returns bytes moved.
    pub fn transfer(&mut self) -> usize {
        let mut moved = 0usize;
        loop {
            let before = moved;
            let n = self
                .c2s
                .write(self.now, self.client.transmit(), &mut self.rng);
            self.client.advance_transmit(n);
            moved = moved.saturating_add(n);
            let n = self
                .s2c
                .write(self.now, self.server.transmit(), &mut self.rng);
            self.server.advance_transmit(n);
            moved = moved.saturating_add(n);

            let n = self
                .c2s
                .read(self.now, self.server.input_buffer(), &mut self.rng);
            self.server.commit_input(self.now, n);
            moved = moved.saturating_add(n);
            let n = self
                .s2c
                .read(self.now, self.client.input_buffer(), &mut self.rng);
            self.client.commit_input(self.now, n);
            moved = moved.saturating_add(n);
            if moved == before {
                break;
            }
        }
        if self.c2s.take_eof() {
            self.server.handle_eof();
        }
        if self.s2c.take_eof() {
            self.client.handle_eof();
        }
        self.bytes_moved = self.bytes_moved.saturating_add(moved as u64);
        moved
    }

    /// The earliest time anything is scheduled: a delivery or either end's timer.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Instant> {
        [
            self.c2s.next_delivery(),
            self.s2c.next_delivery(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the pair: each step moves bytes, fires due timers, and calls `app` so the test
    /// can poll both ends' events and act; then, if nothing moved, jumps the clock to the
    /// next wake-up. Stops when `app` returns [`Step::Done`], and after `max_steps` steps
    /// or when nothing can happen any more, with an error.
    ///
    /// # Errors
    ///
    /// [`SimError`] when the run stalls or exceeds `max_steps`.
    pub fn drive<F>(&mut self, max_steps: usize, mut app: F) -> Result<(), SimError>
    where
        F: FnMut(&mut Self) -> Step,
    {
        for _ in 0..max_steps {
            let moved = self.transfer();
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            let wake = match app(self) {
                Step::Done => return Ok(()),
                Step::Continue => None,
                Step::WakeAt(at) => Some(at),
            };
            // What the timers and the application queued goes out in the same step.
            let moved = moved.saturating_add(self.transfer());
            if moved > 0 {
                continue;
            }
            let next = [self.next_wakeup(), wake].into_iter().flatten().min();
            match next {
                Some(at) if at > self.now => self.now = at,
                Some(_) => {}
                None => return Err(SimError::Stalled { at: self.now }),
            }
        }
        Err(SimError::StepLimit { at: self.now })
    }
}

/// What a [`DatagramNet`] does to datagrams: loss, duplication, delay and (through the
/// random delay) reordering, all drawn from the run's [`Rng`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Datagrams lost, per thousand.
    pub loss_per_mille: u32,
    /// Datagrams delivered twice, per thousand (each copy with its own delay).
    pub duplicate_per_mille: u32,
    /// Delay every datagram has at least.
    pub latency: Duration,
    /// Extra random delay per datagram, up to this; datagrams overtake each other.
    pub jitter: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            latency: Duration::from_micros(100),
            jitter: Duration::from_micros(100),
        }
    }
}

/// Counters of a [`DatagramNet`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams offered to the network.
    pub sent: u64,
    /// Of those, lost.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies delivered.
    pub delivered: u64,
    /// Dropped because the network was full or the datagram over its MTU.
    pub overflow: u64,
}

#[derive(Debug, Clone)]
struct Flight<A, const MTU: usize> {
    from: A,
    to: A,
    at: Instant,
    /// Orders datagrams due at the same instant by send order.
    seq: u64,
    len: usize,
    bytes: [u8; MTU],
}

/// A simulated datagram network between addresses `A`: up to `SLOTS` datagrams of up to
/// `MTU` bytes in flight, with seeded [`Faults`]. No heap.
#[derive(Debug)]
pub struct DatagramNet<A, const SLOTS: usize, const MTU: usize> {
    flights: heapless::Vec<Flight<A, MTU>, SLOTS>,
    faults: Faults,
    seq: u64,
    /// What happened so far.
    pub stats: NetStats,
}

impl<A: Copy, const SLOTS: usize, const MTU: usize> DatagramNet<A, SLOTS, MTU> {
    /// An empty network.
    #[must_use]
    pub fn new(faults: Faults) -> Self {
        Self {
            flights: heapless::Vec::new(),
            faults,
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Sends `bytes` from `from` to `to` at `now`: it may be lost, duplicated and delayed.
    pub fn send(&mut self, now: Instant, from: A, to: A, bytes: &[u8], rng: &mut Rng) {
        self.stats.sent = self.stats.sent.saturating_add(1);
        if rng.chance(self.faults.loss_per_mille) {
            self.stats.lost = self.stats.lost.saturating_add(1);
            return;
        }
        let copies = if rng.chance(self.faults.duplicate_per_mille) {
            self.stats.duplicated = self.stats.duplicated.saturating_add(1);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut buf = [0u8; MTU];
            let Some(dst) = buf.get_mut(..bytes.len()) else {
                self.stats.overflow = self.stats.overflow.saturating_add(1);
                return;
            };
            dst.copy_from_slice(bytes);
            let jitter =
                Duration::from_micros(rng.below(self.faults.jitter.as_micros().saturating_add(1)));
            let at = now
                .saturating_add(self.faults.latency)
                .saturating_add(jitter);
            self.seq = self.seq.wrapping_add(1);
            let flight = Flight {
                from,
                to,
                at,
                seq: self.seq,
                len: bytes.len(),
                bytes: buf,
            };
            if self.flights.push(flight).is_err() {
                self.stats.overflow = self.stats.overflow.saturating_add(1);
            }
        }
    }

    /// When the next datagram arrives, if any is in flight.
    #[must_use]
    pub fn next_delivery(&self) -> Option<Instant> {
        self.flights.iter().map(|f| f.at).min()
    }

    /// Takes the earliest datagram due by `now`, copying it into `out`: returns
    /// `(from, to, length)`.
    pub fn deliver(&mut self, now: Instant, out: &mut [u8]) -> Option<(A, A, usize)> {
        let index = self
            .flights
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= now)
            .min_by_key(|(_, f)| (f.at, f.seq))
            .map(|(i, _)| i)?;
        let flight = self.flights.swap_remove(index);
        let len = flight.len.min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..len), flight.bytes.get(..len)) {
            dst.copy_from_slice(src);
        }
        self.stats.delivered = self.stats.delivered.saturating_add(1);
        Some((flight.from, flight.to, len))
    }

    /// Datagrams in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }
}
