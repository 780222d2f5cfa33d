//! What a pooled request can fail with, and which HTTP/2 failures are safe to retry.

use crate::provider::http2::conn::Error as Http2Error;

use std::time::Duration;

/// Why [`super::H2Pool::send`] gave no response.
///
/// Every transport failure maps to `Code::from_transport()` (ProviderUnavailable);
/// [`PoolError::maybe_processed`] tells whether the provider may have acted on
/// the request (matters for non-idempotent sends).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No usable connection before the deadline (connect or TLS failures, or
    /// every connection reconnecting). Nothing was sent.
    #[error("{label}: no connection to the provider: {reason}")]
    Unavailable { label: &'static str, reason: String },
    /// The request deadline (`request_timeout`) passed. `sent` says whether the
    /// request had been handed to a connection (then it may have been processed).
    #[error("{label}: request timed out after {after:?}")]
    Timeout {
        label: &'static str,
        after: Duration,
        sent: bool,
    },
    /// The server did not process the request (GOAWAY beyond its last stream,
    /// REFUSED_STREAM, connection closed before sending) on every attempt.
    /// `last` carries the final failure (a GOAWAY's debug data is in its text).
    #[error("{label}: request not processed by the server after {attempts} attempts: {last}")]
    Refused {
        label: &'static str,
        attempts: u32,
        #[source]
        last: Http2Error,
    },
    /// The connection or stream failed while the request was in flight: the
    /// server may have processed it.
    #[error("{label}: transport failure mid-request: {source}")]
    Transport {
        label: &'static str,
        #[source]
        source: Http2Error,
    },
    /// The response head arrived but its body could not be read (reset, too large).
    #[error("{label}: reading the response body: {reason}")]
    Body { label: &'static str, reason: String },
    /// The request cannot be sent as given (a caller bug, never retryable).
    #[error("{label}: invalid request: {reason}")]
    InvalidRequest {
        label: &'static str,
        reason: &'static str,
    },
    /// The pool was shut down; nothing was sent.
    #[error("{label}: connection pool is shut down")]
    Shutdown { label: &'static str },
}

impl PoolError {
    /// Whether sending the same request later may succeed (every transport
    /// failure; not a malformed request).
    pub fn retryable(&self) -> bool {
        match self {
            PoolError::Unavailable { .. }
            | PoolError::Timeout { .. }
            | PoolError::Refused { .. }
            | PoolError::Transport { .. }
            | PoolError::Body { .. }
            | PoolError::Shutdown { .. } => true,
            PoolError::InvalidRequest { .. } => false,
        }
    }

    /// Whether the provider may have received and acted on the request.
    pub fn maybe_processed(&self) -> bool {
        match self {
            PoolError::Timeout { sent, .. } => *sent,
            PoolError::Transport { .. } | PoolError::Body { .. } => true,
            PoolError::Unavailable { .. }
            | PoolError::Refused { .. }
            | PoolError::InvalidRequest { .. }
            | PoolError::Shutdown { .. } => false,
        }
    }
}

/// How a failed `send_request` is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failure {
    /// The server provably did not process the request: retry it elsewhere.
    pub unprocessed: bool,
    /// The whole connection is unusable for new requests: drain and replace it.
    pub connection_level: bool,
}

/// Classifies the error of a request that was sent (RFC 9113 sections 6.8
/// and 8.7). Errors before sending (the connection closing or gone) never
/// get here: the pool retries those itself.
///
/// - a GOAWAY from the peer that failed this stream: its id is above the
///   GOAWAY's last-stream-id, so it was not processed.
/// - RST_STREAM(REFUSED_STREAM) from the peer: not processed, stream-level only.
/// - other resets: the request may have been processed, the connection goes on.
/// - anything else (I/O error, connection closed, a protocol error): the
///   request may have been processed.
pub(super) fn classify(err: &Http2Error) -> Failure {
    Failure {
        unprocessed: err.unprocessed(),
        connection_level: err.connection_level(),
    }
}
