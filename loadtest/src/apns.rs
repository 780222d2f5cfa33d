//! `loadtest apns`: the APNs provider alone (pool, JWT, request building,
//! response parsing, no broker) against a running simulator, and
//! `loadtest jwt`: a dev provider token for h2load by hand.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use pushgate::job::Job;
use pushgate::provider::Providers;

use crate::cli::ApnsArgs;

/// Prints a bearer JWT for the dev APNs key (DEVTEAM001 / DEVKEY0001).
pub fn jwt(key: &Path) -> anyhow::Result<()> {
    println!("{}", crate::peers::sign_jwt(key)?);
    Ok(())
}

/// Sends `requests` notifications through the app's APNs provider with
/// `concurrency` workers; each job has `recipients` recipients.
pub async fn run(a: &ApnsArgs) -> anyhow::Result<()> {
    let cfg = pushgate::config::load(&a.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app_cfg = cfg.apps.get(&a.app).context("no such app in the config")?;
    let conns = app_cfg
        .apns
        .as_ref()
        .map_or(0, |x| x.connection.connections);
    let providers = Arc::new(Providers::new(app_cfg)?);
    let k = a.recipients.max(1);
    let recipients: Vec<serde_json::Value> = (0..k)
        .map(|r| serde_json::json!({"platform": "apns", "token": format!("{:064x}", r + 0xa0)}))
        .collect();
    let job: Arc<Job> = Arc::new(serde_json::from_value(serde_json::json!({
        "app": a.app,
        "recipients": recipients,
        "notification": {"title": crate::jobs::TITLE, "body": crate::jobs::BODY}
    }))?);
    for i in 0..conns.max(1) * 2 {
        send(&providers, &job, i % k).await;
    }
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (p, j, n, total) = (
            Arc::clone(&providers),
            Arc::clone(&job),
            Arc::clone(&next),
            a.requests,
        );
        tasks.spawn(async move {
            let mut ok = 0usize;
            loop {
                let i = n.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break ok;
                }
                ok += usize::from(send(&p, &j, i % k).await);
            }
        });
    }
    let mut delivered = 0;
    while let Some(r) = tasks.join_next().await {
        delivered += r.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "apns provider: {delivered}/{} delivered in {secs:.2} s = {:.0} notifications/s ({conns} connections, {} concurrent, {k} recipients per job)",
        a.requests,
        delivered as f64 / secs,
        a.concurrency
    );
    providers.shutdown().await;
    Ok(())
}

async fn send(p: &Providers, job: &Arc<Job>, recipient: usize) -> bool {
    p.send_recipient(job, recipient, 1).await.is_delivered()
}
