//! Impression and click events reported by apps, by `POST /v1/events` or on
//! the events queue: the batch format, its all-or-nothing validation, and
//! applying a valid batch to the counters and the campaign stats.
//!
//! ```json
//! {"events": [{"type": "impression", "app": "shop", "platform": "apns",
//!              "campaign": "spring-sale", "notification_id": "4f1c...", "ts": "2026-11-22T10:00:03Z"}]}
//! ```
//! Schema: `schema/events.schema.json`. A batch with one bad event is
//! refused whole, nothing applied, and counted in
//! `pushgate_events_rejected_total{reason}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;

use super::Telemetry;
use crate::job::Platform;

/// Most events in one batch.
pub const MAX_EVENTS: usize = 1000;
/// Largest batch body, bytes.
pub const MAX_BODY: usize = 256 * 1024;
/// Longest campaign (as in jobs) and notification id, in characters.
const MAX_CAMPAIGN_CHARS: usize = 128;
const MAX_ID_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Impression,
    Click,
}

/// One event as the app sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The app as named in pushgate's config.
    pub app: String,
    pub platform: Platform,
    /// From the tracking key (`c`); absent for notifications without campaign.
    #[serde(default)]
    pub campaign: Option<String>,
    /// From the tracking key (`n`).
    pub notification_id: String,
    /// When it happened on the device (RFC 3339); informative only.
    #[serde(default)]
    pub ts: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Event>,
}

/// Why a batch was refused; `reason` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    /// Every `reason` value (bounded label set).
    pub const ALL_REASONS: [&'static str; 6] = [
        "too-large",
        "not-json",
        "invalid-event",
        "unknown-app",
        "too-many-events",
        "unauthorized",
    ];

    fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.chars().count() > max || has_control(s) {
        return Err(format!(
            "{what} must be 1-{max} characters, no control characters"
        ));
    }
    Ok(())
}

/// Parses and validates a batch; nothing is applied here.
pub fn parse(body: &[u8], apps: &BTreeSet<String>) -> Result<Vec<Event>, Rejection> {
    if body.len() > MAX_BODY {
        return Err(Rejection::new(
            "too-large",
            format!("body is {} bytes, over {MAX_BODY}", body.len()),
        ));
    }
    let batch: Batch = serde_json::from_slice(body).map_err(|e| {
        let reason = if e.is_data() {
            "invalid-event"
        } else {
            "not-json"
        };
        Rejection::new(reason, e.to_string())
    })?;
    if batch.events.is_empty() {
        return Err(Rejection::new("invalid-event", "events: empty batch"));
    }
    if batch.events.len() > MAX_EVENTS {
        return Err(Rejection::new(
            "too-many-events",
            format!(
                "{} events, at most {MAX_EVENTS} per batch",
                batch.events.len()
            ),
        ));
    }
    for (i, e) in batch.events.iter().enumerate() {
        if !apps.contains(&e.app) {
            return Err(Rejection::new(
                "unknown-app",
                format!("events[{i}].app: {:?} is not a configured app", e.app),
            ));
        }
        let bad = |d: String| Rejection::new("invalid-event", format!("events[{i}].{d}"));
        check_text("notification_id", &e.notification_id, MAX_ID_CHARS).map_err(bad)?;
        if let Some(c) = &e.campaign {
            check_text("campaign", c, MAX_CAMPAIGN_CHARS).map_err(bad)?;
        }
        if let Some(ts) = &e.ts {
            crate::job::validate::parse_rfc3339(ts).map_err(|why| bad(format!("ts: {why}")))?;
        }
    }
    Ok(batch.events)
}

/// Adds a valid batch to the counters and the campaign stats (one metric
/// update per app and platform, one stats update per campaign).
pub fn apply(events: &[Event], t: &Telemetry) {
    let mut by_app: BTreeMap<(&str, usize), (u64, u64)> = BTreeMap::new();
    let mut by_campaign: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in events {
        let (imp, clk) = match e.kind {
            EventKind::Impression => (1, 0),
            EventKind::Click => (0, 1),
        };
        let slot = by_app
            .entry((e.app.as_str(), e.platform as usize))
            .or_default();
        *slot = (slot.0 + imp, slot.1 + clk);
        if let Some(c) = &e.campaign {
            let slot = by_campaign.entry(c.as_str()).or_default();
            *slot = (slot.0 + imp, slot.1 + clk);
        }
    }
    for ((app, p), (imp, clk)) in by_app {
        if let Some(platform) = Platform::ALL.get(p) {
            t.metrics.add_events(app, *platform, imp, clk);
        }
    }
    for (campaign, (imp, clk)) in by_campaign {
        t.campaigns.record_events(campaign, imp, clk);
    }
}

/// Where event batches go, for the admin server and the events queue.
#[derive(Debug, Clone)]
pub struct EventSink {
    apps: Arc<BTreeSet<String>>,
    telemetry: Arc<Telemetry>,
}

impl EventSink {
    /// `apps`: the configured app names (events for others are refused).
    pub fn new(apps: impl IntoIterator<Item = String>, telemetry: Arc<Telemetry>) -> EventSink {
        EventSink {
            apps: Arc::new(apps.into_iter().collect()),
            telemetry,
        }
    }

    /// Validates and applies one batch; a refusal is counted and changes nothing else.
    pub fn ingest(&self, body: &[u8]) -> Result<usize, Rejection> {
        match parse(body, &self.apps) {
            Ok(events) => {
                apply(&events, &self.telemetry);
                Ok(events.len())
            }
            Err(r) => {
                self.telemetry.metrics.event_batch_rejected(r.reason);
                Err(r)
            }
        }
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> BTreeSet<String> {
        ["shop".to_owned()].into()
    }

    fn event(kind: &str) -> serde_json::Value {
        serde_json::json!({"type": kind, "app": "shop", "platform": "apns",
                           "campaign": "spring", "notification_id": "n-1",
                           "ts": "2026-11-22T10:00:03Z"})
    }

    fn body(events: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
    }

    fn reason(b: &[u8]) -> &'static str {
        parse(b, &apps()).unwrap_err().reason
    }

    #[test]
    fn a_good_batch_parses() {
        let evs = parse(&body(vec![event("impression"), event("click")]), &apps()).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].kind, EventKind::Click);
        let mut no_campaign = event("click");
        no_campaign["campaign"] = serde_json::Value::Null;
        no_campaign.as_object_mut().unwrap().remove("ts");
        assert!(parse(&body(vec![no_campaign]), &apps()).is_ok());
    }

    #[test]
    fn bad_batches_say_why() {
        assert_eq!(reason(b"{nope"), "not-json");
        assert_eq!(reason(br#"{"events": []}"#), "invalid-event");
        assert_eq!(reason(br#"{"evts": []}"#), "invalid-event");
        let mut e = event("view");
        assert_eq!(reason(&body(vec![e.clone()])), "invalid-event");
        e = event("click");
        e["app"] = "other".into();
        assert_eq!(reason(&body(vec![event("click"), e])), "unknown-app");
        e = event("click");
        e["user"] = "u-42".into();
        assert_eq!(reason(&body(vec![e])), "invalid-event");
        e = event("click");
        e["ts"] = "yesterday".into();
        let r = parse(&body(vec![event("click"), e]), &apps()).unwrap_err();
        assert!(r.detail.starts_with("events[1].ts"), "{r}");
        e = event("click");
        e["notification_id"] = "".into();
        assert_eq!(reason(&body(vec![e])), "invalid-event");
        e = event("click");
        e["campaign"] = "x".repeat(129).into();
        assert_eq!(reason(&body(vec![e])), "invalid-event");
        assert_eq!(
            reason(&body(vec![event("click"); MAX_EVENTS + 1])),
            "too-many-events"
        );
        assert_eq!(reason(&vec![b' '; MAX_BODY + 1]), "too-large");
    }

    #[test]
    fn refused_batches_change_nothing_but_the_rejection_counter() {
        let t = Arc::new(Telemetry::default());
        let sink = EventSink::new(["shop".to_owned()], Arc::clone(&t));
        let mut bad = event("click");
        bad["platform"] = "pigeon".into();
        let err = sink
            .ingest(&body(vec![event("impression"), bad]))
            .unwrap_err();
        assert_eq!(err.reason, "invalid-event");
        assert!(t.campaigns.get("spring").is_none());
        let text = String::from_utf8(t.metrics.encode().unwrap()).unwrap();
        assert!(text.contains(r#"pushgate_events_rejected_total{reason="invalid-event"} 1"#));
        assert!(!text.contains("pushgate_impressions_total{"), "{text}");

        let n = sink
            .ingest(&body(vec![
                event("impression"),
                event("impression"),
                event("click"),
            ]))
            .unwrap();
        assert_eq!(n, 3);
        let s = t.campaigns.get("spring").unwrap();
        assert_eq!((s.impressions, s.clicks), (2, 1));
        let text = String::from_utf8(t.metrics.encode().unwrap()).unwrap();
        assert!(text.contains(r#"pushgate_impressions_total{app="shop",platform="apns"} 2"#));
        assert!(text.contains(r#"pushgate_clicks_total{app="shop",platform="apns"} 1"#));
        assert!(text.contains(r#"pushgate_campaign_clicks_total{campaign="spring"} 1"#));
    }
}
