//! The tokio sockets of each transport behind one type per kind: a stream connection
//! (Unix or TCP) and a datagram socket (Unix or UDP), used through `&self` (readiness and
//! `try_` calls) so a client's callers and its driver task can share one socket.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};

/// A connected stream socket of either transport.
#[derive(Debug)]
pub(crate) enum StreamSocket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl StreamSocket {
    /// Waits until the socket is ready for any of `interest` (readiness may be spurious;
    /// the `try_` call that follows says).
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<tokio::io::Ready> {
        match self {
            Self::Unix(s) => s.ready(interest).await,
            Self::Tcp(s) => s.ready(interest).await,
        }
    }

    /// Reads what has arrived without waiting (`WouldBlock` when nothing has).
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.try_read(buf),
            Self::Tcp(s) => s.try_read(buf),
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
        }
    }

    /// Closes the sending half: the peer reads end-of-stream after what was sent.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        Ok(rustix::net::shutdown(self, rustix::net::Shutdown::Write)?)
    }
}

impl AsFd for StreamSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
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
