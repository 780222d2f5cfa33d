//! The Web Push simulator's connections: TLS, then HTTP/2 (the `h2` crate)
//! or, in HTTP/1.1-only mode, hyper's HTTP/1.1 server with keep-alive; both
//! read the body (up to [`MAX_BODY`]) and hand the request to [`answer`].

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{answer, lock, State, MAX_BODY};

type Tls = TlsStream<tokio::net::TcpStream>;

/// Serves one accepted TCP connection until it ends or the simulator stops.
pub(super) async fn serve_conn(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    state: Arc<State>,
    stopped: watch::Receiver<bool>,
) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    state.connections.fetch_add(1, Relaxed);
    let open = state.open.fetch_add(1, Relaxed) + 1;
    state.peak_open.fetch_max(open, Relaxed);
    let counted = Arc::clone(&state);
    if state.http1_only {
        serve_h1(tls, state, stopped).await;
    } else {
        serve_h2(tls, state, stopped).await;
    }
    counted.open.fetch_sub(1, Relaxed);
}

async fn serve_h2(tls: Tls, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let Ok(mut conn) = h2::server::handshake(tls).await else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopped.changed() => {
                conn.graceful_shutdown();
                let _ = std::future::poll_fn(|cx| conn.poll_closed(cx)).await;
                return;
            }
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::spawn(serve_stream(Arc::clone(&state), req, respond));
                }
                _ => return,
            },
        }
    }
}

async fn serve_stream(
    state: Arc<State>,
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut too_large = false;
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        if buf.len() + chunk.len() > MAX_BODY {
            too_large = true;
        } else {
            buf.extend_from_slice(&chunk);
        }
    }
    let Some((head, body)) = reply(&state, &parts, &buf, too_large) else {
        return;
    };
    if let Ok(mut stream) = respond.send_response(head, body.is_none()) {
        if let Some(b) = body {
            let _ = stream.send_data(b, true);
        }
    }
}

async fn serve_h1(tls: Tls, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(h1_request(&state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn h1_request(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let (buf, too_large) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => (b.to_bytes(), false),
        Err(_) => (Bytes::new(), true),
    };
    match reply(state, &parts, &buf, too_large) {
        Some((head, body)) => head.map(|()| Full::new(body.unwrap_or_default())),
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// The answer as a response head and an optional JSON `{"reason"}` body;
/// counts the status.
fn reply(
    state: &State,
    parts: &http::request::Parts,
    body: &[u8],
    too_large: bool,
) -> Option<(Response<()>, Option<Bytes>)> {
    let (status, headers, reason) = answer(state, parts, body, too_large);
    *lock(&state.statuses).entry(status).or_default() += 1;
    let mut resp = Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    let head = resp.body(()).ok()?;
    let body = reason.map(|r| Bytes::from(serde_json::json!({ "reason": r }).to_string()));
    Some((head, body))
}
