//! What every recipient of a job shares once rendered: built by the first
//! recipient that needs it, kept beside the job, never serialized (it is
//! not part of the job's schema).
//!
//! A fan-out campaign without placeholders sends the same payload to every
//! recipient but for the notification id in its tracking key; rendering it
//! once per job instead of once per recipient is what issue 6 asked of the
//! hot path ("render shared parts once").

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

/// A payload every recipient of a job shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedPayload {
    /// The same bytes for everyone (no tracking key): a reference count each.
    Same(Bytes),
    /// The same bytes around one slot that holds the notification id.
    IdSlot { head: Vec<u8>, tail: Vec<u8> },
}

impl SharedPayload {
    /// The payload of the notification `id`; `None` when `id` is not plain
    /// ASCII letters, digits and dashes (it would need JSON escaping: the
    /// caller renders the payload whole instead).
    pub fn for_id(&self, id: &str) -> Option<Bytes> {
        match self {
            SharedPayload::Same(b) => Some(b.clone()),
            SharedPayload::IdSlot { head, tail } => {
                if !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                    return None;
                }
                let mut out = Vec::with_capacity(head.len() + id.len() + tail.len());
                out.extend_from_slice(head);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(tail);
                Some(Bytes::from(out))
            }
        }
    }
}

/// The shared parts of one job, each built on first use.
#[derive(Default)]
pub struct Memo {
    apns: OnceLock<Option<SharedPayload>>,
}

impl Memo {
    /// The APNs payload all recipients share, built by `init` the first
    /// time (`None`: it differs per recipient in more than the id).
    pub fn apns(&self, init: impl FnOnce() -> Option<SharedPayload>) -> Option<&SharedPayload> {
        self.apns.get_or_init(init).as_ref()
    }
}

/// A copy of a job starts with nothing memoised (a retry sub-job or a test
/// may change what the memo was built from).
impl Clone for Memo {
    fn clone(&self) -> Memo {
        Memo::default()
    }
}

/// A memo is derived from the job: two jobs are equal whatever they memoised.
impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Memo")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_fills_the_slot_and_odd_ids_are_refused() {
        let p = SharedPayload::IdSlot {
            head: b"{\"n\":\"".to_vec(),
            tail: b"\"}".to_vec(),
        };
        assert_eq!(p.for_id("ab-12").unwrap(), &b"{\"n\":\"ab-12\"}"[..]);
        assert_eq!(p.for_id("a\"b"), None, "would need escaping");
        let same = SharedPayload::Same(Bytes::from_static(b"{}"));
        assert_eq!(same.for_id("x\"").unwrap(), &b"{}"[..]);
    }

    #[test]
    fn a_clone_memoises_afresh() {
        let m = Memo::default();
        let built = SharedPayload::Same(Bytes::from_static(b"{}"));
        assert!(m.apns(|| Some(built.clone())).is_some());
        assert!(m.apns(|| None).is_some(), "built once");
        assert!(m.clone().apns(|| None).is_none());
    }
}
