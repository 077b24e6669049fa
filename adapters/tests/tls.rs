//! TLS in-process: a server built with `listen_tls` and clients with settings the tests
//! make with rustls directly: ALPN that names another protocol is refused in the
//! handshake, TLS 1.2 only when the server allows it, and the library's errors say what
//! failed. Certificates come from the test helpers (rcgen), in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use wirecall::tls::alpn_protocols;
use wirecall::{
    Client, ClientConfig, Endpoint, Error, ServerBuilder, ServerConfig, ShutdownHandle,
    TlsConnector, TlsServerConfig,
};
use wirecall_tests::tls::TestCa;

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    endpoint: Endpoint,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<Result<(), Error>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

fn start(tls: TlsServerConfig) -> Running {
    let server = ServerBuilder::new(ServerConfig::default())
        .function("echo", |b| Ok(b.to_vec()))
        .listen_tls("tls:127.0.0.1:0".parse().unwrap(), tls)
        .build()
        .unwrap();
    let endpoint = server.endpoints()[0].clone();
    assert_eq!(endpoint.transport(), "tls");
    let stop = server.shutdown_handle();
    let thread = Some(thread::spawn(move || server.run()));
    Running {
        endpoint,
        stop,
        thread,
    }
}

/// A rustls client configuration trusting `ca`, with these versions and ALPN names.
fn client_tls(
    ca: &std::path::Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)] // ring, as the library uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    TlsConnector::from_rustls(Arc::new(config))
}

#[test]
fn alpn_and_versions_are_checked_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "lib").unwrap();
    let cert = ca.issue("server", &["127.0.0.1"], None).unwrap();
    let server = start(TlsServerConfig::new(&cert.cert, &cert.key));
    let tls13 = &[&rustls::version::TLS13];

    // wirecall's ALPN names: let in.
    let ok = client_tls(&ca.cert, tls13, alpn_protocols());
    let mut client = Client::connect_tls(&server.endpoint, ClientConfig::default(), &ok).unwrap();
    assert_eq!(client.call("echo", b"hi", Some(WAIT)).unwrap(), b"hi");

    // No ALPN at all: let in too (ALPN is optional for a client).
    let none = client_tls(&ca.cert, tls13, Vec::new());
    let mut client = Client::connect_tls(&server.endpoint, ClientConfig::default(), &none).unwrap();
    assert_eq!(client.call("echo", b"hi", Some(WAIT)).unwrap(), b"hi");

    // Another protocol only: refused by the server's ALPN check.
    let h2 = client_tls(&ca.cert, tls13, vec![b"h2".to_vec()]);
    let err = Client::connect_tls(&server.endpoint, ClientConfig::default(), &h2).unwrap_err();
    assert!(matches!(err, Error::TlsHandshake { .. }), "{err}");
    assert!(err.to_string().contains("no_application_protocol"), "{err}");

    // TLS 1.2 only: refused by a server that was not asked for it...
    let tls12 = client_tls(&ca.cert, &[&rustls::version::TLS12], alpn_protocols());
    let err = Client::connect_tls(&server.endpoint, ClientConfig::default(), &tls12).unwrap_err();
    assert!(matches!(err, Error::TlsHandshake { .. }), "{err}");

    // ...and let in by one that was.
    let server12 = start(TlsServerConfig::new(&cert.cert, &cert.key).allow_tls12());
    let mut client =
        Client::connect_tls(&server12.endpoint, ClientConfig::default(), &tls12).unwrap();
    assert_eq!(client.call("echo", b"v1.2", Some(WAIT)).unwrap(), b"v1.2");
}

#[test]
fn a_tls_endpoint_needs_its_settings() {
    let err = ServerBuilder::new(ServerConfig::default())
        .listen("tls:127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::TlsNotConfigured(_)), "{err}");
    assert!(
        err.to_string().contains("needs a certificate and key"),
        "{err}"
    );
}
