//! TLS on `tls:` endpoints, with [rustls](https://docs.rs/rustls): the settings of a
//! server ([`TlsServerConfig`]) and a client ([`TlsClientConfig`]), the identity of a
//! verified client certificate ([`TlsIdentity`]), and the sans-IO session both the event
//! loop and the blocking client drive.
//!
//! TLS sits below the framing: the bytes of wirecall's frames are TLS's plaintext, and
//! nothing of the protocol changes. TLS 1.3 only, unless TLS 1.2 is asked for. Both sides
//! offer the ALPN protocols of [`alpn_protocols`] (`wirecall/<version>`); a peer that offers only other
//! protocols is refused in the handshake.
//!
//! The session never blocks and never waits: the caller hands it a non-blocking socket,
//! and [`Session::read`] drains that socket before it returns less than was asked for, so
//! a short read still means "the socket is empty" (what an edge-triggered event loop relies
//! on). Ciphertext the socket did not take stays in the session until
//! [`Session::flush`] is called again ([`Session::wants_write`] says whether any is left).
//!
//! ```no_run
//! use wirecall::tls::{TlsClientConfig, TlsServerConfig};
//!
//! // A server with a certificate, requiring client certificates from one CA, and
//! // letting only `alice.example` in.
//! let server = TlsServerConfig::new("cert.pem", "key.pem")
//!     .client_ca("clients-ca.pem")
//!     .allow_client("alice.example");
//! // A client trusting one CA (without `ca`, the system's store), with its certificate.
//! let client = TlsClientConfig::new()
//!     .ca("ca.pem")
//!     .client_cert("alice.pem", "alice-key.pem")
//!     .build()?;
//! # let _ = (server, client);
//! # Ok::<(), wirecall::tls::TlsError>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::stream::{interrupted, would_block};

/// The rustls this module uses, for configurations made by hand
/// ([`TlsConnector::from_rustls`]) and for other drivers.
pub use rustls;

/// The ALPN protocol names both sides offer, most preferred first: `wirecall/<version>`
/// for each protocol version the core speaks (`wirecall/2`, `wirecall/1`). The version
/// itself is still agreed in wirecall's hello; ALPN only keeps other protocols out.
#[must_use]
pub fn alpn_protocols() -> Vec<Vec<u8>> {
    use wirecall_core::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION)
        .rev()
        .map(|v| format!("wirecall/{v}").into_bytes())
        .collect()
}

/// Why TLS settings could not be used. Each message names the file or setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing of the kind expected.
    #[error("cannot read the {what} from {}: {source}", path.display())]
    Pem {
        /// What the file should hold ("certificate chain", "private key", "CA certificates").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file with no certificate in it.
    #[error("{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate rustls would not take as a trust anchor.
    #[error("{} holds a CA certificate that cannot be used: {source}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// No trust roots could be loaded from the system's store (and none were given).
    #[error(
        "no trusted CA certificates in the system's store ({0}); give the server's CA with --ca FILE"
    )]
    NoSystemRoots(String),
    /// rustls refused the certificate and key (e.g. a key that is not the certificate's).
    #[error("cannot use the certificate and key: {0}")]
    Config(rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    #[error("cannot verify client certificates with {}: {source}", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::server::VerifierBuilderError,
    },
    /// An allowlist of client identities without a CA to verify client certificates with.
    #[error("allowed client identities need client certificates: give the CA that signs them")]
    AllowListWithoutCa,
}

/// A server's TLS settings: its certificate chain and key (PEM files), and optionally the
/// CA that client certificates must verify against (mutual TLS) and the client identities
/// allowed in. The files are read when the server is built
/// ([`ServerBuilder::listen_tls`](crate::ServerBuilder::listen_tls)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    cert_chain: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    allowed: Vec<String>,
    tls12: bool,
}

impl TlsServerConfig {
    /// The certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1),
    /// both PEM files.
    #[must_use]
    pub fn new(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert_chain: cert_chain.into(),
            key: key.into(),
            client_ca: None,
            allowed: Vec::new(),
            tls12: false,
        }
    }

    /// Requires a client certificate that verifies against the CA certificates in this PEM
    /// file (mutual TLS); a client without one is refused in the handshake.
    #[must_use]
    pub fn client_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(path.into());
        self
    }

    /// Lets in a verified client whose identity holds `name` (a DNS name or URI of its
    /// certificate's subject alternative names, or its subject's common name when it has
    /// none). Once any name is allowed, a verified client with none of them is refused in
    /// the handshake (a TLS `access_denied` alert), before any call runs. Needs
    /// [`client_ca`](Self::client_ca).
    #[must_use]
    pub fn allow_client(mut self, name: impl Into<String>) -> Self {
        self.allowed.push(name.into());
        self
    }

    /// Accepts TLS 1.2 as well as TLS 1.3.
    #[must_use]
    pub fn allow_tls12(mut self) -> Self {
        self.tls12 = true;
        self
    }

    /// Reads the files and makes the rustls configuration.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds nothing usable, a key that does not fit the
    /// certificate, an allowlist without a client CA.
    pub fn build(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = read_certs(&self.cert_chain, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|source| TlsError::Pem {
            what: "private key",
            path: self.key.clone(),
            source,
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(self.tls12))
            .map_err(TlsError::Config)?;
        let builder = match &self.client_ca {
            None if !self.allowed.is_empty() => return Err(TlsError::AllowListWithoutCa),
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = read_roots(path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|source| TlsError::ClientVerifier {
                            path: path.clone(),
                            source,
                        })?;
                let verifier: Arc<dyn ClientCertVerifier> = if self.allowed.is_empty() {
                    verifier
                } else {
                    Arc::new(AllowList {
                        inner: verifier,
                        allowed: self.allowed.clone(),
                    })
                };
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = alpn_protocols();
        Ok(Arc::new(config))
    }
}

/// A client's TLS settings: the CA certificates it trusts (a PEM file, or the system's
/// store) and optionally its own certificate and key (for servers that require one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClientConfig {
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    tls12: bool,
}

impl TlsClientConfig {
    /// Trusts the system's certificate store, sends no client certificate, TLS 1.3 only.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in this PEM file instead of the system's store.
    #[must_use]
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Presents this certificate chain and key (PEM files) when the server asks for one.
    #[must_use]
    pub fn client_cert(mut self, cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert_chain.into(), key.into()));
        self
    }

    /// Accepts TLS 1.2 as well as TLS 1.3.
    #[must_use]
    pub fn allow_tls12(mut self) -> Self {
        self.tls12 = true;
        self
    }

    /// Reads the files (or the system's store) into a [`TlsConnector`], which connects any
    /// number of clients.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds nothing usable, a key that does not fit the
    /// certificate, no usable CA certificate in the system's store.
    pub fn build(&self) -> Result<TlsConnector, TlsError> {
        let roots = match &self.ca {
            Some(path) => read_roots(path)?,
            None => system_roots()?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(self.tls12))
            .map_err(TlsError::Config)?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = read_certs(cert, "certificate chain")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
                    what: "private key",
                    path: key.clone(),
                    source,
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(TlsError::Config)?
            }
        };
        config.alpn_protocols = alpn_protocols();
        Ok(TlsConnector(Arc::new(config)))
    }
}

/// A client's TLS configuration, ready to connect with
/// ([`Client::connect_tls`](crate::Client::connect_tls)); cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsConnector(Arc<rustls::ClientConfig>);

impl TlsConnector {
    /// Uses a rustls configuration made elsewhere (its ALPN list is used as it is: offer
    /// [`alpn_protocols`] to be let in by a wirecall server that checks it).
    #[must_use]
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        Self(config)
    }

    /// A client session for `host` (its name is sent as SNI and the server's certificate
    /// must be valid for it; an IP address must be in the certificate's IP SANs).
    pub fn session(&self, host: &str) -> io::Result<Session> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(Arc::clone(&self.0), name)
            .map_err(|e| io::Error::other(TlsFailure::of(e)))?;
        Ok(Session::new(rustls::Connection::Client(conn)))
    }
}

/// The crypto provider: *ring*, which builds with a C compiler alone (no cmake). rustls
/// marks it deprecated because *ring* has no post-quantum key exchange; the key exchange
/// is X25519 (or P-256/P-384) then.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 alone.
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// TLS 1.3, and 1.2 when asked for.
fn versions(tls12: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls12 {
        rustls::ALL_VERSIONS
    } else {
        TLS13_ONLY
    }
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The CA certificates of a PEM file, as trust roots.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "CA certificates")? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The system's trust roots (those rustls can use; the others are skipped).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// The identity of a verified client certificate: the DNS names and URIs of its subject
/// alternative names or, when it has none, its subject's common name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsIdentity {
    names: Vec<IdentityName>,
}

/// One name of a [`TlsIdentity`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityName {
    /// A DNS name of the subject alternative names.
    Dns(String),
    /// A URI of the subject alternative names (e.g. a SPIFFE ID).
    Uri(String),
    /// The subject's common name (only when there are no DNS or URI names).
    CommonName(String),
}

impl IdentityName {
    /// The name itself, without its kind.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Dns(s) | Self::Uri(s) | Self::CommonName(s) => s,
        }
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(s) => write!(f, "dns:{s}"),
            Self::Uri(s) => write!(f, "uri:{s}"),
            Self::CommonName(s) => write!(f, "cn:{s}"),
        }
    }
}

impl TlsIdentity {
    /// The identity of a DER certificate; `None` when it cannot be parsed or names nothing.
    #[must_use]
    pub fn of_certificate(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => names.push(IdentityName::Dns((*n).to_owned())),
                    GeneralName::URI(n) => names.push(IdentityName::Uri((*n).to_owned())),
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            names.extend(
                cert.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(|cn| IdentityName::CommonName(cn.to_owned())),
            );
        }
        (!names.is_empty()).then_some(Self { names })
    }

    /// Every name, DNS names and URIs first as the certificate lists them.
    #[must_use]
    pub fn names(&self) -> &[IdentityName] {
        &self.names
    }

    /// `true` when one of the names is `name` (compared exactly; DNS names ignoring case).
    #[must_use]
    pub fn has_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| match n {
            IdentityName::Dns(d) => d.eq_ignore_ascii_case(name),
            other => other.as_str() == name,
        })
    }
}

impl fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}")?;
        }
        Ok(())
    }
}

/// A client-certificate verifier that lets in only listed identities, once the
/// certificate verifies.
#[derive(Debug)]
struct AllowList {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowList {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match TlsIdentity::of_certificate(end_entity) {
            Some(identity) if self.allowed.iter().any(|a| identity.has_name(a)) => Ok(verified),
            identity => {
                log::debug!(
                    "client certificate of {} is not among the allowed identities",
                    identity.map_or_else(|| "no name".to_owned(), |i| i.to_string())
                );
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a TLS session ended in failure: the handshake failed (a certificate that does not
/// verify, a peer that does not speak TLS, an alert from the peer), or the peer's verified
/// identity is not allowed. Displays in words that say what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFailure {
    error: rustls::Error,
}

impl TlsFailure {
    fn of(error: rustls::Error) -> Self {
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
/// [module docs](self).
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

    fn new(conn: rustls::Connection) -> Self {
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
    use std::os::unix::net::UnixStream;
    use wirecall_tests::tls::TestCa;

    #[test]
    fn test_alpn_names_the_protocol_versions() {
        let names = alpn_protocols();
        assert_eq!(names.first().unwrap(), b"wirecall/2");
        assert_eq!(names.last().unwrap(), b"wirecall/1");
    }

    fn der_of(path: &Path) -> Vec<u8> {
        CertificateDer::from_pem_file(path).unwrap().to_vec()
    }

    #[test]
    fn test_identity_is_the_san_names_or_else_the_cn() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "id").unwrap();
        let both = ca
            .issue("both", &["a.example", "spiffe://x/alice"], Some("ignored"))
            .unwrap();
        let id = TlsIdentity::of_certificate(&der_of(&both.cert)).unwrap();
        assert_eq!(
            id.names(),
            &[
                IdentityName::Dns("a.example".into()),
                IdentityName::Uri("spiffe://x/alice".into())
            ]
        );
        assert_eq!(id.to_string(), "dns:a.example, uri:spiffe://x/alice");
        assert!(id.has_name("A.Example"));
        assert!(id.has_name("spiffe://x/alice"));
        assert!(!id.has_name("ignored"));

        let cn_only = ca.issue("cn", &[], Some("bob")).unwrap();
        let id = TlsIdentity::of_certificate(&der_of(&cn_only.cert)).unwrap();
        assert_eq!(id.to_string(), "cn:bob");
        assert!(id.has_name("bob"));

        assert_eq!(TlsIdentity::of_certificate(b"not a certificate"), None);
    }

    #[test]
    fn test_bad_files_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "f").unwrap();
        let server = ca.issue("s", &["localhost"], None).unwrap();
        let other = ca.issue("o", &["localhost"], None).unwrap();
        let missing = dir.path().join("missing.pem");
        let err = TlsServerConfig::new(&missing, &server.key)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = TlsServerConfig::new(&server.key, &server.key)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("holds no certificate"), "{err}");
        // A key that is not the certificate's.
        let err = TlsServerConfig::new(&server.cert, &other.key)
            .build()
            .unwrap_err();
        assert!(matches!(err, TlsError::Config(_)), "{err}");
        let err = TlsServerConfig::new(&server.cert, &server.key)
            .allow_client("x")
            .build()
            .unwrap_err();
        assert!(matches!(err, TlsError::AllowListWithoutCa), "{err}");
        let err = TlsClientConfig::new().ca(&missing).build().unwrap_err();
        assert!(err.to_string().contains("CA certificates"), "{err}");
    }

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
