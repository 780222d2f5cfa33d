//! One shared token bucket with a FIFO gate: waiters line up behind a tokio
//! mutex, so only the head sleeps until the next cell (no thundering herd
//! of thousands of sleepers re-checking the same bucket). The app bucket
//! adds the adaptive slowdown: a second, slower bucket used until a deadline.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::clock::{NanoClock, Shutdown};
use crate::config::Rate;

/// A direct (unkeyed) governor limiter on clock `C`.
pub type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<Nanos>>;

/// The wait ended because shutdown began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// `per_second` cells per second, `burst` at most; `None` when unlimited.
pub fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if per_second.is_nan() || per_second <= 0.0 || per_second.is_infinite() {
        return None;
    }
    let period = Duration::from_secs_f64((1.0 / per_second).max(1e-9));
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Some(Quota::with_period(period)?.allow_burst(burst))
}

/// How long until `limiter` has a cell (`Ok` when it took one now).
pub fn check<C: NanoClock>(limiter: &Direct<C>, clock: &C) -> Result<(), Duration> {
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(clock.now()))
}

/// Waits in line at `gate`, then until `next` yields a cell. `next` is
/// asked again after each sleep; it returns how long to sleep otherwise.
pub async fn gated(
    gate: &tokio::sync::Mutex<()>,
    shutdown: &Shutdown,
    mut next: impl FnMut() -> Result<(), Duration>,
) -> Result<(), Stopped> {
    let _turn = match gate.try_lock() {
        Ok(g) => g,
        Err(_) => tokio::select! {
            g = gate.lock() => g,
            _ = shutdown.wait() => return Err(Stopped),
        },
    };
    loop {
        let wait = match next() {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        if shutdown.is_set() {
            return Err(Stopped);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Err(Stopped),
        }
    }
}

/// A campaign's bucket (rate from the job's `throttle`).
pub struct Plain<C: NanoClock> {
    limiter: Direct<C>,
    gate: tokio::sync::Mutex<()>,
    clock: C,
}

impl<C: NanoClock> Plain<C> {
    pub fn new(quota: Quota, clock: C) -> Plain<C> {
        Plain {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            gate: tokio::sync::Mutex::new(()),
            clock,
        }
    }

    /// Takes a cell now if one is free.
    pub fn try_take(&self) -> bool {
        self.limiter.check().is_ok()
    }

    pub async fn take(&self, shutdown: &Shutdown) -> Result<(), Stopped> {
        gated(&self.gate, shutdown, || check(&self.limiter, &self.clock)).await
    }
}

/// An app/provider bucket with adaptive slowdown: until `slowed_until`,
/// cells come from `slow` (the rate times the slowdown factor) instead.
pub struct AppBucket<C: NanoClock> {
    normal: Direct<C>,
    slow: Direct<C>,
    gate: tokio::sync::Mutex<()>,
    clock: C,
    /// Clock nanoseconds until which the bucket is slowed (0: never was).
    slowed_until: AtomicU64,
    /// The slowdown state last reported to the observer.
    reported: AtomicBool,
}

impl<C: NanoClock> AppBucket<C> {
    /// `None` when `rate` is unlimited (0 per second): no bucket, no slowdown.
    pub fn new(rate: Rate, factor: f64, clock: C) -> Option<AppBucket<C>> {
        let per_second = f64::from(rate.per_second);
        let normal = quota(per_second, rate.burst)?;
        let slow_burst = (f64::from(rate.burst) * factor).floor() as u32;
        let slow = quota(per_second * factor, slow_burst.max(1))?;
        Some(AppBucket {
            normal: RateLimiter::direct_with_clock(normal, clock.clone()),
            slow: RateLimiter::direct_with_clock(slow, clock.clone()),
            gate: tokio::sync::Mutex::new(()),
            clock,
            slowed_until: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        })
    }

    /// Time left of the slowdown, if one is on.
    pub fn slowed_for(&self) -> Option<Duration> {
        let until = self.slowed_until.load(Ordering::Acquire);
        let now = self.clock.now().as_u64();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Slows the bucket down for `d` from now (never shortens a slowdown).
    /// True when this starts a slowdown (the caller reports it).
    pub fn slow_down(&self, d: Duration) -> bool {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 4);
        let until = self.clock.now().as_u64().saturating_add(d);
        self.slowed_until.fetch_max(until, Ordering::AcqRel);
        !self.reported.swap(true, Ordering::AcqRel)
    }

    /// True once when a reported slowdown is found over (the caller reports it).
    pub fn slowdown_ended(&self) -> bool {
        self.slowed_for().is_none()
            && self
                .reported
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The next cell: from `slow` while slowed (sleeping at most until the
    /// slowdown ends), from `normal` otherwise.
    fn next(&self) -> Result<(), Duration> {
        match self.slowed_for() {
            Some(left) => check(&self.slow, &self.clock).map_err(|w| w.min(left)),
            None => check(&self.normal, &self.clock),
        }
    }

    /// Takes a cell now if one is free and nobody is waiting in line.
    pub fn try_take(&self) -> bool {
        match self.gate.try_lock() {
            Ok(_turn) => self.next().is_ok(),
            Err(_) => false,
        }
    }

    pub async fn take(&self, shutdown: &Shutdown) -> Result<(), Stopped> {
        gated(&self.gate, shutdown, || self.next()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::clock::TokioClock;
    use governor::clock::FakeRelativeClock;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    /// Cells granted by `b` over `secs` seconds of fake time, polling every ms.
    fn granted(b: &AppBucket<FakeRelativeClock>, clock: &FakeRelativeClock, ms: u64) -> usize {
        let mut n = 0;
        for _ in 0..ms {
            while b.try_take() {
                n += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        n
    }

    #[test]
    fn rate_and_burst_hold_on_the_fake_clock() {
        let clock = FakeRelativeClock::default();
        let b = AppBucket::new(rate(100, 10), 0.1, clock.clone()).unwrap();
        let mut burst = 0;
        while b.try_take() {
            burst += 1;
        }
        assert_eq!(burst, 10, "the burst, at once");
        let n = granted(&b, &clock, 10_000);
        assert!((999..=1001).contains(&n), "100/s over 10 s gave {n}");
        assert!(AppBucket::new(rate(0, 10), 0.1, clock).is_none());
    }

    #[test]
    fn slowdown_divides_the_rate_then_recovers() {
        let clock = FakeRelativeClock::default();
        let b = AppBucket::new(rate(1000, 100), 0.1, clock.clone()).unwrap();
        assert!(b.slow_down(Duration::from_secs(5)), "first report");
        assert!(!b.slow_down(Duration::from_secs(2)), "already slowed");
        let slowed = granted(&b, &clock, 5000);
        // 100/s for 5 s plus the slow bucket's burst of 10.
        assert!((500..=511).contains(&slowed), "slowed: {slowed}");
        assert!(b.slowed_for().is_none());
        assert!(b.slowdown_ended());
        assert!(!b.slowdown_ended(), "reported once");
        let normal = granted(&b, &clock, 1000);
        // 1000/s plus the refilled burst of 100.
        assert!((1000..=1101).contains(&normal), "recovered: {normal}");
    }

    #[test]
    fn quota_rejects_nonsense() {
        assert!(quota(0.0, 1).is_none());
        assert!(quota(f64::NAN, 1).is_none());
        let q = quota(0.5, 0).unwrap();
        assert_eq!(q.replenish_interval(), Duration::from_secs(2));
        assert_eq!(q.burst_size().get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_line_up_and_end_on_shutdown() {
        let clock = TokioClock::new();
        let b = std::sync::Arc::new(AppBucket::new(rate(10, 1), 0.1, clock).unwrap());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shutdown = Shutdown::new(rx);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            b.take(&shutdown).await.unwrap();
        }
        // One at once, then one every 100 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (b, s) = (b.clone(), shutdown.clone());
                tokio::spawn(async move { b.take(&s).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150)).await;
        tx.send(true).unwrap();
        let mut outcomes = Vec::new();
        for w in waiters {
            outcomes.push(w.await.unwrap());
        }
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
        assert_eq!(outcomes.iter().filter(|o| **o == Err(Stopped)).count(), 2);
        assert_eq!(start.elapsed(), Duration::from_millis(550), "ended at once");
    }
}
