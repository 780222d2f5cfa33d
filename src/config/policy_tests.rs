//! Unit tests of the `[throttle]` / `[policy]` validation (beside `policy.rs` to keep it short).

use super::*;

#[test]
fn defaults_validate_and_match_typed_defaults() {
    let c = build(RawThrottle::default(), RawPolicy::default(), &[]).unwrap();
    assert_eq!(c, PolicyConfig::default());
    assert!(
        c.throttle.fcm.per_second * 60 < 600_000,
        "under FCM's quota"
    );
}

/// The example config shows every key with its default.
#[test]
fn the_example_config_shows_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pushgate.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    let throttle: RawThrottle = table.remove("throttle").unwrap().try_into().unwrap();
    let policy: RawPolicy = table.remove("policy").unwrap().try_into().unwrap();
    assert_eq!(
        build(throttle, policy, &[]).unwrap(),
        PolicyConfig::default()
    );
    let amqp: crate::config::amqp::RawAmqp = table.remove("amqp").unwrap().try_into().unwrap();
    let amqp = amqp.into_typed().unwrap();
    let def = crate::config::AmqpConfig::default();
    assert_eq!(
        (
            amqp.control_exchange,
            amqp.control_queue,
            amqp.control_remember
        ),
        (
            def.control_exchange,
            def.control_queue,
            def.control_remember
        )
    );
}

#[test]
fn overrides_apply_per_app_and_platform() {
    let raw: RawThrottle = toml::from_str(
        r#"
        [fcm]
        rate_per_second = 100
        [apps.shop.fcm]
        burst = 7
        [apps.shop.apns]
        rate_per_second = 0
        "#,
    )
    .unwrap();
    let c = build(raw, RawPolicy::default(), &["shop"])
        .unwrap()
        .throttle;
    assert_eq!(
        c.rate("shop", Platform::Fcm),
        Rate {
            per_second: 100,
            burst: 7
        }
    );
    assert_eq!(c.rate("shop", Platform::Apns).per_second, 0);
    assert_eq!(c.rate("other", Platform::Fcm).burst, 900);
    assert_eq!(c.rate("other", Platform::Webpush), WEBPUSH_RATE);
}

#[test]
fn lists_every_problem_with_its_key() {
    let raw: RawThrottle = toml::from_str(
        r#"
        slowdown_factor = 0.0
        campaign_share = 2.0
        [device]
        max_wait = "soon"
        burst = 0
        [apps.nope.fcm]
        burst = 0
        "#,
    )
    .unwrap();
    let policy: RawPolicy = toml::from_str("guard_share = 1.5\nprobe_interval = \"1ms\"").unwrap();
    let problems = build(raw, policy, &["shop"]).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    for want in [
        "throttle.slowdown_factor",
        "throttle.campaign_share",
        "throttle.device.max_wait",
        "throttle.device",
        "throttle.apps.nope",
        "throttle.apps.nope.fcm.burst",
        "policy.guard_share",
        "policy.probe_interval",
    ] {
        assert!(keys.contains(&want), "{want} missing in {problems:?}");
    }
    assert!(toml::from_str::<RawThrottle>("rate = 3").is_err());
    assert!(toml::from_str::<RawPolicy>("probe = \"1s\"").is_err());
}

#[test]
fn the_device_table_has_a_ceiling() {
    let build_device = |toml_text: &str| {
        let raw: RawThrottle = toml::from_str(toml_text).unwrap();
        build(raw, RawPolicy::default(), &["shop"])
    };
    let over = build_device("[device]\nmax_keys = 100000001").unwrap_err();
    assert!(
        over.iter()
            .any(|(k, m)| k == "throttle.device.max_keys" && m.contains("16 bytes")),
        "{over:?}"
    );
    assert!(build_device("[device]\nmax_keys = 100000000").is_ok());
    assert!(
        build_device("[device]\nper_minute = 0\nmax_keys = 100000001").is_ok(),
        "no table without a device limit"
    );
}
