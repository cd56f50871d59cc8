//! Read-only SQL over stored events (`POST /v1/query`), in the store's own
//! dialect, over views that are the same in both stores:
//!
//! | view | columns |
//! |---|---|
//! | `events` | `id, job, pipeline, idx, received_at, time, data` |
//! | `dead_letters` | `id, job, pipeline, stage, error, idx, attempts, received_at, event, retried_by` |
//! | `jobs` | `id, pipeline, kind, origin, received_at, started_at, finished_at, events_in, events_out, dead_letters, retries, chunks, chunks_done, result` |
//! | `windows` | `id, pipeline, start_at, end_at, key, value, closed_at` |
//!
//! Times are milliseconds since the epoch; `data`, `result` and `value`
//! are JSON (`data->>'service'` reads a field in both dialects).
//!
//! Read-only is enforced by the database, not by reading the SQL:
//! - SQLite: a connection opened read-only, whose authorizer allows only
//!   reading the views (and what they read), calling functions other than
//!   `load_extension`, and `WITH RECURSIVE`. A write, `ATTACH`, any
//!   `PRAGMA`, a transaction statement or a direct read of the tables is
//!   refused while the statement is prepared. A progress handler stops a
//!   statement at its timeout.
//! - PostgreSQL: a `READ ONLY` transaction under the role
//!   `wasmpipe_reader`, which may only read the views in schema
//!   `wasmpipe_query`, with `statement_timeout` set.
//!
//! Either way one statement is run; the row limit is checked as rows
//! arrive, so a huge result is never collected.

use super::model::{QueryError, Table};
use anyhow::{Context as _, Result};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

/// The views, as SQLite defines them over the store's tables.
const SQLITE_VIEWS: &str = "
CREATE TEMP VIEW events AS
    SELECT id, job, pipeline, idx, at AS received_at, time, body AS data FROM main.events;
CREATE TEMP VIEW dead_letters AS
    SELECT id, job, pipeline, stage, error, idx, attempts, at AS received_at,
           CAST(event AS TEXT) AS event, retried_by FROM main.dead_letters;
CREATE TEMP VIEW jobs AS
    SELECT id, pipeline, kind, origin, received_at, started_at, finished_at, events_in,
           events_out, dead_letters, retries, chunks, chunks_done, result FROM main.jobs;
CREATE TEMP VIEW windows AS
    SELECT id, pipeline, start_at, end_at, key, value, closed_at FROM main.windows;
";

/// The views' names: what a query may read.
const VIEWS: [&str; 4] = ["events", "dead_letters", "jobs", "windows"];

/// Why the authorizer refused the statement being prepared, for the
/// message (SQLite only says "not authorized").
type Refusal = Arc<Mutex<Option<String>>>;

/// The connection read-only SQL runs on.
pub(super) struct ReadOnly {
    conn: Connection,
    refusal: Refusal,
}

impl ReadOnly {
    /// Opens `path` read-only, defines the views (as temporary views,
    /// which SQLite finds before the tables of the same name), then
    /// installs the authorizer.
    pub(super) fn open(path: &Path) -> Result<ReadOnly> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {path:?} for read-only SQL"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SQLITE_VIEWS)
            .context("cannot define the SQL views")?;
        let refusal: Refusal = Arc::default();
        let seen = refusal.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| match refuse(&ctx) {
            None => Authorization::Allow,
            Some(why) => {
                // The first refusal says it best (a DROP is first a DELETE
                // from the schema table).
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(why);
                Authorization::Deny
            }
        }))?;
        Ok(ReadOnly { conn, refusal })
    }

    /// Runs `sql`: at most `limit` rows, stopped at `timeout`.
    pub(super) fn run(
        &mut self,
        sql: &str,
        limit: usize,
        timeout: Duration,
    ) -> Result<Table, QueryError> {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let deadline = Instant::now() + timeout;
        self.conn
            .progress_handler(10_000, Some(move || Instant::now() > deadline))
            .map_err(|e| QueryError::Store(e.into()))?;
        let out = run_prepared(&self.conn, sql, limit, timeout, &self.refusal);
        let _ = self.conn.progress_handler(0, None::<fn() -> bool>);
        out
    }
}

/// Why the authorizer refuses `ctx`, or `None` to allow it.
fn refuse(ctx: &AuthContext<'_>) -> Option<String> {
    let through_view = ctx.accessor.is_some_and(|v| VIEWS.contains(&v));
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => None,
        AuthAction::DropTable { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::DropView { .. }
        | AuthAction::DropIndex { .. } => Some("the query may only read; DROP is refused".into()),
        AuthAction::CreateTable { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateIndex { .. }
        | AuthAction::CreateTempIndex { .. } => {
            Some("the query may only read; CREATE is refused".into())
        }
        AuthAction::Read { table_name, .. } => {
            // The views read the tables of the same names (and SQLite does
            // not always name the view, as in `count(*)`); a CTE or a
            // subquery is no database's. The journal's input, the window
            // book, the search index and the schema are not for queries.
            if through_view || ctx.database_name != Some("main") || VIEWS.contains(&table_name) {
                None
            } else {
                Some(format!(
                    "`{table_name}` cannot be read here; query the views {}",
                    VIEWS.join(", ")
                ))
            }
        }
        AuthAction::Function { function_name } => {
            let f = function_name.to_ascii_lowercase();
            // Nothing else in this build reads or writes outside the
            // database; these are refused should a build add them.
            if [
                "load_extension",
                "readfile",
                "writefile",
                "edit",
                "fts3_tokenizer",
            ]
            .contains(&f.as_str())
            {
                Some(format!(
                    "the function `{function_name}` is not allowed in a query"
                ))
            } else {
                None
            }
        }
        AuthAction::Pragma { pragma_name, .. } => Some(format!(
            "PRAGMA {pragma_name} is not allowed: queries may only read the views"
        )),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Some("ATTACH and DETACH are not allowed: queries may only read the views".into())
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            Some("transaction statements are not allowed: each query runs alone".into())
        }
        other => Some(format!(
            "the query may only read; {} is refused",
            action_name(&other)
        )),
    }
}

fn action_name(a: &AuthAction<'_>) -> String {
    let debug = format!("{a:?}");
    let name = debug.split([' ', '{', '(']).next().unwrap_or("it");
    // `CreateTempView` → `CREATE TEMP VIEW`.
    let mut out = String::new();
    for (i, c) in name.char_indices() {
        if i > 0 && c.is_uppercase() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn run_prepared(
    c: &Connection,
    sql: &str,
    limit: usize,
    timeout: Duration,
    refusal: &Refusal,
) -> Result<Table, QueryError> {
    let refused = || refusal.lock().unwrap_or_else(|e| e.into_inner()).take();
    let sql = sql.trim().trim_end_matches(';');
    let mut st = match c.prepare(sql) {
        Ok(st) => st,
        Err(e) => {
            return Err(match refused() {
                Some(why) => QueryError::Refused(why),
                None => sqlite_error(e, timeout),
            });
        }
    };
    if !st.readonly() {
        return Err(QueryError::Refused(
            "the query may only read; this statement would write".into(),
        ));
    }
    let columns: Vec<String> = st.column_names().map(str::to_string).collect();
    let n = columns.len();
    let mut rows = Vec::new();
    let mut it = st.query([]).map_err(|e| sqlite_error(e, timeout))?;
    while let Some(row) = it.next().map_err(|e| sqlite_error(e, timeout))? {
        if rows.len() == limit {
            return Err(too_many(limit));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            use rusqlite::types::ValueRef;
            out.push(
                match row.get_ref(i).map_err(|e| QueryError::Store(e.into()))? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => i.into(),
                    ValueRef::Real(f) => {
                        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                    }
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned().into()
                    }
                },
            );
        }
        rows.push(out);
    }
    Ok(Table { columns, rows })
}

fn too_many(limit: usize) -> QueryError {
    QueryError::TooBig(format!(
        "the result has more than {limit} rows; add a LIMIT, aggregate, or ask for a larger `limit` (at most {MAX_ROWS})"
    ))
}

fn sqlite_error(e: rusqlite::Error, timeout: Duration) -> QueryError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) {
        return timed_out(timeout);
    }
    match e {
        rusqlite::Error::SqlInputError { msg, offset, .. } => {
            QueryError::Invalid(format!("{msg} (at character {})", offset + 1))
        }
        rusqlite::Error::MultipleStatement => {
            QueryError::Invalid("send one statement at a time".into())
        }
        // Writing to a view, or to the read-only file.
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if msg.starts_with("cannot modify") || f.code == rusqlite::ErrorCode::ReadOnly =>
        {
            QueryError::Refused(format!("the query may only read: {msg}"))
        }
        rusqlite::Error::SqliteFailure(_, Some(msg)) => QueryError::Invalid(msg),
        e => QueryError::Store(e.into()),
    }
}

fn timed_out(timeout: Duration) -> QueryError {
    QueryError::TooBig(format!(
        "the query ran past its {} ms timeout; narrow it (a time range, a LIMIT) or aggregate less",
        timeout.as_millis()
    ))
}

/// The most rows a query may ask for.
pub const MAX_ROWS: usize = 10_000;

/// The PostgreSQL views (schema `wasmpipe_query`) and the role that may
/// read only them. Rerun at every schema upgrade; the role is created
/// once per database cluster.
pub(super) const PG_VIEWS: &str = "
CREATE SCHEMA IF NOT EXISTS wasmpipe_query;
-- A dead letter's event as text; hex when it is not UTF-8.
CREATE OR REPLACE FUNCTION wasmpipe_query.event_text(b BYTEA) RETURNS TEXT
    LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN RETURN convert_from(b, 'UTF8');
    EXCEPTION WHEN OTHERS THEN RETURN encode(b, 'hex'); END $$;
CREATE OR REPLACE VIEW wasmpipe_query.events AS
    SELECT id, job, pipeline, idx, at AS received_at, time, body::jsonb AS data FROM wasmpipe.events;
CREATE OR REPLACE VIEW wasmpipe_query.dead_letters AS
    SELECT id, job, pipeline, stage, error, idx, attempts, at AS received_at,
           wasmpipe_query.event_text(event) AS event, retried_by FROM wasmpipe.dead_letters;
CREATE OR REPLACE VIEW wasmpipe_query.jobs AS
    SELECT id, pipeline, kind, origin, received_at, started_at, finished_at, events_in,
           events_out, dead_letters, retries, chunks, chunks_done, result FROM wasmpipe.jobs;
CREATE OR REPLACE VIEW wasmpipe_query.windows AS
    SELECT id, pipeline, start_at, end_at, key, value, closed_at FROM wasmpipe.windows;
";

/// Creates role `wasmpipe_reader` if needed and lets it read the views.
pub(super) const PG_ROLE: &str = "
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wasmpipe_reader') THEN
        CREATE ROLE wasmpipe_reader NOLOGIN;
    END IF;
END $$;
-- The creator of a role may not yet be able to take it (PostgreSQL 16).
GRANT wasmpipe_reader TO CURRENT_USER;
REVOKE ALL ON SCHEMA wasmpipe FROM wasmpipe_reader;
GRANT USAGE ON SCHEMA wasmpipe_query TO wasmpipe_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA wasmpipe_query TO wasmpipe_reader;
";

/// Runs `sql` on PostgreSQL connection `c` as described above.
pub(super) async fn run_pg(
    c: &mut tokio_postgres::Client,
    sql: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Table, QueryError> {
    let mut tx = c
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| QueryError::Store(e.into()))?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL search_path = wasmpipe_query;",
        timeout.as_millis().max(1)
    ))
    .await
    .map_err(|e| QueryError::Store(e.into()))?;
    if let Err(e) = tx.batch_execute("SET LOCAL ROLE wasmpipe_reader").await {
        return Err(QueryError::Store(anyhow::Error::new(e).context(
            "cannot take the role `wasmpipe_reader` that read-only SQL runs as; hint: let wasmpipe's database user create roles once (`ALTER USER ... CREATEROLE`), or create it: `CREATE ROLE wasmpipe_reader NOLOGIN; GRANT wasmpipe_reader TO <user>;` and restart",
        )));
    }
    let sql = sql.trim().trim_end_matches(';');
    // The role is the guard against reading what the views do not show,
    // and a statement may reset it (`set_config('role', 'none', ..)`)
    // before a function that runs SQL of its own (`query_to_xml`). So
    // neither that function nor a spelling that hides its name passes.
    let lower = sql.to_ascii_lowercase();
    if lower.contains("set_config") || lower.contains("u&") {
        return Err(QueryError::Refused(
            "`set_config` and `U&` identifiers are not allowed in a query".into(),
        ));
    }
    // Prepared first, so a second statement is refused and the columns
    // are known; then each row is read as one JSON array, in column order
    // (the columns renamed c1..cN, as two may share a name).
    let st = tx.prepare(sql).await.map_err(|e| pg_error(e, timeout))?;
    let columns: Vec<String> = st.columns().iter().map(|c| c.name().to_string()).collect();
    if columns.len() > 100 {
        return Err(QueryError::Invalid(format!(
            "the query returns {} columns; at most 100 can be answered",
            columns.len()
        )));
    }
    let names: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let renamed = if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    };
    let wrapped = format!(
        "SELECT json_build_array({})::text FROM ({sql}) AS q{renamed} LIMIT {}",
        names.join(", "),
        limit + 1
    );
    // In a savepoint: a statement that fails leaves the transaction
    // usable for the one below.
    let attempt = {
        let sp = tx
            .savepoint("wrapped")
            .await
            .map_err(|e| QueryError::Store(e.into()))?;
        let rows = sp.query(&wrapped, &[]).await;
        if rows.is_err() {
            sp.rollback()
                .await
                .map_err(|e| QueryError::Store(e.into()))?;
        }
        rows
    };
    let rows = match attempt {
        Ok(rows) => rows,
        // Not a query (an INSERT does not fit in FROM): run as it is, in
        // the read-only transaction and the reader's role, it says what
        // refuses it; whatever runs is rolled back with the transaction.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::SYNTAX_ERROR) => {
            tx.execute(&st, &[])
                .await
                .map_err(|e| pg_error(e, timeout))?;
            return Err(QueryError::Invalid(
                "only a query (SELECT, WITH, VALUES or TABLE) is answered here".into(),
            ));
        }
        Err(e) => return Err(pg_error(e, timeout)),
    };
    if rows.len() > limit {
        return Err(too_many(limit));
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let text: String = r.get(0);
        let row: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
            QueryError::Store(
                anyhow::Error::new(e).context("PostgreSQL answered a row that is not JSON"),
            )
        })?;
        out.push(row);
    }
    Ok(Table { columns, rows: out })
}

fn pg_error(e: tokio_postgres::Error, timeout: Duration) -> QueryError {
    use tokio_postgres::error::SqlState;
    let Some(db) = e.as_db_error() else {
        return QueryError::Store(e.into());
    };
    let code = db.code();
    let msg = db.message().to_string();
    if *code == SqlState::QUERY_CANCELED {
        timed_out(timeout)
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
    {
        QueryError::Refused(format!("the query may only read the views: {msg}"))
    } else if ["42", "22", "0A", "21"]
        .iter()
        .any(|c| code.code().starts_with(c))
    {
        QueryError::Invalid(match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                format!("{msg} (at character {p})")
            }
            _ => msg,
        })
    } else {
        QueryError::Store(e.into())
    }
}
