//! Per-device-token buckets (GCRA, as governor's keyed limiters compute
//! them), keyed by a 64-bit hash of the token, in one fixed table: at most
//! `max_keys` devices at 16 bytes each, set aside when the gateway starts
//! and resident as devices are seen. Memory neither grows with traffic nor
//! moves with it: the hash maps of governor's keyed limiters doubled under
//! a burst of new tokens and kept that size (the soak's RSS stepped up by
//! 17 MB mid-run, docs/benchmarks.md round 18).
//!
//! The table is cut into sets of 8 slots (`WAYS`); a device lives in the set
//! its key picks. A device whose bucket is full again is indistinguishable
//! from one never seen, so its slot is free for the next device. When every
//! slot of a set holds a device still paying off a burst, the one closest
//! to a full bucket is forgotten (its next send finds a full bucket) and
//! counted; `reclaim` says so in the log.
//!
//! Devices APNs answered 429 TooManyRequests are held (left alone) for a
//! while, in a small map of their own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::clock::NanoClock;
use crate::config::policy::DeviceThrottle;
use crate::policy::keys::KeyMap;

/// Locks over the table (a device's shard is picked by its key's top bits).
const SHARDS: usize = 16;
/// Slots a device may take in its shard: the ones of its set.
const WAYS: usize = 8;
/// Most devices held at once after a 429 (beyond, new holds are skipped).
const MAX_HOLDS: usize = 100_000;

/// What a device's bucket says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTurn {
    /// Send now (a cell was taken).
    Now,
    /// Wait this long, then ask again.
    Wait(Duration),
    /// Too long to wait here (held after a 429, or over `max_wait`): hand
    /// the recipient to a delay queue of at least this.
    Defer(Duration),
}

/// One slot: `[device key, theoretical arrival time]`, the time in
/// nanoseconds on the limiter's clock. A time of 0 marks a free slot (a
/// device's time is never 0: taking a cell sets it past the clock).
type Slot = [u64; 2];

struct Shard {
    slots: Box<[Slot]>,
    /// Slots holding a device.
    used: usize,
}

pub struct Devices<C: NanoClock> {
    shards: Box<[Mutex<Shard>]>,
    /// Sets per shard.
    sets: u64,
    /// Nanoseconds a cell takes to come back (60 s / per_minute).
    period: u64,
    /// How far ahead of the clock a device's time may run: (burst - 1)
    /// cells.
    tolerance: u64,
    holds: Mutex<KeyMap<u64>>,
    /// `holds.len()`, readable without the lock: almost always 0, and then
    /// a lookup skips the lock.
    held: AtomicUsize,
    clock: C,
    max_wait: Duration,
    /// Devices forgotten while still paying off a burst (a full set).
    forgotten: AtomicU64,
    /// `forgotten` at the last `reclaim`.
    reported: AtomicU64,
}

impl<C: NanoClock> Devices<C> {
    /// `None` when the device limit is off (`per_minute = 0`).
    pub fn new(cfg: &DeviceThrottle, clock: C) -> Option<Devices<C>> {
        if cfg.per_minute == 0 {
            return None;
        }
        let period = Duration::from_secs(60) / cfg.per_minute;
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
        let sets = cfg.max_keys.div_ceil(SHARDS * WAYS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    // All zeros: allocated zeroed, so a page of the table
                    // becomes resident only when a device is written to it.
                    slots: vec![[0u64; 2]; sets * WAYS].into_boxed_slice(),
                    used: 0,
                })
            })
            .collect();
        Some(Devices {
            shards,
            sets: sets as u64,
            period,
            tolerance: period.saturating_mul(u64::from(cfg.burst.max(1) - 1)),
            holds: Mutex::new(KeyMap::default()),
            held: AtomicUsize::new(0),
            clock,
            max_wait: cfg.max_wait,
            forgotten: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.clock.now().as_u64()
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The first slot of `key`'s set in its shard (the key's low 32 bits
    /// scaled to the set count).
    fn set_start(&self, key: u64) -> usize {
        let set = (u64::from(key as u32) * self.sets) >> 32;
        set as usize * WAYS
    }

    /// Most devices the table can hold.
    pub fn capacity(&self) -> usize {
        self.sets as usize * WAYS * SHARDS
    }

    /// Asks the bucket of device `key` for a cell.
    pub fn turn(&self, key: u64) -> DeviceTurn {
        if let Some(left) = self.held_for(key) {
            return DeviceTurn::Defer(left);
        }
        let now = self.now();
        let start = self.set_start(key);
        let mut shard = self.shard(key);
        let Shard { slots, used } = &mut *shard;
        let set = &mut slots[start..start + WAYS];
        // The device's slot, or else the slot whose time is earliest: a
        // free one, then one whose bucket is full again, then the device
        // closest to a full bucket.
        let mut at = 0;
        let mut found = false;
        for (i, slot) in set.iter().enumerate() {
            if slot[0] == key && slot[1] != 0 {
                at = i;
                found = true;
                break;
            }
            if slot[1] < set[at][1] {
                at = i;
            }
        }
        let slot = &mut set[at];
        if !found {
            match slot[1] {
                0 => *used += 1,
                t if t > now => {
                    self.forgotten.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            *slot = [key, 0];
        }
        // GCRA: a device never seen (or whose time has passed) is at `now`.
        let tat = slot[1].max(now);
        let earliest = tat - self.tolerance.min(tat);
        if now < earliest {
            let wait = Duration::from_nanos(earliest - now);
            return if wait > self.max_wait {
                DeviceTurn::Defer(wait)
            } else {
                DeviceTurn::Wait(wait)
            };
        }
        slot[1] = tat.saturating_add(self.period);
        DeviceTurn::Now
    }

    /// Leaves device `key` alone for `d` (after APNs 429 TooManyRequests).
    pub fn hold(&self, key: u64, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4);
        let until = self.now().saturating_add(d);
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        if holds.len() < MAX_HOLDS || holds.contains_key(&key) {
            let slot = holds.entry(key).or_insert(0);
            *slot = (*slot).max(until);
        }
        self.held.store(holds.len(), Ordering::Relaxed);
    }

    fn held_for(&self, key: u64) -> Option<Duration> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        let until = *holds.get(&key)?;
        let now = self.now();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Frees the slots of devices whose bucket is full again and forgets
    /// expired holds; returns the devices left. Says in the log how many
    /// devices a full set made it forget since the last call.
    pub fn reclaim(&self) -> usize {
        let now = self.now();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Shard { slots, used } = &mut *shard;
            for slot in slots.iter_mut() {
                if slot[1] != 0 && slot[1] <= now {
                    *slot = [0, 0];
                    *used -= 1;
                }
            }
        }
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|_, until| *until > now);
        holds.shrink_to_fit();
        self.held.store(holds.len(), Ordering::Relaxed);
        drop(holds);
        let forgotten = self.forgotten.load(Ordering::Relaxed);
        let new = forgotten.saturating_sub(self.reported.swap(forgotten, Ordering::Relaxed));
        if new > 0 {
            tracing::warn!(
                forgotten = new,
                capacity = self.capacity(),
                "device limiter full: devices still paying off a burst were forgotten \
                 (raise [throttle.device] max_keys)"
            );
        }
        self.len()
    }

    /// Devices in the table now (their slots are freed by `reclaim`).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).used)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Devices forgotten so far because their set was full.
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThrottleConfig;
    use governor::clock::FakeRelativeClock;

    /// Devices on a fake clock: `per_minute`, `burst`, `max_wait`, and
    /// `max_keys` (the default when `None`).
    fn table(
        per_minute: u32,
        burst: u32,
        max_wait: Duration,
        max_keys: Option<usize>,
    ) -> Devices<FakeRelativeClock> {
        let default = ThrottleConfig::default().device;
        let cfg = DeviceThrottle {
            per_minute,
            burst,
            max_wait,
            max_keys: max_keys.unwrap_or(default.max_keys),
            ..default
        };
        Devices::new(&cfg, FakeRelativeClock::default()).unwrap()
    }

    fn devices(per_minute: u32, burst: u32, max_wait: Duration) -> Devices<FakeRelativeClock> {
        table(per_minute, burst, max_wait, None)
    }

    #[test]
    fn one_device_is_paced_others_are_not() {
        let d = devices(60, 2, Duration::from_secs(5));
        assert_eq!(d.turn(7), DeviceTurn::Now);
        assert_eq!(d.turn(7), DeviceTurn::Now);
        assert_eq!(d.turn(7), DeviceTurn::Wait(Duration::from_secs(1)));
        assert_eq!(d.turn(8), DeviceTurn::Now, "another device");
        d.clock.advance(Duration::from_secs(1));
        assert_eq!(d.turn(7), DeviceTurn::Now);
    }

    #[test]
    fn long_waits_and_held_devices_are_deferred() {
        let d = devices(6, 1, Duration::from_secs(2));
        assert_eq!(d.turn(1), DeviceTurn::Now);
        assert_eq!(d.turn(1), DeviceTurn::Defer(Duration::from_secs(10)));
        d.hold(2, Duration::from_secs(60));
        d.clock.advance(Duration::from_secs(20));
        assert_eq!(d.turn(2), DeviceTurn::Defer(Duration::from_secs(40)));
        d.clock.advance(Duration::from_secs(40));
        assert_eq!(d.turn(2), DeviceTurn::Now);
    }

    #[test]
    fn idle_keys_are_reclaimed() {
        let d = devices(60, 5, Duration::from_secs(1));
        for key in 0..10_000u64 {
            assert_eq!(
                d.turn(key.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                DeviceTurn::Now
            );
        }
        d.hold(3, Duration::from_secs(1));
        assert_eq!(d.len(), 10_000);
        assert_eq!(d.reclaim(), 10_000, "all still recent");
        d.clock.advance(Duration::from_secs(61));
        assert_eq!(d.reclaim(), 0, "idle keys are gone");
        assert!(d.holds.lock().unwrap().is_empty(), "expired holds too");
        assert!(Devices::new(
            &DeviceThrottle {
                per_minute: 0,
                ..ThrottleConfig::default().device
            },
            FakeRelativeClock::default()
        )
        .is_none());
    }

    fn small(max_keys: usize, burst: u32) -> Devices<FakeRelativeClock> {
        table(60, burst, Duration::from_secs(2), Some(max_keys))
    }

    #[test]
    fn the_table_never_grows_past_its_capacity() {
        let d = small(1000, 5);
        assert_eq!(d.capacity(), 1024, "1,000 rounded up to whole sets");
        for key in 0..100_000u64 {
            let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_eq!(
                d.turn(key),
                DeviceTurn::Now,
                "a new device has a full bucket"
            );
        }
        assert!(d.len() <= d.capacity(), "{} devices", d.len());
        assert!(d.len() > 1000 * 9 / 10, "the slots are used: {}", d.len());
        assert_eq!(d.forgotten(), 100_000 - d.len() as u64);
        assert_eq!(d.reclaim(), d.len(), "all still paying off their cell");
        d.clock.advance(Duration::from_secs(1));
        assert_eq!(d.reclaim(), 0);
        assert_eq!(d.forgotten(), 100_000 - 1024, "nothing forgotten twice");
    }

    #[test]
    fn a_full_set_forgets_the_device_closest_to_a_full_bucket() {
        // One set of 8 slots per shard; keys 1..=9 share shard 0's.
        let d = small(1, 2);
        assert_eq!(d.turn(1), DeviceTurn::Now);
        assert_eq!(d.turn(1), DeviceTurn::Now);
        assert_eq!(d.turn(1), DeviceTurn::Wait(Duration::from_secs(1)));
        for key in 2..=8 {
            assert_eq!(d.turn(key), DeviceTurn::Now);
        }
        assert_eq!((d.len(), d.forgotten()), (8, 0));
        d.clock.advance(Duration::from_millis(500));
        assert_eq!(d.turn(9), DeviceTurn::Now, "takes device 2's slot");
        assert_eq!((d.len(), d.forgotten()), (8, 1));
        assert_eq!(
            d.turn(1),
            DeviceTurn::Wait(Duration::from_millis(500)),
            "device 1 kept its debt"
        );
        assert_eq!(d.turn(3), DeviceTurn::Now, "device 3 is still known");
        assert_eq!(d.turn(3), DeviceTurn::Wait(Duration::from_millis(500)));
        // A device whose bucket is full again gives its slot up quietly.
        d.clock.advance(Duration::from_millis(600));
        assert_eq!(d.turn(10), DeviceTurn::Now);
        assert_eq!((d.len(), d.forgotten()), (8, 1));
    }
}
