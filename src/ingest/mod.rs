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
