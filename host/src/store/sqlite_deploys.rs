//! The SQLite store's record of deployments: candidates, their ends, their
//! modules and the comparison figures processes report (see
//! [`crate::exec::deploy`]). One active deployment per pipeline, enforced
//! by a unique index.

use super::model::{DeploymentRow, NewDeployment};
use super::sqlite::Store;
use anyhow::Result;
use rusqlite::{OptionalExtension, params};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    version TEXT NOT NULL,         -- the candidate's whole version
    base TEXT NOT NULL,            -- the live version it was deployed beside
    mode TEXT NOT NULL,            -- shadow, canary
    percent INTEGER NOT NULL,
    state TEXT NOT NULL,           -- active, promoted, aborted, rolled_back, dropped
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    ended_at INTEGER,
    ended_by TEXT,
    reason TEXT,
    module BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS deployments_active ON deployments (pipeline) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS deployment_stats (
    deployment INTEGER NOT NULL,
    process TEXT NOT NULL,
    stats TEXT NOT NULL,           -- JSON, what that process counted
    PRIMARY KEY (deployment, process)
) WITHOUT ROWID;
";

const COLUMNS: &str = "SELECT id, pipeline, stage, version, base, mode, percent, state, created_at, created_by, ended_at, ended_by, reason FROM deployments";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        stage: r.get(2)?,
        version: r.get(3)?,
        base: r.get(4)?,
        mode: r.get(5)?,
        percent: r.get(6)?,
        state: r.get(7)?,
        created_at: r.get(8)?,
        created_by: r.get(9)?,
        ended_at: r.get(10)?,
        ended_by: r.get(11)?,
        reason: r.get(12)?,
    })
}

impl Store {
    /// Records `d` as the pipeline's active deployment; `Ok(None)` when
    /// another is active.
    pub fn deploy(&self, d: &NewDeployment) -> Result<Option<DeploymentRow>> {
        let w = self.writer(true)?;
        let inserted = w.execute(
            "INSERT INTO deployments (pipeline, stage, version, base, mode, percent, state, created_at, created_by, module)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?9
             WHERE NOT EXISTS (SELECT 1 FROM deployments WHERE pipeline = ?1 AND state = 'active')",
            params![d.pipeline, d.stage, d.version, d.base, d.mode, d.percent, d.created_at, d.created_by, d.module],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        let id = w.last_insert_rowid();
        Ok(Some(w.query_row(
            &format!("{COLUMNS} WHERE id = ?1"),
            [id],
            row,
        )?))
    }

    /// The pipeline's deployments, newest first.
    pub fn deployments(&self, pipeline: &str, limit: u32) -> Result<Vec<DeploymentRow>> {
        let r = self.reader();
        let mut st = r.prepare_cached(&format!(
            "{COLUMNS} WHERE pipeline = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![pipeline, limit], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A deployment's module.
    pub fn deployment_module(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let r = self.reader();
        Ok(
            r.query_row("SELECT module FROM deployments WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?,
        )
    }

    /// Ends deployment `id` as `state` if it is active; `None` if it was not.
    pub fn end_deployment(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: Option<&str>,
        at: i64,
    ) -> Result<Option<DeploymentRow>> {
        let w = self.writer(true)?;
        let n = w.execute(
            "UPDATE deployments SET state = ?2, ended_by = ?3, reason = ?4, ended_at = ?5 WHERE id = ?1 AND state = 'active'",
            params![id, state, by, reason, at],
        )?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(w.query_row(
            &format!("{COLUMNS} WHERE id = ?1"),
            [id],
            row,
        )?))
    }

    /// Replaces what `process` counted of deployment `id`.
    pub fn put_deployment_stats(&self, id: i64, process: &str, stats: &str) -> Result<()> {
        let w = self.writer(false)?;
        w.execute(
            "INSERT INTO deployment_stats (deployment, process, stats) VALUES (?1, ?2, ?3)
             ON CONFLICT (deployment, process) DO UPDATE SET stats = excluded.stats",
            params![id, process, stats],
        )?;
        Ok(())
    }

    /// What every process counted of deployment `id` (JSON each).
    pub fn deployment_stats(&self, id: i64) -> Result<Vec<String>> {
        let r = self.reader();
        let mut st = r.prepare_cached(
            "SELECT stats FROM deployment_stats WHERE deployment = ?1 ORDER BY process",
        )?;
        let rows = st.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
