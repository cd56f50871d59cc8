//! The web console in a real headless Chromium (driven through chromedriver,
//! see `browser.rs`) against a real `wasmpipe serve` with read and write
//! tokens: signing in, a job's dead letters, retry with a token that cannot
//! write and with one that can, and the live tail with pause and resume.
//!
//! `WASMPIPE_SCREENSHOT=1` also saves the job page as `docs/console-job.png`
//! (the README's picture); normal runs leave the file alone.

use crate::browser::Browser;
use crate::util::http::{Resp, Server, request, wait_job};
use crate::util::{plugin, repo, toml_path, write};
use serde_json::{Value, json};

const READ: &str = "viewer-secret-1";
const WRITE: &str = "operator-secret-1";

fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "console.toml",
        &format!(
            r#"[pipeline]
name = "logs"

[[stage]]
name = "enrich"
kind = "map"
plugin = {}
params = {{ region = "eu-west-1" }}

[runtime]
lineage = true

[serve]
database = "console.db"

[[serve.token]]
name = "viewer"
token = "{READ}"
permissions = ["read"]

[[serve.token]]
name = "operator"
token = "{WRITE}"
permissions = ["read", "write"]
"#,
            toml_path(&plugin("enrich"))
        ),
    )
}

/// A call to the API with the write token (which also reads).
fn api(s: &Server, method: &str, path: &str, body: Option<&str>) -> Resp {
    let token = format!("Bearer {WRITE}");
    request(
        method,
        &s.url(path),
        &[
            ("authorization", &token),
            ("content-type", "application/x-ndjson"),
        ],
        body.map(str::as_bytes),
    )
    .unwrap()
}

/// Posts events (one JSON value each) as a job; returns its id.
fn post_job(s: &Server, events: &[Value]) -> i64 {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = api(s, "POST", "/v1/pipelines/logs/jobs", Some(&body));
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()["job"].as_i64().unwrap()
}

/// A morning's log lines, three of which the `enrich` stage refuses.
fn log_lines() -> Vec<Value> {
    let services = ["api", "auth", "billing", "search"];
    let levels = ["info", "info", "warn", "debug", "error", "info"];
    (0..40)
        .map(|i| {
            let mut e = json!({
                "ts": format!("2026-11-27T10:{:02}:00Z", i),
                "level": levels[i % levels.len()],
                "service": services[i % services.len()],
                "msg": "request served",
                "duration_ms": 40 + (i * 37) % 400,
            });
            match i {
                7 => e["level"] = "fatal".into(),
                19 => e["level"] = "critical".into(),
                31 => {
                    e.as_object_mut().unwrap().remove("level");
                }
                _ => {}
            }
            e
        })
        .collect()
}

#[test]
fn console_signs_in_shows_dead_letters_retries_and_tails() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path()), &[]);

    // The page and its assets need no token, and say what they are.
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let r = crate::util::agent().get(s.url(path)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |h: &str| {
            r.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{path}: {csp}"
        );
    }

    let job = post_job(&s, &log_lines());
    let read = format!("Bearer {READ}");
    wait_job(&s, job, &[("authorization", &read)]);
    let dead = api(&s, "GET", &format!("/v1/dead-letters?job={job}"), None).json();
    let reasons: Vec<String> = dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["error"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{dead}");

    let b = Browser::start();

    // No token: the login form, with the server's own reason.
    b.goto(&s.url("/"));
    b.wait_visible("#login-form");
    b.wait_text(
        "#login-error",
        "missing `Authorization: Bearer <token>` header",
    );
    b.type_into("#login-token", "not-a-token");
    b.click("#login-submit");
    b.wait_text("#login-error", "unknown token");
    // The read token: in, and the overview lists the job.
    b.type_into("#login-token", READ);
    b.click("#login-submit");
    let row = format!("#recent-jobs [data-test=job-row][data-job='{job}']");
    b.wait_visible(&row);
    assert!(!b.visible("#login-form"));
    b.wait_text("#pipeline-name", "logs");
    assert!(
        !b.visible("#nav-windows"),
        "a pipeline without windows has no Windows view"
    );

    // The job page lists the job's dead letters as the API does.
    b.click(&format!("{row} a[href='#/jobs/{job}']"));
    b.wait_text("#job-id", &job.to_string());
    b.wait(&format!("{} dead letter rows", reasons.len()), |b| {
        let shown = b.texts("[data-test=dead-reason]");
        (shown.len() == reasons.len()).then_some(shown)
    });
    assert_eq!(b.texts("[data-test=dead-reason]"), reasons);
    assert_eq!(b.text("#dead-count").as_deref(), Some("3"));
    assert!(
        b.text("#dead-letters").unwrap().contains("\"critical\""),
        "each dead letter shows its event"
    );
    if std::env::var("WASMPIPE_SCREENSHOT").as_deref() == Ok("1") {
        b.wait_text("#job-timings", "processing");
        // The whole page, up to a README picture's height.
        let height = b.exec("return document.documentElement.scrollHeight;", json!([]));
        b.set_viewport(1280, height.as_u64().unwrap().min(1100));
        let png = b.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(repo().join("docs/console-job.png"), png).unwrap();
    }

    // The events of the job with a field filter, as the API finds them,
    // each with its lineage.
    let auth_events = api(
        &s,
        "GET",
        &format!("/v1/events?job={job}&field.service=auth"),
        None,
    )
    .json()["events"]
        .as_array()
        .unwrap()
        .len();
    assert!(auth_events > 0);
    b.goto(&s.url(&format!("/#/events?job={job}&field.service=auth")));
    b.wait(&format!("{auth_events} event rows"), |b| {
        (b.texts("[data-test=event-row]").len() == auth_events).then_some(())
    });
    let first = &b.texts("[data-test=event-row]")[0];
    assert!(first.contains("\"service\":\"auth\""), "{first}");
    let version = crate::util::short_version(&plugin("enrich"));
    assert_eq!(
        b.texts("[data-test=event-row] .chip")[0],
        format!("enrich {version}"),
        "the versions that produced the event"
    );
    b.goto(&s.url(&format!("/#/jobs/{job}")));
    b.wait_text("#dead-count", "3");
    assert!(!b.visible("#nav-windows"), "no windows here");

    // Retry with the read token: refused, and the page says why.
    b.click("#retry-dead");
    b.wait_text("#action-error", "This token cannot write");
    b.wait_text("#action-error", "lacks the `write` permission");
    // With the write token: a new job, and the page goes there.
    b.click("#logout");
    b.wait_visible("#login-form");
    b.type_into("#login-token", WRITE);
    b.click("#login-submit");
    b.wait_text("#job-id", &job.to_string());
    b.click("#retry-dead");
    let new: i64 = b.wait("the page to move to the retry job", |b| {
        b.text("#job-id")
            .and_then(|t| t.parse().ok())
            .filter(|&id: &i64| id != job)
    });
    assert!(b.url().ends_with(&format!("#/jobs/{new}")), "{}", b.url());
    let newest = &api(&s, "GET", "/v1/jobs?limit=1", None).json()["jobs"][0];
    assert_eq!(
        (newest["id"].as_i64(), newest["origin"].as_i64()),
        (Some(new), Some(job)),
        "{newest}"
    );
    assert_eq!(newest["kind"], "retry");
    b.wait_text("#job-origin", &format!("job {job}"));
    b.wait_text("#action-notice", &format!("of job {job}"));
    // The retry's dead letters fail again; they are stored before the tail
    // opens, so that it shows only what is posted below.
    wait_job(&s, new, &[("authorization", &read)]);

    // A new version of `enrich` tried on the job from its page: the page
    // shows what the API answers for the same module, change by change.
    let candidate = plugin("stamp");
    let expected = crate::util::http::request(
        "POST",
        &s.url(&format!("/v1/jobs/{job}/diff?stage=enrich")),
        &[("authorization", &format!("Bearer {WRITE}"))],
        Some(&std::fs::read(&candidate).unwrap()),
    )
    .unwrap();
    assert_eq!(expected.status, 200, "{}", expected.body);
    let expected = expected.json();
    assert_eq!(expected["fixed_dead_letters"], 3, "{expected}");
    b.goto(&s.url(&format!("/#/jobs/{job}")));
    b.wait_visible("#diff-form");
    b.type_into("#diff-file", candidate.to_str().unwrap());
    b.click("#diff-run");
    b.wait_text("#diff-summary", expected["summary"].as_str().unwrap());
    let listed = b.texts("[data-test=diff-change]");
    assert_eq!(listed.len(), expected["changes"].as_array().unwrap().len());
    assert!(
        listed.iter().filter(|c| c.contains("fixed")).count() == 3,
        "{listed:?}"
    );
    if std::env::var_os("WASMPIPE_SCREENSHOT").is_some() {
        b.exec(
            "document.getElementById('diff-card').scrollIntoView();",
            json!([]),
        );
        let png = b.screenshot();
        std::fs::write(repo().join("docs/console-diff.png"), png).unwrap();
    }

    // The live tail: what is posted after it opened arrives; paused, it is
    // counted but not shown until Resume.
    b.goto(&s.url("/#/tail"));
    b.wait_visible("#tail-status[data-state=live]");
    post_job(
        &s,
        &[json!({"level": "info", "service": "web", "msg": "tail one"})],
    );
    b.wait_text("#tail-rows", "\"tail one\"");
    b.click("#tail-pause");
    b.wait_text("#tail-pause", "Resume");
    post_job(
        &s,
        &[json!({"level": "warn", "service": "web", "msg": "tail two"})],
    );
    b.wait_text("#tail-pending", "1 new while paused");
    assert!(
        !b.text("#tail-rows").unwrap().contains("tail two"),
        "paused: counted, not shown"
    );
    b.click("#tail-pause");
    b.wait_text("#tail-rows", "\"tail two\"");
    assert!(!b.visible("#tail-pending"));
    // A dead letter arrives too, marked as one.
    post_job(
        &s,
        &[json!({"level": "fatal", "service": "web", "msg": "tail three"})],
    );
    let dead_row = b.wait_text(".tail-row.dead", "\"tail three\"");
    assert!(dead_row.contains("unknown level `fatal`"), "{dead_row}");
    assert_eq!(b.texts("[data-test=tail-row]").len(), 3);
    b.click("#tail-clear");
    b.wait("the tail to be cleared", |b| {
        b.texts("[data-test=tail-row]").is_empty().then_some(())
    });

    // Nothing went wrong in the page: no script error, no refused inline
    // style or script. (Failed requests, the 401s and the 403 above, are
    // logged by Chromium itself and expected.)
    let errors: Vec<String> = b
        .console_log()
        .into_iter()
        .filter(|l| l.contains("SEVERE") && !l.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "browser errors:\n{}", errors.join("\n"));
    drop(b);
    assert_eq!(s.stop(), Some(0));
    eprintln!("console test took {:?}", started.elapsed());
}

/// A windowed pipeline's console lists the closed windows the API lists;
/// with no tokens configured it opens without a login.
#[test]
fn console_shows_a_windowed_pipelines_closed_windows() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "windows.toml",
        &format!(
            "[pipeline]\nname = \"windows\"\n\n[[stage]]\nname = \"stats\"\nkind = \"reduce\"\nplugin = {}\nkey = \"/service\"\n\
             window = {{ kind = \"tumbling\", size = \"1m\", time = \"/ts\", lateness = \"10s\" }}\n\n[serve]\ndatabase = \"windows.db\"\n",
            toml_path(&plugin("service_stats"))
        ),
    );
    let s = Server::start(&m, &[]);
    let logs = std::fs::read_to_string(repo().join("examples/windows/logs.jsonl")).unwrap();
    let r = request(
        "POST",
        &s.url("/v1/pipelines/windows/jobs"),
        &[("content-type", "application/x-ndjson")],
        Some(logs.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    let windows = request("GET", &s.url("/v1/windows"), &[], None)
        .unwrap()
        .json()["windows"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!windows.is_empty(), "the watermark closed some windows");

    let b = Browser::start();
    b.goto(&s.url("/#/windows"));
    b.wait(&format!("{} window rows", windows.len()), |b| {
        (b.texts("[data-test=window-row]").len() == windows.len()).then_some(())
    });
    assert!(b.visible("#nav-windows"));
    let rows = b.texts("[data-test=window-row]");
    for (row, w) in rows.iter().zip(&windows) {
        assert!(row.contains(w["key"].as_str().unwrap()), "{row} / {w}");
        let count = format!("\"count\":{}", w["value"]["count"]);
        assert!(row.replace(' ', "").contains(&count), "{row} / {w}");
    }
    drop(b);
    assert_eq!(s.stop(), Some(0));
}
