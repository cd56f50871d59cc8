//! `POST /v1/logs`: OpenTelemetry logs over HTTP (OTLP/HTTP), so that any
//! OpenTelemetry SDK, the Collector, Fluent Bit or Vector can ship logs
//! with no client of wasmpipe's own: point the exporter at
//! `http://HOST:PORT/v1/logs`.
//!
//! As the OTLP specification says: an `ExportLogsServiceRequest` as
//! protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`),
//! gzipped or not; answered in the same encoding, `200` with an
//! `ExportLogsServiceResponse` (`partial_success` only when records were
//! rejected), or an error status with a `google.rpc.Status` body. A full
//! backlog is a `503` with `Retry-After`, which every OpenTelemetry SDK
//! retries (the specification allows `429` too, but Python's exporter
//! drops a batch refused with it).
//!
//! Each log record becomes one event of this server's pipeline, in the
//! shape [`record_json`] documents (and `docs/api.md`), and the export is
//! one job, journaled before the `200` like any batch. An exporter that
//! retries an export (after a timeout, say) makes a new job of it.

use super::Service;
use super::ingest::{admit, media_type, read_and_parse, submit};
use super::toolkit::{ApiError, Svc, drain};
use crate::exec::chunk::Batcher;
use crate::exec::framing;
use crate::exec::window::field::format_rfc3339;
use crate::manifest::Settings;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::json;
use std::net::SocketAddr;

/// How an export is encoded (and its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON).
    Json,
}

impl Wire {
    fn content_type(self) -> &'static str {
        match self {
            Wire::Protobuf => "application/x-protobuf",
            Wire::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `POST /v1/logs`.
pub(super) async fn logs(
    State(svc): Svc,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = body;
    let wire = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| match media_type(ct).as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Wire::Protobuf),
            "application/json" => Some(Wire::Json),
            _ => None,
        });
    match export(&svc, wire, remote, &headers, &mut body).await {
        Ok(r) => r,
        Err(mut e) => {
            drain(&mut body, svc.settings.max_body).await;
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                // A full backlog is a `503` here: the OpenTelemetry SDKs
                // all retry a `503` after `Retry-After`, and some (Python's
                // OTLP/HTTP exporter) drop a batch refused with `429`.
                e.status = StatusCode::SERVICE_UNAVAILABLE;
                let refused = &svc.metrics.batches_refused;
                refused
                    .backlog
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                refused
                    .unavailable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            refusal(wire.unwrap_or(Wire::Json), e)
        }
    }
}

async fn export(
    svc: &Service,
    wire: Option<Wire>,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: &mut Body,
) -> Result<Response, ApiError> {
    let admitted = admit(svc, headers, || {
        wire.ok_or_else(|| {
            svc.metrics
                .batches_refused
                .media_type
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "an OTLP export is `application/x-protobuf` or `application/json` (OTLP/JSON)",
            )
        })
    })
    .await?;
    let wire = admitted.what;
    let decoded = read_and_parse(svc, headers, body, move |buf, settings| {
        decode(&buf, wire, settings)
    })
    .await?;
    if decoded.batch.events > 0 {
        submit(svc, remote, headers, &admitted, decoded.batch).await?;
    }
    let response = ExportLogsServiceResponse {
        partial_success: (decoded.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: decoded.rejected as i64,
            error_message: decoded.why,
        }),
    };
    let body = match wire {
        Wire::Protobuf => response.encode_to_vec(),
        Wire::Json => serde_json::to_vec(&response).map_err(|e| ApiError::internal(e.into()))?,
    };
    Ok(answer(StatusCode::OK, wire, body))
}

/// An export's records as events, cut into chunks, and those rejected.
pub struct Decoded {
    /// The events.
    pub batch: super::ingest::Batch,
    /// Records rejected (each too large, or not storable as JSON).
    pub rejected: u64,
    /// Why, for the first of them.
    pub why: String,
}

/// Decodes an export (already gunzipped) into events. A body that does not
/// decode is refused whole (`400`); more records than `serve.max_events`
/// is a `413`; a record larger than `serve.max_event_size` is rejected
/// alone, and counted in the answer's `partial_success`.
pub fn decode(body: &[u8], wire: Wire, s: &Settings) -> Result<Decoded, ApiError> {
    let request = match wire {
        Wire::Protobuf => ExportLogsServiceRequest::decode(body).map_err(|e| {
            ApiError::bad(format!(
                "the body is not an OTLP ExportLogsServiceRequest in protobuf: {e}"
            ))
        })?,
        Wire::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad(format!(
                "the body is not an OTLP ExportLogsServiceRequest in OTLP/JSON: {e}"
            ))
        })?,
    };
    let records: usize = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    if records > s.max_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the export has {records} log records, more than the limit of {} (serve.max_events); export smaller batches (the SDK's `max_export_batch_size`)",
                s.max_events
            ),
        ));
    }
    let mut batch = Batcher::new(s.chunk_size);
    let (mut events, mut rejected, mut why) = (0u64, 0u64, String::new());
    let mut line = Vec::new();
    for rl in &request.resource_logs {
        // A resource's and a scope's JSON is written once for all their
        // records.
        let mut resource = Vec::new();
        write_attributes(
            &mut resource,
            rl.resource.as_ref().map_or(&[][..], |r| &r.attributes),
        );
        for sl in &rl.scope_logs {
            let mut scope = Vec::new();
            let empty = Default::default();
            let sc = sl.scope.as_ref().unwrap_or(&empty);
            scope.extend_from_slice(b"{\"name\":");
            write_str_or_null(&mut scope, &sc.name);
            scope.extend_from_slice(b",\"version\":");
            write_str_or_null(&mut scope, &sc.version);
            scope.extend_from_slice(b",\"attributes\":");
            write_attributes(&mut scope, &sc.attributes);
            scope.push(b'}');
            for r in &sl.log_records {
                line.clear();
                write_record(&mut line, &resource, &scope, r);
                let refusal = if line.len() > s.max_event_size {
                    Some(format!(
                        "a log record is {} bytes as an event, larger than the limit of {} bytes (serve.max_event_size)",
                        line.len(),
                        s.max_event_size
                    ))
                } else {
                    framing::check(&line)
                        .err()
                        .map(|e| format!("a log record cannot be stored: {e}"))
                };
                match refusal {
                    Some(e) => {
                        rejected += 1;
                        if why.is_empty() {
                            why = e;
                        }
                    }
                    None => {
                        batch.push(&line);
                        events += 1;
                    }
                }
            }
        }
    }
    if rejected > 1 {
        why = format!("{rejected} log records were rejected; the first: {why}");
    }
    Ok(Decoded {
        batch: super::ingest::Batch {
            events,
            chunks: batch.finish(),
        },
        rejected,
        why,
    })
}

/// Writes one log record as the event a stage receives (`resource` and
/// `scope`: their JSON, written once per resource and scope), directly,
/// with no JSON tree per record:
///
/// ```json
/// {"time": "2026-12-07T10:00:00.123456789Z", "time_unix_nano": "1796637600123456789",
///  "observed_time": "...", "observed_time_unix_nano": "...",
///  "severity_text": "ERROR", "severity_number": 17,
///  "body": "payment failed", "attributes": {"order.id": 42},
///  "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174", "flags": 1,
///  "event_name": null, "dropped_attributes_count": 0,
///  "resource": {"service.name": "checkout"}, "scope": {"name": "app", "version": "1.0", "attributes": {}}}
/// ```
///
/// Times of 0 (unset) are `null`; nanoseconds are strings, as OTLP/JSON
/// writes 64-bit integers; empty strings and all-zero ids are `null`.
/// Values: see [`write_value`].
pub fn write_record(out: &mut Vec<u8>, resource: &[u8], scope: &[u8], r: &LogRecord) {
    out.extend_from_slice(b"{\"time\":");
    write_time(out, r.time_unix_nano);
    out.extend_from_slice(b",\"time_unix_nano\":");
    write_nanos(out, r.time_unix_nano);
    out.extend_from_slice(b",\"observed_time\":");
    write_time(out, r.observed_time_unix_nano);
    out.extend_from_slice(b",\"observed_time_unix_nano\":");
    write_nanos(out, r.observed_time_unix_nano);
    out.extend_from_slice(b",\"severity_text\":");
    write_str_or_null(out, &r.severity_text);
    out.extend_from_slice(b",\"severity_number\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.severity_number).as_bytes());
    out.extend_from_slice(b",\"body\":");
    match &r.body {
        Some(v) => write_value(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attributes\":");
    write_attributes(out, &r.attributes);
    out.extend_from_slice(b",\"trace_id\":");
    write_id(out, &r.trace_id);
    out.extend_from_slice(b",\"span_id\":");
    write_id(out, &r.span_id);
    out.extend_from_slice(b",\"flags\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.flags).as_bytes());
    out.extend_from_slice(b",\"event_name\":");
    write_str_or_null(out, &r.event_name);
    out.extend_from_slice(b",\"dropped_attributes_count\":");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(r.dropped_attributes_count)
            .as_bytes(),
    );
    out.extend_from_slice(b",\"resource\":");
    out.extend_from_slice(resource);
    out.extend_from_slice(b",\"scope\":");
    out.extend_from_slice(scope);
    out.push(b'}');
}

/// An OTLP value as JSON: strings, booleans and arrays as they are; key
/// lists as objects (a repeated key: the last wins); integers as numbers
/// when JSON holds them exactly (within ±2^53), else as strings; doubles
/// as numbers, and NaN and the infinities as the strings `"NaN"`,
/// `"Infinity"`, `"-Infinity"`; bytes as base64; an empty value as `null`.
fn write_value(out: &mut Vec<u8>, v: &AnyValue) {
    const EXACT: i64 = 1 << 53;
    match &v.value {
        None => out.extend_from_slice(b"null"),
        Some(any_value::Value::StringValue(s)) => write_str(out, s),
        Some(any_value::Value::BoolValue(b)) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" })
        }
        Some(any_value::Value::IntValue(i)) if (-EXACT..=EXACT).contains(i) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes())
        }
        Some(any_value::Value::IntValue(i)) => {
            out.push(b'"');
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.push(b'"');
        }
        Some(any_value::Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
            None if d.is_nan() => out.extend_from_slice(b"\"NaN\""),
            None if *d > 0.0 => out.extend_from_slice(b"\"Infinity\""),
            None => out.extend_from_slice(b"\"-Infinity\""),
        },
        Some(any_value::Value::BytesValue(b)) => {
            write_str(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push(b'[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v);
            }
            out.push(b']');
        }
        Some(any_value::Value::KvlistValue(kv)) => write_attributes(out, &kv.values),
    }
}

/// Key-value pairs as a JSON object; a repeated key: the last wins (found
/// through a map beyond a few pairs, so that a hostile record of a million
/// attributes costs linear time).
fn write_attributes(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    let last: Option<std::collections::HashMap<&str, usize>> = (kvs.len() > 8).then(|| {
        kvs.iter()
            .enumerate()
            .map(|(i, kv)| (kv.key.as_str(), i))
            .collect()
    });
    out.push(b'{');
    let mut first = true;
    for (i, kv) in kvs.iter().enumerate() {
        let repeated = match &last {
            Some(m) => m.get(kv.key.as_str()) != Some(&i),
            None => kvs[i + 1..].iter().any(|later| later.key == kv.key),
        };
        if repeated {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, &kv.key);
        out.push(b':');
        match &kv.value {
            Some(v) => write_value(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("a string prints");
}

fn write_str_or_null(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        write_str(out, s);
    }
}

fn write_time(out: &mut Vec<u8>, ns: u64) {
    match time(ns) {
        Some(t) => {
            out.push(b'"');
            out.extend_from_slice(t.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn write_nanos(out: &mut Vec<u8>, ns: u64) {
    if ns == 0 {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        out.extend_from_slice(itoa::Buffer::new().format(ns).as_bytes());
        out.push(b'"');
    }
}

fn write_id(out: &mut Vec<u8>, id: &[u8]) {
    if id.iter().all(|&b| b == 0) {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        out.extend_from_slice(hex::encode(id).as_bytes());
        out.push(b'"');
    }
}

/// Nanoseconds since the epoch as RFC 3339 (UTC, to the nanosecond); 0 is
/// unset.
fn time(ns: u64) -> Option<String> {
    if ns == 0 {
        return None;
    }
    let ms = format_rfc3339((ns / 1_000_000) as i64);
    // `...:SS.mmmZ` -> `...:SS.nnnnnnnnnZ`
    let secs = &ms[..ms.len() - 5];
    Some(format!("{secs}.{:09}Z", ns % 1_000_000_000))
}

/// An OTLP answer: `body` in `wire`'s encoding.
fn answer(status: StatusCode, wire: Wire, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire.content_type()),
    );
    r
}

/// A refusal as OTLP answers one: the status, a `google.rpc.Status` with
/// the message, `Retry-After` when there is one.
fn refusal(wire: Wire, e: ApiError) -> Response {
    // The gRPC code that goes with each HTTP status (google.rpc.Code).
    let code = match e.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::REQUEST_TIMEOUT => 4,
        StatusCode::NOT_FOUND => 5,
        StatusCode::FORBIDDEN => 7,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        StatusCode::UNAUTHORIZED => 16,
        _ => 13,
    };
    let message = match &e.id {
        Some(id) => format!("{} ({id})", e.message),
        None => e.message.clone(),
    };
    let body = match wire {
        Wire::Protobuf => Status { code, message }.encode_to_vec(),
        Wire::Json => json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    let mut r = answer(e.status, wire, body);
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use serde_json::{Map, Value};

    /// The record as a tree, written from the documented shape on its own:
    /// the oracle [`write_record`] is held against.
    ///
    /// ```json
    /// {"time": "2026-12-07T10:00:00.123456789Z", "time_unix_nano": "1796637600123456789",
    ///  "observed_time": "...", "observed_time_unix_nano": "...",
    ///  "severity_text": "ERROR", "severity_number": 17,
    ///  "body": "payment failed", "attributes": {"order.id": 42},
    ///  "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174", "flags": 1,
    ///  "event_name": null, "dropped_attributes_count": 0,
    ///  "resource": {"service.name": "checkout"}, "scope": {"name": "app", "version": "1.0", "attributes": {}}}
    /// ```
    ///
    /// Times of 0 (unset) are `null`; nanoseconds are strings, as OTLP/JSON
    /// writes 64-bit integers. Values: see [`value_json`].
    fn record_json(resource: &Value, scope: &Value, r: &LogRecord) -> Value {
        json!({
            "time": time(r.time_unix_nano),
            "time_unix_nano": nanos(r.time_unix_nano),
            "observed_time": time(r.observed_time_unix_nano),
            "observed_time_unix_nano": nanos(r.observed_time_unix_nano),
            "severity_text": non_empty(&r.severity_text),
            "severity_number": r.severity_number,
            "body": r.body.as_ref().map_or(Value::Null, value_json),
            "attributes": Value::Object(attributes(&r.attributes)),
            "trace_id": hex_id(&r.trace_id),
            "span_id": hex_id(&r.span_id),
            "flags": r.flags,
            "event_name": non_empty(&r.event_name),
            "dropped_attributes_count": r.dropped_attributes_count,
            "resource": resource,
            "scope": scope,
        })
    }

    /// An OTLP value as JSON: strings, booleans and arrays as they are; key
    /// lists as objects (a repeated key: the last wins); integers as numbers
    /// when JSON holds them exactly (within ±2^53), else as strings; doubles
    /// as numbers, and NaN and the infinities as the strings `"NaN"`,
    /// `"Infinity"`, `"-Infinity"`; bytes as base64; an empty value as `null`.
    fn value_json(v: &AnyValue) -> Value {
        const EXACT: i64 = 1 << 53;
        match &v.value {
            None => Value::Null,
            Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
            Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
            Some(any_value::Value::IntValue(i)) if (-EXACT..=EXACT).contains(i) => json!(i),
            Some(any_value::Value::IntValue(i)) => Value::String(i.to_string()),
            Some(any_value::Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
                Some(n) => Value::Number(n),
                None if d.is_nan() => "NaN".into(),
                None if *d > 0.0 => "Infinity".into(),
                None => "-Infinity".into(),
            },
            Some(any_value::Value::ArrayValue(a)) => a.values.iter().map(value_json).collect(),
            Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
            Some(any_value::Value::BytesValue(b)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }

    /// Key-value pairs as a JSON object.
    fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
        kvs.iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map_or(Value::Null, value_json),
                )
            })
            .collect()
    }

    fn non_empty(s: &str) -> Value {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s.to_string())
        }
    }

    fn nanos(ns: u64) -> Value {
        if ns == 0 {
            Value::Null
        } else {
            Value::String(ns.to_string())
        }
    }

    /// A trace or span id as lower-case hex; empty or all zero is unset.
    fn hex_id(id: &[u8]) -> Value {
        if id.iter().all(|&b| b == 0) {
            Value::Null
        } else {
            Value::String(hex::encode(id))
        }
    }

    fn settings() -> Settings {
        Settings {
            max_body: 1 << 20,
            max_events: 4,
            max_event_size: 1000,
            max_backlog: 100,
            chunk_size: 2,
            body_timeout: std::time::Duration::from_secs(30),
            retries: crate::manifest::Retries::DEFAULT,
            retention: None,
            identity_header: None,
            store_reduce_input: true,
            cors_origins: Vec::new(),
            indexing: Default::default(),
        }
    }

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }
    }

    fn kv(k: &str, v: AnyValue) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(v),
        }
    }

    fn export(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout"))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn events(d: &Decoded) -> Vec<Value> {
        d.batch
            .chunks
            .iter()
            .flat_map(|(data, _)| data.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_record_becomes_the_documented_event() {
        let r = LogRecord {
            time_unix_nano: 1_796_637_600_123_456_789,
            observed_time_unix_nano: 0,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(s("payment failed")),
            attributes: vec![
                kv(
                    "order.id",
                    AnyValue {
                        value: Some(any_value::Value::IntValue(42)),
                    },
                ),
                kv(
                    "big",
                    AnyValue {
                        value: Some(any_value::Value::IntValue(i64::MAX)),
                    },
                ),
                kv(
                    "nan",
                    AnyValue {
                        value: Some(any_value::Value::DoubleValue(f64::NAN)),
                    },
                ),
                kv(
                    "raw",
                    AnyValue {
                        value: Some(any_value::Value::BytesValue(vec![1, 2, 255])),
                    },
                ),
                kv(
                    "list",
                    AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![s("a"), AnyValue::default()],
                        })),
                    },
                ),
                kv(
                    "map",
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList {
                            values: vec![kv("k", s("v"))],
                        })),
                    },
                ),
            ],
            trace_id: hex::decode("5b8efff798038103d269b633813fc60c").unwrap(),
            span_id: vec![0; 8],
            flags: 1,
            ..Default::default()
        };
        let req = export(vec![r.clone()]);
        let d = decode(&req.encode_to_vec(), Wire::Protobuf, &settings()).unwrap();
        // The writer and the tree agree, repeated keys included (the last
        // wins), below and above the size where the writer uses a map.
        for extra in [1, 20] {
            let mut r = r.clone();
            for i in 0..extra {
                r.attributes.push(kv(&format!("k{i}"), s("first")));
                r.attributes.push(kv(&format!("k{i}"), s("last")));
            }
            let mut line = Vec::new();
            write_record(&mut line, b"{}", b"{}", &r);
            let written: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(written, record_json(&json!({}), &json!({}), &r));
            assert_eq!(written["attributes"]["k0"], "last");
        }
        assert_eq!((d.batch.events, d.rejected), (1, 0));
        assert_eq!(
            events(&d)[0],
            json!({
                "time": "2026-12-07T10:00:00.123456789Z",
                "time_unix_nano": "1796637600123456789",
                "observed_time": null, "observed_time_unix_nano": null,
                "severity_text": "ERROR", "severity_number": 17,
                "body": "payment failed",
                "attributes": {"order.id": 42, "big": "9223372036854775807", "nan": "NaN",
                               "raw": "AQL/", "list": ["a", null], "map": {"k": "v"}},
                "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": null, "flags": 1,
                "event_name": null, "dropped_attributes_count": 0,
                "resource": {"service.name": "checkout"},
                "scope": {"name": "app", "version": "1.0", "attributes": {}},
            })
        );
        // The same export in OTLP/JSON decodes to the same event. Left out
        // of both: NaN (JSON has none) and an empty value inside an array,
        // which the OTLP/JSON decoder of opentelemetry-proto refuses.
        let mut req = req;
        req.resource_logs[0].scope_logs[0].log_records[0]
            .attributes
            .retain(|a| a.key != "nan" && a.key != "list");
        let text = serde_json::to_vec(&req).unwrap();
        let j = decode(&text, Wire::Json, &settings()).unwrap();
        let p = decode(&req.encode_to_vec(), Wire::Protobuf, &settings()).unwrap();
        assert_eq!(events(&j), events(&p));
    }

    #[test]
    fn too_large_records_are_rejected_alone_and_too_many_refuse_the_export() {
        let big = LogRecord {
            body: Some(s(&"x".repeat(2000))),
            ..Default::default()
        };
        let small = LogRecord {
            body: Some(s("ok")),
            ..Default::default()
        };
        let req = export(vec![small.clone(), big.clone(), big, small]);
        let d = decode(&req.encode_to_vec(), Wire::Protobuf, &settings()).unwrap();
        assert_eq!((d.batch.events, d.rejected), (2, 2));
        assert!(
            d.why
                .starts_with("2 log records were rejected; the first: a log record is"),
            "{}",
            d.why
        );
        let many = export(vec![LogRecord::default(); 5]);
        let e = decode(&many.encode_to_vec(), Wire::Protobuf, &settings())
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn garbage_and_truncated_bodies_are_bad_requests() {
        let whole = export(vec![LogRecord {
            body: Some(s("hello")),
            ..Default::default()
        }])
        .encode_to_vec();
        for body in [&whole[..whole.len() - 3], b"\xff\xff\xff\xff", b"{not json"] {
            let e = decode(body, Wire::Protobuf, &settings()).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
        }
        let e = decode(b"[1,2]", Wire::Json, &settings()).err().unwrap();
        assert!(e.message.contains("OTLP/JSON"), "{}", e.message);
    }
}
