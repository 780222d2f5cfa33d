//! Stopping and resuming a campaign from the admin API: the
//! [`CampaignControl`] seam the admin server calls, and [`AmqpControl`],
//! which publishes the control message of design.md ("Stopping a campaign
//! midway") through [`crate::ingest::control::Publisher`], the same path as
//! `pushgate campaign stop`, so that every replica's policy sees it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::AmqpConfig;
use crate::ingest::control::Publisher;

/// What a control call returns: `Err` says why it could not be announced.
pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Announces campaign stops and resumes to every replica.
pub trait CampaignControl: Send + Sync {
    fn stop<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a>;
    fn resume<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a>;
}

/// Publishes control messages with [`Publisher`] (the control exchange and
/// its stream, publisher confirms) over a short-lived connection per call:
/// operator actions are rare.
pub struct AmqpControl {
    amqp: AmqpConfig,
}

impl std::fmt::Debug for AmqpControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpControl")
            .field("exchange", &self.amqp.control_exchange)
            .finish_non_exhaustive()
    }
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);

impl AmqpControl {
    pub fn new(amqp: AmqpConfig) -> AmqpControl {
        AmqpControl { amqp }
    }

    async fn send(&self, stop: bool, campaign: &str) -> Result<(), String> {
        let work = async {
            let publisher = Publisher::connect(&self.amqp)
                .await
                .map_err(|e| format!("connecting to the broker: {e}"))?;
            let sent = if stop {
                publisher.stop(campaign).await
            } else {
                publisher.resume(campaign).await
            };
            publisher.close().await;
            sent.map_err(|e| e.to_string())
        };
        tokio::time::timeout(CONTROL_TIMEOUT, work)
            .await
            .map_err(|_| "the broker did not answer in time".to_owned())?
    }
}

impl CampaignControl for AmqpControl {
    fn stop<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a> {
        Box::pin(self.send(true, campaign))
    }

    fn resume<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a> {
        Box::pin(self.send(false, campaign))
    }
}
