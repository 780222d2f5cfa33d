//! pushgate's HTTP/2 client connection (`provider::http2::conn`) against
//! h2's server over TCP: concurrency, flow control both ways, the peer's
//! SETTINGS, resets, GOAWAY, cancellation, PING and a vanished server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response};
use pushgate::provider::http2::conn::{self, Client, Error, Target};
use tokio::net::{TcpListener, TcpStream};

/// How the test server answers.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// h2 server builder: its SETTINGS_INITIAL_WINDOW_SIZE.
    window: Option<u32>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    max_streams: Option<u32>,
    /// SETTINGS_HEADER_TABLE_SIZE.
    table: Option<u32>,
    /// Answer bodies this large (else the request body reversed).
    answer_len: Option<usize>,
    /// Wait this long before answering.
    delay_ms: u64,
}

struct Server {
    client: Client,
    driver: tokio::task::JoinHandle<Result<(), Error>>,
    server: tokio::task::JoinHandle<()>,
    /// Streams the server saw reset by us.
    resets: Arc<AtomicUsize>,
}

/// Starts h2's server for one connection and connects our client to it.
/// Paths: `/refuse` is reset with REFUSED_STREAM, `/goaway` starts a
/// graceful shutdown, anything else is answered 200.
async fn start(opts: Opts) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resets = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&resets);
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut b = h2::server::Builder::new();
        if let Some(w) = opts.window {
            b.initial_window_size(w);
        }
        if let Some(m) = opts.max_streams {
            b.max_concurrent_streams(m);
        }
        if let Some(t) = opts.table {
            b.header_table_size(t);
        }
        let mut conn = b.handshake::<_, Bytes>(sock).await.unwrap();
        while let Some(accepted) = conn.accept().await {
            let Ok((req, mut respond)) = accepted else {
                break;
            };
            let path = req.uri().path().to_owned();
            if path == "/goaway" {
                conn.graceful_shutdown();
            }
            let resets = Arc::clone(&seen);
            tokio::spawn(async move {
                if path == "/refuse" {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    return;
                }
                let id = req.headers().get("x-id").cloned();
                let mut body = req.into_body();
                let mut data = BytesMut::new();
                while let Some(chunk) = body.data().await {
                    let Ok(chunk) = chunk else { return };
                    let _ = body.flow_control().release_capacity(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                if opts.delay_ms > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(opts.delay_ms)) => {}
                        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
                            resets.fetch_add(1, SeqCst);
                            return;
                        }
                    }
                }
                let mut answer = Response::builder().status(200);
                if let Some(id) = id {
                    answer = answer.header("x-id", id);
                }
                let answer = answer
                    .header("x-len", data.len().to_string())
                    .body(())
                    .unwrap();
                let Ok(mut stream) = respond.send_response(answer, false) else {
                    return;
                };
                let out: Vec<u8> = match opts.answer_len {
                    Some(n) => vec![b'a'; n],
                    None => data.iter().rev().copied().collect(),
                };
                let mut out = Bytes::from(out);
                // Respect our window: send as capacity is granted.
                while !out.is_empty() {
                    stream.reserve_capacity(out.len());
                    let Some(Ok(n)) = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await
                    else {
                        return;
                    };
                    let chunk = out.split_to(n.min(out.len()));
                    if stream.send_data(chunk, out.is_empty()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = conn::handshake(tcp, 8 << 20);
    let driver = tokio::spawn(connection);
    Server {
        client,
        driver,
        server,
        resets,
    }
}

fn target(path: &str) -> Target<'_> {
    Target {
        scheme: "http",
        authority: "127.0.0.1",
        path,
    }
}

fn headers(id: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-id", HeaderValue::from_str(&id.to_string()).unwrap());
    h.insert("apns-topic", HeaderValue::from_static("com.example.shop"));
    h
}

/// Puts a request on the connection (not awaited).
fn open(c: &Client, path: &str, id: usize, body: &'static [u8]) -> conn::ResponseFuture {
    c.send(
        &Method::POST,
        target(path),
        &headers(id),
        Bytes::from_static(body),
    )
    .unwrap()
}

async fn post(c: &Client, path: &str, id: usize, body: Vec<u8>) -> Result<conn::Response, Error> {
    c.send(&Method::POST, target(path), &headers(id), Bytes::from(body))?
        .await
}

#[tokio::test]
async fn many_requests_at_once_each_get_their_answer() {
    let s = start(Opts::default()).await;
    let mut all = Vec::new();
    for i in 0..300 {
        let body = format!("request number {i}").into_bytes();
        all.push(
            s.client
                .send(
                    &Method::POST,
                    target("/3/device/x"),
                    &headers(i),
                    Bytes::from(body),
                )
                .unwrap(),
        );
    }
    for (i, f) in all.into_iter().enumerate() {
        let r = f.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-id"], i.to_string().as_str());
        let want: Vec<u8> = format!("request number {i}")
            .into_bytes()
            .into_iter()
            .rev()
            .collect();
        assert_eq!(r.body, want);
    }
    s.server.abort();
}

#[tokio::test]
async fn bodies_larger_than_the_windows_go_through_flow_control() {
    // The server allows 1,000 bytes per stream until it reads them.
    let s = start(Opts {
        window: Some(1_000),
        ..Opts::default()
    })
    .await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = post(&s.client, "/big", 1, big.clone()).await.unwrap();
    assert_eq!(r.headers["x-len"], "200000");
    let want: Vec<u8> = big.iter().rev().copied().collect();
    assert_eq!(r.body, want);
    s.server.abort();

    // Answers of 20 MB in all: past our connection window (16 MiB).
    let s = start(Opts {
        answer_len: Some(700_000),
        ..Opts::default()
    })
    .await;
    let mut all = Vec::new();
    for i in 0..30 {
        all.push(
            s.client
                .send(&Method::POST, target("/x"), &headers(i), Bytes::new())
                .unwrap(),
        );
    }
    for f in all {
        assert_eq!(f.await.unwrap().body.len(), 700_000);
    }
    s.server.abort();
}

#[tokio::test]
async fn the_servers_settings_are_followed() {
    let s = start(Opts {
        max_streams: Some(7),
        table: Some(0),
        ..Opts::default()
    })
    .await;
    for i in 0..20 {
        let r = post(&s.client, "/x", i, b"{}".to_vec()).await.unwrap();
        assert_eq!(r.headers["x-id"], i.to_string().as_str());
    }
    assert_eq!(s.client.max_concurrent_streams(), 7);
    s.server.abort();
}

#[tokio::test]
async fn a_refused_stream_is_unprocessed_and_the_connection_stays() {
    let s = start(Opts::default()).await;
    let e = post(&s.client, "/refuse", 1, b"{}".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e, Error::Reset(7));
    assert!(e.unprocessed() && !e.connection_level());
    let r = post(&s.client, "/x", 2, b"{}".to_vec()).await.unwrap();
    assert_eq!(r.status, 200);
    s.server.abort();
}

#[tokio::test]
async fn goaway_finishes_what_was_sent_and_refuses_the_rest() {
    let s = start(Opts {
        delay_ms: 200,
        ..Opts::default()
    })
    .await;
    let slow = open(&s.client, "/x", 1, b"a");
    let trigger = open(&s.client, "/goaway", 2, b"b");
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "in flight before GOAWAY: answered"
    );
    assert_eq!(trigger.await.unwrap().status, 200);
    // The GOAWAY has arrived by now (it preceded the answers): a new
    // request is refused before anything is written.
    let refused = s.client.send(
        &Method::POST,
        target("/x"),
        &headers(3),
        Bytes::from_static(b"c"),
    );
    assert!(refused.is_err());
    assert!(s.client.is_closing());
    let ended = tokio::time::timeout(Duration::from_secs(5), s.driver)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

#[tokio::test]
async fn a_waiter_that_gives_up_resets_its_stream() {
    let s = start(Opts {
        delay_ms: 2_000,
        ..Opts::default()
    })
    .await;
    let f = open(&s.client, "/x", 1, b"a");
    assert!(tokio::time::timeout(Duration::from_millis(100), f)
        .await
        .is_err());
    for _ in 0..100 {
        if s.resets.load(SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        s.resets.load(SeqCst),
        1,
        "the server saw RST_STREAM(CANCEL)"
    );
    assert!(s.client.ping().await.is_ok(), "the connection goes on");
    s.server.abort();
}

#[tokio::test]
async fn a_vanished_server_fails_what_is_in_flight() {
    let s = start(Opts {
        delay_ms: 5_000,
        ..Opts::default()
    })
    .await;
    let f = open(&s.client, "/x", 1, b"a");
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.server.abort();
    let e = tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap()
        .unwrap_err();
    assert!(!e.unprocessed() && e.connection_level(), "{e}");
    let ended = tokio::time::timeout(Duration::from_secs(5), s.driver)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_err());
    let again = post(&s.client, "/x", 2, Vec::new()).await.unwrap_err();
    assert!(matches!(again, Error::Closed(_)), "{again}");
}
