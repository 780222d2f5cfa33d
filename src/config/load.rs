//! Reads the TOML file, applies `PUSHGATE_*` overrides and validates into [`super::Config`].

use std::path::Path;

/// Everything wrong with a config, one clear message per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid config:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Loads and validates the config at `path` (TODO: config helper).
pub fn load(path: &Path) -> Result<super::Config, ConfigError> {
    Err(ConfigError {
        problems: vec![format!(
            "{}: config loading not implemented yet",
            path.display()
        )],
    })
}
