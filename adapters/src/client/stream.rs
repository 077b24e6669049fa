//! The client over a stream transport (Unix stream, TCP): one connection and the core's
//! [`ClientConnection`].
//!
//! The client waits on its socket with its own mio poller, never longer than the core's
//! next timer, so call timeouts and keepalive work while it waits. It is blocking: it
//! reads only inside its methods, so an idle client answers no keepalive pings (call
//! `Client::service` now and then to keep one open); a call made after the server has
//! closed the connection fails as not sent.

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use wirecall_core::client::{
    CallError as CoreCallError, CallSlot, ClientConnection, ClientEvent, CloseReason,
};
use wirecall_core::{Instant, RequestId};

use super::{CallError, Outcome};
use crate::clock::{Clock, to_core, to_std};
use crate::config::{ClientConfig, buffer_len, table_len};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::stream::{Stream, interrupted, would_block};

/// The socket's token in the client's poller.
const STREAM: Token = Token(0);
/// Reads per turn before events are handled.
const READS_PER_TURN: usize = 16;

/// A blocking client over one stream connection. See the [module docs](self).
pub(super) struct StreamClient {
    endpoint: Endpoint,
    stream: Stream,
    poll: Poll,
    events: Events,
    core: ClientConnection<Box<[u8]>, Box<[CallSlot]>>,
    clock: Clock,
    /// Calls submitted and not yet collected.
    waiting: HashSet<RequestId>,
    /// Outcomes not yet collected, in the order they came.
    done: VecDeque<(RequestId, Outcome)>,
    closed: Option<CloseReason>,
    eof: bool,
    write_failed: bool,
    /// Our end of the transport is shut (after the close).
    shut: bool,
}

impl std::fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("waiting", &self.waiting.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl StreamClient {
    /// Connects to a server and sends the hello (the server's hello is not waited for:
    /// calls can follow at once).
    pub(super) fn connect(endpoint: &Endpoint, config: &ClientConfig) -> Result<Self, Error> {
        let mut stream = Stream::connect(endpoint, config.connect_timeout)?;
        let poll = Poll::new().map_err(Error::io("creating a poller"))?;
        // Both directions, edge-triggered, for the life of the connection: a spurious
        // wakeup costs one turn, and the client never waits on writes it does not have.
        poll.registry()
            .register(&mut stream, STREAM, Interest::READABLE | Interest::WRITABLE)
            .map_err(Error::io("registering the socket"))?;
        let clock = Clock::default();
        let buffer = || vec![0u8; buffer_len(&config.connection)].into_boxed_slice();
        let slots = vec![CallSlot::EMPTY; table_len(&config.connection)].into_boxed_slice();
        let core =
            ClientConnection::new(config.connection, buffer(), buffer(), slots, clock.now())?;
        let mut client = Self {
            endpoint: endpoint.clone(),
            stream,
            poll,
            events: Events::with_capacity(4),
            core,
            clock,
            waiting: HashSet::new(),
            done: VecDeque::new(),
            closed: None,
            eof: false,
            write_failed: false,
            shut: false,
        };
        client.write_out();
        Ok(client)
    }

    /// Sends a call without waiting for its answer. Blocks only while as many calls are in
    /// flight as the server allows (until one ends) or the transmit buffer is full.
    pub(super) fn submit(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, CallError> {
        // Learn first what arrived while this client was idle: a close (keepalive, idle
        // timeout, shutdown) then fails the call as not sent, rather than "maybe executed".
        self.pump();
        loop {
            let now = self.clock.now();
            match self.core.call(now, method, body, timeout.map(to_core)) {
                Ok(id) => {
                    self.waiting.insert(id);
                    // Send it now (and take any events the call made owed), without waiting.
                    self.pump();
                    return Ok(id);
                }
                Err(e @ (CoreCallError::TooManyInFlight | CoreCallError::WouldBlock)) => {
                    if self.closed.is_some() {
                        return Err(CallError::not_sent(e));
                    }
                    self.turn();
                }
                Err(e) => return Err(CallError::not_sent(e)),
            }
        }
    }

    /// Waits for the outcome of call `id`; outcomes of other calls that arrive meanwhile
    /// are kept for later.
    pub(super) fn wait(&mut self, id: RequestId) -> Result<Vec<u8>, CallError> {
        if !self.waiting.contains(&id) {
            return Err(CallError::unknown(id));
        }
        loop {
            if let Some(pos) = self.done.iter().position(|(d, _)| *d == id) {
                self.waiting.remove(&id);
                return match self.done.remove(pos) {
                    Some((_, outcome)) => outcome,
                    None => Err(CallError::unknown(id)),
                };
            }
            if self.closed.is_some() {
                // The core reports every call before the close; this is a safety net.
                self.waiting.remove(&id);
                return Err(self.lost());
            }
            self.turn();
        }
    }

    /// Waits for the next call to finish, in whatever order they finish; `None` when no
    /// call is waiting.
    pub(super) fn wait_any(&mut self) -> Option<(RequestId, Outcome)> {
        loop {
            if let Some((id, outcome)) = self.done.pop_front() {
                self.waiting.remove(&id);
                return Some((id, outcome));
            }
            let id = *self.waiting.iter().next()?;
            if self.closed.is_some() {
                self.waiting.remove(&id);
                return Some((id, Err(self.lost())));
            }
            self.turn();
        }
    }

    /// Does whatever I/O is pending without blocking: sends what is queued, reads answers,
    /// answers the server's keepalive pings.
    pub(super) fn service(&mut self) {
        self.pump();
    }

    /// Calls submitted and not yet collected.
    #[must_use]
    pub(super) fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Calls the connection allows in flight now (the server's limit once its hello is in).
    #[must_use]
    pub(super) fn max_in_flight(&self) -> usize {
        self.core.max_in_flight()
    }

    /// Why the connection ended, once it has.
    #[must_use]
    pub(super) fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Closes gracefully: no new calls; calls in flight still get their answers (which
    /// are then dropped: collect them first); returns how the connection ended.
    pub(super) fn close(mut self) -> CloseReason {
        self.core.close(self.clock.now());
        while self.closed.is_none() {
            self.turn();
        }
        self.write_out();
        self.closed.unwrap_or(CloseReason::Aborted)
    }

    fn lost(&self) -> CallError {
        let reason = self.closed.unwrap_or(CloseReason::Aborted);
        CallError::from(&wirecall_core::client::Failure::ConnectionLost { reason, sent: true })
    }

    /// Moves bytes and events; waits for the socket or the core's next timer only when
    /// nothing could be done.
    fn turn(&mut self) {
        if !self.pump() && self.closed.is_none() {
            self.block();
            self.pump();
        }
    }

    /// One round of writing, reading, timers and events; `true` if anything happened.
    fn pump(&mut self) -> bool {
        let mut progress = self.write_out();
        progress |= self.read_in();
        let now = self.clock.now();
        self.core.handle_timeout(now);
        progress |= self.take_events(now);
        progress |= self.write_out();
        if self.closed.is_some()
            && !self.shut
            && (self.write_failed || self.core.transmit().is_empty())
        {
            // The core is done with the connection: close the transport, so the server
            // sees the end at once rather than when this client is dropped.
            self.shut = true;
            if let Err(e) = self.stream.shutdown_write() {
                log::debug!("{}: shutdown: {e}", self.endpoint);
            }
        }
        progress
    }

    fn block(&mut self) {
        let now = self.clock.now();
        let timeout = self
            .core
            .poll_timeout()
            .map(|at| to_std(at.saturating_duration_since(now)));
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                log::error!("{}: cannot wait for the socket: {e}", self.endpoint);
                self.core.abort();
            }
        }
    }

    fn take_events(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while let Some(event) = self.core.poll_event(now) {
            progress = true;
            match event {
                ClientEvent::Response { id, body } => self.done.push_back((id, Ok(body.to_vec()))),
                ClientEvent::Failed { id, failure } => {
                    self.done.push_back((id, Err(CallError::from(&failure))));
                }
                ClientEvent::Closed(reason) => {
                    log::debug!("{}: connection closed: {reason}", self.endpoint);
                    self.closed = Some(reason);
                }
                _ => {}
            }
        }
        progress
    }

    fn write_out(&mut self) -> bool {
        if self.write_failed {
            return false;
        }
        let mut progress = false;
        loop {
            let pending = self.core.transmit();
            if pending.is_empty() {
                return progress;
            }
            match self.stream.write(pending) {
                Ok(n) if n > 0 => {
                    self.core.advance_transmit(n);
                    progress = true;
                }
                Err(e) if would_block(&e) => return progress,
                Err(e) if interrupted(&e) => {}
                result => {
                    // The server is gone; reading will see the end of the stream.
                    if let Err(e) = result {
                        log::debug!("{}: write failed: {e}", self.endpoint);
                    }
                    self.write_failed = true;
                    return true;
                }
            }
        }
    }

    fn read_in(&mut self) -> bool {
        if self.eof || self.closed.is_some() {
            return false;
        }
        let mut progress = false;
        for _ in 0..READS_PER_TURN {
            let buf = self.core.input_buffer();
            if buf.is_empty() {
                break;
            }
            match self.stream.read(buf) {
                Ok(0) => {
                    self.core.handle_eof(self.clock.now());
                    self.eof = true;
                    return true;
                }
                Ok(n) => {
                    self.core.commit_input(self.clock.now(), n);
                    progress = true;
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}", self.endpoint);
                    self.core.handle_eof(self.clock.now());
                    self.eof = true;
                    return true;
                }
            }
        }
        progress
    }
}
