//! CLI sub-commands other than the daemon; `main.rs` only parses and calls these.

pub mod check_config;
pub mod run;
pub mod send;
pub mod simulate;
