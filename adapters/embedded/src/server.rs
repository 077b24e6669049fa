//! The server of one connection: [`serve`] answers each request with a [`Handler`] until the
//! connection ends, or until a stop signal asks for a graceful close.

use core::future::Future;
use core::pin::pin;

use embedded_io_async::{Read, Write};
use wirecall_core::client::CloseReason;
use wirecall_core::server::{IncomingRequest, RespondError, ServerConnection, ServerEvent};
use wirecall_core::wire::Reply;

use crate::error::Error;
use crate::link::{Link, Settings, Wake};
use crate::race::Stop;
use crate::storage::ServerStorage;
use crate::timer::Timer;

/// The functions a server runs: one call per request, answered at once.
///
/// The answer may borrow the request (an echo is `Reply::Ok(request.body)`: it is read in
/// place from the receive buffer and answered without a copy) or the handler itself (an
/// answer computed into a buffer the handler owns), so no answer needs an allocation.
/// Unknown methods are the handler's to reject, with
/// [`RejectCode::UNKNOWN_METHOD`](wirecall_core::wire::RejectCode::UNKNOWN_METHOD): the
/// client then knows the call was not executed.
///
/// ```
/// use wirecall_core::server::IncomingRequest;
/// use wirecall_core::wire::{RejectCode, Reply};
///
/// /// `echo`, and `upper` computed into the handler's own 256 bytes.
/// struct Functions {
///     out: [u8; 256],
/// }
///
/// impl wirecall_embedded::Handler for Functions {
///     fn handle<'a>(&'a mut self, request: IncomingRequest<'a>) -> Reply<'a> {
///         match request.target.method() {
///             Some("echo") => Reply::Ok(request.body),
///             Some("upper") => {
///                 let n = request.body.len().min(self.out.len());
///                 let (out, _) = self.out.split_at_mut(n);
///                 for (o, b) in out.iter_mut().zip(request.body) {
///                     *o = b.to_ascii_uppercase();
///                 }
///                 Reply::Ok(out)
///             }
///             _ => Reply::Rejected { code: RejectCode::UNKNOWN_METHOD, message: "no such method" },
///         }
///     }
/// }
/// ```
pub trait Handler {
    /// Runs `request.target` on `request.body` and returns the answer. A request whose
    /// `deadline` has passed may still be answered; the core then ignores it or the client
    /// does.
    fn handle<'a>(&'a mut self, request: IncomingRequest<'a>) -> Reply<'a>;
}

impl<H: Handler + ?Sized> Handler for &mut H {
    fn handle<'a>(&'a mut self, request: IncomingRequest<'a>) -> Reply<'a> {
        H::handle(self, request)
    }
}

/// Serves one accepted connection `io` until it ends, and returns how it ended.
///
/// Drives a [`ServerConnection`] in `storage` by the core's driver contract: reads into its
/// receive buffer, takes its events (each request answered by `handler`), writes what it
/// has to send, and sleeps until the transport is ready or the connection's next timer
/// (handshake, keepalive, deadlines, drain) is due, so the timers fire while it waits.
/// When `stop` completes, the connection closes gracefully: the core sends its go-away,
/// every request already received is still answered, then it closes
/// ([`CloseReason::Graceful`]). Pass [`core::future::pending()`] to serve until the client
/// leaves. After the end, what the connection still has to send goes out within
/// [`Settings::linger`], and after a graceful close the server waits (within the same
/// bound) for the client to close its end, so that closing a socket with unread input does
/// not reset it under the last answers. Closing the transport itself is the caller's (e.g.
/// `TcpSocket::close`).
///
/// One request is answered at a time, and only once the previous answers have been
/// handed to the transport, so an answer always finds room in the transmit buffer and
/// no function runs twice.
///
/// # Errors
///
/// [`Error::Config`] when the core refuses the storage or settings; [`Error::Io`] or
/// [`Error::WriteZero`] when the transport fails (the connection is aborted);
/// [`Error::Respond`] when the transmit buffer is too small for an answer.
pub async fn serve<T, C, H, S, const BUF: usize, const SLOTS: usize>(
    io: T,
    storage: &mut ServerStorage<BUF, SLOTS>,
    settings: Settings,
    timer: C,
    handler: &mut H,
    stop: S,
) -> Result<CloseReason, Error<T::Error>>
where
    T: Read + Write,
    C: Timer,
    H: Handler + ?Sized,
    S: Future<Output = ()>,
{
    let (rx, tx, slots) = storage.parts();
    let mut conn = ServerConnection::new(settings.connection, rx, tx, slots, timer.now())?;
    let mut link = Link { io, timer };
    let mut stop = pin!(stop);
    let mut stop: Option<Stop<'_, '_>> = Some(stop.as_mut());
    loop {
        // Events, until none (they fire due timers themselves).
        loop {
            let now = link.timer.now();
            let Some(event) = conn.poll_event(now) else {
                break;
            };
            match event {
                ServerEvent::Request(request) => {
                    let id = request.id;
                    // Make room: the answer must fit at the first try, since the handler
                    // runs inside `respond_with` and is not run twice.
                    if let Err(e) = flush(&mut link, &mut conn).await {
                        return Err(abort(&mut conn, e));
                    }
                    let answered = conn.respond_with(id, |request| handler.handle(request));
                    match answered {
                        // Expired, cancelled or closed meanwhile: nobody waits for it.
                        Ok(()) | Err(RespondError::UnknownRequest | RespondError::Closed) => {}
                        Err(e) => return Err(abort(&mut conn, Error::Respond(e))),
                    }
                }
                ServerEvent::Closed(reason) => {
                    debug!("server connection closed: {}", reason);
                    let until = link.timer.now().saturating_add(settings.linger);
                    // The core has decided how the connection ended; a peer that is gone
                    // by now is no news (a write into a closed socket fails).
                    if link.linger(&mut conn, until).await.is_err() {
                        debug!("the transport failed while lingering");
                    } else if reason == CloseReason::Graceful {
                        // The client closes first after a graceful close: wait for it.
                        link.discard_until_eof(until).await;
                    }
                    return Ok(reason);
                }
                // Nothing to do: every request was answered as it came.
                _ => {}
            }
        }
        let deadline = conn.poll_timeout();
        let stopping = stop.as_mut().map(|s| s.as_mut());
        match link.pump(&mut conn, deadline, stopping).await {
            Ok(Wake::Moved | Wake::Timer) => {}
            Ok(Wake::Stop) => {
                debug!("stop: closing gracefully");
                stop = None;
                conn.close(link.timer.now());
            }
            Err(e) => return Err(abort(&mut conn, e)),
        }
    }
}

/// Writes out everything the connection has queued, firing its timers while the
/// transport is slow to take it (a dead peer is then closed by keepalive or drain).
async fn flush<T, C, B, S>(
    link: &mut Link<T, C>,
    conn: &mut ServerConnection<B, S>,
) -> Result<(), Error<T::Error>>
where
    T: Read + Write,
    C: Timer,
    B: wirecall_core::Buffer,
    S: AsRef<[wirecall_core::server::RequestSlot]> + AsMut<[wirecall_core::server::RequestSlot]>,
{
    while !conn.transmit().is_empty() && conn.is_open() {
        let deadline = conn.poll_timeout();
        if let Wake::Timer = link.pump(conn, deadline, None).await? {
            conn.handle_timeout(link.timer.now());
        }
    }
    Ok(())
}

/// Ends the connection at once after a transport failure, and hands the error on.
fn abort<B, S, E>(conn: &mut ServerConnection<B, S>, e: E) -> E
where
    B: wirecall_core::Buffer,
    S: AsRef<[wirecall_core::server::RequestSlot]> + AsMut<[wirecall_core::server::RequestSlot]>,
{
    conn.abort();
    e
}
