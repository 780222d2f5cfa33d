//! The tracking key each notification carries so that the app can report
//! impressions and clicks (README "Impressions and campaign stats").
//!
//! Value: `{"n": "<notification id>", "c": "<campaign>"}` (`c` only when the
//! job has a campaign). APNs: that object beside `aps` under the key name
//! (default `pg`). FCM: `data.<key>` holds the same object as a JSON string
//! (FCM data values are strings).

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// The tracking key of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackingKey<'a> {
    /// The key's name (`[tracking] key`).
    pub name: &'a str,
    pub notification_id: &'a str,
    pub campaign: Option<&'a str>,
}

#[derive(Serialize)]
struct Value<'a> {
    n: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<&'a str>,
}

impl<'a> TrackingKey<'a> {
    fn value(&self) -> Value<'a> {
        Value {
            n: self.notification_id,
            c: self.campaign,
        }
    }

    /// The value as a JSON object (APNs).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.value()).unwrap_or_default()
    }

    /// The value as a JSON string (FCM `data`).
    pub fn to_json_string(&self) -> String {
        let mut out = Vec::with_capacity(16 + self.notification_id.len());
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the value's JSON, byte for byte as serde_json writes it
    /// (one per notification on the hot path, without serde's machinery).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"n\":");
        crate::report::json::string(out, self.notification_id);
        if let Some(c) = self.campaign {
            out.extend_from_slice(b",\"c\":");
            crate::report::json::string(out, c);
        }
        out.push(b'}');
    }
}

/// Serializes as a one-entry map `{name: value}`: flatten it into a payload.
#[derive(Debug, Clone, Copy)]
pub struct AsObjectField<'a>(pub TrackingKey<'a>);

impl Serialize for AsObjectField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0.name, &self.0.value())?;
        map.end()
    }
}

/// FCM `data`: the job's string pairs, then the tracking key as a JSON
/// string (a job key of the same name gives way to it).
#[derive(Debug, Clone, Copy)]
pub struct DataWithKey<'a> {
    pub data: &'a std::collections::BTreeMap<String, String>,
    pub key: Option<TrackingKey<'a>>,
}

impl DataWithKey<'_> {
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.key.is_none()
    }
}

impl Serialize for DataWithKey<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let name = self.key.map(|k| k.name);
        for (k, v) in self.data {
            if Some(k.as_str()) != name {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(k) = &self.key {
            map.serialize_entry(k.name, &k.to_json_string())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_forms() {
        let k = TrackingKey {
            name: "pg",
            notification_id: "n-1",
            campaign: Some("spring"),
        };
        assert_eq!(k.to_json(), json!({"n": "n-1", "c": "spring"}));
        assert_eq!(k.to_json_string(), r#"{"n":"n-1","c":"spring"}"#);
        let field = serde_json::to_value(AsObjectField(k)).unwrap();
        assert_eq!(field, json!({"pg": {"n": "n-1", "c": "spring"}}));
        let bare = TrackingKey {
            campaign: None,
            ..k
        };
        assert_eq!(bare.to_json(), json!({"n": "n-1"}));
        for (id, campaign) in [("n-1", None), ("q\"\\\t\u{1}é", Some("a\nb \"c\""))] {
            let k = TrackingKey {
                notification_id: id,
                campaign,
                ..k
            };
            let mut ours = Vec::new();
            k.write_json(&mut ours);
            assert_eq!(ours, serde_json::to_vec(&k.value()).unwrap(), "{id}");
        }
        let data = [
            ("pg".to_owned(), "mine".to_owned()),
            ("a".to_owned(), "b".to_owned()),
        ]
        .into();
        let d = DataWithKey {
            data: &data,
            key: Some(k),
        };
        assert_eq!(
            serde_json::to_value(d).unwrap(),
            json!({"a": "b", "pg": r#"{"n":"n-1","c":"spring"}"#})
        );
    }
}
