//! rustls client configs (ring provider): webpki roots plus configured extra CAs and client certs.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use crate::config::ConnectionConfig;

/// The ALPN protocol every pushgate connection speaks.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An `extra_ca` certificate is not a usable trust anchor.
    #[error("extra CA certificate #{index} is not a valid trust anchor: {source}")]
    ExtraCa {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    /// The client certificate chain or key was refused by rustls.
    #[error("client certificate or key rejected: {0}")]
    ClientCert(#[source] rustls::Error),
    /// The ring provider does not support the default protocol versions (never expected).
    #[error("TLS protocol versions: {0}")]
    Protocol(#[source] rustls::Error),
}

/// Builds the client config for one provider connection pool: the webpki
/// roots plus `cfg.extra_ca`, the optional client certificate, ALPN `h2`.
///
/// The ring provider is passed explicitly, so no process-wide default
/// crypto provider has to be installed.
pub fn client_config(cfg: &ConnectionConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (index, ca) in cfg.extra_ca.iter().enumerate() {
        roots
            .add(ca.clone())
            .map_err(|source| TlsError::ExtraCa { index, source })?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Protocol)?
            .with_root_certificates(roots);
    let mut config = match &cfg.client_cert {
        Some(cert) => builder
            .with_client_auth_cert(cert.chain.clone(), cert.key.expose().clone_key())
            .map_err(TlsError::ClientCert)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use crate::config::{ClientCert, Endpoint, Secret};

    fn dev(name: &str) -> String {
        format!("{}/config/dev/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn conn_cfg() -> ConnectionConfig {
        ConnectionConfig {
            endpoint: Endpoint::parse("https://127.0.0.1:2197").unwrap(),
            connections: 1,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            extra_ca: vec![],
            client_cert: None,
        }
    }

    #[test]
    fn alpn_is_h2_and_extra_ca_accepted() {
        let mut cfg = conn_cfg();
        let without = client_config(&cfg).unwrap();
        assert_eq!(without.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!without.client_auth_cert_resolver.has_certs());
        cfg.extra_ca = vec![CertificateDer::from_pem_file(dev("ca.pem")).unwrap()];
        client_config(&cfg).unwrap();
    }

    #[test]
    fn garbage_extra_ca_is_an_error() {
        let mut cfg = conn_cfg();
        cfg.extra_ca = vec![CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])];
        let err = client_config(&cfg).unwrap_err();
        assert!(matches!(err, TlsError::ExtraCa { index: 0, .. }), "{err}");
    }

    #[test]
    fn client_certificate_is_offered() {
        let mut cfg = conn_cfg();
        cfg.client_cert = Some(ClientCert {
            chain: vec![CertificateDer::from_pem_file(dev("sim.pem")).unwrap()],
            key: Secret::new(PrivateKeyDer::from_pem_file(dev("sim.key")).unwrap()),
        });
        let config = client_config(&cfg).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn mismatched_client_key_is_an_error() {
        let mut cfg = conn_cfg();
        cfg.client_cert = Some(ClientCert {
            chain: vec![CertificateDer::from_pem_file(dev("sim.pem")).unwrap()],
            key: Secret::new(PrivateKeyDer::from_pem_file(dev("ca.key")).unwrap()),
        });
        assert!(matches!(client_config(&cfg), Err(TlsError::ClientCert(_))));
    }
}
