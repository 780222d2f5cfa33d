//! Turns a received message (body and pushgate headers) into a [`JobRun`] or a [`BadJob`].

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AppConfig;
use crate::dispatch::{check_job, JobRun};
use crate::job::{Job, Recipient};
use crate::outcome::Code;

/// Header names pushgate sets on retry and dead-letter messages.
pub mod headers {
    /// The attempt the message's delivery is (retry messages: 2, 3, ...).
    pub const ATTEMPT: &str = "x-pushgate-attempt";
    /// The original job id.
    pub const JOB_ID: &str = "x-pushgate-job-id";
    /// When pushgate first received the job, ms since the Unix epoch.
    pub const FIRST_RECEIVED: &str = "x-pushgate-first-received-ms";
    /// The job's expiry, ms since the Unix epoch.
    pub const EXPIRES: &str = "x-pushgate-expires-ms";
    /// Routes a retry to its delay queue through the retry (headers)
    /// exchange. No `x-` prefix: RabbitMQ's headers exchange ignores `x-`
    /// headers when matching, which would send every retry to every delay
    /// queue (and deliver it once per delay).
    pub const DELAY: &str = "pushgate-delay";
    /// Why a message is in the dead queue (`not-json`, `invalid-job`, `unknown-app`, `max-attempts`,
    /// `internal-error` for a job whose handling panicked).
    pub const REASON: &str = "x-pushgate-reason";
    /// A human-readable detail of the reason.
    pub const DETAIL: &str = "x-pushgate-detail";
    /// The input queue the job came from.
    pub const ORIGIN: &str = "x-pushgate-origin-queue";
}

/// Longest app name results are published for (routing keys are <= 255 bytes).
const MAX_APP_LEN: usize = 200;

/// The pushgate headers of a received message, already read from AMQP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHeaders {
    pub attempt: Option<u32>,
    pub job_id: Option<String>,
    pub first_received_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    /// The AMQP `message-id` property: the job id when the body has none.
    pub message_id: Option<String>,
}

/// A message that cannot be dispatched: its readable recipients get `code`,
/// the message goes to the dead queue with `reason`.
#[derive(Debug, Clone)]
pub struct BadJob {
    pub reason: &'static str,
    pub detail: String,
    pub code: Code,
    pub app: Option<String>,
    pub job_id: String,
    pub campaign: Option<String>,
    pub recipients: Vec<Recipient>,
}

#[derive(Debug)]
pub enum Decoded {
    Run(JobRun),
    Bad(BadJob),
}

/// Decodes `body`; never fails: what cannot be dispatched is a [`BadJob`].
pub fn decode(
    body: &[u8],
    h: &JobHeaders,
    apps: &BTreeMap<String, Arc<AppConfig>>,
    now: SystemTime,
) -> Decoded {
    let job: Job = match Job::parse(body) {
        Ok(job) => job,
        Err(e) => return Decoded::Bad(unreadable(body, h, &e)),
    };
    let job_id = job_id(job.id.as_deref(), h, body);
    if let Err((code, detail)) = check_job(&job, apps) {
        let reason = match code {
            Code::UnknownApp => "unknown-app",
            _ => "invalid-job",
        };
        return Decoded::Bad(BadJob {
            reason,
            detail,
            code,
            app: Some(job.app.clone()).filter(|a| !a.is_empty() && a.len() <= MAX_APP_LEN),
            campaign: job.campaign.clone(),
            job_id,
            recipients: job.recipients,
        });
    }
    let first_received = h
        .first_received_ms
        .map_or(now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    let expires = match h.expires_ms {
        Some(ms) => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        None => match expiry(&job, first_received) {
            Ok(e) => e,
            Err(detail) => {
                return Decoded::Bad(BadJob {
                    reason: "invalid-job",
                    detail,
                    code: Code::InvalidJob,
                    app: Some(job.app.clone()),
                    campaign: job.campaign.clone(),
                    job_id,
                    recipients: job.recipients,
                })
            }
        },
    };
    let mut job = job;
    // Usually the body's own id: then it is already in place.
    if job.id.as_deref() != Some(job_id.as_str()) {
        job.id = Some(job_id.clone());
    }
    // A retry keeps the original expiry: its `ttl` becomes the time left,
    // so that apns-expiration and FCM's ttl do not move out with each try.
    if let (Some(_), Some(e), Some(_)) = (job.ttl, expires, h.expires_ms) {
        let left = e.duration_since(now).unwrap_or_default().as_secs();
        job.ttl = Some(left.max(1));
    }
    Decoded::Run(JobRun {
        job: Arc::new(job),
        job_id,
        attempt: h.attempt.unwrap_or(1).max(1),
        first_received,
        expires,
    })
}

/// The job's expiry from `ttl` or `expires_at`.
fn expiry(job: &Job, first_received: SystemTime) -> Result<Option<SystemTime>, String> {
    match (job.ttl, &job.expires_at) {
        (Some(_), Some(_)) => Err("ttl and expires_at are exclusive".into()),
        (Some(ttl), None) => Ok(Some(first_received + Duration::from_secs(ttl))),
        (None, Some(at)) => humantime::parse_rfc3339_weak(at)
            .map(Some)
            .map_err(|e| format!("expires_at {at:?} is not RFC 3339 ({e})")),
        (None, None) => Ok(None),
    }
}

/// The body's id, else the header's, else `message-id`, else a hash of the
/// body (stable across redeliveries, so duplicates share an id).
fn job_id(given: Option<&str>, h: &JobHeaders, body: &[u8]) -> String {
    if let Some(id) = given.or(h.job_id.as_deref()).or(h.message_id.as_deref()) {
        if !id.is_empty() && id.len() <= 64 {
            return id.to_owned();
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("pg-{:016x}", hasher.finish())
}

/// A body that is not a valid job: keep what can be read.
fn unreadable(body: &[u8], h: &JobHeaders, err: &dyn std::fmt::Display) -> BadJob {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let (reason, detail) = match value {
        Some(_) => (
            "invalid-job",
            format!("job does not match the schema: {err}"),
        ),
        None => ("not-json", format!("body is not JSON: {err}")),
    };
    let obj = value.as_ref().and_then(|v| v.as_object());
    let field = |k: &str| obj.and_then(|o| o.get(k)).and_then(|v| v.as_str());
    let recipients = obj
        .and_then(|o| o.get("recipients"))
        .and_then(|v| v.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|r| serde_json::from_value::<Recipient>(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    BadJob {
        reason,
        detail,
        code: Code::InvalidJob,
        // Results are routed on `<app>.results`: only a plausible name.
        app: field("app")
            .filter(|a| !a.is_empty() && a.len() <= MAX_APP_LEN)
            .map(str::to_owned),
        campaign: field("campaign").map(str::to_owned),
        job_id: job_id(field("id"), h, body),
        recipients,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> BTreeMap<String, Arc<AppConfig>> {
        let app = AppConfig {
            name: "shop".into(),
            apns: None,
            fcm: None,
            webpush: None,
        };
        BTreeMap::from([("shop".to_owned(), Arc::new(app))])
    }

    fn bad(body: &str) -> BadJob {
        match decode(
            body.as_bytes(),
            &JobHeaders::default(),
            &apps(),
            SystemTime::now(),
        ) {
            Decoded::Bad(b) => b,
            Decoded::Run(r) => panic!("expected a bad job, got {r:?}"),
        }
    }

    #[test]
    fn good_job_gets_a_stable_id_and_expiry() {
        let body = br#"{"app":"shop","ttl":60,"recipients":[{"platform":"fcm","token":"t"}]}"#;
        let now = SystemTime::now();
        let h = JobHeaders::default();
        let (Decoded::Run(a), Decoded::Run(b)) = (
            decode(body, &h, &apps(), now),
            decode(body, &h, &apps(), now),
        ) else {
            panic!("expected runs");
        };
        assert_eq!(a.job_id, b.job_id);
        assert_eq!(a.job.id.as_deref(), Some(a.job_id.as_str()));
        assert_eq!(a.attempt, 1);
        assert_eq!(a.expires, Some(now + Duration::from_secs(60)));
    }

    #[test]
    fn retry_headers_win() {
        let body =
            br#"{"id":"j-1","app":"shop","ttl":60,"recipients":[{"platform":"fcm","token":"t"}]}"#;
        let h = JobHeaders {
            attempt: Some(3),
            first_received_ms: Some(1_000),
            expires_ms: Some(61_000),
            ..JobHeaders::default()
        };
        let Decoded::Run(r) = decode(body, &h, &apps(), SystemTime::now()) else {
            panic!("expected a run");
        };
        assert_eq!((r.attempt, r.job_id.as_str()), (3, "j-1"));
        assert_eq!(r.expires, Some(UNIX_EPOCH + Duration::from_secs(61)));
        // 20 s after the first receipt, the retry's ttl is what is left.
        let later = UNIX_EPOCH + Duration::from_secs(21);
        let Decoded::Run(r) = decode(body, &h, &apps(), later) else {
            panic!("expected a run");
        };
        assert_eq!(r.job.ttl, Some(40));
        let first = JobHeaders::default();
        let Decoded::Run(r) = decode(body, &first, &apps(), later) else {
            panic!("expected a run");
        };
        assert_eq!(r.job.ttl, Some(60), "a first attempt keeps its ttl");
    }

    #[test]
    fn bad_inputs_keep_readable_recipients() {
        let b = bad("not json at all");
        assert_eq!((b.reason, b.code), ("not-json", Code::InvalidJob));
        assert!(b.recipients.is_empty() && b.app.is_none());

        let b = bad(
            r#"{"app":"shop","bogus":1,"recipients":[{"platform":"apns","token":"aa"},{"platform":"nope"}]}"#,
        );
        assert_eq!(b.reason, "invalid-job");
        assert_eq!(b.app.as_deref(), Some("shop"));
        assert_eq!(b.recipients.len(), 1);

        let b = bad(r#"{"app":"nope","recipients":[{"platform":"apns","token":"aa"}]}"#);
        assert_eq!((b.reason, b.code), ("unknown-app", Code::UnknownApp));
        assert_eq!(b.recipients.len(), 1);

        let long = format!(
            r#"{{"app":"{}","recipients":[{{"platform":"fcm","token":"t"}}]}}"#,
            "a".repeat(300)
        );
        assert_eq!(bad(&long).app, None, "no routing key over 255 bytes");

        let b = bad(r#"{"app":"shop","recipients":[]}"#);
        assert_eq!(b.code, Code::InvalidJob);

        let b = bad(
            r#"{"app":"shop","expires_at":"tomorrow","recipients":[{"platform":"fcm","token":"t"}]}"#,
        );
        assert_eq!(b.code, Code::InvalidJob);
    }
}
