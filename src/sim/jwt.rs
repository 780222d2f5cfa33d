//! Minimal JWT parsing and signature checks (ES256, RS256 with ring) for the simulators.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use serde_json::Value;

/// Why a JWT or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not three base64url parts")]
    Malformed,
    #[error("header or claims are not JSON objects")]
    NotJson,
    #[error("bad signature")]
    BadSignature,
    #[error("bad public key")]
    BadKey,
}

/// A JWT split into its decoded parts (signature not yet checked).
#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: serde_json::Map<String, Value>,
    pub claims: serde_json::Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes `header.claims.signature`.
    pub fn parse(token: &str) -> Result<Jwt, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed);
        let object = |bytes: Vec<u8>| match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JwtError::NotJson),
        };
        Ok(Jwt {
            header: object(decode(h)?)?,
            claims: object(decode(c)?)?,
            signing_input: format!("{h}.{c}"),
            signature: decode(s)?,
        })
    }

    /// A string header field.
    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim_str(&self, key: &str) -> Option<&str> {
        self.claims.get(key).and_then(Value::as_str)
    }

    /// An integer claim (seconds); floats are truncated.
    pub fn claim_i64(&self, key: &str) -> Option<i64> {
        let v = self.claims.get(key)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// Checks the signature with an ES256 (P-256, fixed-size r||s) key.
    pub fn verify_es256(&self, key: &PublicKey) -> Result<(), JwtError> {
        self.verify(&signature::ECDSA_P256_SHA256_FIXED, key)
    }

    /// Checks the signature with an RS256 (PKCS#1 v1.5, SHA-256) key.
    pub fn verify_rs256(&self, key: &PublicKey) -> Result<(), JwtError> {
        self.verify(&signature::RSA_PKCS1_2048_8192_SHA256, key)
    }

    fn verify(
        &self,
        alg: &'static dyn VerificationAlgorithm,
        key: &PublicKey,
    ) -> Result<(), JwtError> {
        UnparsedPublicKey::new(alg, &key.0)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }
}

/// A public key in the form ring verifies with (the SPKI's BIT STRING content:
/// the EC point, or the PKCS#1 RSAPublicKey).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// Reads a `-----BEGIN PUBLIC KEY-----` (SPKI) PEM.
    pub fn from_spki_pem(pem: &str) -> Result<PublicKey, JwtError> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| JwtError::BadKey)?;
        spki_key_bits(&spki).map(|b| PublicKey(b.to_vec()))
    }
}

/// Reads one DER TLV; returns (tag, content, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// SEQUENCE { AlgorithmIdentifier, BIT STRING key } -> key bytes.
fn spki_key_bits(spki: &[u8]) -> Result<&[u8], JwtError> {
    let (tag, body, _) = der_tlv(spki).ok_or(JwtError::BadKey)?;
    if tag != 0x30 {
        return Err(JwtError::BadKey);
    }
    let (_, _, rest) = der_tlv(body).ok_or(JwtError::BadKey)?;
    match der_tlv(rest) {
        Some((0x03, bits, _)) if bits.first() == Some(&0) => Ok(&bits[1..]),
        _ => Err(JwtError::BadKey),
    }
}

/// Finds the first `UID` (0.9.2342.19200300.100.1.1) attribute value in a DER
/// certificate; APNs certificates carry the topic there.
pub fn cert_uid(cert_der: &[u8]) -> Option<String> {
    const UID_OID: [u8; 12] = [
        0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01,
    ];
    let at = cert_der.windows(UID_OID.len()).position(|w| w == UID_OID)?;
    let (_, value, _) = der_tlv(&cert_der[at + UID_OID.len()..])?;
    String::from_utf8(value.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::dev;

    #[test]
    fn dev_public_keys_parse() {
        let ec = PublicKey::from_spki_pem(dev::APNS_PUBLIC_KEY_PEM).unwrap();
        assert_eq!(ec.0.len(), 65);
        assert_eq!(ec.0[0], 4);
        let rsa = PublicKey::from_spki_pem(dev::FCM_PUBLIC_KEY_PEM).unwrap();
        assert!(rsa.0.len() > 256);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(Jwt::parse("a.b").unwrap_err(), JwtError::Malformed);
        assert_eq!(Jwt::parse("e30.e30.!!").unwrap_err(), JwtError::Malformed);
        assert_eq!(Jwt::parse("W10.e30.AA").unwrap_err(), JwtError::NotJson);
        let jwt = Jwt::parse("e30.e30.AAAA").unwrap();
        let key = PublicKey::from_spki_pem(dev::APNS_PUBLIC_KEY_PEM).unwrap();
        assert_eq!(jwt.verify_es256(&key), Err(JwtError::BadSignature));
    }
}
