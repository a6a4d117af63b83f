//! TLS material: the node's certificate and key, and the rustls configurations built from
//! them for QUIC (ALPN `quiver/1`) and for HTTPS.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// What can go wrong loading or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds no certificate or no private key.
    #[error("{0}: no usable PEM item")]
    Empty(String),
    /// rustls refused the material.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("quic tls: {0}")]
    Quic(String),
}

/// A certificate chain and its private key.
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(std::io::BufReader::new(file))
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        let certs = rustls_pemfile::certs(&mut open(cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(cert))?;
        if certs.is_empty() {
            return Err(TlsError::Empty(cert.display().to_string()));
        }
        let key = rustls_pemfile::private_key(&mut open(key)?)
            .map_err(io(key))?
            .ok_or_else(|| TlsError::Empty(key.display().to_string()))?;
        Ok(Self { certs, key })
    }

    fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// rustls configuration for the client QUIC endpoint. 0-RTT stays off
    /// (`max_early_data_size` 0): replayable data is not worth its risk yet.
    pub fn quic(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        let config = self.server_config(&[quiver_proto::ALPN])?;
        quinn::crypto::rustls::QuicServerConfig::try_from(config)
            .map_err(|e| TlsError::Quic(e.to_string()))
    }

    /// rustls configurations of the mesh endpoint: as a server it demands a client
    /// certificate signed by the cluster CA (mutual TLS); as a client it trusts only the
    /// cluster CA and presents this node's certificate. ALPN `quiver-mesh/1` both ways.
    pub fn mesh(
        &self,
        cluster_ca: &Path,
    ) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        let io = |source| TlsError::Io {
            path: cluster_ca.display().to_string(),
            source,
        };
        for cert in rustls_pemfile::certs(&mut open(cluster_ca)?) {
            roots.add(cert.map_err(io)?)?;
        }
        if roots.is_empty() {
            return Err(TlsError::Empty(cluster_ca.display().to_string()));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        server.alpn_protocols = vec![quiver_proto::mesh::MESH_ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())?;
        client.alpn_protocols = vec![quiver_proto::mesh::MESH_ALPN.to_vec()];
        Ok((server, client))
    }

    /// rustls configuration for the TCP carrier's tunnels.
    pub fn tunnel(&self) -> Result<rustls::ServerConfig, TlsError> {
        self.server_config(&[quiver_proto::carrier::TUNNEL_ALPN])
    }

    /// rustls configuration for HTTPS (HTTP/2 and HTTP/1.1).
    pub fn https(&self) -> Result<rustls::ServerConfig, TlsError> {
        self.server_config(&[b"h2", b"http/1.1"])
    }
}
