//! Stopping and resuming a campaign from the admin API: the
//! [`CampaignControl`] seam the admin server calls, and [`AmqpControl`],
//! which publishes the control message of design.md ("Stopping a campaign
//! midway") on the `pushgate.control` fanout exchange, so that every
//! replica's throttle sees it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use crate::config::Secret;

/// What a control call returns: `Err` says why it could not be announced.
pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Announces campaign stops and resumes to every replica.
pub trait CampaignControl: Send + Sync {
    fn stop<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a>;
    fn resume<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a>;
}

/// The control message body: `{"stop_campaign": id}` or `{"resume_campaign": id}`.
pub fn message(stop: bool, campaign: &str) -> Vec<u8> {
    let key = if stop {
        "stop_campaign"
    } else {
        "resume_campaign"
    };
    serde_json::json!({ key: campaign })
        .to_string()
        .into_bytes()
}

/// Publishes control messages on a fanout exchange with publisher confirms,
/// over a short-lived connection per call (operator actions are rare).
pub struct AmqpControl {
    url: Secret<String>,
    exchange: String,
}

impl std::fmt::Debug for AmqpControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpControl")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

impl AmqpControl {
    pub fn new(url: Secret<String>, exchange: impl Into<String>) -> AmqpControl {
        AmqpControl {
            url,
            exchange: exchange.into(),
        }
    }

    async fn publish(&self, body: Vec<u8>) -> Result<(), String> {
        let work = async {
            let conn = Connection::connect(self.url.expose(), ConnectionProperties::default())
                .await
                .map_err(|e| format!("connecting to the broker: {e}"))?;
            let result = self.publish_on(&conn, &body).await;
            let _ = conn.close(200, "control sent".into()).await;
            result
        };
        tokio::time::timeout(CONTROL_TIMEOUT, work)
            .await
            .map_err(|_| "the broker did not answer in time".to_owned())?
    }

    async fn publish_on(&self, conn: &Connection, body: &[u8]) -> Result<(), String> {
        let err = |e: lapin::Error| e.to_string();
        let ch = conn.create_channel().await.map_err(err)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err)?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        ch.exchange_declare(
            self.exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = ch
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err("the broker refused the control message".to_owned())
        }
    }
}

impl CampaignControl for AmqpControl {
    fn stop<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a> {
        Box::pin(self.publish(message(true, campaign)))
    }

    fn resume<'a>(&'a self, campaign: &'a str) -> ControlFuture<'a> {
        Box::pin(self.publish(message(false, campaign)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_contract() {
        let v: serde_json::Value = serde_json::from_slice(&message(true, "spring")).unwrap();
        assert_eq!(v, serde_json::json!({"stop_campaign": "spring"}));
        let v: serde_json::Value = serde_json::from_slice(&message(false, "a\"b")).unwrap();
        assert_eq!(v, serde_json::json!({"resume_campaign": "a\"b"}));
    }
}
