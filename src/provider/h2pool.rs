//! Pooled, long-lived HTTP/2 client connections to one endpoint.
