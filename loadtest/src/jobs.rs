//! The jobs a run publishes: ids that encode the run and the sequence
//! number, tokens (valid, or a scripted mix of errors), invalid jobs, and
//! what each job should come to.

use std::collections::BTreeMap;

use crate::cli::Mix;

/// The notification every job (and every baseline client) sends.
pub const TITLE: &str = "Hello";
pub const BODY: &str = "Benchmark body text";
/// The bundle id the dev simulator allows.
pub const TOPIC: &str = "com.example.shop";

/// What a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Valid,
    /// Not JSON at all: dead-lettered, no result.
    NotJson,
    /// An app the gateway does not know: one UnknownApp result per
    /// recipient, then dead-lettered.
    UnknownApp,
}

/// How a job's jobs and tokens are drawn.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The run tag: job ids are `<tag>-<seq>`.
    pub tag: String,
    pub jobs: u64,
    pub recipients: usize,
    pub mix: Mix,
    /// Share of invalid jobs.
    pub invalid: f64,
    /// Jobs published this soon after the first are left out of latencies.
    pub latency_warmup: std::time::Duration,
    /// Jobs are published persistent (delivery mode 2, as services publish
    /// them), or transient (1) to keep the broker's disk out of the path.
    pub persistent: bool,
}

/// The app of valid jobs (configured in the gateway's generated config).
pub const APP: &str = "shop";
/// The app of `UnknownApp` jobs (not configured).
pub const UNKNOWN_APP: &str = "nosuchapp";

impl Plan {
    /// The kind of job `seq`: deterministic, spread evenly over the run.
    pub fn kind(&self, seq: u64) -> Kind {
        if self.invalid <= 0.0 {
            return Kind::Valid;
        }
        let every = (1.0 / self.invalid).round().max(1.0) as u64;
        match (seq % every == every / 2, (seq / every) % 2) {
            (false, _) => Kind::Valid,
            (true, 0) => Kind::NotJson,
            (true, _) => Kind::UnknownApp,
        }
    }

    /// The body of job `seq`.
    pub fn body(&self, seq: u64) -> Vec<u8> {
        let kind = self.kind(seq);
        if kind == Kind::NotJson {
            return format!("not a job {}-{seq}", self.tag).into_bytes();
        }
        let app = if kind == Kind::UnknownApp {
            UNKNOWN_APP
        } else {
            APP
        };
        let mut out = String::with_capacity(160 + self.recipients * 110);
        out.push_str(&format!(
            r#"{{"id":"{}-{seq}","app":"{app}","recipients":["#,
            self.tag
        ));
        for r in 0..self.recipients {
            if r > 0 {
                out.push(',');
            }
            let token = token(self.mix, seq, r);
            out.push_str(&format!(
                r#"{{"platform":"apns","token":"{token}","id":"r{r}"}}"#
            ));
        }
        out.push_str(&format!(
            r#"],"notification":{{"title":"{TITLE}","body":"{BODY}"}}}}"#
        ));
        out.into_bytes()
    }

    /// The final codes every recipient of the run should end with
    /// ("delivered" for a delivered one), and the dead-lettered job count.
    pub fn expected(&self) -> (BTreeMap<String, u64>, u64) {
        let mut codes = BTreeMap::new();
        let mut dead = 0;
        for seq in 0..self.jobs {
            match self.kind(seq) {
                Kind::NotJson => dead += 1,
                Kind::UnknownApp => {
                    dead += 1;
                    *codes.entry("UnknownApp".to_owned()).or_default() += self.recipients as u64;
                }
                Kind::Valid => {
                    for r in 0..self.recipients {
                        let code = expected_code(self.mix, seq, r);
                        *codes.entry(code.to_owned()).or_default() += 1;
                    }
                }
            }
        }
        (codes, dead)
    }

    /// Recipients that should get a final result entry.
    pub fn expected_results(&self) -> u64 {
        (0..self.jobs)
            .filter(|&s| self.kind(s) != Kind::NotJson)
            .count() as u64
            * self.recipients as u64
    }
}

/// What a token of the mix is scripted to do at the APNs simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Ok,
    /// 410 Unregistered.
    Dead,
    /// 400 BadDeviceToken.
    Bad,
    /// 503 on the first try, then 200 (one retry through a delay queue).
    Flaky,
}

fn script(mix: Mix, seq: u64, r: usize) -> Script {
    if mix == Mix::Ok {
        return Script::Ok;
    }
    // A cheap, deterministic spread: 4% dead, 2% bad, 2% flaky.
    let h = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r as u64).wrapping_mul(31) % 100;
    match h {
        0..=3 => Script::Dead,
        4..=5 => Script::Bad,
        6..=7 => Script::Flaky,
        _ => Script::Ok,
    }
}

/// A 64-hex-digit token unique to (run position, recipient), with the
/// simulator's scripted prefix when the mix asks for one.
pub fn token(mix: Mix, seq: u64, r: usize) -> String {
    let prefix = match script(mix, seq, r) {
        Script::Ok => "a",
        Script::Dead => "dead",
        Script::Bad => "bad0",
        Script::Flaky => "5031",
    };
    let tail = format!("{seq:032x}{r:016x}");
    let mut t = String::with_capacity(64);
    t.push_str(prefix);
    t.push_str(&"0".repeat(64 - prefix.len() - tail.len()));
    t.push_str(&tail);
    t
}

fn expected_code(mix: Mix, seq: u64, r: usize) -> &'static str {
    match script(mix, seq, r) {
        Script::Ok | Script::Flaky => "delivered",
        Script::Dead => "NotRegistered",
        Script::Bad => "BadDeviceToken",
    }
}

/// Splits a result entry's `job_id` into (tag, seq).
pub fn parse_job_id(id: &str) -> Option<(&str, u64)> {
    let (tag, seq) = id.rsplit_once('-')?;
    Some((tag, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(invalid: f64, mix: Mix) -> Plan {
        Plan {
            tag: "lt-1".into(),
            jobs: 1000,
            recipients: 3,
            mix,
            invalid,
            latency_warmup: std::time::Duration::ZERO,
            persistent: true,
        }
    }

    #[test]
    fn valid_jobs_parse_as_pushgate_jobs() {
        let p = plan(0.0, Mix::Errors);
        for seq in [0, 7, 999] {
            let job: pushgate::job::Job =
                serde_json::from_slice(&p.body(seq)).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(job.recipients.len(), 3);
            assert_eq!(job.id.as_deref(), Some(format!("lt-1-{seq}").as_str()));
            assert!(job.validate().is_ok());
        }
        assert_eq!(parse_job_id("lt-1-42"), Some(("lt-1", 42)));
    }

    #[test]
    fn invalid_share_and_expectations_add_up() {
        let p = plan(0.02, Mix::Ok);
        let (codes, dead) = p.expected();
        assert_eq!(dead, 20);
        assert_eq!(codes.get("UnknownApp"), Some(&30));
        assert_eq!(codes.values().sum::<u64>(), p.expected_results());
        assert_eq!(p.expected_results(), 990 * 3);
        let p = plan(0.0, Mix::Errors);
        let (codes, _) = p.expected();
        assert!(codes["NotRegistered"] > 0 && codes["BadDeviceToken"] > 0);
        assert_eq!(token(Mix::Ok, 5, 1).len(), 64);
        assert!(
            token(Mix::Errors, 0, 0).starts_with("dead")
                || script(Mix::Errors, 0, 0) != Script::Dead
        );
    }
}
