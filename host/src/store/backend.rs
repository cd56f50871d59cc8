//! The one interface behind `serve`'s routes: where jobs are recorded and
//! queued, and what the API reads back. Two implementations:
//! [`super::embedded::Embedded`] (a SQLite journal and an in-memory queue
//! of chunk keys, one process) and [`super::cluster::Cluster`] (PostgreSQL
//! and a JetStream stream, for ingest nodes and `wasmpipe worker`s). A
//! route calls these methods and never asks which one it has; what a
//! backend cannot do is a [`Refused`] that says why.
//!
//! Taking chunks and committing their reports is the other half, the
//! [`crate::exec::stored::Journal`]: the embedded backend is its own
//! journal; a cluster's is the worker's (`crate::worker`).

use super::model::{
    Chunks, DeadQuery, DeadRow, DeploymentRow, ErrorKind, EventQuery, EventRow, Histogram, JobRow,
    NewDeployment, QueryError, Table, WindowQuery, WindowRow,
};
pub use crate::exec::stored::Results;
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A batch to record as a new job.
#[derive(Debug)]
pub struct NewJob {
    /// Pipeline name.
    pub pipeline: String,
    /// `ingest`, `replay` or `retry`.
    pub kind: &'static str,
    /// The job replayed or retried.
    pub origin: Option<i64>,
    /// When the batch arrived (ms since the epoch).
    pub received_at: i64,
    /// Request state for the stages (a JSON object).
    pub context: String,
    /// The chunks: NDJSON data and number of events.
    pub chunks: Chunks,
    /// Stage versions it must run on (JSON: stage name to whole version):
    /// a replay of named versions. Only a backend that runs its own
    /// chunks (embedded) can; a cluster refuses it.
    pub pinned: Option<String>,
}

/// A job recorded and queued: its chunks will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The new job.
    pub job: i64,
    /// Its events.
    pub events: u64,
}

/// Why a backend did not take a job. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Nothing more fits now (the backlog or the stream is full): `429`.
    /// `retry_after` in seconds, or `None` to estimate it from the rate
    /// the backlog is worked off.
    #[error("{message}")]
    Full {
        /// What is full.
        message: String,
        /// When to come back.
        retry_after: Option<u64>,
    },
    /// One event is larger than the queue can carry: `413`.
    #[error("{0}")]
    TooLarge(String),
    /// A service the backend needs is away: `503`.
    #[error("{0}")]
    Unavailable(String),
    /// This backend cannot do what was asked: `409`.
    #[error("{0}")]
    Conflict(String),
    /// Anything else (its input purged: `410`; else `500`).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Events accepted and not yet processed, bounded by `serve.max_backlog`.
/// Only a process that runs its own workers counts it (on a cluster the
/// stream's `max_bytes` bounds the queue).
#[derive(Debug, Default)]
pub struct Backlog {
    waiting: AtomicU64,
    processed: AtomicU64,
    /// The bound.
    pub max: u64,
}

impl Backlog {
    /// An empty backlog bounded by `max`, with `waiting` events already.
    pub fn new(max: u64, waiting: u64) -> Backlog {
        Backlog {
            waiting: AtomicU64::new(waiting),
            processed: AtomicU64::new(0),
            max,
        }
    }

    /// Counts `n` more events in, or refuses if that passes the bound.
    pub fn reserve(&self, n: u64) -> Result<(), Refused> {
        if self.waiting.fetch_add(n, Relaxed) + n > self.max && n > 0 {
            self.waiting.fetch_sub(n, Relaxed);
            return Err(Refused::Full {
                message: self.full_message(),
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Counts `n` more events in whatever the bound (work accepted once
    /// already, such as retried dead letters).
    pub fn force(&self, n: u64) {
        self.waiting.fetch_add(n, Relaxed);
    }

    /// Takes back a reservation whose job was not recorded.
    pub fn release(&self, n: u64) {
        self.waiting.fetch_sub(n, Relaxed);
    }

    /// `n` events were processed and stored.
    pub fn done(&self, n: u64) {
        self.waiting.fetch_sub(n, Relaxed);
        self.processed.fetch_add(n, Relaxed);
    }

    /// Events waiting.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Relaxed)
    }

    /// Events processed since start.
    pub fn processed(&self) -> u64 {
        self.processed.load(Relaxed)
    }

    /// Whether no batch fits now.
    pub fn full(&self) -> bool {
        self.waiting() >= self.max
    }

    /// Why a batch is refused.
    pub fn full_message(&self) -> String {
        format!(
            "the backlog is full ({} events waiting, limit {}); retry later",
            self.waiting(),
            self.max
        )
    }
}

/// Where jobs are recorded and queued, and what the API reads.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Records `job` and queues its chunks; once this returns, the job is
    /// accepted (nothing of it will be lost).
    async fn submit(&self, job: NewJob) -> Result<Submitted, Refused>;
    /// Runs the dead letters of `job` not yet retried as a new job, cut
    /// into chunks of `chunk_size` events; `None`: nothing to retry.
    async fn retry_dead_letters(
        &self,
        job: i64,
        chunk_size: usize,
    ) -> Result<Option<Submitted>, Refused>;
    /// Runs `job`'s stored input again as a new job, on the versions
    /// `pinned` names (stage name to whole version, JSON) if given;
    /// `None`: the job is gone.
    async fn replay(
        &self,
        job: &JobRow,
        pinned: Option<String>,
    ) -> Result<Option<Submitted>, Refused>;

    /// One job.
    async fn job(&self, id: i64) -> Result<Option<JobRow>>;
    /// Jobs, newest first, before id `before`.
    async fn jobs(&self, pipeline: Option<String>, before: i64, limit: u32) -> Result<Vec<JobRow>>;
    /// Stored events matching `query`, oldest (or newest) first.
    async fn events(&self, query: EventQuery) -> Result<Vec<EventRow>>;
    /// Matches of `query` (its filters; not its page) counted in `buckets`
    /// over time.
    async fn histogram(&self, query: EventQuery, buckets: u32) -> Result<Histogram>;
    /// Dead letters matching `query`, oldest first.
    async fn dead_letters(&self, query: DeadQuery) -> Result<Vec<DeadRow>>;
    /// Read-only SQL over the views of [`super::sql`]: at most `limit`
    /// rows, stopped at `timeout`.
    async fn query(
        &self,
        sql: String,
        limit: usize,
        timeout: std::time::Duration,
    ) -> Result<Table, QueryError>;
    /// Closed windows matching `query`, in the order they closed.
    async fn windows(&self, query: WindowQuery) -> Result<Vec<WindowRow>>;
    /// The newest stored event's and dead letter's ids (0: none).
    async fn last_ids(&self) -> Result<(i64, i64)>;
    /// A job's input, as the chunks it was cut into (`None`: no such job;
    /// an error [`super::InputPurged`] when retention deleted it).
    async fn job_input(&self, id: i64) -> Result<Option<Chunks>>;
    /// Deletes what retention no longer keeps (received before `cutoff`,
    /// ms); returns the events deleted.
    async fn purge(&self, cutoff: i64) -> Result<u64>;
    /// Closes the windows of a quiet stream (see [`crate::exec::window::WindowBook::tick`]);
    /// returns how many closed.
    async fn tick_windows(&self, now: i64) -> Result<usize>;

    /// Records `d` as its pipeline's active deployment; a
    /// [`Refused::Conflict`] when another one is active.
    async fn deploy(&self, d: NewDeployment) -> Result<DeploymentRow, Refused>;
    /// `pipeline`'s deployments, newest first.
    async fn deployments(&self, pipeline: &str, limit: u32) -> Result<Vec<DeploymentRow>>;
    /// A deployment's module.
    async fn deployment_module(&self, id: i64) -> Result<Option<Vec<u8>>>;
    /// Ends deployment `id` as `state` (`promoted`, `aborted`,
    /// `rolled_back`, `dropped`) if it is still active; `None` if it was
    /// not (another process ended it first).
    async fn end_deployment(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Option<DeploymentRow>>;
    /// Replaces what `process` counted of deployment `id` (JSON).
    async fn put_deployment_stats(&self, id: i64, process: &str, stats: String) -> Result<()>;
    /// What every process counted of deployment `id` (JSON each).
    async fn deployment_stats(&self, id: i64) -> Result<Vec<String>>;

    /// Events accepted and not yet processed, and chunks queued.
    async fn depth(&self) -> (u64, u64);
    /// Why batches cannot be taken now (a service away), if so.
    async fn unready(&self) -> Option<String>;
    /// Stops handing out chunks (shutdown); what is queued stays recorded.
    fn close(&self);
}

impl ErrorKind {
    /// Classifies `e` by the first database failure in its chain.
    pub fn of(e: &anyhow::Error) -> ErrorKind {
        for cause in e.chain() {
            if let Some(kind) = super::postgres::kind_of(cause) {
                return kind;
            }
            if let Some(rusqlite::Error::SqliteFailure(f, _)) = cause.downcast_ref() {
                return match f.code {
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                        ErrorKind::Conflict
                    }
                    // The disk is full or failed a write: the same commit
                    // works once there is room (or the device is back).
                    rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure => {
                        ErrorKind::Unavailable
                    }
                    _ => ErrorKind::Other,
                };
            }
            if cause.is::<std::io::Error>() {
                return ErrorKind::Unavailable;
            }
        }
        ErrorKind::Other
    }

    /// Whether trying the same call again may succeed.
    pub fn retryable(self) -> bool {
        self != ErrorKind::Other
    }
}

/// Whether a store call that failed with `e` may succeed if made again.
pub fn retryable(e: &anyhow::Error) -> bool {
    ErrorKind::of(e).retryable()
}

/// Why a second candidate is refused.
pub fn deploying(pipeline: &str) -> String {
    format!(
        "pipeline `{pipeline}` already has a candidate version deployed; promote or abort it first (`GET /v1/deployments` shows it)"
    )
}

/// Closes the windows of a quiet stream: once a second, a tick advances
/// the stored clock if no events came for the window's `idle` time.
pub async fn tick_windows(backend: &dyn Backend, stopping: &std::sync::atomic::AtomicBool) {
    while !stopping.load(Relaxed) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        match backend.tick_windows(crate::exec::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("idle stream: {n} windows closed"),
            Err(e) => tracing::warn!("cannot advance the window clock: {e:#}"),
        }
    }
}
