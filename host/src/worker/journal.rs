//! A cluster worker's [`Journal`]: chunks pulled from JetStream, reports
//! committed to PostgreSQL, each message acknowledged only after its
//! commit. What only a cluster needs lives here: a job's state before its
//! chunks may run, attempts counted in PostgreSQL, heartbeats while a
//! chunk is in hand, and a chunk that keeps killing its workers split or
//! set aside.

use super::{ABANDON_AFTER, PENDING_RETRY};
use crate::exec::chunk::halve;
use crate::exec::stored::{Committed, Journal, StoredJob, Taken, Work, with_backoff};
use crate::exec::window::Fold;
use crate::exec::{ChunkId, ChunkReport, Executor, now_ms};
use crate::queue::jetstream;
use crate::store::backend::retryable;
use crate::store::cluster::Cluster;
use crate::store::postgres::JobState;
use anyhow::{Result, bail};
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The JetStream consumer of a pipeline and the PostgreSQL store.
pub struct WorkerJournal {
    /// Store and stream.
    pub cluster: Arc<Cluster>,
    /// Where chunks are pulled from.
    pub consumer: PullConsumer,
    /// `host/pid`, recorded with each chunk it commits.
    pub name: String,
    /// Events per chunk of a message without a sequence header.
    pub chunk_size: usize,
    /// A chunk started more often than this is split or set aside.
    pub max_attempts: i64,
    /// How often a busy slot reports progress: a third of `ack_wait`.
    pub heartbeat: Duration,
    /// The pause before a failed chunk is delivered again.
    pub backoff: Duration,
    /// Set at shutdown: slots finish the chunk in hand and stop.
    pub stopping: Arc<AtomicBool>,
    /// Jobs known accepted.
    pub jobs: Mutex<HashMap<i64, Arc<StoredJob>>>,
}

/// A taken message: acknowledged when settled; its heartbeat stops then.
pub struct Ticket {
    msg: Arc<Message>,
    beat: tokio::task::JoinHandle<()>,
}

/// What to do with a chunk, by the state of its job.
enum Lookup {
    /// Accepted: run it.
    Ready(Arc<StoredJob>),
    /// Abandoned (never accepted): drop it.
    Drop,
    /// Still `pending` (its ingest node is publishing, or died doing so):
    /// not now. A slot never waits for one job while others' chunks
    /// queue behind it; the job is abandoned once it is older than
    /// [`ABANDON_AFTER`], here or by the sweep.
    Later,
}

/// What became of a message before it could run.
enum Before {
    /// Run this (its work, the chunk's data and its job).
    Run(ChunkId, Vec<u8>, Arc<StoredJob>, Work),
    /// Handled (dropped, split): acknowledge it.
    Ack,
    /// Its job is still pending: hand it back for a little while.
    Later,
    /// It cannot be run now: hand it back after the backoff.
    Failed(anyhow::Error),
}

impl WorkerJournal {
    async fn next_message(&self) -> Option<Message> {
        while !self.stopping.load(Relaxed) {
            let fetched = self
                .consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let next = match fetched {
                Ok(mut batch) => batch.next().await,
                Err(e) => Some(Err(e.into())),
            };
            match next {
                None => continue,
                Some(Ok(m)) => return Some(m),
                Some(Err(e)) => {
                    tracing::warn!("cannot pull from JetStream: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        None
    }

    /// Looks the message's job up, counts the attempt, and splits or sets
    /// aside a chunk started too often.
    async fn prepare(&self, msg: &Message) -> Before {
        let id = match jetstream::chunk_of(msg, self.chunk_size) {
            Ok(r) => r,
            Err(e) => {
                // Not a wasmpipe chunk: nothing of ours is lost by dropping it.
                tracing::error!(
                    "dropping a message on {} that is not a wasmpipe chunk: {e:#}",
                    msg.subject
                );
                return Before::Ack;
            }
        };
        let job = match self.job(id.job).await {
            Ok(Lookup::Ready(job)) => job,
            Ok(Lookup::Drop) => return Before::Ack,
            Ok(Lookup::Later) => return Before::Later,
            Err(e) => return Before::Failed(e),
        };
        let pipeline = self.cluster.pipeline();
        if job.pipeline != pipeline {
            return Before::Failed(anyhow::anyhow!(
                "job {} belongs to pipeline `{}`, not `{}`: this stream carries another pipeline's chunks; hint: give each pipeline its own `[queue] stream`",
                id.job,
                job.pipeline,
                pipeline
            ));
        }
        let store = &self.cluster.store;
        let started = match with_backoff("count an attempt", &self.stopping, retryable, || {
            store.start_attempt(id)
        })
        .await
        {
            Ok(n) => i64::from(n),
            Err(e) => return Before::Failed(e),
        };
        let mut work = Work::Run;
        if started > self.max_attempts {
            match self.isolate(id, &msg.payload, started).await {
                Ok(Some(w)) => work = w,
                Ok(None) => return Before::Ack,
                Err(e) => return Before::Failed(e),
            }
        }
        Before::Run(id, msg.payload.to_vec(), job, work)
    }

    /// The job of a chunk. A job unknown to this database is an error: the
    /// chunk is given back.
    async fn job(&self, id: i64) -> Result<Lookup> {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(Lookup::Ready(j.clone()));
        }
        let store = &self.cluster.store;
        let info = with_backoff("read a job", &self.stopping, retryable, || {
            store.job_info(id)
        })
        .await?;
        let Some(j) = info else {
            // Not dropped: it is accepted work, and the likely cause is a
            // worker pointed at the wrong database.
            bail!(
                "job {id} is not in this database; hint: do the ingest nodes and workers share one `[store] url`?"
            );
        };
        match j.state {
            JobState::Accepted => {
                let job = Arc::new(StoredJob {
                    pipeline: j.pipeline,
                    context: j.context,
                    received_at: j.received_at,
                    pinned: None,
                });
                let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                if jobs.len() > 1000 {
                    jobs.clear();
                }
                jobs.insert(id, job.clone());
                Ok(Lookup::Ready(job))
            }
            JobState::Abandoned => {
                tracing::info!("dropping a chunk of job {id}, which was never accepted");
                Ok(Lookup::Drop)
            }
            JobState::Pending => {
                let cutoff = now_ms() - ABANDON_AFTER.as_millis() as i64;
                if j.received_at < cutoff && store.abandon_job(id, Some(cutoff)).await? {
                    tracing::warn!(
                        "job {id} was never accepted by its ingest node; its chunks are dropped"
                    );
                    return Ok(Lookup::Drop);
                }
                Ok(Lookup::Later)
            }
        }
    }

    /// A chunk started too often: split it without running it (`None`),
    /// or, for a single event, set it aside as a dead letter.
    async fn isolate(&self, id: ChunkId, data: &[u8], started: i64) -> Result<Option<Work>> {
        if let Some(halves) = halve(data) {
            for half in &halves {
                self.cluster
                    .queue
                    .publish(id.piece(half), bytes::Bytes::copy_from_slice(half.data))
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot publish a piece of a split chunk: {e}"))?;
            }
            tracing::warn!(
                "job {} events {}+{} were started {} and never finished; split in two to isolate the event that stops workers",
                id.job,
                id.first_index,
                id.events,
                times(started - 1)
            );
            if let Err(e) = self.cluster.store.forget_attempts(id).await {
                tracing::debug!("cannot clear the attempts of a split chunk: {e:#}");
            }
            return Ok(None);
        }
        tracing::warn!(
            "job {} event {}: set aside as a dead letter after {} unfinished attempts",
            id.job,
            id.first_index,
            started - 1
        );
        Ok(Some(Work::SetAside {
            stage: "worker".into(),
            why: format!(
                "workers started this event {} and none finished it (each was killed, crashed or cut off while it ran); it was set aside so that it cannot stall the queue",
                times(started - 1)
            ),
            attempts: (started - 1) as u32,
        }))
    }
}

#[async_trait::async_trait]
impl Journal for WorkerJournal {
    type Ticket = Ticket;

    async fn take(&self) -> Option<Taken<Ticket>> {
        loop {
            let msg = Arc::new(self.next_message().await?);
            // Report progress while the chunk is in hand, so that a slow
            // chunk is not mistaken for a dead worker.
            let beat = {
                let msg = msg.clone();
                let every = self.heartbeat;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let _ = msg.ack_with(AckKind::Progress).await;
                    }
                })
            };
            let before = self.prepare(&msg).await;
            match before {
                Before::Run(id, data, job, work) => {
                    return Some(Taken {
                        id,
                        data,
                        job,
                        work,
                        ticket: Ticket { msg, beat },
                    });
                }
                Before::Ack => {
                    beat.abort();
                    ack(&msg).await;
                }
                Before::Later => {
                    // Its job is still being accepted: give the chunk back
                    // for a little while and take other jobs' chunks.
                    beat.abort();
                    let _ = msg.ack_with(AckKind::Nak(Some(PENDING_RETRY))).await;
                }
                Before::Failed(e) => {
                    beat.abort();
                    tracing::error!("{e:#}; the chunk will be delivered again");
                    let _ = msg.ack_with(AckKind::Nak(Some(self.backoff))).await;
                }
            }
        }
    }

    async fn commit(
        &self,
        taken: &Taken<Ticket>,
        report: &ChunkReport,
        exec: &mut Executor,
    ) -> Result<Committed> {
        let store = &self.cluster.store;
        let results = self.cluster.results();
        let name = &self.name;
        let id = taken.id;
        let exec = &tokio::sync::Mutex::new(exec);
        let job = &*taken.job;
        let committed = with_backoff("store a chunk", &self.stopping, retryable, || async move {
            let mut exec = exec.lock().await;
            match &results.windows {
                // A windowed reduce has no job result: its windows span jobs.
                Some(book) => {
                    let fold = Some((book, &mut **exec as &mut (dyn Fold + Send)));
                    store
                        .complete_chunk(id, job, report, name, None, fold)
                        .await
                }
                None => {
                    let mut combine = |partials: Vec<Vec<u8>>| exec.combine(partials);
                    let combine = results
                        .reduces
                        .then_some(&mut combine as &mut crate::store::Combine<'_>);
                    store
                        .complete_chunk(id, job, report, name, combine, None)
                        .await
                }
            }
        })
        .await?;
        match committed {
            Committed::Stored { finished: true } => tracing::info!("job {} finished", id.job),
            Committed::Stored { .. } => {}
            Committed::Duplicate => tracing::debug!(
                "job {} events {}+{} were already stored",
                id.job,
                id.first_index,
                id.events
            ),
        }
        Ok(committed)
    }

    async fn settle(&self, taken: Taken<Ticket>, outcome: &Result<Committed>) {
        let ticket = taken.ticket;
        ticket.beat.abort();
        let store = &self.cluster.store;
        match outcome {
            Ok(Committed::Stored { .. }) => ack(&ticket.msg).await,
            // Redelivered after an earlier commit: its attempt row is left over.
            Ok(Committed::Duplicate) => {
                let _ = store.forget_attempts(taken.id).await;
                ack(&ticket.msg).await;
            }
            Err(_) => {
                // The worker lived to report the failure, so this attempt
                // is not one of those that count towards `max_attempts`.
                let _ = store.end_attempt(taken.id).await;
                let _ = ticket.msg.ack_with(AckKind::Nak(Some(self.backoff))).await;
            }
        }
    }
}

async fn ack(msg: &Message) {
    if let Err(e) = msg.double_ack().await {
        // It comes back, finds its range done and is acked then.
        tracing::warn!("cannot acknowledge a chunk: {e}; it will be redelivered and found done");
    }
}

fn times(n: i64) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}
