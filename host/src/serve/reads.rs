//! The read routes: jobs, stored events, dead letters, closed windows,
//! Prometheus metrics, health and readiness. Each asks the backend,
//! whichever it is.

use super::auth::Need;
use super::toolkit::{
    ApiError, ApiResult, EventOut, Params, Svc, authorize, dead_json, job_json, job_not_found,
    json_response, load_job, next_cursor, retry_after_secs, rfc3339,
};
use crate::store::{DeadQuery, EventQuery};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;

/// `GET /v1/jobs/{id}`.
pub(super) async fn get_job(
    State(svc): Svc,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let n = id.parse::<i64>().map_err(|_| job_not_found(&id))?;
    match load_job(&svc, n).await? {
        Some(j) => Ok(json_response(StatusCode::OK, job_json(&svc, &j))),
        None => Err(job_not_found(&id)),
    }
}

/// `GET /v1/jobs?pipeline=&cursor=&limit=`: newest first.
pub(super) async fn list_jobs(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let p = Params::new(q, &["pipeline", "cursor", "limit"])?;
    let (pipeline, before, limit) = (
        p.text("pipeline"),
        p.id("cursor")?.unwrap_or(i64::MAX),
        p.limit()?,
    );
    let rows = svc
        .backend
        .jobs(pipeline, before, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = next_cursor(rows.len(), limit as usize, rows.last().map(|j| j.id));
    let jobs: Vec<Value> = rows.iter().map(|j| job_json(&svc, j)).collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "jobs": jobs, "next_cursor": next }),
    ))
}

/// The filters of an event listing, as [`Params::event_filters`] reads
/// them: `/v1/events` and its histogram take the same.
const EVENT_FILTERS: &[&str] = &["pipeline", "job", "since", "until", "q", "field.<name>"];

/// `GET /v1/events`: stored output events, oldest first, or newest
/// first with `order=desc` (the `cursor` then pages to older ones).
pub(super) async fn list_events(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let p = Params::new(q, &[EVENT_FILTERS, &["order", "cursor", "limit"]].concat())?;
    let newest_first = match p.text("order").as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "`order` is `asc` (oldest first, the default) or `desc` (newest first), got `{other}`"
            )));
        }
    };
    let cursor = p.id("cursor")?;
    let query = EventQuery {
        after: cursor.unwrap_or(0),
        before: cursor.filter(|_| newest_first),
        newest_first,
        limit: p.limit()?,
        ..p.event_filters()?
    };
    let limit = query.limit as usize;
    let rows = svc.backend.events(query).await.map_err(ApiError::read)?;
    let next = next_cursor(rows.len(), limit, rows.last().map(|e| e.id));
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(EventOut::of(r, None).map_err(|e| ApiError::internal(e.into()))?);
    }
    Ok(json_response(
        StatusCode::OK,
        json!({ "events": out, "next_cursor": next }),
    ))
}

/// `GET /v1/events/histogram`: how many stored events match the filters
/// of `/v1/events`, in all and per time bucket.
pub(super) async fn events_histogram(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let p = Params::new(q, &[EVENT_FILTERS, &["buckets"]].concat())?;
    let buckets = match p.text("buckets") {
        None => 60,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(format!(
                    "`buckets` must be between 1 and 500, got `{v}`"
                )));
            }
        },
    };
    let query = p.event_filters()?;
    let h = svc
        .backend
        .histogram(query, buckets)
        .await
        .map_err(ApiError::read)?;
    let out: Vec<Value> = h
        .counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let start = h.since.unwrap_or(0) + i as i64 * h.interval;
            json!({ "start_ms": start, "start": rfc3339(start), "count": count })
        })
        .collect();
    let buckets = if h.total == 0 { Vec::new() } else { out };
    Ok(json_response(
        StatusCode::OK,
        json!({
            "total": h.total,
            "since_ms": h.since,
            "until_ms": h.until,
            "interval_ms": h.interval,
            "buckets": buckets,
        }),
    ))
}

/// `GET /v1/windows?pipeline=&key=&since=&until=&cursor=&limit=`: closed
/// windows' results, in the order they closed.
pub(super) async fn list_windows(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let p = Params::new(q, &["pipeline", "key", "since", "until", "cursor", "limit"])?;
    let query = crate::store::WindowQuery {
        pipeline: p.text("pipeline"),
        key: p.text("key"),
        since: p.time("since")?,
        until: p.time("until")?,
        after: p.id("cursor")?.unwrap_or(0),
        limit: p.limit()?,
    };
    if !svc.windowed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "pipeline `{}` has no windowed reduce; its results are the jobs' (`GET /v1/jobs/{{id}}`)",
                svc.pipeline
            ),
        ));
    }
    let limit = query.limit as usize;
    let rows = svc
        .backend
        .windows(query)
        .await
        .map_err(ApiError::internal)?;
    let next = next_cursor(rows.len(), limit, rows.last().map(|e| e.id));
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let value: &RawValue =
            serde_json::from_str(&r.value).map_err(|e| ApiError::internal(e.into()))?;
        let mut w = json!({
            "id": r.id,
            "pipeline": r.pipeline,
            "window": {
                "start": rfc3339(r.start),
                "end": rfc3339(r.end),
            },
            "value": value,
            "closed_at": rfc3339(r.closed_at),
        });
        if let Some(k) = &r.key {
            w["key"] = k.clone().into();
        }
        out.push(w);
    }
    Ok(json_response(
        StatusCode::OK,
        json!({ "windows": out, "next_cursor": next }),
    ))
}

/// `GET /v1/dead-letters?pipeline=&job=&q=&cursor=&limit=`.
pub(super) async fn list_dead(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let p = Params::new(q, &["pipeline", "job", "q", "cursor", "limit"])?;
    let search = p.search()?;
    if !search.fields.is_empty() {
        return Err(ApiError::bad(
            "`q`: dead letters are searched by words, phrases and prefixes; `field:value` terms filter stored events only",
        ));
    }
    let query = DeadQuery {
        pipeline: p.text("pipeline"),
        job: p.id("job")?,
        terms: search.terms,
        after: p.id("cursor")?.unwrap_or(0),
        limit: p.limit()?,
    };
    let limit = query.limit;
    let rows = svc
        .backend
        .dead_letters(query)
        .await
        .map_err(ApiError::read)?;
    let next = next_cursor(rows.len(), limit as usize, rows.last().map(|e| e.id));
    let out: Vec<Value> = rows.iter().map(dead_json).collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "dead_letters": out, "next_cursor": next }),
    ))
}

/// `GET /metrics`.
pub(super) async fn metrics(State(svc): Svc, headers: HeaderMap) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let (backlog, queued) = svc.backend.depth().await;
    let mut text = svc.metrics.render(&svc.pipeline, backlog, queued);
    text += &svc.deploys.metrics(&svc.pipeline);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /healthz`: the process is up (no token needed).
pub(super) async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({ "status": "ok" }))
}

/// `GET /readyz`: ready to accept batches (no token needed).
pub(super) async fn readyz(State(svc): Svc) -> Response {
    if svc.stopping.load(Relaxed) {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "shutting down".into(),
            retry_after: Some(1),
            id: None,
        }
        .into_response();
    }
    if svc.backlog.full() {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the backlog is full".into(),
            retry_after: Some(retry_after_secs(&svc)),
            id: None,
        }
        .into_response();
    }
    {
        if let Some(message) = svc.backend.unready().await {
            return ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message,
                retry_after: Some(1),
                id: None,
            }
            .into_response();
        }
    }
    json_response(
        StatusCode::OK,
        json!({ "status": "ready", "pipeline": svc.pipeline, "stages": svc.live.current().stages.iter().map(|s| json!({"name": s.name(), "version": s.version})).collect::<Vec<_>>() }),
    )
}

/// `GET /v1/whoami`: the name the request's token (or client certificate)
/// has and what it may do, so that a client (the console) shows only the
/// actions it can take. Any token that reads may ask.
pub(super) async fn whoami(State(svc): Svc, headers: HeaderMap) -> ApiResult {
    let name = authorize(&svc, &headers, Need::Read)?;
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let cert = headers
        .get(super::listen::CLIENT_CERT_HEADER)
        .and_then(|v| v.to_str().ok());
    let write = svc.auth.check(h, cert, Need::Write).is_ok();
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "name": name, "read": true, "write": write }),
    ))
}
