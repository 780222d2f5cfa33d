//! Raw serde structs of the `[amqp]` and `[daemon]` sections and their validation into typed config.

use std::time::Duration;

use serde::Deserialize;

use super::{AmqpConfig, DaemonConfig, InputQueue, QueueType, RetryConfig, Secret};

pub const DEFAULT_EVENTS_QUEUE: &str = "pushgate.events";
pub const DEFAULT_CONTROL_EXCHANGE: &str = "pushgate.control";
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2000;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
const DEFAULT_DELAYS: [&str; 5] = ["1s", "5s", "30s", "2m", "10m"];
pub const DEFAULT_CONTROL_QUEUE: &str = "pushgate.control.log";
pub const DEFAULT_CONTROL_REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);
/// `amqp.inputs.read_interval`: docs/benchmarks.md, round 13.
pub const DEFAULT_READ_INTERVAL: Duration = Duration::from_millis(1);
/// The longest `read_interval`: beyond this the wait is latency, not batching.
const MAX_READ_INTERVAL: Duration = Duration::from_millis(50);

/// `[amqp]` as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAmqp {
    pub url: String,
    pub heartbeat: String,
    pub connection_name: String,
    pub reconnect_min: String,
    pub reconnect_max: String,
    /// `classic` or `quorum`.
    pub queue_type: String,
    pub inputs: Vec<RawInput>,
    pub retry: RawRetry,
    pub dead_queue: String,
    pub results_exchange: String,
    pub results_undelivered_only: bool,
    /// Queue apps (or their backends) publish impression/click batches to.
    pub events_queue: String,
    pub control_exchange: String,
    pub control_queue: String,
    pub control_remember: String,
}

impl Default for RawAmqp {
    fn default() -> Self {
        RawAmqp {
            url: DEFAULT_URL.into(),
            heartbeat: "10s".into(),
            connection_name: "pushgate".into(),
            reconnect_min: "500ms".into(),
            reconnect_max: "30s".into(),
            queue_type: "classic".into(),
            inputs: vec![RawInput::default()],
            retry: RawRetry::default(),
            dead_queue: "pushgate.dead".into(),
            results_exchange: "pushgate.results".into(),
            results_undelivered_only: false,
            events_queue: DEFAULT_EVENTS_QUEUE.into(),
            control_exchange: DEFAULT_CONTROL_EXCHANGE.into(),
            control_queue: DEFAULT_CONTROL_QUEUE.into(),
            control_remember: "7days".into(),
        }
    }
}

/// One `[[amqp.inputs]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInput {
    pub name: String,
    pub prefetch: u16,
    pub weight: u32,
    pub consumers: u16,
    pub read_interval: String,
}

impl Default for RawInput {
    fn default() -> Self {
        RawInput {
            name: "pushgate.jobs".into(),
            prefetch: 16,
            weight: 1,
            consumers: 1,
            read_interval: "1ms".into(),
        }
    }
}

/// `[amqp.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub exchange: String,
    pub queue_prefix: String,
    pub delays: Vec<String>,
    pub max_attempts: u32,
    /// First backoff step; defaults to the shortest delay.
    pub base: Option<String>,
    pub jitter: f64,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            exchange: "pushgate.retry".into(),
            queue_prefix: "pushgate.retry.".into(),
            delays: DEFAULT_DELAYS.iter().map(|d| (*d).to_owned()).collect(),
            max_attempts: 5,
            base: None,
            jitter: 0.3,
        }
    }
}

/// `[daemon]` as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDaemon {
    pub max_in_flight: usize,
    pub drain_timeout: String,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            drain_timeout: "25s".into(),
        }
    }
}

fn duration(key: &str, value: &str, problems: &mut Vec<String>) -> Duration {
    match humantime::parse_duration(value) {
        Ok(d) => d,
        Err(e) => {
            problems.push(format!("{key}: {value:?} is not a duration ({e})"));
            Duration::ZERO
        }
    }
}

fn non_empty(key: &str, value: &str, problems: &mut Vec<String>) {
    if value.is_empty() {
        problems.push(format!("{key} must not be empty"));
    }
}

impl RawAmqp {
    /// Validates into [`AmqpConfig`]; every problem is listed.
    pub fn into_typed(self) -> Result<AmqpConfig, Vec<String>> {
        let mut p = Vec::new();
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            p.push("amqp.url must start with amqp:// or amqps://".to_owned());
        }
        let heartbeat = duration("amqp.heartbeat", &self.heartbeat, &mut p);
        if heartbeat.as_secs() > u64::from(u16::MAX) {
            p.push("amqp.heartbeat is too long".to_owned());
        }
        let reconnect_min = duration("amqp.reconnect_min", &self.reconnect_min, &mut p);
        let reconnect_max = duration("amqp.reconnect_max", &self.reconnect_max, &mut p);
        if reconnect_min.is_zero() || reconnect_max < reconnect_min {
            p.push("amqp.reconnect_min must be > 0 and <= amqp.reconnect_max".to_owned());
        }
        let queue_type = match self.queue_type.as_str() {
            "classic" => QueueType::Classic,
            "quorum" => QueueType::Quorum,
            other => {
                p.push(format!(
                    "amqp.queue_type: {other:?} is not classic or quorum"
                ));
                QueueType::Classic
            }
        };
        let inputs = inputs(self.inputs, &mut p);
        let retry = self.retry.into_typed(&mut p);
        non_empty("amqp.dead_queue", &self.dead_queue, &mut p);
        non_empty("amqp.results_exchange", &self.results_exchange, &mut p);
        non_empty("amqp.events_queue", &self.events_queue, &mut p);
        non_empty("amqp.control_exchange", &self.control_exchange, &mut p);
        non_empty("amqp.control_queue", &self.control_queue, &mut p);
        let control_remember = duration("amqp.control_remember", &self.control_remember, &mut p);
        if control_remember < Duration::from_secs(1) {
            p.push("amqp.control_remember must be at least 1s".to_owned());
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(AmqpConfig {
            url: Secret::new(self.url),
            heartbeat,
            connection_name: self.connection_name,
            reconnect_min,
            reconnect_max,
            queue_type,
            inputs,
            retry,
            dead_queue: self.dead_queue,
            results_exchange: self.results_exchange,
            results_undelivered_only: self.results_undelivered_only,
            events_queue: self.events_queue,
            control_exchange: self.control_exchange,
            control_queue: self.control_queue,
            control_remember,
        })
    }
}

fn inputs(raw: Vec<RawInput>, p: &mut Vec<String>) -> Vec<InputQueue> {
    if raw.is_empty() {
        p.push("amqp.inputs must name at least one input queue".to_owned());
    }
    let mut out: Vec<InputQueue> = Vec::with_capacity(raw.len());
    for r in raw {
        non_empty("amqp.inputs.name", &r.name, p);
        if out.iter().any(|q| q.name == r.name) {
            p.push(format!("amqp.inputs: queue {:?} is listed twice", r.name));
        }
        if r.prefetch == 0 || r.weight == 0 || r.consumers == 0 {
            p.push(format!(
                "amqp.inputs {:?}: prefetch, weight and consumers must be >= 1",
                r.name
            ));
        }
        let read_interval = duration("amqp.inputs.read_interval", &r.read_interval, p);
        if read_interval > MAX_READ_INTERVAL {
            p.push(format!(
                "amqp.inputs {:?}: read_interval must be at most {}",
                r.name,
                humantime::format_duration(MAX_READ_INTERVAL)
            ));
        }
        out.push(InputQueue {
            name: r.name,
            prefetch: r.prefetch,
            weight: r.weight,
            consumers: r.consumers,
            read_interval,
        });
    }
    out
}

impl RawRetry {
    fn into_typed(self, p: &mut Vec<String>) -> RetryConfig {
        let mut delays: Vec<Duration> = self
            .delays
            .iter()
            .map(|d| duration("amqp.retry.delays", d, p))
            .collect();
        delays.sort();
        delays.dedup();
        if delays.is_empty() || delays.iter().any(|d| d.as_millis() == 0) {
            p.push("amqp.retry.delays must list at least one delay >= 1ms".to_owned());
        }
        let base = match &self.base {
            Some(b) => duration("amqp.retry.base", b, p),
            None => delays.first().copied().unwrap_or(Duration::from_secs(1)),
        };
        if self.max_attempts == 0 {
            p.push("amqp.retry.max_attempts must be >= 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            p.push("amqp.retry.jitter must be within 0.0..=1.0".to_owned());
        }
        non_empty("amqp.retry.exchange", &self.exchange, p);
        non_empty("amqp.retry.queue_prefix", &self.queue_prefix, p);
        RetryConfig {
            exchange: self.exchange,
            queue_prefix: self.queue_prefix,
            delays,
            max_attempts: self.max_attempts,
            base,
            jitter: self.jitter,
        }
    }
}

impl RawDaemon {
    /// Validates into [`DaemonConfig`].
    pub fn into_typed(self) -> Result<DaemonConfig, Vec<String>> {
        let mut p = Vec::new();
        let drain_timeout = duration("daemon.drain_timeout", &self.drain_timeout, &mut p);
        if self.max_in_flight == 0 {
            p.push("daemon.max_in_flight must be >= 1".to_owned());
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(DaemonConfig {
            max_in_flight: self.max_in_flight,
            drain_timeout,
        })
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        let retry = RawRetry::default();
        let delays: Vec<Duration> = retry
            .delays
            .iter()
            .filter_map(|d| humantime::parse_duration(d).ok())
            .collect();
        AmqpConfig {
            url: Secret::new(DEFAULT_URL.to_owned()),
            heartbeat: Duration::from_secs(10),
            connection_name: "pushgate".into(),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            queue_type: QueueType::Classic,
            inputs: vec![InputQueue {
                name: "pushgate.jobs".into(),
                prefetch: 16,
                weight: 1,
                consumers: 1,
                read_interval: DEFAULT_READ_INTERVAL,
            }],
            retry: RetryConfig {
                exchange: retry.exchange,
                queue_prefix: retry.queue_prefix,
                base: delays.first().copied().unwrap_or(Duration::from_secs(1)),
                delays,
                max_attempts: retry.max_attempts,
                jitter: retry.jitter,
            },
            dead_queue: "pushgate.dead".into(),
            results_exchange: "pushgate.results".into(),
            results_undelivered_only: false,
            events_queue: DEFAULT_EVENTS_QUEUE.into(),
            control_exchange: DEFAULT_CONTROL_EXCHANGE.into(),
            control_queue: DEFAULT_CONTROL_QUEUE.into(),
            control_remember: DEFAULT_CONTROL_REMEMBER,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_typed_defaults() {
        let typed = RawAmqp::default().into_typed().unwrap();
        let def = AmqpConfig::default();
        assert_eq!(typed.inputs, def.inputs);
        assert_eq!(typed.retry, def.retry);
        assert_eq!(typed.retry.delays.len(), 5);
        assert_eq!(typed.retry.base, Duration::from_secs(1));
        assert_eq!(typed.control_exchange, def.control_exchange);
        assert_eq!(typed.control_queue, def.control_queue);
        assert_eq!(typed.control_remember, def.control_remember);
        assert_eq!(
            RawDaemon::default().into_typed().unwrap(),
            DaemonConfig::default()
        );
    }

    #[test]
    fn parses_toml_and_rejects_unknown_keys() {
        let raw: RawAmqp = toml::from_str(
            r#"
            url = "amqp://u:p@h:5672/%2f"
            queue_type = "quorum"
            [[inputs]]
            name = "tx"
            prefetch = 4
            weight = 3
            read_interval = "0ms"
            [[inputs]]
            name = "bulk"
            [retry]
            delays = ["30s", "200ms"]
            "#,
        )
        .unwrap();
        let c = raw.into_typed().unwrap();
        assert_eq!(c.queue_type, QueueType::Quorum);
        assert_eq!(c.inputs[0].weight, 3);
        assert_eq!(c.inputs[1].prefetch, 16);
        assert_eq!(c.inputs[0].read_interval, Duration::ZERO);
        assert_eq!(c.inputs[1].read_interval, DEFAULT_READ_INTERVAL);
        assert_eq!(
            c.retry.delays,
            vec![Duration::from_millis(200), Duration::from_secs(30)]
        );
        assert!(format!("{c:?}").contains("***"));
        assert!(toml::from_str::<RawAmqp>("prefech = 3").is_err());
    }

    #[test]
    fn lists_every_problem() {
        let raw: RawAmqp = toml::from_str(
            r#"
            url = "http://x"
            queue_type = "stream"
            inputs = []
            [retry]
            delays = ["soon"]
            jitter = 2.0
            "#,
        )
        .unwrap();
        let problems = raw.into_typed().unwrap_err();
        assert!(problems.len() >= 5, "{problems:?}");
    }

    #[test]
    fn read_interval_is_a_short_duration() {
        let check = |value: &str| {
            let raw: RawAmqp = toml::from_str(&format!(
                "[[inputs]]\nname = \"q\"\nread_interval = \"{value}\"\n"
            ))
            .unwrap();
            raw.into_typed().map(|c| c.inputs[0].read_interval)
        };
        assert_eq!(check("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(check("50ms"), Ok(Duration::from_millis(50)));
        let too_long = check("51ms").unwrap_err();
        assert_eq!(
            too_long,
            vec!["amqp.inputs \"q\": read_interval must be at most 50ms".to_owned()]
        );
        let not_one = check("often").unwrap_err();
        assert!(
            not_one[0].starts_with("amqp.inputs.read_interval: \"often\" is not a duration"),
            "{not_one:?}"
        );
    }
}
