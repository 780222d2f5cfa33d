//! A scripted [`Transport`](super::Transport) for provider unit tests (no network).

use std::sync::Mutex;

use bytes::Bytes;

use super::{Answer, Transport};

#[derive(Debug, thiserror::Error)]
#[error("fake transport: no more scripted answers")]
pub struct NoAnswer;

/// Answers with the scripted `(status, body)` in order; a retired
/// connection is replaced by the next id.
#[derive(Default)]
pub struct FakeTransport {
    script: Mutex<Vec<(u16, &'static str)>>,
    requests: Mutex<Vec<http::Request<Bytes>>>,
    retired: Mutex<Vec<u32>>,
}

impl FakeTransport {
    pub fn new(mut script: Vec<(u16, &'static str)>) -> FakeTransport {
        script.reverse();
        FakeTransport {
            script: Mutex::new(script),
            ..FakeTransport::default()
        }
    }

    pub fn requests(&self) -> Vec<http::Request<Bytes>> {
        self.requests.lock().unwrap().clone()
    }

    pub fn retired(&self) -> Vec<u32> {
        self.retired.lock().unwrap().clone()
    }
}

impl Transport for FakeTransport {
    type Conn = u32;
    type Error = NoAnswer;

    async fn send(&self, req: http::Request<Bytes>) -> Result<Answer<u32>, NoAnswer> {
        self.requests.lock().unwrap().push(req);
        let next = self.script.lock().unwrap().pop().ok_or(NoAnswer)?;
        let conn = self.retired.lock().unwrap().len() as u32;
        let mut headers = http::HeaderMap::new();
        if next.0 == 429 || next.0 == 503 {
            headers.insert("retry-after", http::HeaderValue::from_static("7"));
        }
        Ok(Answer {
            status: next.0,
            headers,
            body: Bytes::from_static(next.1.as_bytes()),
            conn,
        })
    }

    fn retire(&self, conn: u32) {
        self.retired.lock().unwrap().push(conn);
    }
}
