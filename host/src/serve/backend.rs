//! The two backends of `wasmpipe serve` (`[queue]` and `[store]`), and
//! the reads every route makes of whichever is configured, dispatched
//! here once rather than in each route. What differs in substance (a
//! batch journaled in SQLite or published to JetStream, a replay that
//! only the journal can make) stays in its route.

use super::Service;
use crate::queue::{jetstream, memory as queue};
use crate::store::{
    DeadRow, EventQuery, EventRow, JobRow, WindowQuery, WindowRow, postgres, sqlite as store,
};
use anyhow::{Result, bail};
use std::sync::Arc;

/// Where jobs wait and results go (`[queue]` and `[store]`).
pub enum Backend {
    /// One process: a SQLite journal and store, and worker threads fed
    /// from an in-memory queue of chunk keys.
    Embedded {
        /// The journal and store.
        store: store::Store,
        /// Chunks waiting.
        queue: queue::Queue,
    },
    /// An ingest node: chunks go to JetStream for `wasmpipe worker`s,
    /// results come from PostgreSQL.
    Cluster {
        /// The central database.
        store: postgres::PgStore,
        /// The work queue.
        queue: jetstream::ChunkQueue,
    },
}

impl Service {
    /// The SQLite store and the chunk queue; only the embedded backend's
    /// code paths (its workers, replay) call this.
    pub fn embedded(&self) -> (&store::Store, &queue::Queue) {
        match &self.backend {
            Backend::Embedded { store, queue } => (store, queue),
            Backend::Cluster { .. } => {
                panic!("an embedded-queue path ran on a cluster backend")
            }
        }
    }
}

/// Runs `f` on the SQLite store, off the async threads.
async fn sqlite<T: Send + 'static>(
    svc: &Arc<Service>,
    f: impl FnOnce(&store::Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let svc = svc.clone();
    tokio::task::spawn_blocking(move || match &svc.backend {
        Backend::Embedded { store, .. } => f(store),
        Backend::Cluster { .. } => bail!("the SQLite store was asked for on a cluster backend"),
    })
    .await?
}

/// One job.
pub async fn job(svc: &Arc<Service>, id: i64) -> Result<Option<JobRow>> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.job(id).await,
        Backend::Embedded { .. } => sqlite(svc, move |s| s.job(id)).await,
    }
}

/// Jobs, newest first, before id `before`.
pub async fn jobs(
    svc: &Arc<Service>,
    pipeline: Option<String>,
    before: i64,
    limit: u32,
) -> Result<Vec<JobRow>> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.jobs(pipeline.as_deref(), before, limit).await,
        Backend::Embedded { .. } => {
            sqlite(svc, move |s| s.jobs(pipeline.as_deref(), before, limit)).await
        }
    }
}

/// Stored events matching `query`, oldest first.
pub async fn events(svc: &Arc<Service>, query: EventQuery) -> Result<Vec<EventRow>> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.events(&query).await,
        Backend::Embedded { .. } => sqlite(svc, move |s| s.events(&query)).await,
    }
}

/// A job's input, as the chunks it was cut into (`None`: no such job).
pub async fn job_input(svc: &Arc<Service>, id: i64) -> Result<Option<crate::store::Chunks>> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.job_input(id).await,
        Backend::Embedded { .. } => sqlite(svc, move |s| s.job_input(id)).await,
    }
}

/// The newest stored event's and dead letter's ids (0: none), where a
/// live tail starts.
pub async fn last_ids(svc: &Arc<Service>) -> Result<(i64, i64)> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.last_ids().await,
        Backend::Embedded { .. } => sqlite(svc, move |s| s.last_ids()).await,
    }
}

/// Closed windows matching `query`, in the order they closed.
pub async fn windows(svc: &Arc<Service>, query: WindowQuery) -> Result<Vec<WindowRow>> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.windows(&query).await,
        Backend::Embedded { .. } => sqlite(svc, move |s| s.windows(&query)).await,
    }
}

/// Dead letters, oldest first, after id `after`.
pub async fn dead_letters(
    svc: &Arc<Service>,
    pipeline: Option<String>,
    job: Option<i64>,
    after: i64,
    limit: u32,
) -> Result<Vec<DeadRow>> {
    match &svc.backend {
        Backend::Cluster { store, .. } => {
            store
                .dead_letters(pipeline.as_deref(), job, after, limit)
                .await
        }
        Backend::Embedded { .. } => {
            sqlite(svc, move |s| {
                s.dead_letters(pipeline.as_deref(), job, after, limit)
            })
            .await
        }
    }
}

/// Deletes what retention no longer keeps (received before `cutoff`, ms);
/// returns the events deleted.
pub async fn purge(svc: &Arc<Service>, cutoff: i64) -> Result<u64> {
    match &svc.backend {
        Backend::Cluster { store, .. } => store.purge(cutoff).await,
        Backend::Embedded { .. } => sqlite(svc, move |s| s.purge(cutoff)).await,
    }
}
