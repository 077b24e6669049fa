//! One non-blocking byte stream over any stream transport, so the server loop drives Unix,
//! TCP and TLS connections with the same code. (The datagram transports are in
//! `server/datagram.rs` and `client/datagram.rs`.)
//!
//! A TLS stream reads and writes plaintext; its [`Read`] keeps the promise the loop relies
//! on (a read that comes back short found the socket empty: see [`Session::read`]), and
//! ciphertext the socket did not take waits in the session: [`Stream::wants_write`] says
//! so, and [`Stream::flush_pending`] sends it when the socket has room.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::tls::{Session, TlsFailure, TlsIdentity};

/// A connected, non-blocking Unix, TCP or TLS stream.
#[derive(Debug)]
pub(crate) enum Stream {
    /// A Unix-domain stream socket.
    Unix(UnixStream),
    /// A TCP socket (with `TCP_NODELAY` set).
    Tcp(TcpStream),
    /// TLS over a TCP socket (with `TCP_NODELAY` set).
    Tls(Box<TlsStream>),
}

/// A TCP socket and the TLS session over it.
#[derive(Debug)]
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    pub(crate) session: Session,
}

impl Stream {
    /// Closes the sending half: the peer reads end-of-stream after what was sent. `false`
    /// when TLS is not ready yet (its handshake is still going on, or its close_notify
    /// waits for room in the socket): call it again later.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<bool> {
        match self {
            Self::Unix(s) => s.shutdown(Shutdown::Write).map(|()| true),
            Self::Tcp(s) => s.shutdown(Shutdown::Write).map(|()| true),
            Self::Tls(t) => {
                // Mid-handshake, what was written waits for the handshake's end (a
                // refusal, say): close_notify now would cut it off. The caller's linger
                // bounds the wait.
                if t.session.is_handshaking() && t.session.failure().is_none() {
                    return Ok(false);
                }
                if !t.session.close(&mut t.tcp)? {
                    return Ok(false);
                }
                t.tcp.shutdown(Shutdown::Write).map(|()| true)
            }
        }
    }

    /// TLS has ciphertext waiting for room in the socket.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Self::Unix(_) | Self::Tcp(_) => false,
            Self::Tls(t) => t.session.wants_write(),
        }
    }

    /// Sends ciphertext TLS still holds, until the socket would block; `true` if any
    /// went out.
    pub(crate) fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Self::Unix(_) | Self::Tcp(_) => Ok(false),
            Self::Tls(t) => t.session.flush(&mut t.tcp),
        }
    }

    /// The peer's verified TLS identity (a client certificate that verified against
    /// `--client-ca`), once the handshake is done: what a caller context hands functions.
    pub(crate) fn tls_identity(&self) -> Option<&TlsIdentity> {
        match self {
            Self::Unix(_) | Self::Tcp(_) => None,
            Self::Tls(t) => t.session.identity(),
        }
    }

    /// Why TLS failed on this stream, if it did.
    pub(crate) fn tls_failure(&self) -> Option<&TlsFailure> {
        match self {
            Self::Unix(_) | Self::Tcp(_) => None,
            Self::Tls(t) => t.session.failure(),
        }
    }

    /// The TLS session, if this is a TLS stream.
    pub(crate) fn tls_session(&self) -> Option<&Session> {
        match self {
            Self::Unix(_) | Self::Tcp(_) => None,
            Self::Tls(t) => Some(&t.session),
        }
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
            Self::Tls(t) => t.tcp.as_fd(),
        }
    }
}

/// Disables Nagle's algorithm: frames are small and latency matters; the core already
/// batches what it has into one write.
pub(crate) fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("cannot set TCP_NODELAY: {e}");
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => socket_recv(&*s, buf),
            Self::Tcp(s) => socket_recv(&*s, buf),
            Self::Tls(t) => t.session.read(&mut t.tcp, buf),
        }
    }
}

/// `recv(2)` through rustix (straight to the kernel on Linux), not glibc: in a process with more
/// than one thread (several event loops, workers) glibc's `recv` is a cancellation point
/// that costs ~50 more instructions per call (`__pthread_enable_asynccancel`), measured
/// with callgrind (docs/BENCHMARKS.md).
fn socket_recv(socket: impl std::os::fd::AsFd, buf: &mut [u8]) -> io::Result<usize> {
    rustix::net::recv(socket, buf, rustix::net::RecvFlags::empty())
        .map(|(n, _)| n)
        .map_err(io::Error::from)
}

/// `send(2)` with `MSG_NOSIGNAL` (a closed peer is an `EPIPE` error, not a signal), straight
/// to the kernel as [`socket_recv`].
fn socket_send(socket: impl std::os::fd::AsFd, buf: &[u8]) -> io::Result<usize> {
    rustix::net::send(socket, buf, rustix::net::SendFlags::NOSIGNAL).map_err(io::Error::from)
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => socket_send(&*s, buf),
            Self::Tcp(s) => socket_send(&*s, buf),
            Self::Tls(t) => t.session.write(&mut t.tcp, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.register(registry, token, interest),
            Self::Tcp(s) => s.register(registry, token, interest),
            Self::Tls(t) => t.tcp.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.reregister(registry, token, interest),
            Self::Tcp(s) => s.reregister(registry, token, interest),
            Self::Tls(t) => t.tcp.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.deregister(registry),
            Self::Tcp(s) => s.deregister(registry),
            Self::Tls(t) => t.tcp.deregister(registry),
        }
    }
}

/// `true` for errors that mean "try again later" rather than failure.
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `true` for a system call interrupted by a signal: retry it.
pub(crate) fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
