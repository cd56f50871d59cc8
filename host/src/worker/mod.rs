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
//! Each slot is a thread running the one loop of stored chunks
//! ([`crate::exec::stored::Loop`], as `serve`'s embedded workers do) with
//! its own [`Executor`], over this worker's [`journal::WorkerJournal`].
//! With `--watch` the stages are hot-reloaded between chunks; with
//! `--metrics` the worker serves Prometheus counters of what it did.

pub mod journal;

use crate::exec::deploy::Deploys;
use crate::exec::stored::{self, Loop};
use crate::exec::{Executor, Pipeline, Policy, now_ms};
use crate::manifest::{Manifest, Settings};
use crate::metrics::Metrics;
use crate::store::Backend;
use crate::store::cluster::Cluster;
use anyhow::{Context as _, Result, bail};
use journal::WorkerJournal;
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
    let settings = Settings::new(manifest, &serve);
    let cluster = Arc::new(Cluster::connect(manifest, pipeline.results()).await?);
    let consumer = cluster.queue.consumer().await?;
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
    let stopping = Arc::new(AtomicBool::new(false));
    let name = format!("{host}/{}", std::process::id());
    let journal = Arc::new(WorkerJournal {
        cluster: cluster.clone(),
        consumer,
        name: name.clone(),
        chunk_size: settings.chunk_size,
        max_attempts: i64::from(queue_section.max_attempts.get()),
        heartbeat: (ack_wait / 3).max(Duration::from_millis(10)),
        backoff: settings.retries.backoff,
        stopping: stopping.clone(),
        jobs: Default::default(),
    });
    let metrics = Arc::new(Metrics::new(
        pipeline
            .stages
            .iter()
            .map(|s| s.name().to_string())
            .collect(),
    ));
    let live = pipeline.live();
    let policy = Policy {
        keep_reduce_input: settings.store_reduce_input,
        ..pipeline.policy
    };
    let deploys = Deploys::restored(&pipeline, live.clone(), policy, &*cluster).await?;
    let run = Arc::new(Loop {
        live: live.clone(),
        deploys: Some(deploys.clone()),
        host,
        observer: metrics.clone(),
    });
    let mut slots = Vec::new();
    for n in 0..pipeline.workers.max(1) {
        let mut exec = Executor::new(pipeline.runtime.clone(), live.clone(), policy);
        exec.warm_up()?;
        slots.push(stored::spawn(
            format!("wasmpipe-slot-{n}"),
            tokio::runtime::Handle::current(),
            run.clone(),
            journal.clone(),
            exec,
        )?);
    }
    tracing::info!(
        "worker {name} pulling chunks of `{}` with {} slots",
        pipeline.name,
        slots.len()
    );
    let sweeper = tokio::spawn(sweep(
        cluster.clone(),
        pipeline.name.clone(),
        stopping.clone(),
    ));
    let deploying = {
        let (cluster, stopping, deploys) = (cluster.clone(), stopping.clone(), deploys.clone());
        tokio::spawn(async move { deploys.follow(&*cluster, &stopping).await })
    };
    let ticker = {
        let (cluster, stopping) = (cluster.clone(), stopping.clone());
        tokio::spawn(async move { crate::store::backend::tick_windows(&*cluster, &stopping).await })
    };
    let metrics_addr = match metrics_listen {
        Some(addr) => Some(
            serve_metrics(
                cluster.clone(),
                metrics,
                deploys.clone(),
                pipeline.name.clone(),
                addr,
            )
            .await?,
        ),
        None => None,
    };
    ready(metrics_addr)?;
    shutdown.await;
    tracing::info!("stopping: finishing the chunks in hand");
    stopping.store(true, Relaxed);
    tokio::task::spawn_blocking(move || {
        slots.into_iter().try_for_each(|s| {
            s.join()
                .map_err(|_| anyhow::anyhow!("a worker slot panicked"))
        })
    })
    .await??;
    sweeper.abort();
    ticker.abort();
    deploying.abort();
    Ok(())
}

/// Serves `GET /metrics` (Prometheus) and `GET /healthz` on `addr`.
async fn serve_metrics(
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
    deploys: Arc<Deploys>,
    pipeline: String,
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
                let (cluster, metrics, deploys, pipeline) = (
                    cluster.clone(),
                    metrics.clone(),
                    deploys.clone(),
                    pipeline.clone(),
                );
                async move {
                    let (backlog, queued) = cluster.depth().await;
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics.render(&pipeline, backlog, queued) + &deploys.metrics(&pipeline),
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

/// Abandons, every [`SWEEP_EVERY`], the jobs still `pending` after
/// [`ABANDON_AFTER`]: those whose ingest node died before any chunk
/// reached the stream have no chunk to find them, and would otherwise
/// stay `pending` for ever.
async fn sweep(cluster: Arc<Cluster>, pipeline: String, stopping: Arc<AtomicBool>) {
    while !stopping.load(Relaxed) {
        let cutoff = now_ms() - ABANDON_AFTER.as_millis() as i64;
        match cluster.store.abandon_stale(&pipeline, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "abandoned {n} jobs that their ingest node never accepted (pending for over {ABANDON_AFTER:?})"
            ),
            Err(e) => tracing::debug!("cannot sweep pending jobs: {e:#}"),
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}
