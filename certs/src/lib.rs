//! # quiver-certs — a dev CA and node certificates
//!
//! Quiver speaks TLS everywhere (QUIC requires it), so even a laptop demo needs a CA that
//! clients can trust. This crate makes one with rcgen, and node certificates signed by it
//! that serve both as TLS server certificates (clients, REST) and as client certificates
//! (mesh links between nodes, mutual TLS).
//!
//! Everything is PEM. The CA key stays beside the CA certificate so that more node
//! certificates can be issued later: [`Ca::load`] re-creates the issuer from the key.
//! These are *development* certificates; a deployment brings its own.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// File names inside a certificate folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// A node's certificate chain (leaf only).
pub const NODE_CERT: &str = "node.pem";
/// A node's private key.
pub const NODE_KEY: &str = "node.key";

/// What can go wrong making or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or a key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A certificate authority: its certificate and key in PEM.
pub struct Ca {
    /// The CA certificate, what clients and peers trust.
    pub cert_pem: String,
    key: KeyPair,
    params: CertificateParams,
}

/// A node's certificate and key in PEM.
pub struct NodeCert {
    /// Leaf certificate signed by the CA.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Quiver dev CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    /// Makes a new CA named `name`.
    pub fn generate(name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let params = ca_params(name);
        let cert_pem = params.clone().self_signed(&key)?.pem();
        Ok(Self {
            cert_pem,
            key,
            params,
        })
    }

    /// Loads a CA saved by [`Ca::save`]. The issuer is rebuilt from the key and name, which
    /// is all a signature needs; the saved certificate is what peers keep trusting.
    pub fn load(dir: &Path, name: &str) -> Result<Self, CertError> {
        let cert_pem = read(&dir.join(CA_CERT))?;
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?)?;
        Ok(Self {
            cert_pem,
            key,
            params: ca_params(name),
        })
    }

    /// Writes `ca.pem` and `ca.key` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join(CA_CERT), &self.cert_pem)?;
        write_private(&dir.join(CA_KEY), &self.key.serialize_pem())
    }

    /// Issues a node certificate for the given DNS names and IP addresses, usable for
    /// TLS server auth and (mesh) client auth.
    pub fn issue_node(&self, node_name: &str, names: &[String]) -> Result<NodeCert, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_name);
        params.distinguished_name = dn;
        // Peers in a mesh dial each other by node name, so the name is always a DNS name.
        let own = (!names.iter().any(|n| n == node_name)).then(|| node_name.to_string());
        params.subject_alt_names = names
            .iter()
            .chain(own.as_ref())
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = self.params.clone().self_signed(&self.key)?;
        let cert = params.signed_by(&key, &issuer, &self.key)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl NodeCert {
    /// Writes `node.pem` and `node.key` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join(NODE_CERT), &self.cert_pem)?;
        write_private(&dir.join(NODE_KEY), &self.key_pem)
    }
}

/// Paths of a ready set of dev certificates.
#[derive(Clone, Debug)]
pub struct DevCerts {
    /// The CA certificate to hand to clients.
    pub ca_cert: PathBuf,
    /// The node's certificate.
    pub node_cert: PathBuf,
    /// The node's key.
    pub node_key: PathBuf,
}

/// Makes a dev CA and a node certificate in `dir` unless they are already there.
/// Names default to the loopback ones a single dev node answers on.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts, CertError> {
    let certs = DevCerts {
        ca_cert: dir.join(CA_CERT),
        node_cert: dir.join(NODE_CERT),
        node_key: dir.join(NODE_KEY),
    };
    if certs.ca_cert.exists() && certs.node_cert.exists() && certs.node_key.exists() {
        return Ok(certs);
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.into(),
        source,
    })?;
    let ca = Ca::generate("Quiver dev CA")?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    ca.issue_node("quiver-dev-node", &names)?.save(dir)?;
    ca.save(dir)?;
    Ok(certs)
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Io {
        path: path.into(),
        source,
    })
}

/// Writes a private key readable and writable by its owner only (`0600`), whatever the
/// umask, and tightens a file that was already there.
fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |source| CertError::Io {
        path: path.into(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certs_are_made_once_and_a_saved_ca_can_issue_more() {
        let dir = std::env::temp_dir().join(format!("quiver-certs-{}", std::process::id()));
        let first = ensure_dev_certs(&dir).unwrap();
        let ca_pem = std::fs::read_to_string(&first.ca_cert).unwrap();
        ensure_dev_certs(&dir).unwrap();
        assert_eq!(
            ca_pem,
            std::fs::read_to_string(&first.ca_cert).unwrap(),
            "kept, not remade"
        );
        let ca = Ca::load(&dir, "Quiver dev CA").unwrap();
        let node = ca.issue_node("n2", &["node2.local".into()]).unwrap();
        assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        use std::os::unix::fs::PermissionsExt;
        for key in [&first.node_key, &dir.join(CA_KEY)] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is private", key.display());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
