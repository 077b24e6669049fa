//! The async client: [`Client::call`] from any number of tasks at once over one connection
//! (or one datagram socket), on any of the four transports.
//!
//! ```no_run
//! use std::time::Duration;
//! use wirecall::{ClientConfig, Endpoint};
//! use wirecall_tokio::Client;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint: Endpoint = "tcp:127.0.0.1:7000".parse()?;
//! let client = Client::connect(&endpoint, ClientConfig::default()).await?;
//! let answer = client.call("upper", b"hello", Some(Duration::from_secs(1))).await?;
//! assert_eq!(answer, b"HELLO");
//!
//! // Many calls in flight from many tasks: the client is cheap to clone.
//! let tasks: Vec<_> = (0..10)
//!     .map(|i| {
//!         let client = client.clone();
//!         tokio::spawn(async move { client.call("echo", format!("{i}").as_bytes(), None).await })
//!     })
//!     .collect();
//! for task in tasks {
//!     println!("{:?}", task.await?);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every failure is a [`CallError`], whose [`execution`](CallError::execution) is the
//! core's judgement of whether the server may have run the call: what decides whether a
//! retry is safe. Dropping a call's future cancels the call (a Cancel frame on a stream; on
//! a datagram endpoint the call stops retransmitting and the server is told). A lost
//! connection is not re-established behind the caller's back: calls then fail as not sent,
//! and the caller connects anew if it wants to.
//!
//! The client needs a tokio runtime with IO and time enabled; it spawns one driver task
//! per connection, which reads answers, fires the core's timers (deadlines,
//! retransmissions, keepalive) and writes what callers could not. Callers write their own
//! calls, so a call makes no hop through another task on its way out. When the last clone
//! is dropped the connection closes gracefully in the background.

mod datagram;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use wirecall::TypedCallError;
use wirecall::typed::{self, decode_outcome, decode_owned, encode_request_into};
use wirecall::{CallError, ClientConfig, Endpoint, Error};
use wirecall_core::RequestId;
use wirecall_core::client::CloseReason;
use wirecall_core::datagram::DatagramClientStats;
use wirecall_core::wire::Target;

use self::datagram::DatagramClient;
use self::stream::StreamClient;

/// A call on its way, from [`Client::start`]: a future of its outcome. Dropping it before
/// the outcome has come cancels the call (the server is told, so it may skip the work).
#[derive(Debug)]
#[must_use = "dropping a call cancels it"]
pub struct Call {
    inner: CallInner,
}

#[derive(Debug)]
enum CallInner {
    Stream(stream::PendingCall),
    Datagram(datagram::PendingCall),
}

impl Call {
    /// The call's request id on its connection (or datagram client).
    #[must_use]
    pub fn id(&self) -> RequestId {
        match &self.inner {
            CallInner::Stream(c) => c.id(),
            CallInner::Datagram(c) => c.id(),
        }
    }
}

impl Future for Call {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.inner {
            CallInner::Stream(c) => c.poll(cx.waker()),
            CallInner::Datagram(c) => c.poll(cx.waker()),
        }
    }
}

/// What a finished call gives: the answer's body, or how it failed.
pub type Outcome = Result<Vec<u8>, CallError>;

/// An async client of one server, over any transport; clones share the connection. See
/// the [module docs](self).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    endpoint: Endpoint,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Stream(StreamClient),
    Datagram(DatagramClient),
}

impl Drop for Handle {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Stream(c) => c.release(),
            Inner::Datagram(c) => c.release(),
        }
    }
}

impl Client {
    /// Connects to a server. On a stream it connects and sends the hello (the server's
    /// hello is not waited for: calls can follow at once); on a datagram endpoint it binds
    /// its own socket and connects it to the server's address (nothing is sent yet).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] (refused, no such socket, timed out after
    /// `config.connect_timeout`), [`Error::Resolve`], or a configuration the core refuses.
    ///
    /// A `tls:` endpoint is connected as [`connect_tls`](Self::connect_tls) does, trusting
    /// the system's certificate store and with no client certificate.
    pub async fn connect(endpoint: &Endpoint, config: ClientConfig) -> Result<Self, Error> {
        Self::connect_with(endpoint, config, None).await
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
    /// speak TLS): nothing was sent, so nothing ran.
    pub async fn connect_tls(
        endpoint: &Endpoint,
        config: ClientConfig,
        tls: &wirecall::TlsConnector,
    ) -> Result<Self, Error> {
        Self::connect_with(endpoint, config, Some(tls)).await
    }

    async fn connect_with(
        endpoint: &Endpoint,
        config: ClientConfig,
        tls: Option<&wirecall::TlsConnector>,
    ) -> Result<Self, Error> {
        wirecall::driver::check_limits(&config.connection)?;
        let inner = if endpoint.is_datagram() {
            Inner::Datagram(DatagramClient::connect(endpoint, &config).await?)
        } else {
            Inner::Stream(StreamClient::connect(endpoint, &config, tls).await?)
        };
        Ok(Self {
            inner: Arc::new(Handle {
                endpoint: endpoint.clone(),
                inner,
            }),
        })
    }

    /// The endpoint it connected to.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Calls `target` (a method name; typed endpoints have [`call_typed`](Self::call_typed))
    /// with `body` and waits for the outcome. With a `timeout`, the call
    /// fails with `TimedOut` when no answer comes in time (and the server is told, so it
    /// can skip late work). Without one, a stream call waits for ever and a datagram call
    /// gets `ClientConfig::datagram.default_timeout` (5 s). While as many calls are in
    /// flight as allowed, it first waits for one to end. Dropping the future cancels the
    /// call.
    ///
    /// # Errors
    ///
    /// [`CallError`]; its [`execution`](CallError::execution) says whether it may have run.
    pub async fn call<'t>(
        &self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        self.start(target, body, timeout).await?.await
    }

    /// Calls typed endpoint `E` with `request` and waits for its response, decoded (for
    /// endpoints whose response and error own their data; [`call_typed_in`](Self::call_typed_in)
    /// takes the ones that borrow). Many such futures may run at once: their calls are
    /// pipelined on the one connection. See [`wirecall::typed`].
    ///
    /// # Errors
    ///
    /// [`TypedCallError`]: the endpoint's error value (executed), or the call's failure with
    /// its execution (`SCHEMA_MISMATCH` when the server's types for the path are not ours).
    pub async fn call_typed<E>(
        &self,
        request: &E::Request<'_>,
        timeout: Option<Duration>,
    ) -> Result<E::Response<'static>, TypedCallError<E::Error<'static>>>
    where
        E: typed::Endpoint + ?Sized,
        E::Response<'static>: DeserializeOwned,
        E::Error<'static>: DeserializeOwned,
    {
        let mut body = Vec::new();
        encode_request_into::<E, _>(request, &mut body)?;
        decode_owned::<E>(self.call(E::KEY, &body, timeout).await)
    }

    /// Calls typed endpoint `E` and decodes its answer in place from `answer` (which holds
    /// the answer's bytes afterwards), so borrowed fields cost no copy.
    ///
    /// # Errors
    ///
    /// As [`call_typed`](Self::call_typed).
    pub async fn call_typed_in<'b, E>(
        &self,
        request: &E::Request<'_>,
        timeout: Option<Duration>,
        answer: &'b mut Vec<u8>,
    ) -> Result<E::Response<'b>, TypedCallError<E::Error<'b>>>
    where
        E: typed::Endpoint + ?Sized,
    {
        let mut body = Vec::new();
        encode_request_into::<E, _>(request, &mut body)?;
        *answer = self.call(E::KEY, &body, timeout).await?;
        let answer: &'b Vec<u8> = answer;
        decode_outcome::<E>(Ok(answer.as_slice()))
    }

    /// Starts a call and returns once it is on its way (handed to the socket, or queued
    /// behind what the socket has not taken yet), without waiting for its outcome: calls
    /// started one after another reach the server in that order. Await the [`Call`] for
    /// the outcome; drop it to cancel the call. `timeout` and the waits are as for
    /// [`call`](Self::call).
    ///
    /// # Errors
    ///
    /// [`CallErrorKind::NotSent`](wirecall::CallErrorKind::NotSent) when it cannot be sent
    /// at all (too large, connection closed or closing): it was not executed.
    pub async fn start<'t>(
        &self,
        target: impl Into<Target<'t>>,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Call, CallError> {
        let target = target.into();
        let inner = match &self.inner.inner {
            Inner::Stream(c) => CallInner::Stream(c.start(target, body, timeout).await?),
            Inner::Datagram(c) => CallInner::Datagram(c.start(target, body, timeout).await?),
        };
        Ok(Call { inner })
    }

    /// Calls allowed in flight now: on a stream the server's limit once its hello is in,
    /// on a datagram endpoint `ClientConfig::connection.max_in_flight`.
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        match &self.inner.inner {
            Inner::Stream(c) => c.max_in_flight(),
            Inner::Datagram(c) => c.max_in_flight(),
        }
    }

    /// The core's counters of a datagram client; `None` on a stream.
    #[must_use]
    pub fn datagram_stats(&self) -> Option<DatagramClientStats> {
        match &self.inner.inner {
            Inner::Stream(_) => None,
            Inner::Datagram(c) => Some(c.stats()),
        }
    }

    /// Why the connection ended, once it has (always `None` on a datagram endpoint).
    #[must_use]
    pub fn closed(&self) -> Option<CloseReason> {
        match &self.inner.inner {
            Inner::Stream(c) => c.closed(),
            Inner::Datagram(_) => None,
        }
    }

    /// Closes gracefully, for every clone: no new calls; calls in flight still end (their
    /// callers get their outcomes); returns how the connection ended once it has
    /// ([`CloseReason::Graceful`] on a datagram endpoint, once every call in flight has
    /// ended and the cancels owed are sent).
    pub async fn close(&self) -> CloseReason {
        match &self.inner.inner {
            Inner::Stream(c) => c.close().await,
            Inner::Datagram(c) => {
                c.close().await;
                CloseReason::Graceful
            }
        }
    }
}
