//! The RabbitMQ side of the daemon: topology, consumers, batched acks,
//! retries through delay queues and dead-lettering.

pub mod acks;
pub mod amqp;
pub mod decode;
pub mod retry;
pub mod topology;
