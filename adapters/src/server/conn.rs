//! One accepted connection: a stream socket and the core's [`ServerConnection`] for it,
//! driven by the event loop.
//!
//! [`Conn::drive`] is the whole per-connection job, run whenever something may have
//! changed (readiness, an answer from a worker, a timer): read what the socket has, hand
//! waiting answers to the core, act on the core's events, write what it wants sent. A
//! read that comes back short of the room it was given found the socket empty (the kernel
//! hands over all it has, up to the room), so the connection is not read again until its
//! next readable event: a call costs one `read` and one `write`, with no read that finds
//! nothing (nginx's event loop does the same). The peer's end of stream is the exception:
//! when it came with the last bytes (the event said so), no further edge would announce
//! it, so the connection reads on until it sees it. Reading
//! stops while answers wait for room in the core's transmit buffer (the core itself stops
//! taking frames while that buffer is full), so a client that does not read its answers
//! stops being read: backpressure, with memory bounded by the buffers and the request
//! table. After the core reports the connection closed, the socket lingers until its last
//! bytes are out and the peer has closed too (or `close_linger` passes).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use mio::{Interest, Registry, Token};
use wirecall_core::buffer::GrowBuf;
use wirecall_core::config::ConfigError;
use wirecall_core::server::{
    CloseReason, RequestSlot, RespondError, ServerConnection, ServerEvent, ServerStats,
};
use wirecall_core::table::GrowTable;
use wirecall_core::wire::Target;
use wirecall_core::{Instant, RequestId};

use super::answer_buffers::AnswerBuffers;
use super::workers::{Job, Pool};
use crate::clock::{Clock, to_core};
use crate::config::ServerConfig;
use crate::function::{
    Answer, CallContext, CallFailure, CallRef, CompletionSink, Completions, Function, OwnedPeer,
    Peer, Registry as Functions, Responder, reply_of, run_into, run_sync,
};
use crate::stats::{CloseKind, Stats};
use crate::stream::{Stream, interrupted, would_block};

/// The core connection with heap storage sized from the configuration.
type CoreConnection = ServerConnection<GrowBuf, GrowTable<RequestSlot>>;

/// Passes of flush/events/write/read per drive before other connections get a turn.
const MAX_PASSES: usize = 8;
/// Reads per pass.
const READS_PER_PASS: usize = 16;

/// Receive room a read asks for when the buffer has less: enough for a hello and a small
/// call. Both buffers start empty and grow with what passes (to the frame limit only while
/// a large frame does), so a connection that has only said hello costs little.
const FIRST_READ: usize = 128;

/// How long a connection must be idle before its buffers are given back (to nothing):
/// long enough that a client pausing between calls does not pay for regrowing them.
const SHRINK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What the event loop shares with every connection.
pub(super) struct Shared {
    pub(super) functions: Arc<Functions<Function>>,
    pub(super) stats: Arc<Stats>,
    pub(super) pool: Option<Arc<Pool>>,
    pub(super) sink: CompletionSink,
    pub(super) clock: Clock,
    pub(super) config: ServerConfig,
    /// The server is shutting down: a closed connection whose bytes are out and whose
    /// input is drained goes at once instead of waiting for the client's end-of-stream.
    pub(super) draining: bool,
    /// Warnings that repeat once per peer, rate-limited.
    pub(super) warnings: super::throttle::Warnings,
    /// The Unix peers calls are taken from.
    pub(super) access: crate::access::UnixAccess,
    /// Buffers lent to functions that answer into one, and the answers' buffers kept.
    pub(super) buffers: super::answer_buffers::AnswerBuffers,
    /// The function the loop's last call found, tried first for the next
    /// ([`Registry::find_hinted`](crate::function::Registry::find_hinted)).
    pub(super) last_function: std::cell::Cell<usize>,
}

/// What the event loop should do with a connection after driving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drive {
    /// Nothing more to do until an event, an answer or its wakeup.
    Wait,
    /// It still has work; drive it again after the others had a turn.
    Again,
    /// It is over: deregister and drop it.
    Remove,
}

/// The core has reported the connection closed; the socket lingers.
#[derive(Debug)]
struct Lingering {
    until: Instant,
    write_shut: bool,
    /// The last read found nothing waiting.
    input_drained: bool,
}

/// One connection. See the [module docs](self).
pub(super) struct Conn {
    stream: Stream,
    /// Who is at the other end, for functions' contexts.
    peer: OwnedPeer,
    core: CoreConnection,
    label: String,
    /// Answers waiting for room in the core's transmit buffer, oldest first. At most one
    /// per request in flight.
    answers: VecDeque<(RequestId, Answer)>,
    /// Answers held until their time (`Responder::respond_after`).
    delayed: Vec<(Instant, RequestId, Answer)>,
    /// `WRITABLE` is registered (only while bytes are pending).
    writable: bool,
    /// The socket may have bytes (or its end, or an error) not read yet: set by a readable
    /// event, cleared by a read that comes back short or would block.
    readable: bool,
    /// An event said the peer's end of stream (or an error) is waiting behind the bytes:
    /// a short read does not clear `readable` then.
    peer_ended: bool,
    eof: bool,
    write_failed: bool,
    lingering: Option<Lingering>,
    last_active: Instant,
    idle_closing: bool,
    /// The core's counters already added to the server's.
    seen: ServerStats,
    /// The instant this connection is filed under in the loop's timer set.
    pub(super) wakeup: Option<Instant>,
    /// In the loop's ready queue.
    pub(super) queued: bool,
    /// The `last_active` at which the buffers were last shrunk (idle since then).
    shrunk_at: Option<Instant>,
    /// Where this connection's responders deliver.
    completions: Arc<dyn Completions>,
    /// A TLS connection's handshake has been logged (with the peer's identity).
    tls_noted: bool,
    /// Accepted only to be refused (over the connection limit, on TLS, where the refusal
    /// must go through the handshake): not counted as accepted or open.
    pub(super) refusing: bool,
    /// On a PROXY protocol listener, until the header has been taken: the instant by
    /// which it must have come. Nothing is read as wirecall, and nothing sent, before.
    proxy_until: Option<Instant>,
    /// When to tell the connection to go away for its age (`max_connection_age`);
    /// `None` once told, or without an age limit.
    aged_at: Option<Instant>,
}

impl Conn {
    /// A connection just accepted; the core's hello is queued.
    pub(super) fn new(
        stream: Stream,
        peer: OwnedPeer,
        label: String,
        config: &ServerConfig,
        now: Instant,
        completions: Arc<dyn Completions>,
    ) -> Result<Self, ConfigError> {
        let buffer = || GrowBuf::new(0, config.connection.buffer_len());
        let slots = GrowTable::new(config.connection.table_len());
        let core = ServerConnection::new(config.connection, buffer(), buffer(), slots, now)?;
        Ok(Self {
            stream,
            peer,
            core,
            label,
            answers: VecDeque::new(),
            delayed: Vec::new(),
            writable: false,
            readable: true,
            peer_ended: false,
            eof: false,
            write_failed: false,
            lingering: None,
            last_active: now,
            idle_closing: false,
            seen: ServerStats::default(),
            wakeup: None,
            queued: false,
            shrunk_at: None,
            completions,
            tls_noted: false,
            refusing: false,
            proxy_until: None,
            aged_at: config.aged_at(now),
        })
    }

    /// The connection came through a load balancer: its first bytes are a PROXY protocol
    /// header, which must come by `until` (see [`super::proxy_header`]).
    pub(super) fn await_proxy_header(&mut self, until: Instant) {
        self.proxy_until = Some(until);
    }

    /// A readable event came (with the peer's end of stream among it when `ended`): the
    /// next drive reads.
    pub(super) fn set_readable(&mut self, ended: bool) {
        self.readable = true;
        self.peer_ended |= ended;
    }

    /// The label used in log lines.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// The socket, to register it.
    pub(super) fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Begins a graceful close (go-away): what was received is still answered.
    pub(super) fn close(&mut self, now: Instant) {
        self.core.close(now);
    }

    /// Refuses the connection (at the connection limit): our hello and a close with
    /// `REFUSED` go out, through TLS's handshake on a TLS stream, then it closes.
    pub(super) fn refuse(&mut self) {
        self.refusing = true;
        self.core.refuse();
    }

    /// Closes at once (the shutdown deadline passed).
    pub(super) fn abort(&mut self) {
        self.core.abort();
    }

    /// An answer from a worker or a responder.
    pub(super) fn complete(&mut self, id: RequestId, answer: Answer, not_before: Option<Instant>) {
        if self.lingering.is_some() {
            return;
        }
        match not_before {
            Some(at) => self.delayed.push((at, id, answer)),
            None => self.answers.push_back((id, answer)),
        }
    }

    /// Does everything that can be done now. See the [module docs](self).
    pub(super) fn drive(&mut self, now: Instant, shared: &Shared) -> Drive {
        let result = self.drive_passes(now, shared);
        shared.stats.add_core(self.core.stats(), &mut self.seen);
        result
    }

    fn drive_passes(&mut self, now: Instant, shared: &Shared) -> Drive {
        if let Some(until) = self.proxy_until {
            if let Some(drive) = self.take_proxy_header(now, until, shared) {
                return drive;
            }
        }
        self.release_delayed(now);
        self.check_idle(now, shared);
        self.check_age(now, shared);
        self.shrink_if_idle(now);
        for _ in 0..MAX_PASSES {
            let mut progress = self.read_in(now);
            self.note_tls();
            progress |= self.flush_answers(now, &shared.buffers);
            progress |= self.take_events(now, shared);
            progress |= self.write_out();
            if self.finished(now, shared.draining) {
                return Drive::Remove;
            }
            if !progress {
                return Drive::Wait;
            }
        }
        Drive::Again
    }

    /// Registers or drops `WRITABLE` interest to match whether bytes are pending.
    pub(super) fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want =
            !self.write_failed && (!self.core.transmit().is_empty() || self.stream.wants_write());
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, token, interest)?;
            self.writable = want;
        }
        Ok(())
    }

    /// When this connection next needs driving without any event: the core's timers,
    /// held answers, the idle timeout, the end of lingering.
    pub(super) fn next_wakeup(&self, config: &ServerConfig) -> Option<Instant> {
        if let Some(lingering) = &self.lingering {
            return Some(lingering.until);
        }
        if let Some(until) = self.proxy_until {
            return Some(until);
        }
        let mut next = self.core.poll_timeout();
        for (at, _, _) in &self.delayed {
            next = earliest(next, Some(*at));
        }
        if let Some(idle) = config.idle_timeout {
            if !self.idle_closing && self.is_idle() {
                next = earliest(next, Some(self.last_active.saturating_add(to_core(idle))));
            }
        }
        next = earliest(next, self.aged_at);
        if self.is_idle() && self.shrunk_at != Some(self.last_active) {
            next = earliest(
                next,
                Some(self.last_active.saturating_add(to_core(SHRINK_AFTER))),
            );
        }
        next
    }

    /// Reads the PROXY protocol header a balancer sends first: `None` once it is taken (the
    /// peer is now the client it names) and the connection goes on as any other;
    /// `Some(Wait)` while it is still coming, `Some(Remove)` when it is not one or did
    /// not come in time (closed without a word: the peer is not a balancer we trust, so
    /// nothing of wirecall's is said to it).
    #[cold]
    #[inline(never)]
    fn take_proxy_header(
        &mut self,
        now: Instant,
        until: Instant,
        shared: &Shared,
    ) -> Option<Drive> {
        use super::proxy_header::{MAX_HEADER, Parsed, consume, parse, peek};
        let parsed = if self.readable {
            let mut buf = [0u8; MAX_HEADER];
            match peek(&self.stream, &mut buf) {
                Ok(0) => Parsed::Invalid("closed before a whole PROXY header".to_owned()),
                Ok(n) => match parse(buf.get(..n).unwrap_or_default()) {
                    Parsed::Incomplete if self.peer_ended => {
                        Parsed::Invalid("closed before a whole PROXY header".to_owned())
                    }
                    parsed => parsed,
                },
                Err(e) if would_block(&e) => Parsed::Incomplete,
                Err(e) => Parsed::Invalid(format!("read failed: {e}")),
            }
        } else {
            Parsed::Incomplete
        };
        let why = match parsed {
            Parsed::Header(header) => match consume(&self.stream, header.len) {
                Ok(()) => {
                    self.proxy_until = None;
                    shared.stats.proxied();
                    self.take_client(header.client, header.version);
                    return None;
                }
                Err(e) => format!("read failed: {e}"),
            },
            Parsed::Incomplete => {
                // What is there has been seen: the rest brings a new readable event.
                self.readable = false;
                if shared.draining {
                    // Shutting down: no call was taken, none will be.
                    log::debug!(
                        "{}: closed before its PROXY header, shutting down",
                        self.label
                    );
                    return Some(Drive::Remove);
                }
                if now < until {
                    return Some(Drive::Wait);
                }
                "no whole PROXY header within the handshake timeout".to_owned()
            }
            Parsed::Invalid(why) => why,
        };
        shared.stats.proxy_refused();
        shared.warnings.proxy.warn(format_args!(
            "{}: closed on a PROXY protocol listener (--accept-proxy): {why}",
            self.label
        ));
        Some(Drive::Remove)
    }

    /// The peer is `client` from now on, as a PROXY header of `version` names it (`None`:
    /// a header that names no client, such as the balancer's own health check, `LOCAL`).
    fn take_client(&mut self, client: Option<std::net::SocketAddr>, version: u8) {
        let Some(client) = client else {
            log::debug!("{}: PROXY v{version} header names no client", self.label);
            return;
        };
        self.peer = match &self.peer {
            OwnedPeer::Tls(_, identity) => OwnedPeer::Tls(client, identity.clone()),
            _ => OwnedPeer::Tcp(client),
        };
        let label = self.label.strip_suffix(')').unwrap_or(&self.label);
        self.label = format!("{label}, client {client})");
        log::debug!("{}: PROXY v{version} header", self.label);
    }

    /// Gives an idle connection's buffer memory back, once per idle spell.
    fn shrink_if_idle(&mut self, now: Instant) {
        if self.is_idle()
            && self.shrunk_at != Some(self.last_active)
            && now >= self.last_active.saturating_add(to_core(SHRINK_AFTER))
            && self.core.shrink_buffers(0)
        {
            self.shrunk_at = Some(self.last_active);
        }
    }

    /// Calls taken and not yet answered (answers made but not yet sent included).
    pub(super) fn calls_unanswered(&self) -> usize {
        self.core
            .in_flight()
            .max(self.answers.len().saturating_add(self.delayed.len()))
    }

    /// When the connection last had a call (or was accepted, if it never had one), if it
    /// could be evicted now: open and not closing, no call in flight, no answer waiting.
    /// A connection at the limit may be evicted for a new one (see the event loop).
    pub(super) fn idle_since(&self) -> Option<Instant> {
        (self.lingering.is_none() && !self.idle_closing && !self.refusing && self.is_idle())
            .then_some(self.last_active)
    }

    /// Gives up the connection's place to a new one: the go-away goes out (best effort: it
    /// has no call in flight, so nothing is lost either way) and the caller drops it.
    pub(super) fn evict(&mut self, now: Instant) {
        if self.proxy_until.is_some() {
            // Its PROXY header has not come: nothing is said to it before (it is dropped).
            return;
        }
        self.core.close(now);
        self.write_out();
    }

    fn is_idle(&self) -> bool {
        self.core.in_flight() == 0 && self.answers.is_empty() && self.delayed.is_empty()
    }

    fn check_idle(&mut self, now: Instant, shared: &Shared) {
        let Some(idle) = shared.config.idle_timeout else {
            return;
        };
        if self.lingering.is_none()
            && !self.idle_closing
            && self.is_idle()
            && now >= self.last_active.saturating_add(to_core(idle))
        {
            log::info!("{}: idle for {idle:?}, closing gracefully", self.label);
            self.idle_closing = true;
            shared.stats.idle_closed();
            self.core.close(now);
        }
    }

    /// Tells a connection older than `max_connection_age` to go away: its client
    /// reconnects (through the balancer, perhaps to another server); what it sent before
    /// the go-away is answered.
    fn check_age(&mut self, now: Instant, shared: &Shared) {
        if self.aged_at.is_none_or(|at| now < at) {
            return;
        }
        self.aged_at = None;
        if self.lingering.is_some() || self.idle_closing || self.refusing || shared.draining {
            return;
        }
        log::debug!("{}: older than max_connection_age, going away", self.label);
        shared.stats.aged_out();
        self.core.close(now);
    }

    /// Moves held answers whose time has come to the answer queue, earliest first.
    fn release_delayed(&mut self, now: Instant) {
        if !self.delayed.iter().any(|(at, _, _)| *at <= now) {
            return;
        }
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.delayed = later;
        due.sort_by_key(|(at, _, _)| *at);
        self.answers
            .extend(due.into_iter().map(|(_, id, answer)| (id, answer)));
    }

    /// Hands waiting answers to the core until its transmit buffer is full.
    fn flush_answers(&mut self, now: Instant, buffers: &AnswerBuffers) -> bool {
        let mut progress = false;
        while let Some((id, answer)) = self.answers.pop_front() {
            if let Err(answer) = self.respond(id, answer, now, buffers) {
                self.answers.push_front((id, answer));
                break;
            }
            progress = true;
        }
        progress
    }

    /// Hands an answer to the core (its lent buffer goes back to `buffers`); gives the
    /// answer back when the transmit buffer is full.
    fn respond(
        &mut self,
        id: RequestId,
        answer: Answer,
        now: Instant,
        buffers: &AnswerBuffers,
    ) -> Result<(), Answer> {
        match self.core.respond(id, reply_of(&answer)) {
            Ok(()) => self.last_active = now,
            Err(RespondError::WouldBlock) => return Err(answer),
            Err(e) => log::debug!("{}: answer to {id} dropped: {e}", self.label),
        }
        if let Ok(buffer) = answer {
            buffers.give_back(buffer);
        }
        Ok(())
    }

    /// Acts on the core's events until it has none.
    fn take_events(&mut self, now: Instant, shared: &Shared) -> bool {
        if self.lingering.is_some() {
            return false;
        }
        let mut progress = false;
        while let Some(event) = self.core.poll_event(now) {
            progress = true;
            match event {
                ServerEvent::Connected(peer) => log::debug!(
                    "{}: handshake done, client accepts frames up to {} bytes",
                    self.label,
                    peer.max_frame_len
                ),
                ServerEvent::Request(request) => {
                    self.last_active = now;
                    let call = CallRef::Stream(request.id);
                    let answer = dispatch(
                        &self.completions,
                        call,
                        self.peer.as_peer_with(self.stream.tls_identity()),
                        request.target,
                        request.body,
                        request.deadline,
                        shared,
                    );
                    if let Some(answer) = answer {
                        let id = request.id;
                        // Straight to the core when nothing is queued before it (the usual
                        // case); queued only when the transmit buffer is full.
                        let queued = if self.answers.is_empty() {
                            self.respond(id, answer, now, &shared.buffers).err()
                        } else {
                            Some(answer)
                        };
                        if let Some(answer) = queued {
                            self.answers.push_back((id, answer));
                        }
                    }
                }
                ServerEvent::Cancelled { id } | ServerEvent::Expired { id } => {
                    log::debug!("{}: request {id} cancelled or expired", self.label);
                    self.delayed.retain(|(_, d, _)| *d != id);
                    self.answers.retain(|(a, _)| *a != id);
                }
                ServerEvent::Closed(reason) => {
                    self.on_closed(reason, now, shared);
                    break;
                }
                _ => {}
            }
            // Keep the queue short: answers go to the core as soon as they exist.
            self.flush_answers(now, &shared.buffers);
        }
        progress
    }

    fn on_closed(&mut self, reason: CloseReason, now: Instant, shared: &Shared) {
        let kind = if self.write_failed {
            CloseKind::IoError
        } else {
            CloseKind::of(&reason)
        };
        if let Some(throttle) = kind
            .is_protocol_error()
            .then(|| shared.warnings.protocol(kind))
            .flatten()
        {
            throttle.warn(format_args!("{}: closed: {reason}", self.label));
        } else {
            log::debug!("{}: closed: {reason}", self.label);
        }
        if !self.refusing {
            shared.stats.closed(kind);
        }
        if let Some(failure) = self.stream.tls_failure() {
            if failure.is_refused_identity() {
                shared.stats.tls_refused_identity();
            } else {
                shared.stats.tls_handshake_failed();
            }
            shared
                .warnings
                .tls
                .warn(format_args!("{}: TLS refused: {failure}", self.label));
        }
        self.answers.clear();
        self.delayed.clear();
        self.lingering = Some(Lingering {
            until: now.saturating_add(to_core(shared.config.close_linger)),
            write_shut: false,
            input_drained: false,
        });
    }

    /// Writes what the core wants sent until the socket would block.
    fn write_out(&mut self) -> bool {
        if self.write_failed {
            return false;
        }
        // Ciphertext TLS could not send last time goes first.
        let mut progress = match self.stream.flush_pending() {
            Ok(sent) => sent,
            Err(e) => {
                self.write_failed(&e);
                return true;
            }
        };
        loop {
            let pending = self.core.transmit();
            if pending.is_empty() {
                break;
            }
            match self.stream.write(pending) {
                Ok(0) => {
                    self.write_failed(&io::Error::from(io::ErrorKind::WriteZero));
                    return true;
                }
                Ok(n) => {
                    self.core.advance_transmit(n);
                    progress = true;
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    self.write_failed(&e);
                    return true;
                }
            }
        }
        if let Some(lingering) = &mut self.lingering {
            if !lingering.write_shut && self.core.transmit().is_empty() {
                // All sent: tell the peer (TLS: close_notify first, once it fits), then
                // wait for its end-of-stream.
                match self.stream.shutdown_write() {
                    Ok(false) => {}
                    Ok(true) => {
                        lingering.write_shut = true;
                        progress = true;
                    }
                    Err(e) => {
                        log::debug!("{}: shutdown: {e}", self.label);
                        lingering.write_shut = true;
                        progress = true;
                    }
                }
            }
        }
        progress
    }

    /// Logs a TLS connection's handshake once it is done, with the peer's verified identity.
    fn note_tls(&mut self) {
        if self.tls_noted {
            return;
        }
        let Some(session) = self.stream.tls_session() else {
            self.tls_noted = true;
            return;
        };
        if session.is_handshaking() {
            return;
        }
        self.tls_noted = true;
        match self.stream.tls_identity() {
            Some(identity) => log::info!(
                "{}: TLS handshake done ({}); client identity {identity}",
                self.label,
                session.describe()
            ),
            None => log::debug!(
                "{}: TLS handshake done ({}); no client certificate",
                self.label,
                session.describe()
            ),
        }
    }

    fn write_failed(&mut self, e: &io::Error) {
        log::debug!("{}: write failed: {e}", self.label);
        self.write_failed = true;
        self.core.abort();
    }

    /// Reads into the core's receive buffer until a read comes back short (the socket is
    /// empty), unless nothing came since the last such read, reading is paused (answers
    /// waiting) or the buffer is full of frames not yet taken.
    fn read_in(&mut self, now: Instant) -> bool {
        if self.eof {
            return false;
        }
        if self.lingering.is_some() {
            return self.discard_input();
        }
        if !self.readable || !self.answers.is_empty() {
            return false;
        }
        let mut progress = false;
        if self.core.input_buffer().len() < FIRST_READ {
            self.core.reserve_input(FIRST_READ);
        }
        for _ in 0..READS_PER_PASS {
            let buf = self.core.input_buffer();
            if buf.is_empty() {
                break;
            }
            match self.stream.read(buf) {
                Ok(0) => {
                    self.core.handle_eof();
                    self.eof = true;
                    return true;
                }
                Ok(n) => {
                    let filled = n == buf.len();
                    self.core.commit_input(now, n);
                    progress = true;
                    if !filled && !self.peer_ended {
                        // Short: the socket had no more.
                        self.readable = false;
                        break;
                    }
                    // A busy connection: read in larger batches next time.
                    self.core.reserve_input(n.saturating_mul(2));
                }
                Err(e) if would_block(&e) => {
                    self.readable = false;
                    break;
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.label);
                    self.core.handle_eof();
                    self.eof = true;
                    return true;
                }
            }
        }
        progress
    }

    /// After the close: reads and drops what the peer still sends, until its end-of-stream.
    fn discard_input(&mut self) -> bool {
        let mut scratch = [0u8; 4096];
        let mut progress = false;
        for _ in 0..READS_PER_PASS {
            match self.stream.read(&mut scratch) {
                Ok(0) => {
                    self.eof = true;
                    return true;
                }
                Ok(_) => progress = true,
                Err(e) if would_block(&e) => {
                    if let Some(lingering) = &mut self.lingering {
                        lingering.input_drained = true;
                    }
                    break;
                }
                Err(e) if interrupted(&e) => {}
                Err(_) => {
                    self.eof = true;
                    return true;
                }
            }
        }
        progress
    }

    /// The socket can go: closed, and either its bytes are out and the peer has closed
    /// (or, in a shutdown, has nothing unread: closing then sends no reset), or it cannot
    /// write, or lingering has lasted long enough.
    fn finished(&self, now: Instant, draining: bool) -> bool {
        self.lingering.as_ref().is_some_and(|l| {
            self.write_failed
                || (l.write_shut && (self.eof || (draining && l.input_drained)))
                || now >= l.until
        })
    }
}

/// Runs or hands off one request (`method` with `body`, to be done by `deadline`) for the
/// call `call` on the connection or datagram listener `token`; returns its answer when it
/// is ready at once. Otherwise a [`Responder`] brings it back later.
#[allow(clippy::too_many_arguments)]
pub(super) fn dispatch(
    completions: &Arc<dyn Completions>,
    call: CallRef,
    peer: Peer<'_>,
    target: Target<'_>,
    body: &[u8],
    deadline: Option<Instant>,
    shared: &Shared,
) -> Option<Answer> {
    let (index, function) = match shared.functions.find_hinted(target, &shared.last_function) {
        Ok(found) => found,
        Err(refusal) => {
            shared.stats.call(refusal.method);
            return Some(Err(refusal.failure));
        }
    };
    shared.stats.call(Some(index));
    // Timed only when metrics are on: two clock reads a call.
    let started = shared.stats.timing().then(std::time::Instant::now);
    let responder = || {
        let responder = Responder::new(call, Arc::clone(completions));
        match started {
            Some(at) => responder.timed(Arc::clone(&shared.stats), index, at),
            None => responder,
        }
    };
    let deadline = deadline.map(|d| shared.clock.to_std(d));
    let (lent, owned) = match function {
        Function::Sync(function) => (None, function),
        Function::Into { lent, owned } => (Some(lent), owned),
        Function::Deferred(function) => {
            shared.stats.execution(index);
            let responder = responder();
            let context = CallContext::new(peer, deadline);
            if catch_unwind(AssertUnwindSafe(|| function(&context, body, responder))).is_err() {
                // The responder was dropped while unwinding: the call gets an error.
                log::error!("function {target} panicked");
            }
            return None;
        }
    };
    match &shared.pool {
        None => {
            shared.stats.execution(index);
            let context = CallContext::new(peer, deadline);
            let answer = match lent {
                Some(lent) => {
                    let mut buffer = shared.buffers.lend();
                    match run_into(lent, &context, body, &mut buffer) {
                        Ok(()) => Ok(buffer),
                        Err(failure) => {
                            shared.buffers.give_back(buffer);
                            Err(failure)
                        }
                    }
                }
                None => run_sync(owned, &context, body),
            };
            if let Some(at) = started {
                shared.stats.observe(index, at.elapsed());
            }
            Some(answer)
        }
        Some(pool) if pool.is_full() => {
            shared.stats.worker_busy();
            Some(Err(CallFailure::Busy {
                retry_after: crate::clock::to_std(shared.config.connection.busy_retry_after),
            }))
        }
        Some(pool) => {
            pool.submit(Job {
                function: Arc::clone(owned),
                method: index,
                body: body.to_vec(),
                peer: OwnedPeer::from(peer),
                deadline,
                responder: responder(),
            });
            None
        }
    }
}

/// The earlier of two optional instants.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
