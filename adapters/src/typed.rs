//! Typed endpoints over the std adapter: serve an [`Endpoint`] with a Rust function of its
//! types, call one and get its response or its error back as values.
//!
//! An endpoint is declared once, in an interface crate both sides share, with
//! [`wirecall_core::endpoints!`]; its key (a hash of its path and of its types' schema)
//! travels with every call (protocol version 2), so a server whose types differ from the
//! caller's answers [`RejectCode::SCHEMA_MISMATCH`] instead of decoding garbage, and the call
//! is known not to have run.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use wirecall::typed::Schema;
//! use wirecall::{Client, ClientConfig, ServerBuilder, ServerConfig};
//!
//! #[derive(Serialize, Deserialize, Schema)]
//! pub struct Add { pub a: i32, pub b: i32 }
//! #[derive(Serialize, Deserialize, Schema, Debug)]
//! pub enum CalcError { Overflow }
//! wirecall::core::endpoints! {
//!     pub AddEndpoint = "calc/add": Add => i32, CalcError;
//! }
//!
//! let server = ServerBuilder::new(ServerConfig::default())
//!     .endpoint::<AddEndpoint, _>(|req: Add| req.a.checked_add(req.b).ok_or(CalcError::Overflow))
//!     .listen("tcp:127.0.0.1:0".parse()?)
//!     .build()?;
//! let endpoint = server.endpoints()[0].clone();
//! std::thread::spawn(move || server.run());
//!
//! let mut client = Client::connect(&endpoint, ClientConfig::default())?;
//! let sum = client.call_typed::<AddEndpoint>(&Add { a: 2, b: 3 }, Some(Duration::from_secs(1)))?;
//! assert_eq!(sum, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A sync function returns an outcome that owns its data (`Outcome<'static, E>`); one whose
//! response borrows (a `&[u8]` out of a map behind a lock, a `&str` out of the request)
//! answers through the deferred form's [`TypedResponder`], which encodes the borrowed value
//! at once, before the borrow ends.

use std::fmt;
use std::marker::PhantomData;

use postcard_schema::schema::NamedType;
use postcard_schema::schema::owned::OwnedNamedType;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wirecall_core::client::Execution;
use wirecall_core::wire::{ERROR_ANSWER_NOT_ENCODABLE, ERROR_NO_ANSWER, RejectCode};

use crate::client::CallError;
use crate::function::{Answer, CallContext, CallFailure, Named, Responder};

pub use wirecall_core::typed::{
    Endpoint, EndpointKey, Schema, TypedError, decode_answer, decode_request, path_hash,
    postcard_schema,
};

/// What a server publishes about one typed endpoint: its path, its key and the schemas of
/// its three types, so a client can check compatibility before calling and tools can show
/// (and encode for) what a server offers. The answer of [`ListEndpoints`].
#[derive(Serialize, Deserialize, Schema, Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The endpoint's path.
    pub path: String,
    /// Its key's path hash.
    pub path_hash: u64,
    /// Its key's schema hash.
    pub schema_hash: u64,
    /// The request type's schema.
    pub request: OwnedNamedType,
    /// The response type's schema.
    pub response: OwnedNamedType,
    /// The error type's schema.
    pub error: OwnedNamedType,
}

impl EndpointInfo {
    /// The key a call of this endpoint carries.
    #[must_use]
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            path: self.path_hash,
            schema: self.schema_hash,
        }
    }
}

wirecall_core::endpoints! {
    /// Discovery, served by every server of the `wirecall` library and of `wirecall-tokio`:
    /// every typed endpoint it serves (this one included), in registration order.
    pub ListEndpoints = "wirecall/endpoints": () => Vec<EndpointInfo>, ();
}

/// An endpoint as a server registers it: path, key and the schemas of its types, from
/// `E` at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The path.
    pub path: &'static str,
    /// The key.
    pub key: EndpointKey,
    /// The request type's schema.
    pub request: &'static NamedType,
    /// The response type's schema.
    pub response: &'static NamedType,
    /// The error type's schema.
    pub error: &'static NamedType,
}

impl EndpointSpec {
    /// The spec of endpoint `E`.
    #[must_use]
    pub fn of<E: Endpoint + ?Sized>() -> Self {
        Self {
            path: E::PATH,
            key: E::KEY,
            request: <E::Request<'static> as Schema>::SCHEMA,
            response: <E::Response<'static> as Schema>::SCHEMA,
            error: <E::Error<'static> as Schema>::SCHEMA,
        }
    }

    /// What discovery publishes about it.
    #[must_use]
    pub fn info(&self) -> EndpointInfo {
        EndpointInfo {
            path: self.path.to_owned(),
            path_hash: self.key.path,
            schema_hash: self.key.schema,
            request: self.request.into(),
            response: self.response.into(),
            error: self.error.into(),
        }
    }
}

/// The discovery endpoint of a server whose functions are `functions`: its spec, and the
/// function that answers it (every typed endpoint, discovery first, then the others in
/// registration order; the answer is encoded once, since the list never changes). A
/// driver's builder adds it last, as its own kind of synchronous function.
pub fn discovery<F>(
    functions: &[Named<F>],
) -> (
    EndpointSpec,
    impl Fn(&[u8]) -> Answer + Send + Sync + 'static,
) {
    let spec = EndpointSpec::of::<ListEndpoints>();
    let list: Vec<EndpointInfo> = std::iter::once(spec.info())
        .chain(
            functions
                .iter()
                .filter_map(Named::spec)
                .map(EndpointSpec::info),
        )
        .collect();
    let answer = encode_outcome::<ListEndpoints>(&Ok(list));
    (spec, move |_: &[u8]| answer.clone())
}

/// The outcome of a typed function, as its endpoint declares it.
pub type Outcome<'a, E> = Result<<E as Endpoint>::Response<'a>, <E as Endpoint>::Error<'a>>;

/// The error answer of an outcome that cannot be encoded (logged): the function ran.
fn unencodable<E: Endpoint + ?Sized>() -> CallFailure {
    log::error!("{}: the function's answer cannot be encoded", E::PATH);
    CallFailure::error(ERROR_ANSWER_NOT_ENCODABLE, "the answer cannot be encoded")
}

/// Encodes a function's outcome as the answer body of endpoint `E`: postcard's
/// `Result<Response, Error>`, sized first so the answer is one allocation.
fn encode_outcome<E: Endpoint + ?Sized>(outcome: &Outcome<'_, E>) -> Answer {
    let unencodable = unencodable::<E>;
    let len = postcard::serialize_with_flavor(outcome, postcard::ser_flavors::Size::default())
        .map_err(|_| unencodable())?;
    postcard::to_extend(outcome, Vec::with_capacity(len)).map_err(|_| unencodable())
}

/// The rejection of a request body that is not a value of `E`'s request type: nothing ran.
fn undecodable<E: Endpoint + ?Sized>() -> CallFailure {
    CallFailure::invalid_request(format!(
        "the request is not a value of {}'s request type",
        E::PATH
    ))
}

/// The untyped function that serves endpoint `E` with `handler`: decodes the request (in
/// place: borrowed fields borrow the received bytes), runs the handler, encodes its
/// outcome. A body that does not decode is rejected ([`RejectCode::INVALID_REQUEST`]).
pub fn sync_function<E, H>(handler: H) -> impl Fn(&[u8]) -> Answer + Send + Sync + 'static
where
    E: Endpoint + ?Sized + 'static,
    H: for<'a> Fn(E::Request<'a>) -> Outcome<'static, E> + Send + Sync + 'static,
{
    move |body| {
        let request = decode_request::<E>(body).map_err(|_| undecodable::<E>())?;
        encode_outcome::<E>(&handler(request))
    }
}

/// The untyped function that serves endpoint `E` with a `handler` that also gets the call's
/// [`CallContext`]: the same as [`sync_function`] otherwise.
pub fn context_function<E, H>(
    handler: H,
) -> impl Fn(&CallContext<'_>, &[u8]) -> Answer + Send + Sync + 'static
where
    E: Endpoint + ?Sized + 'static,
    H: for<'a> Fn(&CallContext<'_>, E::Request<'a>) -> Outcome<'static, E> + Send + Sync + 'static,
{
    move |context, body| {
        let request = decode_request::<E>(body).map_err(|_| undecodable::<E>())?;
        encode_outcome::<E>(&handler(context, request))
    }
}

/// The untyped function that serves endpoint `E` with a `handler` that answers through a
/// [`TypedReply`] before it returns: the same as [`sync_function`], but the answer may borrow
/// from the request or from anything the handler holds (it is encoded at once).
pub fn reply_function<E, H>(handler: H) -> impl Fn(&[u8]) -> Answer + Send + Sync + 'static
where
    E: Endpoint + ?Sized + 'static,
    H: for<'a> Fn(E::Request<'a>, &mut TypedReply<E>) + Send + Sync + 'static,
{
    let function = reply_function_into::<E, H>(handler);
    move |body| {
        let mut answer = Vec::new();
        function(body, &mut answer).map(|()| answer)
    }
}

/// As [`reply_function`], but the answer is encoded into `answer`, a buffer the server
/// lends ([`Register::function_into`](crate::function::Register::function_into)), so a
/// typed call need not allocate.
pub fn reply_function_into<E, H>(
    handler: H,
) -> impl Fn(&[u8], &mut Vec<u8>) -> Result<(), CallFailure> + Send + Sync + 'static
where
    E: Endpoint + ?Sized + 'static,
    H: for<'a> Fn(E::Request<'a>, &mut TypedReply<E>) + Send + Sync + 'static,
{
    move |body, answer| {
        let request = decode_request::<E>(body).map_err(|_| undecodable::<E>())?;
        let mut reply = TypedReply {
            buffer: std::mem::take(answer),
            outcome: None,
            endpoint: PhantomData,
        };
        handler(request, &mut reply);
        let TypedReply {
            buffer, outcome, ..
        } = reply;
        *answer = buffer;
        outcome.unwrap_or_else(|| {
            Err(CallFailure::error(
                ERROR_NO_ANSWER,
                "the function returned without answering",
            ))
        })
    }
}

/// Where a synchronous typed function ([`Register::endpoint_reply`](crate::function::Register::endpoint_reply))
/// puts its answer before it returns. The last answer given wins; none at all answers the
/// call with an error (`ERROR_NO_ANSWER`: it ran).
pub struct TypedReply<E: ?Sized> {
    /// Where the answer is encoded (lent by the server).
    buffer: Vec<u8>,
    /// `None` until answered; `Ok` when `buffer` holds the encoded outcome.
    outcome: Option<Result<(), CallFailure>>,
    endpoint: PhantomData<fn() -> E>,
}

impl<E: ?Sized> fmt::Debug for TypedReply<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedReply")
            .field("answered", &self.outcome.is_some())
            .finish()
    }
}

impl<E: Endpoint + ?Sized> TypedReply<E> {
    /// Answers with the function's outcome, encoded now (so it may borrow from anything
    /// that lives through this call).
    pub fn send(&mut self, outcome: &Outcome<'_, E>) {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        if buffer.capacity() == 0 {
            // A new buffer (not one the server lends): sized first, one allocation.
            let size =
                postcard::serialize_with_flavor(outcome, postcard::ser_flavors::Size::default());
            buffer.reserve_exact(size.unwrap_or(0));
        }
        match postcard::to_extend(outcome, buffer) {
            Ok(encoded) => {
                self.buffer = encoded;
                self.outcome = Some(Ok(()));
            }
            Err(_) => self.outcome = Some(Err(unencodable::<E>())),
        }
    }

    /// Refuses the call with an untyped failure (a rejection, busy).
    pub fn fail(&mut self, failure: CallFailure) {
        self.outcome = Some(Err(failure));
    }
}

/// The deferred function that serves endpoint `E` with `handler`, which answers through
/// its [`TypedResponder`] (now, or later from any thread).
pub fn deferred_function<E, H>(handler: H) -> impl Fn(&[u8], Responder) + Send + Sync + 'static
where
    E: Endpoint + ?Sized + 'static,
    H: for<'a> Fn(E::Request<'a>, TypedResponder<E>) + Send + Sync + 'static,
{
    move |body, responder| match decode_request::<E>(body) {
        Ok(request) => handler(
            request,
            TypedResponder {
                inner: responder,
                endpoint: PhantomData,
            },
        ),
        Err(_) => responder.respond(Err(undecodable::<E>())),
    }
}

/// The way to answer one call of endpoint `E` later: a [`Responder`] that takes the
/// endpoint's values. Dropping it unused answers the call with an error, as for any
/// responder.
pub struct TypedResponder<E: ?Sized> {
    inner: Responder,
    endpoint: PhantomData<fn() -> E>,
}

impl<E: ?Sized> fmt::Debug for TypedResponder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedResponder")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<E: Endpoint + ?Sized> TypedResponder<E> {
    /// Answers with the function's outcome, encoded at once (so it may borrow from
    /// anything that lives through this call).
    pub fn respond(self, outcome: &Outcome<'_, E>) {
        self.inner.respond(encode_outcome::<E>(outcome));
    }

    /// Answers with the outcome once `delay` has passed (encoded now; no thread waits).
    pub fn respond_after(self, delay: std::time::Duration, outcome: &Outcome<'_, E>) {
        self.inner
            .respond_after(delay, encode_outcome::<E>(outcome));
    }

    /// Refuses the call without running it, with an untyped failure (a rejection, busy).
    pub fn fail(self, failure: CallFailure) {
        self.inner.respond(Err(failure));
    }
}

/// How a typed call failed. An application's error is a value of the endpoint's error
/// type; everything else is wirecall's, with the call's [`Execution`].
#[derive(Debug)]
#[non_exhaustive]
pub enum TypedCallError<Err> {
    /// The function ran and answered with this error value.
    Application(Err),
    /// The call failed in wirecall: not sent, rejected (an unknown path is
    /// [`RejectCode::UNKNOWN_METHOD`], other types than the server's are
    /// [`RejectCode::SCHEMA_MISMATCH`]), busy, timed out, lost with its connection.
    Call(CallError),
    /// The function ran, but its answer is not a value of the endpoint's types (only a
    /// server whose key matched and whose encoding did not can send one).
    BadAnswer,
    /// The request could not be encoded (its type's serializer refused the value); nothing
    /// was sent.
    Unencodable,
}

impl<Err> TypedCallError<Err> {
    /// Whether the server may have run the function, which decides whether a retry is
    /// safe.
    #[must_use]
    pub fn execution(&self) -> Execution {
        match self {
            Self::Application(_) | Self::BadAnswer => Execution::Executed,
            Self::Call(e) => e.execution(),
            Self::Unencodable => Execution::NotExecuted,
        }
    }

    /// `true` for a rejection because the server's types for the path differ from ours.
    #[must_use]
    pub fn is_schema_mismatch(&self) -> bool {
        matches!(self, Self::Call(e) if e.rejection() == Some(RejectCode::SCHEMA_MISMATCH))
    }
}

impl<Err> From<CallError> for TypedCallError<Err> {
    fn from(e: CallError) -> Self {
        Self::Call(e)
    }
}

impl<Err: fmt::Debug> fmt::Display for TypedCallError<Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Application(e) => write!(f, "the function failed: {e:?} [executed]"),
            Self::Call(e) => e.fmt(f),
            Self::BadAnswer => {
                f.write_str("the answer is not a value of the endpoint's types [executed]")
            }
            Self::Unencodable => f.write_str("the request cannot be encoded [not executed]"),
        }
    }
}

impl<Err: fmt::Debug> std::error::Error for TypedCallError<Err> {}

/// Encodes a request of `E` into `out` (cleared first), for a client's call.
///
/// # Errors
///
/// [`TypedCallError::Unencodable`].
pub fn encode_request_into<E: Endpoint + ?Sized, Err>(
    request: &E::Request<'_>,
    out: &mut Vec<u8>,
) -> Result<(), TypedCallError<Err>> {
    out.clear();
    let buf = std::mem::take(out);
    match postcard::to_extend(request, buf) {
        Ok(buf) => {
            *out = buf;
            Ok(())
        }
        Err(_) => Err(TypedCallError::Unencodable),
    }
}

/// A typed call's outcome from its untyped one, borrowing from the answer's bytes.
///
/// # Errors
///
/// [`TypedCallError`]: the application's error, the call's, or an answer that does not
/// decode.
pub fn decode_outcome<E: Endpoint + ?Sized>(
    answer: Result<&[u8], CallError>,
) -> Result<E::Response<'_>, TypedCallError<E::Error<'_>>> {
    match decode_answer::<E>(answer?) {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(TypedCallError::Application(e)),
        Err(_) => Err(TypedCallError::BadAnswer),
    }
}

/// A typed call's outcome from its untyped one, for endpoints whose response and error
/// own their data (no borrowed fields).
///
/// # Errors
///
/// As [`decode_outcome`].
pub fn decode_owned<E>(
    answer: Result<Vec<u8>, CallError>,
) -> Result<E::Response<'static>, TypedCallError<E::Error<'static>>>
where
    E: Endpoint + ?Sized,
    E::Response<'static>: DeserializeOwned,
    E::Error<'static>: DeserializeOwned,
{
    let bytes = answer?;
    match postcard::take_from_bytes::<Result<E::Response<'static>, E::Error<'static>>>(&bytes) {
        Ok((Ok(response), [])) => Ok(response),
        Ok((Err(e), [])) => Err(TypedCallError::Application(e)),
        _ => Err(TypedCallError::BadAnswer),
    }
}

/// Serializes any value the way typed bodies are: postcard. (For tools that build bodies
/// by hand.)
///
/// # Errors
///
/// [`TypedError::Unencodable`].
pub fn to_body<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, TypedError> {
    postcard::to_allocvec(value).map_err(|_| TypedError::Unencodable)
}
