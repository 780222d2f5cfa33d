//! Log set-up: JSON lines in production, human-readable on a terminal;
//! `RUST_LOG` overrides the configured filter.
//!
//! House rules for log lines (checked in review): one line per lifecycle
//! event (start, listening, connected, consuming, draining, stopped), never
//! one per notification at info; device tokens only through
//! [`crate::job::DeviceToken::short`]; secrets never (they live in
//! [`crate::config::Secret`], whose `Debug` prints `***`).

use crate::config::LogConfig;

/// Whether logs should be JSON for `format` ("json", "pretty" or "auto":
/// JSON unless stderr is a terminal).
pub fn is_json(format: &str) -> bool {
    match format {
        "json" => true,
        "pretty" => false,
        _ => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    }
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if is_json(&config.format) {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Lines a [`LogSampler`] lets through per window.
pub const SAMPLED_LINES: u32 = 20;
/// The window of a [`LogSampler`].
pub const SAMPLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// At most [`SAMPLED_LINES`] lines per [`SAMPLE_WINDOW`] for an event that
/// can come in floods (a producer publishing a million bad jobs must not
/// write a million log lines; `pushgate_dead_lettered_total` counts them
/// all). The first line of each window says how many were left out before it.
#[derive(Debug)]
pub struct LogSampler {
    state: std::sync::Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: tokio::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for LogSampler {
    fn default() -> Self {
        LogSampler {
            state: std::sync::Mutex::new(Window {
                start: tokio::time::Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl LogSampler {
    /// `Some(lines left out since the last one)` when this line may be
    /// written, `None` when it is to be left out.
    pub fn admit(&self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        let mut w = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(w.start) >= SAMPLE_WINDOW {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < SAMPLED_LINES {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_formats_win() {
        assert!(is_json("json"));
        assert!(!is_json("pretty"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_sampled_and_the_gap_reported() {
        let s = LogSampler::default();
        let admitted: Vec<Option<u64>> = (0..SAMPLED_LINES + 5).map(|_| s.admit()).collect();
        assert!(admitted[..SAMPLED_LINES as usize]
            .iter()
            .all(|a| *a == Some(0)));
        assert!(admitted[SAMPLED_LINES as usize..]
            .iter()
            .all(Option::is_none));
        tokio::time::advance(SAMPLE_WINDOW / 2).await;
        assert_eq!(s.admit(), None, "still the same window");
        tokio::time::advance(SAMPLE_WINDOW / 2).await;
        assert_eq!(
            s.admit(),
            Some(6),
            "the next window's first line counts the gap"
        );
        assert_eq!(s.admit(), Some(0));
    }
}
