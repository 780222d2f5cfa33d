//! Firebase Cloud Messaging HTTP v1.

pub mod auth;
pub mod reason;
pub mod request;
pub mod response;
