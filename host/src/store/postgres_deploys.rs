//! The PostgreSQL store's record of deployments, as
//! [`super::sqlite_deploys`] keeps it in SQLite: every ingest node and
//! worker of a pipeline reads the active candidate and the promotions
//! from here, and loads the modules from here.

use super::model::{DeploymentRow, NewDeployment};
use super::postgres::PgStore;
use anyhow::Result;

/// Added in version 4.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS wasmpipe.deployments (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    stage TEXT NOT NULL,
    version TEXT NOT NULL,
    base TEXT NOT NULL,
    mode TEXT NOT NULL,
    percent SMALLINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    ended_at BIGINT,
    ended_by TEXT,
    reason TEXT,
    module BYTEA NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS deployments_active ON wasmpipe.deployments (pipeline) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS wasmpipe.deployment_stats (
    deployment BIGINT NOT NULL,
    process TEXT NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (deployment, process)
);
";

const COLUMNS: &str = "SELECT id, pipeline, stage, version, base, mode, percent, state, created_at, created_by, ended_at, ended_by, reason FROM wasmpipe.deployments";

fn row(r: &tokio_postgres::Row) -> DeploymentRow {
    DeploymentRow {
        id: r.get(0),
        pipeline: r.get(1),
        stage: r.get(2),
        version: r.get(3),
        base: r.get(4),
        mode: r.get(5),
        percent: r.get::<_, i16>(6) as u8,
        state: r.get(7),
        created_at: r.get(8),
        created_by: r.get(9),
        ended_at: r.get(10),
        ended_by: r.get(11),
        reason: r.get(12),
    }
}

impl PgStore {
    /// Records `d` as the pipeline's active deployment; `Ok(None)` when
    /// another is active.
    pub async fn deploy(&self, d: &NewDeployment) -> Result<Option<DeploymentRow>> {
        let c = self.client().await?;
        let percent = i16::from(d.percent);
        let id = c
            .query_opt(
                "INSERT INTO wasmpipe.deployments (pipeline, stage, version, base, mode, percent, state, created_at, created_by, module)
                 VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9)
                 ON CONFLICT (pipeline) WHERE state = 'active' DO NOTHING RETURNING id",
                &[&d.pipeline, &d.stage, &d.version, &d.base, &d.mode, &percent, &d.created_at, &d.created_by, &d.module],
            )
            .await?;
        let Some(id) = id else { return Ok(None) };
        let id: i64 = id.get(0);
        let r = c
            .query_one(&format!("{COLUMNS} WHERE id = $1"), &[&id])
            .await?;
        Ok(Some(row(&r)))
    }

    /// The pipeline's deployments, newest first.
    pub async fn deployments(&self, pipeline: &str, limit: u32) -> Result<Vec<DeploymentRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("{COLUMNS} WHERE pipeline = $1 ORDER BY id DESC LIMIT $2"),
                &[&pipeline, &i64::from(limit)],
            )
            .await?;
        Ok(rows.iter().map(row).collect())
    }

    /// A deployment's module.
    pub async fn deployment_module(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT module FROM wasmpipe.deployments WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(r.map(|r| r.get(0)))
    }

    /// Ends deployment `id` as `state` if it is active; `None` if it was not.
    pub async fn end_deployment(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: Option<&str>,
        at: i64,
    ) -> Result<Option<DeploymentRow>> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE wasmpipe.deployments SET state = $2, ended_by = $3, reason = $4, ended_at = $5 WHERE id = $1 AND state = 'active'",
                &[&id, &state, &by, &reason, &at],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let r = c
            .query_one(&format!("{COLUMNS} WHERE id = $1"), &[&id])
            .await?;
        Ok(Some(row(&r)))
    }

    /// Replaces what `process` counted of deployment `id`.
    pub async fn put_deployment_stats(&self, id: i64, process: &str, stats: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO wasmpipe.deployment_stats (deployment, process, stats) VALUES ($1, $2, $3)
             ON CONFLICT (deployment, process) DO UPDATE SET stats = excluded.stats",
            &[&id, &process, &stats],
        )
        .await?;
        Ok(())
    }

    /// What every process counted of deployment `id` (JSON each).
    pub async fn deployment_stats(&self, id: i64) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT stats FROM wasmpipe.deployment_stats WHERE deployment = $1 ORDER BY process",
                &[&id],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
