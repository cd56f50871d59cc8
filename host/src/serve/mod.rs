//! `wasmpipe serve`: the HTTP service. Batches of events arrive as jobs,
//! are made durable before they are acknowledged, and are processed chunk
//! by chunk by workers running the same [`Executor`] as `wasmpipe run`.
//!
//! Two backends ([`Backend`]), chosen by the manifest's `[queue]` and
//! `[store]`: embedded (a SQLite journal and store, and worker threads in
//! this process), or an ingest node on a cluster (chunks published to NATS
//! JetStream for `wasmpipe worker` processes, see [`crate::worker`]; jobs, events
//! and results in PostgreSQL).
//!
//! # Layout
//!
//! - [`api`]: the HTTP routes (axum): ingest, jobs, events, dead letters,
//!   windows, metrics, health.
//! - [`rerun`]: running a stored job again: retry, replay, diff.
//! - [`stream`]: the live stream of new events and dead letters.
//! - [`backend`]: the reads every route makes of either backend.
//! - [`workers`]: the embedded backend's worker threads.
//! - [`auth`]: bearer tokens with read and write permissions.
//! - [`console`]: the web console's page, script and style sheet (`GET /`).
//!
//! The stores are in [`crate::store`], the queues in [`crate::queue`], the
//! cluster's worker process in [`crate::worker`].
//!
//! Shutdown (the future given to [`run`] resolves): the listener stops
//! accepting, requests in flight finish (an accepted batch is committed),
//! the workers finish the chunk they hold and stop; chunks still queued
//! stay in the journal and are taken up at the next start.

pub mod api;
pub mod auth;
pub mod backend;
pub mod console;
pub mod rerun;
pub mod stream;
pub mod workers;

pub use backend::Backend;

use crate::metrics;
use crate::queue::memory as queue;
use crate::store::{now_ms, sqlite as store};

use crate::exec::{Executor, LiveStages, Pipeline, Policy};
use crate::manifest::{DEFAULT_CHUNK_SIZE, Manifest, ServeSection};
use anyhow::{Context as _, Result};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Limits and policies from `[serve]`, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest body.
    pub max_body: usize,
    /// Most events per batch.
    pub max_events: usize,
    /// Largest event.
    pub max_event_size: usize,
    /// Most queued events.
    pub max_backlog: u64,
    /// Events per chunk.
    pub chunk_size: usize,
    /// Longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Timeout retries, and the pause before a chunk is tried again.
    pub retries: crate::exec::Retries,
    /// Stored events are kept this long.
    pub retention: Option<Duration>,
    /// Header naming the identity.
    pub identity_header: Option<String>,
    /// Store the events a final reduce folds in.
    pub store_reduce_input: bool,
}

impl Settings {
    /// From the manifest's `[serve]` (or its defaults).
    pub fn new(manifest: &Manifest, serve: &ServeSection) -> Settings {
        Settings {
            max_body: serve.max_body.0 as usize,
            max_events: serve.max_events.get(),
            max_event_size: serve.max_event_size.0 as usize,
            max_backlog: serve.max_backlog.get(),
            chunk_size: serve
                .chunk_size
                .or(manifest.doc.runtime.chunk_size)
                .map_or(DEFAULT_CHUNK_SIZE.min(1000), |n| n.get()),
            body_timeout: serve.body_timeout.0,
            retries: manifest.retries(),
            retention: serve.retention.map(|d| d.0),
            identity_header: serve
                .identity_header
                .as_ref()
                .map(|h| h.get_ref().to_ascii_lowercase()),
            store_reduce_input: serve.store_reduce_input,
        }
    }
}

/// How long requests in flight may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// The state every route and worker shares.
pub struct Service {
    /// The pipeline's name (the only one served).
    pub pipeline: String,
    /// Whether its last stage is a reduce.
    pub reduces: bool,
    /// Whether the reduce is keyed.
    pub keyed: bool,
    /// A windowed reduce's book: its windows span jobs.
    pub windows: Option<crate::exec::window::WindowBook>,
    /// Where jobs wait and results go.
    pub backend: Backend,
    /// Limits.
    pub settings: Settings,
    /// Tokens.
    pub auth: auth::Auth,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// Events accepted and not yet processed.
    pub backlog: AtomicU64,
    /// Events processed since start.
    pub processed: AtomicU64,
    /// When the service started.
    pub started: Instant,
    /// Set when shutdown begins.
    pub stopping: AtomicBool,
    /// Requests reading or parsing a body.
    pub ingest_permits: tokio::sync::Semaphore,
    /// This machine's name, for the stages' context.
    pub host: String,
    /// The stages the workers run: replaced whole by hot reload
    /// (`--watch`); each worker switches between chunks.
    pub live: Arc<LiveStages>,
    /// The engine, for the instances a diff runs outside the workers.
    pub runtime: Arc<crate::runtime::Runtime>,
    /// What every chunk is run with.
    pub policy: Policy,
}

/// Serves `pipeline` on `listener` until `shutdown` resolves, then drains.
/// `ready` is called once the store is open, unfinished chunks are queued
/// and the workers are up, just before the first connection is accepted.
pub async fn run(
    manifest: &Manifest,
    pipeline: Pipeline,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(std::net::SocketAddr) -> Result<()>,
) -> Result<()> {
    let serve = manifest.doc.serve.clone().unwrap_or_default();
    let settings = Settings::new(manifest, &serve);
    let auth = auth::Auth::from_manifest(manifest, &serve)?;
    let clustered = manifest.clustered();
    let (backend, backlog) = if clustered {
        let (store, queue) = crate::cluster::connect(manifest).await?;
        (Backend::Cluster { store, queue }, 0)
    } else {
        let db = manifest.resolve(&serve.database);
        let store = store::Store::open(&db)?;
        let pending = store.pending()?;
        let backlog: u64 = pending.iter().map(|k| k.events).sum();
        if !pending.is_empty() {
            tracing::info!(
                "resuming {} queued chunks ({backlog} events)",
                pending.len()
            );
        }
        let queue = queue::Queue::default();
        queue.push(pending);
        (Backend::Embedded { store, queue }, backlog)
    };
    let svc = Arc::new(Service {
        pipeline: pipeline.name.clone(),
        reduces: pipeline.reduces() && pipeline.window_book().is_none(),
        keyed: pipeline.keyed(),
        windows: pipeline.window_book(),
        backend,
        auth,
        metrics: metrics::Metrics::new(
            pipeline
                .stages
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
        ),
        backlog: AtomicU64::new(backlog),
        processed: AtomicU64::new(0),
        started: Instant::now(),
        stopping: AtomicBool::new(false),
        ingest_permits: tokio::sync::Semaphore::new(serve.max_concurrent_ingest.get()),
        host: crate::exec::host_name(),
        live: pipeline.live(),
        runtime: pipeline.runtime.clone(),
        policy: Policy {
            keep_reduce_input: settings.store_reduce_input,
            ..pipeline.policy
        },
        settings,
    });
    let policy = svc.policy;
    let mut workers = Vec::new();
    for w in 0..if clustered {
        0
    } else {
        pipeline.workers.max(1)
    } {
        let mut exec = Executor::new(pipeline.runtime.clone(), svc.live.clone(), policy);
        exec.warm_up()?;
        let svc = svc.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("wasmpipe-serve-{w}"))
                .spawn(move || workers::run(&svc, exec))
                .context("cannot start a worker thread")?,
        );
    }
    if svc.windows.is_some() && !clustered {
        let svc = svc.clone();
        workers.push(
            std::thread::Builder::new()
                .name("wasmpipe-windows".into())
                .spawn(move || workers::tick_windows(&svc))
                .context("cannot start the window clock")?,
        );
    }
    let purger = svc.settings.retention.map(|keep| {
        let svc = svc.clone();
        tokio::spawn(async move {
            let every = (keep / 10).clamp(Duration::from_millis(100), Duration::from_secs(600));
            loop {
                let cutoff = now_ms() - keep.as_millis() as i64;
                let purged = backend::purge(&svc, cutoff).await;
                match purged {
                    Ok(n) if n > 0 => tracing::info!("retention: deleted {n} stored events"),
                    Err(e) => tracing::warn!("retention: {e:#}"),
                    _ => {}
                }
                tokio::time::sleep(every).await;
            }
        })
    });

    let app = api::router(svc.clone());
    ready(listener.local_addr()?)?;
    let stop_svc = svc.clone();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop_svc.stopping.store(true, Relaxed);
            tracing::info!(
                "shutting down: no new connections; finishing requests and chunks in flight"
            );
            let _ = stopped_tx.send(());
        })
        .into_future(),
    );
    // A connection that never lets its response be written (a client that
    // stopped reading a live stream or a large page) would hold a graceful
    // shutdown for ever: requests get `DRAIN` to finish, then are dropped.
    let served = tokio::select! {
        done = &mut server => done.context("the HTTP server panicked")?,
        _ = async {
            if stopped_rx.await.is_ok() {
                tokio::time::sleep(DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("requests still open {DRAIN:?} after shutdown began are dropped");
            server.abort();
            Ok(())
        }
    };
    svc.stopping.store(true, Relaxed);
    if let Some(p) = purger {
        p.abort();
    }
    if let Backend::Embedded { queue, .. } = &svc.backend {
        queue.close();
    }
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    served.context("the HTTP server failed")?;
    joined.context("a worker thread panicked")?;
    if let Backend::Embedded { store, .. } = &svc.backend {
        tracing::info!(
            "stopped; {} chunks left queued for the next start",
            store.pending()?.len()
        );
    }
    Ok(())
}
