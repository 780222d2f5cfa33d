//! pushgate's HTTP/2 wire layer (`provider::http2`: frames, HPACK) against
//! an independent implementation, h2's server: requests written with our
//! frames and encoder arrive as sent, and h2's answers (its HPACK with
//! Huffman strings, a dynamic table that evicts) decode to what it sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response};
use pushgate::provider::http2::frame::{self, Frame};
use pushgate::provider::http2::hpack::{Decoder, Encoder, Indexing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const REQUESTS: u32 = 120;

/// What h2's server decoded from one request.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    authority: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// h2's server: answers each request with its `apns-id`, a long header
/// that changes now and then, and the body reversed.
async fn server(listener: TcpListener, seen: mpsc::UnboundedSender<Seen>) {
    let (sock, _) = listener.accept().await.unwrap();
    let mut conn = h2::server::handshake(sock).await.unwrap();
    while let Some(accepted) = conn.accept().await {
        let (req, mut respond) = accepted.unwrap();
        let seen = seen.clone();
        tokio::spawn(async move {
            let (parts, mut body) = req.into_parts();
            let mut data = BytesMut::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            let id = parts.headers["apns-id"].clone();
            let n: u32 = id
                .to_str()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let mut headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            seen.send(Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                authority: parts.uri.authority().unwrap().to_string(),
                headers,
                body: data.clone().freeze(),
            })
            .unwrap();
            let mut answer = Response::builder()
                .status(if n % 7 == 0 { 410 } else { 200 })
                .header("apns-id", id)
                .header("x-note", format!("{:0>90}", n / 10))
                .body(())
                .unwrap();
            answer
                .headers_mut()
                .insert("x-fixed", HeaderValue::from_static("same on every answer"));
            let mut stream = respond.send_response(answer, false).unwrap();
            let reversed: Vec<u8> = data.iter().rev().copied().collect();
            stream.send_data(Bytes::from(reversed), true).unwrap();
        });
    }
}

/// The headers of request `n`.
fn request_fields(n: u32) -> Vec<(&'static str, String, Indexing)> {
    vec![
        (":method", "POST".into(), Indexing::Incremental),
        (":scheme", "http".into(), Indexing::Incremental),
        (
            ":authority",
            "api.push.example".into(),
            Indexing::Incremental,
        ),
        (":path", format!("/3/device/{n:064x}"), Indexing::No),
        (
            "apns-topic",
            format!("com.example.app{}", n / 50),
            Indexing::Incremental,
        ),
        ("apns-push-type", "alert".into(), Indexing::Incremental),
        ("apns-id", format!("id-{n}"), Indexing::Never),
        (
            "authorization",
            "bearer eyJhbGciOiJFUzI1NiJ9.e30.sig".into(),
            Indexing::Incremental,
        ),
        ("content-length", format!("{}", body(n).len()), Indexing::No),
    ]
}

fn body(n: u32) -> Vec<u8> {
    format!(r#"{{"aps":{{"alert":"n{n}"}}}}"#).into_bytes()
}

/// One answer, as our decoder read it.
#[derive(Debug, Default)]
struct Answer {
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    done: bool,
}

#[tokio::test]
async fn requests_and_answers_cross_h2s_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let srv = tokio::spawn(server(listener, tx));

    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(frame::PREFACE);
    frame::write_settings(&mut out, &[(frame::setting::ENABLE_PUSH, 0)]);
    let mut enc = Encoder::default();
    let mut sizes = Vec::new();
    for n in 0..REQUESTS {
        let mut block = Vec::new();
        enc.begin(&mut block);
        for (name, value, how) in request_fields(n) {
            enc.field(name.as_bytes(), value.as_bytes(), how, &mut block);
        }
        sizes.push(block.len());
        let stream = 2 * n + 1;
        frame::write_headers(&mut out, stream, &block, false, frame::DEFAULT_MAX_FRAME);
        frame::write_data(&mut out, stream, &body(n), true, frame::DEFAULT_MAX_FRAME);
    }
    sock.write_all(&out).await.unwrap();
    assert!(
        sizes[1] + 90 < sizes[0],
        "repeated headers go as indices: {sizes:?}"
    );

    let mut dec = Decoder::default();
    let mut answers: HashMap<u32, Answer> = HashMap::new();
    let mut input = BytesMut::with_capacity(1 << 16);
    let mut pending: Option<(u32, Vec<u8>, bool)> = None;
    let read_all = async {
        while answers.values().filter(|a| a.done).count() < REQUESTS as usize {
            if sock.read_buf(&mut input).await.unwrap() == 0 {
                panic!("server closed the connection");
            }
            while let Some(f) = frame::read(&mut input, frame::DEFAULT_MAX_FRAME).unwrap() {
                let mut reply = BytesMut::new();
                match f {
                    Frame::Settings { ack: false, .. } => frame::write_settings_ack(&mut reply),
                    Frame::Ping {
                        ack: false,
                        payload,
                    } => frame::write_ping(&mut reply, payload, true),
                    Frame::Headers {
                        stream,
                        end_stream,
                        end_headers,
                        block,
                    } => {
                        pending = Some((stream, block.to_vec(), end_stream));
                        if !end_headers {
                            continue;
                        }
                    }
                    Frame::Continuation {
                        block, end_headers, ..
                    } => {
                        pending.as_mut().unwrap().1.extend_from_slice(&block);
                        if !end_headers {
                            continue;
                        }
                    }
                    Frame::Data {
                        stream,
                        end_stream,
                        data,
                        flow,
                    } => {
                        let a = answers.entry(stream).or_default();
                        a.body.extend_from_slice(&data);
                        a.done |= end_stream;
                        if flow > 0 {
                            frame::write_window_update(&mut reply, 0, flow as u32);
                        }
                    }
                    Frame::GoAway { code, .. } => panic!("GOAWAY {code}"),
                    Frame::RstStream { stream, code } => panic!("RST_STREAM {stream} {code}"),
                    _ => {}
                }
                if let Some((stream, block, end_stream)) = pending.take() {
                    let a = answers.entry(stream).or_default();
                    dec.decode(&block, |n, v| {
                        a.fields.push((
                            String::from_utf8(n.to_vec()).unwrap(),
                            String::from_utf8(v.to_vec()).unwrap(),
                        ))
                    })
                    .unwrap();
                    a.done |= end_stream;
                }
                if !reply.is_empty() {
                    sock.write_all(&reply).await.unwrap();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("every answer within 20 s");

    // What h2's server decoded is what we encoded.
    let mut seen = Vec::new();
    while seen.len() < REQUESTS as usize {
        seen.push(rx.recv().await.unwrap());
    }
    for s in &seen {
        let n: u32 = s.headers.iter().find(|(k, _)| k == "apns-id").unwrap().1[3..]
            .parse()
            .unwrap();
        let sent = request_fields(n);
        assert_eq!(
            (s.method.as_str(), s.authority.as_str()),
            ("POST", "api.push.example")
        );
        assert_eq!(s.path, sent[3].1);
        let mut want: Vec<(String, String)> = sent[4..]
            .iter()
            .map(|(k, v, _)| (k.to_string(), v.clone()))
            .collect();
        want.sort();
        assert_eq!(s.headers, want, "request {n}");
        assert_eq!(s.body, body(n));
    }

    // What we decoded is what h2's server sent, stream by stream.
    for n in 0..REQUESTS {
        let a = &answers[&(2 * n + 1)];
        let status = if n % 7 == 0 { "410" } else { "200" };
        let f = |name: &str| {
            a.fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(f(":status"), Some(status), "answer {n}: {:?}", a.fields);
        assert_eq!(f("apns-id"), Some(format!("id-{n}").as_str()));
        assert_eq!(f("x-note"), Some(format!("{:0>90}", n / 10).as_str()));
        assert_eq!(f("x-fixed"), Some("same on every answer"));
        let reversed: Vec<u8> = body(n).into_iter().rev().collect();
        assert_eq!(a.body, reversed);
    }
    srv.abort();
}
