//! The dev test material of `config/dev/`, embedded so the simulators run from any directory.
//!
//! TEST MATERIAL ONLY: none of these keys is a real Apple or Google credential.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The dev CA certificate (PEM) that signs the simulator's TLS certificate.
pub const CA_PEM: &str = include_str!("../../config/dev/ca.pem");
/// The simulators' TLS certificate (PEM; localhost, 127.0.0.1, ::1).
pub const SIM_CERT_PEM: &str = include_str!("../../config/dev/sim.pem");
/// The simulators' TLS private key (PEM).
pub const SIM_KEY_PEM: &str = include_str!("../../config/dev/sim.key");

/// Public key (SPKI PEM) of the dev APNs signing key `apns-dev.p8`.
pub const APNS_PUBLIC_KEY_PEM: &str = include_str!("../../config/dev/apns-dev.pub.pem");
/// Key id of the dev APNs key.
pub const APNS_KEY_ID: &str = "DEVKEY0001";
/// Team id the dev APNs key belongs to.
pub const APNS_TEAM_ID: &str = "DEVTEAM001";
/// Public key (SPKI PEM) of `apns-other.p8`; NOT trusted by default.
pub const APNS_OTHER_PUBLIC_KEY_PEM: &str = include_str!("../../config/dev/apns-other.pub.pem");
/// The dev APNs topic (bundle id).
pub const APNS_TOPIC: &str = "com.example.shop";

/// Public key (SPKI PEM) of the dev FCM service account.
pub const FCM_PUBLIC_KEY_PEM: &str = include_str!("../../config/dev/fcm-dev.pub.pem");
/// `private_key_id` of the dev service account (the JWT `kid`).
pub const FCM_KEY_ID: &str = "devkey0000000000000000000000000000000001";
/// `client_email` of the dev service account (the JWT `iss`).
pub const FCM_CLIENT_EMAIL: &str = "pushgate-dev@pushgate-dev.iam.gserviceaccount.com";
/// The dev Firebase project id.
pub const FCM_PROJECT: &str = "pushgate-dev";

/// Errors building the simulator TLS config from PEM material.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("bad PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("TLS config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS config the simulators serve with: the dev certificate, ALPN `h2`, ring.
/// The embedded material is fixed at build time and covered by a test.
#[allow(clippy::expect_used)]
pub fn server_tls() -> Arc<ServerConfig> {
    build_server_tls(None).expect("embedded dev TLS material is valid")
}

/// Like [`server_tls`], but asking clients for a certificate signed by the
/// dev CA (`required`: a client without one fails the handshake).
pub fn server_tls_client_auth(required: bool) -> Result<Arc<ServerConfig>, DevError> {
    build_server_tls(Some(required))
}

fn build_server_tls(client_auth: Option<bool>) -> Result<Arc<ServerConfig>, DevError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs =
        CertificateDer::pem_slice_iter(SIM_CERT_PEM.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(SIM_KEY_PEM.as_bytes())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match client_auth {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(required) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(CA_PEM.as_bytes()) {
                roots.add(ca?)?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !required {
                verifier = verifier.allow_unauthenticated();
            }
            builder
                .with_client_cert_verifier(verifier.build()?)
                .with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tls_builds_with_h2_alpn() {
        assert_eq!(server_tls().alpn_protocols, vec![b"h2".to_vec()]);
        assert!(server_tls_client_auth(true).is_ok());
    }
}
