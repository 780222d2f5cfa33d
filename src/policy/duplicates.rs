//! DuplicatePlatformId: the same device token twice in one campaign is sent
//! once. Each token (64-bit hash) is claimed by the first job that sends to
//! it; the same job may send to it again (a retry or a broker redelivery of
//! that job), another job of the campaign may not. Memory is bounded: at
//! most `tokens` per campaign (beyond, new tokens are not checked) and
//! `campaigns` campaigns (the least recently used is forgotten).
//!
//! The same token twice within one job is found by the dispatcher before
//! any claim ([`first_in_job`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::keys::KeyMap;

#[derive(Debug, Default)]
struct Campaign {
    /// token hash -> hash of the job that claimed it.
    tokens: KeyMap<u64>,
    last_used: u64,
    /// Said once that the token cap was reached.
    warned: bool,
}

#[derive(Debug)]
struct Inner {
    campaigns: HashMap<String, Campaign>,
    tick: u64,
}

/// The claims of every tracked campaign.
#[derive(Debug)]
pub struct Duplicates {
    inner: Mutex<Inner>,
    max_campaigns: usize,
    max_tokens: usize,
}

impl Duplicates {
    pub fn new(max_campaigns: usize, max_tokens: usize) -> Duplicates {
        Duplicates {
            inner: Mutex::new(Inner {
                campaigns: HashMap::new(),
                tick: 0,
            }),
            max_campaigns: max_campaigns.max(1),
            max_tokens,
        }
    }

    /// Claims `token` in `campaign` for `job`; false when another job of
    /// the campaign claimed it first (a duplicate: do not send).
    pub fn claim(&self, campaign: &str, token: u64, job: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.campaigns.contains_key(campaign) && inner.campaigns.len() >= self.max_campaigns {
            let oldest = inner
                .campaigns
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.campaigns.remove(&k);
            }
        }
        let c = inner.campaigns.entry(campaign.to_owned()).or_default();
        c.last_used = tick;
        if let Some(&owner) = c.tokens.get(&token) {
            return owner == job;
        }
        if c.tokens.len() >= self.max_tokens {
            if !c.warned {
                c.warned = true;
                tracing::warn!(campaign, tokens = self.max_tokens,
                    "duplicate-token check: campaign is over policy.duplicate_tokens_per_campaign; new tokens are not checked");
            }
            return true;
        }
        c.tokens.insert(token, job);
        true
    }

    /// Campaigns tracked now.
    pub fn campaigns(&self) -> usize {
        self.inner.lock().map(|i| i.campaigns.len()).unwrap_or(0)
    }
}

/// For each of `keys` (one per recipient, `None` = not checked): false for
/// a key already seen earlier in the same list.
pub fn first_in_job(keys: impl IntoIterator<Item = Option<u64>>) -> Vec<bool> {
    let mut seen = HashSet::new();
    keys.into_iter()
        .map(|k| k.is_none_or(|k| seen.insert(k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_sent_once_per_campaign_but_its_job_may_retry() {
        let d = Duplicates::new(4, 100);
        assert!(d.claim("spring", 1, 100));
        assert!(d.claim("spring", 1, 100), "retry or redelivery of job 100");
        assert!(!d.claim("spring", 1, 200), "another job: duplicate");
        assert!(d.claim("summer", 1, 200), "another campaign");
    }

    #[test]
    fn memory_is_bounded_per_campaign_and_in_campaigns() {
        let d = Duplicates::new(2, 3);
        for t in 0..5 {
            assert!(d.claim("a", t, 1));
        }
        assert!(!d.claim("a", 2, 9), "claimed within the cap");
        assert!(d.claim("a", 4, 9), "over the cap: not remembered");
        d.claim("b", 1, 1);
        d.claim("a", 1, 1);
        d.claim("c", 1, 1);
        assert_eq!(d.campaigns(), 2);
        assert!(d.claim("b", 1, 7), "b was forgotten (least recently used)");
        assert!(!d.claim("c", 1, 7), "c is remembered");
    }

    #[test]
    fn duplicates_within_one_job() {
        let keys = [Some(1), Some(2), Some(1), None, None, Some(2), Some(3)];
        assert_eq!(
            first_in_job(keys),
            vec![true, true, false, true, true, false, true]
        );
    }
}
