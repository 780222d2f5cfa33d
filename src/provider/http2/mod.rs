//! pushgate's own HTTP/2 client: one connection ([`conn`]) over the wire
//! layer, frames ([`frame`]) and header compression ([`hpack`], [`huffman`]).
//!
//! Why: the `h2` crate's client is about 45% of the gateway's instructions
//! per notification (its stream bookkeeping, frame queues and HPACK;
//! docs/benchmarks.md, round 17). A provider connection needs far less of
//! HTTP/2: small requests, small answers, no server push, no priorities.
//!
//! Every provider connection of `h2pool` runs on them; they are tested on
//! their own and against h2's server (`tests/http2_wire.rs`,
//! `tests/http2_conn.rs`). The simulator's benchmark mode (`sim::fast`)
//! serves on the same frame and HPACK layer.

pub mod conn;
pub mod frame;
pub mod hpack;
pub mod huffman;

/// Bytes from hex digits (spaces ignored): the RFCs' test vectors.
#[cfg(test)]
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
