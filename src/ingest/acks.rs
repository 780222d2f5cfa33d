//! Batched acks per channel: settles the contiguous finished prefix of
//! delivery tags with one `multiple=true` ack (or nack) per run.

use std::collections::BTreeMap;

/// How a finished delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done: results (and retries / dead letters) are confirmed.
    Ack,
    /// Give it back to the queue (shutdown, unconfirmed publish).
    Requeue,
}

/// One frame to send: settle every unsettled tag `<= tag` on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    pub tag: u64,
    pub disposition: Disposition,
}

/// Delivery tags of one channel that are not yet settled with the broker.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// tag -> `None` while in flight, `Some` once finished.
    outstanding: BTreeMap<u64, Option<Disposition>>,
}

impl AckTracker {
    pub fn new() -> AckTracker {
        AckTracker::default()
    }

    /// A delivery arrived.
    pub fn received(&mut self, tag: u64) {
        self.outstanding.insert(tag, None);
    }

    /// A delivery is finished; settle it with the next [`AckTracker::settle`].
    pub fn finished(&mut self, tag: u64, disposition: Disposition) {
        if let Some(slot) = self.outstanding.get_mut(&tag) {
            *slot = Some(disposition);
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
        n
    }

    /// The frames settling the finished prefix: one per run of equal
    /// dispositions, each `multiple=true` up to the run's last tag.
    pub fn settle(&mut self) -> Vec<Settle> {
        let mut out: Vec<Settle> = Vec::new();
        while let Some(entry) = self.outstanding.first_entry() {
            let Some(disposition) = *entry.get() else {
                break;
            };
            let tag = *entry.key();
            entry.remove();
            match out.last_mut() {
                Some(last) if last.disposition == disposition => last.tag = tag,
                _ => out.push(Settle { tag, disposition }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::{Ack, Requeue};

    #[test]
    fn acks_only_the_contiguous_prefix_in_one_frame() {
        let mut t = AckTracker::new();
        for tag in 1..=5 {
            t.received(tag);
        }
        t.finished(2, Ack);
        t.finished(3, Ack);
        assert!(t.settle().is_empty(), "1 is still in flight");
        t.finished(1, Ack);
        assert_eq!(
            t.settle(),
            vec![Settle {
                tag: 3,
                disposition: Ack
            }]
        );
        assert_eq!(t.len(), 2);
        t.finished(5, Ack);
        assert!(t.settle().is_empty());
        t.finished(4, Ack);
        assert_eq!(
            t.settle(),
            vec![Settle {
                tag: 5,
                disposition: Ack
            }]
        );
        assert!(t.is_empty());
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
            t.settle(),
            vec![
                Settle {
                    tag: 10,
                    disposition: Ack
                },
                Settle {
                    tag: 12,
                    disposition: Requeue
                },
                Settle {
                    tag: 13,
                    disposition: Ack
                },
                Settle {
                    tag: 15,
                    disposition: Requeue
                },
            ]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn unknown_tags_are_ignored() {
        let mut t = AckTracker::new();
        t.finished(7, Ack);
        assert!(t.settle().is_empty());
    }
}
