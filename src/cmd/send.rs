//! `pushgate send`: one notification from the terminal, its outcome and code printed.
//!
//! Exit status: 0 delivered, 2 not delivered (the provider refused it, or no
//! answer came), 1 usage or config error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::config::Config;
use crate::job::{DeviceToken, Job, Notification, Platform, Priority, Recipient};
use crate::outcome::{Outcome, Status};
use crate::provider::{new_notification_id, Providers};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pushgate config file.
    #[arg(long, env = "PUSHGATE_CONFIG", default_value = "config/pushgate.toml")]
    pub config: PathBuf,
    /// The app (from the config) whose credentials are used.
    #[arg(long)]
    pub app: String,
    /// Where to send: apns or fcm.
    #[arg(long, value_parser = parse_platform)]
    pub platform: Platform,
    /// The device token.
    #[arg(long)]
    pub token: String,
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long)]
    pub body: Option<String>,
    /// Custom data, `key=value`; repeatable.
    #[arg(long = "data", value_parser = parse_kv)]
    pub data: Vec<(String, String)>,
    /// APNs apns-collapse-id / FCM collapse_key.
    #[arg(long)]
    pub collapse_key: Option<String>,
    /// high or normal.
    #[arg(long, value_parser = parse_priority, default_value = "high")]
    pub priority: Priority,
    /// Seconds the provider may keep the notification (0: now or never).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Print the result entry of the result message as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    match s {
        "apns" => Ok(Platform::Apns),
        "fcm" => Ok(Platform::Fcm),
        _ => Err(format!("{s:?}: expected apns or fcm")),
    }
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    match s {
        "high" => Ok(Priority::High),
        "normal" => Ok(Priority::Normal),
        _ => Err(format!("{s:?}: expected high or normal")),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?}: expected key=value"))
}

/// The one-recipient job the arguments describe.
pub fn job_of(args: &Args) -> Job {
    Job {
        id: Some(format!("send-{}", new_notification_id())),
        app: args.app.clone(),
        campaign: None,
        recipients: vec![Recipient {
            platform: args.platform,
            token: Some(DeviceToken(args.token.clone())),
            subscription: None,
            id: None,
            vars: BTreeMap::new(),
        }],
        notification: Notification {
            title: args.title.clone(),
            body: args.body.clone(),
            ..Notification::default()
        },
        data: args.data.iter().cloned().collect(),
        collapse_key: args.collapse_key.clone(),
        priority: args.priority,
        ttl: args.ttl,
        expires_at: None,
        push_type: Default::default(),
        mutable_content: false,
        content_available: false,
        throttle: None,
        apns: None,
        fcm: None,
        memo: Default::default(),
    }
}

pub async fn run(args: Args) -> ExitCode {
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pushgate send: {e}");
            return ExitCode::from(1);
        }
    };
    let providers = match providers_for(&config, &args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pushgate send: {e}");
            return ExitCode::from(1);
        }
    };
    let job = job_of(&args);
    let outcome = providers.send_recipient(&job, 0, 1).await;
    providers.shutdown().await;
    if args.json {
        println!("{}", result_entry(&job, &outcome));
    } else {
        println!("{}", human(args.platform, &outcome));
    }
    if outcome.is_delivered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn providers_for(config: &Config, args: &Args) -> Result<Providers, String> {
    let app = config.apps.get(&args.app).ok_or_else(|| {
        let known: Vec<&str> = config.apps.keys().map(String::as_str).collect();
        format!(
            "unknown app {:?} (the config has: {})",
            args.app,
            known.join(", ")
        )
    })?;
    let configured = match args.platform {
        Platform::Apns => app.apns.is_some(),
        Platform::Fcm => app.fcm.is_some(),
        Platform::Webpush => false,
    };
    if !configured {
        return Err(format!(
            "app {:?} has no {} credentials in the config",
            args.app, args.platform
        ));
    }
    Providers::new(app).map_err(|e| e.to_string())
}

/// One entry of the result message (design.md "Result message").
pub fn result_entry(job: &Job, o: &Outcome) -> serde_json::Value {
    let r = &job.recipients[0];
    let status = if o.is_delivered() {
        Status::Delivered
    } else {
        Status::Failed
    };
    let mut v = serde_json::json!({
        "job_id": job.id,
        "platform": r.platform,
        "token": r.token,
        "status": status.as_str(),
        "attempt": 1,
        "latency_ms": o.latency.as_millis() as u64,
        "ts": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    let obj = v.as_object_mut();
    if let Some(obj) = obj {
        if let Some(code) = o.code {
            obj.insert("code".into(), code.as_str().into());
            obj.insert("label".into(), code.label(r.platform).into());
            obj.insert("class".into(), code.class().as_str().into());
        }
        for (k, val) in [
            (
                "provider_status",
                o.provider_status.map(serde_json::Value::from),
            ),
            ("provider_reason", o.provider_reason.clone().map(Into::into)),
            ("provider_id", o.provider_id.clone().map(Into::into)),
        ] {
            if let Some(val) = val {
                obj.insert(k.into(), val);
            }
        }
    }
    v
}

fn human(platform: Platform, o: &Outcome) -> String {
    let provider = match (o.provider_status, &o.provider_reason) {
        (Some(s), Some(r)) => format!("provider said {s} {r}"),
        (Some(s), None) => format!("provider said {s}"),
        (None, Some(r)) => format!("not sent: {r}"),
        (None, None) => "no answer".to_owned(),
    };
    let ms = o.latency.as_millis();
    match o.code {
        None => format!(
            "delivered ({provider}, id {}, {ms} ms)",
            o.provider_id.as_deref().unwrap_or("-")
        ),
        Some(code) => format!(
            "failed: {code} \"{}\" (class {}; {provider}, {ms} ms)",
            code.label(platform),
            code.class().as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Code;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec![
            "x",
            "--config",
            "c.toml",
            "--app",
            "shop",
            "--platform",
            "fcm",
            "--token",
            "tok",
        ];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().args
    }

    #[test]
    fn arguments_make_a_one_recipient_job() {
        let a = args(&[
            "--title",
            "T",
            "--data",
            "k=v",
            "--data",
            "a=b=c",
            "--priority",
            "normal",
            "--ttl",
            "60",
            "--collapse-key",
            "c",
        ]);
        let j = job_of(&a);
        assert_eq!(j.recipients.len(), 1);
        assert_eq!(j.recipients[0].token.as_ref().unwrap().as_str(), "tok");
        assert_eq!(j.data.get("a").map(String::as_str), Some("b=c"));
        assert_eq!((j.priority, j.ttl), (Priority::Normal, Some(60)));
        assert!(
            Cli::try_parse_from(["x", "--app", "a", "--platform", "webpush", "--token", "t"])
                .is_err()
        );
        assert!(Cli::try_parse_from([
            "x",
            "--app",
            "a",
            "--platform",
            "fcm",
            "--token",
            "t",
            "--data",
            "nokv"
        ])
        .is_err());
    }

    #[test]
    fn result_entry_has_code_label_and_class() {
        let j = job_of(&args(&[]));
        let mut o = Outcome::local(Code::PayloadTooLarge, "too big");
        o.provider_status = Some(400);
        let v = result_entry(&j, &o);
        assert_eq!(v["status"], "failed");
        assert_eq!(v["code"], "PayloadTooLarge");
        assert_eq!(v["label"], "Payload Too Large");
        assert_eq!(v["class"], "payload");
        assert_eq!(v["provider_status"], 400);
        assert_eq!(v["token"], "tok");
        let v = result_entry(
            &j,
            &Outcome::delivered(200, Some("projects/p/messages/1".into())),
        );
        assert_eq!(v["status"], "delivered");
        assert!(v.get("code").is_none());
        assert_eq!(v["provider_id"], "projects/p/messages/1");
    }
}
