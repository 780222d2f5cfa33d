//! Every Prometheus metric name pushgate exports, in one place (design.md
//! "Metrics"; the lead's contract in docs). Base units, `_total` counters,
//! labels from bounded sets only: never a token, user id or job id.

pub const JOBS_RECEIVED: &str = "pushgate_jobs_received_total";
pub const JOBS_ACKED: &str = "pushgate_jobs_acked_total";
pub const JOBS_REQUEUED: &str = "pushgate_jobs_requeued_total";
pub const JOBS_REDELIVERED: &str = "pushgate_jobs_redelivered_total";
pub const NOTIFICATIONS: &str = "pushgate_notifications_total";
pub const REQUEST_DURATION: &str = "pushgate_provider_request_duration_seconds";
pub const INFLIGHT: &str = "pushgate_inflight_requests";
pub const CONNECTIONS: &str = "pushgate_connections";
pub const THROTTLE_WAIT: &str = "pushgate_throttle_wait_seconds";
pub const RETRIES: &str = "pushgate_retries_total";
pub const DEAD_LETTERED: &str = "pushgate_dead_lettered_total";
pub const TOKEN_INVALIDATIONS: &str = "pushgate_token_invalidations_total";
pub const IMPRESSIONS: &str = "pushgate_impressions_total";
pub const CLICKS: &str = "pushgate_clicks_total";
pub const CREDENTIALS_ALERT: &str = "pushgate_credentials_alert";
pub const BUILD_INFO: &str = "pushgate_build_info";
pub const READY: &str = "pushgate_ready";
pub const BROKER_CONNECTED: &str = "pushgate_broker_connected";
pub const QUEUE_CONSUMERS: &str = "pushgate_queue_consumers";
pub const THROTTLE_DEVICE_KEYS: &str = "pushgate_throttle_device_keys";
pub const THROTTLE_SLOWDOWN: &str = "pushgate_throttle_slowdown";
pub const CAMPAIGNS_TRACKED: &str = "pushgate_campaigns_tracked";
pub const CAMPAIGNS_STOPPED: &str = "pushgate_campaigns_stopped";
pub const EVENTS_REJECTED: &str = "pushgate_events_rejected_total";
pub const CAMPAIGN_IMPRESSIONS: &str = "pushgate_campaign_impressions_total";
pub const CAMPAIGN_CLICKS: &str = "pushgate_campaign_clicks_total";
pub const CAMPAIGN_DELIVERED: &str = "pushgate_campaign_delivered_total";

/// Every name above (tests check each is exported and documented).
pub const ALL: [&str; 27] = [
    JOBS_RECEIVED,
    JOBS_ACKED,
    JOBS_REQUEUED,
    JOBS_REDELIVERED,
    NOTIFICATIONS,
    REQUEST_DURATION,
    INFLIGHT,
    CONNECTIONS,
    THROTTLE_WAIT,
    RETRIES,
    DEAD_LETTERED,
    TOKEN_INVALIDATIONS,
    IMPRESSIONS,
    CLICKS,
    CREDENTIALS_ALERT,
    BUILD_INFO,
    READY,
    BROKER_CONNECTED,
    QUEUE_CONSUMERS,
    THROTTLE_DEVICE_KEYS,
    THROTTLE_SLOWDOWN,
    CAMPAIGNS_TRACKED,
    CAMPAIGNS_STOPPED,
    EVENTS_REJECTED,
    CAMPAIGN_IMPRESSIONS,
    CAMPAIGN_CLICKS,
    CAMPAIGN_DELIVERED,
];

/// Buckets of the provider request histogram: push latency, 1 ms to 30 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of throttle waits: 1 ms to 30 s like requests, then campaign-rate waits.
pub const WAIT_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// `reason` values of [`DEAD_LETTERED`] (pre-created at 0 so alerts see them).
pub const DEAD_REASONS: [&str; 6] = [
    "not-json",
    "invalid-job",
    "unknown-app",
    "max-attempts",
    "bad-events",
    "internal-error",
];

/// `app` label value for apps that are not in the config (bad jobs name anything).
pub const UNKNOWN_APP: &str = "_unknown";
