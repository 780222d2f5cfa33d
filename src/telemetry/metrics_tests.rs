//! Unit tests of the metrics registry (beside `metrics.rs` to keep it short).

use super::*;
use crate::outcome::Status;

fn text(m: &Metrics) -> String {
    String::from_utf8(m.encode().unwrap()).unwrap()
}

#[test]
fn every_name_is_registered_and_exported() {
    let m = Metrics::new();
    m.init_app("shop", &[Platform::Apns]);
    m.queue("q");
    let c = m.consumer("q");
    assert!(text(&m).contains(r#"pushgate_queue_consumers{queue="q"} 1"#));
    drop(c);
    assert!(text(&m).contains(r#"pushgate_queue_consumers{queue="q"} 0"#));
    m.set_throttle_device_keys(0);
    // Per-campaign series exist while a campaign is tracked.
    super::super::stats::CampaignStats::new(1, m.clone()).record_events("c", 0, 0);
    let families: Vec<String> = m
        .registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    for name in n::ALL {
        assert!(families.iter().any(|f| f == name), "{name} not exported");
    }
    assert_eq!(families.len(), n::ALL.len(), "{families:?}");
    let t = text(&m);
    assert!(t.contains(&format!(
        "pushgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn enum_discriminants_index_the_prefetched_arrays() {
    for (i, p) in Platform::ALL.into_iter().enumerate() {
        assert_eq!(p as usize, i);
    }
    for (i, s) in ThrottleScope::ALL.into_iter().enumerate() {
        assert_eq!(s as usize, i);
    }
}

#[test]
fn results_count_by_label_and_retries_and_tokens() {
    let m = Metrics::new();
    let mut c = JobCounts::default();
    c.add(Platform::Apns, Status::Delivered, None, false);
    c.add(Platform::Apns, Status::Delivered, None, false);
    c.add(
        Platform::Fcm,
        Status::Failed,
        Some(Code::NotRegistered),
        true,
    );
    c.add(
        Platform::Fcm,
        Status::Retrying,
        Some(Code::QuotaExceeded),
        false,
    );
    m.record_results("shop", &c);
    let t = text(&m);
    assert!(t.contains(r#"pushgate_notifications_total{app="shop",code="none",platform="apns",status="delivered"} 2"#), "{t}");
    assert!(t.contains(r#"pushgate_notifications_total{app="shop",code="NotRegistered",platform="fcm",status="failed"} 1"#));
    assert!(t.contains(r#"pushgate_retries_total{code="QuotaExceeded",platform="fcm"} 1"#));
    assert!(t.contains(r#"pushgate_token_invalidations_total{app="shop",platform="fcm"} 1"#));

    // Each app and cell keeps its own count across jobs.
    m.record_results("shop", &c);
    let mut other = JobCounts::default();
    other.add(Platform::Apns, Status::Delivered, None, false);
    m.record_results("blog", &other);
    let t = text(&m);
    assert!(t.contains(r#"pushgate_notifications_total{app="shop",code="none",platform="apns",status="delivered"} 4"#), "{t}");
    assert!(t.contains(r#"pushgate_notifications_total{app="blog",code="none",platform="apns",status="delivered"} 1"#));
    assert!(t.contains(r#"pushgate_notifications_total{app="shop",code="NotRegistered",platform="fcm",status="failed"} 2"#));
    assert!(t.contains(r#"pushgate_notifications_total{app="shop",code="QuotaExceeded",platform="fcm",status="retrying"} 2"#));
}

#[test]
fn pool_gauges_sum_snapshots_per_platform() {
    let m = Metrics::new();
    let s = PoolStats {
        open: 2,
        in_flight: 7,
        ..PoolStats::default()
    };
    m.set_pools(&[(Platform::Apns, s), (Platform::Apns, s)]);
    let t = text(&m);
    assert!(t.contains(r#"pushgate_connections{platform="apns",state="open"} 4"#));
    assert!(t.contains(r#"pushgate_inflight_requests{platform="apns"} 14"#));
    assert!(t.contains(r#"pushgate_inflight_requests{platform="fcm"} 0"#));
}

#[test]
fn durations_land_in_seconds_buckets() {
    let m = Metrics::new();
    m.observe_request(Platform::Fcm, Duration::from_millis(3));
    m.observe_throttle_wait(ThrottleScope::Device, Duration::from_secs(2));
    let t = text(&m);
    assert!(t.contains(
        r#"pushgate_provider_request_duration_seconds_bucket{platform="fcm",le="0.005"} 1"#
    ));
    assert!(t.contains(
        r#"pushgate_provider_request_duration_seconds_bucket{platform="fcm",le="0.0025"} 0"#
    ));
    assert!(t.contains(r#"pushgate_throttle_wait_seconds_count{scope="device"} 1"#));
}
