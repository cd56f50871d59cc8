//! The embedded backend of a single `wasmpipe serve`: jobs journaled in
//! SQLite before they are acknowledged, their chunk keys in an in-memory
//! queue (refilled from the journal at start), and this process's own
//! worker threads taking them. It is its own [`Journal`].
//!
//! Failure handling:
//! - **The process dies** at any moment: every accepted chunk is in the
//!   journal, done or not; at the next start the undone are queued again.
//!   A chunk's outputs and done mark are one transaction, so a chunk is
//!   stored once or not at all.
//! - **A chunk queued twice** (a key pushed back while a slow commit
//!   succeeded): its load finds it done and it is skipped; a commit that
//!   finds it done stores nothing ([`Committed::Duplicate`]).
//! - **A chunk fails as a whole** (no instance, the disk full): it stays
//!   undone in the journal and its key goes back to the queue after the
//!   retry pause.

use super::backend::{Backend, Backlog, NewJob, Refused, Results, Submitted, retryable};
use super::model::{
    Chunks, DeadQuery, DeadRow, DeploymentRow, EventQuery, EventRow, Histogram, JobRow,
    NewDeployment, QueryError, Table, WindowQuery, WindowRow,
};
use super::sqlite::Store;
use crate::exec::stored::{Committed, Journal, StoredJob, Taken, Work, with_backoff};
use crate::exec::window::Fold;
use crate::exec::{ChunkReport, Executor, now_ms};
use crate::queue::memory::Queue;
use anyhow::Result;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// A SQLite journal and store, and the queue of its undone chunks.
pub struct Embedded {
    store: Arc<Store>,
    queue: Queue,
    backlog: Arc<Backlog>,
    pipeline: String,
    results: Results,
    /// The pause before a chunk that failed as a whole is tried again.
    backoff: Duration,
    stopping: AtomicBool,
}

impl Embedded {
    /// Opens (creating if needed) the database at `path` and queues the
    /// chunks it holds undone; the backlog starts at their events.
    pub fn open(
        path: &Path,
        pipeline: &str,
        results: Results,
        max_backlog: u64,
        backoff: Duration,
        indexing: &super::Indexing,
    ) -> Result<Embedded> {
        let store = Store::open(path, indexing)?;
        let pending = store.pending()?;
        let waiting: u64 = pending.iter().map(|k| k.events).sum();
        if !pending.is_empty() {
            tracing::info!(
                "resuming {} queued chunks ({waiting} events)",
                pending.len()
            );
        }
        let queue = Queue::default();
        queue.push(pending);
        Ok(Embedded {
            store: Arc::new(store),
            queue,
            backlog: Arc::new(Backlog::new(max_backlog, waiting)),
            pipeline: pipeline.to_string(),
            results,
            backoff,
            stopping: AtomicBool::new(false),
        })
    }

    /// The backlog this backend's workers work off.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.backlog.clone()
    }

    /// Chunks still undone in the journal.
    pub fn undone(&self) -> Result<usize> {
        Ok(self.store.pending()?.len())
    }

    /// Queues `keys` of a job of `events` events, counting them in the
    /// backlog whatever its bound.
    fn queue_counted(&self, keys: Vec<crate::exec::ChunkId>, events: u64) {
        self.backlog.force(events);
        self.queue.push(keys);
    }

    /// Runs `f` on the store off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await?
    }
}

#[async_trait::async_trait]
impl Backend for Embedded {
    async fn submit(&self, job: NewJob) -> Result<Submitted, Refused> {
        let events: u64 = job.chunks.iter().map(|c| c.1).sum();
        self.backlog.reserve(events)?;
        match self.blocking(move |s| s.insert_job(&job)).await {
            Ok((id, keys)) => {
                self.queue.push(keys);
                Ok(Submitted { job: id, events })
            }
            Err(e) => {
                self.backlog.release(events);
                Err(match disk_trouble(&e) {
                    Some(why) => Refused::Unavailable(why),
                    None => Refused::Failed(e.context("cannot store the batch")),
                })
            }
        }
    }

    async fn retry_dead_letters(
        &self,
        job: i64,
        chunk_size: usize,
    ) -> Result<Option<Submitted>, Refused> {
        let cut = move |events: Vec<Vec<u8>>| super::cut(&events, chunk_size);
        let retried = self
            .blocking(move |s| s.retry_dead_letters(job, now_ms(), &cut))
            .await?;
        Ok(retried.map(|(id, keys, events)| {
            // Dead letters were accepted once already: a retry is not
            // refused for the backlog, only counted in it.
            self.queue_counted(keys, events);
            Submitted { job: id, events }
        }))
    }

    async fn replay(
        &self,
        job: &JobRow,
        pinned: Option<String>,
    ) -> Result<Option<Submitted>, Refused> {
        let (id, events_in) = (job.id, job.events_in);
        self.backlog.reserve(events_in)?;
        let replayed = self
            .blocking(move |s| s.replay(id, now_ms(), pinned.as_deref()))
            .await;
        match replayed {
            Ok(Some((id, keys, events))) => {
                self.queue.push(keys);
                Ok(Some(Submitted { job: id, events }))
            }
            Ok(None) => {
                self.backlog.release(events_in);
                Ok(None)
            }
            Err(e) => {
                self.backlog.release(events_in);
                Err(Refused::Failed(e))
            }
        }
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        self.blocking(move |s| s.job(id)).await
    }

    async fn jobs(&self, pipeline: Option<String>, before: i64, limit: u32) -> Result<Vec<JobRow>> {
        self.blocking(move |s| s.jobs(pipeline.as_deref(), before, limit))
            .await
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<EventRow>> {
        self.blocking(move |s| s.events(&query)).await
    }

    async fn histogram(&self, query: EventQuery, buckets: u32) -> Result<Histogram> {
        self.blocking(move |s| s.histogram(&query, buckets)).await
    }

    async fn dead_letters(&self, query: DeadQuery) -> Result<Vec<DeadRow>> {
        self.blocking(move |s| s.dead_letters(&query)).await
    }

    async fn query(
        &self,
        sql: String,
        limit: usize,
        timeout: Duration,
    ) -> Result<Table, QueryError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.query(&sql, limit, timeout))
            .await
            .map_err(|e| QueryError::Store(e.into()))?
    }

    async fn windows(&self, query: WindowQuery) -> Result<Vec<WindowRow>> {
        self.blocking(move |s| s.windows(&query)).await
    }

    async fn last_ids(&self) -> Result<(i64, i64)> {
        self.blocking(|s| s.last_ids()).await
    }

    async fn job_input(&self, id: i64) -> Result<Option<Chunks>> {
        self.blocking(move |s| s.job_input(id)).await
    }

    async fn purge(&self, cutoff: i64) -> Result<u64> {
        self.blocking(move |s| s.purge(cutoff)).await
    }

    async fn tick_windows(&self, now: i64) -> Result<usize> {
        let Some(book) = self.results.windows.clone() else {
            return Ok(0);
        };
        let pipeline = self.pipeline.clone();
        self.blocking(move |s| s.tick_windows(&pipeline, &book, now))
            .await
    }

    async fn deploy(&self, d: NewDeployment) -> Result<DeploymentRow, Refused> {
        let pipeline = d.pipeline.clone();
        match self.blocking(move |s| s.deploy(&d)).await? {
            Some(row) => Ok(row),
            None => Err(Refused::Conflict(super::backend::deploying(&pipeline))),
        }
    }

    async fn deployments(&self, pipeline: &str, limit: u32) -> Result<Vec<DeploymentRow>> {
        let pipeline = pipeline.to_string();
        self.blocking(move |s| s.deployments(&pipeline, limit))
            .await
    }

    async fn deployment_module(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.blocking(move |s| s.deployment_module(id)).await
    }

    async fn end_deployment(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Option<DeploymentRow>> {
        let (state, by) = (state.to_string(), by.to_string());
        self.blocking(move |s| s.end_deployment(id, &state, &by, reason.as_deref(), now_ms()))
            .await
    }

    async fn put_deployment_stats(&self, id: i64, process: &str, stats: String) -> Result<()> {
        let process = process.to_string();
        self.blocking(move |s| s.put_deployment_stats(id, &process, &stats))
            .await
    }

    async fn deployment_stats(&self, id: i64) -> Result<Vec<String>> {
        self.blocking(move |s| s.deployment_stats(id)).await
    }

    async fn depth(&self) -> (u64, u64) {
        (self.backlog.waiting(), self.queue.len() as u64)
    }

    async fn unready(&self) -> Option<String> {
        None
    }

    fn close(&self) {
        self.stopping.store(true, Relaxed);
        self.queue.close();
    }
}

/// The loop runs on threads of its own: the store is called directly.
#[async_trait::async_trait]
impl Journal for Embedded {
    type Ticket = ();

    async fn take(&self) -> Option<Taken<()>> {
        loop {
            let id = self.queue.pop()?;
            match self.store.load_chunk(id, now_ms()) {
                Ok(Some(input)) => {
                    return Some(Taken {
                        id,
                        data: input.data,
                        job: Arc::new(StoredJob {
                            pipeline: input.pipeline,
                            context: input.context,
                            received_at: input.received_at,
                            pinned: input.pinned,
                        }),
                        work: Work::Run,
                        ticket: (),
                    });
                }
                // Already done (queued twice): nothing to do.
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(
                        "job {} chunk {}: cannot load it: {e:#}; will retry",
                        id.job,
                        id.seq
                    );
                    tokio::time::sleep(self.backoff).await;
                    self.queue.push([id]);
                }
            }
        }
    }

    async fn commit(
        &self,
        taken: &Taken<()>,
        report: &ChunkReport,
        exec: &mut Executor,
    ) -> Result<Committed> {
        let id = taken.id;
        with_backoff("store a chunk", &self.stopping, retryable, || {
            // The commit may call the guest (combine, re-fold): outside
            // the runtime's context, as the loop runs stages.
            let committed = tokio::task::block_in_place(|| match &self.results.windows {
                // A windowed reduce has no job result: its windows span jobs.
                Some(book) => self.store.complete_chunk(
                    id,
                    report,
                    now_ms(),
                    None,
                    Some((book, &mut *exec as &mut dyn Fold)),
                ),
                None => {
                    let mut combine = |partials: Vec<Vec<u8>>| exec.combine(partials);
                    let combine = self
                        .results
                        .reduces
                        .then_some(&mut combine as &mut super::Combine<'_>);
                    self.store
                        .complete_chunk(id, report, now_ms(), combine, None)
                }
            });
            std::future::ready(committed)
        })
        .await
    }

    async fn settle(&self, taken: Taken<()>, outcome: &Result<Committed>) {
        match outcome {
            Ok(Committed::Stored { .. }) => self.backlog.done(taken.id.events),
            Ok(Committed::Duplicate) => {}
            Err(_) => {
                // It stays undone in the journal: run it again after a pause.
                tokio::time::sleep(self.backoff).await;
                self.queue.push([taken.id]);
            }
        }
    }
}

/// What a client is told when the journal cannot take a batch for want of
/// disk (or a failing one): the batch was not accepted, nothing accepted
/// before it is lost, and batches are taken again once writes succeed
/// (and, after a failed sync, once the journal is synced again: see
/// `Store::durable`). `None` for any other failure.
fn disk_trouble(e: &anyhow::Error) -> Option<String> {
    let what = if e.chain().any(|c| c.is::<super::sqlite::NotSynced>()) {
        "the journal could not be synced to disk (fsync failed)"
    } else {
        let f = e.chain().find_map(|c| match c.downcast_ref() {
            Some(rusqlite::Error::SqliteFailure(f, _)) => Some(*f),
            _ => None,
        })?;
        match (f.code, f.extended_code) {
            (_, rusqlite::ffi::SQLITE_IOERR_FSYNC | rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC) => {
                "the journal could not be synced to disk (fsync failed)"
            }
            (rusqlite::ErrorCode::DiskFull, _) => "the disk holding the journal is full",
            (rusqlite::ErrorCode::SystemIoFailure, _) => {
                "the journal could not be written (an I/O error)"
            }
            _ => return None,
        }
    };
    tracing::warn!("refusing a batch: {what}: {e:#}");
    Some(format!(
        "{what}: this batch was not accepted (nothing accepted before it is lost); send it again later, batches are taken as soon as the journal can be written"
    ))
}
