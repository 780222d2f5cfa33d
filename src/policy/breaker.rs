//! The credentials circuit breaker of one app's provider, with the guard.
//!
//! Closed: everything is sent. A credentials-class answer opens it: the
//! app's provider is paused, recipients go to delay queues, and every
//! `probe_interval` one real send (the probe) tests it; a probe answered
//! with anything but the cause closes it. The guard opens it too when
//! BadDeviceToken / DeviceTokenNotForTopic / MismatchSenderId make up a
//! large share of the recent answers: that is a wrong environment, bundle
//! or sender, not dead tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::{Class, Code};

/// The thresholds a breaker works with (from `[policy]` and `[throttle]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub probe_interval: Duration,
    pub guard_share: f64,
    pub guard_min_sends: u32,
    pub guard_window: Duration,
    pub apns_429_share: f64,
}

/// Whether a delivery may go to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Paused, but this delivery is the probe: send it.
    Probe,
    /// Paused because of `code`; the next probe is due in `next_probe`.
    Paused {
        code: Code,
        next_probe: Duration,
    },
}

/// What an answer changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    None,
    /// The breaker opened on `code`; `guard` when the guard tripped (with
    /// the share of guarded answers).
    Opened {
        code: Code,
        guard: Option<f64>,
    },
    /// A probe got through: resumed.
    Closed,
}

/// The guard's codes: token-class codes that, in bulk, mean a
/// configuration error rather than dead tokens.
pub fn guarded(code: Code) -> bool {
    matches!(
        code,
        Code::BadDeviceToken | Code::DeviceTokenNotForTopic | Code::MismatchSenderId
    )
}

const SLOTS: usize = 6;

/// Answers in the recent window, in `SLOTS` time slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    epoch: u64,
    pub sends: u32,
    pub guarded: u32,
    pub too_many: u32,
}

#[derive(Debug)]
struct Window {
    origin: Instant,
    slot: Duration,
    slots: [Counts; SLOTS],
}

impl Window {
    fn new(span: Duration, now: Instant) -> Window {
        Window {
            origin: now,
            slot: (span / SLOTS as u32).max(Duration::from_millis(1)),
            slots: [Counts::default(); SLOTS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let n = now.saturating_duration_since(self.origin).as_nanos() / self.slot.as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX - 1) + 1
    }

    fn add(&mut self, now: Instant, code: Option<Code>) {
        let epoch = self.epoch(now);
        let s = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if s.epoch != epoch {
            *s = Counts {
                epoch,
                ..Counts::default()
            };
        }
        s.sends += 1;
        s.guarded += u32::from(code.is_some_and(guarded));
        s.too_many += u32::from(code == Some(Code::TemporarilyBlacklisted));
    }

    fn totals(&self, now: Instant) -> Counts {
        let epoch = self.epoch(now);
        let live = |c: &&Counts| c.epoch + (SLOTS as u64) > epoch;
        self.slots
            .iter()
            .filter(live)
            .fold(Counts::default(), |a, c| Counts {
                epoch,
                sends: a.sends + c.sends,
                guarded: a.guarded + c.guarded,
                too_many: a.too_many + c.too_many,
            })
    }

    fn clear(&mut self) {
        self.slots = [Counts::default(); SLOTS];
    }
}

#[derive(Debug)]
struct Inner {
    /// While open: the code that opened it, and whether the guard did.
    cause: Option<(Code, bool)>,
    next_probe: Instant,
    window: Window,
}

/// One app's provider.
#[derive(Debug)]
pub struct Breaker {
    open: AtomicBool,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(s: &Settings) -> Breaker {
        let now = Instant::now();
        Breaker {
            open: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                cause: None,
                next_probe: now,
                window: Window::new(s.guard_window, now),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cause while open: the code, and whether the guard opened it.
    pub fn cause(&self) -> Option<(Code, bool)> {
        if !self.open.load(Ordering::Acquire) {
            return None;
        }
        self.lock().cause
    }

    /// Whether a delivery may be sent now; one per `probe_interval` while open.
    pub fn admit(&self, s: &Settings) -> Admit {
        if !self.open.load(Ordering::Acquire) {
            return Admit::Go;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let Some((code, _)) = inner.cause else {
            return Admit::Go;
        };
        if now >= inner.next_probe {
            inner.next_probe = now + s.probe_interval;
            return Admit::Probe;
        }
        Admit::Paused {
            code,
            next_probe: inner.next_probe - now,
        }
    }

    /// Records a provider answer (`code` `None` = delivered); `probe` when
    /// the delivery was admitted as the probe.
    pub fn record(&self, s: &Settings, code: Option<Code>, probe: bool) -> Change {
        let now = Instant::now();
        let mut inner = self.lock();
        let credentials = code.is_some_and(|c| c.class() == Class::Credentials);
        if let Some((_, guard)) = inner.cause {
            let still = credentials || (guard && code.is_some_and(guarded));
            if !probe || still {
                return Change::None;
            }
            inner.cause = None;
            inner.window.clear();
            self.open.store(false, Ordering::Release);
            return Change::Closed;
        }
        if let Some(code) = code.filter(|_| credentials) {
            return self.open(&mut inner, now, s, code, None);
        }
        inner.window.add(now, code);
        let t = inner.window.totals(now);
        let share = f64::from(t.guarded) / f64::from(t.sends.max(1));
        match code.filter(|c| guarded(*c)) {
            Some(code) if t.sends >= s.guard_min_sends && share >= s.guard_share => {
                self.open(&mut inner, now, s, code, Some(share))
            }
            _ => Change::None,
        }
    }

    fn open(
        &self,
        inner: &mut Inner,
        now: Instant,
        s: &Settings,
        code: Code,
        guard: Option<f64>,
    ) -> Change {
        inner.cause = Some((code, guard.is_some()));
        inner.next_probe = now + s.probe_interval;
        self.open.store(true, Ordering::Release);
        Change::Opened { code, guard }
    }

    /// Whether APNs 429 TooManyRequests answers are over their share of the
    /// recent answers (the app sends too fast overall, not one device).
    pub fn too_many_429(&self, s: &Settings) -> bool {
        let t = self.lock().window.totals(Instant::now());
        t.sends >= s.guard_min_sends
            && f64::from(t.too_many) >= s.apns_429_share * f64::from(t.sends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            probe_interval: Duration::from_secs(30),
            guard_share: 0.5,
            guard_min_sends: 10,
            guard_window: Duration::from_secs(60),
            apns_429_share: 0.2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_pause_and_one_probe_per_interval_resumes() {
        let s = settings();
        let b = Breaker::new(&s);
        assert_eq!(b.admit(&s), Admit::Go);
        assert_eq!(b.record(&s, None, false), Change::None);
        let c = b.record(&s, Some(Code::InvalidCredentials), false);
        assert_eq!(
            c,
            Change::Opened {
                code: Code::InvalidCredentials,
                guard: None
            }
        );
        assert_eq!(b.cause(), Some((Code::InvalidCredentials, false)));
        assert_eq!(
            b.admit(&s),
            Admit::Paused {
                code: Code::InvalidCredentials,
                next_probe: Duration::from_secs(30)
            }
        );
        // A send already in flight that got through does not resume it.
        assert_eq!(b.record(&s, None, false), Change::None);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(&s), Admit::Probe);
        assert!(matches!(b.admit(&s), Admit::Paused { .. }), "one probe");
        assert_eq!(
            b.record(&s, Some(Code::InvalidCredentials), true),
            Change::None,
            "probe failed: still paused"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(&s), Admit::Probe);
        assert_eq!(
            b.record(&s, Some(Code::NotRegistered), true),
            Change::Closed
        );
        assert_eq!(b.admit(&s), Admit::Go);
        assert_eq!(b.cause(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_guard_trips_on_a_large_share_of_token_codes_only() {
        let s = settings();
        let b = Breaker::new(&s);
        // A few bad tokens among many good ones: dead tokens, not config.
        for i in 0..100 {
            let code = (i % 10 == 0).then_some(Code::BadDeviceToken);
            assert_eq!(b.record(&s, code, false), Change::None);
        }
        assert_eq!(b.cause(), None);
        // The window forgets them after a minute.
        tokio::time::advance(Duration::from_secs(61)).await;
        let mut change = Change::None;
        for i in 1..=10 {
            let code = (i % 3 != 0).then_some(Code::DeviceTokenNotForTopic);
            change = b.record(&s, code, false);
        }
        match change {
            Change::Opened {
                code: Code::DeviceTokenNotForTopic,
                guard: Some(share),
            } => assert!(share >= 0.5, "{share}"),
            other => panic!("guard did not trip: {other:?}"),
        }
        assert_eq!(b.cause(), Some((Code::DeviceTokenNotForTopic, true)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(&s), Admit::Probe);
        assert_eq!(
            b.record(&s, Some(Code::MismatchSenderId), true),
            Change::None,
            "a guarded code keeps a guard pause"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(&s), Admit::Probe);
        assert_eq!(b.record(&s, None, true), Change::Closed);
        // The window was cleared: one more bad token does not re-trip.
        assert_eq!(
            b.record(&s, Some(Code::BadDeviceToken), false),
            Change::None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn apns_429_share_is_measured_over_the_window() {
        let s = settings();
        let b = Breaker::new(&s);
        for i in 0..20 {
            let code = (i % 4 == 0).then_some(Code::TemporarilyBlacklisted);
            b.record(&s, code, false);
        }
        assert!(b.too_many_429(&s), "5 of 20");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!b.too_many_429(&s));
    }
}
