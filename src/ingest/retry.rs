//! The retry ladder: which delay queue a retryable recipient goes to (backoff, jitter, Retry-After).

use std::time::Duration;

use crate::config::RetryConfig;

/// Chooses among the configured delay queues.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
    labels: Vec<String>,
    queues: Vec<String>,
    base: Duration,
    jitter: f64,
    max_attempts: u32,
}

impl RetryPolicy {
    pub fn new(cfg: &RetryConfig) -> RetryPolicy {
        let labels: Vec<String> = cfg.delays.iter().map(|d| delay_label(*d)).collect();
        let queues = labels
            .iter()
            .map(|l| format!("{}{l}", cfg.queue_prefix))
            .collect();
        RetryPolicy {
            delays: cfg.delays.clone(),
            labels,
            queues,
            base: cfg.base,
            jitter: cfg.jitter,
            max_attempts: cfg.max_attempts,
        }
    }

    /// Delivery attempts per recipient, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Number of delay queues.
    pub fn len(&self) -> usize {
        self.delays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.delays.is_empty()
    }

    pub fn delay(&self, index: usize) -> Duration {
        self.delays.get(index).copied().unwrap_or_default()
    }

    /// The value of the `pushgate-delay` header that routes to queue `index`.
    pub fn label(&self, index: usize) -> &str {
        self.labels.get(index).map_or("", String::as_str)
    }

    pub fn queue(&self, index: usize) -> &str {
        self.queues.get(index).map_or("", String::as_str)
    }

    /// The delay queue after attempt `attempt` (1-based) failed: the queue
    /// nearest (log scale) to `base * 2^(attempt-1)` jittered by `unit` in
    /// 0..1, then at least `retry_after` when the provider gave one.
    pub fn choose(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> usize {
        let Some(last) = self.delays.len().checked_sub(1) else {
            return 0;
        };
        let exp = attempt.saturating_sub(1).min(30);
        let target = self.base.as_secs_f64() * f64::from(1u32 << exp);
        let jittered = target * (1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0));
        let wanted = jittered.max(1e-3).ln();
        let mut best = 0;
        let mut best_dist = f64::INFINITY;
        for (i, d) in self.delays.iter().enumerate() {
            let dist = (d.as_secs_f64().max(1e-3).ln() - wanted).abs();
            if dist < best_dist {
                best = i;
                best_dist = dist;
            }
        }
        if let Some(ra) = retry_after {
            if self.delays[best] < ra {
                best = self.delays.iter().position(|d| *d >= ra).unwrap_or(last);
            }
        }
        best
    }
}

/// Queue-name suffix of a delay: `200ms`, `5s`, `2m`, `1h`.
pub fn delay_label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetryConfig {
            exchange: "x".into(),
            queue_prefix: "pushgate.retry.".into(),
            delays: [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            max_attempts: 5,
            base: Duration::from_secs(1),
            jitter: 0.3,
        })
    }

    #[test]
    fn labels_and_queue_names() {
        assert_eq!(delay_label(Duration::from_millis(200)), "200ms");
        assert_eq!(delay_label(Duration::from_millis(1500)), "1500ms");
        assert_eq!(delay_label(Duration::from_secs(30)), "30s");
        assert_eq!(delay_label(Duration::from_secs(120)), "2m");
        assert_eq!(delay_label(Duration::from_secs(7200)), "2h");
        assert_eq!(policy().queue(3), "pushgate.retry.2m");
    }

    #[test]
    fn backoff_grows_with_attempts() {
        let p = policy();
        let picks: Vec<usize> = (1..=12).map(|a| p.choose(a, None, 0.5)).collect();
        assert_eq!(picks[0], 0);
        assert!(picks.windows(2).all(|w| w[0] <= w[1]), "{picks:?}");
        assert_eq!(*picks.last().unwrap(), 4);
    }

    #[test]
    fn jitter_moves_choices_near_a_boundary() {
        let p = policy();
        // attempt 3: 4s, between 1s and 5s; jitter spreads it over both sides in log scale.
        let low = p.choose(3, None, 0.0);
        let high = p.choose(3, None, 1.0);
        assert!(low <= high);
        assert_eq!(high, 1);
    }

    #[test]
    fn retry_after_is_respected() {
        let p = policy();
        assert_eq!(p.choose(1, Some(Duration::from_secs(20)), 0.5), 2);
        assert_eq!(p.choose(1, Some(Duration::from_secs(30)), 0.5), 2);
        assert_eq!(p.choose(1, Some(Duration::from_secs(3600)), 0.5), 4);
        assert_eq!(
            p.choose(5, Some(Duration::from_secs(1)), 0.5),
            p.choose(5, None, 0.5)
        );
    }
}
