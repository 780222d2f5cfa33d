//! A raw HTTP/2 frame client, to see SETTINGS, RST_STREAM and GOAWAY exactly as sent.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::common::tls_connect;

pub const HEADERS: u8 = 0x1;
pub const DATA: u8 = 0x0;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;

pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub struct Raw {
    tls: TlsStream<TcpStream>,
}

/// The value of a setting in a SETTINGS payload.
pub fn setting(payload: &[u8], id: u16) -> Option<u32> {
    payload
        .chunks_exact(6)
        .filter(|e| u16::from_be_bytes([e[0], e[1]]) == id)
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
        .next_back()
}

/// HPACK integer with an N-bit prefix.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Literal header field without indexing, new name, no Huffman.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let mut tls = tls_connect(addr).await;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Raw { tls };
        raw.write(SETTINGS, 0, 0, &[]).await;
        raw
    }

    pub async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.tls.write_all(&f).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    pub async fn read(&mut self) -> Frame {
        let fut = async {
            let mut hdr = [0u8; 9];
            self.tls.read_exact(&mut hdr).await.unwrap();
            let len = u32::from_be_bytes([0, hdr[0], hdr[1], hdr[2]]) as usize;
            let mut payload = vec![0; len];
            self.tls.read_exact(&mut payload).await.unwrap();
            Frame {
                kind: hdr[3],
                flags: hdr[4],
                stream: u32::from_be_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]) & 0x7fff_ffff,
                payload,
            }
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .expect("frame within 5 s")
    }

    /// Reads until the server's first non-ACK SETTINGS, ACKs it, returns its payload.
    pub async fn server_settings(&mut self) -> Vec<u8> {
        loop {
            let f = self.read().await;
            if f.kind == SETTINGS && f.flags & 1 == 0 {
                self.write(SETTINGS, 1, 0, &[]).await;
                return f.payload;
            }
        }
    }

    /// HEADERS for an APNs push (END_HEADERS; END_STREAM if `end`).
    pub async fn headers(&mut self, stream: u32, token: &str, jwt: Option<&str>, end: bool) {
        let mut block = Vec::new();
        hpack_literal(&mut block, ":method", "POST");
        hpack_literal(&mut block, ":scheme", "https");
        hpack_literal(&mut block, ":path", &format!("/3/device/{token}"));
        hpack_literal(&mut block, ":authority", "localhost");
        hpack_literal(&mut block, "apns-topic", "com.example.shop");
        if let Some(jwt) = jwt {
            hpack_literal(&mut block, "authorization", &format!("bearer {jwt}"));
        }
        let flags = 0x4 | if end { 0x1 } else { 0 };
        self.write(HEADERS, flags, stream, &block).await;
    }

    pub async fn data(&mut self, stream: u32, body: &[u8], end: bool) {
        self.write(DATA, if end { 1 } else { 0 }, stream, body)
            .await;
    }

    /// Reads until RST_STREAM on `stream`; returns its error code.
    pub async fn wait_rst(&mut self, stream: u32) -> u32 {
        loop {
            let f = self.read().await;
            if f.kind == RST_STREAM && f.stream == stream {
                return u32::from_be_bytes([
                    f.payload[0],
                    f.payload[1],
                    f.payload[2],
                    f.payload[3],
                ]);
            }
        }
    }

    /// Reads until both the response HEADERS of `stream` and a new SETTINGS
    /// arrived (ACKing it); returns (header block, settings payload).
    pub async fn response_and_settings(&mut self, stream: u32) -> (Vec<u8>, Vec<u8>) {
        let (mut block, mut settings) = (None, None);
        while block.is_none() || settings.is_none() {
            let f = self.read().await;
            if f.kind == HEADERS && f.stream == stream {
                block = Some(f.payload);
            } else if f.kind == SETTINGS && f.flags & 1 == 0 {
                self.write(SETTINGS, 1, 0, &[]).await;
                settings = Some(f.payload);
            }
        }
        (block.unwrap_or_default(), settings.unwrap_or_default())
    }

    /// Reads until a GOAWAY; returns (error code, debug data). Answers PINGs.
    pub async fn wait_goaway(&mut self) -> (u32, Vec<u8>) {
        loop {
            let f = self.read().await;
            if f.kind == 0x6 && f.flags & 1 == 0 {
                self.write(0x6, 1, 0, &f.payload).await;
            }
            if f.kind == SETTINGS && f.flags & 1 == 0 {
                self.write(SETTINGS, 1, 0, &[]).await;
            }
            if f.kind == GOAWAY {
                let code =
                    u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
                return (code, f.payload[8..].to_vec());
            }
        }
    }
}
