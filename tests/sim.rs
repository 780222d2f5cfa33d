//! The APNs simulator driven over real TLS + HTTP/2 with a raw h2 client and JWTs signed in the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "sim/common.rs"]
mod common;
#[path = "sim/raw.rs"]
mod raw;

use std::time::Duration;

use common::*;
use http::Method;
use pushgate::provider::apns::reason::ApnsReason;
use pushgate::sim::apns::{
    self, forced_token, scripted_token, ApnsEnvironment, ApnsSimOptions, ClientCerts, TrustedKey,
};

const PAYLOAD: &[u8] = br#"{"aps":{"alert":"hi"}}"#;

async fn push(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    jwt: Option<&str>,
    token: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let auth = jwt.map(|j| format!("bearer {j}"));
    let mut headers = vec![("apns-topic", "com.example.shop")];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    headers.extend_from_slice(extra);
    request(
        send,
        Method::POST,
        &format!("/3/device/{token}"),
        &headers,
        body,
    )
    .await
}

async fn wait_max_streams(send: &h2::client::SendRequest<bytes::Bytes>, want: usize) -> usize {
    for _ in 0..200 {
        if send.current_max_send_streams() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send.current_max_send_streams()
}

#[tokio::test]
async fn settings_start_at_one_stream_then_rise_to_max_after_first_valid_request() {
    let sim = apns::start(local(), ApnsSimOptions::default())
        .await
        .unwrap();
    let mut send = h2_connect(sim.addr).await;
    assert_eq!(wait_max_streams(&send, 1).await, 1);
    let jwt = dev_apns_jwt();
    let ok = push(&mut send, Some(&jwt), &scripted_token("ab"), &[], PAYLOAD).await;
    assert_eq!(ok.status, 200);
    assert_eq!(wait_max_streams(&send, 1000).await, 1000);

    // Now many streams really run concurrently on the one connection.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut s = send.clone();
        let jwt = jwt.clone();
        tasks.push(tokio::spawn(async move {
            let token = scripted_token(&format!("{i:04x}"));
            push(&mut s, Some(&jwt), &token, &[], PAYLOAD).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(sim.stats.connections(), 1);
    assert_eq!(sim.stats.responses(200), 51);
    sim.shutdown().await;
}

#[tokio::test]
async fn one_stream_at_first_then_many_concurrent_with_latency() {
    one_stream_at_first_then_many_concurrent_with_latency_in(false).await;
}

/// The same in benchmark mode, served by the simulator's own HTTP/2 loop.
#[tokio::test]
async fn one_stream_at_first_then_many_concurrent_with_latency_accept_all() {
    one_stream_at_first_then_many_concurrent_with_latency_in(true).await;
}

async fn one_stream_at_first_then_many_concurrent_with_latency_in(accept_all: bool) {
    let opts = ApnsSimOptions {
        latency: apns_latency(),
        accept_all,
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    assert_eq!(
        push(&mut send, Some(&jwt), &scripted_token("ab"), &[], PAYLOAD)
            .await
            .status,
        200
    );
    assert_eq!(sim.stats.max_peak_streams(), 1);
    wait_max_streams(&send, 1000).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut s = send.clone();
        let jwt = jwt.clone();
        tasks.push(tokio::spawn(async move {
            push(&mut s, Some(&jwt), &scripted_token("cd"), &[], PAYLOAD)
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        sim.stats.max_peak_streams() > 1,
        "{:?}",
        sim.stats.peak_streams()
    );
    sim.shutdown().await;
}

/// Every answer waits out the latency from its own request, whether it
/// came alone or with others on the connection (one timer per connection
/// serves them all), and the answers are right.
#[tokio::test]
async fn each_answer_waits_its_latency_from_its_own_request() {
    each_answer_waits_its_latency_from_its_own_request_in(false).await;
}

/// The same in benchmark mode, served by the simulator's own HTTP/2 loop.
#[tokio::test]
async fn each_answer_waits_its_latency_from_its_own_request_accept_all() {
    each_answer_waits_its_latency_from_its_own_request_in(true).await;
}

async fn each_answer_waits_its_latency_from_its_own_request_in(accept_all: bool) {
    let latency = Duration::from_millis(120);
    let opts = ApnsSimOptions {
        latency: pushgate::sim::Latency::Fixed(latency),
        accept_all,
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    let t0 = std::time::Instant::now();
    assert_eq!(
        push(&mut send, Some(&jwt), &scripted_token("ab"), &[], PAYLOAD)
            .await
            .status,
        200
    );
    assert!(t0.elapsed() >= latency, "{:?}", t0.elapsed());
    wait_max_streams(&send, 1000).await;
    let mut tasks = Vec::new();
    // Requests in two waves, so that the second arrives while the first waits.
    for i in 0..20u64 {
        if i == 10 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut s = send.clone();
        let jwt = jwt.clone();
        tasks.push(tokio::spawn(async move {
            let sent = std::time::Instant::now();
            // 4290...: a scripted TooManyRequests.
            let token = scripted_token(if i % 2 == 0 { "ab" } else { "4290" });
            let status = push(&mut s, Some(&jwt), &token, &[], PAYLOAD).await.status;
            (i, status, sent.elapsed())
        }));
    }
    for t in tasks {
        let (i, status, took) = t.await.unwrap();
        let scripted = if accept_all { 200 } else { 429 };
        assert_eq!(
            status,
            if i % 2 == 0 { 200 } else { scripted },
            "request {i}"
        );
        assert!(took >= latency, "request {i} answered after {took:?}");
    }
    assert!(
        sim.stats.max_peak_streams() >= 10,
        "{:?}",
        sim.stats.peak_streams()
    );
    sim.shutdown().await;
}

fn apns_latency() -> pushgate::sim::Latency {
    pushgate::sim::Latency::Fixed(Duration::from_millis(50))
}

#[tokio::test]
async fn raw_frames_show_initial_one_stream_refused_second_stream_and_raise() {
    raw_frames_show_initial_one_stream_refused_second_stream_and_raise_in(false).await;
}

/// The same in benchmark mode, served by the simulator's own HTTP/2 loop.
#[tokio::test]
async fn raw_frames_show_initial_one_stream_refused_second_stream_and_raise_accept_all() {
    raw_frames_show_initial_one_stream_refused_second_stream_and_raise_in(true).await;
}

async fn raw_frames_show_initial_one_stream_refused_second_stream_and_raise_in(accept_all: bool) {
    let sim = apns::start(
        local(),
        ApnsSimOptions {
            accept_all,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut conn = raw::Raw::connect(sim.addr).await;
    let initial = conn.server_settings().await;
    assert_eq!(
        raw::setting(&initial, 0x3),
        Some(1),
        "initial MAX_CONCURRENT_STREAMS"
    );
    assert_eq!(raw::setting(&initial, 0x4), Some(65_535));
    assert_eq!(raw::setting(&initial, 0x6), Some(8_000));

    let token = scripted_token("ab");
    let jwt = dev_apns_jwt();
    conn.headers(1, &token, Some(&jwt), false).await;
    conn.headers(3, &token, Some(&jwt), true).await;
    assert_eq!(conn.wait_rst(3).await, 7, "REFUSED_STREAM");
    conn.data(1, PAYLOAD, true).await;
    let (status_block, raised) = conn.response_and_settings(1).await;
    assert_eq!(
        status_block.first(),
        Some(&0x88),
        ":status 200 (static index 8)"
    );
    assert_eq!(raw::setting(&raised, 0x3), Some(1000));
    assert_eq!(sim.stats.refused_streams(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn goaway_every_sends_shutdown_debug_data() {
    goaway_every_sends_shutdown_debug_data_in(false).await;
}

/// The same in benchmark mode, served by the simulator's own HTTP/2 loop.
#[tokio::test]
async fn goaway_every_sends_shutdown_debug_data_accept_all() {
    goaway_every_sends_shutdown_debug_data_in(true).await;
}

async fn goaway_every_sends_shutdown_debug_data_in(accept_all: bool) {
    let opts = ApnsSimOptions {
        goaway_every: Some(1),
        accept_all,
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut conn = raw::Raw::connect(sim.addr).await;
    conn.server_settings().await;
    conn.headers(1, &scripted_token("ab"), Some(&dev_apns_jwt()), false)
        .await;
    conn.data(1, PAYLOAD, true).await;
    let (code, debug) = conn.wait_goaway().await;
    assert_eq!(code, 0, "NO_ERROR");
    assert_eq!(debug, br#"{"reason":"Shutdown"}"#);
    assert_eq!(sim.stats.goaways(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_tokens_give_their_status_and_reason() {
    let sim = apns::start(local(), ApnsSimOptions::default())
        .await
        .unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    let cases = [
        ("dead", 410, "Unregistered"),
        ("bad0", 400, "BadDeviceToken"),
        ("70b1", 400, "DeviceTokenNotForTopic"),
        ("4290", 429, "TooManyRequests"),
        ("5030", 503, "ServiceUnavailable"),
        ("5030", 503, "ServiceUnavailable"),
        ("5031", 503, "ServiceUnavailable"),
        ("5031", 200, ""),
        ("abcd", 200, ""),
    ];
    for (prefix, status, reason) in cases {
        let a = push(&mut send, Some(&jwt), &scripted_token(prefix), &[], PAYLOAD).await;
        assert_eq!(
            (a.status, a.reason().as_str()),
            (status, reason),
            "token {prefix}"
        );
        assert!(a.header("apns-id").is_some());
        if status == 410 {
            assert!(a.json()["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        }
        if status != 200 {
            assert_eq!(a.header("content-type"), Some("application/json"));
        }
    }
    for bad in ["abcd", &"zz".repeat(32)] {
        let a = push(&mut send, Some(&jwt), bad, &[], PAYLOAD).await;
        assert_eq!((a.status, a.reason().as_str()), (400, "BadDeviceToken"));
    }
    let id = "123e4567-e89b-12d3-a456-426614174000";
    let a = push(
        &mut send,
        Some(&jwt),
        &scripted_token("ab"),
        &[("apns-id", id)],
        PAYLOAD,
    )
    .await;
    assert_eq!(a.header("apns-id"), Some(id));
    assert!(
        a.header("apns-unique-id").is_some(),
        "sandbox adds apns-unique-id"
    );
    assert!(a.body.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn every_known_reason_can_be_forced_through_the_protocol() {
    let sim = apns::start(local(), ApnsSimOptions::default())
        .await
        .unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    for reason in ApnsReason::KNOWN.iter() {
        if *reason == ApnsReason::Shutdown {
            continue; // closes the connection; checked below on its own
        }
        let a = push(
            &mut send,
            Some(&jwt),
            &forced_token(reason).unwrap(),
            &[],
            PAYLOAD,
        )
        .await;
        assert_eq!(a.status, reason.status(), "{reason}");
        assert_eq!(a.reason(), reason.as_str());
    }
    let a = push(
        &mut send,
        Some(&jwt),
        &forced_token(&ApnsReason::Shutdown).unwrap(),
        &[],
        PAYLOAD,
    )
    .await;
    assert_eq!((a.status, a.reason().as_str()), (503, "Shutdown"));
    sim.shutdown().await;
}

#[tokio::test]
async fn header_and_payload_checks() {
    let sim = apns::start(local(), ApnsSimOptions::default())
        .await
        .unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    let tok = scripted_token("ab");
    let big = vec![b'x'; 4097];
    let voip = vec![b'x'; 5000];
    let long_collapse = "c".repeat(65);
    let collapse = [("apns-collapse-id", long_collapse.as_str())];
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], u16, &'a str);
    let cases: Vec<Case> = vec![
        (&[], b"", 400, "PayloadEmpty"),
        (&[], &big, 413, "PayloadTooLarge"),
        (&[("apns-priority", "3")], PAYLOAD, 400, "BadPriority"),
        (
            &[("apns-push-type", "background"), ("apns-priority", "10")],
            PAYLOAD,
            400,
            "BadPriority",
        ),
        (
            &[("apns-push-type", "bogus")],
            PAYLOAD,
            400,
            "InvalidPushType",
        ),
        (&[("apns-push-type", "voip")], PAYLOAD, 400, "BadTopic"),
        (&collapse, PAYLOAD, 400, "BadCollapseId"),
        (
            &[("apns-expiration", "tomorrow")],
            PAYLOAD,
            400,
            "BadExpirationDate",
        ),
        (&[("apns-id", "not-a-uuid")], PAYLOAD, 400, "BadMessageId"),
    ];
    for (extra, body, status, reason) in cases {
        let a = push(&mut send, Some(&jwt), &tok, extra, body).await;
        assert_eq!(
            (a.status, a.reason().as_str()),
            (status, reason),
            "{extra:?}"
        );
    }
    let voip_headers = [
        ("apns-topic", "com.example.shop.voip"),
        ("apns-push-type", "voip"),
    ];
    let auth = format!("bearer {jwt}");
    let mut h = voip_headers.to_vec();
    h.push(("authorization", &auth));
    let a = request(
        &mut send,
        Method::POST,
        &format!("/3/device/{tok}"),
        &h,
        &voip,
    )
    .await;
    assert_eq!(a.status, 200, "voip allows 5120 bytes");
    let a = request(&mut send, Method::GET, &format!("/3/device/{tok}"), &h, b"").await;
    assert_eq!((a.status, a.reason().as_str()), (405, "MethodNotAllowed"));
    let a = request(&mut send, Method::POST, "/3/other", &h, PAYLOAD).await;
    assert_eq!((a.status, a.reason().as_str()), (404, "BadPath"));
    let a = request(
        &mut send,
        Method::POST,
        &format!("/3/device/{tok}"),
        &[("authorization", &auth)],
        PAYLOAD,
    )
    .await;
    assert_eq!((a.status, a.reason().as_str()), (400, "MissingTopic"));
    sim.shutdown().await;
}

async fn first_answer(sim_addr: std::net::SocketAddr, jwt: Option<&str>) -> Answer {
    let mut send = h2_connect(sim_addr).await;
    push(&mut send, jwt, &scripted_token("ab"), &[], PAYLOAD).await
}

#[tokio::test]
async fn authentication_failures_give_their_403_reasons() {
    let other = TrustedKey {
        key_id: "OTHERKEY01".into(),
        team_id: "DEVTEAM001".into(),
        public_key_pem: dev_file("apns-other.pub.pem"),
        environment: Some(ApnsEnvironment::Production),
    };
    let opts = ApnsSimOptions {
        trusted_keys: vec![TrustedKey::dev(), other],
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let addr = sim.addr;
    let t = now();
    let cases = [
        (None, "MissingProviderToken"),
        (Some("not-a-jwt".to_owned()), "InvalidProviderToken"),
        (
            Some(apns_jwt("apns-other.p8", "DEVKEY0001", "DEVTEAM001", t)),
            "InvalidProviderToken",
        ),
        (
            Some(apns_jwt("apns-other.p8", "UNKNOWN001", "DEVTEAM001", t)),
            "InvalidProviderToken",
        ),
        (
            Some(apns_jwt("apns-dev.p8", "DEVKEY0001", "OTHERTEAM1", t)),
            "InvalidProviderToken",
        ),
        (
            Some(apns_jwt(
                "apns-dev.p8",
                "DEVKEY0001",
                "DEVTEAM001",
                t - 3700,
            )),
            "ExpiredProviderToken",
        ),
        (
            Some(apns_jwt("apns-other.p8", "OTHERKEY01", "DEVTEAM001", t)),
            "BadEnvironmentKeyIdInToken",
        ),
    ];
    for (jwt, reason) in cases {
        let a = first_answer(addr, jwt.as_deref()).await;
        assert_eq!((a.status, a.reason().as_str()), (403, reason), "{reason}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_binds_key_and_limits_token_updates() {
    let other = TrustedKey {
        key_id: "OTHERKEY01".into(),
        team_id: "DEVTEAM001".into(),
        public_key_pem: dev_file("apns-other.pub.pem"),
        environment: None,
    };
    let opts = ApnsSimOptions {
        trusted_keys: vec![TrustedKey::dev(), other],
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let tok = scripted_token("ab");
    let t = now();
    let first = apns_jwt("apns-dev.p8", "DEVKEY0001", "DEVTEAM001", t);
    assert_eq!(
        push(&mut send, Some(&first), &tok, &[], PAYLOAD)
            .await
            .status,
        200
    );
    let other = apns_jwt("apns-other.p8", "OTHERKEY01", "DEVTEAM001", t);
    let a = push(&mut send, Some(&other), &tok, &[], PAYLOAD).await;
    assert_eq!(
        (a.status, a.reason().as_str()),
        (403, "UnrelatedKeyIdInToken")
    );
    let newer = apns_jwt("apns-dev.p8", "DEVKEY0001", "DEVTEAM001", t + 1);
    let a = push(&mut send, Some(&newer), &tok, &[], PAYLOAD).await;
    assert_eq!(
        (a.status, a.reason().as_str()),
        (429, "TooManyProviderTokenUpdates")
    );
    // The first token still works, and the other key is fine on its own connection.
    assert_eq!(
        push(&mut send, Some(&first), &tok, &[], PAYLOAD)
            .await
            .status,
        200
    );
    assert_eq!(first_answer(sim.addr, Some(&other)).await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_record_what_was_received_and_restart_on_same_port() {
    let sim = apns::start(local(), ApnsSimOptions::default())
        .await
        .unwrap();
    let addr = sim.addr;
    let mut send = h2_connect(addr).await;
    let extra = [("apns-collapse-id", "sale-1"), ("apns-priority", "5")];
    let a = push(
        &mut send,
        Some(&dev_apns_jwt()),
        &scripted_token("ab"),
        &extra,
        PAYLOAD,
    )
    .await;
    assert_eq!(a.status, 200);
    let last = sim.stats.last().unwrap();
    assert_eq!(last.header("apns-collapse-id"), Some("sale-1"));
    assert_eq!(last.header("apns-priority"), Some("5"));
    assert_eq!(last.json()["aps"]["alert"], "hi");
    assert_eq!(last.status, 200);
    sim.shutdown().await;

    let again = apns::start(addr, ApnsSimOptions::default()).await.unwrap();
    assert_eq!(again.addr, addr);
    assert_eq!(first_answer(addr, Some(&dev_apns_jwt())).await.status, 200);
    again.shutdown().await;
}

#[tokio::test]
async fn per_device_rate_and_accept_all_mode() {
    let opts = ApnsSimOptions {
        device_rate: Some(2),
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    let tok = scripted_token("ab");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(push(&mut send, Some(&jwt), &tok, &[], PAYLOAD).await.status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    sim.shutdown().await;

    let opts = ApnsSimOptions {
        accept_all: true,
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    assert_eq!(
        push(&mut send, Some(&jwt), &scripted_token("dead"), &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        push(&mut send, None, &scripted_token("ab"), &[], PAYLOAD)
            .await
            .status,
        403
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn certificate_auth_needs_no_jwt_and_binds_the_certificate_topic() {
    let opts = ApnsSimOptions {
        client_certs: ClientCerts::Optional,
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect_with(sim.addr, true).await;
    assert_eq!(
        wait_max_streams(&send, 1000).await,
        1000,
        "cert connections start high"
    );
    let tok = scripted_token("ab");
    assert_eq!(push(&mut send, None, &tok, &[], PAYLOAD).await.status, 200);
    let path = format!("/3/device/{tok}");
    let a = request(
        &mut send,
        Method::POST,
        &path,
        &[("apns-topic", "com.other.app")],
        PAYLOAD,
    )
    .await;
    assert_eq!((a.status, a.reason().as_str()), (400, "TopicDisallowed"));
    let a = request(&mut send, Method::POST, &path, &[], PAYLOAD).await;
    assert_eq!(a.status, 200, "the certificate UID is the default topic");

    // Without a certificate the same listener wants a provider token.
    let a = first_answer(sim.addr, None).await;
    assert_eq!(
        (a.status, a.reason().as_str()),
        (403, "MissingProviderToken")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn goaway_with_many_in_flight_answers_every_accepted_stream() {
    goaway_with_many_in_flight_answers_every_accepted_stream_in(false).await;
}

/// The same in benchmark mode, served by the simulator's own HTTP/2 loop.
#[tokio::test]
async fn goaway_with_many_in_flight_answers_every_accepted_stream_accept_all() {
    goaway_with_many_in_flight_answers_every_accepted_stream_in(true).await;
}

async fn goaway_with_many_in_flight_answers_every_accepted_stream_in(accept_all: bool) {
    let opts = ApnsSimOptions {
        goaway_every: Some(50),
        latency: apns_latency(),
        accept_all,
        ..Default::default()
    };
    let sim = apns::start(local(), opts).await.unwrap();
    let mut send = h2_connect(sim.addr).await;
    let jwt = dev_apns_jwt();
    assert_eq!(
        push(&mut send, Some(&jwt), &scripted_token("ab"), &[], PAYLOAD)
            .await
            .status,
        200
    );
    wait_max_streams(&send, 1000).await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let s = send.clone();
        let auth = format!("bearer {jwt}");
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(format!(
                "https://localhost/3/device/{}",
                scripted_token("ab")
            ))
            .header("apns-topic", "com.example.shop")
            .header("authorization", auth)
            .body(())
            .unwrap();
            let mut s = s.ready().await?;
            let (resp, mut body) = s.send_request(req, false)?;
            body.send_data(bytes::Bytes::from_static(PAYLOAD), true)?;
            resp.await.map(|r| r.status().as_u16())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(status) => {
                assert_eq!(status, 200);
                ok += 1;
            }
            // Streams the server never processed: refused or beyond GOAWAY's last id.
            Err(e) => assert!(
                e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM),
                "{e:?}"
            ),
        }
    }
    assert!(
        ok >= 49,
        "at least the requests up to the GOAWAY are answered, got {ok}"
    );
    assert_eq!(
        sim.stats.responses(200),
        ok + 1,
        "every stream the server handled was answered"
    );
    assert_eq!(sim.stats.goaways(), 1);
    sim.shutdown().await;
}
