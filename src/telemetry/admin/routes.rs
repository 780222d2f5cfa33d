//! The admin endpoints: one function per route, each answering a complete
//! response (JSON errors say why).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::AdminState;
use crate::config::Secret;
use crate::telemetry::events::MAX_BODY;
use crate::telemetry::metrics::TEXT_FORMAT;

type Answer = Response<Full<Bytes>>;

const CAMPAIGNS: &str = "/v1/campaigns/";

pub(super) async fn route(state: &AdminState, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => metrics(state),
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(state),
        (&Method::POST, "/v1/events") => events(state, req).await,
        (_, "/metrics" | "/healthz" | "/readyz" | "/v1/events") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        (_, p) if p.starts_with(CAMPAIGNS) => {
            campaigns(state, &method, &p[CAMPAIGNS.len()..], &req).await
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_answer(status: StatusCode, v: &serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, why: &str) -> Answer {
    json_answer(status, &json!({ "error": why }))
}

fn metrics(state: &AdminState) -> Answer {
    let st = &state.status;
    let m = &st.telemetry.metrics;
    m.set_liveness(st.is_ready(), st.is_broker_connected());
    if let Some(pools) = &state.pools {
        m.set_pools(&pools.pool_stats());
    }
    match m.encode() {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut()
                .insert(CONTENT_TYPE, http::HeaderValue::from_static(TEXT_FORMAT));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics")
        }
    }
}

fn readyz(state: &AdminState) -> Answer {
    let st = &state.status;
    let ready = st.is_ready();
    let body = json!({
        "ready": ready,
        "broker_connected": st.is_broker_connected(),
        "draining": st.is_draining(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_answer(code, &body)
}

/// Constant-time comparison of the request's bearer token with `want`.
fn bearer_ok<B>(req: &Request<B>, want: &Secret<String>) -> bool {
    let Some(got) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    let (a, b) = (got.trim().as_bytes(), want.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Answer {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    r
}

async fn events(state: &AdminState, req: Request<Incoming>) -> Answer {
    let metrics = &state.status.telemetry.metrics;
    if let Some(token) = &state.events_token {
        if !bearer_ok(&req, token) {
            metrics.event_batch_rejected("unauthorized");
            return unauthorized();
        }
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                metrics.event_batch_rejected("too-large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("too-large: the body is over {MAX_BODY} bytes"),
                );
            }
            return error(StatusCode::BAD_REQUEST, "cannot read the body");
        }
    };
    match state.events.ingest(&body) {
        Ok(n) => json_answer(StatusCode::OK, &json!({ "accepted": n })),
        Err(r) => json_answer(
            StatusCode::BAD_REQUEST,
            &json!({ "error": r.reason, "detail": r.detail }),
        ),
    }
}

/// Decodes `%XX` escapes of one path segment.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn valid_campaign(c: &str) -> bool {
    !c.is_empty() && c.chars().count() <= 128 && !c.chars().any(char::is_control)
}

async fn campaigns(
    state: &AdminState,
    method: &Method,
    rest: &str,
    req: &Request<Incoming>,
) -> Answer {
    let mut parts = rest.split('/');
    let (Some(raw), action, None) = (parts.next(), parts.next(), parts.next()) else {
        return error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let Some(id) = percent_decode(raw).filter(|c| valid_campaign(c)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "campaign ids are 1-128 characters, no control characters, percent-encoded in the path",
        );
    };
    match (method, action) {
        (&Method::GET, None) => match state.status.telemetry.campaigns.get(&id) {
            Some(snap) => match serde_json::to_value(&snap) {
                Ok(v) => json_answer(StatusCode::OK, &v),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode stats"),
            },
            None => error(
                StatusCode::NOT_FOUND,
                "this replica has no stats for that campaign",
            ),
        },
        (&Method::POST, Some(a @ ("stop" | "resume"))) => {
            control(state, req, &id, a == "stop").await
        }
        (_, None | Some("stop" | "resume")) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn control(state: &AdminState, req: &Request<Incoming>, id: &str, stop: bool) -> Answer {
    let Some(token) = &state.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "campaign control is disabled: set [admin] token_file",
        );
    };
    if !bearer_ok(req, token) {
        return unauthorized();
    }
    let Some(control) = &state.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "campaign control not configured",
        );
    };
    let action = if stop { "stop" } else { "resume" };
    let result = if stop {
        control.stop(id).await
    } else {
        control.resume(id).await
    };
    match result {
        Ok(()) => {
            tracing::info!(campaign = %id, action, "campaign control announced");
            json_answer(
                StatusCode::ACCEPTED,
                &json!({ "campaign": id, "action": action }),
            )
        }
        Err(e) => {
            tracing::warn!(campaign = %id, action, error = %e, "campaign control failed");
            error(StatusCode::BAD_GATEWAY, &e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_segments_are_percent_decoded() {
        assert_eq!(
            percent_decode("spring%20sale").as_deref(),
            Some("spring sale")
        );
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert!(!valid_campaign(""));
        assert!(!valid_campaign("a\u{1}"));
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let want = Secret::new("s3cret".to_owned());
        let req = |h: &str| {
            Request::builder()
                .header(AUTHORIZATION, h)
                .body(())
                .unwrap()
        };
        assert!(bearer_ok(&req("Bearer s3cret"), &want));
        assert!(!bearer_ok(&req("Bearer s3cre"), &want));
        assert!(!bearer_ok(&req("Basic s3cret"), &want));
        assert!(!bearer_ok(&Request::new(()), &want));
    }
}
