//! The PostgreSQL store, shared by every `wasmpipe serve` ingest node and
//! every `wasmpipe worker`: jobs, stored output events, dead letters, each
//! chunk's done mark and reduce partial, and each job's result. Tables live
//! in the schema `wasmpipe`, so `SELECT * FROM wasmpipe.events` works.
//!
//! What keeps results exact while chunks are redelivered, split and
//! processed concurrently on many machines:
//! - A chunk's outputs, dead letters, partial and done mark are one
//!   transaction. The done mark is a row keyed by the chunk's event range
//!   `(job, first_index, events)`; a second commit of the same range waits
//!   on the first and stores nothing.
//! - Before committing, a transaction locks its job's row (the update of its
//!   counters) and then checks that no other committed chunk overlaps its
//!   range, which catches a chunk committed whole by a worker that was
//!   presumed dead after its pieces were committed, or the other way round.
//! - The transaction that brings `events_done` to `events_in` reads every
//!   partial and stores the combined result, under the same lock, so the
//!   result is computed exactly once from exactly the committed partials.
//! - Windows (a windowed reduce): after those checks, the commit locks the
//!   pipeline's `window_clock` row, loads the open windows the chunk can
//!   touch, runs the window book on them and writes back what changed,
//!   closed windows' results included. The lock orders window commits
//!   across workers, so a window closes in exactly one transaction,
//!   whichever worker's chunk moves the watermark past its end; a worker
//!   killed before its commit leaves nothing, and its chunk is redelivered.
//! - A job is `pending` until its ingest node has every chunk acknowledged
//!   by JetStream, then `accepted`; chunks of a job that never got there
//!   (the client was answered with an error) are dropped as `abandoned`.

use super::InputPurged;
use super::backend::NewJob;
use super::model::{
    Chunks, Combine, DeadQuery, DeadRow, ErrorKind, EventQuery, EventRow, Histogram, JobRow,
    QueryError, Table, WindowQuery, WindowRow,
};
use super::search::{Indexing, Term};
use crate::exec::stored::{Committed, StoredJob};
use crate::exec::window::{Clock, Fold, MemoryWindows, WindowBook, WindowedChunk};
use crate::exec::{ChunkId, ChunkReport, DeadLetter};
use anyhow::{Context as _, Result, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tokio_postgres::types::Type;

const SCHEMA_V1: &str = "
CREATE SCHEMA IF NOT EXISTS wasmpipe;
CREATE TABLE IF NOT EXISTS wasmpipe.jobs (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- ingest, retry
    origin BIGINT,                      -- the job retried
    state TEXT NOT NULL DEFAULT 'pending', -- pending, accepted, abandoned
    received_at BIGINT NOT NULL,        -- ms since the Unix epoch
    started_at BIGINT,
    finished_at BIGINT,
    context TEXT NOT NULL,              -- request state handed to stages (JSON)
    events_in BIGINT NOT NULL,
    events_done BIGINT NOT NULL DEFAULT 0,
    events_out BIGINT NOT NULL DEFAULT 0,
    dead_letters BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL DEFAULT 0,
    chunks BIGINT NOT NULL,
    chunks_done BIGINT NOT NULL DEFAULT 0,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_pipeline ON wasmpipe.jobs (pipeline, id);
CREATE TABLE IF NOT EXISTS wasmpipe.chunks (
    job BIGINT NOT NULL,
    first_index BIGINT NOT NULL,        -- index in the job of its first event
    events BIGINT NOT NULL,
    partial BYTEA,                      -- its reduce accumulator
    versions TEXT NOT NULL,             -- stage versions that processed it (JSON)
    worker TEXT NOT NULL,               -- host and process that committed it
    done_at BIGINT NOT NULL,
    PRIMARY KEY (job, first_index, events)
);
CREATE TABLE IF NOT EXISTS wasmpipe.attempts (
    job BIGINT NOT NULL,                -- chunks started and not yet committed
    first_index BIGINT NOT NULL,
    events BIGINT NOT NULL,
    started INTEGER NOT NULL,           -- times a worker started it
    PRIMARY KEY (job, first_index, events)
);
CREATE TABLE IF NOT EXISTS wasmpipe.events (
    id BIGSERIAL PRIMARY KEY,
    job BIGINT NOT NULL,
    pipeline TEXT NOT NULL,
    idx BIGINT NOT NULL,                -- index in the job of its input event
    at BIGINT NOT NULL,                 -- the job's received_at
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON wasmpipe.events (job, id);
CREATE INDEX IF NOT EXISTS events_pipeline ON wasmpipe.events (pipeline, id);
-- Rows arrive in roughly time order, so a BRIN index serves time ranges
-- and retention at a fraction of a B-tree's cost per insert.
CREATE INDEX IF NOT EXISTS events_at ON wasmpipe.events USING brin (at);
CREATE TABLE IF NOT EXISTS wasmpipe.dead_letters (
    id BIGSERIAL PRIMARY KEY,
    job BIGINT NOT NULL,
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    error TEXT NOT NULL,
    idx BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    at BIGINT NOT NULL,
    event BYTEA NOT NULL,
    retried_by BIGINT
);
CREATE INDEX IF NOT EXISTS dead_job ON wasmpipe.dead_letters (job, id);
CREATE INDEX IF NOT EXISTS dead_pipeline ON wasmpipe.dead_letters (pipeline, id);
CREATE TABLE IF NOT EXISTS wasmpipe.schema_version (version INTEGER PRIMARY KEY);
-- Windowed reduce: the clock (its row is the lock that orders window
-- commits), open windows' partials, closed windows' results.
CREATE TABLE IF NOT EXISTS wasmpipe.window_clock (
    pipeline TEXT PRIMARY KEY,
    max_time BIGINT,                    -- largest event time committed (ms)
    last_seen BIGINT,                   -- wall time of the last events (ms)
    open_windows BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS wasmpipe.open_windows (
    pipeline TEXT NOT NULL,
    end_at BIGINT NOT NULL,
    start_at BIGINT NOT NULL,
    key TEXT NOT NULL,                  -- '' for an unkeyed reduce
    partial BYTEA NOT NULL,
    PRIMARY KEY (pipeline, end_at, start_at, key)
);
CREATE INDEX IF NOT EXISTS open_windows_key ON wasmpipe.open_windows (pipeline, key, start_at);
CREATE TABLE IF NOT EXISTS wasmpipe.windows (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    key TEXT,
    value TEXT NOT NULL,
    closed_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_pipeline ON wasmpipe.windows (pipeline, id);
";

/// Added in version 2: every job's input, as the chunks it was published as, so
/// that an ingest node can replay and diff a job after the workers have
/// taken its chunks off JetStream. Retention deletes it with the events.
const INPUTS: &str = "
CREATE TABLE IF NOT EXISTS wasmpipe.inputs (
    job BIGINT NOT NULL,
    seq BIGINT NOT NULL,                -- the chunk's number in its job
    first_index BIGINT NOT NULL,
    events BIGINT NOT NULL,
    data BYTEA NOT NULL,                -- the chunk's events, one JSON per line
    PRIMARY KEY (job, seq)
);
";

/// Added in version 3: each event's own time, the searchable text of
/// dead letters, and the views of read-only SQL. (The events' text index
/// and the field indexes are made by [`PgStore::index`], as `[serve]`
/// asks.)
const SEARCH: &str = "
ALTER TABLE wasmpipe.events ADD COLUMN IF NOT EXISTS time BIGINT;
ALTER TABLE wasmpipe.dead_letters ADD COLUMN IF NOT EXISTS words TEXT;
CREATE INDEX IF NOT EXISTS events_time ON wasmpipe.events USING brin (time);
CREATE INDEX IF NOT EXISTS dead_text ON wasmpipe.dead_letters
    USING gin (to_tsvector('simple', coalesce(words, '')));
";

/// The events' text, as the text index holds it and a search reads it.
const EVENT_TEXT: &str = "jsonb_to_tsvector('simple', body::jsonb, '[\"string\", \"numeric\"]')";

/// Bumped when the schema changes; `connect` brings older ones up.
const SCHEMA_VERSION: i32 = 4;

/// A job's state, as workers need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Its chunks are still being published.
    Pending,
    /// Every chunk is in JetStream and the client got its 202.
    Accepted,
    /// Its client got an error; its chunks are dropped.
    Abandoned,
}

/// What workers need to know of a job.
#[derive(Debug, Clone)]
pub struct JobInfo {
    /// Its state.
    pub state: JobState,
    /// Pipeline.
    pub pipeline: String,
    /// Request state (JSON).
    pub context: String,
    /// When it arrived (ms).
    pub received_at: i64,
}

/// The store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    indexing: std::sync::Arc<Indexing>,
}

impl PgStore {
    /// Connects to `url` with up to `pool` connections and creates the
    /// schema if needed.
    pub async fn connect(url: &str, pool: usize, indexing: &Indexing) -> Result<PgStore> {
        let not_a_string = || {
            format!(
                "`{}` is not a PostgreSQL connection string; hint: write `postgres://user:password@host:5432/database`",
                crate::manifest::redact(url)
            )
        };
        // TLS as libpq spells it (`sslmode=verify-full&sslrootcert=...`):
        // tokio-postgres is given the rest (tls/postgres.rs).
        let (rest, tls) = crate::tls::postgres::split(url).with_context(not_a_string)?;
        let config: tokio_postgres::Config = rest.parse().with_context(not_a_string)?;
        let manager = Manager::from_config(
            config,
            tls.connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool)
            .build()
            .context("cannot create the PostgreSQL connection pool")?;
        let store = PgStore {
            pool,
            indexing: std::sync::Arc::new(indexing.clone()),
        };
        let mut c = store.client().await.with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}; hint: is the server running, and does the database exist?",
                crate::manifest::redact(url)
            )
        })?;
        // DDL only when the schema is missing: `CREATE INDEX IF NOT EXISTS`
        // locks its table even when the index exists, and would deadlock
        // with the workers already writing there.
        if schema_version(&c).await? == Some(SCHEMA_VERSION) {
            store.index(&mut c, indexing).await?;
            return Ok(store);
        }
        let tx = c.transaction().await?;
        // Processes starting together take turns, and the later ones find
        // the schema made.
        tx.execute("SELECT pg_advisory_xact_lock(7092210416)", &[])
            .await?;
        match schema_version(&tx).await? {
            Some(SCHEMA_VERSION) => {}
            Some(3) => {
                tracing::info!(
                    "upgrading the wasmpipe schema to version {SCHEMA_VERSION}: deployments"
                );
                tx.batch_execute(super::postgres_deploys::SCHEMA)
                    .await
                    .context("cannot add deployments to the wasmpipe schema")?;
                tx.execute(
                    "INSERT INTO wasmpipe.schema_version (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            }
            Some(v @ (1 | 2)) => {
                tx.batch_execute(super::postgres_deploys::SCHEMA)
                    .await
                    .context("cannot add deployments to the wasmpipe schema")?;
                if v == 1 {
                    tx.batch_execute(INPUTS)
                        .await
                        .context("cannot add the `inputs` table to the wasmpipe schema")?;
                }
                tracing::info!(
                    "upgrading the wasmpipe schema to version {SCHEMA_VERSION}: event times and search"
                );
                tx.batch_execute(SEARCH)
                    .await
                    .context("cannot add event times and search to the wasmpipe schema")?;
                let n = tx
                    .execute(
                        "UPDATE wasmpipe.events SET time = at WHERE time IS NULL",
                        &[],
                    )
                    .await?;
                tracing::info!(
                    "{n} events stored before the upgrade get their arrival as their time"
                );
                tx.execute(
                    "INSERT INTO wasmpipe.schema_version (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            }
            Some(v) => bail!(
                "the wasmpipe schema in this database is version {v}, and this wasmpipe knows version {SCHEMA_VERSION}; hint: use a wasmpipe of the same version as the other processes, or a new database"
            ),
            None => {
                tx.batch_execute(&format!(
                    "{SCHEMA_V1}{INPUTS}{SEARCH}{}",
                    super::postgres_deploys::SCHEMA
                ))
                .await
                .context("cannot create the wasmpipe schema in PostgreSQL")?;
                // Never a second row, whatever a concurrent start did.
                tx.execute(
                    "INSERT INTO wasmpipe.schema_version (version) SELECT $1
                     WHERE NOT EXISTS (SELECT 1 FROM wasmpipe.schema_version WHERE version = $1)",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            }
        }
        tx.batch_execute(super::sql::PG_VIEWS)
            .await
            .context("cannot create the views of read-only SQL (schema `wasmpipe_query`)")?;
        tx.commit().await?;
        // The role read-only SQL runs as: a user that may not create roles
        // still stores and serves; `/v1/query` then says what to do.
        if let Err(e) = c.batch_execute(super::sql::PG_ROLE).await {
            tracing::warn!(
                "cannot create the role `wasmpipe_reader` for read-only SQL (`POST /v1/query` will refuse): {e}"
            );
        }
        store.index(&mut c, indexing).await?;
        Ok(store)
    }

    /// Creates the text index and the field indexes `indexing` asks for
    /// that are missing, and drops those no longer asked for. Built
    /// concurrently: workers go on writing while an index is made. One
    /// process at a time (a session lock), the others find them made.
    async fn index(&self, c: &mut deadpool_postgres::Client, indexing: &Indexing) -> Result<()> {
        let mut wanted: Vec<(String, String)> = indexing
            .fields
            .iter()
            .map(|f| (f.index_name(), format!("btree ({})", f.pg_expr())))
            .collect();
        if indexing.full_text {
            wanted.push(("events_text".into(), format!("gin (({EVENT_TEXT}))")));
        }
        let existing: Vec<String> = c
            .query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'wasmpipe' AND tablename = 'events'
                   AND (indexname LIKE 'events\\_field\\_%' OR indexname = 'events_text')",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let stale: Vec<&String> = existing
            .iter()
            .filter(|n| !wanted.iter().any(|w| &w.0 == *n))
            .collect();
        let missing: Vec<&(String, String)> =
            wanted.iter().filter(|w| !existing.contains(&w.0)).collect();
        if stale.is_empty() && missing.is_empty() {
            return Ok(());
        }
        c.execute("SELECT pg_advisory_lock(7092210417)", &[])
            .await?;
        let made = async {
            for name in stale {
                tracing::info!("dropping index {name}: `[serve]` no longer asks for it");
                c.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS wasmpipe.\"{name}\""))
                    .await?;
            }
            for (name, how) in missing {
                tracing::info!("building index {name} of the stored events (the workers go on meanwhile)");
                c.batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"{name}\" ON wasmpipe.events USING {how}"
                ))
                .await
                .with_context(|| format!("cannot build index {name}"))?;
                tracing::info!("index {name} built");
            }
            anyhow::Ok(())
        }
        .await;
        c.execute("SELECT pg_advisory_unlock(7092210417)", &[])
            .await?;
        made
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool
            .get()
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot get a PostgreSQL connection"))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Records a new job as `pending`, with its input; returns its id.
    pub async fn insert_job(&self, job: &NewJob) -> Result<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let events: u64 = job.chunks.iter().map(|c| c.1).sum();
        let row = tx
            .query_one(
                "INSERT INTO wasmpipe.jobs (pipeline, kind, origin, received_at, context, events_in, chunks)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &job.pipeline,
                    &job.kind,
                    &job.origin,
                    &job.received_at,
                    &job.context,
                    &(events as i64),
                    &(job.chunks.len() as i64),
                ],
            )
            .await?;
        let id: i64 = row.get(0);
        insert_input(&tx, id, &job.chunks).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A job's input, as the chunks it was published as, in order; `None`
    /// if there is no such job. Fails with [`InputPurged`] when retention
    /// deleted it.
    pub async fn job_input(&self, job: i64) -> Result<Option<Chunks>> {
        let c = self.client().await?;
        let Some(head) = c
            .query_opt("SELECT chunks FROM wasmpipe.jobs WHERE id = $1", &[&job])
            .await?
        else {
            return Ok(None);
        };
        let chunks: i64 = head.get(0);
        let rows = c
            .query(
                "SELECT data, events FROM wasmpipe.inputs WHERE job = $1 ORDER BY seq",
                &[&job],
            )
            .await?;
        if rows.len() as i64 != chunks {
            return Err(InputPurged { job }.into());
        }
        Ok(Some(
            rows.iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1) as u64))
                .collect(),
        ))
    }

    /// Creates a pending `replay` job of `job`'s input, in one
    /// transaction; returns its id and chunks to publish (`None`: no such
    /// job). The caller publishes them, then accepts or abandons it.
    pub async fn replay(&self, job: i64, now: i64) -> Result<Option<(i64, Chunks)>> {
        let Some(chunks) = self.job_input(job).await? else {
            return Ok(None);
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let head = tx
            .query_one(
                "SELECT pipeline, context, events_in FROM wasmpipe.jobs WHERE id = $1",
                &[&job],
            )
            .await?;
        let (pipeline, context, n): (String, String, i64) = (head.get(0), head.get(1), head.get(2));
        let id: i64 = tx
            .query_one(
                "INSERT INTO wasmpipe.jobs (pipeline, kind, origin, received_at, context, events_in, chunks)
                 VALUES ($1, 'replay', $2, $3, $4, $5, $6) RETURNING id",
                &[&pipeline, &job, &now, &context, &n, &(chunks.len() as i64)],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO wasmpipe.inputs (job, seq, first_index, events, data)
             SELECT $2, seq, first_index, events, data FROM wasmpipe.inputs WHERE job = $1",
            &[&job, &id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some((id, chunks)))
    }

    /// Marks a pending job accepted; `false` if it was abandoned meanwhile.
    pub async fn accept_job(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE wasmpipe.jobs SET state = 'accepted' WHERE id = $1 AND state = 'pending'",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a pending job abandoned (its client got an error), undoing
    /// the dead-letter retry it was. `older_than` (ms), when given, only
    /// abandons a job received before it.
    pub async fn abandon_job(&self, id: i64, older_than: Option<i64>) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE wasmpipe.jobs SET state = 'abandoned'
                 WHERE id = $1 AND state = 'pending' AND ($2::BIGINT IS NULL OR received_at < $2)",
                &[&id, &older_than],
            )
            .await?;
        if n == 1 {
            tx.execute(
                "UPDATE wasmpipe.dead_letters SET retried_by = NULL WHERE retried_by = $1",
                &[&id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Abandons the jobs of `pipeline` still `pending` that arrived before
    /// `older_than` (ms): their ingest node died before accepting them.
    /// Returns how many.
    pub async fn abandon_stale(&self, pipeline: &str, older_than: i64) -> Result<u64> {
        let c = self.client().await?;
        let ids: Vec<i64> = c
            .query(
                "SELECT id FROM wasmpipe.jobs WHERE state = 'pending' AND pipeline = $1 AND received_at < $2",
                &[&pipeline, &older_than],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(c);
        let mut n = 0;
        for id in ids {
            n += u64::from(self.abandon_job(id, Some(older_than)).await?);
        }
        Ok(n)
    }

    /// A job's state and context.
    pub async fn job_info(&self, id: i64) -> Result<Option<JobInfo>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT state, pipeline, context, received_at FROM wasmpipe.jobs WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| JobInfo {
            state: match r.get::<_, &str>(0) {
                "accepted" => JobState::Accepted,
                "abandoned" => JobState::Abandoned,
                _ => JobState::Pending,
            },
            pipeline: r.get(1),
            context: r.get(2),
            received_at: r.get(3),
        }))
    }

    /// Records that a worker starts processing a chunk; returns how many
    /// times one has (this time included). Counting here rather than by
    /// JetStream's deliveries leaves out deliveries that never reached a
    /// worker (a pull request answered just as its worker died).
    pub async fn start_attempt(&self, range: ChunkId) -> Result<u32> {
        let c = self.client().await?;
        let n: i32 = c
            .query_one(
                "INSERT INTO wasmpipe.attempts (job, first_index, events, started) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (job, first_index, events) DO UPDATE SET started = wasmpipe.attempts.started + 1
                 RETURNING started",
                &[&range.job, &(range.first_index as i64), &(range.events as i64)],
            )
            .await?
            .get(0);
        Ok(n as u32)
    }

    /// Takes back an attempt whose worker lived to report its failure.
    pub async fn end_attempt(&self, range: ChunkId) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE wasmpipe.attempts SET started = started - 1
             WHERE job = $1 AND first_index = $2 AND events = $3 AND started > 0",
            &[
                &range.job,
                &(range.first_index as i64),
                &(range.events as i64),
            ],
        )
        .await?;
        Ok(())
    }

    /// Forgets the attempts on a chunk (split into pieces, or found done).
    pub async fn forget_attempts(&self, range: ChunkId) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM wasmpipe.attempts WHERE job = $1 AND first_index = $2 AND events = $3",
            &[
                &range.job,
                &(range.first_index as i64),
                &(range.events as i64),
            ],
        )
        .await?;
        Ok(())
    }

    /// Commits a processed chunk (see the module's notes). `combine` turns
    /// the job's non-empty partials, in event order, into its result; it
    /// is called only by the commit that completes the job, and only if the
    /// pipeline reduces. `info` is the chunk's job, as [`PgStore::job_info`]
    /// gave it (its pipeline and time go with each stored row).
    pub async fn complete_chunk(
        &self,
        range: ChunkId,
        info: &StoredJob,
        out: &ChunkReport,
        worker: &str,
        combine: Option<&mut Combine<'_>>,
        windows: Option<(&WindowBook, &mut (dyn Fold + Send))>,
    ) -> Result<Committed> {
        let now = crate::exec::now_ms();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let job = range.job;
        let first = range.first_index as i64;
        let events = range.events as i64;
        let partial = (!out.partial.is_empty()).then_some(out.partial.as_slice());
        let versions = out.versions();
        let inserted = tx
            .execute(
                "INSERT INTO wasmpipe.chunks (job, first_index, events, partial, versions, worker, done_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[&job, &first, &events, &partial, &versions, &worker, &now],
            )
            .await?;
        if inserted == 0 {
            return Ok(Committed::Duplicate);
        }
        tx.execute(
            "DELETE FROM wasmpipe.attempts WHERE job = $1 AND first_index = $2 AND events = $3",
            &[&job, &first, &events],
        )
        .await?;
        let (pipeline, at) = (&info.pipeline, info.received_at);
        // The outputs first, outside the job's lock, so that chunks of one
        // job commit in parallel; the lock below orders only the checks.
        let mut bodies: Vec<&str> = Vec::with_capacity(out.origin.len());
        for line in out.output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            bodies.push(
                std::str::from_utf8(line).context("a stage produced output that is not UTF-8")?,
            );
        }
        if bodies.len() != out.origin.len() {
            bail!(
                "a chunk has {} output events but {} origins",
                bodies.len(),
                out.origin.len()
            );
        }
        if !bodies.is_empty() {
            // COPY: a chunk's events in one stream, with no SQL to parse
            // per row.
            let sink = tx
                .copy_in(
                    "COPY wasmpipe.events (job, pipeline, idx, at, body, time) FROM STDIN BINARY",
                )
                .await?;
            let writer = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::INT8,
                ],
            );
            let mut writer = std::pin::pin!(writer);
            for (body, &idx) in bodies.iter().zip(&out.origin) {
                let time = self.indexing.time_of(body.as_bytes(), at);
                writer
                    .as_mut()
                    .write(&[&job, &pipeline, &(idx as i64), &at, body, &time])
                    .await?;
            }
            writer.finish().await?;
        }
        for d in &out.dead {
            insert_dead(&tx, job, pipeline, at, d).await?;
        }
        let Some(counts) = tx
            .query_opt(
                "UPDATE wasmpipe.jobs SET events_done = events_done + $2, chunks_done = chunks_done + 1,
                     events_out = events_out + $3, dead_letters = dead_letters + $4,
                     retries = retries + $5, started_at = COALESCE(started_at, $6)
                 WHERE id = $1 AND state = 'accepted' RETURNING events_done, events_in",
                &[
                    &job,
                    &events,
                    &(bodies.len() as i64),
                    &(out.dead.len() as i64),
                    &(out.retries as i64),
                    &now,
                ],
            )
            .await?
        else {
            // Not accepted (yet, or ever): nothing written.
            bail!("job {job} is not accepted");
        };
        let overlapping: i64 = tx
            .query_one(
                "SELECT count(*) FROM wasmpipe.chunks
                 WHERE job = $1 AND first_index < $2::BIGINT + $3::BIGINT AND first_index + events > $2::BIGINT",
                &[&job, &first, &events],
            )
            .await?
            .get(0);
        if overlapping > 1 {
            return Ok(Committed::Duplicate);
        }
        let (done, total): (i64, i64) = (counts.get(0), counts.get(1));
        if done > total {
            // Only a chunk whose record retention deleted gets here (the
            // overlap check catches the rest): it was stored before.
            tracing::warn!(
                "job {job}: events {first}+{events} came again after their record was purged; not stored twice"
            );
            return Ok(Committed::Duplicate);
        }
        if let (Some((book, fold)), Some(chunk)) = (windows, &out.windows) {
            let (late, _) = commit_windows(&tx, pipeline, book, Some((chunk, fold)), now).await?;
            for d in &late {
                insert_dead(&tx, job, pipeline, at, d).await?;
            }
            if !late.is_empty() {
                tx.execute(
                    "UPDATE wasmpipe.jobs SET dead_letters = dead_letters + $2 WHERE id = $1",
                    &[&job, &(late.len() as i64)],
                )
                .await?;
            }
        }
        let finished = done == total;
        if finished {
            let result = match combine {
                Some(combine) => {
                    let partials: Vec<Vec<u8>> = tx
                        .query(
                            "SELECT partial FROM wasmpipe.chunks WHERE job = $1 AND partial IS NOT NULL ORDER BY first_index",
                            &[&job],
                        )
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    let out = tokio::task::block_in_place(|| combine(partials))?;
                    Some(String::from_utf8(out).context("the reduce result is not UTF-8")?)
                }
                None => None,
            };
            tx.execute(
                "UPDATE wasmpipe.jobs SET finished_at = $2, result = $3 WHERE id = $1",
                &[&job, &now, &result],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Committed::Stored { finished })
    }

    /// Advances the window clock of a quiet stream (see
    /// [`WindowBook::tick`]); returns the windows it closed.
    pub async fn tick_windows(&self, pipeline: &str, book: &WindowBook, now: i64) -> Result<usize> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (_, closed) = commit_windows(&tx, pipeline, book, None, now).await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// The newest stored event's and dead letter's ids (0: none).
    pub async fn last_ids(&self) -> Result<(i64, i64)> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT (SELECT coalesce(max(id), 0) FROM wasmpipe.events), (SELECT coalesce(max(id), 0) FROM wasmpipe.dead_letters)",
                &[],
            )
            .await?;
        Ok((r.get(0), r.get(1)))
    }

    /// Closed windows matching `q`, oldest first.
    pub async fn windows(&self, q: &WindowQuery) -> Result<Vec<WindowRow>> {
        let mut sql = String::from(
            "SELECT id, pipeline, start_at, end_at, key, value, closed_at FROM wasmpipe.windows WHERE id > $1",
        );
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(q.after)];
        let mut add = |cond: &str, v: Box<dyn ToSql + Sync + Send>, sql: &mut String| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ${}", args.len()));
        };
        if let Some(p) = &q.pipeline {
            add("pipeline =", Box::new(p.clone()), &mut sql);
        }
        if let Some(k) = &q.key {
            add("key =", Box::new(k.clone()), &mut sql);
        }
        if let Some(t) = q.since {
            add("start_at >=", Box::new(t), &mut sql);
        }
        if let Some(t) = q.until {
            add("end_at <=", Box::new(t), &mut sql);
        }
        args.push(Box::new(i64::from(q.limit)));
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len()));
        let c = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = c.query(&sql, &refs).await?;
        Ok(rows
            .iter()
            .map(|r| WindowRow {
                id: r.get(0),
                pipeline: r.get(1),
                start: r.get(2),
                end: r.get(3),
                key: r.get(4),
                value: r.get(5),
                closed_at: r.get(6),
            })
            .collect())
    }

    /// One job.
    pub async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        let c = self.client().await?;
        let Some(row) = c
            .query_opt(&format!("{JOB_COLUMNS} WHERE id = $1"), &[&id])
            .await?
        else {
            return Ok(None);
        };
        let mut job = job_row(&row);
        job.versions = c
            .query(
                "SELECT DISTINCT versions FROM wasmpipe.chunks WHERE job = $1 ORDER BY versions",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(Some(job))
    }

    /// Jobs, newest first, before id `before`.
    pub async fn jobs(
        &self,
        pipeline: Option<&str>,
        before: i64,
        limit: u32,
    ) -> Result<Vec<JobRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("{JOB_COLUMNS} WHERE id < $1 AND ($2::TEXT IS NULL OR pipeline = $2) ORDER BY id DESC LIMIT $3"),
                &[&before, &pipeline, &i64::from(limit)],
            )
            .await?;
        let mut jobs: Vec<JobRow> = rows.iter().map(job_row).collect();
        // A listing shows what a job's own page shows.
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let sets = c
            .query(
                "SELECT DISTINCT job, versions FROM wasmpipe.chunks WHERE job = ANY($1) ORDER BY job, versions",
                &[&ids],
            )
            .await?;
        for row in sets {
            let (id, versions): (i64, String) = (row.get(0), row.get(1));
            if let Some(j) = jobs.iter_mut().find(|j| j.id == id) {
                j.versions.push(versions);
            }
        }
        Ok(jobs)
    }

    /// Stored events matching `q`, oldest first (or newest first).
    pub async fn events(&self, q: &EventQuery) -> Result<Vec<EventRow>> {
        let mut f = self.event_filter(q)?;
        if q.newest_first {
            if let Some(before) = q.before {
                f.arg(" AND id < ?", Box::new(before));
            }
            f.sql.push_str(" ORDER BY id DESC");
        } else {
            f.arg(" AND id > ?", Box::new(q.after));
            f.sql.push_str(" ORDER BY id");
        }
        f.arg(" LIMIT ?", Box::new(i64::from(q.limit)));
        let sql = format!(
            "SELECT id, job, pipeline, idx, at, time, body FROM wasmpipe.events {}",
            f.sql
        );
        let c = self.client().await?;
        let rows = c.query(&sql, &f.params()).await?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                id: r.get(0),
                job: r.get(1),
                pipeline: r.get(2),
                index: r.get::<_, i64>(3) as u64,
                at: r.get(4),
                time: r.get::<_, Option<i64>>(5).unwrap_or_else(|| r.get(4)),
                body: r.get(6),
            })
            .collect())
    }

    /// Matches of `q` counted in `buckets` over its time range (the
    /// matches' own range when it has none).
    pub async fn histogram(&self, q: &EventQuery, buckets: u32) -> Result<Histogram> {
        let f = self.event_filter(q)?;
        let c = self.client().await?;
        let row = c
            .query_one(
                &format!(
                    "SELECT count(*), min(time), max(time) FROM wasmpipe.events {}",
                    f.sql
                ),
                &f.params(),
            )
            .await?;
        let total: i64 = row.get(0);
        let (Some(first), Some(last)) = (
            q.since.or(row.get(1)),
            q.until.or(row.get::<_, Option<i64>>(2).map(|t| t + 1)),
        ) else {
            return Ok(Histogram::default());
        };
        let (since, interval, n) = Histogram::frame(first, last, buckets);
        let mut counts = vec![0u64; n as usize];
        if total > 0 {
            let mut f = f;
            f.arg(" AND time >= ?", Box::new(since));
            f.arg(" AND time < ?", Box::new(last.max(since + 1)));
            f.args.push(Box::new(since));
            let from = f.args.len();
            f.args.push(Box::new(interval));
            let width = f.args.len();
            let sql = format!(
                "SELECT (time - ${from}::BIGINT) / ${width}::BIGINT, count(*) FROM wasmpipe.events {} GROUP BY 1",
                f.sql
            );
            for r in c.query(&sql, &f.params()).await? {
                if let Some(slot) = counts.get_mut(r.get::<_, i64>(0) as usize) {
                    *slot = r.get::<_, i64>(1) as u64;
                }
            }
        }
        Ok(Histogram {
            total: total as u64,
            since: Some(since),
            until: Some(last),
            interval,
            counts,
        })
    }

    /// `WHERE ...` of the events `q` selects, and its arguments.
    fn event_filter(&self, q: &EventQuery) -> Result<Filter> {
        let mut f = Filter {
            sql: String::from("WHERE true"),
            args: Vec::new(),
        };
        let ts = self.tsqueries(&q.terms)?;
        for t in ts {
            f.arg(
                &format!(" AND {EVENT_TEXT} @@ to_tsquery('simple', ?)"),
                Box::new(t),
            );
        }
        if let Some(p) = &q.pipeline {
            f.arg(" AND pipeline = ?", Box::new(p.clone()));
        }
        if let Some(j) = q.job {
            f.arg(" AND job = ?", Box::new(j));
        }
        if let Some(t) = q.since {
            f.arg(" AND time >= ?", Box::new(t));
        }
        if let Some(t) = q.until {
            f.arg(" AND time < ?", Box::new(t));
        }
        for (path, value) in &q.fields {
            // Compared as text, as with SQLite, so `field.n=5` matches 5;
            // spelt as the field's index is.
            f.arg(
                &format!(" AND {} = ?", path.pg_expr()),
                Box::new(value.clone()),
            );
        }
        Ok(f)
    }

    /// The tsquery texts of `terms`, or an error if the text index is off.
    fn tsqueries(&self, terms: &[Term]) -> Result<Vec<String>> {
        if !terms.is_empty() && !self.indexing.full_text {
            return Err(super::search::TextIndexOff.into());
        }
        Ok(super::search::pg_tsqueries(terms))
    }

    /// Dead letters matching `q`, oldest first.
    pub async fn dead_letters(&self, q: &DeadQuery) -> Result<Vec<DeadRow>> {
        let mut f = Filter {
            sql: String::from("WHERE true"),
            args: Vec::new(),
        };
        for t in self.tsqueries(&q.terms)? {
            f.arg(
                " AND to_tsvector('simple', coalesce(words, '')) @@ to_tsquery('simple', ?)",
                Box::new(t),
            );
        }
        if let Some(p) = &q.pipeline {
            f.arg(" AND pipeline = ?", Box::new(p.clone()));
        }
        if let Some(j) = q.job {
            f.arg(" AND job = ?", Box::new(j));
        }
        f.arg(" AND id > ?", Box::new(q.after));
        f.arg(" ORDER BY id LIMIT ?", Box::new(i64::from(q.limit)));
        let sql = format!(
            // The versions are those of the chunk the event was in (chunks
            // committed for one job never overlap).
            "SELECT id, job, pipeline, stage, error, idx, attempts, at, event, retried_by,
                    (SELECT c.versions FROM wasmpipe.chunks c
                     WHERE c.job = d.job AND c.first_index <= d.idx AND d.idx < c.first_index + c.events
                     ORDER BY c.first_index DESC LIMIT 1)
             FROM wasmpipe.dead_letters d {}",
            f.sql
        );
        let c = self.client().await?;
        let rows = c.query(&sql, &f.params()).await?;
        Ok(rows
            .iter()
            .map(|r| DeadRow {
                id: r.get(0),
                job: r.get(1),
                pipeline: r.get(2),
                stage: r.get(3),
                error: r.get(4),
                index: r.get::<_, i64>(5) as u64,
                attempts: r.get::<_, i32>(6) as u32,
                at: r.get(7),
                event: r.get(8),
                retried_by: r.get(9),
                versions: r.get(10),
            })
            .collect())
    }

    /// Read-only SQL over the views of [`super::sql`].
    pub async fn query(
        &self,
        sql: &str,
        limit: usize,
        timeout: std::time::Duration,
    ) -> Result<Table, QueryError> {
        let mut c = self.client().await?;
        super::sql::run_pg(&mut c, sql, limit, timeout).await
    }

    /// Creates a pending `retry` job of the dead letters of `job` not yet
    /// retried, marking them retried by it, in one transaction. Returns the
    /// new job's id, pipeline, context and the events; `None` when there is
    /// nothing to retry. The caller publishes the events, then accepts or
    /// abandons the job (abandoning unmarks the dead letters).
    pub async fn retry_dead_letters(
        &self,
        job: i64,
        now: i64,
        chunk: &(dyn Fn(Vec<Vec<u8>>) -> Chunks + Sync),
    ) -> Result<Option<(i64, Chunks)>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let head = tx
            .query_one(
                "SELECT pipeline, context FROM wasmpipe.jobs WHERE id = $1",
                &[&job],
            )
            .await?;
        let (pipeline, context): (String, String) = (head.get(0), head.get(1));
        let events: Vec<Vec<u8>> = tx
            .query(
                "SELECT event FROM wasmpipe.dead_letters WHERE job = $1 AND retried_by IS NULL ORDER BY idx FOR UPDATE",
                &[&job],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if events.is_empty() {
            return Ok(None);
        }
        let n = events.len();
        let chunks = chunk(events);
        let id: i64 = tx
            .query_one(
                "INSERT INTO wasmpipe.jobs (pipeline, kind, origin, received_at, context, events_in, chunks)
                 VALUES ($1, 'retry', $2, $3, $4, $5, $6) RETURNING id",
                &[&pipeline, &job, &now, &context, &(n as i64), &(chunks.len() as i64)],
            )
            .await?
            .get(0);
        tx.execute(
            "UPDATE wasmpipe.dead_letters SET retried_by = $2 WHERE job = $1 AND retried_by IS NULL",
            &[&job, &id],
        )
        .await?;
        insert_input(&tx, id, &chunks).await?;
        tx.commit().await?;
        Ok(Some((id, chunks)))
    }

    /// Deletes stored events and dead letters received before `before`
    /// (ms), and the chunk records of jobs received before it that are
    /// finished or abandoned (their partials are combined or moot; a chunk
    /// delivered again after that cannot be stored twice: its job's
    /// `events_done` would pass `events_in`). Returns the number of events
    /// deleted.
    pub async fn purge(&self, before: i64) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute("DELETE FROM wasmpipe.events WHERE at < $1", &[&before])
            .await?;
        tx.execute(
            "DELETE FROM wasmpipe.dead_letters WHERE at < $1",
            &[&before],
        )
        .await?;
        tx.execute(
            "DELETE FROM wasmpipe.inputs i USING wasmpipe.jobs j
             WHERE i.job = j.id AND j.received_at < $1",
            &[&before],
        )
        .await?;
        for table in ["chunks", "attempts"] {
            tx.execute(
                &format!(
                    "DELETE FROM wasmpipe.{table} c USING wasmpipe.jobs j
                     WHERE c.job = j.id AND j.received_at < $1
                       AND (j.finished_at IS NOT NULL OR j.state = 'abandoned')"
                ),
                &[&before],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Events waiting in accepted, unfinished jobs (for `/metrics`).
    pub async fn backlog(&self, pipeline: &str) -> Result<u64> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT COALESCE(sum(events_in - events_done), 0)::BIGINT FROM wasmpipe.jobs
                 WHERE state = 'accepted' AND finished_at IS NULL AND pipeline = $1",
                &[&pipeline],
            )
            .await?
            .get(0);
        Ok(n as u64)
    }
}

/// What a PostgreSQL failure in `e`'s chain says, if there is one (see
/// [`ErrorKind::of`]).
pub(super) fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if cause.is::<deadpool_postgres::PoolError>() {
        return Some(ErrorKind::Unavailable);
    }
    let pg = cause.downcast_ref::<tokio_postgres::Error>()?;
    if pg.is_closed() {
        return Some(ErrorKind::Unavailable);
    }
    Some(match pg.code() {
        // No SQLSTATE: the connection or the protocol failed.
        None => ErrorKind::Unavailable,
        Some(code) => match &code.code()[..2] {
            // 08 connection, 53 resources, 57 operator intervention
            // (shutdown), 58 system error.
            "08" | "53" | "57" | "58" => ErrorKind::Unavailable,
            // 40 rollback: a deadlock or serialization failure.
            "40" => ErrorKind::Conflict,
            _ => ErrorKind::Other,
        },
    })
}

/// The schema's version, `None` if there is no schema yet.
async fn schema_version(c: &impl deadpool_postgres::GenericClient) -> Result<Option<i32>> {
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('wasmpipe.schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = c
        .query_opt("SELECT max(version) FROM wasmpipe.schema_version", &[])
        .await?;
    Ok(row.and_then(|r| r.get::<_, Option<i32>>(0)))
}

const JOB_COLUMNS: &str =
    "SELECT id, pipeline, kind, origin, received_at, started_at, finished_at, context,
    events_in, events_out, dead_letters, retries, chunks, chunks_done, result, state FROM wasmpipe.jobs";

fn job_row(r: &tokio_postgres::Row) -> JobRow {
    JobRow {
        id: r.get(0),
        pipeline: r.get(1),
        kind: r.get(2),
        origin: r.get(3),
        received_at: r.get(4),
        started_at: r.get(5),
        finished_at: r.get(6),
        context: r.get(7),
        events_in: r.get::<_, i64>(8) as u64,
        events_out: r.get::<_, i64>(9) as u64,
        dead_letters: r.get::<_, i64>(10) as u64,
        retries: r.get::<_, i64>(11) as u64,
        chunks: r.get::<_, i64>(12) as u64,
        chunks_done: r.get::<_, i64>(13) as u64,
        result: r.get(14),
        versions: Vec::new(),
        abandoned: r.get::<_, &str>(15) == "abandoned",
        pinned: None,
    }
}

/// A `WHERE` clause built with its arguments (`?` becomes `$n`).
struct Filter {
    sql: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filter {
    fn arg(&mut self, clause: &str, v: Box<dyn ToSql + Sync + Send>) {
        self.args.push(v);
        self.sql
            .push_str(&clause.replace('?', &format!("${}", self.args.len())));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|a| a.as_ref() as _).collect()
    }
}

/// Stores `chunks` as the input of `job`.
async fn insert_input(
    tx: &deadpool_postgres::Transaction<'_>,
    job: i64,
    chunks: &Chunks,
) -> Result<()> {
    let (mut seqs, mut firsts, mut counts, mut data) = (vec![], vec![], vec![], vec![]);
    let mut first = 0i64;
    for (seq, (bytes, events)) in chunks.iter().enumerate() {
        seqs.push(seq as i64);
        firsts.push(first);
        counts.push(*events as i64);
        data.push(bytes.as_slice());
        first += *events as i64;
    }
    tx.execute(
        "INSERT INTO wasmpipe.inputs (job, seq, first_index, events, data)
         SELECT $1, * FROM unnest($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BYTEA[])",
        &[&job, &seqs, &firsts, &counts, &data],
    )
    .await
    .with_context(|| format!("cannot store the input of job {job}"))?;
    Ok(())
}

async fn insert_dead(
    tx: &tokio_postgres::Transaction<'_>,
    job: i64,
    pipeline: &str,
    at: i64,
    d: &DeadLetter,
) -> Result<()> {
    tx.execute(
        "INSERT INTO wasmpipe.dead_letters (job, pipeline, stage, error, idx, attempts, at, event, words)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &job,
            &pipeline,
            &d.stage_name(),
            &d.error,
            &(d.index as i64),
            &(d.attempts as i32),
            &at,
            &d.event,
            // The text a search reads; NUL is the one character
            // PostgreSQL text cannot hold.
            &super::search::dead_words(&d.error, &d.event).replace('\0', " "),
        ],
    )
    .await?;
    Ok(())
}

/// Runs the window book in transaction `tx` (see the module's notes):
/// locks the clock, loads the open windows the commit (or, with no
/// chunk, the tick) can touch, runs the book in memory and writes back
/// what changed. Returns the late events' dead letters and the number of
/// windows closed.
async fn commit_windows(
    tx: &tokio_postgres::Transaction<'_>,
    pipeline: &str,
    book: &WindowBook,
    chunk: Option<(&WindowedChunk, &mut (dyn Fold + Send))>,
    now: i64,
) -> Result<(Vec<DeadLetter>, usize)> {
    tx.execute(
        "INSERT INTO wasmpipe.window_clock (pipeline) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&pipeline],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT max_time, last_seen, open_windows FROM wasmpipe.window_clock WHERE pipeline = $1 FOR UPDATE",
            &[&pipeline],
        )
        .await?;
    let clock = Clock {
        max_time: row.get(0),
        last_seen: row.get(1),
    };
    let total = row.get::<_, i64>(2).max(0) as u64;
    let needs = book.needs(clock, chunk.as_ref().map(|c| c.0), now);
    let mut rows = std::collections::BTreeMap::new();
    const COLS: &str =
        "SELECT start_at, end_at, key, partial FROM wasmpipe.open_windows WHERE pipeline = $1";
    let mut found = Vec::new();
    if let Some(until) = needs.due_until {
        found.extend(
            tx.query(&format!("{COLS} AND end_at <= $2"), &[&pipeline, &until])
                .await?,
        );
    }
    for (s, e) in &needs.spans {
        found.extend(
            tx.query(
                &format!("{COLS} AND start_at = $2 AND end_at = $3"),
                &[&pipeline, s, e],
            )
            .await?,
        );
    }
    for (k, from, to) in &needs.sessions {
        found.extend(
            tx.query(
                &format!("{COLS} AND key = $2 AND start_at < $3 AND end_at > $4"),
                &[&pipeline, k, to, from],
            )
            .await?,
        );
    }
    for r in found {
        rows.insert(
            (
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, String>(2),
            ),
            r.get::<_, Vec<u8>>(3),
        );
    }
    let rows = rows
        .into_iter()
        .map(|((s, e, k), v)| (s, e, k, v))
        .collect();
    let staged = MemoryWindows::staged(clock, rows, total);
    // The book calls the guest (combines, re-folds): off the async threads.
    let (c, closed, late) = tokio::task::block_in_place(|| {
        let chunk = chunk.map(|(c, fold)| (c, fold as &mut dyn Fold));
        book.run_staged(staged, chunk, now)
    })?;

    tx.execute(
        "UPDATE wasmpipe.window_clock SET max_time = $2, last_seen = $3, open_windows = $4 WHERE pipeline = $1",
        &[&pipeline, &c.clock.max_time, &c.clock.last_seen, &(total as i64 + c.opened).max(0)],
    )
    .await?;
    for (s, e, k, v) in &c.upserts {
        tx.execute(
            "INSERT INTO wasmpipe.open_windows (pipeline, end_at, start_at, key, partial) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pipeline, end_at, start_at, key) DO UPDATE SET partial = excluded.partial",
            &[&pipeline, e, s, k, v],
        )
        .await?;
    }
    for (s, e, k) in &c.deletes {
        tx.execute(
            "DELETE FROM wasmpipe.open_windows WHERE pipeline = $1 AND end_at = $2 AND start_at = $3 AND key = $4",
            &[&pipeline, e, s, k],
        )
        .await?;
    }
    for w in &closed {
        let value = std::str::from_utf8(&w.value).context("a window's result is not UTF-8")?;
        tx.execute(
            "INSERT INTO wasmpipe.windows (pipeline, start_at, end_at, key, value, closed_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&pipeline, &w.start, &w.end, &w.key, &value, &now],
        )
        .await?;
    }
    Ok((late, closed.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_database_being_away_or_busy_is_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let away = anyhow::Error::new(io).context("cannot store");
        assert_eq!(ErrorKind::of(&away), ErrorKind::Unavailable);
        assert!(ErrorKind::of(&away).retryable());
        let ours = anyhow::anyhow!("job 7 is not in this database");
        assert_eq!(ErrorKind::of(&ours), ErrorKind::Other);
        assert!(!ErrorKind::of(&ours).retryable());
    }
}
