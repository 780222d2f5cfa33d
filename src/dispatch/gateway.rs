//! The real delivery behind the dispatcher: each app's providers (APNs, FCM
//! pools and credentials), picked by the job's app and the recipient's platform.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::job::Job;
use crate::outcome::{Code, Outcome};
use crate::provider::{new_notification_id, Message, ProviderError, Providers, Rendered};

use super::Deliver;

/// Every configured app's [`Providers`], built once at start-up.
#[derive(Debug)]
pub struct Gateway {
    apps: HashMap<String, Providers>,
}

impl Gateway {
    /// Builds the pools and credentials of every app. Call inside a Tokio
    /// runtime: the pools start connecting at once.
    pub fn new(config: &Config) -> Result<Gateway, ProviderError> {
        let mut apps = HashMap::with_capacity(config.apps.len());
        for (name, app) in &config.apps {
            apps.insert(name.clone(), Providers::new(app)?);
        }
        Ok(Gateway { apps })
    }

    /// Closes every pool; in-flight requests finish first.
    pub async fn shutdown(&self) {
        for providers in self.apps.values() {
            providers.shutdown().await;
        }
    }
}

impl Deliver for Gateway {
    async fn deliver(&self, job: &Arc<Job>, recipient: usize, attempt: u32) -> Outcome {
        let Some(providers) = self.apps.get(&job.app) else {
            return Outcome::local(
                Code::UnknownApp,
                format!("app {:?} is not configured", job.app),
            );
        };
        let Some(r) = job.recipients.get(recipient) else {
            return Outcome::local(Code::InvalidJob, "no such recipient in the job");
        };
        let rendered = Rendered::for_recipient(job, r);
        let id = new_notification_id();
        let msg = Message {
            job,
            recipient,
            rendered: &rendered,
            id: &id,
            attempt,
        };
        providers.send(&msg).await
    }
}
