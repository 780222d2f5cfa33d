//! Apple Push Notification service (HTTP/2 provider API).

pub mod reason;
