//! `wasmpipe tail` and `GET /v1/stream`: the live stream of a running
//! `serve`, seen from a terminal: an event and a dead letter posted after
//! the tail started arrive, filters and kinds hold, and the stream asks
//! for a token when tokens are configured.

use crate::util::http::{Server, post, request};
use crate::util::{plugin, toml_path, wasmpipe, write};
use serde_json::Value;
use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

fn manifest(dir: &std::path::Path, serve: &str) -> std::path::PathBuf {
    write(
        dir,
        "tailed.toml",
        &format!(
            "[pipeline]\nname = \"tailed\"\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\n\n[serve]\ndatabase = \"tailed.db\"\n{serve}\n",
            toml_path(&plugin("double"))
        ),
    )
}

/// Starts `wasmpipe tail` with `args`; returns it, its stdout lines, and
/// once it has said it is tailing.
fn tail(server: &Server, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = wasmpipe()
        .args(["tail", "--server", &server.url("")])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let first = err.lines().next().unwrap().unwrap();
    assert!(first.starts_with("tailing "), "{first}");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn next(rx: &Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a line from the tail")
}

#[test]
fn tail_shows_events_and_dead_letters_posted_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), ""), &[]);
    // Stored before the tail starts: not shown.
    assert_eq!(
        post(
            &s,
            "/v1/pipelines/tailed/jobs",
            "application/json",
            r#"[{"n":100}]"#
        )
        .status,
        202
    );
    std::thread::sleep(Duration::from_millis(300));
    let (mut all, lines) = tail(&s, &["--json"]);
    let (mut dead_only, dead_lines) = tail(&s, &["--dead-letters"]);
    let (mut filtered, filtered_lines) = tail(&s, &["--field", "n=14"]);
    let r = post(
        &s,
        "/v1/pipelines/tailed/jobs",
        "application/json",
        r#"[{"n":7},{"n":"x"}]"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job"].as_i64().unwrap();
    let a: Value = serde_json::from_str(&next(&lines)).unwrap();
    let b: Value = serde_json::from_str(&next(&lines)).unwrap();
    assert_eq!(
        (a["type"].as_str(), a["job"].as_i64(), &a["event"]),
        (Some("event"), Some(job), &serde_json::json!({"n": 14}))
    );
    assert_eq!(
        (b["type"].as_str(), b["index"].as_u64(), b["stage"].as_str()),
        (Some("dead_letter"), Some(1), Some("double"))
    );
    let d = next(&dead_lines);
    assert!(
        d.contains(&format!("job {job} #1 DEAD at double: ")) && d.ends_with(r#"{"n":"x"}"#),
        "{d}"
    );
    let f = next(&filtered_lines);
    assert!(f.ends_with(r#"{"n":14}"#), "{f}");
    // Nothing else arrives on either: the old event, the other kind.
    assert!(lines.recv_timeout(Duration::from_millis(700)).is_err());
    assert!(dead_lines.recv_timeout(Duration::from_millis(100)).is_err());
    for c in [&mut all, &mut dead_only, &mut filtered] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    assert_eq!(
        s.stop(),
        Some(0),
        "a server with live tails open still stops"
    );
}

#[test]
fn the_stream_needs_a_read_token_when_tokens_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let serve = "[[serve.token]]\nname = \"ops\"\ntoken = \"ops-secret-1\"\npermissions = [\"read\", \"write\"]\n";
    let s = Server::start(&manifest(dir.path(), serve), &[]);
    let out = wasmpipe()
        .args(["tail", "--server", &s.url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    let r = request(
        "GET",
        &s.url("/v1/stream?kinds=some"),
        &[("authorization", "Bearer ops-secret-1")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.error()
            .contains("`kinds` is `all`, `events` or `dead_letters`"),
        "{}",
        r.body
    );
    let (mut t, lines) = tail(&s, &["--token", "ops-secret-1"]);
    let r = request(
        "POST",
        &s.url("/v1/pipelines/tailed/jobs"),
        &[
            ("authorization", "Bearer ops-secret-1"),
            ("content-type", "application/json"),
        ],
        Some(br#"[{"n":1}]"#),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(next(&lines).ends_with(r#"{"n":2}"#));
    t.kill().unwrap();
    t.wait().unwrap();
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_client_that_stops_reading_the_stream_does_not_hold_shutdown() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), ""), &[]);
    // A raw client asks for the stream and then never reads a byte.
    let addr = s.url("").trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET /v1/stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Far more stream than the socket buffers hold.
    let batch: String = (0..20_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let mut last = 0;
    for _ in 0..10 {
        let r = post(
            &s,
            "/v1/pipelines/tailed/jobs",
            "application/x-ndjson",
            &batch,
        );
        assert_eq!(r.status, 202, "{}", r.body);
        last = r.json()["job"].as_i64().unwrap();
    }
    crate::util::http::wait_job(&s, last, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let log = s.proc_log_path();
    let started = std::time::Instant::now();
    assert_eq!(s.stop(), Some(0), "SIGTERM stops the server");
    assert!(started.elapsed() < Duration::from_secs(25));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("requests still open"),
        "the stalled stream was dropped, not waited for:\n{log}"
    );
    drop(stalled);
}
