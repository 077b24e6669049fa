//! The tokio sockets of each transport behind one type per kind: a stream connection
//! (Unix, TCP or TLS) and a datagram socket (Unix or UDP), used through `&self` (readiness
//! and `try_` calls) so a client's callers and its driver task can share one socket.
//!
//! TLS is the mio adapter's sans-IO [`Session`] over the TCP socket's `try_read` and
//! `try_write` (a `try_read` that would block clears tokio's readiness, as a short read
//! does for the other transports), behind a lock for the `&self` sharing. Ciphertext the
//! socket did not take waits in the session: [`StreamSocket::wants_write`] says so, the
//! caller then waits for `WRITABLE` and [`StreamSocket::flush_pending`] sends it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use wirecall::tls::Session;

use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};

/// A connected stream socket of either transport.
#[derive(Debug)]
pub(crate) enum StreamSocket {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsSocket>),
}

/// A TCP socket and the TLS session over it.
#[derive(Debug)]
pub(crate) struct TlsSocket {
    tcp: TcpStream,
    session: Mutex<Session>,
}

/// The TCP socket as the non-blocking reader and writer the session uses.
struct Now<'a>(&'a TcpStream);

impl io::Read for Now<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for Now<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSocket {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StreamSocket {
    /// The verified identity of a TLS peer's client certificate (a copy), once known.
    pub(crate) fn tls_identity(&self) -> Option<wirecall::TlsIdentity> {
        match self {
            Self::Tls(t) => t.session().identity().cloned(),
            _ => None,
        }
    }

    /// A TLS stream over `tcp` with `session` (its handshake runs in the reads and writes).
    pub(crate) fn tls(tcp: TcpStream, session: Session) -> Self {
        Self::Tls(Box::new(TlsSocket {
            tcp,
            session: Mutex::new(session),
        }))
    }

    /// Drives a client's TLS handshake to its end (the caller bounds the time), so a
    /// certificate that does not verify is known before anything is sent. The error carries
    /// a [`TlsFailure`](wirecall::tls::TlsFailure) when TLS itself failed.
    pub(crate) async fn finish_handshake(&self) -> io::Result<()> {
        let Self::Tls(t) = self else {
            return Ok(());
        };
        loop {
            let (done, wants_write) = {
                let mut session = t.session();
                let done = session.handshake_step(&mut Now(&t.tcp))?;
                (done, session.wants_write())
            };
            if done {
                return Ok(());
            }
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            t.tcp.ready(interest).await?;
        }
    }

    /// Waits until the socket is ready for any of `interest` (readiness may be spurious;
    /// the `try_` call that follows says).
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<tokio::io::Ready> {
        match self {
            Self::Unix(s) => s.ready(interest).await,
            Self::Tcp(s) => s.ready(interest).await,
            Self::Tls(t) => t.tcp.ready(interest).await,
        }
    }

    /// TLS holds ciphertext the socket has not taken yet: wait for `WRITABLE`, then
    /// [`flush_pending`](Self::flush_pending).
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Self::Unix(_) | Self::Tcp(_) => false,
            Self::Tls(t) => t.session().wants_write(),
        }
    }

    /// Sends ciphertext TLS still holds, as far as the socket takes it now.
    pub(crate) fn flush_pending(&self) -> io::Result<()> {
        match self {
            Self::Unix(_) | Self::Tcp(_) => Ok(()),
            Self::Tls(t) => t.session().flush(&mut Now(&t.tcp)).map(drop),
        }
    }

    /// A TLS handshake is still going on (and has not failed).
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Self::Unix(_) | Self::Tcp(_) => false,
            Self::Tls(t) => {
                let session = t.session();
                session.is_handshaking() && session.failure().is_none()
            }
        }
    }

    /// Why TLS failed, if it did.
    pub(crate) fn tls_failure(&self) -> Option<wirecall::tls::TlsFailure> {
        match self {
            Self::Unix(_) | Self::Tcp(_) => None,
            Self::Tls(t) => t.session().failure().cloned(),
        }
    }

    /// Reads what has arrived without waiting (`WouldBlock` when nothing has).
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.try_read(buf),
            Self::Tcp(s) => s.try_read(buf),
            Self::Tls(t) => t.session().read(&mut Now(&t.tcp), buf),
        }
    }

    /// Reads what has arrived without waiting, and says whether the read came back short
    /// of `buf`: then the kernel had no more (a stream read hands over all it has, up to
    /// the room), and the socket's readiness is cleared, so the next wait sleeps until more
    /// comes instead of costing a read that finds nothing. (Readiness that arrived after
    /// this read is kept: tokio clears only what it had seen.)
    pub(crate) fn read_until_short(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let room = buf.len();
        let mut got = 0;
        let mut read = |buf: &mut [u8]| -> io::Result<usize> {
            let n = rustix::io::read(self, buf)?;
            got = n;
            if n > 0 && n < room {
                // Short: clear the readiness (the bytes are kept in `got`).
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        };
        let result = match self {
            Self::Unix(s) => s.try_io(Interest::READABLE, || read(buf)),
            Self::Tcp(s) => s.try_io(Interest::READABLE, || read(buf)),
            // A short TLS read came after a `try_read` that would block, which cleared
            // the readiness already.
            Self::Tls(t) => {
                let n = t.session().read(&mut Now(&t.tcp), buf)?;
                return Ok((n, n > 0 && n < room));
            }
        };
        match result {
            Ok(n) => Ok((n, false)),
            Err(e) if would_block(&e) && got > 0 => Ok((got, true)),
            Err(e) => Err(e),
        }
    }

    /// Writes what the socket takes now without waiting.
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.try_write(buf),
            Self::Tcp(s) => s.try_write(buf),
            Self::Tls(t) => t.session().write(&mut Now(&t.tcp), buf),
        }
    }

    /// Closes the sending half: the peer reads end-of-stream after what was sent. On TLS,
    /// close_notify goes first (as far as the socket takes it now; not mid-handshake, which
    /// it would cut off).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        if let Self::Tls(t) = self {
            let mut session = t.session();
            if !session.is_handshaking() || session.failure().is_some() {
                if let Err(e) = session.close(&mut Now(&t.tcp)) {
                    log::debug!("TLS close_notify: {e}");
                }
            }
        }
        Ok(rustix::net::shutdown(self, rustix::net::Shutdown::Write)?)
    }
}

impl AsFd for StreamSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
            Self::Tls(t) => t.tcp.as_fd(),
        }
    }
}

/// A datagram socket of either transport.
#[derive(Debug)]
pub(crate) enum DatagramSocket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

impl DatagramSocket {
    /// Waits until the socket is ready for any of `interest`.
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<tokio::io::Ready> {
        match self {
            Self::Unix(s) => s.ready(interest).await,
            Self::Udp(s) => s.ready(interest).await,
        }
    }

    /// Receives one datagram from the connected peer without waiting.
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.try_recv(buf),
            Self::Udp(s) => s.try_recv(buf),
        }
    }

    /// Sends one datagram to the connected peer without waiting.
    pub(crate) fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.try_send(buf),
            Self::Udp(s) => s.try_send(buf),
        }
    }
}

impl AsFd for DatagramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Udp(s) => s.as_fd(),
        }
    }
}

/// `true` for the error of an operation that should simply be tried again later.
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `true` for an interrupted system call.
pub(crate) fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
