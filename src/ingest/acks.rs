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

use std::collections::BTreeMap;

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
#[derive(Debug, Default)]
pub struct AckTracker {
    /// tag -> `None` while in flight, `Some` once finished.
    outstanding: BTreeMap<u64, Option<Disposition>>,
    /// How many of `outstanding` are `Some`: kept, not counted, because
    /// `settle` runs after every finished job and the map holds up to the
    /// prefetch window (counting was 3.5% of single-recipient jobs' instructions).
    finished: usize,
}

impl AckTracker {
    pub fn new() -> AckTracker {
        AckTracker::default()
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
    /// `blocked_limit` or more finished deliveries wait behind one still in
    /// flight, they are settled one by one, so that a slow job at the head
    /// never stalls the prefetch window.
    pub fn settle(&mut self, blocked_limit: usize) -> Vec<Settle> {
        let mut out: Vec<Settle> = Vec::new();
        if self.hold_prefix(blocked_limit) {
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
        let blocked = self.finished;
        if blocked > 0 && blocked >= blocked_limit {
            self.finished = 0;
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
        }
        out
    }

    /// Whether to keep the finished prefix for a later, bigger frame: it is
    /// shorter than a batch (`blocked_limit / 2`) and a delivery after it is
    /// still in flight (whose end will call `settle` again). Finished
    /// deliveries blocked behind an in-flight one are not held here: the
    /// `blocked_limit` rule of [`AckTracker::settle`] handles them.
    fn hold_prefix(&self, blocked_limit: usize) -> bool {
        let batch = (blocked_limit / 2).max(1);
        let mut prefix = 0;
        for d in self.outstanding.values() {
            if d.is_none() {
                // In flight after a short prefix: hold, unless finished
                // deliveries pile up behind it (the slow-head rule below).
                let blocked = self.finished - prefix;
                return prefix < batch && !(blocked > 0 && blocked >= blocked_limit);
            }
            prefix += 1;
            if prefix >= batch {
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::{Ack, Requeue};

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
        let mut t = AckTracker::new();
        for tag in 1..=5 {
            t.received(tag);
        }
        t.finished(2, Ack);
        t.finished(3, Ack);
        assert!(t.settle(4).is_empty(), "1 is still in flight");
        t.finished(1, Ack);
        assert_eq!(t.settle(4), vec![multi(3, Ack)], "a batch of 2 is due");
        assert_eq!(t.len(), 2);
        t.finished(5, Ack);
        assert!(t.settle(4).is_empty());
        t.finished(4, Ack);
        assert_eq!(t.settle(4), vec![multi(5, Ack)]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_busy_channel_acks_once_per_batch() {
        let mut t = AckTracker::new();
        for tag in 1..=20 {
            t.received(tag);
        }
        let mut frames = Vec::new();
        for tag in 1..=12 {
            t.finished(tag, Ack);
            frames.extend(t.settle(16));
        }
        assert_eq!(frames, vec![multi(8, Ack)], "batch = 16 / 2");
        for tag in 13..=20 {
            t.finished(tag, Ack);
            frames.extend(t.settle(16));
        }
        assert_eq!(frames, vec![multi(8, Ack), multi(16, Ack), multi(20, Ack)]);
        t.received(21);
        t.finished(21, Ack);
        assert_eq!(
            t.settle(16),
            vec![multi(21, Ack)],
            "nothing in flight: no wait"
        );
    }

    #[test]
    fn runs_of_requeues_are_separate_frames() {
        let mut t = AckTracker::new();
        for tag in 10..=15 {
            t.received(tag);
        }
        t.finished(10, Ack);
        t.finished(11, Requeue);
        t.finished(13, Ack);
        assert_eq!(t.requeue_unfinished(), 3);
        assert_eq!(
            t.settle(9),
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
        let mut t = AckTracker::new();
        for tag in 1..=6 {
            t.received(tag);
        }
        t.finished(2, Ack);
        t.finished(3, Ack);
        assert!(t.settle(3).is_empty(), "below the limit: wait for the head");
        t.finished(5, Requeue);
        assert_eq!(
            t.settle(3),
            vec![single(2, Ack), single(3, Ack), single(5, Requeue)]
        );
        t.finished(1, Ack);
        t.finished(4, Ack);
        assert_eq!(t.settle(3), vec![multi(4, Ack)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn unknown_tags_are_ignored() {
        let mut t = AckTracker::new();
        t.finished(7, Ack);
        assert!(t.settle(1).is_empty());
    }

    #[test]
    fn the_finished_count_matches_the_map_whatever_the_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut t = AckTracker::new();
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
                    let frames = t.settle(rng.usize(1..32));
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
