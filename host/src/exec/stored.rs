//! The one loop that takes a stored chunk to its commit, for `serve`'s
//! embedded workers and `wasmpipe worker`'s slots alike: take a chunk
//! from its [`Journal`], make it a [`Chunk`] and its context, run it (or
//! set it aside), tell the [`Observer`], commit the report, settle.
//!
//! What differs between the modes is behind [`Journal`]: where a chunk
//! waits (a queue of keys over the SQLite journal, or JetStream), how a
//! commit is made idempotent (a done mark, or a unique range), and what
//! settling means (nothing, or an acknowledgement). What only a cluster
//! needs (attempts, heartbeats, splitting a chunk that kills its workers)
//! is the cluster's journal's own business, in `worker/`.
//!
//! The loop runs on a thread of its own (see [`spawn`]), outside the async
//! runtime: the executor's guest calls block (and a component stage's WASI
//! drives a runtime of its own, which cannot start inside another), and so
//! may a journal (SQLite, the in-memory queue's wait), without holding up
//! the runtime that serves HTTP and drives NATS and PostgreSQL. Only the
//! journal's calls are driven on the runtime, one `block_on` each; a commit
//! that calls the guest (a job's combine, a window re-fold) does so inside
//! `tokio::task::block_in_place`.

use crate::exec::chunk::line_starts;
use crate::exec::deploy::Deploys;
use crate::exec::{Chunk, ChunkId, ChunkReport, Executor, LiveStages, RunContext};
use anyhow::{Context as _, Result, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A chunk taken from its journal, with what running it needs; `T` is the
/// journal's own handle on it (see [`Journal::Ticket`]).
pub struct Taken<T> {
    /// Which chunk.
    pub id: ChunkId,
    /// Its events, NDJSON (moved out when the chunk is run).
    pub data: Vec<u8>,
    /// Its job.
    pub job: Arc<StoredJob>,
    /// Run it, or set its events aside.
    pub work: Work,
    /// The journal's own handle on it.
    pub ticket: T,
}

/// What a chunk's job says about how to run it.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// Pipeline.
    pub pipeline: String,
    /// The request state stages see (a JSON object).
    pub context: String,
    /// When the job arrived (ms).
    pub received_at: i64,
    /// Stage versions a replay must run on (JSON: stage name to whole
    /// version), if any.
    pub pinned: Option<String>,
}

/// What to do with a taken chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run it through the stages.
    Run,
    /// Run nothing: every event becomes a dead letter of `stage` saying
    /// `why` (a single event that kept killing the workers it ran on).
    SetAside {
        /// The pseudo-stage named in the dead letters.
        stage: String,
        /// Why.
        why: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// How a chunk commit ended: the one answer of both stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Stored; `finished` if it was its job's last chunk.
    Stored {
        /// It finished its job.
        finished: bool,
    },
    /// Its events were already stored (a second delivery, or a chunk
    /// queued twice): nothing written.
    Duplicate,
}

/// How a pipeline's results are made when chunks commit.
#[derive(Debug, Clone)]
pub struct Results {
    /// Its last stage is a reduce with a job result (not windowed).
    pub reduces: bool,
    /// A windowed reduce's book: its windows span jobs.
    pub windows: Option<crate::exec::window::WindowBook>,
}

/// Where stored chunks wait and where their reports are committed.
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// What the journal keeps of a taken chunk until it is settled (a
    /// JetStream message and its heartbeat; nothing for the embedded one).
    type Ticket: Send + Sync;

    /// The next chunk to run; `None` once the journal is closed (shutdown).
    async fn take(&self) -> Option<Taken<Self::Ticket>>;

    /// Commits `report` of `taken`: outputs, dead letters, partial or
    /// window state and the done mark together, at most once per chunk.
    /// `exec` makes the guest calls a commit may need (the job's combine,
    /// a window re-fold). Transient failures are retried inside; an `Err`
    /// is one that would fail again, or shutdown.
    async fn commit(
        &self,
        taken: &Taken<Self::Ticket>,
        report: &ChunkReport,
        exec: &mut Executor,
    ) -> Result<Committed>;

    /// Done with `taken`: `outcome` is its commit, or why it could not be
    /// run or stored as a whole (then it is to be tried again later).
    async fn settle(&self, taken: Taken<Self::Ticket>, outcome: &Result<Committed>);
}

/// Who hears what the loop did (the Prometheus counters).
pub trait Observer: Send + Sync {
    /// A chunk ran (its stage counts, retries).
    fn ran(&self, report: &ChunkReport);
    /// A chunk's report was stored, `took` after it was taken; `finished`
    /// if it was its job's last chunk.
    fn stored(&self, report: &ChunkReport, took: Duration, finished: bool);
    /// A chunk failed as a whole and will be tried again.
    fn failed(&self);
}

/// What every chunk of a loop is run with.
pub struct Loop {
    /// The stages, and the versions a replay may pin.
    pub live: Arc<LiveStages>,
    /// A candidate version running beside the live one, if any: which
    /// chunks a canary takes, what a shadow runs again.
    pub deploys: Option<Arc<Deploys>>,
    /// This machine's name, for the stages' context.
    pub host: String,
    /// Counters.
    pub observer: Arc<dyn Observer>,
}

impl Loop {
    /// Until the journal closes: take a chunk, run it, commit, settle;
    /// the journal's calls are driven on `rt`.
    pub fn drain<J: Journal>(&self, rt: &tokio::runtime::Handle, journal: &J, exec: &mut Executor) {
        while let Some(mut taken) = rt.block_on(journal.take()) {
            let t = Instant::now();
            let data = std::mem::take(&mut taken.data);
            let outcome = self.process(rt, journal, exec, &taken, data, t);
            if let Err(e) = &outcome {
                self.observer.failed();
                tracing::error!(
                    "job {} events {}+{}: {e:#}; it will be tried again",
                    taken.id.job,
                    taken.id.first_index,
                    taken.id.events
                );
            }
            rt.block_on(journal.settle(taken, &outcome));
        }
    }

    fn process<J: Journal>(
        &self,
        rt: &tokio::runtime::Handle,
        journal: &J,
        exec: &mut Executor,
        taken: &Taken<J::Ticket>,
        data: Vec<u8>,
        t: Instant,
    ) -> Result<Committed> {
        let id = taken.id;
        let chunk = to_chunk(data, id.seq, id.first_index);
        if chunk.len() as u64 != id.events {
            bail!(
                "job {} chunk at event {} holds {} events, its record says {}",
                id.job,
                id.first_index,
                chunk.len(),
                id.events
            );
        }
        let job = &taken.job;
        let ctx = chunk_context(id.job, &self.host, &job.context, &job.pipeline, id.seq)?;
        let report = match (&taken.work, &job.pinned) {
            (
                Work::SetAside {
                    stage,
                    why,
                    attempts,
                },
                _,
            ) => exec.set_aside(&chunk, stage, why, *attempts),
            (Work::Run, None) => match self
                .deploys
                .as_ref()
                .and_then(|d| d.canary_for(id.job, id.seq))
            {
                Some(candidate) => exec.run_on(candidate, &chunk, &ctx)?,
                None => exec.run(&chunk, &ctx)?,
            },
            // A replay asked for named versions: those or none. After a
            // restart they may be gone; then its events are dead letters
            // saying so (a retry runs them on the current versions), rather
            // than outputs of a version nobody asked for.
            (Work::Run, Some(pin)) => match self.live.pinned(pin) {
                Ok(set) => exec.run_on(set, &chunk, &ctx)?,
                Err(stage) => {
                    let at = exec
                        .stages()
                        .iter()
                        .position(|s| s.name() == stage)
                        .unwrap_or(0);
                    let why = format!(
                        "the replay asked for stage `{stage}` at a version this server no longer has loaded ({pin}); retry the dead letters to run them on the current version"
                    );
                    exec.refuse(&chunk, at, &why)
                }
            },
        };
        self.observer.ran(&report);
        let committed = rt
            .block_on(journal.commit(taken, &report, exec))
            .with_context(|| {
                format!(
                    "cannot store the outputs of job {} events {}+{}",
                    id.job, id.first_index, id.events
                )
            })?;
        if let Committed::Stored { finished } = committed {
            self.observer.stored(&report, t.elapsed(), finished);
            // Counted (and shadowed) once stored: a chunk run again after a
            // failed commit is not counted twice.
            if let (Some(d), Work::Run) = (&self.deploys, &taken.work) {
                d.committed(id.job, &chunk, &ctx, &report);
            }
        }
        Ok(committed)
    }
}

/// Runs `journal`'s loop on a thread named `name` with its own executor,
/// driving the journal's futures on `rt`.
pub fn spawn<J: Journal + 'static>(
    name: String,
    rt: tokio::runtime::Handle,
    run: Arc<Loop>,
    journal: Arc<J>,
    mut exec: Executor,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run.drain(&rt, &*journal, &mut exec))
        .context("cannot start a worker thread")
}

/// The context object stages see for one chunk of a stored job.
pub fn chunk_context(
    job: i64,
    host: &str,
    context: &str,
    pipeline: &str,
    seq: u64,
) -> Result<Vec<u8>> {
    let extra = match serde_json::from_str(context)? {
        serde_json::Value::Object(m) => m,
        _ => Default::default(),
    };
    RunContext {
        job: job.to_string(),
        host: host.to_string(),
        extra,
    }
    .chunk_json(pipeline, seq)
}

/// Stored chunk data as a [`Chunk`] (line numbers are event numbers).
pub fn to_chunk(data: Vec<u8>, seq: u64, first_index: u64) -> Chunk {
    let starts: Vec<u32> = line_starts(&data).into_iter().map(|s| s as u32).collect();
    let lines = (0..starts.len() as u64)
        .map(|i| first_index + i + 1)
        .collect();
    Chunk {
        seq,
        data,
        starts,
        first_index,
        lines,
        rejects: Vec::new(),
    }
}

/// Retries `op` while `retryable` says its failure may pass, pausing
/// twice as long each time (from 100 ms, at most 5 s), until `stopping`.
/// The one backoff of the stores and the cluster's journal.
pub async fn with_backoff<T, F: std::future::Future<Output = Result<T>>>(
    what: &str,
    stopping: &std::sync::atomic::AtomicBool,
    retryable: impl Fn(&anyhow::Error) -> bool,
    mut op: impl FnMut() -> F,
) -> Result<T> {
    const MAX: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if stopping.load(std::sync::atomic::Ordering::Relaxed) => {
                return Err(e.context(format!("stopping before it could {what}")));
            }
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => {
                tracing::warn!("cannot {what}: {e:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX);
            }
        }
    }
}
