//! One non-blocking byte stream over either stream transport, so the server loop and the
//! client drive Unix and TCP connections with the same code. (The datagram transports are
//! in `server/datagram.rs` and `client/datagram.rs`.)

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::endpoint::Endpoint;
use crate::error::Error;

/// A connected, non-blocking Unix or TCP stream.
#[derive(Debug)]
pub(crate) enum Stream {
    /// A Unix-domain stream socket.
    Unix(UnixStream),
    /// A TCP socket (with `TCP_NODELAY` set).
    Tcp(TcpStream),
}

impl Stream {
    /// Connects to a stream endpoint, blocking up to `timeout` (TCP; a Unix connect does
    /// not wait on the network), then switches to non-blocking mode. For a host name with
    /// several addresses, each is tried in turn.
    pub(crate) fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Self, Error> {
        let connect_error = |source| Error::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        match endpoint {
            Endpoint::Unix(path) => {
                let std = std::os::unix::net::UnixStream::connect(path).map_err(connect_error)?;
                std.set_nonblocking(true).map_err(connect_error)?;
                Ok(Self::Unix(UnixStream::from_std(std)))
            }
            Endpoint::Tcp(..) => {
                let mut last = None;
                for addr in endpoint.resolve()? {
                    match std::net::TcpStream::connect_timeout(&addr, timeout) {
                        Ok(std) => {
                            std.set_nonblocking(true).map_err(connect_error)?;
                            let stream = TcpStream::from_std(std);
                            set_nodelay(&stream);
                            return Ok(Self::Tcp(stream));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(connect_error(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
                })))
            }
            Endpoint::UnixDatagram(_) | Endpoint::Udp(..) => Err(connect_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a datagram endpoint has no stream",
            ))),
        }
    }

    /// Closes the sending half: the peer reads end-of-stream after what was sent.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.shutdown(Shutdown::Write),
            Self::Tcp(s) => s.shutdown(Shutdown::Write),
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
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
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
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.deregister(registry),
            Self::Tcp(s) => s.deregister(registry),
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
