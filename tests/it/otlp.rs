//! `POST /v1/logs` (OTLP/HTTP) from the outside: exports built with the
//! official message types, sent as protobuf and OTLP/JSON, plain and
//! gzipped, by a raw HTTP client; hostile bodies; back-pressure; CORS; and
//! the real OpenTelemetry Python SDK shipping `logging` records.

use crate::util::http::{Resp, Server, all_jobs, request, wait_job};
use crate::util::{plugin, toml_path, write};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `google.rpc.Status`, as an OTLP client reads an error.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn text(v: &str) -> AnyValue {
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

/// An export of `bodies`, one record each, from service `checkout`.
fn export(bodies: &[&str]) -> ExportLogsServiceRequest {
    let records = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| LogRecord {
            time_unix_nano: 1_796_637_600_000_000_000 + i as u64,
            severity_number: if b.contains("fail") { 17 } else { 9 },
            severity_text: if b.contains("fail") { "ERROR" } else { "INFO" }.into(),
            body: Some(text(b)),
            attributes: vec![kv(
                "n",
                AnyValue {
                    value: Some(any_value::Value::IntValue(i as i64)),
                },
            )],
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("checkout"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A server running `stamp` (each event gets the request's state) over
/// OTLP, with `serve` settings added.
fn server(dir: &Path, serve: &str) -> Server {
    let text = format!(
        "[pipeline]\nname = \"otel\"\n\n[[stage]]\nname = \"stamp\"\nkind = \"map\"\nplugin = {}\n\n[runtime]\nworkers = 2\n\n[serve]\ndatabase = \"otel.db\"\n{serve}\n",
        toml_path(&plugin("stamp"))
    );
    let m: PathBuf = write(dir, "otel.toml", &text);
    Server::start(&m, &[])
}

fn post(s: &Server, ct: &str, encoding: Option<&str>, body: &[u8]) -> Resp {
    let mut headers = vec![("content-type", ct)];
    if let Some(e) = encoding {
        headers.push(("content-encoding", e));
    }
    request("POST", &s.url("/v1/logs"), &headers, Some(body)).unwrap()
}

/// The newest job's stored events, once it is done.
fn newest_job_events(s: &Server) -> (Value, Vec<Value>) {
    let id = all_jobs(s)[0]["id"].as_i64().unwrap();
    let job = wait_job(s, id, &[]);
    let r = request(
        "GET",
        &s.url(&format!("/v1/events?job={id}&limit=1000")),
        &[],
        None,
    )
    .unwrap();
    let events = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    (job, events)
}

#[test]
fn each_log_record_is_stored_once_as_the_documented_event_in_either_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), "");

    // Protobuf, plain.
    let r = post(
        &s,
        "application/x-protobuf",
        None,
        &export(&["started", "payment failed", "done"]).encode_to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let answer = ExportLogsServiceResponse::decode(&r.bytes[..]).unwrap();
    assert_eq!(answer.partial_success, None, "nothing was rejected");
    let (job, events) = newest_job_events(&s);
    assert_eq!(job["events_in"], 3);
    assert_eq!(events.len(), 3, "{events:?}");
    let e = &events[1];
    assert_eq!(e["body"], "payment failed");
    assert_eq!(
        (&e["severity_text"], &e["severity_number"]),
        (&json!("ERROR"), &json!(17))
    );
    assert_eq!(e["time"], "2026-12-07T10:00:00.000000001Z");
    assert_eq!(e["time_unix_nano"], "1796637600000000001");
    assert_eq!(e["attributes"], json!({"n": 1}));
    assert_eq!(e["trace_id"], "ab".repeat(16));
    assert_eq!(e["span_id"], "cd".repeat(8));
    assert_eq!(e["resource"], json!({"service.name": "checkout"}));
    assert_eq!(e["request"]["pipeline"], "otel", "the stage saw ctx.meta");
    assert_eq!(e["request"]["user_agent"], "ureq/3.5.2");

    // OTLP/JSON, gzipped: the same events.
    let body = serde_json::to_vec(&export(&["started", "payment failed", "done"])).unwrap();
    let r = post(&s, "application/json", Some("gzip"), &gzip(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let (_, again) = newest_job_events(&s);
    let strip = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("request");
                e
            })
            .collect()
    };
    assert_eq!(strip(&again), strip(&events));

    // A field filter finds the error by its severity.
    let r = request(
        "GET",
        &s.url("/v1/events?field.severity_text=ERROR"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 2);

    // The batch route takes gzip too.
    let r = request(
        "POST",
        &s.url("/v1/pipelines/otel/jobs"),
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
        ],
        Some(&gzip(b"{\"a\":1}\n{\"a\":2}\n")),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["accepted"], 2);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn hostile_exports_get_their_status_and_nothing_of_them_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        dir.path(),
        "max_body = \"8MiB\"\nmax_events = 1000\nmax_event_size = \"4KiB\"",
    );
    let status_of = |r: &Resp| -> (u16, i64, String) {
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (
            r.status,
            v["code"].as_i64().unwrap_or(-1),
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    let whole = export(&["a", "b"]).encode_to_vec();
    // Garbage and truncated protobuf: 400, a google.rpc.Status in protobuf.
    for body in [&whole[..whole.len() - 2], b"\x0a\xff\xff\xff\xff\x0f"] {
        let r = post(&s, "application/x-protobuf", None, body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
    }
    // OTLP/JSON that is not an export: 400 with a JSON Status.
    let (status, code, message) = status_of(&post(&s, "application/json", None, b"[1,2]"));
    assert_eq!((status, code), (400, 3));
    assert!(message.contains("OTLP/JSON"), "{message}");
    // A content type OTLP does not have: 415.
    let (status, code, _) = status_of(&post(&s, "text/plain", None, b"hello"));
    assert_eq!((status, code), (415, 3));
    // A gzip bomb: 64 MiB of zeros in about 64 KiB: 413, not out of memory.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    // Decoded as it is, the Status is protobuf.
    let r = post(&s, "application/x-protobuf", Some("gzip"), &bomb);
    assert_eq!(r.status, 413);
    let status = Status::decode(&r.bytes[..]).unwrap();
    assert_eq!(status.code, 8);
    assert!(
        status.message.contains("serve.max_body"),
        "{}",
        status.message
    );
    let (status, code, message) = status_of(&post(&s, "application/json", Some("gzip"), &bomb));
    assert_eq!((status, code), (413, 8), "{message}");
    assert!(message.contains("once decompressed"), "{message}");
    // A gzip body whose trailer lies about its length is read by what it
    // holds; a cut one is a 400.
    let mut liar = gzip(&serde_json::to_vec(&export(&["liar"])).unwrap());
    let n = liar.len();
    liar[n - 4..].copy_from_slice(&7u32.to_le_bytes());
    let r = post(&s, "application/json", Some("gzip"), &liar);
    assert_eq!(
        r.status, 400,
        "a wrong length fails gzip's own check: {}",
        r.body
    );
    let cut = gzip(&whole);
    let r = post(
        &s,
        "application/x-protobuf",
        Some("gzip"),
        &cut[..cut.len() / 2],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // An unknown content encoding: 415.
    assert_eq!(
        post(&s, "application/x-protobuf", Some("br"), &whole).status,
        415
    );
    // A string field that is not UTF-8: protobuf forbids it; 400.
    let mut bad = export(&["\u{e9}t\u{e9}"]).encode_to_vec();
    let at = bad.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    bad[at] = 0xff;
    assert_eq!(post(&s, "application/x-protobuf", None, &bad).status, 400);
    // AnyValues nested deeper than the decoder's limit: 400.
    let mut deep = text("bottom");
    for _ in 0..200 {
        deep = AnyValue {
            value: Some(any_value::Value::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![deep] },
            )),
        };
    }
    let mut req = export(&["x"]);
    req.resource_logs[0].scope_logs[0].log_records[0].body = Some(deep);
    assert_eq!(
        post(&s, "application/x-protobuf", None, &req.encode_to_vec()).status,
        400
    );
    // More records than serve.max_events: 413, the export refused whole.
    let many: Vec<String> = (0..100_000).map(|i| format!("r{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, code, message) = status_of(&post(
        &s,
        "application/json",
        Some("gzip"),
        &gzip(&serde_json::to_vec(&export(&many)).unwrap()),
    ));
    assert_eq!((status, code), (413, 8), "{message}");
    let r = post(
        &s,
        "application/x-protobuf",
        None,
        &export(&many).encode_to_vec(),
    );
    let (status, message) = (r.status, Status::decode(&r.bytes[..]).unwrap().message);
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("serve.max_events"), "{message}");
    // Nothing of any of them was stored, and the server is up.
    assert!(all_jobs(&s).is_empty(), "{:?}", all_jobs(&s));

    // A record too large is rejected alone: partial success says so.
    let big = "x".repeat(5000);
    let r = post(
        &s,
        "application/x-protobuf",
        None,
        &export(&["small", &big, "small too"]).encode_to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let partial = ExportLogsServiceResponse::decode(&r.bytes[..])
        .unwrap()
        .partial_success
        .expect("a partial success");
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("serve.max_event_size"),
        "{}",
        partial.error_message
    );
    let (job, events) = newest_job_events(&s);
    assert_eq!((job["events_in"].as_i64(), events.len()), (Some(2), 2));
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_full_backlog_answers_503_with_retry_after_and_a_token_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    // One record keeps the backlog full: its stage loops until its time
    // limit, twice.
    let text = format!(
        "[pipeline]\nname = \"otel\"\n\n[[stage]]\nname = \"slow\"\nkind = \"map\"\nplugin = {}\n\n[runtime]\nworkers = 1\ntimeout = \"1500ms\"\nretries = 1\n\n[serve]\ndatabase = \"otel.db\"\nmax_backlog = 1\n\n[[serve.token]]\nname = \"app\"\ntoken = \"s3cret-token\"\npermissions = [\"write\"]\n",
        toml_path(&crate::util::fixture("endless.wat"))
    );
    let s = Server::start(&write(dir.path(), "otel.toml", &text), &[]);
    let auth = [
        ("content-type", "application/x-protobuf"),
        ("authorization", "Bearer s3cret-token"),
    ];
    let one = export(&["first"]).encode_to_vec();
    let r = request("POST", &s.url("/v1/logs"), &auth[..1], Some(&one)).unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = request("POST", &s.url("/v1/logs"), &auth, Some(&one)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request("POST", &s.url("/v1/logs"), &auth, Some(&one)).unwrap();
    assert_eq!(
        r.status, 503,
        "a full backlog, as every SDK retries: {}",
        r.body
    );
    let retry: u64 = r.headers["retry-after"].parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    // An ingest-only token reads nothing.
    let r = request(
        "GET",
        &s.url("/v1/events"),
        &[("authorization", "Bearer s3cret-token")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    s.kill();
}

#[test]
fn pages_of_allowed_origins_may_post_and_others_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), "cors_origins = [\"http://app.example\"]");
    let preflight = |origin: &str| {
        request(
            "OPTIONS",
            &s.url("/v1/logs"),
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,authorization",
                ),
            ],
            None,
        )
        .unwrap()
    };
    let ok = preflight("http://app.example");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "http://app.example"
    );
    assert!(
        ok.headers["access-control-allow-headers"].contains("authorization"),
        "{:?}",
        ok.headers
    );
    let other = preflight("http://evil.example");
    assert!(
        !other.headers.contains_key("access-control-allow-origin"),
        "{:?}",
        other.headers
    );
    let r = request(
        "POST",
        &s.url("/v1/logs"),
        &[
            ("content-type", "application/json"),
            ("origin", "http://app.example"),
        ],
        Some(&serde_json::to_vec(&export(&["from a page"])).unwrap()),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "http://app.example"
    );
    s.kill();

    // An origin that is not one is refused at start, saying how to write it.
    let bad = write(
        dir.path(),
        "bad.toml",
        &format!(
            "[pipeline]\nname = \"bad\"\n\n[[stage]]\nname = \"stamp\"\nkind = \"map\"\nplugin = {}\n\n[serve]\ndatabase = \"bad.db\"\ncors_origins = [\"app.example/path\"]\n",
            toml_path(&plugin("stamp"))
        ),
    );
    let out = crate::util::wasmpipe()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a web origin"), "{err}");
}

/// Where `tests/otel-clients` installed the SDKs (`var` names which).
fn otel_client(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests with `bash tests/run`, or first `eval \"$(bash tests/otel-clients install)\"`"
        )
    })
}

/// Runs the example's Python app (`examples/otel/app.py`, the real SDK),
/// logging `n` lines to `endpoint` with `env` set; fails the test if the
/// app fails. Returns what it printed.
pub(crate) fn run_python_app(
    endpoint: &str,
    n: usize,
    env: &[(&str, &str)],
) -> std::process::Output {
    let out = std::process::Command::new(otel_client("WASMPIPE_TEST_OTEL_PYTHON"))
        .arg(crate::util::repo().join("examples/otel/app.py"))
        .arg(n.to_string())
        .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", endpoint)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the app failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A server running the example's JavaScript stage (`examples/otel/redact`).
fn example_server(dir: &Path) -> Server {
    let text = format!(
        "[pipeline]\nname = \"otel\"\n\n[[stage]]\nname = \"redact\"\nkind = \"map\"\nplugin = {}\n\n[serve]\ndatabase = \"otel.db\"\n",
        toml_path(&crate::util::repo().join("examples/otel/redact"))
    );
    Server::start(&write(dir, "otel.toml", &text), &[])
}

/// Every stored row once every job is done: `{"received_at", "event", ...}`.
fn stored_rows(s: &Server) -> Vec<Value> {
    for j in &all_jobs(s) {
        wait_job(s, j["id"].as_i64().unwrap(), &[]);
    }
    let r = request("GET", &s.url("/v1/events?limit=1000"), &[], None).unwrap();
    r.json()["events"].as_array().unwrap().clone()
}

/// The bodies `examples/otel/app.py` logs for `n` lines, sorted.
fn python_app_bodies(n: usize) -> Vec<String> {
    let mut b: Vec<String> = (0..n)
        .map(|i| {
            if i % 5 == 4 {
                format!("payment failed for order {i}")
            } else {
                format!("order {i} paid")
            }
        })
        .collect();
    b.sort_unstable();
    b
}

/// The real OpenTelemetry Python SDK (`tests/otel-clients` installs it) in
/// the example app (`examples/otel/app.py`): records logged with the
/// standard `logging` module arrive through the OTLP/HTTP exporter, pass
/// the example's JavaScript stage (enrich, redact), and are stored, each
/// exactly once.
#[test]
fn the_python_sdk_ships_logging_records_through_the_example_stage() {
    let dir = tempfile::tempdir().unwrap();
    let s = example_server(dir.path());
    let n = 25;
    run_python_app(&s.url("/v1/logs"), n, &[]);
    // Every export is acknowledged before the app exits (it flushes).
    let rows = stored_rows(&s);
    // Logged to journaled (the app flushes as it exits): within a second.
    let at = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    for row in &rows {
        let lag = at(&row["received_at"])
            .duration_since(at(&row["event"]["time"]))
            .unwrap_or_default();
        assert!(lag < std::time::Duration::from_secs(1), "{lag:?}: {row}");
    }
    let events: Vec<Value> = rows.iter().map(|e| e["event"].clone()).collect();
    let mut bodies: Vec<&str> = events.iter().map(|e| e["body"].as_str().unwrap()).collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        python_app_bodies(n),
        "each record stored exactly once"
    );
    let failed = events
        .iter()
        .find(|e| e["body"] == "payment failed for order 4")
        .unwrap();
    assert_eq!(failed["level"], "error");
    assert_eq!(failed["severity_text"], "ERROR");
    assert_eq!(failed["service"], "checkout");
    assert_eq!(failed["resource"]["service.name"], "checkout");
    assert_eq!(failed["scope"]["name"], "checkout.payments");
    assert_eq!(failed["attributes"]["order_id"], 4);
    assert_eq!(failed["attributes"]["card"], "**** 1111", "redacted");
    assert!(failed["time"].as_str().unwrap().ends_with('Z'), "{failed}");
    assert_eq!(
        failed["sender"]
            .as_str()
            .map(|a| a.starts_with("127.0.0.1:")),
        Some(true)
    );
    // A field filter the stage made possible.
    let r = request("GET", &s.url("/v1/events?field.level=error"), &[], None).unwrap();
    assert_eq!(r.json()["events"].as_array().unwrap().len(), n / 5);
    assert_eq!(s.stop(), Some(0));
}

/// The real OpenTelemetry Node SDK (`tests/otel-clients` installs it) in
/// the example's Node app (`examples/otel/app.mjs`), exporting protobuf,
/// then OTLP/JSON: each record stored exactly once, redacted by the stage.
#[test]
fn the_node_sdk_ships_records_as_protobuf_and_as_json() {
    let modules = otel_client("WASMPIPE_TEST_OTEL_NODE_MODULES");
    let dir = tempfile::tempdir().unwrap();
    let example = crate::util::repo().join("examples/otel");
    let s = example_server(dir.path());
    // The app beside the SDK's packages, as `npm install` leaves it.
    let home = Path::new(&modules).parent().unwrap();
    let app = home.join("app.mjs");
    std::fs::copy(example.join("app.mjs"), &app).unwrap();
    let n = 10;
    for protocol in ["http/protobuf", "http/json"] {
        let out = std::process::Command::new("node")
            .arg(&app)
            .arg(n.to_string())
            .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", s.url("/v1/logs"))
            .env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", protocol)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the app failed ({protocol}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let events: Vec<Value> = stored_rows(&s).iter().map(|e| e["event"].clone()).collect();
    let mut bodies: Vec<&str> = events.iter().map(|e| e["body"].as_str().unwrap()).collect();
    bodies.sort_unstable();
    let mut expected: Vec<String> = (0..n)
        .flat_map(|i| {
            let b = if i % 5 == 4 {
                format!("checkout refused for cart {i}")
            } else {
                format!("cart {i} updated")
            };
            [b.clone(), b]
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(bodies, expected, "each record once per export");
    for e in events.iter().filter(|e| e["severity_text"] == "ERROR") {
        assert_eq!(e["attributes"]["card"], "**** 0004", "{e}");
        assert_eq!(
            e["scope"],
            json!({"name": "cart.api", "version": "2.0.0", "attributes": {}})
        );
        assert_eq!(e["service"], "cart");
        assert_eq!(e["level"], "error");
    }
    assert_eq!(s.stop(), Some(0));
}

/// Serves `html` to every request on a free loopback port (a web app on
/// an origin of its own); returns that origin.
fn page_server(html: &'static str) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    origin
}

/// A web page in headless Chromium posts its logs with `fetch` (a token in
/// `Authorization`, so the browser sends a preflight first): from an
/// allowed origin they are stored; from another the browser blocks the
/// request and nothing is stored.
#[test]
fn a_page_of_an_allowed_origin_ships_logs_from_headless_chromium() {
    let allowed = page_server("<!doctype html><title>app</title><p>app</p>");
    let other = page_server("<!doctype html><title>other</title><p>other</p>");
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        dir.path(),
        &format!(
            "cors_origins = [\"{allowed}\"]\n\n[[serve.token]]\nname = \"web\"\ntoken = \"page-token-1234\"\npermissions = [\"write\"]\n\n[[serve.token]]\nname = \"ops\"\ntoken = \"ops-token-1234\"\npermissions = [\"read\"]"
        ),
    );
    let b = crate::browser::Browser::start();
    let send = r#"
        const [url, body] = arguments;
        window.result = null;
        fetch(url, {
            method: 'POST',
            headers: {'content-type': 'application/json', 'authorization': 'Bearer page-token-1234'},
            body,
        }).then(r => r.text().then(t => { window.result = r.status + ' ' + t; }),
                e => { window.result = 'blocked: ' + e; });
    "#;
    let body = serde_json::to_string(&export(&["clicked buy", "page loaded"])).unwrap();
    let outcome = |origin: &str| -> String {
        b.goto(origin);
        b.exec(send, json!([s.url("/v1/logs"), body]));
        b.wait("the fetch to end", |b| {
            b.exec("return window.result;", json!([]))
                .as_str()
                .map(str::to_string)
        })
    };
    let ok = outcome(&allowed);
    assert!(ok.starts_with("200 "), "{ok}");
    let blocked = outcome(&other);
    assert!(blocked.starts_with("blocked: "), "{blocked}");
    let read = [("authorization", "Bearer ops-token-1234")];
    let jobs = request("GET", &s.url("/v1/jobs"), &read, None)
        .unwrap()
        .json()["jobs"]
        .clone();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "only the allowed page's export: {jobs:?}");
    let job = wait_job(&s, jobs[0]["id"].as_i64().unwrap(), &read);
    assert_eq!(job["events_in"], 2);
    assert!(
        job["context"]["user_agent"]
            .as_str()
            .unwrap_or("")
            .contains("Chrome"),
        "{job}"
    );
    s.kill();
}

/// Back-pressure with a real client: the Python SDK exporting 5 records at
/// a time to a server whose backlog holds 5 and whose stage is slow gets
/// `503` with `Retry-After`, retries, and every record arrives exactly once
/// as the backlog drains.
#[test]
fn the_python_sdk_retries_a_full_backlog_and_every_record_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[pipeline]\nname = \"otel\"\n\n[[stage]]\nname = \"slow\"\nkind = \"map\"\nplugin = {}\n\n[runtime]\nworkers = 1\n\n[serve]\ndatabase = \"otel.db\"\nmax_backlog = 5\n",
        toml_path(&crate::util::fixture("slow.wat"))
    );
    let s = Server::start(&write(dir.path(), "otel.toml", &text), &[]);
    let n = 20;
    let out = run_python_app(
        &s.url("/v1/logs"),
        n,
        &[
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "5"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "60"),
        ],
    );
    let rows = stored_rows(&s);
    let metrics = request("GET", &s.url("/metrics"), &[], None).unwrap().body;
    let refused: u64 = metrics
        .lines()
        .find(|l| l.starts_with("wasmpipe_batches_refused_total") && l.contains("status=\"503\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "the backlog was never full:\n{metrics}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Failed to export"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = rows.iter().map(|e| e["event"].clone()).collect();
    // The SDK logs its own retries through the same handler: they arrive
    // too, from its own logger.
    assert!(
        events.iter().any(|e| e["body"]
            .as_str()
            .unwrap_or("")
            .starts_with("Transient error")),
        "{events:?}"
    );
    let mut bodies: Vec<String> = events
        .iter()
        .filter(|e| e["scope"]["name"] == "checkout.payments")
        .map(|e| e["body"].as_str().unwrap().to_string())
        .collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        python_app_bodies(n),
        "every record, once, after the refusals"
    );
    assert_eq!(s.stop(), Some(0));
}
