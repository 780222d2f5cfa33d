//! The 64-bit keys of device tokens and apps in the policy's and the
//! throttle's maps, and the hasher those maps use.
//!
//! Every notification looks its device up in the device buckets and the
//! duplicate guard, and its app in the breakers: with the standard
//! SipHash that was 2.5% of the fan-out profile. A device key is already a
//! hash, seeded at random per process (so crafted tokens cannot be made to
//! collide), and app names come from the config, never from a job: both
//! maps use FxHash. So do the gateway's providers and the throttle's app
//! buckets (keyed by config app names) and the ingest worker's task tags
//! (keyed by task ids the runtime assigns).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use crate::job::Recipient;

/// The hasher of both maps: FxHash, a rotate, a xor and a multiply per
/// word. Fine for keys no job can choose: device keys (already random per
/// process) and app names from the config.
pub type FxBuild = BuildHasherDefault<FxHasher>;

/// A map keyed by a [`device_key`] (or any other well-mixed 64-bit hash).
pub type KeyMap<V> = HashMap<u64, V, FxBuild>;

/// A map keyed by names from the config (apps): trusted, few, short.
pub type NameMap<V> = HashMap<String, V, FxBuild>;

/// FxHash (rustc's hasher).
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
}

/// A 64-bit key of a recipient's device token or Web Push endpoint:
/// SipHash with a seed drawn at random once per process (the same token
/// gets the same key for the life of the process, and a different one in
/// another).
pub fn device_key(r: &Recipient) -> u64 {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    let mut h = SEED.get_or_init(RandomState::new).build_hasher();
    h.write(r.platform.as_str().as_bytes());
    h.write_u8(0xff);
    match (&r.token, &r.subscription) {
        (Some(t), _) => h.write(t.as_str().as_bytes()),
        (None, Some(s)) => h.write(s.endpoint.as_bytes()),
        (None, None) => {}
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_find_what_they_hold() {
        let mut keys: KeyMap<u32> = KeyMap::default();
        let mut names: NameMap<u32> = NameMap::default();
        for i in 0..1000u32 {
            keys.insert(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
            names.insert(format!("app-{i}"), i);
        }
        for i in 0..1000u32 {
            assert_eq!(keys[&u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)], i);
            assert_eq!(names[&format!("app-{i}")], i);
        }
        assert_eq!(names.get("app-1000"), None);
    }
}
