//! The HTTP routes. Every refusal is a JSON body `{"error": "..."}` with
//! the status that says why; `docs/api.md` documents each route.

use super::auth::{Denied, Need};
use super::{Backend, Service, backend, now_ms};
use crate::exec::chunk::Batcher;
use crate::exec::framing;
use crate::queue::jetstream::{ChunkQueue, PublishFailure};
use crate::store::Chunks;
use crate::store::postgres::{NewPgJob, PgStore};
use crate::store::{EventQuery, EventRow, JobRow};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub(super) type Svc = State<Arc<Service>>;

/// The service's routes.
pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/pipelines/{name}/jobs", post(ingest))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/replay", post(super::rerun::replay))
        .route(
            "/v1/jobs/{id}/dead-letters/retry",
            post(super::rerun::retry_dead),
        )
        .route("/v1/jobs/{id}/diff", post(super::rerun::diff))
        .route("/v1/dead-letters", get(list_dead))
        .route("/v1/events", get(list_events))
        .route("/v1/windows", get(list_windows))
        .route("/v1/stream", get(super::stream::stream))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(super::console::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route; docs/api.md lists the routes",
            )
        })
        // Every refusal has a JSON body, a wrong method's too.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method; docs/api.md lists each route's",
            )
        })
        .with_state(svc)
}

/// A refusal: status, message and, for 429/503, when to come back.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    /// For a 500: the id under which the error was logged.
    id: Option<String>,
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
    svc.auth.check(h, need).map_err(|d| {
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
fn retry_after(svc: &Service) -> u64 {
    let secs = svc.started.elapsed().as_secs_f64().max(1.0);
    let rate = svc.processed.load(Relaxed) as f64 / secs;
    let backlog = svc.backlog.load(Relaxed) as f64;
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
        message: format!(
            "the backlog is full ({} events waiting, limit {}); retry later",
            svc.backlog.load(Relaxed),
            svc.settings.max_backlog
        ),
        retry_after: Some(retry_after(svc)),
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
        retry_after: Some(retry_after(svc)),
        id: None,
    }
}

/// `POST /v1/pipelines/{name}/jobs`: accepts a batch whole or not at all.
async fn ingest(
    State(svc): Svc,
    Path(name): Path<String>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let mut body = body;
    let res = ingest_batch(&svc, &name, remote, &headers, &mut body).await;
    if res.is_err() {
        drain(&mut body, svc.settings.max_body).await;
    }
    res
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

async fn ingest_batch(
    svc: &Arc<Service>,
    name: &str,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: &mut Body,
) -> ApiResult {
    let t = Instant::now();
    let token = authorize(svc, headers, Need::Write)?;
    let refused = &svc.metrics.batches_refused;
    if name != svc.pipeline {
        refused.not_found.fetch_add(1, Relaxed);
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no pipeline `{name}`; this server runs `{}`", svc.pipeline),
        ));
    }
    if svc.stopping.load(Relaxed) {
        return Err(unavailable(svc, "the server is shutting down"));
    }
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) => match ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "application/json" => Format::Array,
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Format::Lines,
            other => {
                refused.media_type.fetch_add(1, Relaxed);
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "content type `{other}` is not accepted; send `application/json` (a JSON array of events) or `application/x-ndjson` (one event per line)"
                    ),
                ));
            }
        },
        None => {
            refused.media_type.fetch_add(1, Relaxed);
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing `Content-Type`; send `application/json` (a JSON array of events) or `application/x-ndjson` (one event per line)",
            ));
        }
    };
    let max_body = svc.settings.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {max_body} bytes (serve.max_body)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max_body as u64
    {
        refused.too_large.fetch_add(1, Relaxed);
        return Err(too_large());
    }
    if svc.backlog.load(Relaxed) >= svc.settings.max_backlog {
        return Err(backlog_full(svc));
    }
    // Bodies in memory at once are bounded by the permits.
    let _permit =
        match tokio::time::timeout(Duration::from_secs(1), svc.ingest_permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(unavailable(
                    svc,
                    "too many batches are being received at once; retry later",
                ));
            }
        };
    let buf = read_body(svc, body, max_body, "serve.max_body")
        .await
        .inspect_err(|e| {
            match e.status {
                StatusCode::PAYLOAD_TOO_LARGE => refused.too_large.fetch_add(1, Relaxed),
                _ => refused.bad_request.fetch_add(1, Relaxed),
            };
        })?;
    let settings = svc.settings.clone();
    let batch = tokio::task::spawn_blocking(move || parse_batch(&buf, format, &settings))
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .inspect_err(|e| {
            match e.status {
                StatusCode::PAYLOAD_TOO_LARGE => refused.too_large.fetch_add(1, Relaxed),
                _ => refused.bad_request.fetch_add(1, Relaxed),
            };
        })?;
    let n = batch.events;
    if n > svc.settings.max_backlog {
        refused.too_large.fetch_add(1, Relaxed);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the batch has {n} events, more than the backlog limit of {} (serve.max_backlog)",
                svc.settings.max_backlog
            ),
        ));
    }
    // Only this process's own workers drain the backlog counter; on a
    // cluster the stream's `max_bytes` bounds the queue instead.
    let embedded = matches!(svc.backend, Backend::Embedded { .. });
    if embedded && svc.backlog.fetch_add(n, Relaxed) + n > svc.settings.max_backlog {
        svc.backlog.fetch_sub(n, Relaxed);
        return Err(backlog_full(svc));
    }

    let received_at = now_ms();
    let header_str = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let identity = svc
        .settings
        .identity_header
        .as_deref()
        .and_then(header_str)
        .or_else(|| token.clone());
    let context = json!({
        "received_at": rfc3339(received_at),
        "remote_addr": remote.to_string(),
        "user_agent": header_str("user-agent"),
        "identity": identity,
        "token": token,
    })
    .to_string();
    let chunks = batch.chunks.len();
    let id = match &svc.backend {
        Backend::Cluster { store, queue } => {
            publish_job(svc, store, queue, received_at, &context, batch.chunks).await?
        }
        Backend::Embedded { .. } => {
            let s = svc.clone();
            let pipeline = svc.pipeline.clone();
            let inserted = tokio::task::spawn_blocking(move || {
                s.embedded().0.insert_job(&crate::store::sqlite::NewJob {
                    pipeline: &pipeline,
                    kind: "ingest",
                    origin: None,
                    received_at,
                    context,
                    chunks: batch.chunks,
                })
            })
            .await;
            let (id, keys) = match inserted {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    svc.backlog.fetch_sub(n, Relaxed);
                    return Err(ApiError::internal(e.context("cannot store the batch")));
                }
                Err(e) => {
                    svc.backlog.fetch_sub(n, Relaxed);
                    return Err(ApiError::internal(e.into()));
                }
            };
            svc.embedded().1.push(keys);
            id
        }
    };
    svc.metrics.batches_accepted.fetch_add(1, Relaxed);
    svc.metrics.events_received.fetch_add(n, Relaxed);
    svc.metrics.ingest_latency.observe(t.elapsed());
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({ "job": id, "pipeline": svc.pipeline, "accepted": n, "chunks": chunks, "status": "queued", "url": format!("/v1/jobs/{id}") }),
    ))
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

/// How a body frames its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array.
    Array,
    /// One JSON value per line.
    Lines,
}

/// A parsed batch, cut into chunks of NDJSON.
#[derive(Debug)]
pub struct Batch {
    /// Events.
    pub events: u64,
    /// Chunks: data and number of events.
    pub chunks: Chunks,
}

struct Chunker<'a> {
    s: &'a super::Settings,
    batch: Batcher,
    events: u64,
}

impl Chunker<'_> {
    /// Adds one event (one line, no newline). `what` names it in errors.
    fn push(&mut self, ev: &[u8], what: &dyn Fn() -> String) -> Result<(), ApiError> {
        if ev.len() > self.s.max_event_size {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} is {} bytes, larger than the limit of {} bytes (serve.max_event_size)",
                    what(),
                    ev.len(),
                    self.s.max_event_size
                ),
            ));
        }
        self.events += 1;
        if self.events > self.s.max_events as u64 {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the batch has more than {} events (serve.max_events)",
                    self.s.max_events
                ),
            ));
        }
        self.batch.push(ev);
        Ok(())
    }

    fn finish(self) -> Result<Batch, ApiError> {
        if self.events == 0 {
            return Err(ApiError::bad("the batch has no events"));
        }
        Ok(Batch {
            events: self.events,
            chunks: self.batch.finish(),
        })
    }
}

/// Parses and validates a whole body; any bad event refuses the batch.
pub fn parse_batch(body: &[u8], format: Format, s: &super::Settings) -> Result<Batch, ApiError> {
    let body = framing::strip_bom(body);
    let mut c = Chunker {
        s,
        batch: Batcher::new(s.chunk_size),
        events: 0,
    };
    match format {
        Format::Lines => {
            let mut start = 0;
            let mut line_no = 0u64;
            while start < body.len() {
                let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
                line_no += 1;
                let mut line = &body[start..end];
                start = end + 1;
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                // UTF-8 first: serde_json skips over the strings of an
                // `IgnoredAny` without decoding them.
                if let Err(e) = framing::check(line) {
                    return Err(ApiError::bad(format!(
                        "invalid event at line {line_no}: {e}"
                    )));
                }
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                    return Err(ApiError::bad(format!(
                        "invalid JSON at line {line_no}, column {}: {}",
                        e.column(),
                        message_of(&e)
                    )));
                }
                c.push(line, &|| format!("the event at line {line_no}"))?;
            }
        }
        Format::Array => {
            match body.iter().position(|b| !b.is_ascii_whitespace()) {
                None => {
                    return Err(ApiError::bad(
                        "the body is empty; send a JSON array of events",
                    ));
                }
                Some(i) if body[i] != b'[' => {
                    let line = body[..i].iter().filter(|&&b| b == b'\n').count() + 1;
                    let column = i - body[..i]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |n| n + 1)
                        + 1;
                    return Err(ApiError::bad(format!(
                        "expected a JSON array of events at line {line}, column {column}; send a single event as `[{{...}}]`, or events one per line as `application/x-ndjson`"
                    )));
                }
                Some(_) => {}
            }
            let index = std::cell::Cell::new(0usize);
            let mut de = serde_json::Deserializer::from_slice(body);
            let elements =
                serde::Deserializer::deserialize_seq(&mut de, Elements { index: &index })
                    .and_then(|v| de.end().map(|()| v))
                    .map_err(|e| {
                        let at = format!("line {}, column {}", e.line(), e.column());
                        ApiError::bad(format!(
                            "invalid JSON in array element {} at {at}: {}",
                            index.get(),
                            message_of(&e)
                        ))
                    })?;
            for (i, raw) in elements.iter().enumerate() {
                let text = raw.get().as_bytes();
                if let Err(e) = framing::check(text) {
                    return Err(ApiError::bad(format!("invalid array element {i}: {e}")));
                }
                let what = || format!("array element {i}");
                if text.contains(&b'\n') || text.contains(&b'\r') {
                    c.push(&minify(text), &what)?;
                } else {
                    c.push(text, &what)?;
                }
            }
        }
    }
    c.finish()
}

/// serde_json's message without its " at line L column C" suffix.
fn message_of(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Visits a JSON array, counting elements so an error can name its index.
struct Elements<'a> {
    index: &'a std::cell::Cell<usize>,
}

impl<'de> serde::de::Visitor<'de> for Elements<'_> {
    type Value = Vec<&'de RawValue>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.index.set(out.len());
            match seq.next_element::<&'de RawValue>()? {
                Some(v) => out.push(v),
                None => return Ok(out),
            }
        }
    }
}

/// A JSON value's text without whitespace outside strings, so that a
/// pretty-printed element becomes one line.
fn minify(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let (mut in_str, mut esc) = (false, false);
    for &b in text {
        if in_str {
            out.push(b);
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if !b.is_ascii_whitespace() {
            in_str = b == b'"';
            out.push(b);
        }
    }
    out
}

/// A stored time (ms) as the API shows it: RFC 3339, UTC, milliseconds.
pub(super) fn rfc3339(ms: i64) -> String {
    crate::exec::window::field::format_rfc3339(ms)
}

fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
        .map_err(|_| ApiError::bad(format!("`{name}` must be an RFC 3339 time (2024-05-01T12:00:00Z) or milliseconds since the epoch, got `{v}`")))
}

/// An id or cursor: ids start at 1, and a cursor is an id.
/// The cursor of the page after one of `got` rows out of `limit`: the
/// last row's id when the page is full, else none (the last page).
fn next_cursor(got: usize, limit: usize, last: Option<i64>) -> Option<String> {
    (got == limit)
        .then(|| last.map(|id| id.to_string()))
        .flatten()
}

pub(super) fn parse_id(what: &str, v: &str) -> Result<i64, ApiError> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(ApiError::bad(format!(
            "`{what}` must be a non-negative integer, got `{v}`"
        ))),
    }
}

fn parse_limit(v: Option<&String>) -> Result<u32, ApiError> {
    match v {
        None => Ok(100),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "`limit` must be between 1 and 1000, got `{v}`"
            ))),
        },
    }
}

pub(super) fn job_not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no job `{id}`"))
}

fn job_json(svc: &Service, j: &JobRow) -> Value {
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

/// Records an ingested batch and its input in PostgreSQL and queues it
/// ([`enqueue`]).
async fn publish_job(
    svc: &Service,
    store: &PgStore,
    queue: &ChunkQueue,
    received_at: i64,
    context: &str,
    chunks: Chunks,
) -> Result<i64, ApiError> {
    let id = store
        .insert_job(&NewPgJob {
            pipeline: &svc.pipeline,
            kind: "ingest",
            origin: None,
            received_at,
            context,
            chunks: &chunks,
        })
        .await
        .map_err(|e| unavailable(svc, &format!("cannot record the job in PostgreSQL ({e:#})")))?;
    // Only batches count as refused batches; a retry or replay refused by
    // a full stream is not one.
    enqueue(svc, store, queue, id, &chunks)
        .await
        .inspect_err(|e| {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                svc.metrics.batches_refused.backlog.fetch_add(1, Relaxed);
            }
        })?;
    Ok(id)
}

/// Publishes the chunks of pending job `id` to JetStream and, once
/// JetStream has stored every one, accepts the job. On failure the job is
/// abandoned (workers drop any chunk of it that did get through, and a
/// dead-letter retry is undone) and the client is told to retry: `429`
/// if the stream is full, else `503`.
pub(super) async fn enqueue(
    svc: &Service,
    store: &PgStore,
    queue: &ChunkQueue,
    id: i64,
    chunks: &Chunks,
) -> Result<(), ApiError> {
    let published = queue.publish_job(id, chunks).await;
    let refused = match published {
        Ok(()) => match store.accept_job(id).await {
            Ok(true) => return Ok(()),
            Ok(false) => unavailable(svc, "the job was not accepted in time"),
            Err(e) => unavailable(svc, &format!("cannot record the job in PostgreSQL ({e:#})")),
        },
        Err(PublishFailure::Full) => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "the work queue is full (the JetStream stream is at `[queue] max_bytes`); retry later, or add workers".into(),
            retry_after: Some(5),
            id: None,
        },
        Err(PublishFailure::TooLarge { event, size, limit }) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "event {event} is {size} bytes, more than the {limit} bytes a NATS message may carry (the server's max_payload); make it smaller, or raise max_payload in nats-server's configuration"
            ),
        ),
        Err(e) => unavailable(svc, &format!("cannot queue the batch ({e})")),
    };
    if let Err(e) = store.abandon_job(id, None).await {
        // Workers abandon it themselves once it is old enough.
        tracing::warn!("cannot mark job {id} abandoned: {e:#}");
    }
    Err(refused)
}

pub(super) async fn load_job(svc: &Arc<Service>, id: i64) -> Result<Option<JobRow>, ApiError> {
    backend::job(svc, id).await.map_err(ApiError::internal)
}

/// `GET /v1/jobs/{id}`.
async fn get_job(State(svc): Svc, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let n = id.parse::<i64>().map_err(|_| job_not_found(&id))?;
    match load_job(&svc, n).await? {
        Some(j) => Ok(json_response(StatusCode::OK, job_json(&svc, &j))),
        None => Err(job_not_found(&id)),
    }
}

/// `GET /v1/jobs?pipeline=&cursor=&limit=`: newest first.
async fn list_jobs(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let (mut pipeline, mut before, mut limit) = (None, i64::MAX, None);
    for (k, v) in q {
        match k.as_str() {
            "pipeline" => pipeline = Some(v),
            "cursor" => before = parse_id("cursor", &v)?,
            "limit" => limit = Some(v),
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{k}`; use `pipeline`, `cursor`, `limit`"
                )));
            }
        }
    }
    let limit = parse_limit(limit.as_ref())?;
    let rows = backend::jobs(&svc, pipeline, before, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = next_cursor(rows.len(), limit as usize, rows.last().map(|j| j.id));
    let jobs: Vec<Value> = rows.iter().map(|j| job_json(&svc, j)).collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "jobs": jobs, "next_cursor": next }),
    ))
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
            event: serde_json::from_str(&r.body)?,
        })
    }
}

/// `GET /v1/events`: stored output events, oldest first.
async fn list_events(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let mut query = EventQuery::default();
    let mut limit = None;
    for (k, v) in q {
        match k.as_str() {
            "pipeline" => query.pipeline = Some(v),
            "job" => query.job = Some(parse_id("job", &v)?),
            "since" => query.since = Some(parse_time("since", &v)?),
            "until" => query.until = Some(parse_time("until", &v)?),
            "cursor" => query.after = parse_id("cursor", &v)?,
            "limit" => limit = Some(v),
            _ => match k.strip_prefix("field.") {
                Some(path) => query.fields.push((json_path(path)?, v)),
                None => {
                    return Err(ApiError::bad(format!(
                        "unknown parameter `{k}`; use `pipeline`, `job`, `since`, `until`, `field.<name>`, `cursor`, `limit`"
                    )));
                }
            },
        }
    }
    query.limit = parse_limit(limit.as_ref())?;
    let limit = query.limit as usize;
    let rows = backend::events(&svc, query)
        .await
        .map_err(ApiError::internal)?;
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

/// `GET /v1/windows?pipeline=&key=&since=&until=&cursor=&limit=`: closed
/// windows' results, in the order they closed.
async fn list_windows(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let mut query = crate::store::WindowQuery::default();
    let mut limit = None;
    for (k, v) in q {
        match k.as_str() {
            "pipeline" => query.pipeline = Some(v),
            "key" => query.key = Some(v),
            "since" => query.since = Some(parse_time("since", &v)?),
            "until" => query.until = Some(parse_time("until", &v)?),
            "cursor" => query.after = parse_id("cursor", &v)?,
            "limit" => limit = Some(v),
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{k}`; use `pipeline`, `key`, `since`, `until`, `cursor`, `limit`"
                )));
            }
        }
    }
    if svc.windows.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "pipeline `{}` has no windowed reduce; its results are the jobs' (`GET /v1/jobs/{{id}}`)",
                svc.pipeline
            ),
        ));
    }
    query.limit = parse_limit(limit.as_ref())?;
    let limit = query.limit as usize;
    let rows = backend::windows(&svc, query)
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

/// `field.a.b` → the SQLite JSON path `$."a"."b"`.
pub(super) fn json_path(path: &str) -> Result<String, ApiError> {
    let mut out = String::from("$");
    for seg in path.split('.') {
        if seg.is_empty()
            || !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ApiError::bad(format!(
                "field filter `field.{path}`: a field name is dot-separated letters, digits, '_' and '-', e.g. `field.service=auth` or `field.request.identity=alice`"
            )));
        }
        out.push_str(&format!(".\"{seg}\""));
    }
    Ok(out)
}

/// `GET /v1/dead-letters?pipeline=&job=&cursor=&limit=`.
async fn list_dead(
    State(svc): Svc,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let (mut pipeline, mut job, mut after, mut limit) = (None, None, 0, None);
    for (k, v) in q {
        match k.as_str() {
            "pipeline" => pipeline = Some(v),
            "job" => job = Some(parse_id("job", &v)?),
            "cursor" => after = parse_id("cursor", &v)?,
            "limit" => limit = Some(v),
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{k}`; use `pipeline`, `job`, `cursor`, `limit`"
                )));
            }
        }
    }
    let limit = parse_limit(limit.as_ref())?;
    let rows = backend::dead_letters(&svc, pipeline, job, after, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = next_cursor(rows.len(), limit as usize, rows.last().map(|e| e.id));
    let out: Vec<Value> = rows.iter().map(dead_json).collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "dead_letters": out, "next_cursor": next }),
    ))
}

/// A dead letter as the API shows it.
pub(super) fn dead_json(d: &crate::store::DeadRow) -> Value {
    let event = serde_json::from_slice::<Value>(&d.event)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.event).into_owned()));
    json!({
        "id": d.id, "job": d.job, "pipeline": d.pipeline, "stage": d.stage, "error": d.error,
        "index": d.index, "attempts": d.attempts, "received_at": rfc3339(d.at), "event": event,
        "retried_by": d.retried_by,
    })
}

/// `GET /metrics`.
async fn metrics(State(svc): Svc, headers: HeaderMap) -> ApiResult {
    authorize(&svc, &headers, Need::Read)?;
    let (backlog, queued) = match &svc.backend {
        Backend::Embedded { queue, .. } => (svc.backlog.load(Relaxed), queue.len() as u64),
        Backend::Cluster { store, queue } => (
            store.backlog(&svc.pipeline).await.unwrap_or(0),
            queue.depth().await.unwrap_or(0),
        ),
    };
    let text = svc.metrics.render(&svc.pipeline, backlog, queued);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /healthz`: the process is up (no token needed).
async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({ "status": "ok" }))
}

/// `GET /readyz`: ready to accept batches (no token needed).
async fn readyz(State(svc): Svc) -> Response {
    if svc.stopping.load(Relaxed) {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "shutting down".into(),
            retry_after: Some(1),
            id: None,
        }
        .into_response();
    }
    if svc.backlog.load(Relaxed) >= svc.settings.max_backlog {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the backlog is full".into(),
            retry_after: Some(retry_after(&svc)),
            id: None,
        }
        .into_response();
    }
    if let Backend::Cluster { store, queue } = &svc.backend {
        let down = if let Err(e) = store.ping().await {
            Some(format!("PostgreSQL is unreachable: {e:#}"))
        } else if !queue.connected() {
            Some("NATS is unreachable".to_string())
        } else {
            None
        };
        if let Some(message) = down {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> super::super::Settings {
        super::super::Settings {
            max_body: 1 << 20,
            max_events: 5,
            max_event_size: 30,
            max_backlog: 100,
            chunk_size: 2,
            body_timeout: Duration::from_secs(30),
            retries: crate::exec::Retries {
                times: 0,
                backoff: Duration::from_millis(1),
            },
            retention: None,
            identity_header: None,
            store_reduce_input: true,
        }
    }

    #[test]
    fn json_lines_are_chunked_and_errors_name_line_and_column() {
        let b = parse_batch(b"{\"a\":1}\n\n{\"a\":2}\r\n3\n", Format::Lines, &settings()).unwrap();
        assert_eq!(b.events, 3);
        assert_eq!(
            b.chunks,
            vec![
                (b"{\"a\":1}\n{\"a\":2}\n".to_vec(), 2),
                (b"3\n".to_vec(), 1)
            ]
        );
        let e = parse_batch(b"{\"a\":1}\n{\"a\":}\n", Format::Lines, &settings()).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                StatusCode::BAD_REQUEST,
                "invalid JSON at line 2, column 6: expected value"
            )
        );
    }

    #[test]
    fn json_arrays_are_minified_and_errors_name_the_element() {
        let b = parse_batch(
            b"[ {\"a\": [1,\n 2], \"s\": \"x y\"}, 2 ]",
            Format::Array,
            &settings(),
        )
        .unwrap();
        assert_eq!(
            b.chunks,
            vec![(b"{\"a\":[1,2],\"s\":\"x y\"}\n2\n".to_vec(), 2)]
        );
        let e = parse_batch(b"[1,\n2,\n{\"a\" 1}]", Format::Array, &settings()).unwrap_err();
        assert_eq!(
            e.message,
            "invalid JSON in array element 2 at line 3, column 6: expected `:`"
        );
        let e = parse_batch(b"{\"a\":1}", Format::Array, &settings()).unwrap_err();
        assert!(
            e.message
                .starts_with("expected a JSON array of events at line 1, column 1;"),
            "{}",
            e.message
        );
        let e = parse_batch(b"[]", Format::Array, &settings()).unwrap_err();
        assert_eq!(e.message, "the batch has no events");
    }

    #[test]
    fn limits_refuse_the_whole_batch() {
        let e = parse_batch(b"[1,2,3,4,5,6]", Format::Array, &settings()).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the batch has more than 5 events (serve.max_events)"
            )
        );
        let big = format!("1\n\"{}\"\n", "x".repeat(40));
        let e = parse_batch(big.as_bytes(), Format::Lines, &settings()).unwrap_err();
        assert_eq!(
            e.message,
            "the event at line 2 is 42 bytes, larger than the limit of 30 bytes (serve.max_event_size)"
        );
    }
}
