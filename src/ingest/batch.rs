//! Shares result and token-feedback messages between jobs of one app.
//!
//! The broker takes far fewer confirmed publishes per second than it
//! delivers and acks jobs (design.md: about 16,000/s on 2 cores), so a
//! message per single-recipient job would cap the gateway there. Job tasks
//! hand their entries to one [`ResultBatcher`] per broker session; its task
//! takes everything that is waiting (up to [`report::MAX_ENTRIES`] entries
//! per message), publishes one message per app and chunk, and tells each
//! job when the broker confirmed the messages that carry its entries.
//!
//! Batching is a group commit: nothing waits for a batch to fill, but at
//! most [`UNCONFIRMED`] batches wait for the broker's confirms at a time.
//! An idle gateway publishes each job's results at once; a busy one finds
//! the window full, and the jobs that finish meanwhile go out together in
//! the next message. Without the window a single-threaded runtime woke the
//! batcher after every job and sent 3.8 entries per message, each a
//! confirmed publish the broker paid for (docs/benchmarks.md). A batch
//! waits at most [`CONFIRM_STALL`] for a slot: a broker slow to confirm
//! delays the acks, not the results.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::client::{Confirm, Props, WirePublisher};
use super::IngestError;
use crate::report::{self, ResultEntry, TokenEntry, TokenFeedback};

/// Submissions waiting for the batcher task, at most.
const QUEUE: usize = 4096;

/// Batches published and not yet confirmed, at most. While the window is
/// full, finished jobs queue up and share the next batch; a batch carries
/// up to a full message, so the window caps nothing below
/// `UNCONFIRMED * MAX_ENTRIES` entries per confirm round trip.
const UNCONFIRMED: usize = 2;

/// How long a batch waits for a window slot before it goes out anyway.
/// Confirms come back within 1-3 ms under load here, so a saturated
/// gateway still batches as before (22 entries per message either way);
/// a stalled confirm (a slow disk write on the broker) no longer holds the
/// results behind it. Live at 2,000 jobs/s the gateway's p99 over the
/// broker's own round trip went from 3-68 ms (median of six about 30) to
/// 7-28 ms (docs/benchmarks.md, round 4).
const CONFIRM_STALL: std::time::Duration = std::time::Duration::from_millis(5);

/// What a job hands over: its entries and the tokens to report.
struct Submission {
    app: String,
    entries: Vec<ResultEntry>,
    tokens: Vec<TokenEntry>,
    /// `Ok(true)`: every message with these entries was confirmed;
    /// `Ok(false)`: the broker refused one (nack).
    done: oneshot::Sender<Result<bool, String>>,
}

/// The sending side, shared by the job tasks of one session.
#[derive(Clone)]
pub struct ResultBatcher {
    tx: mpsc::Sender<Submission>,
}

impl ResultBatcher {
    /// Starts the batcher task publishing on `publisher` (pushgate's own)
    /// to `exchange`. It ends when every [`ResultBatcher`] clone is dropped.
    pub fn start(publisher: Arc<WirePublisher>, exchange: String) -> ResultBatcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, publisher, exchange));
        ResultBatcher { tx }
    }

    /// Publishes `entries` and `tokens` of `app` (sharing messages with
    /// other jobs) and resolves once the broker confirmed them: `Ok(true)`
    /// when all were acked, `Ok(false)` when one was refused.
    pub async fn submit(
        &self,
        app: &str,
        entries: Vec<ResultEntry>,
        tokens: Vec<TokenEntry>,
    ) -> Result<bool, IngestError> {
        if entries.is_empty() && tokens.is_empty() {
            return Ok(true);
        }
        let (done, wait) = oneshot::channel();
        let submission = Submission {
            app: app.to_owned(),
            entries,
            tokens,
            done,
        };
        let gone = || IngestError::Results("the result publisher stopped".into());
        self.tx.send(submission).await.map_err(|_| gone())?;
        wait.await
            .map_err(|_| gone())?
            .map_err(IngestError::Results)
    }
}

async fn run(mut rx: mpsc::Receiver<Submission>, publisher: Arc<WirePublisher>, exchange: String) {
    let window = Arc::new(Semaphore::new(UNCONFIRMED));
    while let Some(first) = rx.recv().await {
        // A full window waits for a confirm, but not for a stalled one: the
        // broker confirms persistent messages after writing them to disk,
        // and a slow write must not hold finished jobs' results back (it
        // already routed the earlier ones). Past `CONFIRM_STALL` the batch
        // goes out without a slot, so a stall adds at most one batch per
        // `CONFIRM_STALL`; jobs stay bounded by the prefetch window, since
        // none is acked before its confirm.
        let slot = match tokio::time::timeout(CONFIRM_STALL, window.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Some(slot),
            // Never closed: the semaphore lives as long as this loop.
            Ok(Err(_)) => break,
            Err(_) => None,
        };
        let batch = gather(first, &mut rx);
        let (groups, waiters) = group(batch);
        match publish_groups(&publisher, &exchange, groups).await {
            Ok(confirms) => {
                tokio::spawn(async move {
                    confirmed(confirms, waiters).await;
                    drop(slot);
                });
            }
            Err(e) => {
                let why = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(why.clone()));
                }
            }
        }
    }
}

/// `first` and whatever else is already waiting, up to one full message.
fn gather(first: Submission, rx: &mut mpsc::Receiver<Submission>) -> Vec<Submission> {
    let mut n = first.entries.len();
    let mut batch = vec![first];
    while n < report::MAX_ENTRIES {
        let Ok(next) = rx.try_recv() else { break };
        n += next.entries.len();
        batch.push(next);
    }
    batch
}

/// Entries and tokens per app, and the submitters to answer.
type Groups = BTreeMap<String, (Vec<ResultEntry>, Vec<TokenEntry>)>;

fn group(batch: Vec<Submission>) -> (Groups, Vec<oneshot::Sender<Result<bool, String>>>) {
    let mut groups: Groups = BTreeMap::new();
    let mut waiters = Vec::with_capacity(batch.len());
    // What the batch holds in all: an app's vectors never need more.
    let entries_in_all = batch.iter().map(|s| s.entries.len()).sum();
    let tokens_in_all = batch.iter().map(|s| s.tokens.len()).sum();
    for s in batch {
        let (entries, tokens) = groups.entry(s.app).or_default();
        append(entries, s.entries, entries_in_all);
        append(tokens, s.tokens, tokens_in_all);
        waiters.push(s.done);
    }
    (groups, waiters)
}

/// `more` appended to `to`, which is sized once for `in_all` entries.
///
/// The first job of an app hands its vector over when it has that room
/// already: a fan-out job's entries are then not copied again (they are
/// large, and usually alone). Single-recipient jobs come a thousand to a
/// batch, and growing a one-entry vector to hold them all copied the
/// entries ten times over (about 700 instructions a job, docs/benchmarks.md
/// round 11).
fn append<T>(to: &mut Vec<T>, mut more: Vec<T>, in_all: usize) {
    if to.is_empty() && more.capacity() >= in_all {
        *to = more;
        return;
    }
    if to.capacity() == 0 {
        to.reserve_exact(in_all);
    }
    to.append(&mut more);
}

async fn publish_groups(
    publisher: &WirePublisher,
    exchange: &str,
    groups: Groups,
) -> Result<Vec<Confirm>, IngestError> {
    let mut confirms = Vec::new();
    for (app, (entries, tokens)) in groups {
        let key = report::results_key(&app);
        for msg in report::result_messages(&app, entries) {
            let body = report::json::encode(&msg);
            confirms.push(
                publisher
                    .publish(exchange, &key, &body, Props::default())
                    .await?,
            );
        }
        if !tokens.is_empty() {
            let key = report::token_key(&app);
            let body = serde_json::to_vec(&TokenFeedback { app, tokens })?;
            confirms.push(
                publisher
                    .publish(exchange, &key, &body, Props::default())
                    .await?,
            );
        }
    }
    Ok(confirms)
}

/// Waits for the broker's confirms and answers every submitter.
async fn confirmed(confirms: Vec<Confirm>, waiters: Vec<oneshot::Sender<Result<bool, String>>>) {
    let mut answer = Ok(true);
    for c in confirms {
        match c.wait().await {
            Ok(true) => {}
            Ok(false) => answer = answer.map(|_| false),
            Err(e) => answer = Err(e.to_string()),
        }
    }
    for w in waiters {
        let _ = w.send(answer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Recipient;
    use crate::outcome::Code;
    use crate::report::EntryContext;

    fn entries(job: &str, n: usize) -> Vec<ResultEntry> {
        let r: Recipient = serde_json::from_str(r#"{"platform":"fcm","token":"t"}"#).unwrap();
        let ctx = EntryContext {
            job_id: job,
            campaign: None,
            attempt: 1,
            ts: "2026-01-01T00:00:00Z",
        };
        (0..n)
            .map(|_| ResultEntry::local_failure(&ctx, &r, Code::NotRegistered, "x"))
            .collect()
    }

    fn submission(app: &str, job: &str, n: usize) -> Submission {
        let (done, _) = oneshot::channel();
        let entries = entries(job, n);
        let tokens = entries.iter().filter_map(TokenEntry::from_entry).collect();
        Submission {
            app: app.into(),
            entries,
            tokens,
            done,
        }
    }

    #[tokio::test]
    async fn waiting_jobs_share_messages_per_app() {
        let (tx, mut rx) = mpsc::channel(16);
        for (app, job) in [("a", "j1"), ("b", "j2"), ("a", "j3")] {
            tx.send(submission(app, job, 2)).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let (groups, waiters) = group(gather(first, &mut rx));
        assert_eq!(waiters.len(), 3, "every job is answered");
        let a = &groups["a"];
        let jobs: Vec<&str> = a.0.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(jobs, ["j1", "j1", "j3", "j3"]);
        assert_eq!(a.1.len(), 4, "token feedback batched too");
        assert_eq!(groups["b"].0.len(), 2);
    }

    #[test]
    fn an_app_vector_is_sized_once_and_a_whole_job_is_moved() {
        let mut to = Vec::new();
        for i in 0..100 {
            append(&mut to, vec![i], 100);
            assert_eq!(to.capacity(), 100, "never regrown");
        }
        assert_eq!(to, (0..100).collect::<Vec<_>>());
        let fan_out: Vec<u32> = (0..500).collect();
        let at = fan_out.as_ptr();
        let mut to = Vec::new();
        append(&mut to, fan_out, 500);
        assert_eq!(to.as_ptr(), at, "not copied");
        append(&mut to, Vec::new(), 500);
        assert_eq!(to.len(), 500);
    }

    #[tokio::test]
    async fn a_batch_stops_at_one_full_message() {
        let (tx, mut rx) = mpsc::channel(16);
        for j in 0..4 {
            tx.send(submission("a", &format!("j{j}"), 400))
                .await
                .unwrap();
        }
        let first = rx.recv().await.unwrap();
        let batch = gather(first, &mut rx);
        assert_eq!(batch.len(), 3, "400 + 400 + 400 reaches 1,000");
        let rest = rx.recv().await.unwrap();
        assert_eq!(rest.entries[0].job_id, "j3");
    }
}
