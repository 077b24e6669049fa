//! The settings of a TLS server and client, read from PEM files into rustls
//! configurations, and the verifier that lets in only allowed client identities.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use super::alpn_protocols;
use super::identity::TlsIdentity;
use super::session::{Session, TlsFailure};

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

#[cfg(test)]
mod test {
    use super::*;
    use wirecall_tests::tls::TestCa;

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
}
