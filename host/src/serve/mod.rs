//! `wasmpipe serve`: the HTTP service. Batches of events arrive as jobs,
//! are made durable before they are acknowledged, and are processed chunk
//! by chunk by workers running the same [`Executor`] as `wasmpipe run`.
//!
//! One interface behind every route, [`Backend`], with two
//! implementations chosen by the manifest's `[queue]` and `[store]`:
//! embedded (a SQLite journal and store, and worker threads in this
//! process running the one loop of stored chunks,
//! [`crate::exec::stored::Loop`]), or an ingest node on a cluster (chunks
//! published to NATS JetStream for `wasmpipe worker` processes, see
//! [`crate::worker`]; jobs, events and results in PostgreSQL). Only
//! [`run`] asks which one it has, to start what runs here.
//!
//! # Layout (HTTP only, by area)
//!
//! - [`toolkit`]: what every route uses: the error type, authorization,
//!   reading bodies, parsing query parameters, the JSON shapes of jobs,
//!   events and dead letters.
//! - [`ingest`]: batches in (`POST /v1/pipelines/{name}/jobs`), and the
//!   steps every ingest route takes.
//! - [`otlp`]: OpenTelemetry logs in (`POST /v1/logs`, OTLP/HTTP).
//! - [`reads`]: jobs, events, dead letters, windows, metrics, health.
//! - [`rerun`]: running a stored job again: retry, replay, diff.
//! - [`deploy`]: candidate versions (shadow, canary), promote, abort.
//! - [`stream`]: the live stream of new events and dead letters.
//! - [`auth`]: bearer tokens with read and write permissions.
//! - [`console`]: the web console's page, script and style sheet (`GET /`).
//!
//! The backends are in [`crate::store`], the queues in [`crate::queue`],
//! the cluster's worker process in [`crate::worker`].
//!
//! Shutdown (the future given to [`run`] resolves): the listener stops
//! accepting, requests in flight finish (an accepted batch is committed),
//! the workers finish the chunk they hold and stop; chunks still queued
//! stay in the journal and are taken up at the next start.

pub mod auth;
pub mod console;
pub mod deploy;
pub mod ingest;
pub mod listen;
pub mod otlp;
pub mod query;
pub mod reads;
pub mod rerun;
pub mod stream;
pub mod toolkit;

pub use crate::manifest::Settings;

use crate::exec::deploy::Deploys;
use crate::exec::stored::{self, Loop};
use crate::exec::{Executor, LiveStages, Pipeline, Policy, now_ms};
use crate::manifest::Manifest;
use crate::metrics;
use crate::store::cluster::Cluster;
use crate::store::embedded::Embedded;
use crate::store::{Backend, Backlog};
use crate::tls::server::{ServerTls, TlsFiles};
use anyhow::{Context as _, Result};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The service's routes; `cors`, the ingest routes' policy ([`cors`]).
pub fn router(svc: Arc<Service>, cors: Option<tower_http::cors::CorsLayer>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::{MethodRouter, get, post};
    use toolkit::ApiError;
    // The ingest routes answer browsers of the allowed origins (CORS),
    // preflight included: `OPTIONS` must then reach the layer, which
    // answers a preflight (one that is not gets an empty `204`).
    let door = |m: MethodRouter<Arc<Service>>| match &cors {
        Some(_) => m.options(|| async { StatusCode::NO_CONTENT }),
        None => m,
    };
    let mut doors = axum::Router::new()
        .route("/v1/pipelines/{name}/jobs", door(post(ingest::ingest)))
        .route("/v1/logs", door(post(otlp::logs)));
    if let Some(cors) = cors {
        doors = doors.layer(cors);
    }
    axum::Router::new()
        .merge(doors)
        .route("/v1/jobs", get(reads::list_jobs))
        .route("/v1/jobs/{id}", get(reads::get_job))
        .route("/v1/jobs/{id}/replay", post(rerun::replay))
        .route("/v1/jobs/{id}/dead-letters/retry", post(rerun::retry_dead))
        .route("/v1/jobs/{id}/diff", post(rerun::diff))
        .route("/v1/replay", post(rerun::replay_range))
        .route("/v1/diff", post(rerun::diff_range))
        .route("/v1/deployments", get(deploy::list).post(deploy::create))
        .route("/v1/deployments/{id}", get(deploy::show))
        .route("/v1/deployments/{id}/promote", post(deploy::promote))
        .route("/v1/deployments/{id}/abort", post(deploy::abort))
        .route("/v1/dead-letters", get(reads::list_dead))
        .route("/v1/events", get(reads::list_events))
        .route("/v1/events/histogram", get(reads::events_histogram))
        .route("/v1/query", post(query::query))
        .route("/v1/windows", get(reads::list_windows))
        .route("/v1/stream", get(stream::stream))
        .route("/v1/whoami", get(reads::whoami))
        .route("/metrics", get(reads::metrics))
        .route("/healthz", get(reads::healthz))
        .route("/readyz", get(reads::readyz))
        .merge(console::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; docs/api.md lists the routes",
            )
        })
        // Every refusal has a JSON body, a wrong method's too.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method; docs/api.md lists each route's",
            )
        })
        .with_state(svc)
}

/// The CORS policy of the ingest routes: pages of `origins` may post
/// events (with a token, gzipped); `None` when no origin is allowed.
pub fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{HeaderValue, Method, header};
    if origins.is_empty() {
        return Ok(None);
    }
    let mut allowed = Vec::new();
    for o in origins {
        let ok = (o.starts_with("http://") || o.starts_with("https://"))
            && !o
                .trim_end_matches('/')
                .contains(|c: char| c.is_whitespace())
            && o.split("://")
                .nth(1)
                .is_some_and(|h| !h.is_empty() && !h.contains('/'));
        if !ok {
            anyhow::bail!(
                "`[serve] cors_origins`: `{o}` is not a web origin; write it as a page's address without a path, e.g. `https://app.example.com` or `http://localhost:3000`"
            );
        }
        allowed.push(HeaderValue::from_str(o)?);
    }
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::CONTENT_ENCODING,
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(3600)),
    ))
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
    /// Whether its reduce is windowed (results are windows, not jobs').
    pub windowed: bool,
    /// Where jobs wait and results go: embedded or a cluster, the routes
    /// do not ask which.
    pub backend: Arc<dyn Backend>,
    /// Limits.
    pub settings: Settings,
    /// Tokens.
    pub auth: auth::Auth,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Events accepted and not yet processed by this process's workers
    /// (always 0 on an ingest node: the stream bounds a cluster's queue).
    pub backlog: Arc<Backlog>,
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
    /// Candidate versions beside the live ones, and the stages' budgets.
    pub deploys: Arc<Deploys>,
}

/// Serves `pipeline` on `listener` until `shutdown` resolves, then drains.
/// `ready` is called with the server's URL once the store is open,
/// unfinished chunks are queued and the workers are up, just before the
/// first connection is accepted.
pub async fn run(
    manifest: &Manifest,
    pipeline: Pipeline,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&str) -> Result<()>,
) -> Result<()> {
    let serve = manifest.doc.serve.clone().unwrap_or_default();
    let settings = Settings::new(manifest, &serve);
    let auth = auth::Auth::from_manifest(manifest, &serve)?;
    // Read before anything else opens, so a wrong file stops the start.
    let tls = match &serve.tls {
        Some(t) => {
            let tls = ServerTls::load(TlsFiles {
                cert: manifest.resolve(&t.cert),
                key: manifest.resolve(&t.key),
                client_ca: t.client_ca.as_deref().map(|c| manifest.resolve(c)),
            })
            .context("`[serve.tls]`")?;
            tls.watch();
            Some(tls)
        }
        None => None,
    };
    let cors = cors(&settings.cors_origins)?;
    let results = pipeline.results();
    let windowed = results.windows.is_some();
    // The one place that asks which backend it is: what runs here.
    let (backend, journal): (Arc<dyn Backend>, Option<Arc<Embedded>>) = if manifest.clustered() {
        (Arc::new(Cluster::connect(manifest, results).await?), None)
    } else {
        let db = manifest.resolve(&serve.database);
        let embedded = Arc::new(Embedded::open(
            &db,
            &pipeline.name,
            results,
            settings.max_backlog,
            settings.retries.backoff,
            &settings.indexing,
        )?);
        (embedded.clone(), Some(embedded))
    };
    let backlog = match &journal {
        Some(e) => e.backlog(),
        None => Arc::new(Backlog::new(settings.max_backlog, 0)),
    };
    let metrics = Arc::new(metrics::Metrics::new(
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
    let deploys = Deploys::restored(&pipeline, live.clone(), policy, &*backend).await?;
    let svc = Arc::new(Service {
        pipeline: pipeline.name.clone(),
        reduces: pipeline.reduces() && !windowed,
        keyed: pipeline.keyed(),
        windowed,
        backend,
        auth,
        metrics: metrics.clone(),
        backlog,
        started: Instant::now(),
        stopping: AtomicBool::new(false),
        ingest_permits: tokio::sync::Semaphore::new(serve.max_concurrent_ingest.get()),
        host: crate::exec::host_name(),
        live,
        runtime: pipeline.runtime.clone(),
        policy,
        deploys,
        settings,
    });
    let mut workers = Vec::new();
    let mut ticker = None;
    if let Some(journal) = &journal {
        let run = Arc::new(Loop {
            live: svc.live.clone(),
            deploys: Some(svc.deploys.clone()),
            host: svc.host.clone(),
            observer: metrics,
        });
        for w in 0..pipeline.workers.max(1) {
            let mut exec = Executor::new(pipeline.runtime.clone(), svc.live.clone(), svc.policy);
            exec.warm_up()?;
            workers.push(stored::spawn(
                format!("wasmpipe-serve-{w}"),
                tokio::runtime::Handle::current(),
                run.clone(),
                journal.clone(),
                exec,
            )?);
        }
        // On a cluster, the workers tick the window clock.
        if windowed {
            let svc = svc.clone();
            ticker = Some(tokio::spawn(async move {
                crate::store::backend::tick_windows(&*svc.backend, &svc.stopping).await
            }));
        }
    }
    let deploying = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.deploys.follow(&*svc.backend, &svc.stopping).await })
    };
    let purger = svc.settings.retention.map(|keep| {
        let svc = svc.clone();
        tokio::spawn(async move {
            let every = (keep / 10).clamp(Duration::from_millis(100), Duration::from_secs(600));
            loop {
                let cutoff = now_ms() - keep.as_millis() as i64;
                let purged = svc.backend.purge(cutoff).await;
                match purged {
                    Ok(n) if n > 0 => tracing::info!("retention: deleted {n} stored events"),
                    Err(e) => tracing::warn!("retention: {e:#}"),
                    _ => {}
                }
                tokio::time::sleep(every).await;
            }
        })
    });

    let app = router(svc.clone(), cors);
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Before the ready line: a client that waits for it finds the
    // open-file limit raised.
    let bounds = listen::Bounds {
        header_timeout: serve.header_timeout.0,
        max_connections: connection_room(serve.max_connections.get()),
        drain: DRAIN,
    };
    ready(&format!("{scheme}://{}", listener.local_addr()?))?;
    let stop_svc = svc.clone();
    let served = listen::serve(listener, app, bounds, tls, async move {
        shutdown.await;
        stop_svc.stopping.store(true, Relaxed);
        tracing::info!(
            "shutting down: no new connections; finishing requests and chunks in flight"
        );
    })
    .await;
    svc.stopping.store(true, Relaxed);
    deploying.abort();
    if let Some(p) = purger {
        p.abort();
    }
    if let Some(t) = ticker {
        t.abort();
    }
    svc.backend.close();
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    served.context("the HTTP server failed")?;
    joined.context("a worker thread panicked")?;
    if let Some(journal) = &journal {
        tracing::info!(
            "stopped; {} chunks left queued for the next start",
            journal.undone()?
        );
    }
    Ok(())
}

/// Descriptors serve holds besides its connections: the journal's files
/// (three SQLite connections, each with its database, WAL and shared
/// memory), the listener, the runtime's epoll and event descriptors, log
/// files, `--watch`'s watcher, with room to spare.
const OTHER_FDS: u64 = 256;

/// Makes room in the process's open-file limit for `max_connections`
/// connections, and returns how many it can hold at once.
///
/// The soft limit is often 1024 (systemd's default, many shells') while
/// the hard limit allows far more. With 1024, accept fails past about a
/// thousand connections, and every client beyond them, a load balancer's
/// health probe too, waits in the kernel's queue for as long as the
/// others stay connected: 11 s probes under 2,000 keep-alive clients in
/// `bench/run-overload`. So the soft limit is raised to what
/// `max_connections` needs, within the hard limit, as Go's runtime and
/// nginx do. When even the hard limit is too low, the bound is lowered to
/// fit (past it, connections wait to be accepted, instead of accept
/// failing every time), with a warning that says how to raise it.
fn connection_room(max_connections: usize) -> usize {
    let want = max_connections as u64 + OTHER_FDS;
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer to a rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 || l.rlim_cur >= want {
        return max_connections;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(l.rlim_max),
        rlim_max: l.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(
            "open-file limit raised from {} to {} for [serve] max_connections = {max_connections}",
            l.rlim_cur,
            raised.rlim_cur
        );
        l = raised;
    }
    if l.rlim_cur >= want {
        return max_connections;
    }
    let fits = l.rlim_cur.saturating_sub(OTHER_FDS).max(1) as usize;
    tracing::warn!(
        "the open-file limit is {} (hard limit {}), fewer than the {want} that [serve] max_connections = {max_connections} needs: at most {fits} connections are served at once, and the next ones wait to be accepted; raise the limit (`ulimit -n`, or LimitNOFILE= in a systemd unit) or lower max_connections",
        l.rlim_cur,
        l.rlim_max
    );
    fits
}
