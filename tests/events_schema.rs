//! The events JSON Schema (schema/events.schema.json) and pushgate's event
//! parser agree on valid and invalid batches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

fn schema() -> (boon::Schemas, boon::SchemaIndex) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/events.schema.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("schema is JSON");
    let loc = path.display().to_string();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler.add_resource(&loc, v).unwrap();
    let index = compiler
        .compile(&loc, &mut schemas)
        .expect("schema compiles");
    (schemas, index)
}

fn event() -> Value {
    json!({"type": "impression", "app": "shop", "platform": "apns", "campaign": "spring-sale",
           "notification_id": "6f1c2a9e-0b1d-4c1e-9a57-3b2f8e0d4c11", "ts": "2026-11-22T10:00:03Z"})
}

fn with(key: &str, v: Value) -> Value {
    let mut e = event();
    e[key] = v;
    json!({ "events": [e] })
}

fn without(key: &str) -> Value {
    let mut e = event();
    e.as_object_mut().unwrap().remove(key);
    json!({ "events": [e] })
}

#[test]
fn schema_and_parser_agree() {
    let (schemas, index) = schema();
    let apps: BTreeSet<String> = ["shop".to_owned()].into();
    let valid = vec![
        json!({"events": [event()]}),
        with("type", json!("click")),
        with("platform", json!("webpush")),
        with("campaign", Value::Null),
        without("campaign"),
        without("ts"),
        with("ts", Value::Null),
        with("campaign", json!("x".repeat(128))),
        json!({"events": vec![event(); 1000]}),
    ];
    let invalid = vec![
        json!({"events": []}),
        json!({"events": vec![event(); 1001]}),
        json!({"events": [event()], "extra": 1}),
        with("type", json!("view")),
        with("platform", json!("sms")),
        with("campaign", json!("")),
        with("campaign", json!("x".repeat(129))),
        with("campaign", json!("a\nb")),
        with("notification_id", json!("")),
        with("notification_id", json!("n".repeat(65))),
        with("ts", json!("yesterday")),
        with("user_id", json!("u-42")),
        without("notification_id"),
        without("app"),
        without("type"),
    ];
    for v in valid {
        let bytes = serde_json::to_vec(&v).unwrap();
        schemas
            .validate(&v, index)
            .unwrap_or_else(|e| panic!("schema refuses {v}: {e:#}"));
        pushgate::telemetry::events::parse(&bytes, &apps)
            .unwrap_or_else(|e| panic!("pushgate refuses {v}: {e}"));
    }
    for v in invalid {
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(schemas.validate(&v, index).is_err(), "schema accepts {v}");
        assert!(
            pushgate::telemetry::events::parse(&bytes, &apps).is_err(),
            "pushgate accepts {v}"
        );
    }
}
