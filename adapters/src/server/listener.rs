//! Listening sockets, with Unix socket-file hygiene: a stale file left by a dead server is
//! replaced, a live server's socket is never taken (a test connection decides), the file
//! gets the configured mode, and it is removed when the listener goes (only if it is still
//! the file this listener made). The same rules hold for the datagram sockets
//! ([`bind_unix_datagram`], [`bind_udp`]), which the event loop drives itself.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use mio::{Interest, Registry, Token};

use crate::config::UDP_RECEIVE_BUFFER;
use crate::driver::peer_credentials;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::function::OwnedPeer;
use crate::stream::{Stream, TlsStream, set_nodelay};
use crate::tls::Session;

/// A connection just accepted: its socket, who is at the other end, and its name in log
/// lines.
pub(crate) struct Accepted {
    pub(super) stream: Stream,
    pub(super) peer: OwnedPeer,
    pub(super) label: String,
    /// Where it stands with the connection limit, as it moves between event loops.
    pub(super) admission: Admission,
    /// Whether its first bytes are a PROXY protocol header (the listener's `--accept-proxy`),
    /// to be read before anything else.
    pub(super) proxy_header: ProxyHeader,
}

/// Whether a listener's connections begin with a PROXY protocol header naming the client
/// (they come through a load balancer: `--accept-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// Connections from clients themselves: no header is read (one sent is not wirecall).
    None,
    /// Each connection must begin with a header, read before anything else.
    Expected,
}

/// A stream listener of an event loop, with what it serves.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(super) listener: Listener,
    /// The endpoint it is bound at.
    pub(super) endpoint: Endpoint,
    /// Whether its connections begin with a PROXY protocol header (`--accept-proxy`).
    pub(super) proxy_header: ProxyHeader,
}

/// An accepted connection's standing with the server's connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Looking for a slot: `tried` event loops found none (and none of their connections
    /// idle long enough to evict).
    Seeking { tried: usize },
    /// Holds a slot (and its peer passed the Unix allowlist): the loop that takes it only
    /// sets it up.
    Admitted,
}

/// How a TCP or UDP socket shares its address with the sockets of a server's other event
/// loops (`SO_REUSEPORT`: the kernel spreads connections, and datagram flows by their
/// addresses, over the sockets of the group, one flow always to the same socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Share {
    /// The only socket on its address (one event loop), without `SO_REUSEPORT`: a second
    /// server on the same address fails to bind.
    Alone,
    /// The first of a group: the address must be free (checked with a socket that does not
    /// join groups, so another server already there makes this fail too), then bound with
    /// `SO_REUSEPORT`.
    First,
    /// Joins the group of the first socket, which is bound at this address.
    Join(SocketAddr),
}

/// A bound, listening, non-blocking socket.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A Unix stream listener. With several event loops, each holds its own descriptor of
    /// the one listening socket, registered with `EPOLLEXCLUSIVE` (`shared`), so a new
    /// connection wakes one idle loop rather than all of them; the socket file goes when
    /// the last of them does.
    Unix {
        listener: UnixListener,
        file: Arc<SocketFile>,
        shared: bool,
    },
    Tcp(TcpListener),
    /// TCP whose connections speak TLS with this configuration.
    Tls {
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    },
}

impl Listener {
    /// Binds `endpoint`; returns the listener and the endpoint it really listens on (for
    /// `tcp:host:0`, the port the OS chose). A `tls:` endpoint needs its TLS configuration.
    pub(crate) fn bind(
        endpoint: &Endpoint,
        mode: Option<u32>,
        tls: Option<&Arc<rustls::ServerConfig>>,
    ) -> Result<(Self, Endpoint), Error> {
        Self::bind_shared(endpoint, mode, tls, Share::Alone)
    }

    /// As [`bind`](Self::bind), with a TCP socket sharing its address as `share` says
    /// (a Unix listener is shared with [`share`](Self::share) instead).
    pub(crate) fn bind_shared(
        endpoint: &Endpoint,
        mode: Option<u32>,
        tls: Option<&Arc<rustls::ServerConfig>>,
        share: Share,
    ) -> Result<(Self, Endpoint), Error> {
        let listen_error = |source| Error::Listen {
            endpoint: endpoint.clone(),
            source,
        };
        match endpoint {
            Endpoint::Unix(path) => {
                clear_stale(endpoint, path, probe_stream)?;
                let fd = bind_unix(path, rustix::net::SocketType::STREAM, mode)
                    .and_then(|fd| {
                        rustix::net::listen(&fd, BACKLOG)?;
                        Ok(fd)
                    })
                    .map_err(|e| listen_error(e.into()))?;
                let listener = UnixListener::from_std(fd.into());
                let file = Arc::new(own_file(endpoint, path, mode)?);
                let shared = false;
                Ok((
                    Self::Unix {
                        listener,
                        file,
                        shared,
                    },
                    endpoint.clone(),
                ))
            }
            Endpoint::Tcp(..) => {
                let listener = bind_socket(endpoint, share, tcp_listener)?;
                let local = listener.local_addr().map_err(listen_error)?;
                Ok((Self::Tcp(listener), Endpoint::tcp_addr(local)))
            }
            Endpoint::Tls(..) => {
                let Some(config) = tls else {
                    return Err(Error::TlsNotConfigured(endpoint.clone()));
                };
                let listener = bind_socket(endpoint, share, tcp_listener)?;
                let local = listener.local_addr().map_err(listen_error)?;
                let actual = Endpoint::Tls(local.ip().to_string(), local.port());
                let config = Arc::clone(config);
                Ok((Self::Tls { listener, config }, actual))
            }
            Endpoint::UnixDatagram(_) | Endpoint::Udp(..) => Err(listen_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a datagram endpoint has no stream listener",
            ))),
        }
    }

    /// Another descriptor of this Unix listener for another event loop; from now on both
    /// register with `EPOLLEXCLUSIVE`. `None` for a TCP listener (each loop binds its own).
    pub(super) fn share(&mut self) -> io::Result<Option<Self>> {
        let Self::Unix {
            listener,
            file,
            shared,
        } = self
        else {
            return Ok(None);
        };
        let fd = std::os::fd::AsFd::as_fd(listener).try_clone_to_owned()?;
        *shared = true;
        Ok(Some(Self::Unix {
            listener: UnixListener::from_std(fd.into()),
            file: Arc::clone(file),
            shared: true,
        }))
    }

    /// The address a TCP or TLS listener is bound at (scope id and all); `None` for Unix.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(listener) | Self::Tls { listener, .. } => listener.local_addr().ok(),
            Self::Unix { .. } => None,
        }
    }

    /// Accepts one connection: the stream (non-blocking, `TCP_NODELAY` on TCP) and a label
    /// for logs.
    pub(super) fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Unix { listener, file, .. } => {
                let (stream, _) = listener.accept()?;
                let peer = OwnedPeer::Unix(peer_credentials(&stream));
                let label = match peer {
                    OwnedPeer::Unix(Some(c)) => format!("unix:{} {c}", file.path.display()),
                    _ => format!("unix:{}", file.path.display()),
                };
                Ok(Accepted {
                    stream: Stream::Unix(stream),
                    peer,
                    label,
                    admission: Admission::Seeking { tried: 0 },
                    proxy_header: ProxyHeader::None,
                })
            }
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                set_nodelay(&stream);
                Ok(Accepted {
                    stream: Stream::Tcp(stream),
                    peer: OwnedPeer::Tcp(peer),
                    label: format!("tcp peer {peer}"),
                    admission: Admission::Seeking { tried: 0 },
                    proxy_header: ProxyHeader::None,
                })
            }
            Self::Tls { listener, config } => {
                let (tcp, peer) = listener.accept()?;
                set_nodelay(&tcp);
                // The handshake runs in the connection's reads and writes, from the loop.
                let session = Session::server(config)?;
                let stream = Stream::Tls(Box::new(TlsStream { tcp, session }));
                Ok(Accepted {
                    stream,
                    peer: OwnedPeer::Tls(peer, None),
                    label: format!("tls peer {peer}"),
                    admission: Admission::Seeking { tried: 0 },
                    proxy_header: ProxyHeader::None,
                })
            }
        }
    }
}

impl Source for Listener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Unix {
                listener,
                shared: true,
                ..
            } => register_exclusive(registry, listener, token),
            Self::Unix { listener, .. } => listener.register(registry, token, interest),
            Self::Tcp(listener) | Self::Tls { listener, .. } => {
                listener.register(registry, token, interest)
            }
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Self::Unix {
                listener,
                shared: true,
                ..
            } => {
                // epoll cannot modify an exclusive registration: make it anew.
                rustix::event::epoll::delete(registry, &*listener)?;
                register_exclusive(registry, listener, token)
            }
            Self::Unix { listener, .. } => listener.reregister(registry, token, interest),
            Self::Tcp(listener) | Self::Tls { listener, .. } => {
                listener.reregister(registry, token, interest)
            }
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Self::Unix {
                listener,
                shared: true,
                ..
            } => Ok(rustix::event::epoll::delete(registry, &*listener)?),
            Self::Unix { listener, .. } => listener.deregister(registry),
            Self::Tcp(listener) | Self::Tls { listener, .. } => listener.deregister(registry),
        }
    }
}

/// Registers a listener shared by several event loops with `registry`'s epoll instance for
/// reading, edge-triggered as mio registers everything, and `EPOLLEXCLUSIVE`: a new
/// connection wakes one of the loops waiting in `epoll_wait` rather than every one (a loop
/// busy elsewhere is passed over). mio has no such interest, so this goes to epoll directly,
/// with the event data mio reads back as the token.
fn register_exclusive(
    registry: &Registry,
    listener: &UnixListener,
    token: Token,
) -> io::Result<()> {
    use rustix::event::epoll::{EventData, EventFlags, add};
    let data = EventData::new_u64(u64::try_from(token.0).unwrap_or(u64::MAX));
    // (epoll takes no other flags with EXCLUSIVE: EPOLLRDHUP would be EINVAL.)
    let flags = EventFlags::IN | EventFlags::ET | EventFlags::EXCLUSIVE;
    Ok(add(registry, listener, data, flags)?)
}

/// Binds a `unix-dgram:` endpoint's socket at `path`, with the same hygiene as a Unix
/// stream listener: a stale file is replaced (a datagram `connect` to it is refused), a
/// live server's is never taken, the file gets `mode`, and the returned [`SocketFile`]
/// removes it when dropped.
pub(crate) fn bind_unix_datagram(
    endpoint: &Endpoint,
    path: &Path,
    mode: Option<u32>,
) -> Result<(UnixDatagram, SocketFile), Error> {
    clear_stale(endpoint, path, probe_datagram)?;
    let fd = bind_unix(path, rustix::net::SocketType::DGRAM, mode).map_err(|e| Error::Listen {
        endpoint: endpoint.clone(),
        source: e.into(),
    })?;
    let socket = UnixDatagram::from_std(fd.into());
    let file = own_file(endpoint, path, mode)?;
    Ok((socket, file))
}

/// Connections a Unix stream listener queues before they are accepted.
const BACKLOG: i32 = 1024;

/// A non-blocking Unix socket of `kind` bound at `path` whose file is never reachable with
/// a wider mode than `mode`: the socket's own mode is set before `bind`, which creates the
/// file with it (less the umask), so no other user can connect in the moment between
/// `bind` and the `chmod` that [`own_file`] does after (which then widens it to exactly
/// `mode` if the umask took bits away).
fn bind_unix(
    path: &Path,
    kind: rustix::net::SocketType,
    mode: Option<u32>,
) -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        kind,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    if let Some(mode) = mode {
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode))?;
    }
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

/// Binds a `udp:` endpoint's socket on the first address its host resolves to that can be
/// bound; returns it and the endpoint it is really bound to (for port 0, the port the OS
/// chose).
pub(crate) fn bind_udp(endpoint: &Endpoint) -> Result<(UdpSocket, Endpoint), Error> {
    bind_udp_shared(endpoint, Share::Alone)
}

/// As [`bind_udp`], sharing the address with other event loops' sockets as `share` says.
pub(crate) fn bind_udp_shared(
    endpoint: &Endpoint,
    share: Share,
) -> Result<(UdpSocket, Endpoint), Error> {
    let socket = bind_socket(endpoint, share, udp_socket)?;
    // Room for a burst of first copies from many clients at once.
    let size = UDP_RECEIVE_BUFFER;
    if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, size) {
        log::debug!("{endpoint}: cannot enlarge the receive buffer: {e}");
    }
    let local = socket.local_addr().map_err(|source| Error::Listen {
        endpoint: endpoint.clone(),
        source,
    })?;
    Ok((socket, Endpoint::udp_addr(local)))
}

/// Binds a TCP or UDP socket for `endpoint` with `bind(address, reuse_port)`, as `share`
/// says: alone on the first address that can be bound; first of a group (the address must
/// be free); or joining the group at an address.
fn bind_socket<T>(
    endpoint: &Endpoint,
    share: Share,
    bind: impl Fn(SocketAddr, bool) -> io::Result<T>,
) -> Result<T, Error> {
    let kind = match endpoint {
        Endpoint::Udp(..) => rustix::net::SocketType::DGRAM,
        _ => rustix::net::SocketType::STREAM,
    };
    match share {
        Share::Alone => bind_first(endpoint, |addr| bind(addr, false)),
        Share::First => bind_first(endpoint, |addr| {
            if addr.port() != 0 {
                // Taken by anyone (another server, even one sharing its port): refused
                // here, rather than silently joining its group and splitting its traffic.
                probe_free(addr, kind)?;
            }
            bind(addr, true)
        }),
        Share::Join(addr) => bind(addr, true).map_err(|source| Error::Listen {
            endpoint: endpoint.clone(),
            source,
        }),
    }
}

/// Fails when `addr` is taken for sockets of `kind`: binds one there that does not share
/// the port (bound only, never listening, so no connection is ever queued on it).
fn probe_free(addr: SocketAddr, kind: rustix::net::SocketType) -> io::Result<()> {
    let fd = socket_for(addr, kind)?;
    if kind == rustix::net::SocketType::STREAM {
        // As the listeners: a port in TIME_WAIT only is free.
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(())
}

/// A non-blocking TCP socket listening at `addr`, with `SO_REUSEADDR` (so a restart does
/// not wait out `TIME_WAIT`) and, for a group of loops, `SO_REUSEPORT`.
fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let fd = socket_for(addr, rustix::net::SocketType::STREAM)?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuse_port {
        rustix::net::sockopt::set_socket_reuseport(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    Ok(TcpListener::from_std(fd.into()))
}

/// A non-blocking UDP socket bound at `addr`, with `SO_REUSEPORT` for a group of loops.
fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let fd = socket_for(addr, rustix::net::SocketType::DGRAM)?;
    if reuse_port {
        rustix::net::sockopt::set_socket_reuseport(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(UdpSocket::from_std(fd.into()))
}

/// A non-blocking, close-on-exec socket of `kind` for `addr`'s family.
fn socket_for(addr: SocketAddr, kind: rustix::net::SocketType) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    Ok(rustix::net::socket_with(family, kind, flags, None)?)
}

/// Binds the first of `endpoint`'s addresses that `bind` takes.
fn bind_first<T>(
    endpoint: &Endpoint,
    bind: impl Fn(SocketAddr) -> io::Result<T>,
) -> Result<T, Error> {
    let mut last = None;
    for addr in endpoint.resolve()? {
        match bind(addr) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Listen {
        endpoint: endpoint.clone(),
        source: last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to bind")),
    })
}

/// Takes charge of the socket file just bound at `path`: from here on it is removed on
/// drop, even if setting its mode fails.
fn own_file(endpoint: &Endpoint, path: &Path, mode: Option<u32>) -> Result<SocketFile, Error> {
    let listen_error = |source| Error::Listen {
        endpoint: endpoint.clone(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(listen_error)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(listen_error)?;
    }
    Ok(file)
}

/// A Unix socket file this process created; removed on drop if it is still the same file
/// (same device and inode), so a file a newer server bound since is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// The socket file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => match fs::remove_file(&self.path) {
                Ok(()) => log::debug!("removed socket file {}", self.path.display()),
                Err(e) => log::warn!("cannot remove socket file {}: {e}", self.path.display()),
            },
            Ok(_) => log::debug!(
                "socket file {} was replaced by another; left alone",
                self.path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot check socket file {}: {e}", self.path.display()),
        }
    }
}

/// Tries a stream connection to `path`.
fn probe_stream(path: &Path) -> io::Result<()> {
    std::os::unix::net::UnixStream::connect(path).map(drop)
}

/// Tries a datagram `connect` to `path` (refused when no socket is bound there any more).
fn probe_datagram(path: &Path) -> io::Result<()> {
    std::os::unix::net::UnixDatagram::unbound()?.connect(path)
}

/// Makes way for binding `path`: nothing there is fine; a socket nobody listens on (`probe`,
/// a connection of the listener's kind, is refused) is stale and removed; a socket with a
/// live server, or anything that is not a socket, is an error and is left alone.
fn clear_stale(
    endpoint: &Endpoint,
    path: &Path,
    probe: fn(&Path) -> io::Result<()>,
) -> Result<(), Error> {
    let listen_error = |source| Error::Listen {
        endpoint: endpoint.clone(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(listen_error(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::NotASocket(endpoint.clone()));
    }
    match probe(path) {
        Ok(()) => Err(Error::AddressInUse(endpoint.clone())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(listen_error(e)),
            }
        }
        Err(e) => Err(listen_error(e)),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_unix_hygiene() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let ep = Endpoint::Unix(path.clone());

        // A stale file (bound, then its listener dropped) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (live, actual) = Listener::bind(&ep, Some(0o600), None).unwrap();
        assert_eq!(actual, ep);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A live one is not taken.
        let err = Listener::bind(&ep, None, None).unwrap_err().to_string();
        assert!(err.contains("address in use"), "{err}");
        assert!(path.exists());

        // Removed when the listener goes.
        drop(live);
        assert!(!path.exists());

        // Not a socket: left alone.
        fs::write(&path, b"precious").unwrap();
        let err = Listener::bind(&ep, None, None).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn test_replaced_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let ep = Endpoint::Unix(path.clone());
        let (first, _) = Listener::bind(&ep, None, None).unwrap();
        // Someone removes our file and binds their own there.
        fs::remove_file(&path).unwrap();
        let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(first);
        assert!(path.exists());
    }

    #[test]
    fn test_tcp_port_zero_reports_real_port() {
        let ep: Endpoint = "tcp:127.0.0.1:0".parse().unwrap();
        let (_l, actual) = Listener::bind(&ep, None, None).unwrap();
        match actual {
            Endpoint::Tcp(host, port) => {
                assert_eq!(host, "127.0.0.1");
                assert_ne!(port, 0);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn test_unix_datagram_hygiene() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let ep = Endpoint::UnixDatagram(path.clone());

        // A stale file (bound, then its socket dropped) is replaced.
        drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
        assert!(path.exists());
        let (live, file) = bind_unix_datagram(&ep, &path, Some(0o620)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o620);

        // A live one is not taken, by a datagram or a stream listener.
        let err = bind_unix_datagram(&ep, &path, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("address in use"), "{err}");
        assert!(Listener::bind(&Endpoint::Unix(path.clone()), None, None).is_err());
        assert!(path.exists());

        // Removed when its file guard goes.
        drop(file);
        drop(live);
        assert!(!path.exists());

        // Not a socket: left alone.
        fs::write(&path, b"precious").unwrap();
        let err = bind_unix_datagram(&ep, &path, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn test_udp_port_zero_reports_real_port() {
        let ep: Endpoint = "udp:127.0.0.1:0".parse().unwrap();
        let (_s, actual) = bind_udp(&ep).unwrap();
        match actual {
            Endpoint::Udp(host, port) => {
                assert_eq!(host, "127.0.0.1");
                assert_ne!(port, 0);
            }
            other => panic!("{other}"),
        }
    }
}
