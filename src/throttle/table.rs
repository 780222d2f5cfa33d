//! The per-device buckets' state: one GCRA "theoretical arrival time" per
//! device key, in an open-addressing table with linear probing.
//!
//! A campaign's tokens are mostly new to the table, so a lookup is mostly
//! an insert into a table of up to a million keys, far bigger than the
//! caches: what it costs is the cache lines it touches. Key and state sit
//! side by side (16 bytes), so a lookup reads one line where a general
//! hash map reads its control bytes and then its bucket, and an insert
//! needs no second lookup (governor's keyed store looked a new key up
//! twice). The arithmetic is governor's GCRA (`gcra.rs`): with period `t`
//! and `tau = t x (burst - 1)`, a cell is free at `t0` unless
//! `t0 < tat - tau`, and taking it moves `tat` to `max(tat, t0) + t`.

/// One slot: `tat` 0 marks it empty (a stored `tat` is at least `t` > 0).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    tat: u64,
}

/// Smallest table allocated.
const MIN_SLOTS: usize = 64;

/// GCRA state by key; times are nanoseconds on the caller's clock.
#[derive(Debug, Default)]
pub struct Table {
    /// Empty or a power of two long, at most 7/8 full.
    slots: Vec<Slot>,
    len: usize,
}

impl Table {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes a cell of `key`'s bucket at `t0` (period `t`, tolerance
    /// `tau`), or returns the earliest time one is free.
    pub fn take(&mut self, key: u64, t0: u64, t: u64, tau: u64) -> Result<(), u64> {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        let i = self.find(key);
        let slot = &mut self.slots[i];
        let tat = if slot.tat == 0 { t0 } else { slot.tat };
        let earliest = tat.saturating_sub(tau);
        if t0 < earliest {
            return Err(earliest);
        }
        if slot.tat == 0 {
            slot.key = key;
            self.len += 1;
        }
        slot.tat = tat.max(t0) + t.max(1);
        Ok(())
    }

    /// Forgets the keys whose bucket is full again at `now` (their `tat`
    /// passed: governor's `retain_recent`); shrinks the table when it lost
    /// most of its keys.
    pub fn retain_recent(&mut self, now: u64) {
        let before = self.len;
        let live: Vec<Slot> = self.slots.iter().copied().filter(|s| s.tat > now).collect();
        if live.len() == before {
            return;
        }
        let slots = if live.len() < before / 4 {
            (live.len() * 2).next_power_of_two().max(MIN_SLOTS)
        } else {
            self.slots.len()
        };
        self.rebuild(slots, &live);
    }

    /// The slot holding `key`, or the empty one where it goes. The table
    /// has at least one empty slot.
    fn find(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = home(key, mask);
        loop {
            let s = &self.slots[i];
            if s.tat == 0 || s.key == key {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn resize(&mut self, slots: usize) {
        let live: Vec<Slot> = self.slots.iter().copied().filter(|s| s.tat != 0).collect();
        self.rebuild(slots, &live);
    }

    fn rebuild(&mut self, slots: usize, live: &[Slot]) {
        self.slots = vec![Slot::default(); slots];
        self.len = live.len();
        let mask = slots - 1;
        for s in live {
            let mut i = home(s.key, mask);
            while self.slots[i].tat != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = *s;
        }
    }
}

/// Where `key` starts probing (Fibonacci hashing: the keys' low bits may
/// be alike, their mix is not).
fn home(key: u64, mask: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn gcra_as_governor_computes_it() {
        let mut t = Table::default();
        // 60 a minute, burst 2: tau = 1 s.
        assert_eq!(t.take(7, 0, S, S), Ok(()));
        assert_eq!(t.take(7, 0, S, S), Ok(()));
        assert_eq!(t.take(7, 0, S, S), Err(S), "free again at 1 s");
        assert_eq!(t.take(7, S, S, S), Ok(()));
        assert_eq!(t.take(8, 0, S, S), Ok(()), "another key");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn keys_survive_growth_probing_and_a_shrink() {
        let mut t = Table::default();
        // Up to 7/8 full before each doubling: long probe runs, wrapping too.
        let keys: Vec<u64> = (1..=5_000u64).map(|k| k << 32).collect();
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(t.take(k, n as u64, S, 0), Ok(()));
        }
        assert_eq!(t.len(), 5_000);
        assert!(t.slots.len() >= 5_000 * 8 / 7 && t.slots.len().is_power_of_two());
        for (n, &k) in keys.iter().enumerate() {
            assert!(t.take(k, n as u64, S, 0).is_err(), "key {n} kept its state");
        }
        // Keys 0..4,000 had their tat at n + 1 s; at 1 s + 4,000 ns those are full again.
        t.retain_recent(S + 4_000);
        assert_eq!(t.len(), 999);
        assert!(t.slots.len() < 4_096, "shrunk: {}", t.slots.len());
        for (n, &k) in keys.iter().enumerate().skip(4_001) {
            assert!(
                t.take(k, n as u64, S, 0).is_err(),
                "key {n} kept after the shrink"
            );
        }
        assert_eq!(
            t.take(keys[0], S + 4_000, S, 0),
            Ok(()),
            "a forgotten key starts full"
        );
        t.retain_recent(u64::MAX);
        assert!(t.is_empty());
    }
}
