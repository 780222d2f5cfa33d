//! The patched h2 (vendor/h2/PATCHES.md) is the one linked: a repeated
//! `authorization` value goes out as an index into HPACK's dynamic table,
//! not again in full, and sensitive values are still never indexed. Guards
//! against a re-vendored h2 without `vendor/h2-hpack.patch`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::{HeaderValue, Request};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// The payload lengths of the HEADERS frames in `bytes` (a client's side
/// of a connection: the 24-byte preface, then frames).
fn headers_blocks(bytes: &[u8]) -> Vec<usize> {
    let mut at = 24;
    let mut blocks = Vec::new();
    while bytes.len() >= at + 9 {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        if bytes.len() < at + 9 + len {
            break;
        }
        if bytes[at + 3] == 0x1 {
            blocks.push(len);
        }
        at += 9 + len;
    }
    blocks
}

/// Sends two requests with the same `authorization` value on one
/// connection; returns the sizes of their header blocks.
async fn two_requests(sensitive: bool) -> Vec<usize> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                return headers_blocks(&seen);
            }
            seen.extend_from_slice(&chunk[..n]);
            let blocks = headers_blocks(&seen);
            if blocks.len() >= 2 {
                return blocks;
            }
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    // An APNs provider token's shape: `bearer` and a 190-byte JWT.
    let token: String = (0..190)
        .map(|i| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."[i * 7 % 65],
            )
        })
        .collect();
    let mut value = HeaderValue::from_str(&format!("bearer {token}")).unwrap();
    value.set_sensitive(sensitive);
    let mut client = client;
    for _ in 0..2 {
        client = client.ready().await.unwrap();
        let req = Request::post("https://127.0.0.1/3/device/0123456789abcdef")
            .header("authorization", value.clone())
            .body(())
            .unwrap();
        let (_response, _stream) = client.send_request(req, true).unwrap();
    }
    let blocks = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("two HEADERS frames within 10 s")
        .unwrap();
    driver.abort();
    blocks
}

#[tokio::test]
async fn a_repeated_authorization_value_is_sent_as_an_index() {
    let blocks = two_requests(false).await;
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert!(blocks[0] > 150, "the first carries the token: {blocks:?}");
    assert!(
        blocks[1] < 40,
        "the second refers to it (upstream h2 sends it again): {blocks:?}"
    );
}

#[tokio::test]
async fn a_sensitive_authorization_value_is_never_indexed() {
    let blocks = two_requests(true).await;
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert!(blocks[1] > 150, "sent in full every time: {blocks:?}");
}
