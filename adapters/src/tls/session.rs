//! The sans-IO TLS session a driver moves bytes through, and why one failed.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::CertificateError;

use super::identity::TlsIdentity;
use crate::stream::{interrupted, would_block};

/// Why a TLS session ended in failure: the handshake failed (a certificate that does not
/// verify, a peer that does not speak TLS, an alert from the peer), or the peer's verified
/// identity is not allowed. Displays in words that say what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFailure {
    error: rustls::Error,
}

impl TlsFailure {
    pub(super) fn of(error: rustls::Error) -> Self {
        Self { error }
    }

    /// rustls's error.
    #[must_use]
    pub fn error(&self) -> &rustls::Error {
        &self.error
    }

    /// The peer's certificate verified but its identity is not allowed (on a server with
    /// an allowlist).
    #[must_use]
    pub fn is_refused_identity(&self) -> bool {
        matches!(
            self.error,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        )
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use rustls::AlertDescription as A;
        match &self.error {
            e if self.is_refused_identity() => {
                write!(f, "the client's identity is not allowed ({e})")
            }
            rustls::Error::AlertReceived(A::AccessDenied) => {
                f.write_str("the server refused our certificate's identity (TLS alert access_denied)")
            }
            rustls::Error::AlertReceived(A::CertificateRequired) => f.write_str(
                "the server requires a client certificate (TLS alert certificate_required): give --cert and --key",
            ),
            rustls::Error::AlertReceived(
                alert @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown),
            ) => write!(
                f,
                "the server did not accept our client certificate (TLS alert {alert:?})"
            ),
            rustls::Error::AlertReceived(A::NoApplicationProtocol) => write!(
                f,
                "the peer speaks none of the protocols offered (ALPN wirecall/<version>; TLS alert \
                 no_application_protocol)"
            ),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => f.write_str(
                "the peer's certificate does not verify: it is not signed by a trusted CA \
                 (UnknownIssuer)",
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
            ) => f.write_str(
                "the peer's certificate does not verify: its signature does not fit any \
                 trusted CA's key (is it signed by a trusted CA?)",
            ),
            rustls::Error::InvalidCertificate(e) => {
                write!(f, "the peer's certificate does not verify: {e}")
            }
            rustls::Error::AlertReceived(alert) => {
                write!(f, "the peer ended the handshake (TLS alert {alert:?})")
            }
            rustls::Error::NoCertificatesPresented => {
                f.write_str("the client presented no certificate, and one is required")
            }
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                write!(f, "the peer does not speak TLS ({})", self.error)
            }
            e => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsFailure {}

/// The [`TlsFailure`] an I/O error from a [`Session`] carries, if any.
pub fn failure_of(e: &io::Error) -> Option<&TlsFailure> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsFailure>())
}

/// Records read from the socket in one [`Session::read`] without any plaintext among
/// them before the peer counts as hostile: a real peer sends a few handshake records, then
/// data.
const MAX_EMPTY_READS: usize = 256;

/// A rustls connection (server or client) with what a driver needs to know about it: the
/// sans-IO session both the mio loop and the blocking client drive, and any other driver
/// built on readiness and non-blocking `read`/`write` (the tokio driver). See the
/// [module docs](crate::tls).
pub struct Session {
    conn: rustls::Connection,
    /// The socket reported its end of stream.
    eof: bool,
    /// The handshake failed or a record did not verify: nothing more is read or written.
    failure: Option<TlsFailure>,
    /// The handshake is done (and `identity` set, if the peer had a certificate).
    handshaken: bool,
    identity: Option<TlsIdentity>,
    close_sent: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("handshaken", &self.handshaken)
            .field("identity", &self.identity)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A server session from the listener's configuration.
    pub fn server(config: &Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(Arc::clone(config))
            .map_err(|e| io::Error::other(TlsFailure::of(e)))?;
        Ok(Self::new(rustls::Connection::Server(conn)))
    }

    pub(super) fn new(conn: rustls::Connection) -> Self {
        Self {
            conn,
            eof: false,
            failure: None,
            handshaken: false,
            identity: None,
            close_sent: false,
        }
    }

    /// The peer's verified identity, once the handshake is done (a client certificate the
    /// server verified, or the server's certificate on the client).
    pub fn identity(&self) -> Option<&TlsIdentity> {
        self.identity.as_ref()
    }

    /// Why the session failed, if it did.
    pub fn failure(&self) -> Option<&TlsFailure> {
        self.failure.as_ref()
    }

    /// The handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Ciphertext is waiting to be written (call [`flush`](Self::flush) when the socket
    /// has room).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Reads plaintext into `buf`, reading the socket as needed: returns a count short of
    /// `buf.len()` only once the socket would block (or has ended), so a short read means
    /// the socket is empty. `Ok(0)` is the end of the stream; `WouldBlock` when there is
    /// nothing yet. A TLS error ends the session: its alert is sent (as far as the socket
    /// takes it) and the error carries a [`TlsFailure`].
    pub fn read(&mut self, io: &mut (impl Read + Write), buf: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, failure.clone()));
        }
        let mut filled = 0;
        let mut empty_reads = 0;
        loop {
            let room = buf.get_mut(filled..).unwrap_or_default();
            if room.is_empty() {
                return Ok(filled);
            }
            match self.conn.reader().read(room) {
                Ok(0) => return Ok(filled), // close_notify: the end, after what was read
                Ok(n) => {
                    filled = filled.saturating_add(n);
                    empty_reads = 0;
                    continue;
                }
                Err(e) if would_block(&e) => {}
                // The transport ended without close_notify: an end all the same (the
                // protocol above tells a truncated frame from a clean close).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(filled);
            }
            match self.conn.read_tls(io) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if would_block(&e) => {
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            if let Err(error) = self.conn.process_new_packets() {
                return Err(self.fail(io, error));
            }
            self.check_handshake();
            // Handshake replies (and key updates) go out as they are made. A failed write
            // is the writer's to report: the peer may have closed its reading side after
            // sending what is still to be read here.
            let _ = self.flush(io);
            empty_reads += 1;
            if filled == 0 && empty_reads > MAX_EMPTY_READS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the peer sends TLS records without data",
                ));
            }
        }
    }

    /// Takes plaintext to send (as much as the session's buffer holds) and writes
    /// ciphertext until the socket would block; `WouldBlock` when it took none.
    pub fn write(&mut self, io: &mut (impl Read + Write), buf: &[u8]) -> io::Result<usize> {
        if let Some(failure) = self.failure.clone() {
            // Send the alert if it is still queued, then refuse.
            let _ = self.flush(io);
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, failure));
        }
        let n = self.conn.writer().write(buf)?;
        self.flush(io)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes pending ciphertext until none is left or the socket would block; `true` if
    /// any went out.
    pub fn flush(&mut self, io: &mut impl Write) -> io::Result<bool> {
        let mut progress = false;
        while self.conn.wants_write() {
            match self.conn.write_tls(io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => progress = true,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    /// Queues close_notify (once) and flushes; `true` once nothing is left to write, so
    /// the transport's write side can be shut.
    pub fn close(&mut self, io: &mut impl Write) -> io::Result<bool> {
        if !self.close_sent && self.failure.is_none() {
            self.conn.send_close_notify();
            self.close_sent = true;
        }
        self.flush(io)?;
        Ok(!self.conn.wants_write())
    }

    /// Drives the handshake through the socket without waiting (for a client that wants
    /// it done before it sends): `Ok(true)` once done.
    pub fn handshake_step(&mut self, io: &mut (impl Read + Write)) -> io::Result<bool> {
        self.flush(io)?;
        while self.conn.is_handshaking() {
            match self.conn.read_tls(io) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            if let Err(error) = self.conn.process_new_packets() {
                return Err(self.fail(io, error));
            }
            self.flush(io)?;
        }
        self.check_handshake();
        Ok(true)
    }

    /// Notes the end of the handshake and the peer's identity.
    fn check_handshake(&mut self) {
        if self.handshaken || self.conn.is_handshaking() {
            return;
        }
        self.handshaken = true;
        self.identity = self
            .conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| TlsIdentity::of_certificate(leaf));
    }

    /// The session failed with `error`: sends the alert rustls queued (as far as the socket
    /// takes it) and returns the error to report.
    fn fail(&mut self, io: &mut impl Write, error: rustls::Error) -> io::Error {
        let _ = self.flush(io);
        let failure = TlsFailure::of(error);
        self.failure = Some(failure.clone());
        io::Error::new(io::ErrorKind::InvalidData, failure)
    }

    /// The protocol version and ALPN protocol agreed, for log lines.
    pub fn describe(&self) -> String {
        let version = self
            .conn
            .protocol_version()
            .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
        let alpn = self.conn.alpn_protocol().map_or_else(
            || "no ALPN".to_owned(),
            |p| String::from_utf8_lossy(p).into_owned(),
        );
        format!("{version}, {alpn}")
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::tls::{TlsClientConfig, TlsServerConfig};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use wirecall_tests::tls::TestCa;

    /// A client and a server session over a non-blocking socket pair, handshake done.
    fn pair(dir: &Path) -> (Session, UnixStream, Session, UnixStream) {
        let ca = TestCa::new(dir, "pair").unwrap();
        let cert = ca.issue("server", &["localhost"], None).unwrap();
        let server_config = TlsServerConfig::new(&cert.cert, &cert.key).build().unwrap();
        let connector = TlsClientConfig::new().ca(&ca.cert).build().unwrap();
        let (c, s) = UnixStream::pair().unwrap();
        c.set_nonblocking(true).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut client = connector.session("localhost").unwrap();
        let mut server = Session::server(&server_config).unwrap();
        let (mut c_io, mut s_io) = (c, s);
        let mut scratch = [0u8; 64];
        for _ in 0..100 {
            let done = client.handshake_step(&mut c_io).unwrap();
            match server.read(&mut s_io, &mut scratch) {
                Err(e) if would_block(&e) => {}
                other => panic!("no plaintext expected yet: {other:?}"),
            }
            if done && !server.is_handshaking() {
                return (client, c_io, server, s_io);
            }
        }
        panic!("the handshake did not finish");
    }

    /// `true` when the socket has nothing waiting.
    fn socket_empty(socket: &UnixStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            rustix::net::recv(
                socket,
                &mut byte,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT
            ),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    #[test]
    fn test_a_short_read_means_the_socket_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, mut c_io, mut server, mut s_io) = pair(dir.path());
        assert_eq!(server.describe(), "TLSv1_3, wirecall/2");
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        let mut sent = 0;
        let mut received = Vec::new();
        let mut buf = [0u8; 1000];
        let mut short_reads = 0;
        for _ in 0..100_000 {
            if sent < data.len() {
                match client.write(&mut c_io, data.get(sent..).unwrap()) {
                    Ok(n) => sent += n,
                    Err(e) if would_block(&e) => {}
                    Err(e) => panic!("{e}"),
                }
            } else {
                client.flush(&mut c_io).unwrap();
            }
            loop {
                match server.read(&mut s_io, &mut buf) {
                    Ok(n) => {
                        received.extend_from_slice(buf.get(..n).unwrap());
                        if n < buf.len() {
                            // The promise: a short read found the socket empty.
                            assert!(socket_empty(&s_io), "short read with bytes waiting");
                            short_reads += 1;
                            break;
                        }
                    }
                    Err(e) if would_block(&e) => {
                        assert!(socket_empty(&s_io));
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            if received.len() == data.len() {
                break;
            }
        }
        assert!(
            received == data,
            "{} of {} bytes",
            received.len(),
            data.len()
        );
        assert!(short_reads > 0);
    }

    #[test]
    fn test_ciphertext_the_socket_refuses_waits_for_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, mut c_io, mut server, mut s_io) = pair(dir.path());
        // The server writes until the socket is full: what rustls holds waits.
        let chunk = [7u8; 16 * 1024];
        let mut sent = 0usize;
        loop {
            match server.write(&mut s_io, &chunk) {
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(sent < 64 << 20, "the socket never filled");
        }
        assert!(server.wants_write());
        // The client reads it all; the server flushes as room comes.
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..100_000 {
            match client.read(&mut c_io, &mut buf) {
                Ok(n) => got += n,
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("{e}"),
            }
            server.flush(&mut s_io).unwrap();
            if got == sent {
                break;
            }
        }
        assert_eq!(got, sent);
        assert!(!server.wants_write());
        // close_notify: the reader sees the end after the data.
        assert!(server.close(&mut s_io).unwrap());
        let mut end = None;
        for _ in 0..100 {
            match client.read(&mut c_io, &mut buf) {
                Ok(0) => {
                    end = Some(());
                    break;
                }
                Ok(n) => panic!("{n} more bytes"),
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(end.is_some(), "no end of stream after close_notify");
    }

    #[test]
    fn test_not_tls_fails_the_session() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "n").unwrap();
        let cert = ca.issue("server", &["localhost"], None).unwrap();
        let config = TlsServerConfig::new(&cert.cert, &cert.key).build().unwrap();
        let mut server = Session::server(&config).unwrap();
        let (mut peer, mut s_io) = UnixStream::pair().unwrap();
        s_io.set_nonblocking(true).unwrap();
        peer.write_all(b"WCALL hello, in plaintext\r\n").unwrap();
        let mut buf = [0u8; 64];
        let err = server.read(&mut s_io, &mut buf).unwrap_err();
        let failure = failure_of(&err).unwrap();
        assert!(!failure.is_refused_identity());
        assert!(
            failure.to_string().contains("does not speak TLS"),
            "{failure}"
        );
        assert!(server.failure().is_some());
        // Nothing more is read or written.
        assert!(server.read(&mut s_io, &mut buf).is_err());
        assert!(server.write(&mut s_io, b"hello").is_err());
    }
}
