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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_formats_win() {
        assert!(is_json("json"));
        assert!(!is_json("pretty"));
    }
}
