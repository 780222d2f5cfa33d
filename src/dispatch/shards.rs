//! Dispatch shards: `n` threads, each running its own current-thread
//! runtime with its own provider connections (`D`), so that every
//! recipient of a job (of a part of a large job, `SPLIT_MIN`) is
//! delivered on one thread.
//!
//! Why: on a multi-thread runtime a job's delivery futures, the HTTP/2
//! connection tasks that answer them and the allocator's blocks hop between
//! threads on every request (cross-thread wake-ups, a contended lock in
//! `h2`, remote frees in mimalloc). A fan-out notification cost 10.5 µs of
//! CPU on two worker threads against 8.4 µs on one (docs/benchmarks.md,
//! round 16). Here a job (or each part of it) crosses threads twice (to
//! its shard and back), and everything per recipient stays on the shard.
//!
//! The broker side (consuming, decoding, publishing results, acks) stays
//! on the caller's runtime; the policy, throttles and metrics are shared by
//! all shards, and each has its own share of every queue's in-flight
//! permits ([`Permits`]).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::{Deliver, Dispatcher, JobRun, Permits, Settled, Step};
use crate::job::Platform;
use crate::provider::h2pool::PoolStats;
use crate::telemetry::PoolSource;

/// One shard: its runtime, its deliverer and the recipients it has in flight.
struct Shard<D> {
    handle: Handle,
    deliver: Arc<D>,
    load: AtomicUsize,
}

/// `n` dispatch threads; see the module docs. Stopped by [`Shards::stop`]
/// (or when dropped, without waiting).
pub struct Shards<D> {
    shards: Vec<Shard<D>>,
    /// Where the search for the least-loaded shard starts (ties rotate).
    next: AtomicUsize,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<D: Send + Sync + 'static> Shards<D> {
    /// Starts `n` (at least one) shard threads named `pushgate-shard-<i>`
    /// and builds each one's deliverer with `build(i)` inside that shard's
    /// runtime (tasks it spawns, such as connection drivers, run there).
    pub fn start<E>(
        n: usize,
        mut build: impl FnMut(usize) -> Result<D, E>,
    ) -> Result<Shards<D>, ShardError<E>> {
        let mut shards = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ShardError::Runtime)?;
            let handle = rt.handle().clone();
            let deliver = {
                let _inside = handle.enter();
                build(i).map_err(ShardError::Build)?
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("pushgate-shard-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .map_err(ShardError::Runtime)?;
            shards.push(Shard {
                handle,
                deliver: Arc::new(deliver),
                load: AtomicUsize::new(0),
            });
            stops.push(stop);
            threads.push(thread);
        }
        Ok(Shards {
            shards,
            next: AtomicUsize::new(0),
            stops: Mutex::new(stops),
            threads: Mutex::new(threads),
        })
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Shard 0's deliverer (there is always one: [`Shards::start`] starts
    /// at least one shard).
    pub fn first(&self) -> &Arc<D> {
        &self.shards[0].deliver
    }

    /// Every shard's deliverer, in shard order.
    pub fn delivers(&self) -> impl Iterator<Item = &Arc<D>> {
        self.shards.iter().map(|s| &s.deliver)
    }

    /// Runs `f` with each shard's deliverer on that shard and waits for all
    /// (e.g. closing its connections).
    pub async fn on_each<F, Fut>(&self, f: F)
    where
        F: Fn(Arc<D>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let tasks: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.handle.spawn(f(Arc::clone(&s.deliver))))
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a dispatch shard task failed");
            }
        }
    }

    /// Ends every shard thread (their remaining tasks are dropped) and
    /// waits for them.
    pub async fn stop(&self) {
        let stops = std::mem::take(&mut *self.stops.lock().unwrap_or_else(PoisonError::into_inner));
        drop(stops);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(JoinHandle::join)
                .filter(Result::is_err)
                .count()
        })
        .await;
        if !matches!(joined, Ok(0)) {
            tracing::warn!("a dispatch shard thread panicked");
        }
    }

    /// The index of the shard with the fewest recipients in flight (ties rotate).
    fn pick(&self) -> usize {
        let n = self.shards.len();
        let start = self.next.fetch_add(1, Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&k| self.shards[k].load.load(Relaxed))
            .unwrap_or(0)
    }
}

/// A job of at least this many recipients is split across the shards, in
/// contiguous parts of at least half of it each.
///
/// Why: a fan-out job's deliveries are CPU work (requests built, TLS,
/// answers read and settled: about 15 µs a recipient at 50 ms), and on one
/// shard its last request left about 5 ms after its first, so its results
/// waited that long past the provider's latency while the other core had
/// room (docs/benchmarks.md, round 20). Each part still keeps its
/// recipients on one thread. Smaller jobs stay whole: they are many, and
/// they spread over the shards by themselves.
const SPLIT_MIN: usize = 64;

impl<D: Deliver> Shards<D> {
    /// Dispatches `run` on the least-loaded shard (a large job in parts on
    /// several, [`SPLIT_MIN`]) with `base`'s retry policy, policy and
    /// shutdown flag, each shard's deliverer and its share of `permits`,
    /// then settles the whole job here.
    /// Dropping the future cancels the job's deliveries, as it would
    /// without shards.
    pub(super) async fn dispatch(
        &self,
        base: &Dispatcher<D>,
        run: &JobRun,
        permits: &Permits,
    ) -> Settled {
        let n = run.job.recipients.len();
        let parts = if n >= SPLIT_MIN { self.shards.len() } else { 1 };
        let first = Arc::new(super::first_of(run));
        let mut tasks = Vec::with_capacity(parts);
        for p in 0..parts {
            let part = p * n / parts..(p + 1) * n / parts;
            let k = self.pick();
            let shard = &self.shards[k];
            let local = Dispatcher {
                deliver: Arc::clone(&shard.deliver),
                retry: Arc::clone(&base.retry),
                policy: Arc::clone(&base.policy),
                shutdown: base.shutdown.clone(),
                shards: None,
            };
            let (job, permits, first) = (run.clone(), Arc::clone(permits.shard(k)), first.clone());
            let load = Load::add(&shard.load, part.len());
            let range = part.clone();
            let task = AbortOnDrop(
                shard
                    .handle
                    .spawn(async move { local.run_part(&job, &permits, range, &first).await }),
            );
            tasks.push((part, task, load));
        }
        // The first part's steps (a step per recipient, `None` outside the
        // part) take in the others': a whole job needs no second vector.
        let mut steps: Vec<Option<Step>> = Vec::new();
        for (part, mut task, load) in tasks {
            let joined = task.join().await;
            drop(load);
            let done = match joined {
                Ok(done) => done,
                // The job's panic, raised here as it would be without shards
                // (the job's handler dead-letters it).
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {
                    let mut none: Vec<Option<Step>> = (0..n).map(|_| None).collect();
                    base.stopped(run, part.clone(), &mut none);
                    none
                }
            };
            if steps.is_empty() {
                steps = done;
            } else {
                let theirs = steps.iter_mut().zip(done).skip(part.start).take(part.len());
                for (slot, step) in theirs {
                    *slot = step;
                }
            }
        }
        base.settle(run, steps)
    }
}

/// Recipients counted in a shard's load until dropped (also when the job's
/// future is dropped midway).
struct Load<'a> {
    load: &'a AtomicUsize,
    n: usize,
}

impl<'a> Load<'a> {
    fn add(load: &'a AtomicUsize, n: usize) -> Load<'a> {
        load.fetch_add(n, Relaxed);
        Load { load, n }
    }
}

impl Drop for Load<'_> {
    fn drop(&mut self) {
        self.load.fetch_sub(self.n, Relaxed);
    }
}

impl<D> Drop for Shards<D> {
    fn drop(&mut self) {
        // Dropping the senders ends each shard's `block_on`; not joined here.
        self.stops
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl<D: PoolSource + 'static> PoolSource for Shards<D> {
    fn pool_stats(&self) -> Vec<(Platform, PoolStats)> {
        self.delivers().flat_map(|d| d.pool_stats()).collect()
    }
}

/// A shard task that is aborted when its waiter goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the shards could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError<E> {
    #[error("cannot start a dispatch thread: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Build(E),
}

#[cfg(test)]
#[path = "shards_tests.rs"]
mod tests;
