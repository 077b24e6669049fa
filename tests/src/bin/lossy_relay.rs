//! `lossy_relay`: a UDP relay between clients and one server that drops, duplicates and
//! delays (so reorders) datagrams in both directions, from a seed: a bad network for the
//! end-to-end tests, on a kernel without `netem`.
//!
//! ```text
//! lossy_relay --listen 127.0.0.1:0 --upstream 10.200.0.1:7000 \
//!     [--seed 7] [--loss 20] [--dup 10] [--delay-ms 5] [--run-for 60]
//! ```
//!
//! Clients send to the `--listen` address; each client gets its own upstream socket, so
//! the server sees one peer per client and answers come back to the right one. Every
//! datagram, either way, is dropped with probability `--loss` percent, else sent once (or
//! twice with probability `--dup` percent), each copy after a random delay of up to
//! `--delay-ms`. It prints `relay listening on ADDR` once bound, runs until `--run-for`
//! seconds pass or its stdin closes, and then prints its counters, one `name value` per
//! line.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

/// The client-facing socket's token; upstream sockets have tokens from 1.
const LISTEN: Token = Token(0);
/// Clients served at once; datagrams from more are dropped.
const MAX_CLIENTS: usize = 1024;
/// Datagrams waiting for their delay at once; more are dropped.
const MAX_PENDING: usize = 100_000;
/// The longest wait between checks of the stop conditions.
const TICK: Duration = Duration::from_millis(20);

/// Where a delayed datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// To the server, through client `n`'s upstream socket.
    Server(usize),
    /// Back to client `n`.
    Client(usize),
}

/// A datagram waiting for its delay: when, a sequence number (so equal times keep their
/// order), where to, the bytes.
type Delayed = (Instant, u64, Target, Vec<u8>);

#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    upstream: SocketAddr,
    seed: u64,
    loss: u64,
    dup: u64,
    delay: Duration,
    run_for: Duration,
}

/// Counters of one direction.
#[derive(Debug, Default)]
struct Counts {
    received: u64,
    dropped: u64,
    duplicated: u64,
    sent: u64,
    send_failed: u64,
}

/// SplitMix64: small, seeded, good enough to pick fates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `true` with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A duration from zero to `max`, inclusive, in microseconds.
    fn delay(&mut self, max: Duration) -> Duration {
        let max = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.next() % max.saturating_add(1))
    }
}

struct Relay {
    options: Options,
    poll: Poll,
    listen: UdpSocket,
    /// Per client: its address and its upstream socket (token `index + 1`).
    clients: Vec<(SocketAddr, UdpSocket)>,
    by_addr: HashMap<SocketAddr, usize>,
    pending: BinaryHeap<Reverse<Delayed>>,
    seq: u64,
    rng: Rng,
    to_server: Counts,
    to_client: Counts,
    buf: Vec<u8>,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("lossy_relay: {e}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lossy_relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let (mut listen, mut upstream) = (None, None);
    let mut options = Options {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        seed: 1,
        loss: 0,
        dup: 0,
        delay: Duration::ZERO,
        run_for: Duration::from_secs(60),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen: {e}"))?),
            "--upstream" => {
                upstream = Some(value.parse().map_err(|e| format!("--upstream: {e}"))?);
            }
            "--seed" => options.seed = number()?,
            "--loss" => options.loss = number()?.min(100),
            "--dup" => options.dup = number()?.min(100),
            "--delay-ms" => options.delay = Duration::from_millis(number()?),
            "--run-for" => options.run_for = Duration::from_secs(number()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    options.listen = listen.ok_or("--listen ADDR is required")?;
    options.upstream = upstream.ok_or("--upstream ADDR is required")?;
    Ok(options)
}

fn run(options: Options) -> Result<(), String> {
    let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut listen =
        UdpSocket::bind(options.listen).map_err(|e| format!("bind {}: {e}", options.listen))?;
    poll.registry()
        .register(&mut listen, LISTEN, Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    let local = listen.local_addr().map_err(|e| e.to_string())?;
    println!("relay listening on {local}");
    io::stdout().flush().map_err(|e| e.to_string())?;

    // Stop when stdin closes: the test that started us is done (or gone).
    let stdin_closed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stdin_closed);
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        while matches!(io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        flag.store(true, Ordering::Relaxed);
    });

    let seed = options.seed;
    let mut relay = Relay {
        options,
        poll,
        listen,
        clients: Vec::new(),
        by_addr: HashMap::new(),
        pending: BinaryHeap::new(),
        seq: 0,
        rng: Rng(seed),
        to_server: Counts::default(),
        to_client: Counts::default(),
        buf: vec![0u8; 65_536],
    };
    let stop_at = Instant::now() + relay.options.run_for;
    let mut events = Events::with_capacity(64);
    while Instant::now() < stop_at && !stdin_closed.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = relay
            .pending
            .peek()
            .map_or(TICK, |Reverse((at, ..))| at.saturating_duration_since(now))
            .min(TICK);
        match relay.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let tokens: Vec<Token> = events.iter().map(mio::event::Event::token).collect();
        for token in tokens {
            relay.drain(token);
        }
        relay.send_due();
    }
    relay.report();
    Ok(())
}

impl Relay {
    /// Reads a socket until it would block, scheduling what it read.
    fn drain(&mut self, token: Token) {
        loop {
            let received = if token == LISTEN {
                self.listen.recv_from(&mut self.buf)
            } else {
                match self.clients.get(token.0.wrapping_sub(1)) {
                    Some((addr, socket)) => socket.recv(&mut self.buf).map(|n| (n, *addr)),
                    None => return,
                }
            };
            let (len, from) = match received {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or an error for an earlier datagram (e.g. refused): done.
                Err(_) => return,
            };
            let datagram = self.buf.get(..len).unwrap_or_default().to_vec();
            let target = if token == LISTEN {
                match self.client(from) {
                    Some(n) => Target::Server(n),
                    None => continue,
                }
            } else {
                Target::Client(token.0.wrapping_sub(1))
            };
            self.schedule(target, datagram);
        }
    }

    /// The index of client `addr`, with a new upstream socket for a new client.
    fn client(&mut self, addr: SocketAddr) -> Option<usize> {
        if let Some(n) = self.by_addr.get(&addr) {
            return Some(*n);
        }
        if self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        let any: SocketAddr = if self.options.upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut socket = UdpSocket::bind(any).ok()?;
        socket.connect(self.options.upstream).ok()?;
        let n = self.clients.len();
        self.poll
            .registry()
            .register(&mut socket, Token(n + 1), Interest::READABLE)
            .ok()?;
        self.clients.push((addr, socket));
        self.by_addr.insert(addr, n);
        Some(n)
    }

    /// Drops, or queues one or two copies of, a datagram.
    fn schedule(&mut self, target: Target, datagram: Vec<u8>) {
        let counts = match target {
            Target::Server(_) => &mut self.to_server,
            Target::Client(_) => &mut self.to_client,
        };
        counts.received += 1;
        if self.rng.chance(self.options.loss) || self.pending.len() >= MAX_PENDING {
            counts.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.options.dup) {
            counts.duplicated += 1;
            2
        } else {
            1
        };
        let now = Instant::now();
        for _ in 0..copies {
            let at = now + self.rng.delay(self.options.delay);
            self.seq += 1;
            self.pending
                .push(Reverse((at, self.seq, target, datagram.clone())));
        }
    }

    /// Sends every datagram whose delay is over.
    fn send_due(&mut self) {
        let now = Instant::now();
        while self
            .pending
            .peek()
            .is_some_and(|Reverse((at, ..))| *at <= now)
        {
            let Some(Reverse((_, _, target, datagram))) = self.pending.pop() else {
                break;
            };
            let (result, counts) = match target {
                Target::Server(n) => (
                    self.clients.get(n).map(|(_, s)| s.send(&datagram)),
                    &mut self.to_server,
                ),
                Target::Client(n) => (
                    self.clients
                        .get(n)
                        .map(|(addr, _)| self.listen.send_to(&datagram, *addr)),
                    &mut self.to_client,
                ),
            };
            match result {
                Some(Ok(_)) => counts.sent += 1,
                _ => counts.send_failed += 1,
            }
        }
    }

    fn report(&self) {
        let mut out = io::stdout().lock();
        for (direction, c) in [
            ("to_server", &self.to_server),
            ("to_client", &self.to_client),
        ] {
            let _ = writeln!(out, "{direction}.received {}", c.received);
            let _ = writeln!(out, "{direction}.dropped {}", c.dropped);
            let _ = writeln!(out, "{direction}.duplicated {}", c.duplicated);
            let _ = writeln!(out, "{direction}.sent {}", c.sent);
            let _ = writeln!(out, "{direction}.send_failed {}", c.send_failed);
        }
        let _ = writeln!(out, "clients {}", self.clients.len());
        let _ = out.flush();
    }
}
