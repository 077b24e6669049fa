//! The blocking std client: one call at a time with [`Client::call`], or many in flight
//! with [`Client::submit`] and [`Client::wait_any`] (pipelining), over any of the four
//! transports.
//!
//! ```no_run
//! use std::time::Duration;
//! use wirecall::{Client, ClientConfig, Endpoint};
//!
//! let endpoint: Endpoint = "tcp:127.0.0.1:7000".parse()?;
//! let mut client = Client::connect(&endpoint, ClientConfig::default())?;
//! let answer = client.call("upper", b"hello", Some(Duration::from_secs(1)))?;
//! assert_eq!(answer, b"HELLO");
//!
//! // Pipelined: many calls in flight, answers in whatever order they come.
//! let ids: Vec<_> = (0..10)
//!     .map(|i| client.submit("echo", format!("{i}").as_bytes(), None))
//!     .collect::<Result<_, _>>()?;
//! while let Some((id, outcome)) = client.wait_any() {
//!     println!("{id}: {:?}", outcome.map(String::from_utf8));
//! }
//! # let _ = ids;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The client waits on its socket with blocking system calls, never longer than the
//! core's next timer, so call timeouts, retransmissions and keepalive work while it waits;
//! it makes the calls raw blocking code would make (one `send` and one `recv` per
//! ping-pong call; on a stream, one of each per batch of pipelined calls). It is blocking:
//! it does I/O only inside its methods.
//!
//! **Streams** (`unix:`, `tcp:`): one connection. An idle client answers no keepalive
//! pings (call [`Client::service`] now and then to keep one open); a call made after the
//! server has closed the connection fails as not sent.
//!
//! **Datagrams** (`unix-dgram:`, `udp:`): no connection. The client has a socket of its
//! own, connected to the server's address so the kernel drops datagrams from anyone else
//! (on `unix-dgram:` it is bound at a unique path in a temporary directory of its own, so
//! the server can answer it, and removed when the client is dropped; the directory is mode
//! 0711 and the socket 0666, so a server running as another user can answer too), and a
//! fresh random epoch from the OS. The core retransmits each request with backoff until its answer comes or
//! its deadline passes; the server runs it at most once. Every datagram call has a
//! deadline: a call without a timeout gets `ClientConfig::datagram.default_timeout`
//! (5 s), and the server rejects one longer than its `max_budget` (60 s by default).
//! Outcomes are the same as on streams, and whether a failed call may have run is the
//! core's judgement on both (a timeout is "not executed" only if no copy was ever sent).

mod call_error;
pub(crate) mod datagram;
pub mod fleet;
mod outcomes;
mod socket;
mod stream;

pub use self::call_error::{CallError, CallErrorKind};

use std::time::Duration;

use serde::de::DeserializeOwned;
use wirecall_core::RequestId;
use wirecall_core::client::{CloseReason, PeerInfo};
use wirecall_core::datagram::DatagramClientStats;
use wirecall_core::wire::Target;

use self::datagram::DatagramClient;
use self::stream::StreamClient;
use crate::config::{ClientConfig, check_limits};
use crate::endpoint::Endpoint;
use crate::error::{Error, HandshakeFailure};
use crate::tls::TlsConnector;
use crate::typed::{self, TypedCallError, decode_outcome, decode_owned, encode_request_into};

/// What a finished call gives: the answer's body, or how it failed.
pub type Outcome = Result<Vec<u8>, CallError>;

/// A blocking client of one server, over any transport. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    inner: Inner,
    /// Where typed requests are encoded, kept between calls.
    scratch: Vec<u8>,
}

#[derive(Debug)]
enum Inner {
    Stream(StreamClient),
    Datagram(DatagramClient),
}

impl Client {
    /// Connects to a server. On a stream it connects and sends the hello (the server's
    /// hello is not waited for: calls can follow at once); on a datagram endpoint it binds
    /// its own socket and connects it to the server's address (nothing is sent yet).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] (refused, no such socket, timed out; a `udp:` endpoint cannot
    /// tell a dead server from a slow one until calls time out), [`Error::Resolve`], or a
    /// configuration the core refuses ([`Error::Config`], [`Error::DatagramConfig`]).
    ///
    /// A `tls:` endpoint is connected as [`connect_tls`](Self::connect_tls) does, trusting
    /// the system's certificate store and with no client certificate.
    pub fn connect(endpoint: &Endpoint, config: ClientConfig) -> Result<Self, Error> {
        Self::connect_with(endpoint, config, None)
    }

    /// Connects to a `tls:` endpoint with these TLS settings (trust roots, client
    /// certificate): the TLS handshake is done before this returns (within
    /// `config.connect_timeout`), then as [`connect`](Self::connect). On other endpoints
    /// `tls` is not used.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`Error::TlsHandshake`] when the handshake fails
    /// (the server's certificate does not verify for the endpoint's host, the peer does not
    /// speak TLS, it refused our certificate): nothing was sent, so nothing ran.
    pub fn connect_tls(
        endpoint: &Endpoint,
        config: ClientConfig,
        tls: &TlsConnector,
    ) -> Result<Self, Error> {
        Self::connect_with(endpoint, config, Some(tls))
    }

    fn connect_with(
        endpoint: &Endpoint,
        config: ClientConfig,
        tls: Option<&TlsConnector>,
    ) -> Result<Self, Error> {
        check_limits(&config.connection)?;
        let inner = if endpoint.is_datagram() {
            Inner::Datagram(DatagramClient::connect(endpoint, &config)?)
        } else {
            Inner::Stream(StreamClient::connect(endpoint, &config, tls)?)
        };
        Ok(Self {
            endpoint: endpoint.clone(),
            inner,
            scratch: Vec::new(),
        })
    }

    /// Waits, at most `timeout`, until the server's hello has arrived, so the server is
    /// known to speak wirecall and its limits apply. Calls need not wait for it (they go
    /// out behind the client's own hello), but a caller that wants to know before it sends
    /// anything (a one-shot command-line call, a health check) waits here first: when this
    /// fails, nothing was sent, so nothing ran. On a datagram endpoint, which has no
    /// handshake, it returns at once.
    ///
    /// # Errors
    ///
    /// [`Error::TlsHandshake`] when TLS ended the connection first (the server refused our
    /// certificate), or [`Error::Handshake`]: the connection ended first (the peer is not a wirecall server,
    /// refused the connection, closed it), or no hello came within `timeout`.
    pub fn handshake(&mut self, timeout: Duration) -> Result<(), Error> {
        match &mut self.inner {
            Inner::Stream(c) => c.handshake(timeout).map_err(|reason| {
                // TLS said why (e.g. the server refused our certificate's identity).
                if let Some(failure) = c.tls_failure() {
                    return Error::TlsHandshake {
                        endpoint: self.endpoint.clone(),
                        failure: failure.clone(),
                    };
                }
                Error::Handshake {
                    endpoint: self.endpoint.clone(),
                    failure: match reason {
                        Some(reason) => HandshakeFailure::Closed(reason),
                        None => HandshakeFailure::NoHello(timeout),
                    },
                }
            }),
            Inner::Datagram(_) => Ok(()),
        }
    }

    /// The endpoint it connected to.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Calls `target` (a method name; or a typed endpoint's key, though
    /// [`call_typed`](Self::call_typed) is the way to call one) with `body` and waits for
    /// the outcome. With a `timeout`, the call
    /// fails with [`CallErrorKind::TimedOut`] when no answer comes in time (and the server
    /// is told, so it can skip late work). Without one, a stream call waits for ever and a
    /// datagram call gets the default deadline (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`CallError`]; its [`execution`](CallError::execution) says whether it may have run.
    pub fn call<'t>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let id = self.submit(target, body, timeout)?;
        self.wait(id)
    }

    /// Starts a call without waiting for its answer; collect it with [`wait`](Self::wait)
    /// or [`wait_any`](Self::wait_any). It is sent at once, except on a stream right
    /// after a [`wait`](Self::wait) or [`wait_any`](Self::wait_any) that left other
    /// outcomes to collect: then it is queued, and goes out with whatever else is queued in
    /// one write with the first call submitted after the last of those outcomes is
    /// collected, or when the client next waits (or [`service`](Self::service)s), or as
    /// soon as 16 KiB are queued. So a loop that takes one answer and submits one new
    /// call writes once per batch of answers the client read. Blocks only while as many
    /// calls are in flight as allowed (`ClientConfig::connection.max_in_flight`, or the
    /// server's lower limit on a stream), or on a datagram endpoint while the call would
    /// be more than 64 ids past the oldest call still waiting, until a call ends; or while
    /// a stream's transmit buffer is full.
    ///
    /// # Errors
    ///
    /// [`CallErrorKind::NotSent`] when the call cannot be sent at all (too large for the
    /// server's frames or for one datagram, connection closed or closing): it was not
    /// executed.
    pub fn submit<'t>(
        &mut self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RequestId, CallError> {
        let target = target.into();
        match &mut self.inner {
            Inner::Stream(c) => c.submit(target, body, timeout),
            Inner::Datagram(c) => c.submit(target, body, timeout),
        }
    }

    /// Calls typed endpoint `E` with `request` and waits for its response, decoded. For
    /// endpoints whose response and error own their data; [`call_typed_in`](Self::call_typed_in)
    /// takes the ones that borrow. See [`typed`].
    ///
    /// # Errors
    ///
    /// [`TypedCallError`]: the endpoint's error value (executed), or the call's failure
    /// with its execution ([`RejectCode::SCHEMA_MISMATCH`](wirecall_core::wire::RejectCode::SCHEMA_MISMATCH)
    /// when the server's types for the path are not ours).
    pub fn call_typed<E>(
        &mut self,
        request: &E::Request<'_>,
        timeout: Option<Duration>,
    ) -> Result<E::Response<'static>, TypedCallError<E::Error<'static>>>
    where
        E: typed::Endpoint + ?Sized,
        E::Response<'static>: DeserializeOwned,
        E::Error<'static>: DeserializeOwned,
    {
        let id = self.submit_typed::<E, _>(request, timeout)?;
        self.wait_typed::<E>(id)
    }

    /// Calls typed endpoint `E` and decodes its answer in place from `answer` (which holds
    /// the answer's bytes afterwards), so borrowed fields (`&str`, `&[u8]`) cost no copy.
    ///
    /// # Errors
    ///
    /// As [`call_typed`](Self::call_typed).
    pub fn call_typed_in<'b, E>(
        &mut self,
        request: &E::Request<'_>,
        timeout: Option<Duration>,
        answer: &'b mut Vec<u8>,
    ) -> Result<E::Response<'b>, TypedCallError<E::Error<'b>>>
    where
        E: typed::Endpoint + ?Sized,
    {
        let id = self.submit_typed::<E, _>(request, timeout)?;
        match self.wait(id) {
            Ok(bytes) => {
                *answer = bytes;
                let answer: &'b Vec<u8> = answer;
                decode_outcome::<E>(Ok(answer.as_slice()))
            }
            Err(e) => Err(TypedCallError::Call(e)),
        }
    }

    /// Starts a call of typed endpoint `E` without waiting (pipelining, as
    /// [`submit`](Self::submit)); collect it with [`wait_typed`](Self::wait_typed), or
    /// with [`wait_any`](Self::wait_any) and [`typed::decode_outcome`].
    /// `Err` is the error type of the [`TypedCallError`] the caller wants (usually inferred).
    ///
    /// # Errors
    ///
    /// [`TypedCallError::Call`] with [`CallErrorKind::NotSent`] (as for `submit`; also when
    /// a stream's server speaks only protocol version 1), or
    /// [`TypedCallError::Unencodable`].
    pub fn submit_typed<E, Err>(
        &mut self,
        request: &E::Request<'_>,
        timeout: Option<Duration>,
    ) -> Result<RequestId, TypedCallError<Err>>
    where
        E: typed::Endpoint + ?Sized,
    {
        let mut body = std::mem::take(&mut self.scratch);
        let sent = encode_request_into::<E, Err>(request, &mut body)
            .and_then(|()| Ok(self.submit(E::KEY, &body, timeout)?));
        self.scratch = body;
        sent
    }

    /// Waits for typed call `id` (from [`submit_typed`](Self::submit_typed)) of endpoint
    /// `E`, and decodes its answer.
    ///
    /// # Errors
    ///
    /// As [`call_typed`](Self::call_typed).
    pub fn wait_typed<E>(
        &mut self,
        id: RequestId,
    ) -> Result<E::Response<'static>, TypedCallError<E::Error<'static>>>
    where
        E: typed::Endpoint + ?Sized,
        E::Response<'static>: DeserializeOwned,
        E::Error<'static>: DeserializeOwned,
    {
        decode_owned::<E>(self.wait(id))
    }

    /// Waits for the outcome of call `id`; outcomes of other calls that arrive meanwhile
    /// are kept for later.
    ///
    /// # Errors
    ///
    /// The call's [`CallError`], or [`CallErrorKind::UnknownCall`] for an id that is not
    /// waiting on this client.
    pub fn wait(&mut self, id: RequestId) -> Result<Vec<u8>, CallError> {
        match &mut self.inner {
            Inner::Stream(c) => c.wait(id),
            Inner::Datagram(c) => c.wait(id),
        }
    }

    /// Waits for the next call to finish, in whatever order they finish; `None` when no
    /// call is waiting.
    pub fn wait_any(&mut self) -> Option<(RequestId, Outcome)> {
        match &mut self.inner {
            Inner::Stream(c) => c.wait_any(),
            Inner::Datagram(c) => c.wait_any(),
        }
    }

    /// As [`wait_any`](Self::wait_any), but waits no longer than `timeout`: `None` when no
    /// call is waiting or none finished in time (tell the two apart with
    /// [`pending`](Self::pending)). For a caller with a schedule of its own, such as a load
    /// generator sending calls at fixed times, which must collect answers until its next
    /// send is due.
    pub fn wait_any_timeout(&mut self, timeout: Duration) -> Option<(RequestId, Outcome)> {
        match &mut self.inner {
            Inner::Stream(c) => c.wait_any_timeout(timeout),
            Inner::Datagram(c) => c.wait_any_timeout(timeout),
        }
    }

    /// As [`wait_any`](Self::wait_any), but the answer is lent from the client's receive
    /// store instead of copied into a `Vec` of its own, until the next use of the client:
    /// a loop that collects every answer this way and keeps calls in flight allocates
    /// nothing per call once the store has grown to the answers waiting at once.
    pub fn wait_any_borrowed(&mut self) -> Option<(RequestId, Result<&[u8], CallError>)> {
        match &mut self.inner {
            Inner::Stream(c) => c.wait_any_borrowed(None),
            Inner::Datagram(c) => c.wait_any_borrowed(None),
        }
    }

    /// As [`wait_any_timeout`](Self::wait_any_timeout), with the answer lent as by
    /// [`wait_any_borrowed`](Self::wait_any_borrowed).
    pub fn wait_any_timeout_borrowed(
        &mut self,
        timeout: Duration,
    ) -> Option<(RequestId, Result<&[u8], CallError>)> {
        match &mut self.inner {
            Inner::Stream(c) => c.wait_any_borrowed(Some(timeout)),
            Inner::Datagram(c) => c.wait_any_borrowed(Some(timeout)),
        }
    }

    /// Cancels call `id`: it ends as [`CallErrorKind::Cancelled`] (collect it with
    /// [`wait`](Self::wait) or [`wait_any`](Self::wait_any)), and the server is told (a
    /// Cancel frame on a stream; on a datagram endpoint the call stops retransmitting and a
    /// cancel goes out), so it may skip the work. Returns `false` when the call has already
    /// ended (its outcome still waits to be collected) or is not waiting on this client.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match &mut self.inner {
            Inner::Stream(c) => c.cancel(id),
            Inner::Datagram(c) => c.cancel(id),
        }
    }

    /// Does whatever I/O is pending without blocking: sends what is queued (first copies,
    /// retransmissions, cancels), reads answers (kept for [`wait`](Self::wait) and
    /// [`wait_any`](Self::wait_any)), answers the server's keepalive pings. The client
    /// does I/O only inside its methods, so a stream client that sits idle for longer
    /// than the server's keepalive (30 s + 10 s by default) is closed by the server unless
    /// something calls this now and then.
    pub fn service(&mut self) {
        match &mut self.inner {
            Inner::Stream(c) => c.service(),
            Inner::Datagram(c) => c.service(),
        }
    }

    /// Calls submitted and not yet collected.
    #[must_use]
    pub fn pending(&self) -> usize {
        match &self.inner {
            Inner::Stream(c) => c.pending(),
            Inner::Datagram(c) => c.pending(),
        }
    }

    /// Calls allowed in flight now: on a stream the server's limit once its hello is in,
    /// on a datagram endpoint `ClientConfig::connection.max_in_flight`.
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        match &self.inner {
            Inner::Stream(c) => c.max_in_flight(),
            Inner::Datagram(c) => c.max_in_flight(),
        }
    }

    /// The core's counters of a datagram client: calls, transmissions, retransmissions,
    /// busy hints, late and dropped answers. `None` on a stream.
    #[must_use]
    pub fn datagram_stats(&self) -> Option<DatagramClientStats> {
        match &self.inner {
            Inner::Stream(_) => None,
            Inner::Datagram(c) => Some(c.stats()),
        }
    }

    /// What the server's hello said (the protocol version agreed, the largest frame and
    /// the calls in flight it takes), once it has arrived (see
    /// [`handshake`](Self::handshake)); always `None` on a datagram endpoint, which has no
    /// handshake.
    #[must_use]
    pub fn server_info(&self) -> Option<PeerInfo> {
        match &self.inner {
            Inner::Stream(c) => c.server(),
            Inner::Datagram(_) => None,
        }
    }

    /// Whether a new call may be sent here: on a stream, the connection is open and no
    /// go-away has come (nor [`close`](Self::close)); always `true` on a datagram endpoint.
    /// A caller that wants to go on calling when this turns `false` connects anew (as
    /// [`FleetClient`](crate::FleetClient) does); calls already in flight still end here.
    #[must_use]
    pub fn accepts_calls(&self) -> bool {
        match &self.inner {
            Inner::Stream(c) => c.accepts_calls(),
            Inner::Datagram(_) => true,
        }
    }

    /// Why the connection ended, once it has (always `None` on a datagram endpoint, which
    /// has no connection).
    #[must_use]
    pub fn closed(&self) -> Option<CloseReason> {
        match &self.inner {
            Inner::Stream(c) => c.closed(),
            Inner::Datagram(_) => None,
        }
    }

    /// Closes gracefully: no new calls; calls in flight still get their outcomes (which
    /// are then dropped: collect them first); returns how the connection ended
    /// ([`CloseReason::Graceful`] on a datagram endpoint, once every call in flight has
    /// ended and the cancels owed for timed-out calls are sent).
    pub fn close(self) -> CloseReason {
        match self.inner {
            Inner::Stream(c) => c.close(),
            Inner::Datagram(c) => c.close(),
        }
    }
}
