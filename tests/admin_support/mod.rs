//! A minimal HTTP/1.1 client for the admin server in integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One exchange: `req` is the request line plus optional header lines;
/// returns (status, body).
pub async fn http(addr: SocketAddr, req: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin server answers");
    let head = format!(
        "{req}\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `GET path` until its status is `want` (10 s at most); returns the last body.
pub async fn wait_status(addr: SocketAddr, path: &str, want: u16) -> String {
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = http(addr, &format!("GET {path} HTTP/1.1"), "").await;
        if last.0 == want {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered {want}; last: {} {}", last.0, last.1);
}

/// The value of the sample line `series` (name and labels exactly as
/// exposed) in a Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
