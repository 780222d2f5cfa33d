//! RFC 8291 message encryption: one `aes128gcm` record (RFC 8188) keyed by
//! ECDH P-256 with the subscription's `p256dh` key and `auth` secret, with ring.
//!
//! [`encrypt`] is pure: the ephemeral key and the salt are inputs, so the
//! RFC 8291 section 5 example can be reproduced byte for byte.
//! [`decrypt`] is the user agent's side (the simulator uses it).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::hkdf::{self, KeyType, HKDF_SHA256};
use ring::rand::SecureRandom;

/// The record size written in the header.
pub const RECORD_SIZE: u32 = 4096;
/// salt (16) + rs (4) + idlen (1) + keyid (65-byte sender public key).
pub const HEADER_LEN: usize = 86;
/// The AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Largest plaintext that keeps the body within 4096 bytes (one record,
/// one padding delimiter byte): 4096 - 86 - 16 - 1.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - HEADER_LEN - TAG_LEN - 1;
/// Padding delimiter of the last (here: only) record.
const LAST_RECORD: u8 = 0x02;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("p256dh is not an uncompressed P-256 public key (65 bytes, 0x04 first)")]
    BadPublicKey,
    #[error("auth secret must be 16 bytes")]
    BadAuthSecret,
    #[error("plaintext of {len} bytes is over the {MAX_PLAINTEXT}-byte Web Push limit")]
    TooLarge { len: usize },
    #[error("body is not a single aes128gcm record")]
    Malformed,
    #[error("key agreement or AEAD failed")]
    Crypto,
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::Crypto)
}

/// The content-encryption key and nonce of RFC 8291 section 3.4 / RFC 8188
/// section 2.2, from the ECDH secret.
pub fn derive(
    ecdh_secret: &[u8],
    auth: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8; 16],
) -> Result<([u8; 16], [u8; 12]), CryptoError> {
    let prk_key = hkdf::Salt::new(HKDF_SHA256, auth).extract(ecdh_secret);
    let mut ikm = [0u8; 32];
    expand(
        &prk_key,
        &[b"WebPush: info\0", ua_public, as_public],
        &mut ikm,
    )?;
    let prk = hkdf::Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    expand(&prk, &[b"Content-Encoding: aes128gcm\0"], &mut cek)?;
    expand(&prk, &[b"Content-Encoding: nonce\0"], &mut nonce)?;
    Ok((cek, nonce))
}

fn check_keys(ua_public: &[u8], auth: &[u8]) -> Result<(), CryptoError> {
    if ua_public.len() != 65 || ua_public[0] != 0x04 {
        return Err(CryptoError::BadPublicKey);
    }
    if auth.len() != 16 {
        return Err(CryptoError::BadAuthSecret);
    }
    Ok(())
}

fn aead_key(cek: &[u8; 16]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_128_GCM, cek)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Crypto)
}

/// Encrypts `plaintext` for the subscription (`ua_public` = decoded
/// `p256dh`, `auth` = decoded `auth`) with the sender's `ephemeral` key and
/// `salt`. Returns the whole request body: header, then one record.
pub fn encrypt(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    ephemeral: EphemeralPrivateKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, CryptoError> {
    check_keys(ua_public, auth)?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(CryptoError::TooLarge {
            len: plaintext.len(),
        });
    }
    let as_public = ephemeral
        .compute_public_key()
        .map_err(|_| CryptoError::Crypto)?;
    let as_public = as_public.as_ref();
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    let (cek, nonce) = agreement::agree_ephemeral(ephemeral, &peer, |secret| {
        derive(secret, auth, ua_public, as_public, salt)
    })
    .map_err(|_| CryptoError::BadPublicKey)??;
    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    aead_key(&cek)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut record,
        )
        .map_err(|_| CryptoError::Crypto)?;
    body.extend_from_slice(&record);
    Ok(body)
}

/// [`encrypt`] with a fresh ephemeral key and salt from `rng`.
pub fn encrypt_random(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral =
        EphemeralPrivateKey::generate(&ECDH_P256, rng).map_err(|_| CryptoError::Crypto)?;
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| CryptoError::Crypto)?;
    encrypt(plaintext, ua_public, auth, ephemeral, &salt)
}

/// The user agent's side: decrypts a single-record body with the
/// subscription's private key (`ua_private`), public key and auth secret.
pub fn decrypt(
    body: &[u8],
    ua_private: EphemeralPrivateKey,
    ua_public: &[u8],
    auth: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    check_keys(ua_public, auth)?;
    if body.len() < HEADER_LEN + 1 + TAG_LEN || body[20] != 65 {
        return Err(CryptoError::Malformed);
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&body[..16]);
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let as_public = &body[21..HEADER_LEN];
    let record = &body[HEADER_LEN..];
    if record.len() > rs {
        return Err(CryptoError::Malformed);
    }
    let peer = UnparsedPublicKey::new(&ECDH_P256, as_public);
    let (cek, nonce) = agreement::agree_ephemeral(ua_private, &peer, |secret| {
        derive(secret, auth, ua_public, as_public, &salt)
    })
    .map_err(|_| CryptoError::Malformed)??;
    let mut buf = record.to_vec();
    let plain = aead_key(&cek)?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .map_err(|_| CryptoError::Crypto)?;
    // Strip the padding: zeros, then the delimiter (0x02 for the last record).
    let end = plain
        .iter()
        .rposition(|&b| b != 0)
        .ok_or(CryptoError::Malformed)?;
    if plain[end] != LAST_RECORD {
        return Err(CryptoError::Malformed);
    }
    Ok(plain[..end].to_vec())
}

/// A P-256 private key from its 32-byte big-endian scalar, as a ring
/// agreement key (usable once). ring only generates agreement keys from an
/// RNG, so the scalar is fed through ring's fixed-output test RNG, which
/// ring documents as deterministic (the scalar is used as is when in range).
/// For the simulator and tests: production code only uses fresh keys.
#[allow(deprecated)]
pub fn agreement_key_from_scalar(scalar: &[u8; 32]) -> Result<EphemeralPrivateKey, CryptoError> {
    let rng = ring::test::rand::FixedSliceRandom { bytes: scalar };
    EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| CryptoError::Crypto)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

    use super::*;

    fn d(s: &str) -> Vec<u8> {
        B64.decode(s).unwrap()
    }

    // RFC 8291 section 5 (and appendix A).
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = concat!(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml",
        "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT",
        "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
    );
    const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const NONCE: &str = "4h_95klXJ5E_qnoN";

    fn scalar(s: &str) -> [u8; 32] {
        d(s).try_into().unwrap()
    }

    #[test]
    fn rfc8291_example_encrypts_byte_for_byte() {
        let key = agreement_key_from_scalar(&scalar(AS_PRIVATE)).unwrap();
        assert_eq!(
            key.compute_public_key().unwrap().as_ref(),
            &d(AS_PUBLIC)[..]
        );
        let salt: [u8; 16] = d(SALT).try_into().unwrap();
        let body = encrypt(PLAINTEXT.as_bytes(), &d(UA_PUBLIC), &d(AUTH), key, &salt).unwrap();
        assert_eq!(B64.encode(&body), BODY);
    }

    #[test]
    fn rfc8291_example_intermediate_values() {
        let salt: [u8; 16] = d(SALT).try_into().unwrap();
        let (cek, nonce) = derive(
            &d(ECDH_SECRET),
            &d(AUTH),
            &d(UA_PUBLIC),
            &d(AS_PUBLIC),
            &salt,
        )
        .unwrap();
        assert_eq!(B64.encode(cek), CEK);
        assert_eq!(B64.encode(nonce), NONCE);
    }

    #[test]
    fn rfc8291_example_decrypts() {
        let ua = agreement_key_from_scalar(&scalar(UA_PRIVATE)).unwrap();
        let plain = decrypt(&d(BODY), ua, &d(UA_PUBLIC), &d(AUTH)).unwrap();
        assert_eq!(plain, PLAINTEXT.as_bytes());
    }

    #[test]
    fn random_round_trip_and_limits() {
        let rng = ring::rand::SystemRandom::new();
        let ua_scalar = scalar(UA_PRIVATE);
        let ua_pub = d(UA_PUBLIC);
        let auth = d(AUTH);
        let max = vec![b'x'; MAX_PLAINTEXT];
        let body = encrypt_random(&max, &ua_pub, &auth, &rng).unwrap();
        assert_eq!(body.len(), RECORD_SIZE as usize);
        let ua = agreement_key_from_scalar(&ua_scalar).unwrap();
        assert_eq!(decrypt(&body, ua, &ua_pub, &auth).unwrap(), max);
        let over = vec![b'x'; MAX_PLAINTEXT + 1];
        assert_eq!(
            encrypt_random(&over, &ua_pub, &auth, &rng),
            Err(CryptoError::TooLarge {
                len: MAX_PLAINTEXT + 1
            })
        );
        assert_eq!(
            encrypt_random(b"x", &ua_pub[1..], &auth, &rng),
            Err(CryptoError::BadPublicKey)
        );
        let mut tampered = body.clone();
        tampered[HEADER_LEN + 3] ^= 1;
        let ua = agreement_key_from_scalar(&ua_scalar).unwrap();
        assert_eq!(
            decrypt(&tampered, ua, &ua_pub, &auth),
            Err(CryptoError::Crypto)
        );
    }
}
