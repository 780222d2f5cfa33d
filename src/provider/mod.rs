//! Delivery to push providers: the shared HTTP/2 pool and TLS setup, and one
//! module per provider with the same files (auth, request, response, reason).

pub mod apns;
pub mod fcm;
pub mod h2pool;
pub mod tls;
pub mod webpush;
