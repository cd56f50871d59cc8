//! `POST /v1/pipelines/{name}/jobs`: a batch of events (a JSON array or
//! NDJSON, gzipped or not) accepted whole or not at all, cut into chunks
//! and handed to the backend, which records it before the `202`. The steps
//! every ingest route takes (admission, reading and gunzipping the body,
//! submitting the job) are here, for [`super::otlp`] too.

use super::auth::Need;
use super::toolkit::{
    ApiError, ApiResult, Svc, authorize, backlog_full, drain, json_response, read_body, rfc3339,
    unavailable,
};
use super::{Service, Settings};
use crate::exec::chunk::Batcher;
use crate::exec::{framing, now_ms};
use crate::store::{Chunks, NewJob};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::json;
use serde_json::value::RawValue;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// `POST /v1/pipelines/{name}/jobs`: accepts a batch whole or not at all.
pub(super) async fn ingest(
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

async fn ingest_batch(
    svc: &Arc<Service>,
    name: &str,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: &mut Body,
) -> ApiResult {
    let admitted = admit(svc, headers, || {
        let refused = &svc.metrics.batches_refused;
        if name != svc.pipeline {
            refused.not_found.fetch_add(1, Relaxed);
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no pipeline `{name}`; this server runs `{}`", svc.pipeline),
            ));
        }
        batch_format(svc, headers)
    })
    .await?;
    let format = admitted.what;
    let batch = read_and_parse(svc, headers, body, move |buf, settings| {
        parse_batch(&buf, format, settings)
    })
    .await?;
    let n = batch.events;
    let chunks = batch.chunks.len();
    let id = submit(svc, remote, headers, &admitted, batch).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({ "job": id, "pipeline": svc.pipeline, "accepted": n, "chunks": chunks, "status": "queued", "url": format!("/v1/jobs/{id}") }),
    ))
}

/// A batch's framing, from its `Content-Type`.
fn batch_format(svc: &Service, headers: &HeaderMap) -> Result<Format, ApiError> {
    let refused = &svc.metrics.batches_refused;
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) => match media_type(ct).as_str() {
            "application/json" => Ok(Format::Array),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Ok(Format::Lines),
            other => {
                refused.media_type.fetch_add(1, Relaxed);
                Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "content type `{other}` is not accepted; send `application/json` (a JSON array of events) or `application/x-ndjson` (one event per line)"
                    ),
                ))
            }
        },
        None => {
            refused.media_type.fetch_add(1, Relaxed);
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing `Content-Type`; send `application/json` (a JSON array of events) or `application/x-ndjson` (one event per line)",
            ))
        }
    }
}

/// `type/subtype` of a `Content-Type`, lower case, without parameters.
pub(super) fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A request admitted to send its body: who sent it, what the route made
/// of its headers, and its place among the bodies held in memory.
pub(super) struct Admitted<'a, T> {
    /// The name of the token it carried, if tokens are configured.
    pub(super) token: Option<String>,
    /// What the route's own check returned (the body's format).
    pub(super) what: T,
    /// When it arrived, for the accept latency.
    pub(super) at: Instant,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

/// What every ingest route checks before it reads a body, in this order:
/// a token with write permission, the route's own `check` (its pipeline,
/// its content type), the server not shutting down, no live stage over
/// a budget that pauses intake, a declared length
/// within `serve.max_body`, room in the backlog, and a free ingest slot
/// (bodies in memory at once are bounded by the slots).
pub(super) async fn admit<'a, T>(
    svc: &'a Service,
    headers: &HeaderMap,
    check: impl FnOnce() -> Result<T, ApiError>,
) -> Result<Admitted<'a, T>, ApiError> {
    let at = Instant::now();
    let token = authorize(svc, headers, Need::Write)?;
    let what = check()?;
    if svc.stopping.load(Relaxed) {
        return Err(unavailable(svc, "the server is shutting down"));
    }
    if let Some(why) = svc.deploys.paused() {
        return Err(unavailable(svc, &why));
    }
    let max_body = svc.settings.max_body;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max_body as u64
    {
        svc.metrics.batches_refused.too_large.fetch_add(1, Relaxed);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {max_body} bytes (serve.max_body)"),
        ));
    }
    if svc.backlog.full() {
        return Err(backlog_full(svc));
    }
    let permit =
        match tokio::time::timeout(Duration::from_secs(1), svc.ingest_permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(unavailable(
                    svc,
                    "too many batches are being received at once; retry later",
                ));
            }
        };
    Ok(Admitted {
        token,
        what,
        at,
        _permit: permit,
    })
}

/// Reads an admitted body and, off the async threads, gunzips it when its
/// `Content-Encoding` is gzip (within `serve.max_body` once decompressed
/// too: a zip bomb is a `413`) and `parse`s it. Refusals are counted.
pub(super) async fn read_and_parse<T: Send + 'static>(
    svc: &Service,
    headers: &HeaderMap,
    body: &mut Body,
    parse: impl FnOnce(Vec<u8>, &Settings) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let refused = &svc.metrics.batches_refused;
    let count = |e: &ApiError| {
        match e.status {
            StatusCode::PAYLOAD_TOO_LARGE => refused.too_large.fetch_add(1, Relaxed),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => refused.media_type.fetch_add(1, Relaxed),
            _ => refused.bad_request.fetch_add(1, Relaxed),
        };
    };
    let gzipped = content_encoding(headers).inspect_err(count)?;
    let max_body = svc.settings.max_body;
    let buf = read_body(svc, body, max_body, "serve.max_body")
        .await
        .inspect_err(count)?;
    let settings = svc.settings.clone();
    tokio::task::spawn_blocking(move || {
        let buf = if gzipped {
            gunzip(&buf, settings.max_body)?
        } else {
            buf
        };
        parse(buf, &settings)
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .inspect_err(count)
}

/// Whether the body is gzipped (`Content-Encoding: gzip`); another coding
/// is refused with `415`.
fn content_encoding(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    match v
        .to_str()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "gzip" | "x-gzip" => Ok(true),
        "" | "identity" => Ok(false),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content encoding `{other}` is not accepted; send the body as it is, or gzipped (`Content-Encoding: gzip`)"
            ),
        )),
    }
}

/// A gzipped body, decompressed to at most `max` bytes. Its own trailer
/// (which may lie) is not trusted: bytes are counted as they come out.
pub fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad(format!("the body is not valid gzip: {e}")))?;
    if out.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than the limit of {max} bytes (serve.max_body) once decompressed"
            ),
        ));
    }
    Ok(out)
}

/// Records a parsed batch as a job of this server's pipeline; returns the
/// job. The request's state (who, from where, when) goes with it, for the
/// stages' `ctx.meta`.
pub(super) async fn submit<T>(
    svc: &Service,
    remote: SocketAddr,
    headers: &HeaderMap,
    admitted: &Admitted<'_, T>,
    batch: Batch,
) -> Result<i64, ApiError> {
    let n = batch.events;
    if n > svc.settings.max_backlog {
        svc.metrics.batches_refused.too_large.fetch_add(1, Relaxed);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the batch has {n} events, more than the backlog limit of {} (serve.max_backlog)",
                svc.settings.max_backlog
            ),
        ));
    }
    let received_at = now_ms();
    let header_str = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = &admitted.token;
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
    let submitted = svc
        .backend
        .submit(NewJob {
            pipeline: svc.pipeline.clone(),
            kind: "ingest",
            origin: None,
            received_at,
            context,
            chunks: batch.chunks,
            pinned: None,
        })
        .await
        .map_err(|r| ApiError::refused(svc, r))?;
    svc.metrics.batches_accepted.fetch_add(1, Relaxed);
    svc.metrics.events_received.fetch_add(n, Relaxed);
    svc.metrics.ingest_latency.observe(admitted.at.elapsed());
    Ok(submitted.job)
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
    s: &'a Settings,
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
pub fn parse_batch(body: &[u8], format: Format, s: &Settings) -> Result<Batch, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> crate::manifest::Settings {
        crate::manifest::Settings {
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
            cors_origins: Vec::new(),
            indexing: Default::default(),
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
