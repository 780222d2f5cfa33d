//! Job bytes to [`Job`], with an error that says where the job is wrong.
//!
//! The fast path is one `serde_json::from_slice`. Only when it fails is the
//! body decoded again as a JSON tree and each field tried on its own, so
//! that the error names the field (`recipients[3].token: ...`) instead of a
//! byte position.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    ApnsOverrides, DeviceToken, FcmOverrides, Job, Notification, Platform, Priority, PushType,
    Recipient, Throttle, WebPushSubscription,
};
use crate::outcome::Code;

/// What is wrong with a job, and where (a JSON path such as
/// `recipients[3].token`; empty for the job as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobError {
    pub path: String,
    pub message: String,
}

impl JobError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> JobError {
        JobError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The result code of a job refused for this error.
    pub fn code(&self) -> Code {
        Code::InvalidJob
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl Job {
    /// Decodes a job from its JSON body. Structure only: call
    /// [`Job::validate`] next for the job-level rules.
    pub fn parse(bytes: &[u8]) -> Result<Job, JobError> {
        // One UTF-8 check of the whole body, then `from_str`: `from_slice`
        // checks each string on its own as it goes, about 1,200
        // instructions a job against 100 (callgrind, docs/benchmarks.md
        // round 8).
        let text = std::str::from_utf8(bytes).map_err(|e| {
            JobError::new(
                "",
                format!("not valid JSON: not UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        serde_json::from_str(text).map_err(|e| locate(bytes, &e))
    }
}

fn locate(bytes: &[u8], err: &serde_json::Error) -> JobError {
    if !err.is_data() {
        return JobError::new("", format!("not valid JSON: {err}"));
    }
    let tree: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return JobError::new("", format!("not valid JSON: {e}")),
    };
    let Value::Object(map) = &tree else {
        return JobError::new("", "a job must be a JSON object");
    };
    for required in ["app", "recipients"] {
        if !map.contains_key(required) {
            return JobError::new(required, "missing (required)");
        }
    }
    for (key, value) in map {
        if let Err(e) = job_field(key, value) {
            return e;
        }
    }
    // The tree decodes field by field: what is left is whole-object (e.g. a
    // duplicate key).
    JobError::new("", err.to_string())
}

fn typed<T: DeserializeOwned>(path: &str, value: &Value) -> Result<(), JobError> {
    T::deserialize(value)
        .map(|_| ())
        .map_err(|e| JobError::new(path, e.to_string()))
}

fn job_field(key: &str, value: &Value) -> Result<(), JobError> {
    match key {
        "id" | "campaign" | "collapse_key" | "expires_at" => typed::<Option<String>>(key, value),
        "app" => typed::<String>(key, value),
        "recipients" => recipients(value),
        "notification" => typed::<Notification>(key, value),
        "data" => typed::<BTreeMap<String, String>>(key, value),
        "priority" => typed::<Priority>(key, value),
        "ttl" => typed::<Option<u64>>(key, value),
        "push_type" => typed::<PushType>(key, value),
        "mutable_content" | "content_available" => typed::<bool>(key, value),
        "throttle" => typed::<Option<Throttle>>(key, value),
        "apns" => typed::<Option<ApnsOverrides>>(key, value),
        "fcm" => typed::<Option<FcmOverrides>>(key, value),
        other => Err(JobError::new(other, "unknown field")),
    }
}

fn recipients(value: &Value) -> Result<(), JobError> {
    let Value::Array(items) = value else {
        return typed::<Vec<Recipient>>("recipients", value);
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("recipients[{i}]");
        let Value::Object(map) = item else {
            return typed::<Recipient>(&path, item);
        };
        if !map.contains_key("platform") {
            return Err(JobError::new(
                format!("{path}.platform"),
                "missing (required)",
            ));
        }
        for (key, v) in map {
            let p = format!("{path}.{key}");
            match key.as_str() {
                "platform" => typed::<Platform>(&p, v)?,
                "token" => typed::<Option<DeviceToken>>(&p, v)?,
                "subscription" => typed::<Option<WebPushSubscription>>(&p, v)?,
                "id" => typed::<Option<String>>(&p, v)?,
                "vars" => typed::<BTreeMap<String, String>>(&p, v)?,
                _ => return Err(JobError::new(p, "unknown field")),
            }
        }
        typed::<Recipient>(&path, item)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Job::parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{", "not valid JSON: EOF while parsing an object at line 1 column 1"),
            ("[]", "a job must be a JSON object"),
            (r#"{"recipients": []}"#, "app: missing (required)"),
            (r#"{"app": "shop"}"#, "recipients: missing (required)"),
            (r#"{"app": 3, "recipients": []}"#, "app: invalid type: integer `3`, expected a string"),
            (r#"{"app": "a", "recipients": [], "colour": 1}"#, "colour: unknown field"),
            (
                r#"{"app": "a", "recipients": [{"platform": "apns", "token": "ab"}, {"platform": "apns", "token": 7}]}"#,
                "recipients[1].token: invalid type: integer `7`, expected a string",
            ),
            (
                r#"{"app": "a", "recipients": [{"platform": "sms"}]}"#,
                "recipients[0].platform: unknown variant `sms`, expected one of `apns`, `fcm`, `webpush`",
            ),
            (r#"{"app": "a", "recipients": [{"token": "x"}]}"#, "recipients[0].platform: missing (required)"),
            (r#"{"app": "a", "recipients": [{"platform": "fcm", "tokn": "x"}]}"#, "recipients[0].tokn: unknown field"),
            (r#"{"app": "a", "recipients": [1]}"#, "recipients[0]: invalid type: integer `1`, expected struct Recipient"),
            (r#"{"app": "a", "recipients": [], "notification": {"titel": "x"}}"#, "notification: unknown field `titel`"),
            (r#"{"app": "a", "recipients": [], "data": {"n": 1}}"#, "data: invalid type: integer `1`, expected a string"),
            (r#"{"app": "a", "recipients": [], "ttl": -1}"#, "ttl: invalid value: integer `-1`, expected u64"),
            (r#"{"app": "a", "recipients": [], "priority": "urgent"}"#, "priority: unknown variant `urgent`"),
            (r#"{"app": "a", "app": "b", "recipients": []}"#, "duplicate field `app`"),
        ];
        for (json, want) in cases {
            let got = err(json);
            assert!(got.starts_with(want), "{json}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_says_where() {
        let mut body =
            br#"{"app": "shop", "recipients": [{"platform": "fcm", "token": "t"#.to_vec();
        let at = body.len();
        body.extend_from_slice(b"\xff\"}]}");
        let e = Job::parse(&body).unwrap_err();
        assert_eq!(e.path, "");
        assert_eq!(
            e.to_string(),
            format!("not valid JSON: not UTF-8 at byte {at}")
        );
        assert_eq!(e.code(), Code::InvalidJob);
    }

    #[test]
    fn a_full_job_parses() {
        let job = Job::parse(
            br#"{"id": "j1", "app": "shop", "recipients": [{"platform": "fcm", "token": "t", "id": "u", "vars": {"a": "b"}}],
                "notification": {"title": "Hi"}, "ttl": 60, "push_type": "background", "throttle": {"limit": 1, "per_seconds": 2}}"#,
        )
        .unwrap();
        assert_eq!(job.recipients[0].vars["a"], "b");
        assert_eq!(job.push_type, PushType::Background);
        assert_eq!(job.priority, Priority::High);
    }
}
