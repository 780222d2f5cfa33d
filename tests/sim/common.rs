//! Test helpers for the simulator tests: TLS + raw h2 client, JWT signing with ring.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub fn dev_file(name: &str) -> String {
    let path = format!("{}/config/dev/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A TLS connection to a simulator, trusting the dev CA, ALPN h2.
pub async fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    tls_connect_with(addr, false).await
}

/// The test APNs client certificate (UID com.example.shop, signed by the dev CA).
fn client_identity() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let pem = dev_file("apns-client.pem");
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(dev_file("apns-client.key").as_bytes()).unwrap();
    (certs, key)
}

/// Like [`tls_connect`], presenting the test client certificate if `client_cert`.
pub async fn tls_connect_with(addr: SocketAddr, client_cert: bool) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(dev_file("ca.pem").as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = if client_cert {
        let (certs, key) = client_identity();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// An h2 client connection (driven by a spawned task).
pub async fn h2_connect(addr: SocketAddr) -> SendRequest<Bytes> {
    h2_connect_with(addr, false).await
}

/// An h2 client connection, with the test client certificate if `client_cert`.
pub async fn h2_connect_with(addr: SocketAddr, client_cert: bool) -> SendRequest<Bytes> {
    let tls = tls_connect_with(addr, client_cert).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A response as read by the test client.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap_or("").to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request and reads the whole answer.
pub async fn request(
    send: &mut SendRequest<Bytes>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let req = builder.body(()).unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let (resp, mut stream) = ready.send_request(req, body.is_empty()).unwrap();
    if !body.is_empty() {
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
    }
    let resp = resp.await.unwrap();
    let (parts, mut recv) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Bytes::from(out),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pkcs8(pem: &str) -> Vec<u8> {
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap() {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        other => panic!("not PKCS#8: {other:?}"),
    }
}

/// An ES256 APNs provider token signed with `config/dev/<p8_file>`.
pub fn apns_jwt(p8_file: &str, kid: &str, team: &str, iat: i64) -> String {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8(&dev_file(p8_file)),
        &rng,
    )
    .unwrap();
    let header = serde_json::json!({"alg": "ES256", "kid": kid});
    let claims = serde_json::json!({"iss": team, "iat": iat});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

/// The dev token for the dev key, issued now.
pub fn dev_apns_jwt() -> String {
    apns_jwt("apns-dev.p8", "DEVKEY0001", "DEVTEAM001", now())
}

/// An RS256 assertion signed with the dev service account's key.
pub fn fcm_assertion(claims: serde_json::Value) -> String {
    let sa: serde_json::Value =
        serde_json::from_str(&dev_file("fcm-service-account.json")).unwrap();
    let key = RsaKeyPair::from_pkcs8(&pkcs8(sa["private_key"].as_str().unwrap())).unwrap();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": sa["private_key_id"]});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

/// Standard good claims for the token endpoint at `addr`.
pub fn fcm_claims(addr: SocketAddr) -> serde_json::Value {
    let iat = now();
    serde_json::json!({
        "iss": "pushgate-dev@pushgate-dev.iam.gserviceaccount.com",
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": format!("https://localhost:{}/token", addr.port()),
        "iat": iat,
        "exp": iat + 3600,
    })
}
