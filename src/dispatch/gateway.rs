//! The real delivery behind the dispatcher: each app's providers (APNs, FCM
//! pools and credentials), picked by the job's app and the recipient's platform.

use std::sync::Arc;

use crate::config::Config;
use crate::job::Job;
use crate::job::Platform;
use crate::outcome::{Code, Outcome};
use crate::policy::keys::{FxBuild, NameMap};
use crate::provider::apns::auth::Tokens;
use crate::provider::h2pool::PoolStats;
use crate::provider::{ProviderError, Providers};
use crate::telemetry::{PoolSource, Telemetry};

use super::Deliver;

/// Every configured app's [`Providers`], built once at start-up.
#[derive(Debug)]
pub struct Gateway {
    /// By app name from the config (FxHash: looked up per notification).
    apps: NameMap<Providers>,
    /// Where provider request durations are observed.
    telemetry: Option<Arc<Telemetry>>,
}

impl Gateway {
    /// Builds the pools and credentials of every app (with the `[tracking]`
    /// key when on). Call inside a Tokio runtime: the pools start
    /// connecting at once.
    pub fn new(config: &Config) -> Result<Gateway, ProviderError> {
        Self::new_with(config, &Tokens::default())
    }

    /// As [`Gateway::new`], the APNs tokens taken from `tokens`: the
    /// dispatch shards' gateways share one per team and key.
    pub fn new_with(config: &Config, tokens: &Tokens) -> Result<Gateway, ProviderError> {
        let mut apps = NameMap::with_capacity_and_hasher(config.apps.len(), FxBuild::default());
        let tracking = config.tracking.key();
        for (name, app) in &config.apps {
            apps.insert(
                name.clone(),
                Providers::new_with(app, tokens)?.with_tracking(tracking),
            );
        }
        Ok(Gateway {
            apps,
            telemetry: None,
        })
    }

    /// Observes every provider request in `telemetry`'s duration histogram.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Gateway {
        self.telemetry = Some(telemetry);
        self
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
        let Some(platform) = job.recipients.get(recipient).map(|r| r.platform) else {
            return Outcome::local(Code::InvalidJob, "no such recipient in the job");
        };
        let outcome = providers.send_recipient(job, recipient, attempt).await;
        // Local refusals took no request; answers and transport failures did.
        let requested = outcome.provider_status.is_some() || !outcome.latency.is_zero();
        if let (Some(t), true) = (&self.telemetry, requested) {
            t.metrics.observe_request(platform, outcome.latency);
        }
        outcome
    }
}

impl PoolSource for Gateway {
    fn pool_stats(&self) -> Vec<(Platform, PoolStats)> {
        self.apps.values().flat_map(Providers::pool_stats).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gateways_built_with_one_token_store_sign_with_one_token() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let cfg = crate::config::load_with_env(&dir.join("dev.toml"), Vec::new()).unwrap();
        let token =
            |g: &Gateway| Arc::clone(g.apps["shop"].apns.as_ref().unwrap().token().unwrap());
        let tokens = Tokens::default();
        let (a, b) = (
            Gateway::new_with(&cfg, &tokens).unwrap(),
            Gateway::new_with(&cfg, &tokens).unwrap(),
        );
        assert!(
            Arc::ptr_eq(&token(&a), &token(&b)),
            "the shards' gateways share the token"
        );
        let c = Gateway::new(&cfg).unwrap();
        assert!(!Arc::ptr_eq(&token(&a), &token(&c)));
        for g in [a, b, c] {
            g.shutdown().await;
        }
    }
}
