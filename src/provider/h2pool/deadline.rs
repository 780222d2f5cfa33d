//! Request deadlines that share timers: the requests whose deadlines fall
//! within one tick of each other wait on one [`Epoch`] and one timer.
//!
//! A tokio timer per request cost about 1,300 instructions of the gateway's
//! 47,000-69,000 per notification (registering it with the timer driver,
//! then removing it again when the answer came first; docs/benchmarks.md,
//! round 11). All of a pool's requests have the same timeout, so their
//! deadlines arrive in order, and a tick of at most 100 ms (a 64th of the
//! timeout) needs one timer task per tick instead. A request then only joins
//! its epoch's waiter list, and only while its answer is outstanding.
//!
//! An epoch never passes before the deadline it was asked for, and at most
//! one tick after it.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The tick for a timeout: a 64th of it, between 1 ms and 100 ms.
fn tick_for(timeout: Duration) -> Duration {
    (timeout / 64).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// Hands out shared epochs for one pool's request deadlines.
pub(super) struct Deadlines {
    tick: Duration,
    /// The epoch that requests join while their deadline is within its tick.
    current: Mutex<Option<Arc<Epoch>>>,
}

impl Deadlines {
    pub(super) fn new(timeout: Duration) -> Deadlines {
        Deadlines {
            tick: tick_for(timeout),
            current: Mutex::new(None),
        }
    }

    /// The epoch for `deadline`: it passes at or after `deadline`, and no
    /// more than one tick after. Must be called inside a Tokio runtime (a
    /// new epoch spawns its timer task).
    pub(super) fn epoch(&self, deadline: Instant) -> Arc<Epoch> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = current.as_ref() {
            if deadline <= e.at && deadline + self.tick >= e.at {
                return Arc::clone(e);
            }
        }
        let epoch = Arc::new(Epoch {
            at: deadline + self.tick,
            passed: AtomicBool::new(false),
            notify: Notify::new(),
        });
        // An earlier deadline than the current epoch's tick (a retry's,
        // kept from its first attempt) gets an epoch of its own.
        if current.as_ref().is_none_or(|e| deadline > e.at) {
            *current = Some(Arc::clone(&epoch));
        }
        drop(current);
        let timer = Arc::clone(&epoch);
        tokio::spawn(async move {
            tokio::time::sleep_until(timer.at).await;
            timer.pass();
        });
        epoch
    }
}

/// A point in time that many requests wait for together.
pub(super) struct Epoch {
    at: Instant,
    passed: AtomicBool,
    notify: Notify,
}

impl Epoch {
    /// When the epoch passes.
    #[cfg(test)]
    pub(super) fn at(&self) -> Instant {
        self.at
    }

    fn pass(&self) {
        self.passed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// `work`'s output, or `None` when the epoch passes first.
    pub(super) async fn before<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut passed = pin!(self.passed());
        poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            passed.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    /// Completes once the epoch has passed. A waiter joins the epoch's list
    /// on its first pending poll and leaves it when dropped.
    async fn passed(&self) {
        // Created before the flag is read: a `notify_waiters` after this
        // point completes it even before its first poll.
        let notified = self.notify.notified();
        if self.passed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_64th_of_the_timeout_within_bounds() {
        assert_eq!(
            tick_for(Duration::from_secs(10)),
            Duration::from_millis(100)
        );
        assert_eq!(
            tick_for(Duration::from_millis(640)),
            Duration::from_millis(10)
        );
        assert_eq!(
            tick_for(Duration::from_millis(20)),
            Duration::from_millis(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_within_a_tick_share_an_epoch_that_passes_on_time() {
        let d = Deadlines::new(Duration::from_millis(640));
        let start = Instant::now();
        let first = d.epoch(start + Duration::from_millis(640));
        let later = d.epoch(start + Duration::from_millis(645));
        let next = d.epoch(start + Duration::from_millis(651));
        assert!(Arc::ptr_eq(&first, &later));
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(first.at(), start + Duration::from_millis(650));
        assert_eq!(next.at(), start + Duration::from_millis(661));

        // Not a moment before the epoch: the latest deadline it holds is 645 ms.
        let waiting = tokio::spawn({
            let first = Arc::clone(&first);
            async move {
                first.passed().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(649)).await;
        assert!(!waiting.is_finished());
        let passed_at = waiting.await.unwrap();
        assert_eq!(passed_at, start + Duration::from_millis(650));
        // A waiter that comes after the epoch passed does not wait.
        first.passed().await;
        assert_eq!(Instant::now(), passed_at);
    }

    #[tokio::test(start_paused = true)]
    async fn work_ends_with_its_output_or_when_the_epoch_passes() {
        let d = Deadlines::new(Duration::from_millis(640));
        let start = Instant::now();
        let epoch = d.epoch(start + Duration::from_millis(640));
        let quick = epoch.before(tokio::time::sleep(Duration::from_millis(649)));
        assert_eq!(quick.await, Some(()));
        let slow = epoch.before(tokio::time::sleep(Duration::from_secs(5)));
        assert_eq!(slow.await, None);
        assert_eq!(Instant::now(), start + Duration::from_millis(650));
        // Ready work still counts after the epoch.
        assert_eq!(epoch.before(async { 7 }).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_gets_its_own_epoch_and_keeps_the_current_one() {
        let d = Deadlines::new(Duration::from_millis(640));
        let start = Instant::now();
        let current = d.epoch(start + Duration::from_millis(700));
        let retry = d.epoch(start + Duration::from_millis(600));
        assert!(!Arc::ptr_eq(&current, &retry));
        assert_eq!(retry.at(), start + Duration::from_millis(610));
        let again = d.epoch(start + Duration::from_millis(705));
        assert!(Arc::ptr_eq(&current, &again));
        retry.passed().await;
        assert_eq!(Instant::now(), start + Duration::from_millis(610));
    }
}
