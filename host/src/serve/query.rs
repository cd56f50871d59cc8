//! `POST /v1/query`: read-only SQL over the stored events, dead letters,
//! jobs and windows (the views of [`crate::store::sql`]), in the store's
//! own dialect. A read token suffices: the database itself refuses every
//! write (see that module), so this route only bounds the work.

use super::auth::Need;
use super::toolkit::{ApiError, ApiResult, Svc, authorize, json_response, read_body};
use crate::store::QueryError;
use crate::store::sql::MAX_ROWS;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// Rows answered unless the request asks for more.
const DEFAULT_ROWS: usize = 1000;
/// How long a statement may run unless the request asks for less.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    sql: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `POST /v1/query` `{"sql": "...", "limit": 1000, "timeout_ms": 10000}`.
pub(super) async fn query(State(svc): Svc, headers: HeaderMap, mut body: Body) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let body = read_body(&svc, &mut body, 1 << 16, "64 KiB for a query").await?;
    let req: Request = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be JSON like {{\"sql\": \"SELECT count(*) FROM events\"}}: {e}"
        ))
    })?;
    if req.sql.trim().is_empty() {
        return Err(ApiError::bad("`sql` is empty"));
    }
    let limit = req.limit.unwrap_or(DEFAULT_ROWS);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(ApiError::bad(format!(
            "`limit` must be between 1 and {MAX_ROWS}, got {limit}"
        )));
    }
    let timeout = match req.timeout_ms {
        None => MAX_TIMEOUT,
        Some(ms) if (1..=MAX_TIMEOUT.as_millis() as u64).contains(&ms) => Duration::from_millis(ms),
        Some(ms) => {
            return Err(ApiError::bad(format!(
                "`timeout_ms` must be between 1 and {}, got {ms}",
                MAX_TIMEOUT.as_millis()
            )));
        }
    };
    let started = Instant::now();
    match svc.backend.query(req.sql, limit, timeout).await {
        Ok(t) => Ok(json_response(
            StatusCode::OK,
            json!({
                "columns": t.columns,
                "rows": t.rows,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            }),
        )),
        Err(QueryError::Invalid(m)) => Err(ApiError::bad(m)),
        Err(QueryError::Refused(m)) => Err(ApiError::new(StatusCode::FORBIDDEN, m)),
        Err(QueryError::TooBig(m)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)),
        Err(QueryError::Store(e)) => Err(ApiError::internal(e)),
    }
}
