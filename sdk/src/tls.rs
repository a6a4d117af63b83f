//! Client TLS: trust exactly the CA the app was given (a deployment's or a dev node's).

use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

/// A rustls client configuration trusting the certificates in `ca_pem`.
pub fn rustls_config(ca_pem: &str, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in CA PEM".into());
    }
    for cert in certs {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The quinn client configuration for Quiver: ALPN `quiver/1`, room for one push stream
/// per conversation, the given keep-alive and idle timeout.
pub fn quic_config(
    ca_pem: &str,
    keep_alive: Duration,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, String> {
    let tls = rustls_config(ca_pem, &[quiver_proto::ALPN])?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(1024u32.into())
        .max_concurrent_bidi_streams(0u32.into())
        // Friends' typing and presence: small datagrams, a few a second.
        .datagram_receive_buffer_size(Some(64 * 1024))
        .keep_alive_interval(Some(keep_alive))
        // Before the first answer QUIC sends its Initial again after about 3 RTTs; 100 ms
        // (Chrome's choice; RFC 9002 says 333) puts that retry just after the TCP
        // fallback (`fallback_after`, 250 ms), so a blocked network costs ~0.3 s, not 1 s.
        .initial_rtt(Duration::from_millis(100))
        .max_idle_timeout(Some(
            idle_timeout
                .try_into()
                .map_err(|_| "idle timeout out of range")?,
        ));
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
