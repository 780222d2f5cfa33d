//! The patched h2 (vendor/h2/PATCHES.md) is the one linked: a repeated
//! `authorization` value goes out as an index into HPACK's dynamic table,
//! not again in full, sensitive values are still never indexed, and the
//! strings the table does not keep (`:path`, sensitive values) go raw. Guards
//! against a re-vendored h2 without `vendor/h2.patch`. And headers
//! that repeat from request to request, the patch's reuse of their indices
//! included, arrive at h2's server exactly as sent.

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
    headers_blocks(&two_requests_bytes(sensitive).await)
}

/// What the client of [`two_requests`] wrote, up to its second HEADERS frame.
async fn two_requests_bytes(sensitive: bool) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                return seen;
            }
            seen.extend_from_slice(&chunk[..n]);
            if headers_blocks(&seen).len() >= 2 {
                return seen;
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
    let seen = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("two HEADERS frames within 10 s")
        .unwrap();
    driver.abort();
    seen
}

/// `:path` is never added to the table, so it is sent raw on every
/// request (upstream Huffman-codes it, and the peer decodes it, each time);
/// a sensitive value too. Both requests carry both.
#[tokio::test]
async fn strings_the_table_does_not_keep_are_sent_raw() {
    let seen = two_requests_bytes(true).await;
    let count = |needle: &[u8]| {
        (0..seen.len())
            .filter(|&i| seen[i..].starts_with(needle))
            .count()
    };
    assert_eq!(count(b"/3/device/0123456789abcdef"), 2, "{seen:?}");
    assert_eq!(count(b"bearer "), 2, "the sensitive token, raw: {seen:?}");
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

/// The headers of request `n` of [`headers_arrive_as_sent`]: values that
/// repeat for long runs, change now and then, headers that come and go
/// (moving the rest to other positions) and a sensitive one.
fn headers_of(n: usize) -> Vec<(&'static str, String, bool)> {
    let mut h = vec![
        (
            "apns-topic",
            format!("com.example.app{}", n / 40 % 3),
            false,
        ),
        (
            "apns-push-type",
            ["alert", "background"][n / 7 % 2].to_owned(),
            false,
        ),
    ];
    if n % 4 != 0 {
        h.push(("apns-collapse-id", format!("c{}", n / 16 % 5), false));
    }
    h.push(("apns-id", format!("id-{n}"), true));
    h.push(("authorization", format!("bearer token-{}", n / 100), false));
    h.push(("content-type", "application/json".to_owned(), false));
    h
}

/// Many requests on one connection, each with the headers of
/// [`headers_of`]: h2's server decodes every one exactly as sent. Guards
/// the encoder's reuse of a repeated header's index (vendor/h2/PATCHES.md):
/// a stale index would arrive as another header's value.
#[tokio::test]
async fn headers_arrive_as_sent() {
    const REQUESTS: usize = 600;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(sock).await.unwrap();
        let mut seen = 0;
        while let Some(accepted) = conn.accept().await {
            let (req, mut respond) = accepted.unwrap();
            let n: usize = req.uri().path()[1..].parse().unwrap();
            let got: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            let want: Vec<(String, String)> = headers_of(n)
                .into_iter()
                .map(|(k, v, _)| (k.to_owned(), v))
                .collect();
            assert_eq!(got, want, "request {n}");
            respond
                .send_response(http::Response::new(()), true)
                .unwrap();
            seen += 1;
        }
        seen
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    for n in 0..REQUESTS {
        let mut req = Request::post(format!("https://127.0.0.1/{n}"));
        for (name, value, sensitive) in headers_of(n) {
            let mut value = HeaderValue::from_str(&value).unwrap();
            value.set_sensitive(sensitive);
            req = req.header(name, value);
        }
        client = client.ready().await.unwrap();
        let (response, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
        response.await.unwrap();
    }
    // The connection closes once the client is gone; the server then counts.
    drop(client);
    let seen = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server saw every request within 20 s")
        .unwrap();
    assert_eq!(seen, REQUESTS);
    driver.abort();
}
