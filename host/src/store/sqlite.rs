//! The SQLite store: the journal of accepted jobs (their input, chunk by
//! chunk), the stored output events, dead letters and each job's result.
//!
//! Two connections: one writer (SQLite has one writer at a time anyway),
//! shared behind a mutex, and one reader, so that reads never wait on a
//! commit (WAL mode). Every state change is one transaction:
//! - accepting a batch inserts the job and all its chunks;
//! - finishing a chunk inserts its outputs and dead letters, stores its
//!   reduce partial, marks it done and, for the last chunk, stores the
//!   job's result; a crash before the commit leaves the chunk queued with
//!   nothing stored, so it is simply processed again.

use super::backend::NewJob;
use super::model::{
    Chunks, Combine, DeadQuery, DeadRow, EventQuery, EventRow, Histogram, JobRow, QueryError,
    Table, WindowQuery, WindowRow,
};
use super::search::{FieldPath, Indexing, Term, dead_words, words_of};
use crate::exec::stored::Committed;
use crate::exec::window::{Changes, Clock, Closed, Fold, MemoryWindows, WindowBook, WindowedChunk};
use crate::exec::{ChunkId, ChunkReport, DeadLetter};
use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bumped when the schema changes; `open` brings versions 1 (without
/// `jobs.pinned`) and 2 (without `events.time` and the search index) up.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    kind TEXT NOT NULL,            -- ingest, replay, retry
    origin INTEGER,                -- the job replayed or retried
    received_at INTEGER NOT NULL,  -- ms since the Unix epoch
    started_at INTEGER,
    finished_at INTEGER,
    context TEXT NOT NULL,         -- request state handed to stages (JSON)
    events_in INTEGER NOT NULL,
    events_out INTEGER NOT NULL DEFAULT 0,
    dead_letters INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    pinned TEXT                    -- a replay's named stage versions (JSON)
);
CREATE TABLE IF NOT EXISTS chunks (
    job INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    first_index INTEGER NOT NULL,  -- index in the job of the first event
    events INTEGER NOT NULL,
    data BLOB,                     -- the input events, NDJSON; NULL once purged
    done INTEGER NOT NULL DEFAULT 0,
    partial BLOB,                  -- the reduce accumulator of this chunk
    versions TEXT,                 -- stage versions that processed it (JSON)
    PRIMARY KEY (job, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_pending ON chunks (done, job, seq);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    pipeline TEXT NOT NULL,
    idx INTEGER NOT NULL,          -- index in the job of the input event it came from
    at INTEGER NOT NULL,           -- the job's received_at
    body TEXT NOT NULL,
    time INTEGER                   -- the event's own time, else `at` (ms)
);
CREATE INDEX IF NOT EXISTS events_job ON events (job, id);
CREATE INDEX IF NOT EXISTS events_pipeline ON events (pipeline, id);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    error TEXT NOT NULL,
    idx INTEGER NOT NULL,          -- index of the event in its job
    attempts INTEGER NOT NULL,
    at INTEGER NOT NULL,
    event BLOB NOT NULL,
    retried_by INTEGER             -- the job that retried it
);
CREATE INDEX IF NOT EXISTS dead_job ON dead_letters (job, id);
CREATE INDEX IF NOT EXISTS dead_pipeline ON dead_letters (pipeline, id);
-- Full-text search (store/search.rs): the values of each event, and the
-- error and event of each dead letter, by row id. Contentless: the text
-- is in `events` already; only the index is kept.
CREATE VIRTUAL TABLE IF NOT EXISTS events_text USING fts5 (words, content = '', contentless_delete = 1);
CREATE VIRTUAL TABLE IF NOT EXISTS dead_text USING fts5 (words, content = '', contentless_delete = 1);
-- Whether the text index holds every stored row (`complete`) or none
-- (`off`: `[serve] full_text = false`); anything else is rebuilt.
CREATE TABLE IF NOT EXISTS search_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Windowed reduce (exec/window): the event-time clock, the partials of
-- open windows, and closed windows' results, all changed by the commit of
-- the chunk (or the idle tick) that changes them.
CREATE TABLE IF NOT EXISTS window_clock (
    pipeline TEXT PRIMARY KEY,
    max_time INTEGER,              -- largest event time committed (ms)
    last_seen INTEGER,             -- wall time of the last events (ms)
    open_windows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS open_windows (
    pipeline TEXT NOT NULL,
    end_at INTEGER NOT NULL,
    start_at INTEGER NOT NULL,
    key TEXT NOT NULL,             -- '' for an unkeyed reduce
    partial BLOB NOT NULL,
    PRIMARY KEY (pipeline, end_at, start_at, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS open_windows_key ON open_windows (pipeline, key, start_at);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    start_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    key TEXT,
    value TEXT NOT NULL,
    closed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_pipeline ON windows (pipeline, id);
";

/// The store.
pub struct Store {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// Read-only SQL (`POST /v1/query`): a read-only connection of its own,
    /// so that a long query never holds up the API's reads.
    sql: Mutex<super::sql::ReadOnly>,
    indexing: Indexing,
    /// Set when a sync of the journal failed (a durable commit, or a
    /// checkpoint): what was written since the last good sync is not known
    /// to be on disk, and no batch is accepted until [`resync`] succeeds.
    unsynced: Arc<AtomicBool>,
}

/// No batch is taken while the journal is not known to be on disk: a sync
/// failed, and the checkpoint that would sync it again did not complete.
#[derive(Debug, thiserror::Error)]
#[error("the journal could not be synced to disk since an earlier sync failed: {0}")]
pub struct NotSynced(String);

/// The distinct stage-version sets of a job's chunks.
fn versions_of(r: &Connection, job: i64) -> Result<Vec<String>> {
    let mut st = r.prepare_cached(
        "SELECT DISTINCT versions FROM chunks WHERE job = ?1 AND versions IS NOT NULL ORDER BY versions",
    )?;
    Ok(st
        .query_map([job], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?)
}

/// A [`ChunkId`] from a row of `job, seq, first_index, events`.
fn chunk_id(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChunkId> {
    Ok(ChunkId {
        job: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        first_index: r.get::<_, i64>(2)? as u64,
        events: r.get::<_, i64>(3)? as u64,
    })
}

/// A chunk loaded for processing.
pub struct ChunkInput {
    /// The events, NDJSON.
    pub data: Vec<u8>,
    /// Index in the job of its first event.
    pub first_index: u64,
    /// The job's request state.
    pub context: String,
    /// When the job arrived (ms).
    pub received_at: i64,
    /// Pipeline name.
    pub pipeline: String,
    /// The stage versions it must run on (see [`JobRow::pinned`]).
    pub pinned: Option<String>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, with the
    /// indexes `indexing` asks for (built in place when missing).
    pub fn open(path: &Path, indexing: &Indexing) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {dir:?} for the database"))?;
        }
        let open = || -> Result<Connection> {
            let c = Connection::open(path)
                .with_context(|| format!("cannot open the database {path:?}"))?;
            c.busy_timeout(std::time::Duration::from_secs(30))?;
            // WAL: readers never block the writer. FULL: a commit is on
            // disk before it returns, so a 202 survives a power cut too.
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            Ok(c)
        };
        let mut writer = open().map_err(|e| refuse_damaged(path, e))?;
        check_intact(&writer, path).map_err(|e| refuse_damaged(path, e))?;
        let version: i64 = writer.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let upgrade = |sql: &str| {
            writer
                .execute_batch(sql)
                .with_context(|| format!("cannot upgrade the tables in {path:?}"))
        };
        match version {
            0 | SCHEMA_VERSION => {}
            1 => upgrade(
                "ALTER TABLE jobs ADD COLUMN pinned TEXT; ALTER TABLE events ADD COLUMN time INTEGER",
            )?,
            2 => upgrade("ALTER TABLE events ADD COLUMN time INTEGER")?,
            _ => bail!(
                "the database {path:?} has schema version {version}, this wasmpipe uses {SCHEMA_VERSION}"
            ),
        }
        writer
            .execute_batch(SCHEMA)
            .and_then(|()| writer.execute_batch(super::sqlite_deploys::SCHEMA))
            .with_context(|| format!("cannot create the tables in {path:?}"))?;
        if (1..SCHEMA_VERSION).contains(&version) {
            // Events stored before event times were kept are placed at
            // their arrival.
            tracing::info!(
                "upgrading {path:?}: events stored before this version get their arrival as their time"
            );
            writer.execute("UPDATE events SET time = at WHERE time IS NULL", [])?;
        }
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        index_fields(&writer, &indexing.fields).with_context(|| {
            format!("cannot index the fields `[serve] index` names in {path:?}")
        })?;
        index_text(&mut writer, indexing.full_text)
            .with_context(|| format!("cannot build the search index in {path:?}"))?;
        let unsynced = Arc::new(AtomicBool::new(false));
        checkpoint_watched(&mut writer, unsynced.clone())?;
        let reader = open()?;
        let sql = super::sql::ReadOnly::open(path)?;
        Ok(Store {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            sql: Mutex::new(sql),
            indexing: indexing.clone(),
            unsynced,
        })
    }

    /// The writer, for a transaction that must be on disk when it commits
    /// (`durable`: an accepted batch) or not. A processed chunk need not
    /// be: lost in a power cut, it is lost whole (outputs, partial and done
    /// mark alike, as WAL frames are replayed in order or not at all) and
    /// processed again from its journaled input. This saves an fsync per chunk.
    pub(super) fn writer(&self, durable: bool) -> Result<MutexGuard<'_, Connection>> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
        Ok(w)
    }

    /// Runs `f` in a transaction that is on disk once this returns `Ok`:
    /// a batch accepted, a retry or a replay recorded, each answered as
    /// accepted only then.
    ///
    /// A sync that fails is not retried, and the transaction is not
    /// trusted: Linux reports a failed write-back once and may drop the
    /// pages it could not write, so a second fsync that succeeds proves
    /// nothing about them. The caller gets the error (a `503`: nothing of
    /// the batch is accepted), and the journal stays refused until
    /// [`resync`] has copied every committed transaction into the
    /// database file, synced it and emptied the WAL.
    fn durable<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut w = self.writer(true)?;
        if self.unsynced.load(Relaxed) {
            resync(&w)?;
            self.unsynced.store(false, Relaxed);
            tracing::info!("the journal is synced to disk again; batches are taken again");
        }
        let tx = w.transaction()?;
        let out = f(&tx)?;
        if let Err(e) = tx.commit() {
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure) {
                self.unsynced.store(true, Relaxed);
                void_refused(&w);
            }
            return Err(e.into());
        }
        Ok(out)
    }

    pub(super) fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journals a batch as a new job with all its chunks, in one
    /// transaction; returns the job id and its chunks.
    pub fn insert_job(&self, job: &NewJob) -> Result<(i64, Vec<ChunkId>)> {
        self.durable(|tx| {
        let events: u64 = job.chunks.iter().map(|c| c.1).sum();
        tx.execute(
            "INSERT INTO jobs (pipeline, kind, origin, received_at, context, events_in, chunks, pinned)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                job.pipeline,
                job.kind,
                job.origin,
                job.received_at,
                job.context,
                events as i64,
                job.chunks.len() as i64,
                job.pinned
            ],
        )?;
        let id = tx.last_insert_rowid();
        let mut keys = Vec::with_capacity(job.chunks.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO chunks (job, seq, first_index, events, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut first = 0u64;
            for (seq, (data, n)) in job.chunks.iter().enumerate() {
                ins.execute(params![id, seq as i64, first as i64, *n as i64, data])?;
                keys.push(ChunkId {
                    job: id,
                    seq: seq as u64,
                    first_index: first,
                    events: *n,
                });
                first += n;
            }
        }
        if job.chunks.is_empty() {
            // A job with nothing to do (a replay of an empty job) is done now.
            tx.execute(
                "UPDATE jobs SET started_at = received_at, finished_at = received_at WHERE id = ?1",
                [id],
            )?;
        }
        Ok((id, keys))
        })
    }

    /// Chunks not yet done, oldest first (for a restart).
    pub fn pending(&self) -> Result<Vec<ChunkId>> {
        let r = self.reader();
        let mut st = r.prepare(
            "SELECT job, seq, first_index, events FROM chunks WHERE done = 0 ORDER BY job, seq",
        )?;
        let rows = st.query_map([], chunk_id)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Loads a chunk's input, and marks its job started.
    pub fn load_chunk(&self, key: ChunkId, now: i64) -> Result<Option<ChunkInput>> {
        let input = {
            let r = self.reader();
            r.query_row(
                "SELECT c.data, c.first_index, j.context, j.received_at, j.pipeline, j.pinned
                 FROM chunks c JOIN jobs j ON j.id = c.job
                 WHERE c.job = ?1 AND c.seq = ?2 AND c.done = 0",
                params![key.job, key.seq as i64],
                |r| {
                    Ok(ChunkInput {
                        data: r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                        first_index: r.get::<_, i64>(1)? as u64,
                        context: r.get(2)?,
                        received_at: r.get(3)?,
                        pipeline: r.get(4)?,
                        pinned: r.get(5)?,
                    })
                },
            )
            .optional()?
        };
        if input.is_some() {
            self.writer(false)?.execute(
                "UPDATE jobs SET started_at = ?2 WHERE id = ?1 AND started_at IS NULL",
                params![key.job, now],
            )?;
        }
        Ok(input)
    }

    /// Records a processed chunk: outputs, dead letters, partial and done
    /// mark in one transaction, plus the job's result when it was the last
    /// chunk. [`Committed::Duplicate`] (storing nothing) if the chunk was
    /// already done.
    pub fn complete_chunk(
        &self,
        key: ChunkId,
        res: &ChunkReport,
        now: i64,
        combine: Option<&mut Combine<'_>>,
        windows: Option<(&WindowBook, &mut dyn Fold)>,
    ) -> Result<Committed> {
        let mut w = self.writer(false)?;
        let tx = w.transaction()?;
        let marked = tx.execute(
            "UPDATE chunks SET done = 1, partial = ?3, versions = ?4 WHERE job = ?1 AND seq = ?2 AND done = 0",
            params![key.job, key.seq as i64, (!res.partial.is_empty()).then_some(&res.partial), res.versions()],
        )?;
        if marked == 0 {
            return Ok(Committed::Duplicate);
        }
        let (pipeline, at): (String, i64) = tx.query_row(
            "SELECT pipeline, received_at FROM jobs WHERE id = ?1",
            [key.job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        // Windows first: the events they find late are this chunk's dead
        // letters too, stored below with the others.
        let late = match (windows, &res.windows) {
            (Some((book, fold)), Some(chunk)) => {
                commit_windows(&tx, &pipeline, book, Some((chunk, fold)), now)?.0
            }
            _ => Vec::new(),
        };
        let mut outputs = 0i64;
        {
            let full_text = self.indexing.full_text;
            let mut words = String::new();
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (job, pipeline, idx, at, body, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut text =
                tx.prepare_cached("INSERT INTO events_text (rowid, words) VALUES (?1, ?2)")?;
            let lines = res.output.split(|&b| b == b'\n').filter(|l| !l.is_empty());
            for (line, &idx) in lines.zip(&res.origin) {
                let body = std::str::from_utf8(line)
                    .context("a stage produced output that is not UTF-8")?;
                let time = self.indexing.time_of(line, at);
                ins.execute(params![key.job, pipeline, idx as i64, at, body, time])?;
                if full_text {
                    words.clear();
                    words_of(line, &mut words);
                    text.execute(params![tx.last_insert_rowid(), words])?;
                }
                outputs += 1;
            }
            let mut dl = tx.prepare_cached(
                "INSERT INTO dead_letters (job, pipeline, stage, error, idx, attempts, at, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut dead_text =
                tx.prepare_cached("INSERT INTO dead_text (rowid, words) VALUES (?1, ?2)")?;
            for d in res.dead.iter().chain(&late) {
                dl.execute(params![
                    key.job,
                    pipeline,
                    d.stage_name(),
                    d.error,
                    d.index as i64,
                    d.attempts,
                    at,
                    d.event
                ])?;
                if full_text {
                    dead_text.execute(params![
                        tx.last_insert_rowid(),
                        dead_words(&d.error, &d.event)
                    ])?;
                }
            }
        }
        tx.execute(
            "UPDATE jobs SET chunks_done = chunks_done + 1, events_out = events_out + ?2,
                 dead_letters = dead_letters + ?3, retries = retries + ?4 WHERE id = ?1",
            params![
                key.job,
                outputs,
                (res.dead.len() + late.len()) as i64,
                res.retries as i64
            ],
        )?;
        let (done, total): (i64, i64) = tx.query_row(
            "SELECT chunks_done, chunks FROM jobs WHERE id = ?1",
            [key.job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let finished = done == total;
        if finished {
            let result = match combine {
                Some(combine) => {
                    let mut st = tx.prepare_cached(
                        "SELECT partial FROM chunks WHERE job = ?1 AND partial IS NOT NULL ORDER BY seq",
                    )?;
                    let partials = st
                        .query_map([key.job], |r| r.get::<_, Vec<u8>>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    drop(st);
                    let out = combine(partials)?;
                    Some(String::from_utf8(out).context("the reduce result is not UTF-8")?)
                }
                None => None,
            };
            tx.execute(
                "UPDATE jobs SET finished_at = ?2, result = ?3 WHERE id = ?1",
                params![key.job, now, result],
            )?;
        }
        tx.commit()?;
        Ok(Committed::Stored { finished })
    }

    /// Advances the window clock of a quiet stream (see
    /// [`WindowBook::tick`]); returns the windows it closed.
    pub fn tick_windows(&self, pipeline: &str, book: &WindowBook, now: i64) -> Result<usize> {
        let mut w = self.writer(false)?;
        let tx = w.transaction()?;
        let (_, closed) = commit_windows(&tx, pipeline, book, None, now)?;
        tx.commit()?;
        Ok(closed)
    }

    /// The newest stored event's and dead letter's ids (0: none).
    pub fn last_ids(&self) -> Result<(i64, i64)> {
        let r = self.reader();
        Ok(r.query_row(
            "SELECT (SELECT coalesce(max(id), 0) FROM events), (SELECT coalesce(max(id), 0) FROM dead_letters)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Closed windows matching `q`, oldest first.
    pub fn windows(&self, q: &WindowQuery) -> Result<Vec<WindowRow>> {
        let mut sql = String::from(
            "SELECT id, pipeline, start_at, end_at, key, value, closed_at FROM windows WHERE id > ?",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![q.after.into()];
        if let Some(p) = &q.pipeline {
            sql.push_str(" AND pipeline = ?");
            args.push(p.clone().into());
        }
        if let Some(k) = &q.key {
            sql.push_str(" AND key = ?");
            args.push(k.clone().into());
        }
        if let Some(t) = q.since {
            sql.push_str(" AND start_at >= ?");
            args.push(t.into());
        }
        if let Some(t) = q.until {
            sql.push_str(" AND end_at <= ?");
            args.push(t.into());
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        args.push(i64::from(q.limit).into());
        let r = self.reader();
        let mut st = r.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(WindowRow {
                id: r.get(0)?,
                pipeline: r.get(1)?,
                start: r.get(2)?,
                end: r.get(3)?,
                key: r.get(4)?,
                value: r.get(5)?,
                closed_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Option<JobRow>> {
        let r = self.reader();
        let job = r
            .query_row(&format!("{JOB_COLUMNS} WHERE id = ?1"), [id], job_row)
            .optional()?;
        let Some(mut job) = job else { return Ok(None) };
        job.versions = versions_of(&r, id)?;
        Ok(Some(job))
    }

    /// Jobs, newest first, before id `before`.
    pub fn jobs(&self, pipeline: Option<&str>, before: i64, limit: u32) -> Result<Vec<JobRow>> {
        let r = self.reader();
        let mut st = r.prepare_cached(&format!(
            "{JOB_COLUMNS} WHERE id < ?1 AND (?2 IS NULL OR pipeline = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![before, pipeline, limit], job_row)?;
        let mut jobs: Vec<JobRow> = rows.collect::<Result<_, _>>()?;
        // A listing shows what a job's own page shows.
        for job in &mut jobs {
            job.versions = versions_of(&r, job.id)?;
        }
        Ok(jobs)
    }

    /// Stored events matching `q`, oldest first (or newest first).
    pub fn events(&self, q: &EventQuery) -> Result<Vec<EventRow>> {
        let (from, mut args) = self.event_filter(q)?;
        // With a search, the text index yields ids in order, and the page
        // is its first `limit` that pass the other filters.
        let id = if q.terms.is_empty() {
            "e.id"
        } else {
            "t.rowid"
        };
        let mut sql = format!("SELECT e.id, e.job, e.pipeline, e.idx, e.at, e.time, e.body {from}");
        if q.newest_first {
            if let Some(before) = q.before {
                sql.push_str(&format!(" AND {id} < ?"));
                args.push(before.into());
            }
            sql.push_str(&format!(" ORDER BY {id} DESC LIMIT ?"));
        } else {
            sql.push_str(&format!(" AND {id} > ? ORDER BY {id} LIMIT ?"));
            args.push(q.after.into());
        }
        args.push(i64::from(q.limit).into());
        let r = self.reader();
        let mut st = r.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(EventRow {
                id: r.get(0)?,
                job: r.get(1)?,
                pipeline: r.get(2)?,
                index: r.get::<_, i64>(3)? as u64,
                at: r.get(4)?,
                time: r.get(5)?,
                body: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Matches of `q` counted in `buckets` over its time range (the
    /// matches' own range when it has none).
    pub fn histogram(&self, q: &EventQuery, buckets: u32) -> Result<Histogram> {
        let (from, args) = self.event_filter(q)?;
        let r = self.reader();
        let (total, first, last): (i64, Option<i64>, Option<i64>) = r
            .prepare_cached(&format!("SELECT count(*), min(e.time), max(e.time) {from}"))?
            .query_row(rusqlite::params_from_iter(args.clone()), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let (Some(first), Some(last)) = (q.since.or(first), q.until.or(last.map(|t| t + 1))) else {
            return Ok(Histogram::default());
        };
        let (since, interval, n) = Histogram::frame(first, last, buckets);
        let mut counts = vec![0u64; n as usize];
        if total > 0 {
            let mut st = r.prepare_cached(&format!(
                "SELECT (e.time - ?) / ?, count(*) {from} AND e.time >= ? AND e.time < ? GROUP BY 1"
            ))?;
            let mut all: Vec<rusqlite::types::Value> = vec![since.into(), interval.into()];
            all.extend(args);
            all.push(since.into());
            all.push(last.max(since + 1).into());
            let rows = st.query_map(rusqlite::params_from_iter(all), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (b, c) = row?;
                if let Some(slot) = counts.get_mut(b as usize) {
                    *slot = c as u64;
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

    /// `FROM ... WHERE ...` of the events `q` selects (aliases `e` and,
    /// with a search, `t`), and its arguments.
    fn event_filter(&self, q: &EventQuery) -> Result<(String, Vec<rusqlite::types::Value>)> {
        let mut sql = String::from("FROM events e");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(m) = self.text_match(&q.terms)? {
            sql.push_str(" JOIN events_text t ON t.rowid = e.id WHERE events_text MATCH ?");
            args.push(m.into());
        } else {
            sql.push_str(" WHERE 1");
        }
        if let Some(p) = &q.pipeline {
            sql.push_str(" AND e.pipeline = ?");
            args.push(p.clone().into());
        }
        if let Some(j) = q.job {
            sql.push_str(" AND e.job = ?");
            args.push(j.into());
        }
        if let Some(t) = q.since {
            sql.push_str(" AND e.time >= ?");
            args.push(t.into());
        }
        if let Some(t) = q.until {
            sql.push_str(" AND e.time < ?");
            args.push(t.into());
        }
        for (path, value) in &q.fields {
            // Compared as text, so that `field.n=5` matches the number 5;
            // spelt as the field's index is, so an indexed field uses it.
            sql.push_str(&format!(" AND {} = ?", path.sqlite_expr(Some("e"))));
            args.push(value.clone().into());
        }
        Ok((sql, args))
    }

    /// The FTS5 query of `terms`, or an error if the text index is off.
    fn text_match(&self, terms: &[Term]) -> Result<Option<String>> {
        let m = super::search::fts5(terms);
        if m.is_some() && !self.indexing.full_text {
            return Err(super::search::TextIndexOff.into());
        }
        Ok(m)
    }

    /// Dead letters matching `q`, oldest first.
    pub fn dead_letters(&self, q: &DeadQuery) -> Result<Vec<DeadRow>> {
        let mut sql = String::from(
            // The versions are those of the chunk the event was in: the
            // last chunk of its job starting at or before it.
            "SELECT d.id, d.job, d.pipeline, d.stage, d.error, d.idx, d.attempts, d.at, d.event, d.retried_by,
                    (SELECT c.versions FROM chunks c
                     WHERE c.job = d.job AND c.first_index <= d.idx AND d.idx < c.first_index + c.events
                     ORDER BY c.seq DESC LIMIT 1)
             FROM dead_letters d",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(m) = self.text_match(&q.terms)? {
            sql.push_str(" JOIN dead_text t ON t.rowid = d.id WHERE dead_text MATCH ?");
            args.push(m.into());
        } else {
            sql.push_str(" WHERE 1");
        }
        if let Some(p) = &q.pipeline {
            sql.push_str(" AND d.pipeline = ?");
            args.push(p.clone().into());
        }
        if let Some(j) = q.job {
            sql.push_str(" AND d.job = ?");
            args.push(j.into());
        }
        sql.push_str(" AND d.id > ? ORDER BY d.id LIMIT ?");
        args.push(q.after.into());
        args.push(i64::from(q.limit).into());
        let r = self.reader();
        let mut st = r.prepare_cached(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(DeadRow {
                id: r.get(0)?,
                job: r.get(1)?,
                pipeline: r.get(2)?,
                stage: r.get(3)?,
                error: r.get(4)?,
                index: r.get::<_, i64>(5)? as u64,
                attempts: r.get(6)?,
                at: r.get(7)?,
                event: r.get(8)?,
                retried_by: r.get(9)?,
                versions: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Read-only SQL over the documented views (see [`super::sql`]).
    pub fn query(
        &self,
        sql: &str,
        limit: usize,
        timeout: std::time::Duration,
    ) -> Result<Table, QueryError> {
        self.sql
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .run(sql, limit, timeout)
    }

    /// Runs the dead letters of `job` not yet retried as a new job (of kind
    /// `retry`), marking them retried in the same transaction. `chunk`
    /// splits the events into chunks. `None` when there is nothing to retry.
    pub fn retry_dead_letters(
        &self,
        job: i64,
        now: i64,
        chunk: &dyn Fn(Vec<Vec<u8>>) -> Chunks,
    ) -> Result<Option<(i64, Vec<ChunkId>, u64)>> {
        self.durable(|tx| {
        let (pipeline, context): (String, String) = tx.query_row(
            "SELECT pipeline, context FROM jobs WHERE id = ?1",
            [job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let events: Vec<Vec<u8>> = {
            let mut st = tx.prepare(
                "SELECT event FROM dead_letters WHERE job = ?1 AND retried_by IS NULL ORDER BY idx",
            )?;
            st.query_map([job], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if events.is_empty() {
            return Ok(None);
        }
        let n = events.len() as u64;
        let chunks = chunk(events);
        tx.execute(
            "INSERT INTO jobs (pipeline, kind, origin, received_at, context, events_in, chunks)
             VALUES (?1, 'retry', ?2, ?3, ?4, ?5, ?6)",
            params![pipeline, job, now, context, n as i64, chunks.len() as i64],
        )?;
        let id = tx.last_insert_rowid();
        let mut keys = Vec::new();
        let mut first = 0u64;
        for (seq, (data, k)) in chunks.iter().enumerate() {
            tx.execute(
                "INSERT INTO chunks (job, seq, first_index, events, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq as i64, first as i64, *k as i64, data],
            )?;
            keys.push(ChunkId {
                job: id,
                seq: seq as u64,
                first_index: first,
                events: *k,
            });
            first += k;
        }
        tx.execute(
            "UPDATE dead_letters SET retried_by = ?2 WHERE job = ?1 AND retried_by IS NULL",
            params![job, id],
        )?;
        Ok(Some((id, keys, n)))
        })
    }

    /// A job's input, as the chunks it was journaled as, in order; `None`
    /// if there is no such job. Fails with [`super::InputPurged`] when
    /// retention deleted it.
    pub fn job_input(&self, job: i64) -> Result<Option<Chunks>> {
        let r = self.reader();
        let Some(chunks): Option<i64> = r
            .query_row("SELECT chunks FROM jobs WHERE id = ?1", [job], |r| r.get(0))
            .optional()?
        else {
            return Ok(None);
        };
        let mut st = r.prepare("SELECT data, events FROM chunks WHERE job = ?1 ORDER BY seq")?;
        let rows: Vec<(Option<Vec<u8>>, i64)> = st
            .query_map([job], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if rows.len() as i64 != chunks || rows.iter().any(|r| r.0.is_none()) {
            return Err(super::InputPurged { job }.into());
        }
        Ok(Some(
            rows.into_iter()
                .map(|(data, n)| (data.unwrap_or_default(), n as u64))
                .collect(),
        ))
    }

    /// Runs the stored input of `job` again as a new job (of kind `replay`).
    /// `None` if the job does not exist; an error if its input was purged.
    /// `pinned` (stage name to whole version, JSON) makes it run on those
    /// versions.
    pub fn replay(
        &self,
        job: i64,
        now: i64,
        pinned: Option<&str>,
    ) -> Result<Option<(i64, Vec<ChunkId>, u64)>> {
        self.durable(|tx| {
        let Some((pipeline, context, n, chunks)): Option<(String, String, i64, i64)> = tx
            .query_row(
                "SELECT pipeline, context, events_in, chunks FROM jobs WHERE id = ?1",
                [job],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let purged: i64 = tx.query_row(
            "SELECT count(*) FROM chunks WHERE job = ?1 AND data IS NULL",
            [job],
            |r| r.get(0),
        )?;
        let present: i64 =
            tx.query_row("SELECT count(*) FROM chunks WHERE job = ?1", [job], |r| {
                r.get(0)
            })?;
        if purged > 0 || present != chunks {
            return Err(super::InputPurged { job }.into());
        }
        tx.execute(
            "INSERT INTO jobs (pipeline, kind, origin, received_at, context, events_in, chunks, pinned)
             VALUES (?1, 'replay', ?2, ?3, ?4, ?5, ?6, ?7)",
            params![pipeline, job, now, context, n, chunks, pinned],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO chunks (job, seq, first_index, events, data)
             SELECT ?2, seq, first_index, events, data FROM chunks WHERE job = ?1",
            params![job, id],
        )?;
        if chunks == 0 {
            tx.execute(
                "UPDATE jobs SET started_at = received_at, finished_at = received_at WHERE id = ?1",
                [id],
            )?;
        }
        let keys = {
            let mut st = tx.prepare(
                "SELECT job, seq, first_index, events FROM chunks WHERE job = ?1 ORDER BY seq",
            )?;
            st.query_map([id], chunk_id)?
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Some((id, keys, n as u64)))
        })
    }

    /// Deletes stored events and dead letters received before `before`
    /// (ms), and the inputs of finished jobs received before it. Returns
    /// the number of events deleted.
    pub fn purge(&self, before: i64) -> Result<u64> {
        let mut w = self.writer(false)?;
        let tx = w.transaction()?;
        // The text index first, while the rows say which ids go.
        tx.execute(
            "DELETE FROM events_text WHERE rowid IN (SELECT id FROM events WHERE at < ?1)",
            [before],
        )?;
        tx.execute(
            "DELETE FROM dead_text WHERE rowid IN (SELECT id FROM dead_letters WHERE at < ?1)",
            [before],
        )?;
        let n = tx.execute("DELETE FROM events WHERE at < ?1", [before])?;
        tx.execute("DELETE FROM dead_letters WHERE at < ?1", [before])?;
        tx.execute(
            "UPDATE chunks SET data = NULL WHERE data IS NOT NULL AND job IN
               (SELECT id FROM jobs WHERE received_at < ?1 AND finished_at IS NOT NULL)",
            [before],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }
}

/// Databases up to this size are read whole (`PRAGMA quick_check`) at
/// every start; a larger one is checked for truncation only, which costs
/// nothing, since reading gigabytes would hold the start for minutes.
const QUICK_CHECK_UP_TO: u64 = 512 << 20;

/// Refuses a damaged database before anything is served from it:
/// truncated (fewer bytes than its header's page count says), or, when
/// small enough to read at start, any page SQLite finds inconsistent.
fn check_intact(c: &Connection, path: &Path) -> Result<()> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page_size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let wal = path.with_extension(format!(
        "{}-wal",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let in_wal = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    if !in_wal && (pages * page_size) as u64 > size {
        bail!(
            "the database is truncated: its header counts {pages} pages of {page_size} bytes, the file has {size} bytes"
        );
    }
    if size <= QUICK_CHECK_UP_TO {
        let verdict: String = c.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if verdict != "ok" {
            bail!("the database is damaged: {verdict}");
        }
    }
    Ok(())
}

/// The error for a database that cannot be opened as one: what is wrong
/// and what to do, as nothing should be served half-read.
fn refuse_damaged(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let damaged = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }) || e.to_string().starts_with("the database is");
    if !damaged {
        return e;
    }
    e.context(format!(
        "{path:?} is not a sound wasmpipe database; restore it (and its -wal file) from a backup, or move it aside with its -wal and -shm files to start on a new, empty one"
    ))
}

/// Frames in the WAL past which a commit checkpoints it (SQLite's own
/// default).
const AUTOCHECKPOINT_FRAMES: std::ffi::c_int = 1000;

/// Checkpoints the WAL as SQLite does by itself (passively, once it holds
/// `AUTOCHECKPOINT_FRAMES`), but watched: SQLite ignores a checkpoint's
/// failure, and its fsync reports a failed write-back of the WAL once,
/// so the next commit's fsync would succeed over frames that never
/// reached the disk. A failed checkpoint marks the journal `unsynced`
/// instead (see [`Store::durable`]).
fn checkpoint_watched(w: &mut Connection, unsynced: Arc<AtomicBool>) -> Result<()> {
    w.wal_hook(Some(
        move |wal: &mut rusqlite::hooks::Wal, frames: std::ffi::c_int| {
            if frames >= AUTOCHECKPOINT_FRAMES
                && let Err(e) = wal.checkpoint()
                && e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure)
            {
                unsynced.store(true, Relaxed);
                tracing::warn!(
                    "cannot checkpoint the journal ({e}); no batch is taken until it is synced to disk again"
                );
            }
            Ok(())
        },
    ))?;
    Ok(())
}

/// Makes the journal trusted again after a failed sync: copies every
/// committed transaction from the WAL into the database file, syncs that,
/// and truncates the WAL, so that the next commit starts a new WAL whose
/// sync covers all of it (a commit appended to the old one would follow
/// frames that may be missing on disk, and a recovery stops at the first
/// missing frame). It waits (the busy timeout) for reads in progress.
fn resync(w: &Connection) -> Result<()> {
    match w.wal_checkpoint_v2(
        Some(rusqlite::MAIN_DB),
        rusqlite::wal::CheckpointMode::TRUNCATE,
    ) {
        Ok(_) => Ok(()),
        Err(e) => Err(NotSynced(e.to_string()).into()),
    }
}

/// After a commit that failed, overwrites the start of its frames in the
/// WAL with a small committed transaction (the schema version written
/// again, unsynced), so that the refused transaction cannot come back:
/// SQLite leaves its frames in the WAL, complete, and a restart before
/// the next write would replay them, accepting a batch whose client was
/// told it was not (and that will send it again). The frames after the
/// overwritten ones no longer chain with their checksums, and recovery
/// stops there.
fn void_refused(w: &Connection) {
    let voided = w
        .pragma_update(None, "synchronous", "OFF")
        .and_then(|()| w.pragma_update(None, "user_version", SCHEMA_VERSION));
    if let Err(e) = voided {
        tracing::warn!(
            "cannot overwrite a refused transaction in the journal ({e}); if wasmpipe restarts before its next write, the refused batch may be processed"
        );
    }
}

/// Creates the indexes of `[serve] index` that are missing, and drops
/// those of fields no longer named (each costs every insert).
fn index_fields(w: &Connection, fields: &[FieldPath]) -> Result<()> {
    let wanted: Vec<String> = fields.iter().map(FieldPath::index_name).collect();
    let existing: Vec<String> = w
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'events_field_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in existing.iter().filter(|n| !wanted.contains(n)) {
        tracing::info!("dropping index {name}: `[serve] index` no longer names its field");
        w.execute_batch(&format!("DROP INDEX \"{name}\""))?;
    }
    for (f, name) in fields.iter().zip(&wanted) {
        if existing.contains(name) {
            continue;
        }
        tracing::info!(
            "indexing field `{}` of the stored events ({name})",
            f.dotted_name()
        );
        w.execute_batch(&format!(
            "CREATE INDEX \"{name}\" ON events ({})",
            f.sqlite_expr(None)
        ))?;
    }
    Ok(())
}

/// Brings the text index to what `full_text` asks: complete (built from
/// the stored rows when it is not, in batches, with progress in the log)
/// or empty.
fn index_text(w: &mut Connection, full_text: bool) -> Result<()> {
    let state: Option<String> = w
        .query_row(
            "SELECT value FROM search_state WHERE name = 'text'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let want = if full_text { "complete" } else { "off" };
    if state.as_deref() == Some(want) {
        return Ok(());
    }
    let set = |w: &Connection, value: &str| -> Result<()> {
        w.execute(
            "INSERT INTO search_state (name, value) VALUES ('text', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [value],
        )?;
        Ok(())
    };
    set(w, "building")?;
    w.execute_batch(
        "INSERT INTO events_text (events_text) VALUES ('delete-all');
         INSERT INTO dead_text (dead_text) VALUES ('delete-all');",
    )?;
    if !full_text {
        tracing::info!(
            "full-text search is off (`[serve] full_text = false`): its index is emptied"
        );
        return set(w, "off");
    }
    let total: i64 = w.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    if total > 0 {
        tracing::info!("building the search index of {total} stored events");
    }
    const BATCH: i64 = 20_000;
    let (mut after, mut done) = (0i64, 0i64);
    loop {
        let tx = w.transaction()?;
        let rows: Vec<(i64, String)> = tx
            .prepare_cached("SELECT id, body FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?
            .query_map(params![after, BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let Some(&(last, _)) = rows.last() else { break };
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO events_text (rowid, words) VALUES (?1, ?2)")?;
            let mut words = String::new();
            for (id, body) in &rows {
                words.clear();
                words_of(body.as_bytes(), &mut words);
                ins.execute(params![id, words])?;
            }
        }
        tx.commit()?;
        (after, done) = (last, done + rows.len() as i64);
        if total > BATCH {
            tracing::info!("search index: {done} of {total} events");
        }
    }
    let dead: Vec<(i64, String, Vec<u8>)> = w
        .prepare("SELECT id, error, event FROM dead_letters")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let tx = w.transaction()?;
    for (id, error, event) in dead {
        tx.execute(
            "INSERT INTO dead_text (rowid, words) VALUES (?1, ?2)",
            params![id, dead_words(&error, &event)],
        )?;
    }
    tx.commit()?;
    set(w, "complete")
}

const JOB_COLUMNS: &str =
    "SELECT id, pipeline, kind, origin, received_at, started_at, finished_at, context,
    events_in, events_out, dead_letters, retries, chunks, chunks_done, result, pinned FROM jobs";

/// Runs the window book in transaction `tx`: loads the clock and the open
/// windows the commit (or, with no chunk, the tick) can touch, runs the
/// book on them in memory, and writes back what changed. Returns the late
/// events' dead letters and the number of windows closed.
fn commit_windows(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    book: &WindowBook,
    chunk: Option<(&WindowedChunk, &mut dyn Fold)>,
    now: i64,
) -> Result<(Vec<DeadLetter>, usize)> {
    let (clock, total) = tx
        .query_row(
            "SELECT max_time, last_seen, open_windows FROM window_clock WHERE pipeline = ?1",
            [pipeline],
            |r| {
                Ok((
                    Clock {
                        max_time: r.get(0)?,
                        last_seen: r.get(1)?,
                    },
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )
        .optional()?
        .unwrap_or_default();
    let needs = book.needs(clock, chunk.as_ref().map(|c| c.0), now);
    let mut rows = std::collections::BTreeMap::new();
    let mut load = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<()> {
        let mut st = tx.prepare_cached(sql)?;
        let found = st.query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        for row in found {
            let (s, e, k, v) = row?;
            rows.insert((s, e, k), v);
        }
        Ok(())
    };
    const COLS: &str =
        "SELECT start_at, end_at, key, partial FROM open_windows WHERE pipeline = ?1";
    if let Some(until) = needs.due_until {
        load(&format!("{COLS} AND end_at <= ?2"), &[&pipeline, &until])?;
    }
    for (s, e) in &needs.spans {
        load(
            &format!("{COLS} AND start_at = ?2 AND end_at = ?3"),
            &[&pipeline, s, e],
        )?;
    }
    for (k, from, to) in &needs.sessions {
        load(
            &format!("{COLS} AND key = ?2 AND start_at < ?3 AND end_at > ?4"),
            &[&pipeline, k, to, from],
        )?;
    }
    let rows = rows
        .into_iter()
        .map(|((s, e, k), v)| (s, e, k, v))
        .collect();
    let staged = MemoryWindows::staged(clock, rows, total);
    let (changes, closed, late) = book.run_staged(staged, chunk, now)?;
    save_windows(tx, pipeline, &changes, &closed, total, now)?;
    Ok((late, closed.len()))
}

fn save_windows(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    c: &Changes,
    closed: &[Closed],
    total: u64,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO window_clock (pipeline, max_time, last_seen, open_windows) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (pipeline) DO UPDATE SET max_time = ?2, last_seen = ?3, open_windows = ?4",
        params![pipeline, c.clock.max_time, c.clock.last_seen, (total as i64 + c.opened).max(0)],
    )?;
    let mut up = tx.prepare_cached(
        "INSERT INTO open_windows (pipeline, end_at, start_at, key, partial) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (pipeline, end_at, start_at, key) DO UPDATE SET partial = excluded.partial",
    )?;
    for (s, e, k, v) in &c.upserts {
        up.execute(params![pipeline, e, s, k, v])?;
    }
    let mut del = tx.prepare_cached(
        "DELETE FROM open_windows WHERE pipeline = ?1 AND end_at = ?2 AND start_at = ?3 AND key = ?4",
    )?;
    for (s, e, k) in &c.deletes {
        del.execute(params![pipeline, e, s, k])?;
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO windows (pipeline, start_at, end_at, key, value, closed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for w in closed {
        let value = std::str::from_utf8(&w.value).context("a window's result is not UTF-8")?;
        ins.execute(params![pipeline, w.start, w.end, w.key, value, now])?;
    }
    Ok(())
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        kind: r.get(2)?,
        origin: r.get(3)?,
        received_at: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        context: r.get(7)?,
        events_in: r.get::<_, i64>(8)? as u64,
        events_out: r.get::<_, i64>(9)? as u64,
        dead_letters: r.get::<_, i64>(10)? as u64,
        retries: r.get::<_, i64>(11)? as u64,
        chunks: r.get::<_, i64>(12)? as u64,
        chunks_done: r.get::<_, i64>(13)? as u64,
        result: r.get(14)?,
        versions: Vec::new(),
        abandoned: false,
        pinned: r.get(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::stored::Committed;

    /// A report of a chunk whose events came out as they went in, with one
    /// dead letter, and the number of its events as its partial.
    fn report(seq: u64, first: u64, events: &[&str]) -> ChunkReport {
        ChunkReport {
            seq,
            output: events
                .iter()
                .flat_map(|e| format!("{e}\n").into_bytes())
                .collect(),
            origin: (first..first + events.len() as u64).collect(),
            dead: vec![DeadLetter {
                stage: Some("s".into()),
                error: "refused".into(),
                index: first,
                line: first + 1,
                attempts: 1,
                event: b"{}".to_vec(),
            }],
            partial: events.len().to_string().into_bytes(),
            counts: Vec::new(),
            events_read: events.len() as u64,
            retries: 0,
            set: crate::runtime::StageSet::new(0, Vec::new()),
            windows: None,
        }
    }

    #[test]
    fn a_chunk_committed_twice_is_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("journal.db"), &Indexing::default()).unwrap();
        let (job, keys) = store
            .insert_job(&NewJob {
                pipeline: "p".into(),
                kind: "ingest",
                origin: None,
                received_at: 1,
                context: "{}".into(),
                chunks: vec![(b"1\n2\n".to_vec(), 2), (b"3\n".to_vec(), 1)],
                pinned: None,
            })
            .unwrap();
        let mut combined = 0;
        let mut sum = |parts: Vec<Vec<u8>>| -> Result<Vec<u8>> {
            combined += 1;
            let n: u64 = parts
                .iter()
                .map(|p| std::str::from_utf8(p).unwrap().parse::<u64>().unwrap())
                .sum();
            Ok(n.to_string().into_bytes())
        };
        let (first, second) = (report(0, 0, &["1", "2"]), report(1, 2, &["3"]));
        let mut commit = |key: ChunkId, r: &ChunkReport, now: i64| {
            store
                .complete_chunk(key, r, now, Some(&mut sum as &mut Combine<'_>), None)
                .unwrap()
        };
        assert_eq!(
            commit(keys[0], &first, 5),
            Committed::Stored { finished: false }
        );
        assert_eq!(commit(keys[0], &first, 6), Committed::Duplicate);
        assert_eq!(
            commit(keys[1], &second, 7),
            Committed::Stored { finished: true }
        );
        assert_eq!(commit(keys[1], &second, 8), Committed::Duplicate);
        assert_eq!(commit(keys[0], &first, 9), Committed::Duplicate);
        assert_eq!(
            combined, 1,
            "the result is combined once, by the last commit"
        );

        let j = store.job(job).unwrap().unwrap();
        assert_eq!((j.events_out, j.dead_letters, j.chunks_done), (3, 2, 2));
        assert_eq!((j.result.as_deref(), j.finished_at), (Some("3"), Some(7)));
        let events = store
            .events(&EventQuery {
                job: Some(job),
                limit: 100,
                ..EventQuery::default()
            })
            .unwrap();
        let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
        assert_eq!(bodies, ["1", "2", "3"]);
        let dead = store
            .dead_letters(&DeadQuery {
                job: Some(job),
                limit: 100,
                ..DeadQuery::default()
            })
            .unwrap();
        assert_eq!(dead.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 2]);
        assert!(store.pending().unwrap().is_empty());
        assert!(
            store.load_chunk(keys[0], 10).unwrap().is_none(),
            "a done chunk is not loaded again"
        );
    }
}
