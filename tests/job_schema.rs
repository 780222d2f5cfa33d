//! The JSON Schema for producers and the Rust job parser must agree on every example.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use pushgate::job::{Job, Platform, PushType};

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Schema {
    fn load() -> Schema {
        let path = schema_dir().join("job.schema.json");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("schema is JSON");
        let loc = path.display().to_string();
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource(&loc, json).unwrap();
        let index = compiler
            .compile(&loc, &mut schemas)
            .expect("schema compiles");
        Schema { schemas, index }
    }

    fn check(&self, instance: &serde_json::Value) -> Result<(), String> {
        self.schemas
            .validate(instance, self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

/// pushgate accepts a job when it parses, passes the job rules and every
/// recipient passes the recipient rules.
fn rust_check(bytes: &[u8]) -> Result<(), String> {
    let job = Job::parse(bytes).map_err(|e| e.to_string())?;
    job.validate().map_err(|e| e.to_string())?;
    for i in 0..job.recipients.len() {
        job.check_recipient(i)
            .map_err(|(code, msg)| format!("{code}: {msg}"))?;
    }
    Ok(())
}

fn examples(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = schema_dir().join("examples").join(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn valid_examples_pass_both() {
    let schema = Schema::load();
    let valid = examples("valid");
    assert!(valid.len() >= 5, "only {} valid examples", valid.len());
    for (name, bytes) in valid {
        let instance: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if let Err(e) = schema.check(&instance) {
            panic!("valid/{name}: schema refuses it:\n{e}");
        }
        if let Err(e) = rust_check(&bytes) {
            panic!("valid/{name}: pushgate refuses it: {e}");
        }
    }
}

#[test]
fn invalid_examples_fail_both() {
    let schema = Schema::load();
    let invalid = examples("invalid");
    assert!(
        invalid.len() >= 8,
        "only {} invalid examples",
        invalid.len()
    );
    for (name, bytes) in invalid {
        let instance: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            schema.check(&instance).is_err(),
            "invalid/{name}: schema accepts it"
        );
        assert!(
            rust_check(&bytes).is_err(),
            "invalid/{name}: pushgate accepts it"
        );
    }
}

#[test]
fn readme_lists_every_example() {
    let readme = std::fs::read_to_string(schema_dir().join("examples/README.md")).unwrap();
    for kind in ["valid", "invalid"] {
        for (name, _) in examples(kind) {
            assert!(
                readme.contains(&format!("`{name}`")),
                "examples/README.md does not explain {kind}/{name}"
            );
        }
    }
}

/// Variations on one valid job, each checked against both sides, for rules
/// that the example files do not cover one by one.
#[test]
fn schema_and_parser_agree_on_variations() {
    let schema = Schema::load();
    let base = std::fs::read(schema_dir().join("examples/valid/all-options.json")).unwrap();
    let base: serde_json::Value = serde_json::from_slice(&base).unwrap();
    let apns = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";
    let edits: Vec<(&str, serde_json::Value)> = vec![
        ("/id", "x".repeat(64).into()),
        ("/id", "tab\there".into()),
        ("/id", "\u{85}".into()),
        ("/id", "".into()),
        ("/campaign", "c".repeat(128).into()),
        ("/campaign", "c".repeat(129).into()),
        ("/app", "a".repeat(64).into()),
        ("/app", "a".repeat(65).into()),
        ("/collapse_key", "k".repeat(64).into()),
        ("/collapse_key", "caf\u{e9}".into()),
        ("/collapse_key", "".into()),
        ("/data/gcmx", "1".into()),
        ("/data/from", "1".into()),
        ("/data/fromage", "1".into()),
        ("/data/message_type", "1".into()),
        ("/data/xgoogle", "1".into()),
        ("/ttl", serde_json::Value::Null),
        ("/ttl", 18446744073709551615u64.into()),
        ("/expires_at", "2027-01-15T08:00:00Z".into()),
        ("/notification/badge", 4294967295u64.into()),
        ("/notification/badge", 4294967296u64.into()),
        ("/throttle/per_seconds", 0.into()),
        ("/apns/headers/apns-collapse-id", "x".into()),
        ("/apns/headers/apns-", "x".into()),
        ("/apns/headers/Apns-Id", "x".into()),
        ("/apns/headers/apns-id", "caf\u{e9}".into()),
        ("/fcm/android", serde_json::Value::Null),
        ("/recipients/0/token", apns[..64].to_uppercase().into()),
        ("/recipients/0/token", format!("{apns}{apns}{apns}").into()),
        (
            "/recipients/0/token",
            format!("{apns}{apns}{apns}{}", &apns[..10]).into(),
        ),
        ("/recipients/0/token", serde_json::Value::Null),
        ("/recipients/0/platform", "fcm".into()),
        ("/recipients/1/token", "x".repeat(4096).into()),
        ("/recipients/1/token", "x".repeat(4097).into()),
        ("/recipients/1/token", "".into()),
        ("/recipients/1/token", "a.b".into()),
        ("/recipients/1/vars", serde_json::Value::Null),
        ("/recipients/1/id", serde_json::Value::Null),
    ];
    let mut accepted = 0;
    let total = edits.len();
    for (pointer, value) in edits {
        let mut job = base.clone();
        set(&mut job, pointer, value.clone());
        let by_schema = schema.check(&job).is_ok();
        accepted += usize::from(by_schema);
        let by_rust = rust_check(job.to_string().as_bytes());
        assert_eq!(
            by_schema,
            by_rust.is_ok(),
            "{pointer} = {value}: schema says {by_schema}, pushgate says {by_rust:?}"
        );
    }
    assert_eq!((accepted, total), (15, 38), "accepted / total variations");
}

#[test]
fn webpush_key_variations_agree() {
    let schema = Schema::load();
    let base = std::fs::read(schema_dir().join("examples/valid/webpush.json")).unwrap();
    let base: serde_json::Value = serde_json::from_slice(&base).unwrap();
    let p = base["recipients"][0]["subscription"]["keys"]["p256dh"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = base["recipients"][0]["subscription"]["keys"]["auth"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: Vec<(&str, String)> = vec![
        ("p256dh", format!("{p}=")),
        ("p256dh", format!("{p}==")),
        ("p256dh", format!("{}B", &p[..86])),
        ("p256dh", format!("A{}", &p[1..])),
        ("p256dh", p.replace('_', "/")),
        ("auth", format!("{a}=")),
        ("auth", format!("{a}==")),
        ("auth", format!("{a}===")),
        ("auth", format!("{}h", &a[..21])),
        ("auth", a[..21].to_owned()),
        ("endpoint", "https://h".to_owned()),
        ("endpoint", "https://h?x".to_owned()),
        ("endpoint", "https://".to_owned()),
        ("endpoint", "https:///path".to_owned()),
        ("endpoint", format!("https://h/{}", "x".repeat(2038))),
        ("endpoint", format!("https://h/{}", "x".repeat(2039))),
        ("endpoint", "https://h/\u{e9}".to_owned()),
    ];
    let mut accepted = 0;
    for (field, value) in cases {
        let mut job = base.clone();
        let pointer = if field == "endpoint" {
            "/recipients/0/subscription/endpoint".to_owned()
        } else {
            format!("/recipients/0/subscription/keys/{field}")
        };
        set(&mut job, &pointer, value.clone().into());
        let by_schema = schema.check(&job).is_ok();
        accepted += usize::from(by_schema);
        let by_rust = rust_check(job.to_string().as_bytes());
        assert_eq!(
            by_schema,
            by_rust.is_ok(),
            "{field} = {value}: schema says {by_schema}, pushgate says {by_rust:?}"
        );
    }
    assert_eq!(accepted, 7, "accepted key/endpoint variations");
}

/// The schema's enums are exactly the Rust enums.
#[test]
fn enums_match_the_rust_types() {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schema_dir().join("job.schema.json")).unwrap())
            .unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let push_types = names(&json["properties"]["push_type"]["enum"]);
    for name in &push_types {
        serde_json::from_value::<PushType>(name.as_str().into()).unwrap();
    }
    assert_eq!(push_types.len(), 11);
    let platforms = names(&json["$defs"]["recipient"]["properties"]["platform"]["enum"]);
    let rust: Vec<String> = Platform::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    assert_eq!(platforms, rust);
}

/// Sets the value at a JSON pointer, creating the last object key if needed.
fn set(doc: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = doc.pointer_mut(parent).unwrap();
    match target {
        serde_json::Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        serde_json::Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{pointer}: parent is not a container"),
    }
}
