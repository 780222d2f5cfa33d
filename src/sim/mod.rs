//! Protocol-faithful APNs and FCM simulators over TLS and HTTP/2, for tests, the demo and load tests.
pub mod webpush;
