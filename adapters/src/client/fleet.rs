//! [`FleetClient`]: a blocking client of a fleet of servers (several endpoints, one name
//! that resolves to several addresses, or one load balancer in front of many), which
//! reconnects when a connection goes away and sends a failed call again only when the
//! core says it was **not executed**, within the call's deadline and an attempt budget.
//!
//! ```no_run
//! use std::time::Duration;
//! use wirecall::{Endpoint, FleetClient, FleetConfig};
//!
//! // Three servers (or one HAProxy endpoint in front of them).
//! let endpoints: Vec<Endpoint> = ["tcp:10.0.0.5:7000", "tcp:10.0.0.6:7000", "tcp:10.0.0.7:7000"]
//!     .iter()
//!     .map(|e| e.parse())
//!     .collect::<Result<_, _>>()?;
//! let mut fleet = FleetClient::new(endpoints, FleetConfig::default())?;
//! let answer = fleet.call("echo", b"hi", Some(Duration::from_secs(2)))?;
//! assert_eq!(answer.body, b"hi");
//! println!("answered after {} attempt(s)", answer.attempts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Connections.** New calls go to one connection at a time, to the endpoints in turn
//! (the first chosen at random, so clients started together spread out). When that
//! connection stops taking calls (the server's go-away: a graceful shutdown, an idle or
//! age limit; or it was lost), the next call opens a connection to the next endpoint,
//! while the calls in flight on the old one still end there. Before it sends on a
//! connection that has had no call for half a second, it reads what the server sent
//! meanwhile (one non-blocking read), so a connection closed while idle (an idle or
//! keepalive timeout) is replaced before a call goes into it. Behind a load balancer, give
//! its one endpoint: each new connection is the balancer's to place.
//!
//! **Retries.** A call is sent again, on another connection, only when it failed *not
//! executed* in a way that another try may change: the server's go-away came before it
//! was taken (`Refused`), it could not be sent because the connection was closing or
//! closed, the connection was lost before it was sent or taken, the server is shutting
//! down (`Rejected` `SHUTTING_DOWN`), nothing listened at a datagram endpoint, or a
//! connection could not be made; a busy answer is sent again after the server's hint.
//! Never after a *maybe executed* or *executed* outcome (a lost connection with the call
//! taken, a timeout after it was sent, the function's own error), and never for a refusal
//! that would repeat (unknown method, invalid request, too large). Each call has at most
//! [`FleetConfig::max_attempts`] tries (3 by default), all within its deadline; its
//! outcome says how many it took ([`FleetAnswer::attempts`], [`FleetError::attempts`]).
//!
//! **Datagrams.** On `udp:` and `unix-dgram:` endpoints a retried call is a *new* call to
//! the next server: the call cache that makes a datagram call run at most once is per
//! server, so only calls that are known not to have run (`Unreachable`, `SHUTTING_DOWN`,
//! busy) are ever sent elsewhere, and a call that timed out after it was sent is not.
//!
//! The client keeps each call's method and body until it ends (to send it again), so its
//! memory is bounded by the calls in flight, as the plain [`Client`]'s is.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use wirecall_core::RequestId;
use wirecall_core::client::{Execution, SendError};
use wirecall_core::wire::RejectCode;

use super::{CallError, CallErrorKind, Client};
use crate::config::ClientConfig;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::tls::TlsConnector;

/// How a [`FleetClient`] connects and retries. Start from [`FleetConfig::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetConfig {
    /// Each connection's configuration.
    pub client: ClientConfig,
    /// The most times one call is tried, its first try included (1 to 100; 1: never
    /// again). A connection that cannot be made counts as a try. Default: 3.
    pub max_attempts: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            max_attempts: 3,
        }
    }
}

/// The most tries of one call a [`FleetConfig`] may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// A call of a [`FleetClient`], to collect its outcome with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FleetCallId(u64);

impl fmt::Display for FleetCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fleet call {}", self.0)
    }
}

/// A fleet call's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetAnswer {
    /// The function's answer.
    pub body: Vec<u8>,
    /// How many tries it took (1: the first).
    pub attempts: u32,
}

/// How a fleet call failed, after how many tries.
#[derive(Debug)]
pub struct FleetError {
    kind: FleetErrorKind,
    attempts: u32,
}

/// What ended a failed fleet call: its last try's failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetErrorKind {
    /// The call's failure on its last try.
    Call(CallError),
    /// No connection could be made for its last try (so it was not sent).
    Connect(Error),
}

impl FleetError {
    /// Whether a server may have run the function: the last try's judgement (the tries
    /// before it were all not executed, or there would have been no other).
    #[must_use]
    pub fn execution(&self) -> Execution {
        match &self.kind {
            FleetErrorKind::Call(e) => e.execution(),
            FleetErrorKind::Connect(_) => Execution::NotExecuted,
        }
    }

    /// How many tries the call had.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// What ended it.
    #[must_use]
    pub fn kind(&self) -> &FleetErrorKind {
        &self.kind
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FleetErrorKind::Call(e) => write!(f, "{e}")?,
            FleetErrorKind::Connect(e) => write!(f, "{e}")?,
        }
        write!(f, " (after {} attempt(s))", self.attempts)
    }
}

impl std::error::Error for FleetError {}

/// What a fleet call ends with.
pub type FleetOutcome = Result<FleetAnswer, FleetError>;

/// Counters of a [`FleetClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Calls submitted.
    pub calls: u64,
    /// Tries after a call's first (each after a not-executed failure).
    pub retries: u64,
    /// Connections made.
    pub connections: u64,
    /// Connections that could not be made.
    pub connect_failures: u64,
}

/// A blocking client of several servers. See the [module docs](self).
#[derive(Debug)]
pub struct FleetClient {
    endpoints: Vec<Endpoint>,
    config: FleetConfig,
    tls: Option<TlsConnector>,
    /// Connections, oldest first: new calls go to the last while it takes them; the
    /// others only finish the calls they have.
    members: Vec<Member>,
    /// Where the next connection goes, as an index into `endpoints` (modulo its length).
    next_endpoint: usize,
    calls: HashMap<FleetCallId, Call>,
    next_id: u64,
    /// Calls to try again at a time (a busy answer's hint), earliest first when taken.
    later: Vec<(Instant, FleetCallId)>,
    /// Outcomes not collected yet.
    done: VecDeque<(FleetCallId, FleetOutcome)>,
    stats: FleetStats,
}

#[derive(Debug)]
struct Member {
    client: Client,
    /// Its calls in flight: the client's id, and the fleet's.
    calls: HashMap<RequestId, FleetCallId>,
    /// Takes no new calls (its server is going away), though the client may not know.
    retired: bool,
    /// When a call was last sent on it or ended on it.
    last_used: Instant,
}

impl Member {
    fn takes_calls(&self) -> bool {
        !self.retired && self.client.accepts_calls()
    }
}

#[derive(Debug)]
struct Call {
    method: String,
    body: Vec<u8>,
    deadline: Option<Instant>,
    attempts: u32,
    /// The failure of the last try, reported if no try is left.
    last_failure: Option<FleetErrorKind>,
}

/// What to do after a not-executed failure.
enum Retry {
    /// Try again now, on another connection.
    Elsewhere,
    /// Try again after this long (a busy answer's hint).
    After(Duration),
}

impl FleetClient {
    /// A client of the servers at `endpoints` (any transports; usually all one kind).
    /// Nothing is connected until the first call.
    ///
    /// # Errors
    ///
    /// No endpoints ([`Error::LimitTooSmall`]), `max_attempts` out of range, or a
    /// connection configuration the core refuses.
    pub fn new(endpoints: Vec<Endpoint>, config: FleetConfig) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::LimitTooSmall {
                what: "fleet endpoints",
                got: 0,
                min: 1,
            });
        }
        if config.max_attempts == 0 {
            return Err(Error::LimitTooSmall {
                what: "max_attempts",
                got: 0,
                min: 1,
            });
        }
        if config.max_attempts > MAX_ATTEMPTS {
            return Err(Error::LimitTooLarge {
                what: "max_attempts",
                got: u64::from(config.max_attempts),
                max: u64::from(MAX_ATTEMPTS),
            });
        }
        crate::config::check_limits(&config.client.connection)?;
        let n = u64::try_from(endpoints.len()).unwrap_or(1).max(1);
        let start = usize::try_from(crate::clock::spread_random() % n).unwrap_or(0);
        Ok(Self {
            endpoints,
            config,
            tls: None,
            members: Vec::new(),
            next_endpoint: start,
            calls: HashMap::new(),
            next_id: 1,
            later: Vec::new(),
            done: VecDeque::new(),
            stats: FleetStats::default(),
        })
    }

    /// Connects to `tls:` endpoints with these TLS settings (else as
    /// [`Client::connect`] does: the system's trust store, no client certificate).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Every address `endpoint`'s host name resolves to, as endpoints of the same
    /// transport (`tcp:` and `udp:`), for a fleet behind one DNS name. Other endpoints come
    /// back as they are (a `tls:` endpoint keeps its name, which its certificate is
    /// checked against; a Unix path has no addresses).
    ///
    /// # Errors
    ///
    /// [`Error::Resolve`].
    pub fn resolve(endpoint: &Endpoint) -> Result<Vec<Endpoint>, Error> {
        let make: fn(std::net::SocketAddr) -> Endpoint = match endpoint {
            Endpoint::Tcp(..) => Endpoint::tcp_addr,
            Endpoint::Udp(..) => Endpoint::udp_addr,
            _ => return Ok(vec![endpoint.clone()]),
        };
        let mut all: Vec<Endpoint> = Vec::new();
        for addr in endpoint.resolve()? {
            let e = make(addr);
            if !all.contains(&e) {
                all.push(e);
            }
        }
        Ok(all)
    }

    /// Calls `method` with `body` and waits for its outcome (other calls' outcomes that
    /// come meanwhile are kept for [`wait_any`](Self::wait_any)). `timeout` bounds every
    /// try together: none starts after it has passed.
    ///
    /// # Errors
    ///
    /// [`FleetError`], with the last try's failure and the number of tries.
    pub fn call(
        &mut self,
        method: &str,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<FleetAnswer, FleetError> {
        let id = self.submit(method, body, timeout);
        self.wait(id)
    }

    /// Starts a call; collect its outcome with [`wait`](Self::wait) or
    /// [`wait_any`](Self::wait_any). A call that cannot be sent at all ends at once
    /// (its outcome waits to be collected). Blocks only as [`Client::submit`] does.
    pub fn submit(&mut self, method: &str, body: &[u8], timeout: Option<Duration>) -> FleetCallId {
        let id = FleetCallId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.stats.calls = self.stats.calls.saturating_add(1);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.calls.insert(
            id,
            Call {
                method: method.to_owned(),
                body: body.to_vec(),
                deadline,
                attempts: 0,
                last_failure: None,
            },
        );
        self.send(id);
        id
    }

    /// Waits for the outcome of call `id`.
    ///
    /// # Errors
    ///
    /// The call's [`FleetError`]; for an id that is not waiting here, a
    /// [`CallErrorKind::UnknownCall`] failure after 0 attempts.
    pub fn wait(&mut self, id: FleetCallId) -> FleetOutcome {
        loop {
            if let Some(at) = self.done.iter().position(|(d, _)| *d == id) {
                if let Some((_, outcome)) = self.done.remove(at) {
                    return outcome;
                }
            }
            if !self.calls.contains_key(&id) || !self.step() {
                return Err(FleetError {
                    kind: FleetErrorKind::Call(CallError::unknown(RequestId(id.0))),
                    attempts: 0,
                });
            }
        }
    }

    /// Waits for the next call to end, in whatever order they end; `None` when no call is
    /// waiting.
    pub fn wait_any(&mut self) -> Option<(FleetCallId, FleetOutcome)> {
        loop {
            if let Some(outcome) = self.done.pop_front() {
                return Some(outcome);
            }
            if !self.step() {
                return None;
            }
        }
    }

    /// Calls submitted whose outcomes have not been collected.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.calls.len().saturating_add(self.done.len())
    }

    /// The client's counters.
    #[must_use]
    pub fn stats(&self) -> FleetStats {
        self.stats
    }

    /// Connections open now (the one taking calls, and older ones finishing theirs).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.members.len()
    }

    /// Does pending I/O on every connection without blocking (answers keepalive pings,
    /// reads what has come; see [`Client::service`]), and drops connections that have
    /// ended with no call left on them.
    pub fn service(&mut self) {
        for member in &mut self.members {
            member.client.service();
        }
        self.members
            .retain(|m| !m.calls.is_empty() || m.takes_calls());
    }

    /// Tries call `id` until a try is under way or the call has ended.
    fn send(&mut self, id: FleetCallId) {
        loop {
            let Some(call) = self.calls.get_mut(&id) else {
                return;
            };
            let now = Instant::now();
            let remaining = match call.deadline {
                Some(deadline) if deadline <= now => {
                    self.give_up(id, None);
                    return;
                }
                Some(deadline) => Some(deadline.saturating_duration_since(now)),
                None => None,
            };
            if call.attempts >= self.config.max_attempts {
                self.give_up(id, None);
                return;
            }
            if call.attempts > 0 {
                self.stats.retries = self.stats.retries.saturating_add(1);
            }
            call.attempts = call.attempts.saturating_add(1);
            let member = match self.current() {
                Ok(index) => index,
                Err(e) => {
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.last_failure = Some(FleetErrorKind::Connect(e));
                    }
                    continue;
                }
            };
            let Some(call) = self.calls.get(&id) else {
                return;
            };
            let Some(m) = self.members.get_mut(member) else {
                return;
            };
            match m.client.submit(call.method.as_str(), &call.body, remaining) {
                Ok(rid) => {
                    m.calls.insert(rid, id);
                    m.last_used = now;
                    return;
                }
                Err(e) => match retry(&e) {
                    Some(_) => {
                        m.retired = true;
                        if let Some(call) = self.calls.get_mut(&id) {
                            call.last_failure = Some(FleetErrorKind::Call(e));
                        }
                    }
                    None => {
                        self.give_up(id, Some(FleetErrorKind::Call(e)));
                        return;
                    }
                },
            }
        }
    }

    /// Ends call `id` with `failure`, or else the failure of its last try.
    fn give_up(&mut self, id: FleetCallId, failure: Option<FleetErrorKind>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let kind = failure.or(call.last_failure).unwrap_or_else(|| {
            // Out of time before the first try.
            FleetErrorKind::Call(CallError::timed_out_unsent())
        });
        self.done.push_back((
            id,
            Err(FleetError {
                kind,
                attempts: call.attempts,
            }),
        ));
    }

    /// The connection new calls go to, connecting to the next endpoint if none takes
    /// them.
    fn current(&mut self) -> Result<usize, Error> {
        if let Some(last) = self.members.len().checked_sub(1) {
            if let Some(member) = self.members.get_mut(last) {
                // A connection idle for a while may have been closed by its server (an idle
                // or keepalive timeout) with nothing read yet: read what came first, so a
                // call is not sent into a closed connection (where it could end maybe
                // executed rather than be sent elsewhere).
                if member.calls.is_empty() && member.last_used.elapsed() >= IDLE_CHECK {
                    member.client.service();
                    member.last_used = Instant::now();
                }
                if member.takes_calls() {
                    return Ok(last);
                }
            }
        }
        // Old connections with nothing left on them go now.
        self.members.retain(|m| !m.calls.is_empty());
        let n = self.endpoints.len();
        let index = self.next_endpoint % n;
        self.next_endpoint = self.next_endpoint.wrapping_add(1);
        let Some(endpoint) = self.endpoints.get(index) else {
            return Err(Error::LimitTooSmall {
                what: "fleet endpoints",
                got: 0,
                min: 1,
            });
        };
        let connected = match &self.tls {
            Some(tls) => Client::connect_tls(endpoint, self.config.client, tls),
            None => Client::connect(endpoint, self.config.client),
        };
        match connected {
            Ok(client) => {
                self.stats.connections = self.stats.connections.saturating_add(1);
                log::debug!("fleet: connected to {endpoint}");
                self.members.push(Member {
                    client,
                    calls: HashMap::new(),
                    retired: false,
                    last_used: Instant::now(),
                });
                Ok(self.members.len() - 1)
            }
            Err(e) => {
                self.stats.connect_failures = self.stats.connect_failures.saturating_add(1);
                log::debug!("fleet: {e}");
                Err(e)
            }
        }
    }

    /// Waits for one outcome on some connection and acts on it (or sends calls whose
    /// time has come). `false` when no call is waiting anywhere.
    fn step(&mut self) -> bool {
        self.send_due();
        let busy = self.members.iter().filter(|m| !m.calls.is_empty()).count();
        let next_due = self.later.iter().map(|(at, _)| *at).min();
        if busy == 0 {
            return match next_due {
                Some(at) => {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    true
                }
                None => false,
            };
        }
        // One connection and nothing scheduled: wait on it. Else take turns, briefly.
        let turn = match (busy, next_due) {
            (1, None) => None,
            _ => Some(
                next_due
                    .map_or(TURN, |at| at.saturating_duration_since(Instant::now()))
                    .min(TURN),
            ),
        };
        for index in 0..self.members.len() {
            let Some(member) = self.members.get_mut(index) else {
                continue;
            };
            if member.calls.is_empty() {
                continue;
            }
            let got = match turn {
                None => member.client.wait_any(),
                Some(t) => member.client.wait_any_timeout(t),
            };
            if let Some((rid, outcome)) = got {
                self.settle(index, rid, outcome);
                return true;
            }
        }
        true
    }

    /// Sends the calls whose retry time has come.
    fn send_due(&mut self) {
        if self.later.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.later.drain(..).partition(|(at, _)| *at <= now);
        self.later = later;
        for (_, id) in due {
            self.send(id);
        }
    }

    /// Acts on the outcome of the call `rid` of connection `index`.
    fn settle(&mut self, index: usize, rid: RequestId, outcome: super::Outcome) {
        let Some(member) = self.members.get_mut(index) else {
            return;
        };
        let Some(id) = member.calls.remove(&rid) else {
            return;
        };
        member.last_used = Instant::now();
        let attempts = self.calls.get(&id).map_or(0, |c| c.attempts);
        match outcome {
            Ok(body) => {
                self.calls.remove(&id);
                self.done
                    .push_back((id, Ok(FleetAnswer { body, attempts })));
            }
            Err(e) => match retry(&e) {
                Some(Retry::Elsewhere) => {
                    member.retired = true;
                    log::debug!("fleet: {id} not executed ({e}); trying again");
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.last_failure = Some(FleetErrorKind::Call(e));
                    }
                    self.send(id);
                }
                Some(Retry::After(wait)) => {
                    let at = Instant::now()
                        .checked_add(wait)
                        .unwrap_or_else(Instant::now);
                    if let Some(call) = self.calls.get_mut(&id) {
                        if call.deadline.is_some_and(|d| d <= at)
                            || call.attempts >= self.config.max_attempts
                        {
                            self.give_up(id, Some(FleetErrorKind::Call(e)));
                        } else {
                            call.last_failure = Some(FleetErrorKind::Call(e));
                            self.later.push((at, id));
                        }
                    }
                }
                None => self.give_up(id, Some(FleetErrorKind::Call(e))),
            },
        }
    }
}

/// How long a connection must have had no call before the next call first reads what
/// its server may have sent meanwhile (one non-blocking read).
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// How long one connection is waited on while others also have calls (or a retry is
/// scheduled): short, since answers on the others wait meanwhile.
const TURN: Duration = Duration::from_millis(1);

/// Whether a failed try may be tried again, and how: only a not-executed failure that
/// another try may change.
fn retry(e: &CallError) -> Option<Retry> {
    if e.execution() != Execution::NotExecuted {
        return None;
    }
    match e.kind() {
        CallErrorKind::Refused
        | CallErrorKind::ConnectionLost(_)
        | CallErrorKind::Unreachable
        | CallErrorKind::NotSent(SendError::Closed | SendError::Closing) => Some(Retry::Elsewhere),
        CallErrorKind::Rejected { code, .. } if *code == RejectCode::SHUTTING_DOWN => {
            Some(Retry::Elsewhere)
        }
        CallErrorKind::Busy { retry_after } => Some(Retry::After(*retry_after)),
        _ => None,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_only_not_executed_failures_another_try_may_change_are_retried() {
        use wirecall_core::Duration as CoreDuration;
        use wirecall_core::client::{CloseReason, Failure};
        use wirecall_core::wire::CloseCode;
        let kind = |f: Failure<'_>| match retry(&CallError::from(&f)) {
            Some(Retry::Elsewhere) => "elsewhere",
            Some(Retry::After(_)) => "after",
            None => "never",
        };
        let lost = |reason, sent| Failure::ConnectionLost { reason, sent };
        // Known not run, and another server or a later try may take it.
        assert_eq!(kind(Failure::Refused), "elsewhere");
        assert_eq!(kind(Failure::Unreachable), "elsewhere");
        let refused = CloseReason::PeerClosed(CloseCode::REFUSED);
        assert_eq!(kind(lost(refused, true)), "elsewhere");
        let shutting_down = Failure::Rejected {
            code: RejectCode::SHUTTING_DOWN,
            message: "",
        };
        assert_eq!(kind(shutting_down), "elsewhere");
        let busy = Failure::Busy {
            retry_after: CoreDuration::from_millis(5),
        };
        assert_eq!(kind(busy), "after");
        for e in [SendError::Closed, SendError::Closing] {
            assert!(matches!(
                retry(&CallError::not_sent(e)),
                Some(Retry::Elsewhere)
            ));
        }
        // Maybe run, or run: never again.
        assert_eq!(kind(lost(CloseReason::TransportClosed, true)), "never");
        assert_eq!(kind(Failure::TimedOut { sent: true }), "never");
        let remote = Failure::Remote {
            code: 1,
            message: "",
        };
        assert_eq!(kind(remote), "never");
        // Not run, but another try would be refused the same way.
        for code in [
            RejectCode::UNKNOWN_METHOD,
            RejectCode::INVALID_REQUEST,
            RejectCode::DEADLINE_EXCEEDED,
            RejectCode::SCHEMA_MISMATCH,
        ] {
            assert_eq!(kind(Failure::Rejected { code, message: "" }), "never");
        }
        assert_eq!(kind(Failure::TimedOut { sent: false }), "never");
        let too_large = SendError::TooLarge { len: 2, limit: 1 };
        assert!(retry(&CallError::not_sent(too_large)).is_none());
    }

    #[test]
    fn test_a_name_resolves_to_every_address() {
        let parse = |e: &str| -> Endpoint { e.parse().unwrap_or_else(|_| unreachable!()) };
        let all = FleetClient::resolve(&parse("tcp:localhost:7000")).unwrap_or_default();
        assert!(all.contains(&parse("tcp:127.0.0.1:7000")), "{all:?}");
        let all = FleetClient::resolve(&parse("udp:localhost:7000")).unwrap_or_default();
        assert!(all.contains(&parse("udp:127.0.0.1:7000")), "{all:?}");
        // A path, or a TLS name that its certificate is checked against, stays as it is.
        for e in ["unix:/run/x.sock", "tls:localhost:7443"] {
            assert_eq!(FleetClient::resolve(&parse(e)).ok(), Some(vec![parse(e)]));
        }
    }

    #[test]
    fn test_config_is_checked() {
        let tcp: Endpoint = "tcp:127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        assert!(FleetClient::new(Vec::new(), FleetConfig::default()).is_err());
        let mut config = FleetConfig {
            max_attempts: 0,
            ..FleetConfig::default()
        };
        assert!(FleetClient::new(vec![tcp.clone()], config).is_err());
        config.max_attempts = MAX_ATTEMPTS + 1;
        assert!(FleetClient::new(vec![tcp.clone()], config).is_err());
        config.max_attempts = 2;
        assert!(FleetClient::new(vec![tcp], config).is_ok());
    }

    #[test]
    fn test_a_fleet_with_nothing_listening_fails_not_executed_after_every_attempt() {
        // Ports nothing listens on (bound and released).
        let free = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|_| unreachable!());
            Endpoint::tcp_addr(l.local_addr().unwrap_or_else(|_| unreachable!()))
        };
        let mut fleet = FleetClient::new(vec![free(), free()], FleetConfig::default())
            .unwrap_or_else(|_| unreachable!());
        let e = fleet
            .call("echo", b"x", Some(Duration::from_secs(5)))
            .unwrap_err();
        assert_eq!(e.execution(), Execution::NotExecuted);
        assert_eq!(e.attempts(), 3);
        assert!(matches!(e.kind(), FleetErrorKind::Connect(_)), "{e}");
        assert_eq!(fleet.stats().connect_failures, 3);
        assert_eq!(fleet.pending(), 0);
    }
}
