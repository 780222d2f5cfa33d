//! Apple Push Notification service (HTTP/2 provider API).

pub mod auth;
pub mod reason;
pub mod request;
pub mod response;
