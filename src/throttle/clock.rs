//! The time sources of the throttle: a governor clock on tokio's time (so
//! that paused tokio time drives the buckets in tests), and the shutdown
//! signal every throttle wait listens to.

use std::time::Duration;

use governor::clock::Clock;
use governor::nanos::Nanos;
use tokio::sync::watch;

/// Governor clock reading tokio's [`tokio::time::Instant`], as nanoseconds
/// since the clock was made. With `tokio::time::pause` it stands still and
/// moves with `advance`/auto-advance, like every tokio sleep.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

/// A governor clock whose instants are [`Nanos`] (ours and governor's
/// `FakeRelativeClock`).
pub trait NanoClock: Clock<Instant = Nanos> + Clone + Send + Sync + 'static {}

impl<C: Clock<Instant = Nanos> + Clone + Send + Sync + 'static> NanoClock for C {}

/// Nanoseconds of a clock reading, as a `Duration`.
pub fn since_start(n: Nanos) -> Duration {
    Duration::from(n)
}

/// The daemon's shutdown flag as the throttle sees it; `never()` for
/// callers without one (the demo, `send`).
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Option<watch::Receiver<bool>>);

impl Shutdown {
    pub fn new(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown(Some(rx))
    }

    pub fn never() -> Shutdown {
        Shutdown(None)
    }

    /// True once shutdown began (or its sender is gone).
    pub fn is_set(&self) -> bool {
        match &self.0 {
            None => false,
            Some(rx) => *rx.borrow() || rx.has_changed().is_err(),
        }
    }

    /// Resolves once shutdown begins; never for [`Shutdown::never`].
    pub async fn wait(&self) {
        match &self.0 {
            None => std::future::pending::<()>().await,
            Some(rx) => {
                let mut rx = rx.clone();
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::new();
        assert_eq!(since_start(c.now()), Duration::ZERO);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(since_start(c.now()), Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn shutdown_resolves_when_set_or_dropped() {
        let (tx, rx) = watch::channel(false);
        let s = Shutdown::new(rx);
        assert!(!s.is_set());
        tx.send(true).unwrap();
        assert!(s.is_set());
        s.wait().await;
        let (tx, rx) = watch::channel(false);
        let s = Shutdown::new(rx);
        drop(tx);
        assert!(s.is_set());
        s.wait().await;
        assert!(!Shutdown::never().is_set());
    }
}
