//! The APNs JSON body's shape, and its writer for the hot path.
//!
//! The serde types below define the body; [`Payload::write`] writes exactly
//! the bytes `serde_json::to_vec` writes for them, without serde's
//! machinery: the flattened `data` and tracking key made serde_json go
//! through a map serializer: `request::payload` took about 2,400
//! instructions a notification with it, 1,000 with this writer
//! (docs/benchmarks.md, round 11). Values are copied
//! as they are unless they hold a byte JSON escapes. The tests compare both
//! writers over every shape of payload, so a field added to the types
//! fails them until it is added to the writer too.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::json::{number, string};
use crate::telemetry::tracking::AsObjectField;

#[derive(Serialize)]
pub(super) struct Alert<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct Aps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<&'a str>,
    #[serde(rename = "thread-id", skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<&'a str>,
    #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
    pub mutable_content: Option<u8>,
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    pub content_available: Option<u8>,
}

#[derive(Serialize)]
pub(super) struct Payload<'a> {
    pub aps: Aps<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deeplink: Option<&'a str>,
    #[serde(flatten)]
    pub data: &'a BTreeMap<String, String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<AsObjectField<'a>>,
}

/// Writes `key` (`"name":`, quoted already) after a comma unless it is the
/// object's first.
fn key(out: &mut Vec<u8>, first: &mut bool, key: &[u8]) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.extend_from_slice(key);
}

fn opt_str(out: &mut Vec<u8>, first: &mut bool, name: &[u8], value: Option<&str>) {
    if let Some(v) = value {
        key(out, first, name);
        string(out, v);
    }
}

fn opt_num(out: &mut Vec<u8>, first: &mut bool, name: &[u8], value: Option<u64>) {
    if let Some(v) = value {
        key(out, first, name);
        number(out, v);
    }
}

/// A key from the job or the config: quoted and escaped as serde_json does.
fn dynamic_key(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    string(out, name);
    out.push(b':');
}

impl Payload<'_> {
    /// Appends the payload to `out`, byte for byte as serde_json writes it.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let a = &self.aps;
        out.extend_from_slice(b"{\"aps\":{");
        let mut first = true;
        if let Some(alert) = &a.alert {
            key(out, &mut first, b"\"alert\":{");
            let mut inner = true;
            opt_str(out, &mut inner, b"\"title\":", alert.title);
            opt_str(out, &mut inner, b"\"subtitle\":", alert.subtitle);
            opt_str(out, &mut inner, b"\"body\":", alert.body);
            out.push(b'}');
        }
        opt_num(out, &mut first, b"\"badge\":", a.badge.map(u64::from));
        opt_str(out, &mut first, b"\"sound\":", a.sound);
        opt_str(out, &mut first, b"\"thread-id\":", a.thread_id);
        opt_str(out, &mut first, b"\"category\":", a.category);
        let flag = |f: Option<u8>| f.map(u64::from);
        let (mutable, available) = (flag(a.mutable_content), flag(a.content_available));
        opt_num(out, &mut first, b"\"mutable-content\":", mutable);
        opt_num(out, &mut first, b"\"content-available\":", available);
        out.push(b'}');
        let mut first = false;
        opt_str(out, &mut first, b"\"image\":", self.image);
        opt_str(out, &mut first, b"\"deeplink\":", self.deeplink);
        for (k, v) in self.data {
            dynamic_key(out, k);
            string(out, v);
        }
        if let Some(AsObjectField(t)) = &self.tracking {
            dynamic_key(out, t.name);
            t.write_json(out);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tracking::TrackingKey;

    /// Texts with nothing to escape, with quotes, backslashes, control
    /// characters and non-ASCII, empty, and longer than a word.
    const TEXTS: [&str; 6] = [
        "Hello",
        "say \"hi\" \\ now",
        "tab\there\nline\u{1}",
        "héllo 🎉",
        "",
        "a text of a good many more than eight bytes",
    ];

    fn pick<'a>(n: usize, shift: u32) -> Option<&'a str> {
        let i = (n >> shift) % (TEXTS.len() + 1);
        TEXTS.get(i).copied()
    }

    #[test]
    fn writes_what_serde_json_writes_for_every_shape() {
        let datas: [BTreeMap<String, String>; 3] = [
            BTreeMap::new(),
            [("k".to_owned(), "v".to_owned())].into(),
            [
                ("aps".to_owned(), "odd \"one\"".to_owned()),
                ("z\u{7}".to_owned(), String::new()),
                ("deep".to_owned(), "é".to_owned()),
            ]
            .into(),
        ];
        for n in 0..4000usize {
            let with_alert = n % 5 != 0;
            let tracking = match n % 4 {
                0 => None,
                1 => Some((None, "pg")),
                2 => Some((Some("spring \"sale\""), "pg")),
                _ => Some((pick(n, 3), "x\ty")),
            };
            let p = Payload {
                aps: Aps {
                    alert: with_alert.then(|| Alert {
                        title: pick(n, 1),
                        subtitle: pick(n, 4),
                        body: pick(n, 7),
                    }),
                    badge: (n % 3 == 0).then_some(u32::try_from(n).unwrap() * 7919),
                    sound: pick(n, 2),
                    thread_id: pick(n, 5),
                    category: pick(n, 6),
                    mutable_content: (n % 6 == 1).then_some(1),
                    content_available: (n % 7 == 2).then_some(1),
                },
                image: pick(n, 8),
                deeplink: pick(n, 9),
                data: &datas[n % 3],
                tracking: tracking.map(|(campaign, name)| {
                    AsObjectField(TrackingKey {
                        name,
                        notification_id: "0b9e6c1e-5c1f-4c7e-9d7e-2f1c3b4a5d6e",
                        campaign,
                    })
                }),
            };
            let mut ours = Vec::new();
            p.write(&mut ours);
            let theirs = serde_json::to_vec(&p).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "shape {n}"
            );
        }
    }
}
