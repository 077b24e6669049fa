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

mod config;
mod identity;
mod session;

pub use self::config::{TlsClientConfig, TlsConnector, TlsError, TlsServerConfig};
pub use self::identity::{IdentityName, TlsIdentity};
pub use self::session::{Session, TlsFailure, failure_of};

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

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn test_alpn_names_the_protocol_versions() {
        let names = alpn_protocols();
        assert_eq!(names.first().unwrap(), b"wirecall/2");
        assert_eq!(names.last().unwrap(), b"wirecall/1");
    }
}
