//! Counters and a bounded log of received requests, shared by a simulator and its tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// One request as the simulator received it, with the status it answered.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// Connection number (1-based, in accept order).
    pub connection: u64,
    pub method: String,
    pub path: String,
    /// Every header (names lower-case), pseudo-headers excluded, in order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub status: u16,
    /// When the request's headers arrived (wall clock, to compare with
    /// other processes' logs).
    pub at: std::time::SystemTime,
}

impl ReceivedRequest {
    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What a simulator has seen since it started.
#[derive(Debug)]
pub struct SimStats {
    requests: AtomicU64,
    connections: AtomicU64,
    refused_streams: AtomicU64,
    token_grants: AtomicU64,
    goaways: AtomicU64,
    statuses: [AtomicU64; 600],
    peaks: Mutex<Vec<u64>>,
    recent: Mutex<VecDeque<ReceivedRequest>>,
    recent_cap: usize,
}

impl SimStats {
    /// Keeps at most `recent_cap` received requests.
    pub fn new(recent_cap: usize) -> SimStats {
        SimStats {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refused_streams: AtomicU64::new(0),
            token_grants: AtomicU64::new(0),
            goaways: AtomicU64::new(0),
            statuses: std::array::from_fn(|_| AtomicU64::new(0)),
            peaks: Mutex::new(Vec::new()),
            recent: Mutex::new(VecDeque::new()),
            recent_cap,
        }
    }

    /// Requests handled (streams accepted and answered, refused ones excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// TCP+TLS connections that completed the HTTP/2 handshake.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Streams refused with RST_STREAM(REFUSED_STREAM).
    pub fn refused_streams(&self) -> u64 {
        self.refused_streams.load(Ordering::Relaxed)
    }

    /// Access tokens issued by the FCM OAuth endpoint.
    pub fn token_grants(&self) -> u64 {
        self.token_grants.load(Ordering::Relaxed)
    }

    /// Connections closed by the simulator with GOAWAY (`goaway_every`).
    pub fn goaways(&self) -> u64 {
        self.goaways.load(Ordering::Relaxed)
    }

    /// Responses sent with this HTTP status.
    pub fn responses(&self, status: u16) -> u64 {
        self.statuses
            .get(status as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every status answered at least once, with its count.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        (0u16..600)
            .filter_map(|s| Some((s, self.responses(s))).filter(|(_, n)| *n > 0))
            .collect()
    }

    /// Peak concurrent streams seen on each connection, in accept order.
    pub fn peak_streams(&self) -> Vec<u64> {
        self.peaks.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The highest concurrent-stream count seen on any connection.
    pub fn max_peak_streams(&self) -> u64 {
        self.peak_streams().into_iter().max().unwrap_or(0)
    }

    /// The last received requests, oldest first (bounded).
    pub fn recent(&self) -> Vec<ReceivedRequest> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The most recent received request.
    pub fn last(&self) -> Option<ReceivedRequest> {
        self.recent.lock().ok().and_then(|r| r.back().cloned())
    }

    /// Forgets the recorded requests (counters stay).
    pub fn clear_recent(&self) {
        if let Ok(mut r) = self.recent.lock() {
            r.clear();
        }
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_status(&self, status: u16) {
        if let Some(c) = self.statuses.get(status as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_refused(&self) {
        self.refused_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_grant(&self) {
        self.token_grants.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_goaway(&self) {
        self.goaways.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a new connection and returns its 1-based number.
    pub(crate) fn open_connection(&self) -> u64 {
        let id = match self.peaks.lock() {
            Ok(mut p) => {
                p.push(0);
                p.len() as u64
            }
            Err(_) => 0,
        };
        self.connections.fetch_add(1, Ordering::Relaxed);
        id
    }

    pub(crate) fn note_streams(&self, connection: u64, active: u64) {
        if let Ok(mut p) = self.peaks.lock() {
            if let Some(peak) = p.get_mut(connection.saturating_sub(1) as usize) {
                *peak = (*peak).max(active);
            }
        }
    }

    pub(crate) fn record(&self, request: ReceivedRequest) {
        if self.recent_cap == 0 {
            return;
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= self.recent_cap {
                r.pop_front();
            }
            r.push_back(request);
        }
    }
}

impl Default for SimStats {
    fn default() -> Self {
        SimStats::new(256)
    }
}
