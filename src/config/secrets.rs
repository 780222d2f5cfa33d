//! Reads and checks the key material a config points at (APNs .p8 keys,
//! PEM certificates and keys, FCM service-account JSON, extra CAs).
//!
//! Every error message names what is wrong and what was expected, and never
//! quotes the file's content: key material must not reach a terminal or log.

use std::path::Path;

use ring::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;

use super::{Secret, ServiceAccount};

/// Reads a whole file, with a message naming the path on failure.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn pem_problem(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no {what} found in the file"),
        pem::Error::MissingSectionEnd { .. } => {
            format!("a PEM block has no END line (truncated {what}?)")
        }
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => {
            "a PEM block holds invalid base64 (corrupt file?)".to_owned()
        }
        pem::Error::SectionTooLarge => "a PEM block is too large".to_owned(),
        _ => format!("cannot read the {what} as PEM"),
    }
}

/// An APNs token-auth key: PKCS#8 PEM of an EC P-256 key (the `.p8` file
/// Apple hands out). Returns the PKCS#8 DER.
pub fn apns_p8(pem_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem_bytes).map_err(|e| {
        format!(
            "{}; expected the .p8 file from Apple (PEM \"BEGIN PRIVATE KEY\", EC P-256)",
            pem_problem(&e, "PKCS#8 private key (\"BEGIN PRIVATE KEY\")")
        )
    })?;
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| {
        format!(
            "not a usable EC P-256 (ES256) private key ({e}); APNs token auth needs the .p8 key"
        )
    })?;
    Ok(der.secret_pkcs8_der().to_vec())
}

/// A PEM certificate chain (leaf first), at least one certificate.
pub fn cert_chain(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(&e, "certificate (\"BEGIN CERTIFICATE\")"))?;
    if certs.is_empty() {
        return Err("no certificate (\"BEGIN CERTIFICATE\") found in the file".to_owned());
    }
    for cert in &certs {
        rustls::server::ParsedCertificate::try_from(cert)
            .map_err(|e| format!("a certificate in the file cannot be parsed: {e}"))?;
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem_bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem_bytes)
        .map_err(|e| pem_problem(&e, "private key (\"BEGIN ... PRIVATE KEY\")"))
}

/// Checks that `key` is a key rustls can sign with and that it belongs to
/// the leaf of `chain`.
pub fn client_identity(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider)
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_owned()
            }
            other => format!("the private key cannot be used for TLS: {other}"),
        })
}

/// Extra trusted CA certificates (PEM), each checked to be a usable trust anchor.
pub fn ca_certs(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = cert_chain(pem_bytes)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| format!("a certificate cannot serve as a trust anchor: {e}"))?;
    }
    Ok(certs)
}

/// The fields of a Google service-account key file that pushgate uses;
/// the others are ignored.
#[derive(Deserialize)]
struct RawServiceAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    token_uri: Option<String>,
}

/// Parses and checks a service-account JSON key file. Returns every
/// problem found (never quoting the file).
pub fn service_account(bytes: &[u8]) -> Result<ServiceAccount, Vec<String>> {
    let raw: RawServiceAccount = serde_json::from_slice(bytes).map_err(|e| {
        vec![format!(
            "not a service-account JSON key file ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )]
    })?;
    let mut problems = Vec::new();
    let mut field = |name: &str, v: Option<String>| match v {
        Some(v) if !v.trim().is_empty() => v,
        _ => {
            problems.push(format!("field `{name}` is missing or empty"));
            String::new()
        }
    };
    let kind = field("type", raw.kind);
    let project_id = field("project_id", raw.project_id);
    let private_key_id = field("private_key_id", raw.private_key_id);
    let client_email = field("client_email", raw.client_email);
    let token_uri = field("token_uri", raw.token_uri);
    let pem_key = field("private_key", raw.private_key);
    if !kind.is_empty() && kind != "service_account" {
        problems.push(format!(
            "`type` is {kind:?}, expected \"service_account\" (download a key of the service account)"
        ));
    }
    if !client_email.is_empty() && !client_email.contains('@') {
        problems.push("`client_email` is not an e-mail address".to_owned());
    }
    if !token_uri.is_empty() && !token_uri.starts_with("https://") {
        problems.push("`token_uri` must be an https:// URL".to_owned());
    }
    let mut private_key = Vec::new();
    if !pem_key.is_empty() {
        match rsa_pkcs8(pem_key.as_bytes()) {
            Ok(der) => private_key = der,
            Err(e) => problems.push(format!("`private_key`: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ServiceAccount {
        client_email,
        private_key_id,
        private_key: Secret::new(private_key),
        project_id,
        token_uri,
    })
}

fn rsa_pkcs8(pem_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem_bytes)
        .map_err(|e| pem_problem(&e, "PKCS#8 private key (\"BEGIN PRIVATE KEY\")"))?;
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| format!("not a usable RSA private key ({e})"))?;
    Ok(der.secret_pkcs8_der().to_vec())
}

/// SHA-256 fingerprint of a certificate, colon-separated upper-case hex
/// (what `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/dev")
            .join(name);
        read(&path).unwrap()
    }

    #[test]
    fn dev_material_is_accepted() {
        assert!(!apns_p8(&dev("apns-dev.p8")).unwrap().is_empty());
        let chain = cert_chain(&dev("apns-client.pem")).unwrap();
        let key = private_key(&dev("apns-client.key")).unwrap();
        client_identity(&chain, &key).unwrap();
        assert_eq!(ca_certs(&dev("ca.pem")).unwrap().len(), 1);
        let sa = service_account(&dev("fcm-service-account.json")).unwrap();
        assert_eq!(sa.project_id, "pushgate-dev");
        assert_eq!(sa.token_uri, "https://127.0.0.1:4443/token");
        assert_eq!(fingerprint(&chain[0]).len(), 32 * 3 - 1);
    }

    #[test]
    fn wrong_material_is_refused_without_quoting_it() {
        let p8 = dev("apns-dev.p8");
        let err = apns_p8(&p8[..p8.len() / 2]).unwrap_err();
        assert!(err.contains("END"), "{err}");
        let err = apns_p8(&dev("ca.pem")).unwrap_err();
        assert!(err.contains("no PKCS#8"), "{err}");
        // An RSA key is PKCS#8 but not P-256.
        let sa: serde_json::Value =
            serde_json::from_slice(&dev("fcm-service-account.json")).unwrap();
        let rsa = sa["private_key"].as_str().unwrap();
        let err = apns_p8(rsa.as_bytes()).unwrap_err();
        assert!(err.contains("EC P-256"), "{err}");
        assert!(!err.contains(&rsa[40..60]));
        // A key that is not the certificate's.
        let chain = cert_chain(&dev("apns-client.pem")).unwrap();
        let other = private_key(&dev("sim.key")).unwrap();
        let err = client_identity(&chain, &other).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        assert!(cert_chain(b"nothing here").is_err());
    }

    #[test]
    fn service_account_problems_are_all_listed() {
        let errs = service_account(br#"{"type": "user", "client_email": "nobody"}"#).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("project_id")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("private_key`")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("\"user\"")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("e-mail")), "{errs:?}");
        let errs = service_account(b"{\"private_key\": \"-----BEGIN").unwrap_err();
        assert!(errs[0].contains("line 1"), "{errs:?}");
        assert!(!errs[0].contains("BEGIN"));
    }
}
