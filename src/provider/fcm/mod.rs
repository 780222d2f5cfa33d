//! Firebase Cloud Messaging HTTP v1.

pub mod reason;
