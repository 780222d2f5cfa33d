//! pushgate: a push delivery gateway.
//!
//! Producers publish send jobs to RabbitMQ; pushgate validates each job, fans
//! its recipients out, delivers every notification to APNs, FCM HTTP v1 or Web
//! Push over pooled HTTP/2 connections, maps each provider answer to one
//! stable error code, and publishes a result for every recipient.
//!
//! ```text
//!  RabbitMQ ──> job (decode, validate) ──> recipients ──> throttle ──> provider
//!                                                                        │
//!     ack <── results confirmed <── result events <── outcome (code) <───┘
//! ```
//!
//! Module map:
//! - [`config`]: the TOML config, env overrides, validation into typed config, secrets.
//! - [`job`]: the send-job schema, its validation and `{{var}}` templates.
//! - [`outcome`]: the error codes, their labels and classes, and the one table
//!   from provider answers to codes.
//! - [`provider`]: the HTTP/2 pool and one module per provider (APNs, FCM).
//! - [`sim`]: protocol-faithful APNs and FCM simulators for tests, demo and load tests.
//! - [`ingest`]: the RabbitMQ side: topology, consumers, batched acks, retries, dead-lettering;
//!   the AMQP clients sit in `ingest::client` only (pushgate's own consumer for
//!   the input queues, lapin for the rest).
//! - [`dispatch`]: fans a job's recipients out to a [`dispatch::Deliver`] within bounds and classifies outcomes.
//! - [`throttle`]: token buckets per app and provider, campaign and device token; adaptive slowdown.
//! - [`policy`]: campaign stops, duplicate tokens, the credentials circuit breaker and its guard.
//! - [`report`]: the result and token-feedback messages.
//! - [`app`]: wiring and lifecycle of the daemon (`pushgate run`), reconnects, shutdown.
//! - [`telemetry`]: Prometheus metrics, campaign stats, impression/click events,
//!   the admin HTTP server and log set-up.
//! - [`alloc`]: the binary's global allocator (mimalloc, called the way `malloc` is).
//! - [`cmd`]: the CLI sub-commands that are not the daemon (`check-config`, `send`, `simulate`).

pub mod alloc;
pub mod app;
pub mod cmd;
pub mod config;
pub mod dispatch;
pub mod ingest;
pub mod job;
pub mod outcome;
pub mod policy;
pub mod provider;
pub mod report;
pub mod sim;
pub mod telemetry;
pub mod throttle;
