//! A [`ResultMessage`] written straight to JSON: the hot path's encoder
//! (one call per published message of up to 1,000 entries).
//!
//! serde_json escapes every key and value byte by byte; here the keys are
//! literals, and a value that needs no escaping (ids, tokens, timestamps,
//! codes: nearly all of them) is copied as it is. The output is byte for
//! byte what `serde_json::to_vec` writes for the same message (the tests
//! compare them), so the result format stays the serde types' in
//! `report.rs`; a field added there must be added here too, and the
//! comparison test fails until it is.

use super::{ResultEntry, ResultMessage};

/// The message as JSON, exactly as serde_json encodes it.
pub fn encode(msg: &ResultMessage) -> Vec<u8> {
    let size: usize = msg.results.iter().map(estimate).sum();
    let mut out = Vec::with_capacity(32 + msg.app.len() + size);
    out.extend_from_slice(b"{\"app\":");
    string(&mut out, &msg.app);
    out.extend_from_slice(b",\"results\":[");
    for (i, e) in msg.results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        entry(&mut out, e);
    }
    out.extend_from_slice(b"]}");
    out
}

/// About what an entry takes, a little more unless a value needs escaping:
/// its keys, quotes, numbers and short fixed values (more of them when it
/// has a code), plus its free-form strings. A flat 256 an entry was short
/// for a delivered APNs entry (about 300 bytes), so a message of 500 grew
/// once, copying 128 KB (1.7% of the gateway's instructions on fan-out
/// jobs).
fn estimate(e: &ResultEntry) -> usize {
    let len = |s: Option<&str>| s.map_or(0, str::len);
    let coded = if e.code.is_some() { 80 } else { 0 };
    240 + coded
        + e.job_id.len()
        + e.ts.len()
        + len(e.campaign.as_deref())
        + len(e.recipient_id.as_deref())
        + len(e.token.as_deref())
        + len(e.label.as_deref())
        + len(e.provider_reason.as_deref())
        + len(e.provider_id.as_deref())
}

fn entry(out: &mut Vec<u8>, e: &ResultEntry) {
    out.extend_from_slice(b"{\"job_id\":");
    string(out, &e.job_id);
    opt_string(out, b",\"campaign\":", e.campaign.as_deref());
    opt_string(out, b",\"recipient_id\":", e.recipient_id.as_deref());
    out.extend_from_slice(b",\"platform\":");
    string(out, e.platform.as_str());
    opt_string(out, b",\"token\":", e.token.as_deref());
    out.extend_from_slice(b",\"status\":");
    string(out, e.status.as_str());
    opt_string(out, b",\"code\":", e.code.map(|c| c.as_str()));
    opt_string(out, b",\"label\":", e.label.as_deref());
    opt_string(out, b",\"class\":", e.class.map(|c| c.as_str()));
    if let Some(s) = e.provider_status {
        out.extend_from_slice(b",\"provider_status\":");
        number(out, u64::from(s));
    }
    opt_string(out, b",\"provider_reason\":", e.provider_reason.as_deref());
    opt_string(out, b",\"provider_id\":", e.provider_id.as_deref());
    out.extend_from_slice(b",\"attempt\":");
    number(out, u64::from(e.attempt));
    out.extend_from_slice(b",\"latency_ms\":");
    number(out, e.latency_ms);
    out.extend_from_slice(b",\"ts\":");
    string(out, &e.ts);
    out.push(b'}');
}

fn opt_string(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    if let Some(v) = value {
        out.extend_from_slice(key);
        string(out, v);
    }
}

/// A JSON string: copied as is unless it holds a byte serde_json escapes
/// (a control character, `"` or `\`), which then goes through serde_json.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; keep the JSON well formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// No byte below 0x20, no `"` and no `\\`: checked eight bytes at a time
/// (the classic "has a zero byte" bit trick), since every value of every
/// entry goes through here.
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is below `n` (n <= 0x80) where this has its high bit.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20) | below(x ^ (ONES * 0x22), 1) | below(x ^ (ONES * 0x5c), 1) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

pub(crate) fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Class, Code, Status};
    use std::borrow::Cow;

    fn minimal() -> ResultEntry {
        serde_json::from_value(serde_json::json!({
            "job_id": "j1", "platform": "apns", "status": "delivered",
            "attempt": 1, "latency_ms": 3, "ts": "2026-12-01T00:00:00.000Z"
        }))
        .unwrap()
    }

    /// Entries with every optional field set or not, odd texts included.
    fn shapes() -> Vec<ResultEntry> {
        let mut all = minimal();
        all.campaign = Some("spring \"sale\" \\ \u{1}\u{7f} é ✓".into());
        all.recipient_id = Some("r0".into());
        all.token = Some("ab".repeat(32));
        all.status = Status::Failed;
        all.code = Some(Code::BadDeviceToken);
        all.label = Some(Cow::Borrowed("Bad device token"));
        all.class = Some(Class::Token);
        all.provider_status = Some(400);
        all.provider_reason = Some("BadDeviceToken\n".into());
        all.provider_id = Some("123e4567-e89b-12d3-a456-426614174000".into());
        all.attempt = u32::MAX;
        all.latency_ms = u64::MAX;
        let mut retry = minimal();
        retry.status = Status::Retrying;
        retry.latency_ms = 0;
        retry.job_id = "\t".into();
        vec![minimal(), all, retry]
    }

    /// A message of entries whose values need no escaping fits in what
    /// `encode` reserves: it is written without growing (copying) once.
    #[test]
    fn the_reservation_holds_a_message_without_escapes() {
        let mut delivered = minimal();
        delivered.job_id = "lt0123456789-499".into();
        delivered.recipient_id = Some("r499".into());
        delivered.token = Some("ab".repeat(32));
        delivered.provider_status = Some(200);
        delivered.provider_id = Some("123e4567-e89b-12d3-a456-426614174000".into());
        delivered.latency_ms = 53;
        let mut failed = delivered.clone();
        failed.campaign = Some("spring-sale".into());
        failed.status = Status::Failed;
        failed.code = Some(Code::MismatchSenderId);
        failed.label = Some(Cow::Borrowed("FCM Mismatched Sender ID"));
        failed.class = Some(Class::Credentials);
        failed.provider_status = Some(403);
        failed.provider_reason = Some("SENDER_ID_MISMATCH".into());
        failed.attempt = 12;
        failed.latency_ms = 30_000;
        for entry in [delivered, failed] {
            let msg = ResultMessage {
                app: "shop".into(),
                results: vec![entry; 500],
            };
            let reserved = 32 + msg.app.len() + msg.results.iter().map(estimate).sum::<usize>();
            let out = encode(&msg);
            assert!(out.len() <= reserved, "{} > {reserved}", out.len());
        }
    }

    #[test]
    fn encodes_exactly_what_serde_json_does() {
        for app in ["shop", "a\"pp"] {
            for n in [0, 1, 3] {
                let msg = ResultMessage {
                    app: app.into(),
                    results: shapes().into_iter().cycle().take(n).collect(),
                };
                let ours = encode(&msg);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&serde_json::to_vec(&msg).unwrap())
                );
            }
        }
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_check() {
        let bytewise = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        let mut seed = 7u64;
        for len in 0..40 {
            for _ in 0..200 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        // Mostly plain ASCII, now and then an edge byte.
                        let edges = [
                            0x00, 0x1f, 0x20, 0x21, 0x22, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xff,
                        ];
                        let r = (seed >> 33) as usize;
                        if r % 8 == 0 {
                            edges[r / 8 % edges.len()]
                        } else {
                            b'a' + (r % 26) as u8
                        }
                    })
                    .collect();
                assert_eq!(plain(&s), bytewise(&s), "{s:?}");
            }
        }
    }
}
