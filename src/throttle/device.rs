//! Per-device-token buckets, keyed by a 64-bit hash of the token (about
//! 30 bytes per key), sharded to keep lock contention low; idle keys are
//! reclaimed with governor's `retain_recent` + `shrink_to_fit`. Devices
//! APNs answered 429 TooManyRequests are held (left alone) for a while.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::clock::NanoClock;
use crate::config::policy::DeviceThrottle;
use crate::policy::keys::{FxBuild, KeyMap};

type Keyed<C> = RateLimiter<u64, HashMapStateStore<u64, FxBuild>, C, NoOpMiddleware<Nanos>>;

const SHARDS: usize = 16;
/// Most devices held at once after a 429 (beyond, new holds are skipped).
const MAX_HOLDS: usize = 100_000;
/// Check the key count every this many lookups.
const CHECK_EVERY: u64 = 4096;

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

pub struct Devices<C: NanoClock> {
    shards: Vec<Keyed<C>>,
    holds: Mutex<KeyMap<u64>>,
    /// `holds.len()`, readable without the lock: almost always 0, and then
    /// a lookup skips the lock.
    held: AtomicUsize,
    clock: C,
    max_wait: Duration,
    max_keys: usize,
    lookups: AtomicU64,
}

impl<C: NanoClock> Devices<C> {
    /// `None` when the device limit is off (`per_minute = 0`).
    pub fn new(cfg: &DeviceThrottle, clock: C) -> Option<Devices<C>> {
        if cfg.per_minute == 0 {
            return None;
        }
        let period = Duration::from_secs(60) / cfg.per_minute;
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let q = Quota::with_period(period)?.allow_burst(burst);
        let shards = (0..SHARDS)
            .map(|_| {
                RateLimiter::hashmap_with_clock_and_hasher(q, clock.clone(), FxBuild::default())
            })
            .collect();
        Some(Devices {
            shards,
            holds: Mutex::new(KeyMap::default()),
            held: AtomicUsize::new(0),
            clock,
            max_wait: cfg.max_wait,
            max_keys: cfg.max_keys,
            lookups: AtomicU64::new(0),
        })
    }

    fn shard(&self, key: u64) -> &Keyed<C> {
        &self.shards[(key >> 60) as usize % SHARDS]
    }

    /// Asks the bucket of device `key` for a cell.
    pub fn turn(&self, key: u64) -> DeviceTurn {
        if self.lookups.fetch_add(1, Ordering::Relaxed) % CHECK_EVERY == CHECK_EVERY - 1
            && self.len() > self.max_keys
        {
            self.reclaim();
        }
        if let Some(left) = self.held_for(key) {
            return DeviceTurn::Defer(left);
        }
        match self.shard(key).check_key(&key) {
            Ok(_) => DeviceTurn::Now,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                if wait > self.max_wait {
                    DeviceTurn::Defer(wait)
                } else {
                    DeviceTurn::Wait(wait)
                }
            }
        }
    }

    /// Leaves device `key` alone for `d` (after APNs 429 TooManyRequests).
    pub fn hold(&self, key: u64, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4);
        let until = self.clock.now().as_u64().saturating_add(d);
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
        let now = self.clock.now().as_u64();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Forgets idle device keys and expired holds; returns the keys left.
    /// A shard's table is shrunk only when it lost most of its keys: under
    /// steady traffic each pass drops about half (the keys older than a
    /// bucket's refill), and shrinking then would only regrow it at once,
    /// rehashing every key (a campaign of distinct tokens saw that cost).
    pub fn reclaim(&self) -> usize {
        for s in &self.shards {
            let before = s.len();
            s.retain_recent();
            if s.len() < before / 4 {
                s.shrink_to_fit();
            }
        }
        let now = self.clock.now().as_u64();
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|_, until| *until > now);
        holds.shrink_to_fit();
        self.held.store(holds.len(), Ordering::Relaxed);
        drop(holds);
        self.len()
    }

    /// Device keys tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(RateLimiter::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThrottleConfig;
    use governor::clock::FakeRelativeClock;

    fn devices(per_minute: u32, burst: u32, max_wait: Duration) -> Devices<FakeRelativeClock> {
        let cfg = DeviceThrottle {
            per_minute,
            burst,
            max_wait,
            ..ThrottleConfig::default().device
        };
        Devices::new(&cfg, FakeRelativeClock::default()).unwrap()
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
}
