//! One of the server's mio event loops (one per thread, [`ServerConfig::threads`]): its
//! listeners, its connections, its datagram endpoints, the waker that brings answers back
//! from workers and responders, and (the first loop, optionally) SIGINT/SIGTERM.
//!
//! [`ServerConfig::threads`]: crate::ServerConfig::threads
//!
//! Each turn: wait for events until the earliest connection timer or held datagram answer
//! (or not at all when some connection or datagram socket still has work queued), note
//! which connections and datagram sockets are ready, accept on ready listeners until
//! `WouldBlock`, collect finished answers, fire due timers, then drive each ready
//! connection (see [`Conn::drive`]) and re-file its interest and its next wakeup, and
//! drive the datagram endpoints (see [`DatagramListener::drive`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration as StdDuration;

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use wirecall_core::{Duration, Instant};

use super::conn::{Conn, Drive, Shared};
use super::datagram::DatagramListener;
use super::listener::{Accepted, Admission, Listening, ProxyHeader};
use crate::clock::{to_core, to_std};
use crate::error::Error;
use crate::function::{CallRef, Completion, LoopCompletions};
use crate::id_hasher::IdMap;
use crate::stream::{interrupted, would_block};

/// The waker's token.
pub(super) const WAKER: Token = Token(0);
/// The signal source's token.
pub(super) const SIGNALS: Token = Token(1);
/// Endpoint `i` (a listener or a datagram socket) has token `FIRST_LISTENER + i`;
/// connections come after the endpoints.
pub(super) const FIRST_LISTENER: usize = 2;

/// [`ShutdownHandle`](super::ShutdownHandle) states.
pub(super) const RUNNING: u8 = 0;
pub(super) const GRACEFUL: u8 = 1;
pub(super) const NOW: u8 = 2;
/// A graceful shutdown was asked for with a drain delay (`ServerConfig::drain_delay`): the
/// server serves as before but fails health checks, so load balancers stop sending it new
/// connections; then it becomes [`GRACEFUL`].
pub(super) const DELAYING: u8 = 3;

/// The shortest wait for a connection timer that is already due but could not be
/// served (e.g. a keepalive ping that does not fit a full transmit buffer): the loop
/// retries after this instead of spinning.
const MIN_TIMER: Duration = Duration::from_millis(1);

/// Everything the loop owns.
pub(super) struct EventLoop {
    pub(super) poll: Poll,
    pub(super) events: Events,
    /// Stream listeners by endpoint index; `None` for a datagram endpoint, or once the
    /// listener has stopped.
    pub(super) listeners: Vec<Option<Listening>>,
    /// Datagram endpoints by token.
    pub(super) datagrams: IdMap<Token, DatagramListener>,
    /// By token (the loop hands tokens out, so the cheap hash is safe). Boxed: a map of
    /// 10,000 connections has 16,384 buckets, and an 864-byte `Conn` in each would cost
    /// 1.4 KiB per connection where a pointer costs 13 bytes (docs/BENCHMARKS.md).
    pub(super) conns: IdMap<Token, Box<Conn>>,
    pub(super) next_token: usize,
    /// Connection wakeups, earliest first.
    pub(super) timers: BTreeSet<(Instant, Token)>,
    /// Connections to drive this turn.
    pub(super) ready: VecDeque<Token>,
    /// The previous turn's queue, emptied and kept for its capacity, so a turn of the
    /// loop allocates nothing.
    pub(super) round: VecDeque<Token>,
    pub(super) completions: Receiver<Completion>,
    pub(super) shared: Shared,
    pub(super) shutdown: Arc<AtomicU8>,
    pub(super) signals: Option<Signals>,
    /// Set once a shutdown began: the instant by which connections must be done.
    pub(super) draining: Option<Instant>,
    /// During a drain delay: when it ends (to wake then).
    pub(super) delay_until: Option<Instant>,
    /// A descriptor in reserve, for refusing a connection when accepts fail for want of one.
    pub(super) spare: super::fd_limit::Spare,
    /// When to try accepting again after accepts failed with no spare to fall back on (an
    /// edge-triggered listener reports no new readiness for connections already waiting).
    pub(super) accept_retry: Option<Instant>,
    /// The wait before the next such retry: from 10 ms, doubling to 1 s.
    pub(super) accept_backoff: Duration,
    /// TLS connections in `conns` only to be refused (see [`MAX_TLS_REFUSING`]).
    pub(super) refusing: usize,
    /// What the server's loops share: connection slots, wakers, the drain count.
    pub(super) loops: Arc<super::loops::Loops>,
    /// This loop's number (0 takes the signals and logs for the server).
    pub(super) index: usize,
    /// This loop has told the others it has drained.
    pub(super) told_drained: bool,
    /// Connections handed over by other loops, emptied and kept for its capacity.
    pub(super) handed: Vec<Accepted>,
}

/// TLS connections over the limit that are refused through a TLS handshake of their own
/// (a refusal in plaintext would read as "not TLS" to the client) at most at once, per
/// event loop; more are closed without a word. Each lasts at most `close_linger`.
const MAX_TLS_REFUSING: usize = 16;

/// The first and the longest wait before accepting again after accepts failed.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

impl EventLoop {
    /// Serves until a shutdown has drained every connection (or its deadline passed).
    pub(super) fn run(mut self) -> Result<(), Error> {
        let result = self.serve();
        self.finish();
        result
    }

    fn serve(&mut self) -> Result<(), Error> {
        let mut tokens = Vec::new();
        loop {
            self.take_handoffs();
            let now = self.shared.clock.now();
            self.check_shutdown(now);
            if let Some(deadline) = self.draining {
                // Datagrams still unread are read first: a new call among them is told the
                // server is shutting down rather than left to time out.
                // Every endpoint is asked, not only up to the first still busy, so their
                // lingers for acknowledgements run at once rather than one after another.
                let mut datagrams_done = true;
                for d in self.datagrams.values_mut() {
                    datagrams_done &= !d.is_readable() && d.drain_over(now);
                }
                if self.conns.is_empty() && datagrams_done {
                    if !self.told_drained {
                        self.told_drained = true;
                        self.loops.drained();
                    }
                    // Until every loop is done, this one keeps its datagram sockets, so
                    // no client's flow moves to a loop whose cache does not know its calls.
                    // (A connection handed over in the meantime is taken in and drained.)
                    if self.loops.all_drained() && self.take_handoffs() == 0 {
                        if self.index == 0 {
                            log::info!(
                                "every connection closed and every datagram call answered; \
                                 shutdown complete"
                            );
                        }
                        return Ok(());
                    }
                }
                if now >= deadline {
                    let datagram_calls: usize =
                        self.datagrams.values().map(|d| d.busy_calls()).sum();
                    let stream_calls: usize =
                        self.conns.values().map(|c| c.calls_unanswered()).sum();
                    let connections = self.conns.len();
                    log::warn!(
                        "stopping with {connections} connection(s) still open and \
                         {datagram_calls} datagram call(s) unanswered: closing them"
                    );
                    self.abort_all(now);
                    let calls = stream_calls.saturating_add(datagram_calls);
                    if calls > 0 {
                        return Err(Error::Abandoned { calls, connections });
                    }
                    return Ok(());
                }
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if interrupted(&e) {
                    continue;
                }
                return Err(Error::io("waiting for events")(e));
            }
            tokens.clear();
            tokens.extend(self.events.iter().map(|e| {
                // Anything the next read would report: bytes, the peer's end, an error;
                // and whether the peer's end is among it.
                let ended = e.is_read_closed() || e.is_error();
                (e.token(), e.is_readable() || ended, ended)
            }));
            for (token, readable, ended) in tokens.drain(..) {
                self.on_event(token, readable, ended);
            }
            let now = self.shared.clock.now();
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.accept_retry = None;
                for i in 0..self.listeners.len() {
                    self.accept_all(i);
                }
            }
            self.take_completions(now);
            self.fire_timers(now);
            self.drive_ready(now);
            self.drive_datagrams(now);
        }
    }

    /// How long to wait: zero while connections or datagram sockets have work queued, else
    /// until the earliest timer, held datagram answer or the shutdown deadline; `None` to
    /// wait for events only.
    fn poll_timeout(&self, now: Instant) -> Option<StdDuration> {
        if !self.ready.is_empty() || self.datagrams.values().any(|d| d.is_readable()) {
            return Some(StdDuration::ZERO);
        }
        let timer = self.timers.first().map(|(at, _)| *at);
        let timer = super::conn::earliest(timer, self.accept_retry);
        let mut wake = super::conn::earliest(timer, self.draining);
        wake = super::conn::earliest(wake, self.delay_until);
        for datagram in self.datagrams.values() {
            wake = super::conn::earliest(wake, datagram.next_wakeup());
        }
        wake.map(|at| to_std(at.saturating_duration_since(now)))
    }

    /// Acts on readiness of `token`; `readable` when a read would find something, `ended`
    /// when the peer's end of stream (or an error) is among it.
    fn on_event(&mut self, token: Token, readable: bool, ended: bool) {
        match token {
            WAKER => {} // completions and the shutdown flag are checked every turn
            SIGNALS => self.take_signals(),
            token if self.datagrams.contains_key(&token) => {
                if let Some(datagram) = self.datagrams.get_mut(&token) {
                    datagram.set_readable();
                }
            }
            Token(t) if t >= FIRST_LISTENER && t - FIRST_LISTENER < self.listeners.len() => {
                self.accept_all(t - FIRST_LISTENER);
            }
            token => match self.conns.get_mut(&token) {
                Some(conn) => {
                    if readable {
                        conn.set_readable(ended);
                    }
                    mark_ready(&mut self.ready, conn, token);
                }
                None => log::warn!("event for unknown token {}", token.0),
            },
        }
    }

    /// Accepts on listener `i` until it would block.
    fn accept_all(&mut self, i: usize) {
        // A spare lost under descriptor pressure (another loop's accept took the number
        // freed between a refusal and the spare's reopening) is taken again first, or this
        // loop could refuse no one in words until some descriptor freed up, leaving the
        // connections in the backlog waiting.
        self.spare.restore();
        loop {
            let Some(Some(Listening {
                listener,
                endpoint,
                proxy_header,
            })) = self.listeners.get(i)
            else {
                return;
            };
            match listener.accept() {
                Ok(mut accepted) => {
                    accepted.proxy_header = *proxy_header;
                    self.accept_backoff = ACCEPT_BACKOFF.0;
                    self.admit(accepted);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) if super::fd_limit::out_of_descriptors(&e) && self.spare.release() => {
                    // The spare descriptor is free for one accept: take the connection
                    // waiting and refuse it, then hold a spare again. The kernel reports
                    // a full descriptor table before it looks for a connection, so an
                    // empty queue shows only now, as would-block: then the loop is done
                    // here (trying again would spin for as long as descriptors lack).
                    let failed = match listener.accept() {
                        Ok(accepted) => {
                            self.shared.stats.refused();
                            self.shared.warnings.no_descriptor.warn(format_args!(
                                "{}: refused, out of file descriptors ({e})",
                                accepted.label
                            ));
                            // In words only where words may come first: not before a
                            // PROXY header, nor in plaintext to a TLS client.
                            let plain = matches!(
                                accepted.stream,
                                crate::stream::Stream::Unix(_) | crate::stream::Stream::Tcp(_)
                            );
                            if plain && *proxy_header == ProxyHeader::None {
                                let config = &self.shared.config.connection;
                                crate::driver::refuse(&accepted.stream, config);
                            }
                            None // closed here, so the spare can take its descriptor
                        }
                        Err(e) if interrupted(&e) => None,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => None,
                        Err(e) => Some(e),
                    };
                    self.spare.restore();
                    match failed {
                        None => {}
                        Some(e) if would_block(&e) => return,
                        // Anything else (the descriptor freed taken by another loop in
                        // between, ...): not again at once, but on the timer.
                        Some(e) => {
                            let endpoint = endpoint.to_string();
                            self.accept_later(&endpoint, &e);
                            return;
                        }
                    }
                }
                Err(e) => {
                    let endpoint = endpoint.to_string();
                    self.accept_later(&endpoint, &e);
                    return;
                }
            }
        }
    }

    /// After accepts on `endpoint` failed with `e` (e.g. out of file descriptors with no
    /// spare): connections already waiting bring no new readiness, so try again on a
    /// timer, backing off.
    fn accept_later(&mut self, endpoint: &str, e: &std::io::Error) {
        let wait = self.accept_backoff;
        self.accept_backoff = wait.saturating_mul(2).min(ACCEPT_BACKOFF.1);
        self.shared.stats.accept_failed();
        self.shared.warnings.accept.warn(format_args!(
            "cannot accept on {endpoint}: {e}; trying again in {} ms",
            wait.as_micros() / 1000
        ));
        let at = self.shared.clock.now().saturating_add(wait);
        self.accept_retry = Some(self.accept_retry.map_or(at, |t| t.min(at)));
    }

    /// Takes in the connections other loops handed to this one; returns how many.
    fn take_handoffs(&mut self) -> usize {
        self.loops.take_handoffs(self.index, &mut self.handed);
        if self.handed.is_empty() {
            return 0;
        }
        let mut handed = std::mem::take(&mut self.handed);
        let taken = handed.len();
        for accepted in handed.drain(..) {
            if accepted.admission == Admission::Admitted {
                // Counted in this loop's load when handed over: set up, it counts again.
                self.loops.count_out(self.index);
            }
            self.admit(accepted);
        }
        self.handed = handed;
        taken
    }

    /// Settles a connection's admission and sets it up here, or hands it to another loop
    /// (see [`super::loops`]), or closes it at once over the connection limit.
    fn admit(&mut self, mut accepted: Accepted) {
        let now = self.shared.clock.now();
        if let Admission::Seeking { .. } = accepted.admission {
            if let crate::function::OwnedPeer::Unix(credentials) = accepted.peer {
                if !self.shared.access.allows(credentials) {
                    self.shared.stats.not_allowed();
                    self.shared.warnings.not_allowed.warn(format_args!(
                        "{}: refused, not on the allowlist (--allow-uid, --allow-gid)",
                        accepted.label
                    ));
                    let config = &self.shared.config.connection;
                    crate::driver::refuse_not_allowed(&accepted.stream, config);
                    return;
                }
            }
            let max = self.shared.config.max_connections;
            // A slot across all loops; at the limit, this loop's idlest connection may give
            // up its own (another loop may take it first: then this one is not admitted).
            let admitted = self.loops.try_open(max)
                || (self.evict_idlest(now, &accepted.label) && self.loops.try_open(max));
            // While draining, this loop's last accepts stay here and get its go-away.
            let moving = self.draining.is_none();
            if admitted {
                accepted.admission = Admission::Admitted;
                if moving {
                    match self.loops.hand_off(self.index, accepted) {
                        Some(mine) => accepted = mine,
                        None => return,
                    }
                }
            } else if moving {
                // None here has been idle long enough to make room: the next loop may.
                match self.loops.pass_on(self.index, accepted) {
                    Some(mine) => accepted = mine,
                    None => return,
                }
            }
        }
        let refuse = accepted.admission != Admission::Admitted;
        let max = self.shared.config.max_connections;
        let Accepted {
            stream,
            peer,
            label,
            proxy_header,
            ..
        } = accepted;
        if refuse {
            self.shared.stats.refused();
            self.shared.warnings.refused.warn(format_args!(
                "{label}: refused, {max} connections are open (max_connections)"
            ));
            // On TLS the refusal goes through the handshake, and behind a PROXY header
            // after it: both through a connection of its own. Else in one write now.
            let direct = proxy_header == ProxyHeader::None;
            if !matches!(stream, crate::stream::Stream::Tls(_)) && direct {
                crate::driver::refuse(&stream, &self.shared.config.connection);
                return;
            }
            if self.refusing >= MAX_TLS_REFUSING {
                return;
            }
        }
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(self.first_connection());
        let mut conn = match Conn::new(
            stream,
            peer,
            format!("conn {} ({label})", token.0),
            &self.shared.config,
            now,
            Arc::new(LoopCompletions {
                token,
                sink: self.shared.sink.clone(),
            }),
        ) {
            Ok(conn) => conn,
            Err(e) => {
                log::error!("{label}: cannot set up a connection: {e}");
                if !refuse {
                    self.loops.close();
                }
                return;
            }
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(conn.stream(), token, Interest::READABLE)
        {
            log::warn!("{}: cannot register: {e}", conn.label());
            if !refuse {
                self.loops.close();
            }
            return;
        }
        if proxy_header == ProxyHeader::Expected {
            let timeout = self.shared.config.connection.handshake_timeout;
            conn.await_proxy_header(now.saturating_add(timeout));
        }
        if refuse {
            conn.refuse();
            self.refusing = self.refusing.saturating_add(1);
        } else {
            self.loops.count_in(self.index);
            self.shared.stats.accepted();
            log::debug!("{}: accepted", conn.label());
            if self.draining.is_some() {
                conn.close(now);
            }
        }
        mark_ready(&mut self.ready, &mut conn, token);
        self.conns.insert(token, Box::new(conn));
    }

    /// At the connection limit, makes room for a new connection by evicting the one that
    /// has gone longest without a call, if it has none in flight and has had none for
    /// `evict_idle` ([`ServerConfig::evict_idle`](crate::ServerConfig::evict_idle)): so
    /// peers that connect and then send nothing, or only dribble bytes or pings, cannot
    /// lock real clients out; connections with calls in flight, or with recent calls, are
    /// never evicted. Scans the connections: only at the limit. Returns whether one was
    /// evicted.
    fn evict_idlest(&mut self, now: Instant, newcomer: &str) -> bool {
        let Some(after) = self.shared.config.evict_idle.map(to_core) else {
            return false;
        };
        let idlest = self
            .conns
            .iter()
            .filter_map(|(token, conn)| conn.idle_since().map(|at| (at, *token)))
            .filter(|(at, _)| now.saturating_duration_since(*at) >= after)
            .min();
        let Some((since, token)) = idlest else {
            return false;
        };
        if let Some(conn) = self.conns.get_mut(&token) {
            self.shared.warnings.evicted.warn(format_args!(
                "{}: evicted after {} ms without a call, to make room for {newcomer} \
                 (max_connections)",
                conn.label(),
                now.saturating_duration_since(since).as_micros() / 1000
            ));
            conn.evict(now);
        }
        self.shared.stats.evicted();
        self.remove(token);
        true
    }

    fn first_connection(&self) -> usize {
        FIRST_LISTENER + self.listeners.len()
    }

    /// Hands answers that came back through the channel to their connections and datagram
    /// endpoints.
    fn take_completions(&mut self, now: Instant) {
        while let Ok(completion) = self.completions.try_recv() {
            let not_before = completion
                .not_before
                .map(|at| self.shared.clock.from_std(at));
            match completion.call {
                CallRef::Stream(id) => {
                    let Some(conn) = self.conns.get_mut(&completion.token) else {
                        log::debug!("answer to {id} dropped: its connection is gone");
                        continue;
                    };
                    conn.complete(id, completion.answer, not_before);
                    mark_ready(&mut self.ready, conn, completion.token);
                }
                CallRef::Datagram(handle) => {
                    if let Some(datagram) = self.datagrams.get_mut(&completion.token) {
                        let shared = &self.shared;
                        datagram.complete(now, handle, completion.answer, not_before, shared);
                    }
                }
            }
        }
    }

    /// Sends held datagram answers that are due and reads the datagram sockets that may
    /// have datagrams waiting.
    fn drive_datagrams(&mut self, now: Instant) {
        for datagram in self.datagrams.values_mut() {
            datagram.drive(now, &self.shared);
        }
    }

    /// Queues every connection whose wakeup has come.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.wakeup = None;
                mark_ready(&mut self.ready, conn, token);
            }
        }
    }

    /// Drives the connections queued at the start of this call; ones that still have
    /// work are queued for the next turn.
    fn drive_ready(&mut self, now: Instant) {
        let mut round = std::mem::replace(&mut self.ready, std::mem::take(&mut self.round));
        while let Some(token) = round.pop_front() {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            conn.queued = false;
            match conn.drive(now, &self.shared) {
                Drive::Remove => {
                    self.remove(token);
                    continue;
                }
                Drive::Again => mark_ready(&mut self.ready, conn, token),
                Drive::Wait => {}
            }
            if let Err(e) = conn.update_interest(self.poll.registry(), token) {
                log::warn!("{}: cannot update interest: {e}", conn.label());
                self.remove(token);
                continue;
            }
            let next = conn
                .next_wakeup(&self.shared.config)
                .map(|at| at.max(now.saturating_add(MIN_TIMER)));
            // Refiled only when it must fire sooner: a wakeup that moved later (keepalive
            // after every call) keeps its earlier entry, which then fires once for nothing
            // and is refiled from the drive it causes. That saves two tree operations per
            // call for one spare drive per keepalive period.
            let sooner = match (next, conn.wakeup) {
                (Some(new), Some(old)) => new < old,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if sooner {
                if let Some(old) = conn.wakeup {
                    self.timers.remove(&(old, token));
                }
                if let Some(new) = next {
                    self.timers.insert((new, token));
                }
                conn.wakeup = next;
            }
        }
        self.round = round;
    }

    fn remove(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            if let Some(at) = conn.wakeup {
                self.timers.remove(&(at, token));
            }
            if let Err(e) = self.poll.registry().deregister(conn.stream()) {
                log::debug!("{}: deregister: {e}", conn.label());
            }
            if conn.refusing {
                self.refusing = self.refusing.saturating_sub(1);
                return;
            }
            self.loops.close();
            self.loops.count_out(self.index);
            self.shared.stats.dropped();
            log::debug!("{}: gone", conn.label());
        }
    }

    fn check_shutdown(&mut self, now: Instant) {
        let mut state = self.shutdown.load(Ordering::Acquire);
        if state == DELAYING {
            self.shared.stats.set_draining();
            let until = self.loops.graceful_at();
            if until.is_none_or(|at| std::time::Instant::now() >= at) {
                // The first loop to see the delay over moves every loop on.
                let _ = self.shutdown.compare_exchange(
                    DELAYING,
                    GRACEFUL,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                self.loops.wake_all();
                state = self.shutdown.load(Ordering::Acquire);
            } else {
                self.delay_until = until.map(|at| self.shared.clock.from_std(at));
            }
        }
        if state != DELAYING {
            // Past (or without) a drain delay: a timer left from it would fire at once,
            // every turn, in each loop that did not see the delay end itself.
            self.delay_until = None;
        }
        match state {
            GRACEFUL => {
                self.shared.stats.set_draining();
                self.begin_drain(now);
            }
            NOW => {
                self.begin_drain(now);
                self.draining = Some(now);
            }
            _ => {}
        }
    }

    /// Stops accepting (after taking in what already waits in the backlog, so those
    /// clients get a go-away rather than a reset), removes socket files, asks every
    /// connection to close gracefully, and makes datagram endpoints reject new calls.
    fn begin_drain(&mut self, now: Instant) {
        if self.draining.is_some() {
            return;
        }
        let timeout = self.shared.config.shutdown_timeout;
        if self.index == 0 {
            log::info!(
                "shutting down: no new connections; answering calls received (up to {timeout:?})"
            );
        }
        // One deadline for every loop (see `super::loops`).
        let at = self.loops.deadline(
            std::time::Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(std::time::Instant::now),
        );
        self.draining = Some(self.shared.clock.from_std(at).max(now));
        self.shared.draining = true;
        for i in 0..self.listeners.len() {
            self.accept_all(i);
            if let Some(Some(Listening {
                mut listener,
                endpoint,
                ..
            })) = self.listeners.get_mut(i).map(Option::take)
            {
                if let Err(e) = self.poll.registry().deregister(&mut listener) {
                    log::debug!("deregister listener {endpoint}: {e}");
                }
                log::debug!("stopped listening on {endpoint}");
            }
        }
        for (token, conn) in &mut self.conns {
            conn.close(now);
            mark_ready(&mut self.ready, conn, *token);
        }
        for datagram in self.datagrams.values_mut() {
            datagram.begin_drain();
        }
    }

    fn abort_all(&mut self, now: Instant) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.abort();
                // One drive reports the close (for stats) and sends what it can.
                let _ = conn.drive(now, &self.shared);
            }
            self.remove(token);
        }
    }

    fn take_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let received: Vec<i32> = signals.pending().collect();
        for signal in received {
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "a signal",
            };
            if self.shutdown.load(Ordering::Acquire) == RUNNING {
                let delay = self.shared.config.drain_delay;
                if delay.is_zero() {
                    log::info!(
                        "{name} received: shutting down gracefully (send it again to stop at once)"
                    );
                } else {
                    log::info!(
                        "{name} received: failing health checks for {delay:?} (drain delay), \
                         then shutting down gracefully (send it again to stop at once)"
                    );
                }
                self.loops.request_shutdown(&self.shutdown, delay);
            } else {
                log::warn!("{name} received again: stopping now");
                self.shutdown.store(NOW, Ordering::Release);
            }
            self.loops.wake_all();
        }
    }

    /// Stops listening (removing socket files) and drops every connection and datagram
    /// socket.
    fn finish(&mut self) {
        // Nothing more can be handed here; what was is refused (its slot given back).
        for accepted in self.loops.close_queue(self.index) {
            if accepted.admission == Admission::Admitted {
                self.loops.count_out(self.index);
                self.loops.close();
            }
            if !matches!(accepted.stream, crate::stream::Stream::Tls(_)) {
                crate::driver::refuse(&accepted.stream, &self.shared.config.connection);
            }
        }
        self.shared.warnings.flush();
        for slot in &mut self.listeners {
            if let Some(Listening { mut listener, .. }) = slot.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        for (_, mut datagram) in self.datagrams.drain() {
            let _ = self.poll.registry().deregister(&mut datagram);
            datagram.abandon(&self.shared.stats);
        }
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.remove(token);
        }
    }
}

/// Queues a connection to be driven (once).
fn mark_ready(ready: &mut VecDeque<Token>, conn: &mut Conn, token: Token) {
    if !conn.queued {
        conn.queued = true;
        ready.push_back(token);
    }
}
