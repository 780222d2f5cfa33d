//! CLI sub-commands (`run`, `check-config`, `send`, `simulate`, `demo`, `campaign`); `main.rs` only parses and calls these.

pub mod campaign;
pub mod check_config;
pub mod demo;
pub mod run;
pub mod send;
pub mod simulate;
