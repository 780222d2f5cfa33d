//! rustls client configs (ring provider): webpki roots plus configured extra CAs and client certs.
