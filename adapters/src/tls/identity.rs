//! The identity of a verified certificate: its subject alternative names, or its CN.

use std::fmt;

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

#[cfg(test)]
mod test {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::path::Path;
    use wirecall_tests::tls::TestCa;

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
}
