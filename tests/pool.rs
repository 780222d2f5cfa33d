//! The HTTP/2 pool against a real TLS HTTP/2 server on loopback: connection
//! spread, stream limits, GOAWAY and REFUSED_STREAM retries, restarts, timeouts.

// Test code (including the server helper module): failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pool_server;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use pool_server::{Behaviour, GoAway, Mode, TestServer};
use pushgate::config::{ConnectionConfig, Endpoint};
use pushgate::provider::h2pool::{H2Pool, PoolError, PooledResponse};
use pushgate::provider::tls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::task::JoinSet;

fn conn_cfg(addr: SocketAddr, connections: usize) -> ConnectionConfig {
    let ca = format!("{}/config/dev/ca.pem", env!("CARGO_MANIFEST_DIR"));
    ConnectionConfig {
        endpoint: Endpoint::parse(&format!("https://127.0.0.1:{}", addr.port())).unwrap(),
        connections,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(2),
        extra_ca: vec![CertificateDer::from_pem_file(ca).unwrap()],
        client_cert: None,
    }
}

fn pool(cfg: &ConnectionConfig) -> Arc<H2Pool> {
    Arc::new(H2Pool::new("test", cfg, tls::client_config(cfg).unwrap()))
}

fn request(id: u64) -> Request<Bytes> {
    Request::post(format!("/3/device/{id}"))
        .header("x-id", id)
        .body(Bytes::from_static(b"{\"aps\":{}}"))
        .unwrap()
}

/// Waits (bounded) until `n` connections are open.
async fn wait_open(pool: &H2Pool, n: usize) {
    for _ in 0..200 {
        if pool.stats().open >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool did not open {n} connections: {:?}", pool.stats());
}

/// Sends ids `0..n` concurrently; results in id order.
async fn burst(pool: &Arc<H2Pool>, n: u64) -> Vec<Result<PooledResponse, PoolError>> {
    let mut set = JoinSet::new();
    for id in 0..n {
        let pool = Arc::clone(pool);
        set.spawn(async move { (id, pool.send(request(id)).await) });
    }
    let mut out: Vec<_> = set.join_all().await;
    out.sort_by_key(|(id, _)| *id);
    out.into_iter().map(|(_, r)| r).collect()
}

fn assert_all_ok(results: &[Result<PooledResponse, PoolError>]) {
    for (id, r) in results.iter().enumerate() {
        let resp = r.as_ref().unwrap_or_else(|e| panic!("request {id}: {e}"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body,
            Bytes::from(id.to_string()),
            "body of request {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_carry_requests() {
    let server = TestServer::start(Behaviour {
        delay: Duration::from_millis(20),
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&conn_cfg(server.addr, 4));
    wait_open(&pool, 4).await;
    let results = burst(&pool, 200).await;
    assert_all_ok(&results);
    let conn_ids: HashSet<_> = results.iter().flatten().map(|r| r.conn_id).collect();
    assert_eq!(conn_ids.len(), 4, "responses came from {conn_ids:?}");
    assert_eq!(server.counters.used_connections().len(), 4);
    assert_eq!(pool.stats().in_flight, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_of_one_is_obeyed() {
    let server = TestServer::start(Behaviour {
        max_streams: 1,
        delay: Duration::from_millis(5),
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&conn_cfg(server.addr, 2));
    wait_open(&pool, 2).await;
    assert_all_ok(&burst(&pool, 60).await);
    let used = server.counters.used_connections();
    assert_eq!(used.len(), 2);
    assert!(used.iter().all(|c| c.peak == 1), "{used:?}");
    assert_eq!(pool.stats().max_streams, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_stream_limit_is_used_up_to_the_limit() {
    let server = TestServer::start(Behaviour {
        max_streams: 50,
        delay: Duration::from_millis(30),
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&conn_cfg(server.addr, 1));
    wait_open(&pool, 1).await;
    // The first request runs alone (one stream until the first response).
    assert_all_ok(&burst(&pool, 1).await);
    assert_all_ok(&burst(&pool, 300).await);
    let used = server.counters.used_connections();
    assert_eq!(used.len(), 1);
    assert!(used[0].peak > 1 && used[0].peak <= 50, "{used:?}");
    assert_eq!(pool.stats().max_streams, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_goaway_in_the_middle_of_1000_requests_loses_none() {
    let server = TestServer::start(Behaviour {
        max_streams: 50,
        delay: Duration::from_millis(2),
        goaway_after: Some((100, GoAway::Graceful)),
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&conn_cfg(server.addr, 4));
    wait_open(&pool, 4).await;
    // Every request succeeds on its first `send`: unprocessed ones are retried inside.
    assert_all_ok(&burst(&pool, 1000).await);
    let answered = server.counters.answered();
    assert_eq!(answered.len(), 1000);
    let goaways = server
        .counters
        .goaways
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(goaways >= 4, "server sent {goaways} GOAWAYs");
    let stats = pool.stats();
    assert!(stats.connects_total > 4, "{stats:?}");
    eprintln!(
        "graceful GOAWAY: {goaways} GOAWAYs, {} requests retried by the pool",
        stats.retries_total
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_goaway_returns_only_retryable_errors_and_none_is_lost() {
    let server = TestServer::start(Behaviour {
        max_streams: 50,
        delay: Duration::from_millis(5),
        goaway_after: Some((150, GoAway::Abrupt)),
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&conn_cfg(server.addr, 4));
    wait_open(&pool, 4).await;
    let mut set = JoinSet::new();
    for id in 0..1000u64 {
        let pool = Arc::clone(&pool);
        set.spawn(async move {
            // The caller's retry: only for errors the pool calls retryable.
            let mut caller_retries = 0;
            loop {
                match pool.send(request(id)).await {
                    Ok(resp) => return (id, resp, caller_retries),
                    Err(e) if e.retryable() && caller_retries < 10 => caller_retries += 1,
                    Err(e) => panic!("request {id}: {e}"),
                }
            }
        });
    }
    let mut caller_retries = 0;
    for (id, resp, retries) in set.join_all().await {
        assert_eq!(
            (resp.status.as_u16(), resp.body),
            (200, Bytes::from(id.to_string()))
        );
        caller_retries += retries;
    }
    let pool_retries = pool.stats().retries_total;
    assert!(
        server
            .counters
            .goaways
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
    assert!(
        caller_retries + pool_retries > 0,
        "abrupt GOAWAYs with 50 streams in flight must hit some request"
    );
    eprintln!("abrupt GOAWAY: {pool_retries} retried by the pool, {caller_retries} by the caller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_retried_transparently() {
    let server = TestServer::start(Behaviour {
        refuse_every: Some(10),
        ..Behaviour::default()
    })
    .await;
    let pool = pool(&conn_cfg(server.addr, 2));
    wait_open(&pool, 2).await;
    assert_all_ok(&burst(&pool, 200).await);
    let refused = server
        .counters
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 20);
    assert_eq!(pool.stats().retries_total, 20);
    // REFUSED_STREAM is about one stream: the connections stay.
    assert_eq!(pool.stats().connects_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_on_the_same_port_is_survived() {
    let server = TestServer::start(Behaviour::default()).await;
    let addr = server.addr;
    // A debug-build TLS handshake on 2 cores busy with the rest of the suite
    // can take longer than conn_cfg's 500 ms: a timed-out connect counts as
    // a failure and the backoff then outgrows the wait below (seen in CI).
    let pool = pool(&ConnectionConfig {
        connect_timeout: Duration::from_secs(5),
        ..conn_cfg(addr, 2)
    });
    let before: HashSet<_> = burst(&pool, 20)
        .await
        .into_iter()
        .map(|r| r.unwrap().conn_id)
        .collect();
    server.stop().await;

    let err = pool.send(request(1)).await.unwrap_err();
    assert!(err.retryable(), "{err}");

    let server = TestServer::start_on(addr, Behaviour::default()).await;
    let mut recovered = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if pool.send(request(7)).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "no success after restart: {:?}", pool.stats());
    let results = burst(&pool, 20).await;
    assert_all_ok(&results);
    let after: HashSet<_> = results.iter().flatten().map(|r| r.conn_id).collect();
    assert!(
        after.is_disjoint(&before),
        "old connections reused: {before:?} {after:?}"
    );
    assert!(!server.counters.used_connections().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_server_gives_an_error_not_a_hang() {
    let server = TestServer::start(Behaviour {
        mode: Mode::SilentTcp,
        ..Behaviour::default()
    })
    .await;
    let mut cfg = conn_cfg(server.addr, 1);
    cfg.connect_timeout = Duration::from_millis(200);
    cfg.request_timeout = Duration::from_millis(500);
    let pool = pool(&cfg);
    let result = tokio::time::timeout(Duration::from_secs(5), pool.send(request(1)))
        .await
        .expect("send must not hang");
    let err = result.unwrap_err();
    assert!(matches!(err, PoolError::Unavailable { .. }), "{err}");
    assert!(err.retryable() && !err.maybe_processed());
    assert!(pool.stats().connect_failures_total >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_server_gives_a_timeout_not_a_hang() {
    let server = TestServer::start(Behaviour {
        mode: Mode::SilentHttp,
        ..Behaviour::default()
    })
    .await;
    let mut cfg = conn_cfg(server.addr, 1);
    cfg.request_timeout = Duration::from_millis(300);
    let pool = pool(&cfg);
    let result = tokio::time::timeout(Duration::from_secs(5), pool.send(request(1)))
        .await
        .expect("send must not hang");
    let err = result.unwrap_err();
    assert!(
        matches!(err, PoolError::Timeout { sent: true, .. }),
        "{err}"
    );
    assert!(err.retryable() && err.maybe_processed());
    // The connection itself is healthy (PINGs answered): it stays.
    assert_eq!(pool.stats().connects_total, 1);
    assert_eq!(pool.stats().in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keepalive_ping_replaces_the_connection() {
    let server = TestServer::start(Behaviour {
        mode: Mode::Frozen,
        ..Behaviour::default()
    })
    .await;
    let mut cfg = conn_cfg(server.addr, 1);
    cfg.keepalive_interval = Duration::from_millis(100);
    cfg.keepalive_timeout = Duration::from_millis(100);
    let pool = pool(&cfg);
    // Idle connection, no request: only the PING can notice the peer is gone.
    for _ in 0..100 {
        if pool.stats().connects_total >= 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("frozen connection never replaced: {:?}", pool.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_lets_in_flight_finish_and_replaces_the_connection() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool(&conn_cfg(server.addr, 1));
    let first = pool.send(request(1)).await.unwrap();
    let slow = {
        let pool = Arc::clone(&pool);
        let mut req = request(2);
        req.headers_mut()
            .insert("x-delay-ms", "300".parse().unwrap());
        tokio::spawn(async move { pool.send(req).await })
    };
    // Retire only once the slow request is in flight at the server.
    for _ in 0..200 {
        if server
            .counters
            .used_connections()
            .iter()
            .any(|c| c.in_flight > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pool.retire(first.conn_id));
    assert!(!pool.retire(first.conn_id), "already draining");
    let next = pool.send(request(3)).await.unwrap();
    assert_ne!(next.conn_id, first.conn_id);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!((slow.status.as_u16(), slow.conn_id), (200, first.conn_id));
    assert_eq!(server.counters.used_connections().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_requests() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool(&conn_cfg(server.addr, 2));
    pool.send(request(1)).await.unwrap();
    pool.shutdown().await;
    let err = pool.send(request(2)).await.unwrap_err();
    assert!(matches!(err, PoolError::Shutdown { .. }), "{err}");
    let stats = pool.stats();
    assert_eq!(
        (stats.open, stats.draining, stats.in_flight),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_uri_must_be_a_path() {
    let server = TestServer::start(Behaviour::default()).await;
    let pool = pool(&conn_cfg(server.addr, 1));
    for uri in ["*", "https://elsewhere.example/3/device/1"] {
        let req = Request::post(uri).body(Bytes::new()).unwrap();
        let err = pool.send(req).await.unwrap_err();
        assert!(
            matches!(err, PoolError::InvalidRequest { .. }),
            "{uri}: {err}"
        );
        assert!(!err.retryable(), "{err}");
    }
    let ok = Request::get("/path?query=1").body(Bytes::new()).unwrap();
    assert_eq!(pool.send(ok).await.unwrap().status, 200);
}

/// Providers hold the pool in `Arc`s across tasks: the pool and its send future must be Send.
#[allow(dead_code)]
fn pool_and_send_future_are_send_and_sync(pool: &H2Pool) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    send_sync(pool);
    send(pool.send(request(0)));
}
