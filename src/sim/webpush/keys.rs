//! Test subscriptions for the Web Push simulator: random ones, and dev ones
//! whose keys follow from the endpoint path (so separate processes agree).
//!
//! TEST MATERIAL ONLY: these keys play the browser's part.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::job::{WebPushKeys, WebPushSubscription};
use crate::provider::webpush::crypto::{self, CryptoError};

/// HKDF salt of the dev subscriptions' keys.
const DEV_SEED: &[u8] = b"pushgate webpush simulator dev subscriptions: TEST ONLY";

/// A subscription's browser-side keys: the P-256 private scalar, the public
/// key (`p256dh`) and the auth secret.
#[derive(Clone)]
pub struct SubscriptionKeys {
    scalar: [u8; 32],
    pub public: [u8; 65],
    pub auth: [u8; 16],
}

impl fmt::Debug for SubscriptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionKeys(***)")
    }
}

impl SubscriptionKeys {
    /// Keys from a private scalar and auth secret; `None` when the scalar is
    /// not a valid P-256 private key.
    pub fn from_parts(scalar: [u8; 32], auth: [u8; 16]) -> Option<SubscriptionKeys> {
        let key = crypto::agreement_key_from_scalar(&scalar).ok()?;
        let public: [u8; 65] = key.compute_public_key().ok()?.as_ref().try_into().ok()?;
        Some(SubscriptionKeys {
            scalar,
            public,
            auth,
        })
    }

    /// The private key as a big-endian scalar (to hand to another implementation).
    pub fn private_scalar(&self) -> &[u8; 32] {
        &self.scalar
    }

    /// Decrypts a request body sent to this subscription.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = crypto::agreement_key_from_scalar(&self.scalar)?;
        crypto::decrypt(body, key, &self.public, &self.auth)
    }

    /// The subscription as a browser hands it out, for `endpoint`.
    pub fn subscription(&self, endpoint: String) -> WebPushSubscription {
        WebPushSubscription {
            endpoint,
            keys: WebPushKeys {
                p256dh: B64.encode(self.public),
                auth: B64.encode(self.auth),
            },
        }
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// `/prefix` without a trailing slash (`""` for none).
fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("/{p}")
    }
}

/// A fresh random subscription under `base` (e.g. `https://127.0.0.1:4444`)
/// at `<path_prefix>/<random id>`. The path prefix scripts the simulator
/// (`gone`, `notfound`, `busy`, `down`; anything else is delivered).
pub fn mint_subscription(base: &str, path_prefix: &str) -> (WebPushSubscription, SubscriptionKeys) {
    let rng = SystemRandom::new();
    loop {
        let mut scalar = [0u8; 32];
        let mut auth = [0u8; 16];
        let mut id = [0u8; 12];
        if rng.fill(&mut scalar).is_err() || rng.fill(&mut auth).is_err() {
            continue;
        }
        let _ = rng.fill(&mut id);
        if let Some(keys) = SubscriptionKeys::from_parts(scalar, auth) {
            let path = format!("{}/{}", normalize_prefix(path_prefix), B64.encode(id));
            return (keys.subscription(join(base, &path)), keys);
        }
    }
}

/// The dev keys of endpoint `path` (e.g. `/demo/ada`): derived from the
/// path alone, so `pushgate simulate` can decrypt messages to subscriptions
/// that another process made up.
pub fn dev_keys(path: &str) -> SubscriptionKeys {
    let prk = Salt::new(HKDF_SHA256, DEV_SEED).extract(path.as_bytes());
    for counter in 0u8..=255 {
        let mut scalar = [0u8; 32];
        let mut auth = [0u8; 16];
        let info_s = [b"scalar".as_slice(), &[counter]];
        let ok = prk
            .expand(&info_s, HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut scalar))
            .and_then(|()| prk.expand(&[b"auth"], Len16))
            .and_then(|okm| okm.fill(&mut auth));
        if ok.is_ok() {
            if let Some(k) = SubscriptionKeys::from_parts(scalar, auth) {
                return k;
            }
        }
    }
    // Unreachable in practice: 256 scalars all out of range.
    mint_subscription("https://x", "").1
}

struct Len16;

impl ring::hkdf::KeyType for Len16 {
    fn len(&self) -> usize {
        16
    }
}

/// The dev subscription at `base` + `path` (see [`dev_keys`]).
pub fn dev_subscription(base: &str, path: &str) -> (WebPushSubscription, SubscriptionKeys) {
    let path = format!("/{}", path.trim_start_matches('/'));
    let keys = dev_keys(&path);
    (keys.subscription(join(base, &path)), keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_and_dev_subscriptions_are_usable() {
        let (sub, keys) = mint_subscription("https://127.0.0.1:4444/", "/gone/");
        assert!(sub.endpoint.starts_with("https://127.0.0.1:4444/gone/"));
        let rng = SystemRandom::new();
        let body = crypto::encrypt_random(b"hi", &keys.public, &keys.auth, &rng).unwrap();
        assert_eq!(keys.decrypt(&body).unwrap(), b"hi");
        let (a, ka) = dev_subscription("https://h", "demo/ada");
        let (b, _) = dev_subscription("https://h/", "/demo/ada");
        assert_eq!(a, b);
        assert_eq!(a.endpoint, "https://h/demo/ada");
        assert_eq!(dev_keys("/demo/ada").public, ka.public);
        assert_ne!(dev_keys("/demo/bob").public, ka.public);
    }
}
