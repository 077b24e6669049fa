//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a load balancer sends at
//! the start of a connection to say who its client is, read on listeners that expect one
//! (`--accept-proxy`) before anything of wirecall's.
//!
//! The header is read without consuming what follows it: the connection peeks at the
//! socket ([`peek`]), parses what is there ([`parse`], with the `ppp` crate), and once a
//! whole header is in view takes exactly its bytes ([`consume`]). The client's hello (or
//! a TLS ClientHello) stays in the socket for the connection's ordinary reads, so nothing
//! after the header needs a special path. A listener without the flag never looks for a
//! header: `PROXY ...` sent to it is not wirecall and closes the connection as a protocol
//! error, so a client cannot claim another address.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use ppp::{PartialResult, v1, v2};

/// The longest header taken: a version 1 header is at most 107 bytes, a version 2 header
/// 16 bytes and its addresses (up to 216, for Unix paths) and any TLVs the balancer adds
/// (HAProxy adds none unless told to). A longer one is refused rather than buffered.
pub(super) const MAX_HEADER: usize = 1024;

/// What the bytes at the start of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Parsed {
    /// The start of a header, or nothing yet: wait for more bytes.
    Incomplete,
    /// A whole header of `len` bytes.
    Header(Header),
    /// Not a PROXY header (or one longer than [`MAX_HEADER`]): why, for the log.
    Invalid(String),
}

/// A whole header, as the connection needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Its length in bytes, to take them off the socket.
    pub(super) len: usize,
    /// Its version (1 or 2).
    pub(super) version: u8,
    /// The client it names; `None` for a header that names none: `LOCAL` (the balancer's
    /// own connection, a health check), `UNKNOWN`, or addresses that are not IP.
    pub(super) client: Option<SocketAddr>,
}

/// Parses the first bytes a connection sent.
pub(super) fn parse(bytes: &[u8]) -> Parsed {
    // A version 1 header is one line: judged whole, once its end is in view (the parser
    // takes some cut-off lines, such as one that ends after a separator, as invalid).
    if bytes.starts_with(V1_PREFIX) || V1_PREFIX.starts_with(bytes) {
        let line_end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|at| at.saturating_add(2));
        match line_end {
            None if bytes.len() < V1_MAX => return Parsed::Incomplete,
            None => return too_long(bytes.len()),
            Some(end) => {
                let line = bytes.get(..end).unwrap_or(bytes);
                return match v1::Header::try_from(line) {
                    Ok(header) => version_1(&header),
                    Err(e) => Parsed::Invalid(format!("not a PROXY header ({e})")),
                };
            }
        }
    }
    parse_v2(bytes)
}

/// The start of a version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 header, its `\r\n` included.
const V1_MAX: usize = 107;

/// A whole version 1 header.
fn version_1(header: &v1::Header<'_>) -> Parsed {
    let client = match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    };
    Parsed::Header(Header {
        len: header.header.len(),
        version: 1,
        client,
    })
}

/// Parses what does not start like a version 1 header: a version 2 header or not one.
fn parse_v2(bytes: &[u8]) -> Parsed {
    let result = v2::Header::try_from(bytes);
    if result.is_incomplete() {
        return incomplete(&result, bytes.len());
    }
    match result {
        Ok(header) => {
            let client = match (header.command, header.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            if header.len() > MAX_HEADER {
                return too_long(header.len());
            }
            Parsed::Header(Header {
                len: header.len(),
                version: 2,
                client,
            })
        }
        Err(v2::ParseError::Prefix) => {
            Parsed::Invalid("not a PROXY header (neither version 1 nor 2)".to_owned())
        }
        Err(e) => Parsed::Invalid(format!("not a PROXY v2 header ({e})")),
    }
}

/// An incomplete header: wait, unless it can no longer fit in [`MAX_HEADER`].
fn incomplete(result: &Result<v2::Header<'_>, v2::ParseError>, have: usize) -> Parsed {
    if let Err(v2::ParseError::Partial(_, length)) = result {
        let whole = length.saturating_add(16);
        if whole > MAX_HEADER {
            return too_long(whole);
        }
    }
    if have >= MAX_HEADER {
        return too_long(have);
    }
    Parsed::Incomplete
}

fn too_long(len: usize) -> Parsed {
    Parsed::Invalid(format!(
        "a PROXY header of {len} bytes or more, above the {MAX_HEADER} taken"
    ))
}

/// Copies what the socket holds (up to `buf`'s length) without taking it off the socket.
/// `Ok(0)` is the end of the stream.
pub(super) fn peek(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(socket, &mut *buf, rustix::net::RecvFlags::PEEK) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes the header's `len` bytes off the socket, which [`peek`] saw there.
pub(super) fn consume(socket: &impl AsFd, len: usize) -> io::Result<()> {
    let mut buf = [0u8; MAX_HEADER];
    let Some(buf) = buf.get_mut(..len) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "PROXY header too long",
        ));
    };
    let mut taken = 0;
    while taken < len {
        let Some(rest) = buf.get_mut(taken..) else {
            break;
        };
        match rustix::net::recv(socket, rest, rustix::net::RecvFlags::empty()) {
            Ok((0, _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok((n, _)) => taken = taken.saturating_add(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    const V1: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 7000\r\n";

    /// A version 2 header: PROXY over TCP/IPv4 from 192.0.2.7:40000 to 198.51.100.1:7000,
    /// then `tlv` (type, value) entries.
    fn v2(command: u8, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&7000u16.to_be_bytes());
        for (kind, value) in tlvs {
            body.push(*kind);
            body.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            body.extend_from_slice(value);
        }
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.push(0x20 | command);
        header.push(0x11);
        header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        header.extend_from_slice(&body);
        header
    }

    fn client() -> Option<SocketAddr> {
        Some("192.0.2.7:40000".parse().unwrap())
    }

    #[test]
    fn test_version_1_names_the_client_and_leaves_what_follows() {
        let mut bytes = V1.to_vec();
        bytes.extend_from_slice(b"hello after");
        assert_eq!(
            parse(&bytes),
            Parsed::Header(Header {
                len: V1.len(),
                version: 1,
                client: client()
            })
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 7000\r\n";
        let Parsed::Header(h) = parse(v6) else {
            panic!("{:?}", parse(v6))
        };
        assert_eq!(h.client, Some("[2001:db8::7]:40000".parse().unwrap()));
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(unknown),
            Parsed::Header(Header {
                len: unknown.len(),
                version: 1,
                client: None
            })
        );
    }

    #[test]
    fn test_version_2_proxy_and_local() {
        let header = v2(1, &[(0x04, b"\0\0\0\0")]);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x01\x02");
        assert_eq!(
            parse(&bytes),
            Parsed::Header(Header {
                len: header.len(),
                version: 2,
                client: client()
            })
        );
        // LOCAL: the balancer speaking for itself (a health check): no client named.
        let local = v2(0, &[]);
        assert_eq!(
            parse(&local),
            Parsed::Header(Header {
                len: local.len(),
                version: 2,
                client: None
            })
        );
    }

    #[test]
    fn test_every_prefix_of_a_header_waits() {
        for whole in [V1.to_vec(), v2(1, &[])] {
            for end in 0..whole.len() {
                assert_eq!(parse(&whole[..end]), Parsed::Incomplete, "{end} bytes");
            }
        }
    }

    #[test]
    fn test_what_is_not_a_header_is_refused_at_once() {
        for bytes in [
            &b"WCALL hello"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 nonsense 1.2.3.4 1 2\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(
                matches!(parse(bytes), Parsed::Invalid(_)),
                "{bytes:?}: {:?}",
                parse(bytes)
            );
        }
    }

    #[test]
    fn test_a_header_longer_than_the_bound_is_refused_before_it_arrives() {
        let big = vec![0u8; MAX_HEADER];
        let header = v2(1, &[(0xE0, &big)]);
        // Its first 16 bytes already say how long it is.
        assert!(matches!(parse(&header[..16]), Parsed::Invalid(_)));
        assert!(matches!(parse(&header), Parsed::Invalid(_)));
        // A text line with no end in the first MAX_HEADER bytes.
        let mut line = b"PROXY TCP4 ".to_vec();
        line.resize(MAX_HEADER, b'1');
        assert!(matches!(parse(&line), Parsed::Invalid(_)));
    }

    proptest! {
        #[test]
        fn test_any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Parsed::Header(h) = parse(&bytes) {
                prop_assert!(h.len <= bytes.len() && h.len <= MAX_HEADER);
            }
        }
    }
}
