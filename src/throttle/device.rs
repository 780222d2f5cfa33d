//! Per-device-token buckets, keyed by a 64-bit hash of the token (16 bytes
//! a key in [`Table`], at most 7/8 full), sharded to keep lock contention
//! low; idle keys (bucket full again) are reclaimed. Devices APNs answered
//! 429 TooManyRequests are held (left alone) for a while.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use governor::nanos::Nanos;

use super::clock::NanoClock;
use super::table::Table;
use crate::config::policy::DeviceThrottle;
use crate::policy::keys::KeyMap;

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
    shards: Vec<Mutex<Table>>,
    /// The bucket's period and tolerance (governor's GCRA `t` and `tau`), in ns.
    t: u64,
    tau: u64,
    /// The clock's reading when the buckets were made (their time 0).
    start: Nanos,
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
        let t = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
        let tau = t.saturating_mul(u64::from(cfg.burst.max(1) - 1));
        let shards = (0..SHARDS).map(|_| Mutex::new(Table::default())).collect();
        Some(Devices {
            shards,
            t,
            tau,
            start: clock.now(),
            holds: Mutex::new(KeyMap::default()),
            held: AtomicUsize::new(0),
            clock,
            max_wait: cfg.max_wait,
            max_keys: cfg.max_keys,
            lookups: AtomicU64::new(0),
        })
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Table> {
        self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Nanoseconds since the buckets were made.
    fn elapsed(&self) -> u64 {
        self.clock.now().saturating_sub(self.start).as_u64()
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
        let now = self.elapsed();
        let taken = self.shard(key).take(key, now, self.t, self.tau);
        match taken {
            Ok(()) => DeviceTurn::Now,
            Err(earliest) => {
                let wait = Duration::from_nanos(earliest.saturating_sub(now));
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
        let elapsed = self.elapsed();
        for s in &self.shards {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain_recent(elapsed);
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
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
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
