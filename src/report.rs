//! The result and token-feedback messages of design.md ("Result message"), as serde types.
//!
//! One [`ResultMessage`] carries the results of up to [`MAX_ENTRIES`]
//! recipients of one job; [`TokenFeedback`] carries the tokens whose code has
//! class `token`, so that app teams can forget them.

pub mod json;

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::job::{Job, Platform, Recipient};
use crate::outcome::{Class, Code, Outcome, Status};

/// Most entries in one result message (design.md: chunks of at most 1,000).
pub const MAX_ENTRIES: usize = 1000;

/// One message on `<app>.results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub app: String,
    pub results: Vec<ResultEntry>,
}

/// One recipient's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultEntry {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    pub platform: Platform,
    /// The device token, or the Web Push endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(with = "status_serde")]
    pub status: Status,
    #[serde(default, with = "code_serde", skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The code's label: static text for every result pushgate makes.
    pub label: Option<Cow<'static, str>>,
    #[serde(default, with = "class_serde", skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    pub attempt: u32,
    pub latency_ms: u64,
    pub ts: String,
}

/// Where a job's recipient came from, for a result entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryContext<'a> {
    pub job_id: &'a str,
    pub campaign: Option<&'a str>,
    pub attempt: u32,
    /// RFC 3339 time of the result, formatted once per job.
    pub ts: &'a str,
}

impl ResultEntry {
    /// The entry for `recipient` after `outcome` (its texts are moved in).
    pub fn new(
        ctx: &EntryContext<'_>,
        recipient: &Recipient,
        status: Status,
        outcome: Outcome,
    ) -> ResultEntry {
        ResultEntry {
            job_id: ctx.job_id.to_owned(),
            campaign: ctx.campaign.map(str::to_owned),
            recipient_id: recipient.id.clone(),
            platform: recipient.platform,
            token: token_of(recipient),
            status,
            code: outcome.code,
            label: outcome
                .code
                .map(|c| Cow::Borrowed(c.label(recipient.platform))),
            class: outcome.class(),
            provider_status: outcome.provider_status,
            provider_reason: outcome.provider_reason,
            provider_id: outcome.provider_id,
            attempt: ctx.attempt,
            latency_ms: u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
            ts: ctx.ts.to_owned(),
        }
    }

    /// A failure decided before any delivery (bad job, unknown app, expired).
    pub fn local_failure(
        ctx: &EntryContext<'_>,
        recipient: &Recipient,
        code: Code,
        reason: &str,
    ) -> ResultEntry {
        ResultEntry::new(ctx, recipient, Status::Failed, Outcome::local(code, reason))
    }

    /// Final: delivered or failed (not retrying).
    pub fn is_final(&self) -> bool {
        self.status != Status::Retrying
    }
}

/// One message on `<app>.token.invalid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFeedback {
    pub app: String,
    pub tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub platform: Platform,
    pub token: String,
    #[serde(with = "code_serde_required")]
    pub code: Code,
    pub ts: String,
}

impl TokenEntry {
    /// Feedback for a failed entry whose code has class token, if it has a token.
    pub fn from_entry(entry: &ResultEntry) -> Option<TokenEntry> {
        let code = entry.code?;
        if code.class() != Class::Token || entry.status != Status::Failed {
            return None;
        }
        Some(TokenEntry {
            platform: entry.platform,
            token: entry.token.clone()?,
            code,
            ts: entry.ts.clone(),
        })
    }
}

/// The device token, or the Web Push endpoint, of a recipient.
pub fn token_of(recipient: &Recipient) -> Option<String> {
    match (&recipient.token, &recipient.subscription) {
        (Some(t), _) => Some(t.as_str().to_owned()),
        (None, Some(s)) => Some(s.endpoint.clone()),
        (None, None) => None,
    }
}

/// `ts` of result entries: RFC 3339 with milliseconds, UTC
/// (`2026-11-22T10:00:00.123Z`), as `humantime::format_rfc3339_millis`
/// writes it (the tests compare the two). Written by hand: one call per
/// job, and humantime's `Display` went through `fmt` machinery at about 600
/// instructions a call (callgrind, docs/benchmarks.md round 8). Times
/// before 1970 or past 9999 are clamped into that range.
pub fn timestamp(at: SystemTime) -> String {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().min(MAX_SECS);
    let millis = since.subsec_millis();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(millis));
    // Only ASCII digits and separators went in, so this never falls back.
    std::str::from_utf8(&b).unwrap_or_default().to_owned()
}

/// Year, month (1-12) and day (1-31) of `days` after 1970-01-01 in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The result messages of a job's entries: chunks of at most [`MAX_ENTRIES`].
pub fn result_messages(app: &str, entries: Vec<ResultEntry>) -> Vec<ResultMessage> {
    let mut out = Vec::with_capacity(entries.len().div_ceil(MAX_ENTRIES));
    let mut rest = entries;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(MAX_ENTRIES));
        out.push(ResultMessage {
            app: app.to_owned(),
            results: rest,
        });
        rest = tail;
    }
    out
}

/// Routing key of result messages.
pub fn results_key(app: &str) -> String {
    format!("{app}.results")
}

/// Routing key of token feedback.
pub fn token_key(app: &str) -> String {
    format!("{app}.token.invalid")
}

/// Job id and campaign of a job, for contexts.
pub fn campaign_of(job: &Job) -> Option<&str> {
    job.campaign.as_deref()
}

mod status_serde {
    use super::Status;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Status, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Status, D::Error> {
        let s = String::deserialize(de)?;
        [Status::Delivered, Status::Failed, Status::Retrying]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| D::Error::custom(format!("unknown status {s:?}")))
    }
}

mod code_serde {
    use super::Code;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<Code>, ser: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => ser.serialize_str(c.as_str()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Code>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(None),
            Some(s) => Code::parse(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("unknown code {s:?}"))),
        }
    }
}

mod code_serde_required {
    use super::Code;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Code, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(c.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Code, D::Error> {
        let s = String::deserialize(de)?;
        Code::parse(&s).ok_or_else(|| D::Error::custom(format!("unknown code {s:?}")))
    }
}

mod class_serde {
    use super::Class;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    const ALL: [Class; 5] = [
        Class::Token,
        Class::Retry,
        Class::Credentials,
        Class::Payload,
        Class::Policy,
    ];

    pub fn serialize<S: Serializer>(c: &Option<Class>, ser: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => ser.serialize_str(c.as_str()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Class>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(None),
            Some(s) => ALL
                .into_iter()
                .find(|c| c.as_str() == s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("unknown class {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::DeviceToken;
    use std::time::Duration;

    #[test]
    fn timestamps_match_humantime() {
        let humantime = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let mut secs: Vec<u64> = vec![
            0,
            59,
            86_399,
            86_400,
            951_782_400,   // 2000-02-29
            951_868_800,   // 2000-03-01
            4_107_542_400, // 2100-03-01 (2100 is no leap year)
            1_795_000_000,
            253_402_300_799, // 9999-12-31T23:59:59
        ];
        // Every day boundary of four years around a leap day, and a spread
        // of seconds across the range.
        secs.extend((0..1500).map(|d| 1_704_067_200 + d * 86_400 - 1));
        secs.extend((0..5000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 253_402_300_800));
        for s in secs {
            for ms in [0, 7, 999] {
                let t = UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
                assert_eq!(timestamp(t), humantime(t), "{s} s {ms} ms");
            }
        }
    }

    #[test]
    fn timestamps_out_of_range_are_clamped() {
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(timestamp(far), "9999-12-31T23:59:59.000Z");
    }

    fn recipient(token: &str) -> Recipient {
        Recipient {
            platform: Platform::Apns,
            token: Some(DeviceToken(token.into())),
            subscription: None,
            id: Some("user-42".into()),
            vars: Default::default(),
        }
    }

    fn ctx() -> EntryContext<'static> {
        EntryContext {
            job_id: "job-7f3c",
            campaign: Some("spring-sale"),
            attempt: 1,
            ts: "2026-11-22T10:00:00.000Z",
        }
    }

    #[test]
    fn failed_entry_has_design_fields_and_round_trips() {
        let mut outcome = Outcome::local(Code::NotRegistered, "Unregistered");
        outcome.provider_status = Some(410);
        outcome.latency = Duration::from_millis(12);
        let e = ResultEntry::new(&ctx(), &recipient("abcd"), Status::Failed, outcome);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["code"], "NotRegistered");
        assert_eq!(v["label"], "APNS Unregistered");
        assert_eq!(v["class"], "token");
        assert_eq!(v["provider_status"], 410);
        assert_eq!(v["recipient_id"], "user-42");
        assert_eq!(v["latency_ms"], 12);
        let back: ResultEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let fb = TokenEntry::from_entry(&e).unwrap();
        assert_eq!((fb.token.as_str(), fb.code), ("abcd", Code::NotRegistered));
    }

    #[test]
    fn delivered_entry_has_no_code_and_no_feedback() {
        let e = ResultEntry::new(
            &ctx(),
            &recipient("abcd"),
            Status::Delivered,
            Outcome::delivered(200, Some("id-1".into())),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status"], "delivered");
        assert!(v.get("code").is_none() && v.get("class").is_none());
        assert!(TokenEntry::from_entry(&e).is_none());
    }

    #[test]
    fn results_are_chunked_by_1000() {
        let e = ResultEntry::local_failure(&ctx(), &recipient("a"), Code::InvalidJob, "x");
        let msgs = result_messages("shop", vec![e; 2001]);
        let sizes: Vec<usize> = msgs.iter().map(|m| m.results.len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 1]);
        assert!(result_messages("shop", Vec::new()).is_empty());
    }
}
