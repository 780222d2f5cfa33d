//! The RabbitMQ side of the daemon: topology, consumers, batched acks,
//! retries through delay queues and dead-lettering, and the events queue.

pub mod acks;
pub mod amqp;
pub mod batch;
pub mod control;
pub mod decode;
pub mod events;
pub mod handle;
pub mod retry;
pub mod topology;
mod worker;

use std::time::Duration;

/// How long closing a channel or a connection (or cancelling a consumer)
/// may take. lapin waits for the broker's answer without a deadline; once a
/// demo run in CI never exited after its daemon's connection was gone (not
/// reproduced since, so which wait it was is not known): every such wait is
/// bounded, and past this it is given up (the broker drops channels and
/// consumers with the socket anyway).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cancels consumer `tag` on `ch` within [`CLOSE_TIMEOUT`] (a drain must
/// not wait forever on the broker's Cancel-Ok either).
pub async fn cancel_consumer(ch: &lapin::Channel, tag: &str) -> Result<(), IngestError> {
    let cancel = ch.basic_cancel(tag.into(), lapin::options::BasicCancelOptions::default());
    match tokio::time::timeout(CLOSE_TIMEOUT, cancel).await {
        Ok(r) => r.map_err(IngestError::from),
        Err(_) => {
            tracing::warn!(
                consumer = tag,
                "cancelling a consumer timed out; draining anyway"
            );
            Ok(())
        }
    }
}

/// Closes `ch` (200, `why`) within [`CLOSE_TIMEOUT`].
pub async fn close_channel(ch: &lapin::Channel, why: &str) -> Result<(), IngestError> {
    match tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, why.into())).await {
        Ok(r) => r.map_err(IngestError::from),
        Err(_) => {
            tracing::warn!(
                channel = ch.id(),
                "closing a broker channel timed out; left to the connection"
            );
            Ok(())
        }
    }
}

/// Closes `conn` (200, `why`) within [`CLOSE_TIMEOUT`].
pub async fn close_connection(conn: &lapin::Connection, why: &str) -> Result<(), IngestError> {
    match tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, why.into())).await {
        Ok(r) => r.map_err(IngestError::from),
        Err(_) => {
            tracing::warn!("closing the broker connection timed out; dropping it");
            Ok(())
        }
    }
}

/// Why a broker session ends other than by shutdown; the daemon reconnects.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("encoding a message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("consumer on {0} was closed")]
    ConsumerClosed(String),
    #[error("connecting to the broker timed out")]
    ConnectTimeout,
    #[error("publishing results: {0}")]
    Results(String),
    #[error("a job task failed: {0}")]
    Task(String),
}
