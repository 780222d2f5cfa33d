//! pushgate load test tools. Today: `apns` measures the APNs provider (pool,
//! JWT, request building, response parsing) against a running APNs simulator,
//! and `jwt` prints a dev JWT so h2load can hit the same simulator as a
//! baseline (docs/benchmarks.md). The broker-to-result load test of the
//! performance issue comes next.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use pushgate::job::Job;
use pushgate::provider::apns::auth::Signer;
use pushgate::provider::{new_notification_id, Message, Providers, Rendered};

fn usage() -> ! {
    eprintln!(
        "usage:\n  loadtest apns [--config F] [--app A] [--requests N] [--concurrency C]\n  loadtest jwt [--key F]"
    );
    std::process::exit(1)
}

fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("apns") => apns(&args),
        Some("jwt") => jwt(&args),
        _ => usage(),
    }
}

/// Prints a bearer JWT for the dev APNs key (DEVTEAM001 / DEVKEY0001).
fn jwt(args: &[String]) {
    let key = flag(args, "--key", "config/dev/apns-dev.p8");
    let pem = std::fs::read(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let der = pushgate::config::secrets::apns_p8(&pem).unwrap_or_else(|e| panic!("{key}: {e}"));
    let signer = Signer::new("DEVTEAM001", "DEVKEY0001", &der).expect("dev key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("{}", signer.sign(now).expect("sign"));
}

fn apns(args: &[String]) {
    let config = PathBuf::from(flag(args, "--config", "config/dev.toml"));
    let app = flag(args, "--app", "shop");
    let requests: usize = flag(args, "--requests", "200000")
        .parse()
        .unwrap_or_else(|_| usage());
    let concurrency: usize = flag(args, "--concurrency", "400")
        .parse()
        .unwrap_or_else(|_| usage());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let cfg = pushgate::config::load(&config).unwrap_or_else(|e| panic!("{e}"));
        let app_cfg = cfg.apps.get(&app).unwrap_or_else(|| panic!("no app {app}"));
        let conns = app_cfg.apns.as_ref().map(|a| a.connection.connections).unwrap_or(0);
        let providers = Arc::new(Providers::new(app_cfg).expect("providers"));
        let job: Arc<Job> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "app": app,
                "recipients": [{"platform": "apns", "token": "a".repeat(64)}],
                "notification": {"title": "Hello", "body": "Benchmark body text"}
            }))
            .expect("job"),
        );
        // Warm up: connections open and raise their stream limit.
        for _ in 0..conns.max(1) * 2 {
            send(&providers, &job).await;
        }
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (p, j, n) = (Arc::clone(&providers), Arc::clone(&job), Arc::clone(&next));
            tasks.spawn(async move {
                let mut ok = 0usize;
                while n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    ok += usize::from(send(&p, &j).await);
                }
                ok
            });
        }
        let mut delivered = 0;
        while let Some(r) = tasks.join_next().await {
            delivered += r.unwrap_or(0);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "apns provider: {delivered}/{requests} delivered in {secs:.2} s = {:.0} notifications/s ({conns} connections, {concurrency} concurrent)",
            delivered as f64 / secs
        );
        providers.shutdown().await;
    });
}

async fn send(p: &Providers, job: &Arc<Job>) -> bool {
    let rendered = Rendered::plain(&job.notification);
    let id = new_notification_id();
    let msg = Message {
        job,
        recipient: 0,
        rendered: &rendered,
        id: &id,
        attempt: 1,
    };
    p.send(&msg).await.is_delivered()
}
