//! Batched acks per channel: settles the contiguous finished prefix of
//! delivery tags with one `multiple=true` ack (or nack) per run.
//!
//! Under load the prefix is held back until it is a batch long (half of
//! `blocked_limit`, i.e. a quarter of the prefetch window), so that a busy
//! channel sends one ack frame per batch instead of one per job: the worker
//! asks to settle after every finished job, and an ack per job costs a
//! broker frame and an await each (the load test measured ~4x the
//! throughput of the bare consumer with `multiple` acks every 64 versus
//! every 1). The prefix is never held when nothing after it is still in
//! flight, so the last jobs of a burst are acked at once and no ack waits
//! for a job that does not exist.
//!
//! A slow job at the head must not stall the window either: when
//! `blocked_limit` finished deliveries wait behind the same one in flight
//! for the tracker's patience ([`AckTracker::new`]), they are settled one
//! frame each (AMQP's `multiple` would take the head along). The patience
//! keeps ordinary reordering out of that rule: with several provider
//! connections the jobs of one connection finish a few milliseconds after
//! the others', and settling on the count alone sent 20,753 ack frames for
//! 200,000 jobs over four connections (224 over one), each a frame the
//! broker pays for, and halved the gateway's rate (docs/benchmarks.md,
//! round 8).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How a finished delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done: results (and retries / dead letters) are confirmed.
    Ack,
    /// Give it back to the queue (shutdown, unconfirmed publish).
    Requeue,
}

impl Disposition {
    /// Ack only when both parts of a job's publishing were confirmed.
    pub fn and(self, other: Disposition) -> Disposition {
        match (self, other) {
            (Disposition::Ack, Disposition::Ack) => Disposition::Ack,
            _ => Disposition::Requeue,
        }
    }
}

/// One frame to send: settle `tag`, and with `multiple` every unsettled
/// tag below it on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    pub tag: u64,
    pub multiple: bool,
    pub disposition: Disposition,
}

/// Delivery tags of one channel that are not yet settled with the broker.
#[derive(Debug)]
pub struct AckTracker {
    /// tag -> `None` while in flight, `Some` once finished.
    outstanding: BTreeMap<u64, Option<Disposition>>,
    /// How many of `outstanding` are `Some`: kept, not counted, because
    /// `settle` runs after every finished job and the map holds up to the
    /// prefetch window (counting was 3.5% of single-recipient jobs' instructions).
    finished: usize,
    /// How long `blocked_limit` finished deliveries wait behind one head
    /// before they are settled singly.
    patience: Duration,
    /// The head in flight that `blocked_limit` or more finished deliveries
    /// wait behind, and since when: the slow-head clock.
    stall: Option<(u64, Instant)>,
}

impl AckTracker {
    /// A tracker whose slow-head rule waits `patience` (see the module docs).
    pub fn new(patience: Duration) -> AckTracker {
        AckTracker {
            outstanding: BTreeMap::new(),
            finished: 0,
            patience,
            stall: None,
        }
    }

    /// When the slow-head rule may settle the blocked deliveries, if a
    /// head is holding `blocked_limit` of them back: call
    /// [`AckTracker::settle`] then, even if no job finished meanwhile.
    pub fn recheck_at(&self) -> Option<Instant> {
        self.stall.map(|(_, since)| since + self.patience)
    }

    /// A delivery arrived.
    pub fn received(&mut self, tag: u64) {
        if let Some(Some(_)) = self.outstanding.insert(tag, None) {
            self.finished -= 1;
        }
    }

    /// A delivery is finished; settle it with the next [`AckTracker::settle`].
    pub fn finished(&mut self, tag: u64, disposition: Disposition) {
        if let Some(slot) = self.outstanding.get_mut(&tag) {
            if slot.replace(disposition).is_none() {
                self.finished += 1;
            }
        }
    }

    /// Deliveries not yet settled (in flight or finished behind one in flight).
    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Marks every delivery still in flight as `Requeue` (end of drain);
    /// returns how many there were.
    pub fn requeue_unfinished(&mut self) -> usize {
        let mut n = 0;
        for slot in self.outstanding.values_mut().filter(|s| s.is_none()) {
            *slot = Some(Disposition::Requeue);
            n += 1;
        }
        self.finished += n;
        n
    }

    /// The frames settling the finished prefix: one per run of equal
    /// dispositions, each `multiple=true` up to the run's last tag. When
    /// `blocked_limit` or more finished deliveries have waited behind the
    /// same one in flight for the tracker's patience, they are settled one
    /// by one, so that a slow job at the head never stalls the prefetch
    /// window.
    pub fn settle(&mut self, blocked_limit: usize, now: Instant) -> Vec<Settle> {
        let mut out: Vec<Settle> = Vec::new();
        if self.hold_prefix(blocked_limit, now) {
            return out;
        }
        while let Some(entry) = self.outstanding.first_entry() {
            let Some(disposition) = *entry.get() else {
                break;
            };
            let tag = *entry.key();
            entry.remove();
            self.finished -= 1;
            match out.last_mut() {
                Some(last) if last.disposition == disposition => last.tag = tag,
                _ => out.push(Settle {
                    tag,
                    multiple: true,
                    disposition,
                }),
            }
        }
        // The first left, if any, is in flight: the finished ones are behind it.
        let head = self.outstanding.keys().next().copied();
        let blocked = self.finished;
        if head.is_some_and(|head| self.slow_head(head, blocked, blocked_limit, now)) {
            self.finished = 0;
            self.stall = None;
            self.outstanding.retain(|&tag, d| match d {
                Some(disposition) => {
                    out.push(Settle {
                        tag,
                        multiple: false,
                        disposition: *disposition,
                    });
                    false
                }
                None => true,
            });
        } else if head.is_none() {
            self.stall = None;
        }
        out
    }

    /// Whether to keep the finished prefix for a later, bigger frame: it is
    /// shorter than a batch (`blocked_limit / 2`) and a delivery after it is
    /// still in flight (whose end will call `settle` again). Finished
    /// deliveries blocked behind an in-flight one are not held here once
    /// the slow-head rule of [`AckTracker::settle`] settles them.
    fn hold_prefix(&mut self, blocked_limit: usize, now: Instant) -> bool {
        let batch = (blocked_limit / 2).max(1);
        let mut prefix = 0;
        let mut head = None;
        for (&tag, d) in &self.outstanding {
            if d.is_none() {
                head = Some(tag);
                break;
            }
            prefix += 1;
            if prefix >= batch {
                return false;
            }
        }
        let Some(head) = head else {
            return false;
        };
        let blocked = self.finished - prefix;
        !self.slow_head(head, blocked, blocked_limit, now)
    }

    /// Whether `blocked` finished deliveries behind `head` (in flight) are
    /// to be settled singly: at least `blocked_limit` of them, behind the
    /// same head for the tracker's patience. Starts the clock when they
    /// first reach the limit behind a head, and stops it below.
    fn slow_head(&mut self, head: u64, blocked: usize, blocked_limit: usize, now: Instant) -> bool {
        if blocked == 0 || blocked < blocked_limit {
            self.stall = None;
            return false;
        }
        let since = match self.stall {
            Some((tag, since)) if tag == head => since,
            _ => {
                self.stall = Some((head, now));
                now
            }
        };
        now.saturating_duration_since(since) >= self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::{Ack, Requeue};

    const PATIENCE: Duration = Duration::from_millis(500);

    /// A tracker with `PATIENCE` that received `tags`.
    fn tracking(tags: std::ops::RangeInclusive<u64>) -> AckTracker {
        let mut t = AckTracker::new(PATIENCE);
        for tag in tags {
            t.received(tag);
        }
        t
    }

    fn multi(tag: u64, disposition: Disposition) -> Settle {
        Settle {
            tag,
            multiple: true,
            disposition,
        }
    }

    fn single(tag: u64, disposition: Disposition) -> Settle {
        Settle {
            tag,
            multiple: false,
            disposition,
        }
    }

    #[test]
    fn acks_only_the_contiguous_prefix_in_one_frame() {
        let mut t = AckTracker::new(Duration::ZERO);
        for tag in 1..=5 {
            t.received(tag);
        }
        t.finished(2, Ack);
        t.finished(3, Ack);
        assert!(
            t.settle(4, Instant::now()).is_empty(),
            "1 is still in flight"
        );
        t.finished(1, Ack);
        assert_eq!(
            t.settle(4, Instant::now()),
            vec![multi(3, Ack)],
            "a batch of 2 is due"
        );
        assert_eq!(t.len(), 2);
        t.finished(5, Ack);
        assert!(t.settle(4, Instant::now()).is_empty());
        t.finished(4, Ack);
        assert_eq!(t.settle(4, Instant::now()), vec![multi(5, Ack)]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_busy_channel_acks_once_per_batch() {
        let mut t = AckTracker::new(Duration::ZERO);
        for tag in 1..=20 {
            t.received(tag);
        }
        let mut frames = Vec::new();
        for tag in 1..=12 {
            t.finished(tag, Ack);
            frames.extend(t.settle(16, Instant::now()));
        }
        assert_eq!(frames, vec![multi(8, Ack)], "batch = 16 / 2");
        for tag in 13..=20 {
            t.finished(tag, Ack);
            frames.extend(t.settle(16, Instant::now()));
        }
        assert_eq!(frames, vec![multi(8, Ack), multi(16, Ack), multi(20, Ack)]);
        t.received(21);
        t.finished(21, Ack);
        assert_eq!(
            t.settle(16, Instant::now()),
            vec![multi(21, Ack)],
            "nothing in flight: no wait"
        );
    }

    #[test]
    fn runs_of_requeues_are_separate_frames() {
        let mut t = AckTracker::new(Duration::ZERO);
        for tag in 10..=15 {
            t.received(tag);
        }
        t.finished(10, Ack);
        t.finished(11, Requeue);
        t.finished(13, Ack);
        assert_eq!(t.requeue_unfinished(), 3);
        assert_eq!(
            t.settle(9, Instant::now()),
            vec![
                multi(10, Ack),
                multi(12, Requeue),
                multi(13, Ack),
                multi(15, Requeue),
            ]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_slow_head_does_not_stall_the_window() {
        let mut t = AckTracker::new(Duration::ZERO);
        for tag in 1..=6 {
            t.received(tag);
        }
        t.finished(2, Ack);
        t.finished(3, Ack);
        assert!(
            t.settle(3, Instant::now()).is_empty(),
            "below the limit: wait for the head"
        );
        t.finished(5, Requeue);
        assert_eq!(
            t.settle(3, Instant::now()),
            vec![single(2, Ack), single(3, Ack), single(5, Requeue)]
        );
        t.finished(1, Ack);
        t.finished(4, Ack);
        assert_eq!(t.settle(3, Instant::now()), vec![multi(4, Ack)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_head_only_reordered_is_waited_for() {
        let t0 = Instant::now();
        let mut t = tracking(1..=8);
        for tag in 2..=5 {
            t.finished(tag, Ack);
        }
        assert!(
            t.settle(4, t0).is_empty(),
            "4 blocked behind 1: the clock starts"
        );
        assert_eq!(t.recheck_at(), Some(t0 + PATIENCE));
        assert!(t.settle(4, t0 + PATIENCE / 2).is_empty());
        t.finished(1, Ack);
        assert_eq!(
            t.settle(4, t0 + PATIENCE / 2),
            vec![multi(5, Ack)],
            "the head came: one frame, no single acks"
        );
        assert_eq!(t.recheck_at(), None);
    }

    #[test]
    fn a_head_slow_past_the_patience_is_passed_singly() {
        let t0 = Instant::now();
        let mut t = tracking(1..=8);
        for tag in [2, 3, 4, 6] {
            t.finished(tag, Ack);
        }
        assert!(t.settle(4, t0).is_empty());
        t.finished(7, Requeue);
        let almost = t0 + PATIENCE - Duration::from_millis(1);
        assert!(
            t.settle(4, almost).is_empty(),
            "the same head: the clock runs on"
        );
        assert_eq!(t.recheck_at(), Some(t0 + PATIENCE));
        assert_eq!(
            t.settle(4, t0 + PATIENCE),
            vec![
                single(2, Ack),
                single(3, Ack),
                single(4, Ack),
                single(6, Ack),
                single(7, Requeue)
            ]
        );
        assert_eq!(t.recheck_at(), None, "nothing blocked now");
        assert_eq!(t.len(), 3, "1, 5 and 8 in flight");
    }

    #[test]
    fn a_new_head_starts_a_new_clock() {
        let t0 = Instant::now();
        let mut t = tracking(1..=12);
        for tag in 3..=10 {
            t.finished(tag, Ack);
        }
        assert!(t.settle(4, t0).is_empty(), "8 behind 1");
        t.finished(1, Ack);
        let later = t0 + PATIENCE;
        assert!(
            t.settle(4, later).is_empty(),
            "1 is a short prefix; 8 are still blocked, now behind 2"
        );
        assert_eq!(
            t.recheck_at(),
            Some(later + PATIENCE),
            "2 gets its own patience"
        );
        assert!(t.settle(4, later + PATIENCE / 2).is_empty());
        let frames = t.settle(4, later + PATIENCE);
        assert_eq!(frames[0], multi(1, Ack), "the prefix in one frame");
        assert_eq!(
            &frames[1..],
            &(3..=10).map(|tag| single(tag, Ack)).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn unknown_tags_are_ignored() {
        let mut t = AckTracker::new(Duration::ZERO);
        t.finished(7, Ack);
        assert!(t.settle(1, Instant::now()).is_empty());
    }

    #[test]
    fn the_finished_count_matches_the_map_whatever_the_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut t = AckTracker::new(Duration::ZERO);
        let mut next = 1_u64;
        for _ in 0..20_000 {
            match rng.u8(..10) {
                0..=3 => {
                    t.received(next);
                    next += 1;
                }
                4..=7 => {
                    let tag = rng.u64(next.saturating_sub(40).max(1)..next.max(2));
                    let d = if rng.u8(..8) == 0 { Requeue } else { Ack };
                    t.finished(tag, d);
                }
                8 => {
                    let frames = t.settle(rng.usize(1..32), Instant::now());
                    assert!(
                        frames.windows(2).all(|w| w[0].tag < w[1].tag),
                        "frames in tag order"
                    );
                }
                _ => {
                    if rng.u8(..50) == 0 {
                        t.requeue_unfinished();
                    }
                }
            }
            let counted = t.outstanding.values().filter(|d| d.is_some()).count();
            assert_eq!(t.finished, counted);
        }
    }
}
