//! The cluster backend of ingest nodes (and the store half of `wasmpipe
//! worker`): jobs and results in PostgreSQL, chunks in a JetStream
//! stream that workers pull from.
//!
//! A job is recorded `pending` with its input, its chunks are published,
//! and only once JetStream has stored every one is it `accepted` (and the
//! client answered `202`). If publishing fails the job is abandoned:
//! workers drop any chunk of it that did get through, a dead-letter retry
//! it was is undone, and the client is told to retry (`429` if the stream
//! is full, else `503`).

use super::backend::{Backend, NewJob, Refused, Results, Submitted};
use super::model::{
    Chunks, DeadQuery, DeadRow, DeploymentRow, EventQuery, EventRow, Histogram, JobRow,
    NewDeployment, QueryError, Table, WindowQuery, WindowRow,
};
use super::postgres::PgStore;
use crate::exec::now_ms;
use crate::manifest::Manifest;
use crate::queue::jetstream::{ChunkQueue, PublishFailure};
use anyhow::{Context as _, Result};

/// Why a replay of named versions is refused here.
const PINNED: &str = "an ingest node replays on the versions its workers run now; a named version can be replayed by a `wasmpipe serve` that has it loaded";

/// PostgreSQL and JetStream, as the manifest's `[store]` and `[queue]` name.
pub struct Cluster {
    /// The central database.
    pub store: PgStore,
    /// The work queue.
    pub queue: ChunkQueue,
    pipeline: String,
    results: Results,
}

impl Cluster {
    /// Connects to the manifest's PostgreSQL store (creating the schema if
    /// needed) and NATS queue (creating the stream if needed).
    pub async fn connect(manifest: &Manifest, results: Results) -> Result<Cluster> {
        let q = manifest.doc.queue.clone().unwrap_or_default();
        let st = manifest.doc.store.clone().unwrap_or_default();
        let url = st
            .postgres_url()
            .context("`[store]` has no PostgreSQL `url`")?;
        let serve = manifest.doc.serve.clone().unwrap_or_default();
        let indexing = crate::manifest::Settings::new(manifest, &serve).indexing;
        let store = PgStore::connect(&url, st.pool.get(), &indexing).await?;
        let queue = ChunkQueue::connect(&q, manifest.name(), |p| manifest.resolve(p)).await?;
        tracing::info!(
            "chunks go through JetStream at {}, results to PostgreSQL at {}",
            crate::manifest::redact(&q.nats_url()),
            crate::manifest::redact(&url)
        );
        Ok(Cluster {
            store,
            queue,
            pipeline: manifest.name().to_string(),
            results,
        })
    }

    /// The pipeline (the manifest's) whose chunks this cluster carries.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// How the pipeline's results are made.
    pub fn results(&self) -> &Results {
        &self.results
    }

    /// Publishes the chunks of pending job `id` and, once JetStream has
    /// stored every one, accepts it; else abandons it and says why.
    async fn enqueue(&self, id: i64, chunks: &Chunks) -> Result<Submitted, Refused> {
        let events = chunks.iter().map(|c| c.1).sum();
        let refused = match self.queue.publish_job(id, chunks).await {
            Ok(()) => match self.store.accept_job(id).await {
                Ok(true) => return Ok(Submitted { job: id, events }),
                Ok(false) => Refused::Unavailable("the job was not accepted in time".into()),
                Err(e) => Refused::Unavailable(format!(
                    "cannot record the job in PostgreSQL ({e:#})"
                )),
            },
            Err(PublishFailure::Full) => Refused::Full {
                message: "the work queue is full (the JetStream stream is at `[queue] max_bytes`); retry later, or add workers".into(),
                retry_after: Some(5),
            },
            Err(PublishFailure::TooLarge { event, size, limit }) => Refused::TooLarge(format!(
                "event {event} is {size} bytes, more than the {limit} bytes a NATS message may carry (the server's max_payload); make it smaller, or raise max_payload in nats-server's configuration"
            )),
            Err(e) => Refused::Unavailable(format!("cannot queue the batch ({e})")),
        };
        if let Err(e) = self.store.abandon_job(id, None).await {
            // Workers abandon it themselves once it is old enough.
            tracing::warn!("cannot mark job {id} abandoned: {e:#}");
        }
        Err(refused)
    }
}

#[async_trait::async_trait]
impl Backend for Cluster {
    async fn submit(&self, job: NewJob) -> Result<Submitted, Refused> {
        if job.pinned.is_some() {
            return Err(Refused::Conflict(PINNED.into()));
        }
        let id = self.store.insert_job(&job).await.map_err(|e| {
            Refused::Unavailable(format!("cannot record the job in PostgreSQL ({e:#})"))
        })?;
        self.enqueue(id, &job.chunks).await
    }

    async fn retry_dead_letters(
        &self,
        job: i64,
        chunk_size: usize,
    ) -> Result<Option<Submitted>, Refused> {
        let cut = move |events: Vec<Vec<u8>>| super::cut(&events, chunk_size);
        let Some((new, chunks)) = self.store.retry_dead_letters(job, now_ms(), &cut).await? else {
            return Ok(None);
        };
        self.enqueue(new, &chunks).await.map(Some)
    }

    async fn replay(
        &self,
        job: &JobRow,
        pinned: Option<String>,
    ) -> Result<Option<Submitted>, Refused> {
        if pinned.is_some() {
            return Err(Refused::Conflict(PINNED.into()));
        }
        let Some((new, chunks)) = self.store.replay(job.id, now_ms()).await? else {
            return Ok(None);
        };
        self.enqueue(new, &chunks).await.map(Some)
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        self.store.job(id).await
    }

    async fn jobs(&self, pipeline: Option<String>, before: i64, limit: u32) -> Result<Vec<JobRow>> {
        self.store.jobs(pipeline.as_deref(), before, limit).await
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<EventRow>> {
        self.store.events(&query).await
    }

    async fn histogram(&self, query: EventQuery, buckets: u32) -> Result<Histogram> {
        self.store.histogram(&query, buckets).await
    }

    async fn dead_letters(&self, query: DeadQuery) -> Result<Vec<DeadRow>> {
        self.store.dead_letters(&query).await
    }

    async fn query(
        &self,
        sql: String,
        limit: usize,
        timeout: std::time::Duration,
    ) -> Result<Table, QueryError> {
        self.store.query(&sql, limit, timeout).await
    }

    async fn windows(&self, query: WindowQuery) -> Result<Vec<WindowRow>> {
        self.store.windows(&query).await
    }

    async fn last_ids(&self) -> Result<(i64, i64)> {
        self.store.last_ids().await
    }

    async fn job_input(&self, id: i64) -> Result<Option<Chunks>> {
        self.store.job_input(id).await
    }

    async fn purge(&self, cutoff: i64) -> Result<u64> {
        self.store.purge(cutoff).await
    }

    async fn tick_windows(&self, now: i64) -> Result<usize> {
        match &self.results.windows {
            Some(book) => self.store.tick_windows(&self.pipeline, book, now).await,
            None => Ok(0),
        }
    }

    async fn deploy(&self, d: NewDeployment) -> Result<DeploymentRow, Refused> {
        match self.store.deploy(&d).await? {
            Some(row) => Ok(row),
            None => Err(Refused::Conflict(super::backend::deploying(&d.pipeline))),
        }
    }

    async fn deployments(&self, pipeline: &str, limit: u32) -> Result<Vec<DeploymentRow>> {
        self.store.deployments(pipeline, limit).await
    }

    async fn deployment_module(&self, id: i64) -> Result<Option<Vec<u8>>> {
        self.store.deployment_module(id).await
    }

    async fn end_deployment(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Option<DeploymentRow>> {
        self.store
            .end_deployment(id, state, by, reason.as_deref(), now_ms())
            .await
    }

    async fn put_deployment_stats(&self, id: i64, process: &str, stats: String) -> Result<()> {
        self.store.put_deployment_stats(id, process, &stats).await
    }

    async fn deployment_stats(&self, id: i64) -> Result<Vec<String>> {
        self.store.deployment_stats(id).await
    }

    async fn depth(&self) -> (u64, u64) {
        (
            self.store.backlog(&self.pipeline).await.unwrap_or(0),
            self.queue.depth().await.unwrap_or(0),
        )
    }

    async fn unready(&self) -> Option<String> {
        if let Err(e) = self.store.ping().await {
            Some(format!("PostgreSQL is unreachable: {e:#}"))
        } else if !self.queue.connected() {
            Some("NATS is unreachable".to_string())
        } else {
            None
        }
    }

    fn close(&self) {}
}
