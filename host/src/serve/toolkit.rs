//! What every route uses, written once: the error type (every refusal a
//! JSON body `{"error": "..."}` with the status that says why), bearer
//! authorization, reading a body within its limits and time, query
//! parameters, and the JSON shapes of jobs, events and dead letters.
//! `docs/api.md` documents each route.

use super::Service;
use super::auth::{Denied, Need};
use crate::exec::now_ms;
use crate::store::search::TextIndexOff;
use crate::store::{
    DeadRow, EventQuery, EventRow, FieldPath, InputPurged, JobRow, Refused, Search,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub(super) type Svc = State<Arc<Service>>;

/// A refusal: status, message and, for 429/503, when to come back.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(super) retry_after: Option<u64>,
    /// For a 500: the id under which the error was logged.
    pub(super) id: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            id: None,
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// An error of the service itself: logged in full under a new id, and
    /// answered with that id only, so that no internal detail (paths, SQL,
    /// connection strings) reaches the client.
    pub(super) fn internal(e: anyhow::Error) -> ApiError {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = format!("{:x}-{}", now_ms(), NEXT.fetch_add(1, Relaxed));
        tracing::error!("internal error {id}: {e:#}");
        ApiError {
            id: Some(id),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

impl ApiError {
    /// A failed read: a search this server cannot answer is the client's
    /// to change (400); anything else is internal.
    pub(super) fn read(e: anyhow::Error) -> ApiError {
        match e.downcast_ref::<TextIndexOff>() {
            Some(off) => ApiError::bad(off.to_string()),
            None => ApiError::internal(e),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Unauthenticated(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.id {
            Some(id) => json!({ "error": self.message, "id": id }),
            None => json!({ "error": self.message }),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn authorize(
    svc: &Service,
    headers: &HeaderMap,
    need: Need,
) -> Result<Option<String>, ApiError> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Set by the server loop from the verified certificate only (it drops
    // any copy a client sends): see serve/listen.rs.
    let cert = headers
        .get(super::listen::CLIENT_CERT_HEADER)
        .and_then(|v| v.to_str().ok());
    svc.auth.check(h, cert, need).map_err(|d| {
        svc.metrics
            .batches_refused
            .unauthorized
            .fetch_add(u64::from(need == Need::Write), Relaxed);
        ApiError::from(d)
    })
}

pub(super) fn json_response(status: StatusCode, body: impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Seconds a refused client should wait: the time to work off the backlog
/// at the rate seen so far, between 1 and 60.
pub(super) fn retry_after_secs(svc: &Service) -> u64 {
    let secs = svc.started.elapsed().as_secs_f64().max(1.0);
    let rate = svc.backlog.processed() as f64 / secs;
    let backlog = svc.backlog.waiting() as f64;
    if rate < 1.0 {
        1
    } else {
        (backlog / rate).ceil().clamp(1.0, 60.0) as u64
    }
}

pub(super) fn backlog_full(svc: &Service) -> ApiError {
    svc.metrics.batches_refused.backlog.fetch_add(1, Relaxed);
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: svc.backlog.full_message(),
        retry_after: Some(retry_after_secs(svc)),
        id: None,
    }
}

pub(super) fn unavailable(svc: &Service, why: &str) -> ApiError {
    svc.metrics
        .batches_refused
        .unavailable
        .fetch_add(1, Relaxed);
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: why.into(),
        retry_after: Some(retry_after_secs(svc)),
        id: None,
    }
}

impl ApiError {
    /// What a backend's refusal means to a client. A refusal for a full
    /// backlog or stream is counted as a refused batch.
    pub(super) fn refused(svc: &Service, r: Refused) -> ApiError {
        match r {
            Refused::Full {
                message,
                retry_after,
            } => {
                svc.metrics.batches_refused.backlog.fetch_add(1, Relaxed);
                ApiError {
                    retry_after: Some(retry_after.unwrap_or_else(|| retry_after_secs(svc))),
                    ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
                }
            }
            Refused::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            Refused::Unavailable(m) => unavailable(svc, &m),
            Refused::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            Refused::Failed(e) => match e.downcast::<InputPurged>() {
                Ok(purged) => ApiError::new(StatusCode::GONE, purged.to_string()),
                Err(e) => ApiError::internal(e),
            },
        }
    }
}

/// Reads (and drops) what a refused client is still sending, up to `max`
/// bytes or 5 seconds, so that it gets to read the refusal instead of a
/// reset connection; this costs no memory.
pub(super) async fn drain(body: &mut Body, max: usize) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > max {
                break;
            }
        }
    })
    .await;
}

/// Reads a whole body of at most `max` bytes (the setting `limit` names).
/// A client that sends part of a body and goes quiet would hold its slot
/// for as long as it stays connected: the whole body must arrive within
/// `body_timeout`.
pub(super) async fn read_body(
    svc: &Service,
    body: &mut Body,
    max: usize,
    limit: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + svc.settings.body_timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(buf),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} (serve.body_timeout); send it whole, or raise the limit",
                        crate::manifest::DurationSpec(svc.settings.body_timeout)
                    ),
                ));
            }
        };
        let frame = frame.map_err(|e| ApiError::bad(format!("cannot read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than the limit of {max} bytes ({limit})"),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// A stored time (ms) as the API shows it: RFC 3339, UTC, milliseconds.
pub(super) fn rfc3339(ms: i64) -> String {
    crate::exec::window::field::format_rfc3339(ms)
}

/// A route's query parameters, parsed one way for every route: a name
/// the route does not know is refused with the list of those it does,
/// and each value is checked when it is read, its error naming it.
/// (Crate-visible for `crate::fuzzing`.)
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// `pairs`, each named in `known` (`field.<name>` stands for every
    /// `field.` parameter).
    pub(crate) fn new(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Params, ApiError> {
        for (k, _) in &pairs {
            let ok = known
                .iter()
                .any(|n| n == k || (*n == "field.<name>" && k.starts_with("field.")));
            if !ok {
                let names: Vec<String> = known.iter().map(|n| format!("`{n}`")).collect();
                return Err(ApiError::bad(format!(
                    "unknown parameter `{k}`; use {}",
                    names.join(", ")
                )));
            }
        }
        Ok(Params { pairs })
    }

    /// The last value of `name`.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// An id or cursor: ids start at 1, and a cursor is an id.
    pub(crate) fn id(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.text(name).map(|v| parse_id(name, &v)).transpose()
    }

    /// A time: RFC 3339, or milliseconds since the epoch.
    pub(crate) fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        if let Ok(ms) = v.parse::<i64>() {
            return Ok(Some(ms));
        }
        humantime::parse_rfc3339_weak(&v)
            .map(|t| Some(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)))
            .map_err(|_| ApiError::bad(format!("`{name}` must be an RFC 3339 time (2024-05-01T12:00:00Z) or milliseconds since the epoch, got `{v}`")))
    }

    /// Rows per page: 100 unless `limit` says (1 to 1000).
    pub(crate) fn limit(&self) -> Result<u32, ApiError> {
        match self.text("limit") {
            None => Ok(100),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(format!(
                    "`limit` must be between 1 and 1000, got `{v}`"
                ))),
            },
        }
    }

    /// The filters of an event listing: `pipeline`, `job`, `since`,
    /// `until`, `q` and the `field.` filters (those the route knows); the
    /// page (`after`, `limit`, order) is the route's.
    pub(crate) fn event_filters(&self) -> Result<EventQuery, ApiError> {
        let search = self.search()?;
        let mut fields = self.fields()?;
        fields.extend(search.fields);
        Ok(EventQuery {
            pipeline: self.text("pipeline"),
            job: self.id("job")?,
            since: self.time("since")?,
            until: self.time("until")?,
            fields,
            terms: search.terms,
            ..EventQuery::default()
        })
    }

    /// `q`, parsed (empty when absent).
    pub(crate) fn search(&self) -> Result<Search, ApiError> {
        match self.text("q") {
            None => Ok(Search::default()),
            Some(q) => Search::parse(&q).map_err(|e| ApiError::bad(format!("`q`: {e}"))),
        }
    }

    /// The `field.<name>` filters, in order.
    pub(crate) fn fields(&self) -> Result<Vec<(FieldPath, String)>, ApiError> {
        self.pairs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("field.")?, v)))
            .map(|(path, v)| {
                let path = FieldPath::dotted(path).map_err(|_| {
                    ApiError::bad(format!(
                        "field filter `field.{path}`: a field name is dot-separated letters, digits, '_' and '-', e.g. `field.service=auth` or `field.request.identity=alice`"
                    ))
                })?;
                Ok((path, v.clone()))
            })
            .collect()
    }
}

/// The cursor of the page after one of `got` rows out of `limit`: the
/// last row's id when the page is full, else none (the last page).
pub(super) fn next_cursor(got: usize, limit: usize, last: Option<i64>) -> Option<String> {
    (got == limit)
        .then(|| last.map(|id| id.to_string()))
        .flatten()
}

/// A non-negative integer (an id, a cursor) named `what` in errors.
pub(super) fn parse_id(what: &str, v: &str) -> Result<i64, ApiError> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(ApiError::bad(format!(
            "`{what}` must be a non-negative integer, got `{v}`"
        ))),
    }
}

pub(super) fn job_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no job `{id}`"))
}

pub(super) fn job_json(svc: &Service, j: &JobRow) -> Value {
    let status = if j.finished_at.is_some() {
        "done"
    } else if j.abandoned {
        "abandoned"
    } else if j.started_at.is_some() {
        "running"
    } else {
        "queued"
    };
    let result = j
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    let versions: Vec<Value> = j
        .versions
        .iter()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    let context: Value = serde_json::from_str(&j.context).unwrap_or(Value::Null);
    json!({
        "id": j.id,
        "pipeline": j.pipeline,
        "kind": j.kind,
        "origin": j.origin,
        "status": status,
        "events_in": j.events_in,
        "events_out": j.events_out,
        "dead_letters": j.dead_letters,
        "retries": j.retries,
        "chunks": j.chunks,
        "chunks_done": j.chunks_done,
        "result": result,
        "keyed": svc.keyed,
        "stage_versions": versions,
        "pinned": j.pinned.as_deref().and_then(|p| serde_json::from_str::<Value>(p).ok()),
        "context": context,
        "timings": {
            "received_at": rfc3339(j.received_at),
            "started_at": j.started_at.map(rfc3339),
            "finished_at": j.finished_at.map(rfc3339),
            "queued_ms": j.started_at.map(|s| s - j.received_at),
            "processing_ms": j.started_at.zip(j.finished_at).map(|(s, f)| f - s),
        },
    })
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(ApiError::internal)
}

/// A job, or `None`; a failed read is a `500`.
pub(super) async fn load_job(svc: &Service, id: i64) -> Result<Option<JobRow>, ApiError> {
    svc.backend.job(id).await.map_err(ApiError::internal)
}

/// A stored event as the API shows it (`/v1/events`, `/v1/stream`).
#[derive(Serialize)]
pub(super) struct EventOut<'a> {
    /// `"event"` in the live stream, which also carries dead letters.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(super) kind: Option<&'static str>,
    id: i64,
    job: i64,
    pipeline: &'a str,
    index: u64,
    received_at: String,
    time: String,
    event: &'a RawValue,
}

impl<'a> EventOut<'a> {
    /// `r` as shown, its body checked to be JSON.
    pub(super) fn of(
        r: &'a EventRow,
        kind: Option<&'static str>,
    ) -> serde_json::Result<EventOut<'a>> {
        Ok(EventOut {
            kind,
            id: r.id,
            job: r.job,
            pipeline: &r.pipeline,
            index: r.index,
            received_at: rfc3339(r.at),
            time: rfc3339(r.time),
            event: serde_json::from_str(&r.body)?,
        })
    }
}

/// A dead letter as the API shows it.
pub(super) fn dead_json(d: &DeadRow) -> Value {
    let (event, event_hex) = crate::exec::dead_letter::event_fields(&d.event);
    let mut v = json!({
        "id": d.id, "job": d.job, "pipeline": d.pipeline, "stage": d.stage, "error": d.error,
        "index": d.index, "attempts": d.attempts, "received_at": rfc3339(d.at), "event": event,
        "retried_by": d.retried_by,
    });
    if let Some(hex) = event_hex {
        v["event_hex"] = hex.into();
    }
    // Which version of each stage ran the event's chunk, as `run`'s
    // dead-letter records say.
    if let Some(versions) = d
        .versions
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
    {
        v["versions"] = versions;
    }
    v
}
