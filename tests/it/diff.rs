//! `POST /v1/jobs/{id}/diff` and `wasmpipe diff`: a stored job run again
//! on a candidate version of one stage, nothing stored, and what changed,
//! event by event, checked against a computation of the two versions'
//! behaviour written here from their definitions (`faulty` passes `{"n"}`
//! through and fails `n % 1000 == 13`; `double` doubles `n`).

use crate::util::http::{Server, get, post, request, wait_job};
use crate::util::{plugin, toml_path, wasmpipe, write};
use serde_json::{Value, json};

const READ: &str = "Bearer diff-read";
const WRITE: &str = "Bearer diff-write";

fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "diffed.toml",
        &format!(
            "[pipeline]\nname = \"diffed\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\n\n\
             [serve]\ndatabase = \"diffed.db\"\nchunk_size = 16\n\n\
             [[serve.token]]\nname = \"r\"\ntoken = \"diff-read\"\npermissions = [\"read\"]\n\n\
             [[serve.token]]\nname = \"w\"\ntoken = \"diff-write\"\npermissions = [\"read\", \"write\"]\n",
            toml_path(&plugin("faulty"))
        ),
    )
}

/// What the two versions make of one event: outputs, or a dead letter.
fn faulty(e: &Value) -> Result<Vec<Value>, ()> {
    match e["n"].as_i64() {
        Some(n) if n % 1000 == 13 => Err(()),
        Some(n) => Ok(vec![json!({ "n": n })]),
        None => Err(()),
    }
}

fn double(e: &Value) -> Result<Vec<Value>, ()> {
    e["n"]
        .as_i64()
        .map(|n| vec![json!({ "n": 2 * n })])
        .ok_or(())
}

/// `wasmpipe diff --server <s> --job <job> --stage s <args>`.
fn cli_diff(s: &Server, job: i64, args: &[&str]) -> std::process::Command {
    let mut cmd = wasmpipe();
    cmd.args([
        "diff",
        "--server",
        &s.url(""),
        "--job",
        &job.to_string(),
        "--stage",
        "s",
    ])
    .args(args);
    cmd
}

fn diff(s: &Server, job: i64, query: &str, auth: &str, body: &[u8]) -> (u16, Value) {
    let r = request(
        "POST",
        &s.url(&format!("/v1/jobs/{job}/diff?{query}")),
        &[
            ("authorization", auth),
            ("content-type", "application/wasm"),
        ],
        Some(body),
    )
    .unwrap();
    (r.status, r.json())
}

#[test]
fn a_diff_reports_what_a_new_version_changes_event_by_event_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path()), &[]);
    // 0 (unchanged by doubling), 13 and 1013 (dead letters before, not
    // after), a string (a dead letter in both, for different reasons) and
    // plain numbers (different outputs), over several chunks.
    let mut events: Vec<Value> = (0..60).map(|n| json!({ "n": n })).collect();
    events.insert(25, json!({ "n": "x" }));
    events.push(json!({ "n": 1013 }));
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = request(
        "POST",
        &s.url("/v1/pipelines/diffed/jobs"),
        &[
            ("authorization", WRITE),
            ("content-type", "application/x-ndjson"),
        ],
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["job"].as_i64().unwrap();
    let job = wait_job(&s, id, &[("authorization", READ)]);
    assert_eq!(job["dead_letters"], 3, "{job}");
    let jobs = |s: &Server| {
        request("GET", &s.url("/v1/jobs"), &[("authorization", READ)], None)
            .unwrap()
            .json()["jobs"]
            .as_array()
            .unwrap()
            .len()
    };
    let stored = |s: &Server| {
        request(
            "GET",
            &s.url(&format!("/v1/events?job={id}&limit=1000")),
            &[("authorization", READ)],
            None,
        )
        .unwrap()
        .json()["events"]
            .clone()
    };
    let (jobs_before, stored_before) = (jobs(&s), stored(&s));

    // The expected changes, from the two definitions alone.
    let mut expected = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let change = match (faulty(e), double(e)) {
            (Ok(a), Ok(b)) if a == b => continue,
            (Ok(_), Ok(_)) => "different",
            (Err(()), Ok(_)) => "fixed",
            (Ok(_), Err(())) => "dead",
            (Err(()), Err(())) => "different",
        };
        expected.push((
            i as u64,
            change,
            faulty(e).unwrap_or_default(),
            double(e).unwrap_or_default(),
        ));
    }

    let out = cli_diff(&s, id, &["--json", "--limit", "1000"])
        .arg(plugin("double"))
        .env("WASMPIPE_TOKEN", "diff-write")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "changes exit 4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"], events.len(), "{v}");
    assert_eq!(v["changed"], expected.len(), "{v}");
    assert_eq!(
        (&v["new_dead_letters"], &v["fixed_dead_letters"]),
        (&json!(0), &json!(2)),
        "{v}"
    );
    assert_eq!(v["truncated"], false);
    assert_eq!(
        v["result"],
        Value::Null,
        "a map-only pipeline has no result"
    );
    let got: Vec<(u64, &str, Vec<Value>, Vec<Value>)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["change"].as_str().unwrap(),
                c["before"].as_array().unwrap().clone(),
                c["after"].as_array().unwrap().clone(),
            )
        })
        .collect();
    let want: Vec<(u64, &str, Vec<Value>, Vec<Value>)> = expected
        .iter()
        .map(|(i, c, a, b)| (*i, *c, a.clone(), b.clone()))
        .collect();
    assert_eq!(got, want);
    // The string fails both, each version saying why in its own words.
    let x = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["index"] == 25)
        .unwrap();
    assert_eq!(
        (&x["before_error"]["stage"], &x["after_error"]["stage"]),
        (&json!("s"), &json!("s")),
        "{x}"
    );
    assert_ne!(x["before_error"]["error"], x["after_error"]["error"], "{x}");
    let versions = (
        v["before"]["s"].as_str().unwrap(),
        v["after"]["s"].as_str().unwrap(),
    );
    assert_eq!(
        versions.0,
        job["stage_versions"][0]["s"].as_str().unwrap(),
        "{job}"
    );
    assert_ne!(versions.0, versions.1);
    assert_eq!(
        v["summary"],
        format!(
            "v{} of `s` changes {} of {} events; 2 fewer dead letters",
            versions.1,
            expected.len(),
            events.len()
        )
    );

    // Nothing was stored: no job, no event.
    assert_eq!((jobs(&s), stored(&s)), (jobs_before, stored_before));

    // The readable form, with a short list.
    let out = cli_diff(&s, id, &["--limit", "2", "--token", "diff-write"])
        .arg(plugin("double"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("v{} of `s` changes", versions.1)),
        "{text}"
    );
    assert!(
        text.contains("#1 different\n  - {\"n\":1}\n  + {\"n\":2}\n"),
        "{text}"
    );
    assert!(text.contains("raise --limit"), "{text}");

    // The current version against itself, by name: nothing changes.
    let (status, same) = diff(
        &s,
        id,
        &format!("stage=s&version={}", versions.0),
        WRITE,
        b"",
    );
    assert_eq!((status, &same["changed"]), (200, &json!(0)), "{same}");
    let out = cli_diff(&s, id, &["--version", versions.0, "--token", "diff-write"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // What a diff refuses, each saying why.
    let wasm = std::fs::read(plugin("double")).unwrap();
    let refusals = [
        (diff(&s, id, "stage=s", READ, &wasm), 403, "permission"),
        (
            diff(&s, id, "stage=nope", WRITE, &wasm),
            400,
            "no stage `nope`; its stages are s",
        ),
        (diff(&s, id, "", WRITE, &wasm), 400, "?stage="),
        (
            diff(&s, id, "stage=s", WRITE, b""),
            400,
            "send the candidate module",
        ),
        (
            diff(&s, id, "stage=s", WRITE, b"not wasm"),
            422,
            "cannot serve as stage `s`",
        ),
        (
            diff(
                &s,
                id,
                "stage=s",
                WRITE,
                &std::fs::read(plugin("errors_only")).unwrap(),
            ),
            422,
            "filter",
        ),
        (
            diff(&s, id, "stage=s&version=abcdef", WRITE, b""),
            404,
            "loadable: ",
        ),
        (diff(&s, 999, "stage=s", WRITE, &wasm), 404, "no job `999`"),
        (
            diff(&s, id, "stage=s&limit=0", WRITE, &wasm),
            400,
            "`limit`",
        ),
    ];
    for ((status, v), want, says) in refusals {
        assert_eq!(status, want, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
    }
    // The server is unharmed.
    assert_eq!(get(&s, "/healthz").status, 200);
    let r = post(
        &s,
        "/v1/pipelines/diffed/jobs",
        "application/x-ndjson",
        "{\"n\":1}\n",
    );
    assert_eq!(r.status, 401, "still needs a token: {}", r.body);
}
