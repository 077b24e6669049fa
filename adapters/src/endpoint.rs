//! Where a server listens and a client connects, written one way everywhere:
//!
//! | form | transport |
//! | --- | --- |
//! | `unix:/run/app.sock` | Unix-domain stream socket at that path |
//! | `unix-dgram:/run/app.sock` | Unix-domain datagram socket at that path |
//! | `tcp:host:port` | TCP; `host` is a name, an IPv4 address, or an IPv6 address in brackets (`tcp:[::1]:7000`) |
//! | `tls:host:port` | TLS over TCP, same host syntax; a client checks the server's certificate against `host` (see [`tls`](crate::tls)) |
//! | `udp:host:port` | UDP, same host syntax |
//!
//! [`Endpoint`] parses with [`FromStr`] and prints with [`Display`](fmt::Display), and the two
//! round-trip. Host names are resolved only when asked ([`Endpoint::resolve`]).
//!
//! ```
//! use wirecall::Endpoint;
//!
//! let ep: Endpoint = "tcp:[::1]:7000".parse()?;
//! assert_eq!(ep, Endpoint::Tcp("::1".into(), 7000));
//! assert_eq!(ep.to_string(), "tcp:[::1]:7000");
//! assert!("ftp:example.org:21".parse::<Endpoint>().is_err());
//! # Ok::<(), wirecall::ParseEndpointError>(())
//! ```

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

/// What every endpoint looks like, for error messages.
const EXPECTED: &str =
    "unix:/path, unix-dgram:/path, tcp:host:port, tls:host:port or udp:host:port";

/// A socket address in wirecall's one syntax. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `unix:/path`: a Unix-domain stream socket.
    Unix(PathBuf),
    /// `unix-dgram:/path`: a Unix-domain datagram socket.
    UnixDatagram(PathBuf),
    /// `tcp:host:port`: TCP to a host name or address (IPv6 without brackets here).
    Tcp(String, u16),
    /// `tls:host:port`: TLS over TCP to a host name or address (IPv6 without brackets
    /// here); the host is also the name the server's certificate must be valid for.
    Tls(String, u16),
    /// `udp:host:port`: UDP to a host name or address (IPv6 without brackets here).
    Udp(String, u16),
}

impl Endpoint {
    /// The scheme: `"unix"`, `"unix-dgram"`, `"tcp"`, `"tls"` or `"udp"`.
    #[must_use]
    pub fn transport(&self) -> &'static str {
        match self {
            Self::Unix(_) => "unix",
            Self::UnixDatagram(_) => "unix-dgram",
            Self::Tcp(..) => "tcp",
            Self::Tls(..) => "tls",
            Self::Udp(..) => "udp",
        }
    }

    /// `true` for the datagram transports (`unix-dgram`, `udp`).
    #[must_use]
    pub fn is_datagram(&self) -> bool {
        matches!(self, Self::UnixDatagram(_) | Self::Udp(..))
    }

    /// The `tcp:` endpoint of a socket address (the address as text, so the result names
    /// exactly one socket).
    #[must_use]
    pub fn tcp_addr(addr: SocketAddr) -> Self {
        Self::Tcp(addr.ip().to_string(), addr.port())
    }

    /// The `udp:` endpoint of a socket address, as [`tcp_addr`](Self::tcp_addr).
    #[must_use]
    pub fn udp_addr(addr: SocketAddr) -> Self {
        Self::Udp(addr.ip().to_string(), addr.port())
    }

    /// The socket addresses a `tcp:`, `tls:` or `udp:` endpoint's host resolves to, in the
    /// resolver's order.
    ///
    /// # Errors
    ///
    /// [`Error::Resolve`] when the name does not resolve (or resolves to nothing), or when
    /// the endpoint is a Unix one, which has no socket address.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, Error> {
        let (host, port) = match self {
            Self::Tcp(host, port) | Self::Tls(host, port) | Self::Udp(host, port) => {
                (host.as_str(), *port)
            }
            Self::Unix(_) | Self::UnixDatagram(_) => {
                return Err(Error::Resolve {
                    endpoint: self.clone(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a Unix socket path has no network address",
                    ),
                });
            }
        };
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                endpoint: self.clone(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Resolve {
                endpoint: self.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
            });
        }
        Ok(addrs)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) | Self::UnixDatagram(path) => {
                write!(f, "{}:{}", self.transport(), path.display())
            }
            Self::Tcp(host, port) | Self::Tls(host, port) | Self::Udp(host, port) => {
                if host.contains(':') {
                    write!(f, "{}:[{host}]:{port}", self.transport())
                } else {
                    write!(f, "{}:{host}:{port}", self.transport())
                }
            }
        }
    }
}

/// Why text is not an [`Endpoint`]. Each message says what was expected and quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseEndpointError {
    /// No known `scheme:` in front.
    #[error("expected {EXPECTED}, got {0:?}")]
    UnknownScheme(String),
    /// `unix:` or `unix-dgram:` with nothing after it.
    #[error(
        "expected a socket path after the scheme, like {scheme}:/run/wirecall.sock, got {0:?}",
        scheme = scheme_of(.0)
    )]
    EmptyPath(String),
    /// A Unix socket path longer than a socket address holds.
    #[error(
        "a Unix socket path may be at most {MAX_UNIX_PATH} bytes (the kernel's sun_path holds \
         108 with the terminating NUL), got {len} bytes in {input:?}"
    )]
    PathTooLong {
        /// The text given.
        input: String,
        /// The path's length in bytes.
        len: usize,
    },
    /// `tcp:`/`tls:`/`udp:` without a `:port`.
    #[error(
        "expected host:port after the scheme, like {scheme}:localhost:7000, got {0:?}",
        scheme = scheme_of(.0)
    )]
    MissingPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("expected a port number from 0 to 65535 after the last ':', got {0:?}")]
    BadPort(String),
    /// The host part is empty or holds a space or a bracket.
    #[error("expected a host name or address before the port, got {0:?}")]
    BadHost(String),
    /// An IPv6 address without brackets (`tcp:::1:7000`), which cannot be told from the port.
    #[error("expected an IPv6 address in brackets, like tcp:[::1]:7000, got {0:?}")]
    UnbracketedIpv6(String),
}

impl FromStr for Endpoint {
    type Err = ParseEndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(ParseEndpointError::UnknownScheme(s.to_owned()));
        };
        match scheme {
            "unix" => parse_path(s, rest).map(Self::Unix),
            "unix-dgram" => parse_path(s, rest).map(Self::UnixDatagram),
            "tcp" => parse_host_port(s, rest).map(|(h, p)| Self::Tcp(h, p)),
            "tls" => parse_host_port(s, rest).map(|(h, p)| Self::Tls(h, p)),
            "udp" => parse_host_port(s, rest).map(|(h, p)| Self::Udp(h, p)),
            _ => Err(ParseEndpointError::UnknownScheme(s.to_owned())),
        }
    }
}

/// The longest Unix socket path, in bytes: `sun_path` is 108 bytes on Linux, with room
/// for the terminating NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// The scheme of an endpoint's text (what comes before the first `:`).
fn scheme_of(input: &str) -> &str {
    input.split_once(':').map_or(input, |(scheme, _)| scheme)
}

fn parse_path(input: &str, rest: &str) -> Result<PathBuf, ParseEndpointError> {
    if rest.is_empty() {
        return Err(ParseEndpointError::EmptyPath(input.to_owned()));
    }
    if rest.len() > MAX_UNIX_PATH {
        return Err(ParseEndpointError::PathTooLong {
            input: input.to_owned(),
            len: rest.len(),
        });
    }
    Ok(PathBuf::from(rest))
}

fn parse_host_port(input: &str, rest: &str) -> Result<(String, u16), ParseEndpointError> {
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(ParseEndpointError::BadHost(input.to_owned()));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(ParseEndpointError::MissingPort(input.to_owned()));
        };
        (host, port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(ParseEndpointError::MissingPort(input.to_owned()));
        };
        if host.contains(':') {
            return Err(ParseEndpointError::UnbracketedIpv6(input.to_owned()));
        }
        (host, port)
    };
    let bad_host =
        |c: char| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '/' | '@');
    if host.is_empty() || host.contains(bad_host) {
        return Err(ParseEndpointError::BadHost(input.to_owned()));
    }
    // `u16::from_str` takes a leading `+`; a port is digits only.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseEndpointError::BadPort(input.to_owned()));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| ParseEndpointError::BadPort(input.to_owned()))?;
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn test_parse_each_form() {
        assert_eq!(ep("unix:/run/x.sock"), Endpoint::Unix("/run/x.sock".into()));
        assert_eq!(ep("unix:rel/x.sock"), Endpoint::Unix("rel/x.sock".into()));
        assert_eq!(
            ep("unix-dgram:/run/x.sock"),
            Endpoint::UnixDatagram("/run/x.sock".into())
        );
        assert_eq!(
            ep("tcp:localhost:7000"),
            Endpoint::Tcp("localhost".into(), 7000)
        );
        assert_eq!(ep("tcp:127.0.0.1:0"), Endpoint::Tcp("127.0.0.1".into(), 0));
        assert_eq!(ep("tcp:[::1]:7000"), Endpoint::Tcp("::1".into(), 7000));
        assert_eq!(
            ep("tls:example.org:7443"),
            Endpoint::Tls("example.org".into(), 7443)
        );
        assert_eq!(ep("tls:[::1]:7443"), Endpoint::Tls("::1".into(), 7443));
        assert_eq!(
            ep("udp:[fe80::1]:65535"),
            Endpoint::Udp("fe80::1".into(), 65535)
        );
        assert_eq!(
            ep("udp:example.org:53"),
            Endpoint::Udp("example.org".into(), 53)
        );
    }

    #[test]
    fn test_errors_say_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "foo",
                "expected unix:/path, unix-dgram:/path, tcp:host:port, tls:host:port or udp:host:port, got \"foo\"",
            ),
            ("http://x", "expected unix:/path"),
            ("unix:", "like unix:/run/wirecall.sock"),
            ("unix-dgram:", "like unix-dgram:/run/wirecall.sock"),
            ("tcp:localhost", "like tcp:localhost:7000"),
            ("udp:localhost", "like udp:localhost:7000"),
            ("tls:localhost", "like tls:localhost:7000"),
            ("tls:::1:7443", "expected an IPv6 address in brackets"),
            ("tcp:[::1]", "expected host:port"),
            ("tcp:[::1:7000", "expected a host name"),
            ("tcp:localhost:99999", "expected a port number"),
            ("tcp:localhost:+80", "expected a port number"),
            ("tcp:localhost:", "expected a port number"),
            ("tcp::80", "expected a host name"),
            ("tcp:a b:80", "expected a host name"),
            ("tcp:::1:7000", "expected an IPv6 address in brackets"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input}: {err}");
        }
    }

    #[test]
    fn test_a_unix_path_fits_a_socket_address() {
        let longest = format!("/{}", "a".repeat(MAX_UNIX_PATH - 1));
        assert_eq!(
            ep(&format!("unix:{longest}")),
            Endpoint::Unix(longest.clone().into())
        );
        let over = format!("unix-dgram:{longest}b");
        let err = over.parse::<Endpoint>().unwrap_err().to_string();
        assert!(
            err.starts_with("a Unix socket path may be at most 107 bytes (the kernel's sun_path holds 108 with the terminating NUL), got 108 bytes in"),
            "{err}"
        );
        // A path of exactly that length can be bound.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let name = "s".repeat(MAX_UNIX_PATH - base.len() - 1);
        let path = format!("{base}/{name}");
        assert_eq!(path.len(), MAX_UNIX_PATH);
        std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    }

    #[test]
    fn test_display() {
        assert_eq!(ep("tcp:[::1]:7").to_string(), "tcp:[::1]:7");
        assert_eq!(ep("unix:/a/b").to_string(), "unix:/a/b");
        assert_eq!(ep("udp:h:1").to_string(), "udp:h:1");
        assert_eq!(ep("tls:[::1]:7").to_string(), "tls:[::1]:7");
        assert_eq!(ep("tls:h:1").transport(), "tls");
        assert!(!ep("tls:h:1").is_datagram());
        assert_eq!(ep("unix-dgram:/d").to_string(), "unix-dgram:/d");
    }

    #[test]
    fn test_resolve() {
        let addrs = ep("tcp:127.0.0.1:7000").resolve().unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:7000".parse().unwrap()]);
        let addrs = ep("udp:[::1]:9").resolve().unwrap();
        assert_eq!(addrs, vec!["[::1]:9".parse().unwrap()]);
        let err = ep("unix:/x").resolve().unwrap_err().to_string();
        assert!(err.contains("cannot resolve unix:/x"), "{err}");
        let err = ep("tcp:no-such-host.invalid:80")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot resolve tcp:no-such-host.invalid:80"),
            "{err}"
        );
    }

    #[test]
    fn test_endpoints_of_socket_addresses() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(Endpoint::tcp_addr(v6).to_string(), "tcp:[::1]:80");
        let v4: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(Endpoint::udp_addr(v4).to_string(), "udp:10.0.0.1:5");
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
        ]
    }

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        let path = "[a-zA-Z0-9_./ -]{1,60}";
        prop_oneof![
            path.prop_map(|p| Endpoint::Unix(p.into())),
            path.prop_map(|p| Endpoint::UnixDatagram(p.into())),
            (host(), any::<u16>()).prop_map(|(h, p)| Endpoint::Tcp(h, p)),
            (host(), any::<u16>()).prop_map(|(h, p)| Endpoint::Tls(h, p)),
            (host(), any::<u16>()).prop_map(|(h, p)| Endpoint::Udp(h, p)),
        ]
    }

    proptest! {
        #[test]
        fn prop_display_parse_round_trip(e in endpoint()) {
            let text = e.to_string();
            prop_assert_eq!(text.parse::<Endpoint>(), Ok(e));
        }

        #[test]
        fn prop_parse_never_panics_and_reprints(s in "\\PC{0,40}") {
            if let Ok(e) = s.parse::<Endpoint>() {
                // Whatever parsed prints as something that parses to the same value.
                prop_assert_eq!(e.to_string().parse::<Endpoint>(), Ok(e));
            }
        }
    }
}
