//! The wire layer of pushgate's own HTTP/2 client: frames ([`frame`]) and
//! header compression ([`hpack`], [`huffman`]).
//!
//! Why: the `h2` crate's client is about 45% of the gateway's instructions
//! per notification (its stream bookkeeping, frame queues and HPACK;
//! docs/benchmarks.md, round 17). A provider connection needs far less of
//! HTTP/2: small requests, small answers, no server push, no priorities.
//!
//! Status: these pieces are complete and tested on their own and against
//! h2's server (`tests/http2_wire.rs`); the connection that uses them
//! (streams, flow control, GOAWAY, keepalive) and its place in
//! `h2pool` come next. Until then every provider connection goes through h2.

pub mod frame;
pub mod hpack;
pub mod huffman;
