//! Certificates for the TLS tests, made by the test itself with rcgen and written as PEM
//! files into a directory the test owns (a temporary one): no key file is ever committed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A test certificate authority: its certificate in `<dir>/<name>-ca.pem`, and the
/// certificates it issues next to it.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate (PEM), to trust.
    pub cert: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("cert", &self.cert).finish()
    }
}

impl TestCa {
    /// A new CA named `name`, its certificate written into `dir`.
    ///
    /// # Errors
    ///
    /// rcgen failed, or the file could not be written.
    pub fn new(dir: &Path, name: &str) -> Result<Self, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(|e| e.to_string())?;
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).map_err(|e| e.to_string())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cert,
            issuer,
        })
    }

    /// Issues a certificate for `names` (DNS names; IP addresses become IP names; a name
    /// with `://` becomes a URI), usable by servers and clients, with `common_name` as its
    /// subject's CN when given; written as `<dir>/<file>.pem` and `<dir>/<file>-key.pem`.
    ///
    /// # Errors
    ///
    /// rcgen failed, or the files could not be written.
    pub fn issue(
        &self,
        file: &str,
        names: &[&str],
        common_name: Option<&str>,
    ) -> Result<CertFiles, String> {
        let (uris, plain): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.contains("://"));
        let plain: Vec<String> = plain.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(plain).map_err(|e| e.to_string())?;
        for uri in uris {
            let uri = rcgen::string::Ia5String::try_from(uri).map_err(|e| e.to_string())?;
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(&files.key, key.serialize_pem()).map_err(|e| e.to_string())?;
        Ok(files)
    }
}
