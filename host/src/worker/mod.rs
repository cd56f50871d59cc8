//! `wasmpipe worker`: pulls chunks from the JetStream work queue, runs
//! them with the same [`Executor`] as `run` and `serve`'s embedded
//! workers, and commits each chunk's outputs to
//! PostgreSQL in one transaction before acknowledging it.
//!
//! Failure handling, by where a worker can be cut off:
//! - **Before the commit** (killed, crashed, partitioned): it stops
//!   reporting progress, and JetStream hands the chunk to another worker
//!   after `ack_wait`. Nothing was stored.
//! - **Between the commit and the acknowledgement**: the chunk comes back;
//!   its commit finds the range done and stores nothing; it is acknowledged.
//! - **PostgreSQL is away**: the worker keeps the chunk (reporting
//!   progress, so it is not handed on) and retries the commit with backoff.
//! - **A chunk keeps killing its workers** (started more than
//!   `max_attempts` times, counted in PostgreSQL): it is split in two, the
//!   halves published as new chunks and the original acknowledged, without
//!   running it again. A single event that still kills its workers becomes
//!   a dead letter.
//!
//! Each slot is one [`Executor`] on one chunk at a time. With `--watch` the
//! stages are hot-reloaded between chunks; with `--metrics` the worker
//! serves Prometheus counters of what it did.

use crate::exec::ChunkId;
use crate::exec::chunk::halve;
use crate::exec::stored;
use crate::exec::window::Fold;
use crate::exec::{ChunkReport, DeadLetter, Executor, LiveStages, Pipeline, Policy};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::queue::jetstream::{self, ChunkQueue};
use crate::serve::Settings;
use crate::store::postgres::{Committed, JobInfo, JobState, PgStore};
use crate::store::{Combine, ErrorKind, now_ms};
use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// A job still `pending` this long after it arrived was never accepted
/// (its ingest node died or failed mid-publish): its chunks are dropped.
const ABANDON_AFTER: Duration = Duration::from_secs(60);
/// How soon a chunk of a job still `pending` is delivered again.
const PENDING_RETRY: Duration = Duration::from_millis(500);
/// How often a worker looks for jobs left `pending` by a dead ingest node.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Longest pause between attempts to reach PostgreSQL.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Shared {
    store: PgStore,
    queue: ChunkQueue,
    settings: Settings,
    pipeline: String,
    reduces: bool,
    /// A windowed reduce's book: its windows span jobs and workers.
    windows: Option<crate::exec::window::WindowBook>,
    max_attempts: i64,
    host: String,
    /// How often a busy slot reports progress: a third of `ack_wait`.
    heartbeat: Duration,
    /// `host/pid`, recorded with each chunk it commits.
    name: String,
    stopping: AtomicBool,
    metrics: Metrics,
    /// The stages to run: replaced whole by hot reload (`--watch`).
    live: Arc<LiveStages>,
}

/// Runs `pipeline`'s workers until `shutdown` resolves; each finishes the
/// chunk it holds.
pub async fn run(
    manifest: &Manifest,
    pipeline: Pipeline,
    metrics_listen: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Option<std::net::SocketAddr>) -> Result<()>,
) -> Result<()> {
    if !manifest.clustered() {
        bail!(
            "`wasmpipe worker` takes its work from NATS, and {} has no `[queue] kind = \"nats\"`; hint: add `[queue]` and `[store]` tables (docs/deploy.md), or run `wasmpipe serve` alone",
            manifest.path.display()
        );
    }
    let queue_section = manifest.doc.queue.clone().unwrap_or_default();
    let serve = manifest.doc.serve.clone().unwrap_or_default();
    let (store, queue) = crate::cluster::connect(manifest).await?;
    let consumer = queue.consumer().await?;
    // The consumer is shared and outlives this manifest: its own `ack_wait`
    // is what JetStream enforces, so heartbeats follow it.
    let ack_wait = consumer.cached_info().config.ack_wait;
    if ack_wait != queue_section.ack_wait.0 {
        tracing::warn!(
            "the JetStream consumer waits {ack_wait:?} for acknowledgements, not the manifest's {:?}: it was created with other settings; delete it (`nats consumer rm`) to apply the manifest's",
            queue_section.ack_wait.0
        );
    }
    let host = crate::exec::host_name();
    let shared = Arc::new(Shared {
        store,
        settings: Settings::new(manifest, &serve),
        pipeline: pipeline.name.clone(),
        reduces: pipeline.reduces() && pipeline.window_book().is_none(),
        windows: pipeline.window_book(),
        max_attempts: i64::from(queue_section.max_attempts.get()),
        name: format!("{host}/{}", std::process::id()),
        host,
        queue,
        heartbeat: (ack_wait / 3).max(Duration::from_millis(10)),
        stopping: AtomicBool::new(false),
        live: pipeline.live(),
        metrics: Metrics::new(
            pipeline
                .stages
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
        ),
    });
    let mut slots = Vec::new();
    let policy = Policy {
        keep_reduce_input: shared.settings.store_reduce_input,
        ..pipeline.policy
    };
    for _ in 0..pipeline.workers.max(1) {
        let mut exec = Executor::new(pipeline.runtime.clone(), shared.live.clone(), policy);
        exec.warm_up()?;
        slots.push(tokio::spawn(slot(shared.clone(), consumer.clone(), exec)));
    }
    tracing::info!(
        "worker {} pulling chunks of `{}` with {} slots",
        shared.name,
        shared.pipeline,
        slots.len()
    );
    let sweeper = tokio::spawn(sweep(shared.clone()));
    let ticker = tokio::spawn(tick_windows(shared.clone()));
    let metrics_addr = match metrics_listen {
        Some(addr) => Some(serve_metrics(shared.clone(), addr).await?),
        None => None,
    };
    ready(metrics_addr)?;
    shutdown.await;
    tracing::info!("stopping: finishing the chunks in hand");
    shared.stopping.store(true, Relaxed);
    for s in slots {
        s.await.context("a worker slot panicked")?;
    }
    sweeper.abort();
    ticker.abort();
    Ok(())
}

/// One slot: one executor, one chunk at a time.
async fn slot(
    shared: Arc<Shared>,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    mut exec: Executor,
) {
    let mut jobs: HashMap<i64, Arc<JobInfo>> = HashMap::new();
    while !shared.stopping.load(Relaxed) {
        let fetched = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot pull from JetStream: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let msg = match batch.next().await {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!("cannot pull from JetStream: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let msg = Arc::new(msg);
        // Report progress while the chunk is in hand, so that a slow
        // chunk is not mistaken for a dead worker.
        let beat = {
            let msg = msg.clone();
            let every = shared.heartbeat;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            })
        };
        let handled = handle(&shared, &mut exec, &mut jobs, &msg).await;
        beat.abort();
        match handled {
            Ok(Handled::Later) => {
                // Its job is still being accepted: give the chunk back for
                // a little while and take other jobs' chunks meanwhile.
                let _ = msg.ack_with(AckKind::Nak(Some(PENDING_RETRY))).await;
            }
            Ok(Handled::Done) => {
                if let Err(e) = msg.double_ack().await {
                    // It comes back, finds its range done and is acked then.
                    tracing::warn!(
                        "cannot acknowledge a chunk: {e}; it will be redelivered and found done"
                    );
                }
            }
            Err(e) => {
                shared.metrics.chunk_errors.fetch_add(1, Relaxed);
                tracing::error!("{e:#}; the chunk will be delivered again");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(shared.settings.retries.backoff)))
                    .await;
            }
        }
        if jobs.len() > 1000 {
            jobs.clear();
        }
    }
}

/// What became of a message that did not fail.
enum Handled {
    /// Stored, dropped or split: it may be acknowledged.
    Done,
    /// Its job is still `pending`: to be delivered again later.
    Later,
}

/// Processes one message.
async fn handle(
    shared: &Shared,
    exec: &mut Executor,
    jobs: &mut HashMap<i64, Arc<JobInfo>>,
    msg: &Message,
) -> Result<Handled> {
    let range = match jetstream::chunk_of(msg, shared.settings.chunk_size) {
        Ok(r) => r,
        Err(e) => {
            // Not a wasmpipe chunk: nothing of ours is lost by dropping it.
            tracing::error!(
                "dropping a message on {} that is not a wasmpipe chunk: {e:#}",
                msg.subject
            );
            return Ok(Handled::Done);
        }
    };
    let job = match job_info(shared, jobs, range.job).await? {
        Lookup::Ready(job) => job,
        Lookup::Drop => return Ok(Handled::Done),
        Lookup::Later => return Ok(Handled::Later),
    };
    if job.pipeline != shared.pipeline {
        bail!(
            "job {} belongs to pipeline `{}`, not `{}`: this stream carries another pipeline's chunks; hint: give each pipeline its own `[queue] stream`",
            range.job,
            job.pipeline,
            shared.pipeline
        );
    }
    let started = retry_store(shared, "count an attempt", || {
        shared.store.start_attempt(range)
    })
    .await?;
    let done = if i64::from(started) > shared.max_attempts {
        match isolate(shared, range, &msg.payload, i64::from(started)).await {
            Ok(Some(out)) => commit(shared, exec, &job, range, &out).await,
            // Split: its pieces are in the stream, and the chunk is done.
            Ok(None) => Ok(Committed::Stored(false)),
            Err(e) => Err(e),
        }
    } else {
        run_and_commit(shared, exec, &job, range, &msg.payload).await
    };
    match done {
        // Redelivered after an earlier commit: its attempt row is left over.
        Ok(Committed::Duplicate) => {
            let _ = shared.store.forget_attempts(range).await;
            Ok(Handled::Done)
        }
        Ok(_) => Ok(Handled::Done),
        Err(e) => {
            // The worker lived to report the failure, so this attempt is
            // not one of those that count towards `max_attempts`.
            let _ = shared.store.end_attempt(range).await;
            Err(e)
        }
    }
}

/// Runs a chunk through the stages and commits what came out.
async fn run_and_commit(
    shared: &Shared,
    exec: &mut Executor,
    job: &JobInfo,
    range: ChunkId,
    payload: &[u8],
) -> Result<Committed> {
    let seq = range.seq;
    let chunk = stored::to_chunk(payload.to_vec(), seq, range.first_index);
    if chunk.len() as u64 != range.events {
        bail!(
            "job {} chunk at event {} holds {} events, its header says {}",
            range.job,
            range.first_index,
            chunk.len(),
            range.events
        );
    }
    let ctx = stored::chunk_context(range.job, &shared.host, &job.context, &job.pipeline, seq)?;
    let started = std::time::Instant::now();
    let m = &shared.metrics;
    let out = tokio::task::block_in_place(|| exec.run(&chunk, &ctx))
        .with_context(|| format!("job {} chunk at event {}", range.job, range.first_index))?;
    m.record(&out);
    let committed = commit(shared, exec, job, range, &out).await?;
    if let Committed::Stored(_) = committed {
        m.chunk_latency.observe(started.elapsed());
        m.chunks_done.fetch_add(1, Relaxed);
        m.events_stored.fetch_add(out.outputs(), Relaxed);
        m.dead_letters.fetch_add(out.dead.len() as u64, Relaxed);
    }
    Ok(committed)
}

/// Serves `GET /metrics` (Prometheus) and `GET /healthz` on `addr`.
async fn serve_metrics(
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
) -> Result<std::net::SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let local = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let s = shared.clone();
                async move {
                    let backlog = s.store.backlog(&s.pipeline).await.unwrap_or(0);
                    let queued = s.queue.depth().await.unwrap_or(0);
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        s.metrics.render(&s.pipeline, backlog, queued),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics endpoint failed: {e}");
        }
    });
    Ok(local)
}

/// What to do with a chunk, by the state of its job.
enum Lookup {
    /// Accepted: run it.
    Ready(Arc<JobInfo>),
    /// Abandoned (never accepted): drop it.
    Drop,
    /// Still `pending` (its ingest node is publishing, or died doing so):
    /// not now. A slot never waits for one job while others' chunks
    /// queue behind it; the job is abandoned once it is older than
    /// [`ABANDON_AFTER`], here or by the sweep in [`run`].
    Later,
}

/// The job of a chunk. A job unknown to this database is an error: the
/// chunk is given back.
async fn job_info(
    shared: &Shared,
    jobs: &mut HashMap<i64, Arc<JobInfo>>,
    id: i64,
) -> Result<Lookup> {
    if let Some(j) = jobs.get(&id) {
        return Ok(Lookup::Ready(j.clone()));
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match shared.store.job_info(id).await {
            Ok(Some(j)) if j.state == JobState::Accepted => {
                let j = Arc::new(j);
                jobs.insert(id, j.clone());
                return Ok(Lookup::Ready(j));
            }
            Ok(Some(j)) if j.state == JobState::Abandoned => {
                tracing::info!("dropping a chunk of job {id}, which was never accepted");
                return Ok(Lookup::Drop);
            }
            Ok(Some(j)) => {
                let cutoff = now_ms() - ABANDON_AFTER.as_millis() as i64;
                if j.received_at < cutoff && shared.store.abandon_job(id, Some(cutoff)).await? {
                    tracing::warn!(
                        "job {id} was never accepted by its ingest node; its chunks are dropped"
                    );
                    return Ok(Lookup::Drop);
                }
                return Ok(Lookup::Later);
            }
            Ok(None) => {
                // Not dropped: it is accepted work, and the likely cause
                // is a worker pointed at the wrong database.
                bail!(
                    "job {id} is not in this database; hint: do the ingest nodes and workers share one `[store] url`?"
                );
            }
            Err(e) if shared.stopping.load(Relaxed) || !ErrorKind::of(&e).retryable() => {
                return Err(e);
            }
            Err(e) => tracing::warn!("cannot read job {id}: {e:#}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Closes the windows of a quiet stream: once a second, a tick advances
/// the stored clock if no events came for the window's `idle` time. Every
/// worker ticks; the clock's row lock makes them take turns, and a tick
/// after another's finds nothing more to do.
async fn tick_windows(shared: Arc<Shared>) {
    let Some(book) = &shared.windows else { return };
    while !shared.stopping.load(Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match shared
            .store
            .tick_windows(&shared.pipeline, book, now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!("idle stream: {n} windows closed"),
            Err(e) => tracing::warn!("cannot advance the window clock: {e:#}"),
        }
    }
}

/// Abandons, every [`SWEEP_EVERY`], the jobs still `pending` after
/// [`ABANDON_AFTER`]: those whose ingest node died before any chunk
/// reached the stream have no chunk to find them, and would otherwise
/// stay `pending` for ever.
async fn sweep(shared: Arc<Shared>) {
    while !shared.stopping.load(Relaxed) {
        let cutoff = now_ms() - ABANDON_AFTER.as_millis() as i64;
        match shared.store.abandon_stale(&shared.pipeline, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "abandoned {n} jobs that their ingest node never accepted (pending for over {ABANDON_AFTER:?})"
            ),
            Err(e) => tracing::debug!("cannot sweep pending jobs: {e:#}"),
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// Retries `op` while PostgreSQL is away (until shutdown).
async fn retry_store<T, F: Future<Output = Result<T>>>(
    shared: &Shared,
    what: &str,
    mut op: impl FnMut() -> F,
) -> Result<T> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if shared.stopping.load(Relaxed) || !ErrorKind::of(&e).retryable() => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!("cannot {what}: {e:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Commits, retrying while PostgreSQL is away.
async fn commit(
    shared: &Shared,
    exec: &mut Executor,
    job: &JobInfo,
    range: ChunkId,
    out: &ChunkReport,
) -> Result<Committed> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let committed = match &shared.windows {
            // A windowed reduce has no job result: its windows span jobs.
            Some(book) => {
                let fold = Some((book, &mut *exec as &mut (dyn Fold + Send)));
                shared
                    .store
                    .complete_chunk(range, job, out, &shared.name, None, fold)
                    .await
            }
            None => {
                let mut combine = |partials: Vec<Vec<u8>>| exec.combine(partials);
                let combine = shared.reduces.then_some(&mut combine as &mut Combine<'_>);
                shared
                    .store
                    .complete_chunk(range, job, out, &shared.name, combine, None)
                    .await
            }
        };
        match committed {
            Ok(Committed::Stored(finished)) => {
                if finished {
                    tracing::info!("job {} finished", range.job);
                }
                return Ok(Committed::Stored(finished));
            }
            Ok(Committed::Duplicate) => {
                tracing::debug!(
                    "job {} events {}+{} were already stored",
                    range.job,
                    range.first_index,
                    range.events
                );
                return Ok(Committed::Duplicate);
            }
            Ok(Committed::NotAccepted) => {
                bail!("job {} is not accepted", range.job);
            }
            Err(e) if shared.stopping.load(Relaxed) => {
                return Err(e.context("stopping before the chunk could be stored"));
            }
            Err(e) if !ErrorKind::of(&e).retryable() => {
                return Err(e.context(format!(
                    "cannot store job {} events {}+{}",
                    range.job, range.first_index, range.events
                )));
            }
            Err(e) => {
                tracing::warn!(
                    "cannot store job {} events {}+{}: {e:#}; retrying in {backoff:?}",
                    range.job,
                    range.first_index,
                    range.events
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A chunk started too often: split it without running it (`None`), or,
/// for a single event, make it a dead letter (the outcome to commit).
async fn isolate(
    shared: &Shared,
    range: ChunkId,
    data: &[u8],
    started: i64,
) -> Result<Option<ChunkReport>> {
    if let Some(halves) = halve(data) {
        for half in &halves {
            shared
                .queue
                .publish(range.piece(half), bytes::Bytes::copy_from_slice(half.data))
                .await
                .map_err(|e| anyhow::anyhow!("cannot publish a piece of a split chunk: {e}"))?;
        }
        tracing::warn!(
            "job {} events {}+{} were started {} and never finished; split in two to isolate the event that stops workers",
            range.job,
            range.first_index,
            range.events,
            times(started - 1)
        );
        if let Err(e) = shared.store.forget_attempts(range).await {
            tracing::debug!("cannot clear the attempts of a split chunk: {e:#}");
        }
        return Ok(None);
    }
    let chunk = stored::to_chunk(data.to_vec(), range.seq, range.first_index);
    let n = chunk.len();
    let dead: Vec<DeadLetter> = (0..n)
        .map(|i| DeadLetter {
            stage: Some("worker".into()),
            error: format!(
                "workers started this event {} and none finished it (each was killed, crashed or cut off while it ran); it was set aside so that it cannot stall the queue",
                times(started - 1)
            ),
            index: chunk.index(i),
            line: chunk.lines[i],
            attempts: (started - 1) as u32,
            event: chunk.event(i).to_vec(),
        })
        .collect();
    tracing::warn!(
        "job {} event {}: set aside as a dead letter after {} unfinished attempts",
        range.job,
        range.first_index,
        started - 1
    );
    Ok(Some(ChunkReport {
        seq: chunk.seq,
        output: Vec::new(),
        origin: Vec::new(),
        dead,
        partial: Vec::new(),
        counts: Vec::new(),
        events_read: n as u64,
        retries: 0,
        set: shared.live.current(),
        windows: None,
    }))
}

fn times(n: i64) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}
