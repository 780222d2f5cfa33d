//! Fault-injection knobs shared by both simulators: latency, random errors, per-key rate windows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// How long the simulator waits before answering each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    /// Answer at once.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniformly random between `min` and `max`.
    Uniform { min: Duration, max: Duration },
}

impl Latency {
    /// One sample of the delay.
    pub fn sample(&self) -> Duration {
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } if max > min => {
                let span = (max - min).as_micros() as u64;
                min + Duration::from_micros(fastrand::u64(0..=span))
            }
            Latency::Uniform { min, .. } => min,
        }
    }

    /// Parses `50ms` (fixed) or `10ms..200ms` (uniform), humantime units.
    pub fn parse(s: &str) -> Result<Latency, humantime::DurationError> {
        match s.split_once("..") {
            Some((a, b)) => Ok(Latency::Uniform {
                min: humantime::parse_duration(a.trim())?,
                max: humantime::parse_duration(b.trim())?,
            }),
            None => {
                let d = humantime::parse_duration(s.trim())?;
                Ok(if d.is_zero() {
                    Latency::None
                } else {
                    Latency::Fixed(d)
                })
            }
        }
    }
}

/// True with probability `rate` (0.0 ..= 1.0).
pub(crate) fn chance(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

/// A random version-4 UUID in canonical lower-case form (the provider's
/// notification id generator: one digit at a time into one buffer).
pub(crate) fn uuid_v4() -> crate::provider::NotificationId {
    crate::provider::new_notification_id()
}

/// Counts events per key in fixed windows; says when a key exceeds a limit.
#[derive(Debug)]
pub(crate) struct RateWindows {
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u64)>>,
}

/// Keys kept before the table is cleared (bounds memory under random tokens).
const MAX_KEYS: usize = 100_000;

impl RateWindows {
    pub(crate) fn new(window: Duration) -> RateWindows {
        RateWindows {
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key`; true when the window's count exceeds `limit`.
    pub(crate) fn over(&self, key: &str, limit: u64) -> bool {
        let now = Instant::now();
        let Ok(mut counts) = self.counts.lock() else {
            return false;
        };
        if counts.len() >= MAX_KEYS && !counts.contains_key(key) {
            counts.clear();
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 > limit
    }

    /// Seconds until the window of `key` ends (at least 1).
    pub(crate) fn retry_after(&self, key: &str) -> u64 {
        let now = Instant::now();
        self.counts
            .lock()
            .ok()
            .and_then(|c| c.get(key).map(|e| self.window.saturating_sub(now - e.0)))
            .map_or(1, |d| d.as_secs().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_canonical_v4() {
        for _ in 0..100 {
            let u = uuid_v4();
            assert_eq!(u.len(), 36);
            let groups: Vec<usize> = u.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12]);
            assert!(u
                .chars()
                .all(|c| c == '-' || matches!(c, '0'..='9' | 'a'..='f')));
            assert_eq!(&u[14..15], "4");
            assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        }
    }

    #[test]
    fn latency_parses_and_samples_in_range() {
        let l = Latency::parse("10ms..20ms").unwrap();
        for _ in 0..100 {
            let d = l.sample();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        assert_eq!(Latency::parse("0ms").unwrap(), Latency::None);
        assert_eq!(
            Latency::parse("5ms").unwrap(),
            Latency::Fixed(Duration::from_millis(5))
        );
    }

    #[test]
    fn rate_windows_limit_per_key() {
        let w = RateWindows::new(Duration::from_secs(60));
        assert!(!w.over("a", 2));
        assert!(!w.over("a", 2));
        assert!(w.over("a", 2));
        assert!(!w.over("b", 2));
    }
}
