//! CLI sub-commands (`run`, `check-config`, `send`, `simulate`, `demo`); `main.rs` only parses and calls these.

pub mod check_config;
pub mod demo;
pub mod run;
pub mod send;
pub mod simulate;
