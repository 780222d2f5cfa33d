//! `pushgate simulate`: run the APNs, FCM and Web Push simulators on loopback until Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::sim::apns::{self, ApnsEnvironment, ApnsSimOptions, ClientCerts};
use crate::sim::fcm::{self, FcmSimOptions};
use crate::sim::webpush::{self, WebPushSimOptions};
use crate::sim::{Latency, SimHandle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the APNs simulator listens.
    #[arg(long, default_value = "127.0.0.1:2197")]
    pub apns_addr: SocketAddr,
    /// Where the FCM simulator (send API and OAuth token endpoint) listens.
    #[arg(long, default_value = "127.0.0.1:4443")]
    pub fcm_addr: SocketAddr,
    /// Where the Web Push simulator listens (trusts the dev VAPID key).
    #[arg(long, default_value = webpush::DEFAULT_ADDR)]
    pub webpush_addr: SocketAddr,
    /// Web Push: speak only HTTP/1.1 (keep-alive), like a push service without HTTP/2.
    #[arg(long)]
    pub webpush_http1: bool,
    /// Answer delay: `20ms` (fixed) or `5ms..50ms` (uniform).
    #[arg(long, value_parser = Latency::parse, default_value = "0ms")]
    pub latency: Latency,
    /// Share of requests answered with a random 500/503 (0.0 - 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Send GOAWAY after this many requests on a connection.
    #[arg(long)]
    pub goaway_every: Option<u64>,
    /// APNs: requests per device token per second above which 429 TooManyRequests.
    #[arg(long)]
    pub device_rate: Option<u64>,
    /// APNs: SETTINGS_MAX_CONCURRENT_STREAMS after the first authenticated request.
    #[arg(long, default_value_t = 1000)]
    pub max_streams: u32,
    /// APNs: play the production environment (default: sandbox).
    #[arg(long)]
    pub production: bool,
    /// APNs: require a TLS client certificate (default: accepted, not required).
    #[arg(long)]
    pub require_client_cert: bool,
    /// FCM: lifetime of issued access tokens.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3599s")]
    pub token_lifetime: Duration,
    /// FCM: messages per project per minute before 429 QUOTA_EXCEEDED.
    #[arg(long)]
    pub quota_per_minute: Option<u64>,
    /// Benchmark mode: only check credentials, answer 200 to everything else
    /// (APNs: on a lean HTTP/2 loop of its own rather than h2's server).
    #[arg(long)]
    pub accept_all: bool,
}

pub async fn run(args: Args) -> ExitCode {
    if !(0.0..=1.0).contains(&args.error_rate) {
        eprintln!("pushgate: --error-rate must be between 0 and 1");
        return ExitCode::from(1);
    }
    let apns = match apns::start(args.apns_addr, apns_options(&args)).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "pushgate: cannot start the APNs simulator on {}: {e}",
                args.apns_addr
            );
            return ExitCode::from(1);
        }
    };
    let fcm = match fcm::start(args.fcm_addr, fcm_options(&args)).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "pushgate: cannot start the FCM simulator on {}: {e}",
                args.fcm_addr
            );
            apns.shutdown().await;
            return ExitCode::from(1);
        }
    };
    let web_opts = WebPushSimOptions {
        http1_only: args.webpush_http1,
        ..WebPushSimOptions::default()
    };
    let web = match webpush::start(args.webpush_addr, web_opts).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "pushgate: cannot start the Web Push simulator on {}: {e}",
                args.webpush_addr
            );
            apns.shutdown().await;
            fcm.shutdown().await;
            return ExitCode::from(1);
        }
    };
    println!("{}", config_snippet(&apns, &fcm));
    println!(
        "# Web Push on {} ({}): [apps.shop.webpush] vapid_key_file = \"dev/vapid-dev.p8\", ca_file = \"dev/ca.pem\",
# allowed_origins = [\"{}\"]; endpoints {}/gone/.. 410, /notfound/.. 404, /busy/.. 429,
# /down/.. 503, anything else 201 (keys of unregistered paths: pushgate::sim::webpush::dev_subscription).",
        web.base_url(),
        if args.webpush_http1 { "HTTP/1.1 only" } else { "HTTP/2" },
        web.addr(),
        web.base_url()
    );
    wait_for_stop().await;
    report("APNs", &apns);
    report("FCM", &fcm);
    eprintln!("Web Push simulator: statuses {:?}", web.statuses());
    apns.shutdown().await;
    fcm.shutdown().await;
    web.shutdown().await;
    ExitCode::SUCCESS
}

fn apns_options(args: &Args) -> ApnsSimOptions {
    ApnsSimOptions {
        environment: if args.production {
            ApnsEnvironment::Production
        } else {
            ApnsEnvironment::Sandbox
        },
        max_streams: args.max_streams,
        latency: args.latency,
        error_rate: args.error_rate,
        goaway_every: args.goaway_every,
        device_rate: args.device_rate,
        client_certs: if args.require_client_cert {
            ClientCerts::Required
        } else {
            ClientCerts::Optional
        },
        accept_all: args.accept_all,
        ..ApnsSimOptions::default()
    }
}

fn fcm_options(args: &Args) -> FcmSimOptions {
    FcmSimOptions {
        latency: args.latency,
        error_rate: args.error_rate,
        goaway_every: args.goaway_every,
        token_lifetime: args.token_lifetime,
        quota_per_minute: args.quota_per_minute,
        accept_all: args.accept_all,
        ..FcmSimOptions::default()
    }
}

fn config_snippet(apns: &SimHandle, fcm: &SimHandle) -> String {
    let (a, f) = (apns.addr, fcm.addr);
    format!(
        "# pushgate simulate: APNs on https://{a}, FCM + OAuth on https://{f} (TLS by the dev CA).
# Point pushgate at them (paths relative to the config directory), e.g. config/dev.toml:
[apps.shop.apns]
environment = \"sandbox\"
endpoint = \"https://{a}\"
topic = \"com.example.shop\"
team_id = \"DEVTEAM001\"
key_id = \"DEVKEY0001\"
key_file = \"dev/apns-dev.p8\"
ca_file = \"dev/ca.pem\"

[apps.shop.fcm]
service_account_file = \"dev/fcm-service-account.json\"
endpoint = \"https://{f}\"
token_uri = \"https://{f}/token\"
ca_file = \"dev/ca.pem\"

# Scripted APNs tokens (64 hex): dead.. 410, bad0.. 400, 70b1.. 400 DeviceTokenNotForTopic,
# 4290.. 429, 5030.. 503, 5031.. 503 once; FCM tokens: unregistered.., mismatch.., invalid..,
# quota.., unavailable.., flaky.., thirdparty..; everything else succeeds. Ctrl-C stops."
    )
}

fn report(name: &str, handle: &SimHandle) {
    let s = &handle.stats;
    eprintln!(
        "{name} simulator: {} connections, {} requests, statuses {:?}",
        s.connections(),
        s.requests(),
        s.statuses()
    );
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
