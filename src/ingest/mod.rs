//! The RabbitMQ side of the daemon: topology, consumers, batched acks,
//! retries through delay queues and dead-lettering, and the events queue.

pub mod acks;
pub mod amqp;
pub mod batch;
pub mod client;
pub mod control;
pub mod decode;
pub mod events;
pub mod handle;
pub mod retry;
pub mod topology;
mod worker;

use std::time::Duration;

/// How long closing a channel or a connection (or cancelling a consumer)
/// may take. The client waits for the broker's answer without a deadline; once a
/// demo run in CI never exited after its daemon's connection was gone (not
/// reproduced since, so which wait it was is not known): every such wait is
/// bounded, and past this it is given up (the broker drops channels and
/// consumers with the socket anyway).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits the broker's answer to `op` for at most [`CLOSE_TIMEOUT`]; past
/// it, logs `what` and carries on as if it had been answered.
async fn bounded(
    what: &str,
    op: impl std::future::Future<Output = Result<(), client::Error>>,
) -> Result<(), IngestError> {
    match tokio::time::timeout(CLOSE_TIMEOUT, op).await {
        Ok(r) => r.map_err(IngestError::from),
        Err(_) => {
            tracing::warn!(what, timeout = ?CLOSE_TIMEOUT, "the broker did not answer; given up");
            Ok(())
        }
    }
}

/// Cancels consumer `tag` on `ch` (a drain must not wait forever on the
/// broker's Cancel-Ok either).
pub async fn cancel_consumer(ch: &client::Channel, tag: &str) -> Result<(), IngestError> {
    bounded("cancelling a consumer", ch.cancel(tag)).await
}

/// Closes `ch` (200, `why`).
pub async fn close_channel(ch: &client::Channel, why: &str) -> Result<(), IngestError> {
    bounded("closing a channel", ch.close(why)).await
}

/// Closes `conn` (200, `why`).
pub async fn close_connection(conn: &client::Connection, why: &str) -> Result<(), IngestError> {
    bounded("closing the connection", conn.close(why)).await
}

/// Why a broker session ends other than by shutdown; the daemon reconnects.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("broker: {0}")]
    Broker(#[from] client::Error),
    #[error("encoding a message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("consumer on {0} was closed")]
    ConsumerClosed(String),
    #[error("{0}")]
    Connect(#[from] client::OpenError),
    #[error("publishing results: {0}")]
    Results(String),
    #[error("a job task failed: {0}")]
    Task(String),
}
