//! `wasmpipe serve` over real HTTP on 127.0.0.1: the server runs as a
//! child process (so it can be SIGKILLed), bound to port 0; it prints its
//! address on stdout.

use crate::util::http::{Resp, Server, all_events, all_jobs, get, ndjson, post, request, wait_job};
use crate::util::{plugin, short_version, toml_path, wasmpipe, write};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn stage(name: &str, kind: &str, plugin_name: &str, extra: &str) -> String {
    format!(
        "[[stage]]\nname = \"{name}\"\nkind = \"{kind}\"\nplugin = {}\n{extra}\n",
        toml_path(&plugin(plugin_name))
    )
}

fn manifest(dir: &Path, name: &str, stages: &str, serve: &str) -> PathBuf {
    let text = format!(
        "[pipeline]\nname = \"{name}\"\n\n{stages}\n[runtime]\nworkers = 2\n\n[serve]\ndatabase = \"{name}.db\"\n{serve}\n"
    );
    write(dir, &format!("{name}.toml"), &text)
}

fn adder(dir: &Path, serve: &str) -> PathBuf {
    let stages = stage("double", "map", "double", "") + &stage("sum", "reduce", "sum", "");
    manifest(dir, "adder", &stages, serve)
}

#[test]
fn stored_events_carry_lineage_and_their_chunk_number() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[pipeline]\nname = \"lin\"\n\n{}\n[runtime]\nworkers = 2\nlineage = true\n\n[serve]\ndatabase = \"lin.db\"\nchunk_size = 3\n",
        stage("stamp", "map", "stamp", "")
    );
    let m = write(dir.path(), "lin.toml", &text);
    let s = Server::start(&m, &[]);
    let events: Vec<Value> = (0..10).map(|i| json!({ "i": i })).collect();
    let r = post(
        &s,
        "/v1/pipelines/lin/jobs",
        "application/x-ndjson",
        &ndjson(&events),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["job"].as_i64().unwrap();
    let job = wait_job(&s, id, &[]);
    let version = short_version(&plugin("stamp"));
    assert_eq!(
        job["stage_versions"],
        json!([{ "stamp": version }]),
        "{job}"
    );
    let stored = all_events(&s, &format!("job={id}"), &[]);
    assert_eq!(stored.len(), 10);
    for e in &stored {
        let i = e["index"].as_u64().unwrap();
        assert_eq!(e["event"]["_versions"], json!({ "stamp": version }), "{e}");
        assert_eq!(e["event"]["request"]["chunk"], i / 3, "{e}");
    }
}

#[test]
fn adder_job_returns_the_sum() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&adder(dir.path(), "chunk_size = 7"), &[]);
    let events: Vec<Value> = (0..1000).map(|n| json!({ "n": n })).collect();
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        &ndjson(&events),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["accepted"].as_u64(), v["chunks"].as_u64()),
        (Some(1000), Some(143))
    );
    let job = wait_job(&s, v["job"].as_i64().unwrap(), &[]);
    assert_eq!(job["result"], json!(999_000), "2 × (0 + … + 999)");
    assert_eq!(
        (
            job["events_in"].as_u64(),
            job["events_out"].as_u64(),
            job["dead_letters"].as_u64()
        ),
        (Some(1000), Some(1000), Some(0))
    );
    assert_eq!(job["chunks_done"], 143);
    // Each event is stored as it entered the reduce (doubled), once.
    let stored = all_events(&s, &format!("job={}", v["job"]), &[]);
    let mut indexes: Vec<u64> = stored
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..1000).collect::<Vec<u64>>());
    let doubled: i64 = stored
        .iter()
        .map(|e| e["event"]["n"].as_i64().unwrap())
        .sum();
    assert_eq!(doubled, 999_000);
    let versions = &job["stage_versions"][0];
    // The same 12-hex versions as `run` writes in dead letters and lineage.
    assert_eq!(
        versions["double"],
        short_version(&plugin("double")),
        "{job}"
    );
    assert_eq!(versions["sum"], short_version(&plugin("sum")), "{job}");
    assert!(job["timings"]["processing_ms"].as_i64().unwrap() >= 0);

    // A JSON array (pretty-printed) is a batch too; each job has its own result.
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/json",
        "[\n  {\"n\": 1},\n  {\n    \"n\": 2\n  },\n  {\"n\": 3}\n]",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(job["result"], json!(12));
    // Both jobs count as done once their last chunk is stored.
    let metrics = get(&s, "/metrics").body;
    assert!(
        metrics.contains("wasmpipe_jobs_done_total{pipeline=\"adder\"} 2\n"),
        "{metrics}"
    );
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn serve_watch_swaps_a_changed_plugin_between_chunks() {
    use crate::reload::{short_hash, version};
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (version("v1"), version("v2"));
    let wasm = dir.path().join("tag.wasm");
    std::fs::write(&wasm, &v1).unwrap();
    let m = manifest(
        dir.path(),
        "tags",
        "[[stage]]\nname = \"tag\"\nkind = \"map\"\nplugin = \"tag.wasm\"\n",
        "chunk_size = 10",
    );
    let s = Server::start_with(&m, &[], &["--watch"]);
    let body: String = (0..50).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let run_job = || {
        let r = post(&s, "/v1/pipelines/tags/jobs", "application/x-ndjson", &body);
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.json()["job"].as_i64().unwrap();
        let job = wait_job(&s, id, &[]);
        let tags: BTreeSet<String> = all_events(&s, &format!("job={id}"), &[])
            .iter()
            .map(|e| e["event"]["tag"].as_str().unwrap().to_string())
            .collect();
        (job, tags)
    };
    let (job, tags) = run_job();
    assert_eq!(tags, BTreeSet::from(["v1".to_string()]));
    let version_of = |job: &Value| {
        job["stage_versions"][0]["tag"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(version_of(&job).starts_with(&short_hash(&v1)), "{job}");

    // A new version, written whole (as a build's final rename does).
    std::fs::write(dir.path().join("tag.wasm.tmp"), &v2).unwrap();
    std::fs::rename(dir.path().join("tag.wasm.tmp"), &wasm).unwrap();
    let t = Instant::now();
    loop {
        let ready = get(&s, "/readyz").json();
        if ready["stages"][0]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(&short_hash(&v2)))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not swapped: {ready}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = job["id"].as_i64().unwrap();
    let (job, tags) = run_job();
    assert_eq!(tags, BTreeSet::from(["v2".to_string()]), "{job}");
    assert!(version_of(&job).starts_with(&short_hash(&v2)), "{job}");
    assert_eq!(job["stage_versions"].as_array().unwrap().len(), 1);

    // The replaced version is still loadable: a replay can name it, and a
    // replay that names none runs on the current one.
    let replay = |body: &str| {
        let r = post(
            &s,
            &format!("/v1/jobs/{first}/replay"),
            "application/json",
            body,
        );
        (r.status, r.json())
    };
    fn replayed_tags(s: &Server, v: &Value) -> (Value, BTreeSet<String>) {
        let id = v["job"].as_i64().unwrap();
        let job = wait_job(s, id, &[]);
        let tags: BTreeSet<String> = all_events(s, &format!("job={id}"), &[])
            .iter()
            .map(|e| e["event"]["tag"].as_str().unwrap().to_string())
            .collect();
        (job, tags)
    }
    let (status, v) = replay(&format!(
        "{{\"versions\":{{\"tag\":\"{}\"}}}}",
        short_hash(&v1)
    ));
    assert_eq!(status, 202, "{v}");
    let (job, tags) = replayed_tags(&s, &v);
    assert_eq!(tags, BTreeSet::from(["v1".to_string()]), "{job}");
    assert!(
        job["pinned"]["tag"]
            .as_str()
            .unwrap()
            .starts_with(&short_hash(&v1)),
        "{job}"
    );
    assert!(version_of(&job).starts_with(&short_hash(&v1)), "{job}");
    let (status, v) = replay("");
    assert_eq!(status, 202, "{v}");
    let (job, tags) = replayed_tags(&s, &v);
    assert_eq!(
        (tags, &job["pinned"]),
        (BTreeSet::from(["v2".to_string()]), &Value::Null)
    );
    // A diff between the two loaded versions, by name: every event's tag.
    let r = post(
        &s,
        &format!(
            "/v1/jobs/{first}/diff?stage=tag&base={}&version={}",
            short_hash(&v1),
            short_hash(&v2)
        ),
        "application/wasm",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    assert_eq!(
        (&d["changed"], &d["changes"][0]["change"]),
        (&json!(50), &json!("different")),
        "{d}"
    );
    assert_eq!(d["changes"][0]["before"][0]["tag"], "v1", "{d}");
    assert_eq!(d["changes"][0]["after"][0]["tag"], "v2", "{d}");
    // What a replay refuses, saying why.
    for (body, status, says) in [
        (
            "{\"versions\":{\"tag\":\"abcdef\"}}",
            404,
            format!("loadable: {}, {}", short_hash(&v2), short_hash(&v1)),
        ),
        (
            "{\"versions\":{\"nope\":\"abcdef\"}}",
            400,
            "no stage `nope`".to_string(),
        ),
        ("{\"version\":{}}", 400, "must be empty or".to_string()),
    ] {
        let (got, v) = replay(body);
        assert_eq!(got, status, "{v}");
        assert!(v["error"].as_str().unwrap().contains(&says), "{says}: {v}");
    }
    assert_eq!(s.stop(), Some(0));

    // A pinned replay still queued when the server stops (journaled here
    // as a replay posted just before the stop would be) meets a restarted
    // server that has only v2: its events become dead letters that say
    // why, not outputs of a version nobody asked for, and a retry runs
    // them on v2.
    let db = rusqlite::Connection::open(dir.path().join("tags.db")).unwrap();
    let pin = format!(
        "{{\"tag\":\"{}\"}}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&v1))
    );
    db.execute(
        "INSERT INTO jobs (pipeline, kind, origin, received_at, context, events_in, chunks, pinned)
         SELECT pipeline, 'replay', id, received_at, context, events_in, chunks, ?2 FROM jobs WHERE id = ?1",
        rusqlite::params![first, pin],
    )
    .unwrap();
    let queued = db.last_insert_rowid();
    db.execute(
        "INSERT INTO chunks (job, seq, first_index, events, data)
         SELECT ?2, seq, first_index, events, data FROM chunks WHERE job = ?1",
        rusqlite::params![first, queued],
    )
    .unwrap();
    drop(db);
    let s = Server::start(&m, &[]);
    let job = wait_job(&s, queued, &[]);
    assert_eq!(
        (&job["dead_letters"], &job["events_out"]),
        (&json!(50), &json!(0)),
        "{job}"
    );
    let dead = get(&s, &format!("/v1/dead-letters?job={queued}&limit=100")).json();
    let reason = dead["dead_letters"][0]["error"].as_str().unwrap();
    assert!(reason.contains("no longer has loaded"), "{reason}");
    let r = post(
        &s,
        &format!("/v1/jobs/{queued}/dead-letters/retry"),
        "application/json",
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let (job, tags) = replayed_tags(&s, &r.json());
    assert_eq!(
        (tags, &job["dead_letters"]),
        (BTreeSet::from(["v2".to_string()]), &json!(0))
    );
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_reduce_pipeline_can_store_only_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&adder(dir.path(), "store_reduce_input = false"), &[]);
    let events: Vec<Value> = (0..100).map(|n| json!({ "n": n })).collect();
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        &ndjson(&events),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(job["result"], json!(9900));
    assert_eq!(job["events_out"], 0);
    assert_eq!(get(&s, "/v1/events").json()["events"], json!([]));
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn enrich_pipeline_stores_enriched_events_retrievable_by_filters() {
    let dir = tempfile::tempdir().unwrap();
    let stages = stage(
        "enrich",
        "map",
        "enrich",
        "params = { region = \"eu-west-1\" }",
    ) + &stage("stamp", "map", "stamp", "");
    let serve = "identity_header = \"x-user\"\nchunk_size = 64\n\n[[serve.token]]\nname = \"gateway\"\ntoken = \"gateway-secret-1\"\npermissions = [\"read\", \"write\"]\n";
    let m = manifest(dir.path(), "logs", &stages, serve);
    let s = Server::start(&m, &[]);
    let auth = ("authorization", "Bearer gateway-secret-1");
    let mut events: Vec<Value> = (0..250)
        .map(|i| json!({ "i": i, "level": "info", "service": if i % 2 == 0 { "auth" } else { "billing" } }))
        .collect();
    events[7] = json!({ "i": 7, "level": "fatal", "service": "billing" });
    let body = ndjson(&events);
    let r = request(
        "POST",
        &s.url("/v1/pipelines/logs/jobs"),
        &[
            auth,
            ("content-type", "application/x-ndjson"),
            ("x-user", "bob"),
            ("user-agent", "loadgen/1.0"),
        ],
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let j1 = r.json()["job"].as_i64().unwrap();
    // Without the identity header, the identity is the token's name.
    let r = request(
        "POST",
        &s.url("/v1/pipelines/logs/jobs"),
        &[auth, ("content-type", "application/json")],
        Some(br#"[{"level":"warn","service":"auth","i":1000}]"#),
    )
    .unwrap();
    let j2 = r.json()["job"].as_i64().unwrap();
    let job1 = wait_job(&s, j1, &[auth]);
    wait_job(&s, j2, &[auth]);
    assert_eq!(
        (
            job1["events_in"].as_u64(),
            job1["events_out"].as_u64(),
            job1["dead_letters"].as_u64()
        ),
        (Some(250), Some(249), Some(1))
    );
    assert_eq!(job1["context"]["identity"], "bob");

    // Field equality, per job, through the cursor (3 pages of 50).
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        let r = request(
            "GET",
            &s.url(&format!(
                "/v1/events?job={j1}&field.service=auth&limit=50{cursor}"
            )),
            &[auth],
            None,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        seen.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => {
                assert_eq!(page, 2, "125 events in pages of 50");
                break;
            }
        }
    }
    assert_eq!(seen.len(), 125);
    let ids: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "pages follow each other: {ids:?}"
    );
    let mut is: Vec<i64> = seen
        .iter()
        .map(|e| e["event"]["i"].as_i64().unwrap())
        .collect();
    is.sort();
    assert_eq!(
        is,
        (0..250).step_by(2).collect::<Vec<_>>(),
        "every auth event once"
    );
    assert!(
        seen.iter().all(|e| e["index"] == e["event"]["i"]),
        "each stored event names its input's index in the job"
    );
    let ev = &seen[0]["event"];
    assert_eq!(ev["region"], "eu-west-1", "{ev}");
    assert_eq!(ev["level_num"], 20);
    assert!(ev["host"].as_str().is_some_and(|h| !h.is_empty()), "{ev}");
    assert_eq!(
        ev["received_at"], job1["timings"]["received_at"],
        "the job's arrival time, not the processing time"
    );
    assert_eq!(ev["request"]["identity"], "bob");
    assert_eq!(ev["request"]["user_agent"], "loadgen/1.0");
    assert_eq!(ev["request"]["job"], j1.to_string());
    assert_eq!(ev["request"]["pipeline"], "logs");
    assert!(
        ev["request"]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{ev}"
    );

    // Nested fields, and the other job.
    let by_gateway = all_events(&s, "field.request.identity=gateway", &[auth]);
    assert_eq!(by_gateway.len(), 1);
    assert_eq!(by_gateway[0]["job"], j2);
    assert_eq!(
        all_events(&s, "pipeline=logs&field.level_num=30", &[auth]).len(),
        1,
        "numbers compare as text"
    );
    // Time range.
    let received = &job1["timings"]["received_at"];
    let before = all_events(
        &s,
        &format!("until={}", received.as_str().unwrap()),
        &[auth],
    );
    assert!(before.is_empty());
    assert_eq!(
        all_events(
            &s,
            &format!("since={}", received.as_str().unwrap()),
            &[auth]
        )
        .len(),
        250
    );
    assert!(all_events(&s, "pipeline=other", &[auth]).is_empty());

    // The dead letter says why.
    let r = request(
        "GET",
        &s.url(&format!("/v1/dead-letters?job={j1}")),
        &[auth],
        None,
    )
    .unwrap();
    let dl = &r.json()["dead_letters"];
    assert_eq!(dl.as_array().unwrap().len(), 1, "{dl}");
    assert_eq!(
        (
            dl[0]["stage"].as_str(),
            dl[0]["error"].as_str(),
            dl[0]["index"].as_u64()
        ),
        (Some("enrich"), Some("unknown level `fatal`"), Some(7))
    );
    assert_eq!(dl[0]["event"], events[7]);
}

#[test]
fn keyed_reduce_results_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let stages = stage("words", "flat_map", "words", "")
        + &stage("count", "reduce", "word_count", "key = \"/word\"");
    let s = Server::start(&manifest(dir.path(), "wc", &stages, "chunk_size = 2"), &[]);
    let a = post(
        &s,
        "/v1/pipelines/wc/jobs",
        "application/x-ndjson",
        "{\"text\":\"a b a\"}\n{\"text\":\"c a\"}\n{\"text\":\"b\"}\n",
    );
    let b = post(
        &s,
        "/v1/pipelines/wc/jobs",
        "application/json",
        r#"[{"text":"b c"},{"text":"d"}]"#,
    );
    assert_eq!((a.status, b.status), (202, 202), "{} {}", a.body, b.body);
    let ja = wait_job(&s, a.json()["job"].as_i64().unwrap(), &[]);
    let jb = wait_job(&s, b.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(ja["keyed"], true);
    assert_eq!(ja["result"], json!({"a": 3, "b": 2, "c": 1}), "{ja}");
    assert_eq!(jb["result"], json!({"b": 1, "c": 1, "d": 1}), "{jb}");
}

#[test]
fn dead_letters_name_the_versions_of_their_chunk_as_runs_do() {
    let dir = tempfile::tempdir().unwrap();
    let stages = stage("faulty", "map", "faulty", "") + &stage("sum", "reduce", "sum", "");
    let s = Server::start(
        &manifest(dir.path(), "vers", &stages, "chunk_size = 3"),
        &[],
    );
    // faulty fails n = 13 ("unlucky 13"), here in the job's third chunk.
    let events: Vec<Value> = (7..17).map(|n| json!({ "n": n })).collect();
    let r = post(
        &s,
        "/v1/pipelines/vers/jobs",
        "application/x-ndjson",
        &ndjson(&events),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["job"].as_i64().unwrap();
    wait_job(&s, id, &[]);
    let versions = json!({
        "faulty": short_version(&plugin("faulty")),
        "sum": short_version(&plugin("sum")),
    });
    let dead = get(&s, &format!("/v1/dead-letters?job={id}")).json();
    let dead = dead["dead_letters"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (&dead[0]["index"], &dead[0]["versions"]),
        (&json!(6), &versions),
        "{}",
        dead[0]
    );
    // A retry's dead letter is its own job's, run on the same versions.
    let r = post(
        &s,
        &format!("/v1/jobs/{id}/dead-letters/retry"),
        "application/json",
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let retry = r.json()["job"].as_i64().unwrap();
    wait_job(&s, retry, &[]);
    let dead = get(&s, &format!("/v1/dead-letters?job={retry}")).json();
    assert_eq!(dead["dead_letters"][0]["versions"], versions, "{dead}");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn timeouts_are_retried_with_backoff_then_dead_lettered_and_jobs_replay() {
    let dir = tempfile::tempdir().unwrap();
    let stages = stage("faulty", "map", "faulty", "limits = { timeout = \"50ms\" }");
    let s = Server::start(
        &manifest(
            dir.path(),
            "flaky",
            &stages,
            "retries = 2\nbackoff = \"20ms\"",
        ),
        &[],
    );
    let r = post(
        &s,
        "/v1/pipelines/flaky/jobs",
        "application/json",
        r#"[{"n":1},{"n":-2},{"n":13},{"n":2}]"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["job"].as_i64().unwrap();
    let job = wait_job(&s, id, &[]);
    assert_eq!(
        (
            job["events_out"].as_u64(),
            job["dead_letters"].as_u64(),
            job["retries"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{job}"
    );
    let dl = get(&s, &format!("/v1/dead-letters?job={id}")).json();
    let dl = dl["dead_letters"].as_array().unwrap().clone();
    let by_index: BTreeMap<u64, &Value> = dl
        .iter()
        .map(|d| (d["index"].as_u64().unwrap(), d))
        .collect();
    let slow = by_index[&1];
    // Timed out in the chunk's call, alone (isolating it), and in each of
    // the two retries.
    assert_eq!(slow["attempts"], 4, "{slow}");
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 50ms")
            && slow["error"]
                .as_str()
                .unwrap()
                .ends_with("(after 4 attempts)"),
        "{slow}"
    );
    let unlucky = by_index[&2];
    assert_eq!(
        (unlucky["error"].as_str(), unlucky["attempts"].as_u64()),
        (Some("unlucky 13"), Some(1)),
        "deterministic errors are not retried"
    );
    let metrics = get(&s, "/metrics").body;
    assert!(
        metrics.contains("wasmpipe_retries_total{pipeline=\"flaky\"} 2"),
        "{metrics}"
    );

    // Retry the dead letters: a new job with just those events.
    let r = post(
        &s,
        &format!("/v1/jobs/{id}/dead-letters/retry"),
        "application/json",
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let retry = wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(
        (
            retry["kind"].as_str(),
            retry["origin"].as_i64(),
            retry["events_in"].as_u64()
        ),
        (Some("retry"), Some(id), Some(2))
    );
    assert_eq!(
        retry["dead_letters"], 2,
        "the stage is not fixed, so they fail again"
    );
    let again = post(
        &s,
        &format!("/v1/jobs/{id}/dead-letters/retry"),
        "application/json",
        "",
    );
    assert_eq!(
        (again.status, again.error()),
        (409, format!("job {id} has no dead letters left to retry"))
    );

    // Replay: the same input, a new job, its own outputs.
    let r = post(&s, &format!("/v1/jobs/{id}/replay"), "application/json", "");
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r.json()["job"].as_i64().unwrap();
    let replayed = wait_job(&s, rid, &[]);
    assert_eq!(
        (
            replayed["kind"].as_str(),
            replayed["events_in"].as_u64(),
            replayed["events_out"].as_u64()
        ),
        (Some("replay"), Some(4), Some(2))
    );
    let ns: Vec<i64> = all_events(&s, &format!("job={rid}"), &[])
        .iter()
        .map(|e| e["event"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2]);
    assert_eq!(
        post(&s, "/v1/jobs/999/replay", "application/json", "").status,
        404
    );
}

#[test]
fn bad_inputs_get_their_status_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &adder(
            dir.path(),
            "max_body = \"2KiB\"\nmax_events = 10\nmax_event_size = 100",
        ),
        &[],
    );
    let jobs = "/v1/pipelines/adder/jobs";
    let nd = "application/x-ndjson";
    let cases: Vec<(Resp, u16, &str)> = vec![
        (
            post(&s, jobs, "text/plain", "{\"n\":1}"),
            415,
            "content type `text/plain` is not accepted; send `application/json` (a JSON array of events) or `application/x-ndjson` (one event per line)",
        ),
        (
            request("POST", &s.url(jobs), &[], Some(b"{\"n\":1}")).unwrap(),
            415,
            "missing `Content-Type`; send `application/json` (a JSON array of events) or `application/x-ndjson` (one event per line)",
        ),
        (
            post(&s, jobs, nd, &"{\"n\":1}\n".repeat(300)),
            413,
            "the body is larger than the limit of 2048 bytes (serve.max_body)",
        ),
        (
            post(&s, jobs, nd, &"{\"n\":1}\n".repeat(11)),
            413,
            "the batch has more than 10 events (serve.max_events)",
        ),
        (
            post(
                &s,
                jobs,
                "application/json",
                &format!("[{{\"n\":1}}, {{\"n\":2,\"pad\":\"{}\"}}]", "x".repeat(100)),
            ),
            413,
            "array element 1 is 116 bytes, larger than the limit of 100 bytes (serve.max_event_size)",
        ),
        (
            post(&s, jobs, nd, "{\"n\":1}\n{\"n\":2}\n{\"n\" 3}\n"),
            400,
            "invalid JSON at line 3, column 6: expected `:`",
        ),
        (
            post(&s, jobs, nd, "{\"n\":1}\n{\"n\":2} {\"n\":3}\n"),
            400,
            "invalid JSON at line 2, column 9: trailing characters",
        ),
        (
            post(
                &s,
                jobs,
                "application/json",
                "[{\"n\":1},\n {\"n\":2},\n {\"n\":3]",
            ),
            400,
            "invalid JSON in array element 2 at line 3, column 8: expected `,` or `}`",
        ),
        (
            post(&s, jobs, "application/json", "{\"n\":1}"),
            400,
            "expected a JSON array of events at line 1, column 1; send a single event as `[{...}]`, or events one per line as `application/x-ndjson`",
        ),
        (
            post(&s, jobs, "application/json", "[1, 2] 3"),
            400,
            "invalid JSON in array element 2 at line 1, column 8: trailing characters",
        ),
        (
            post(&s, jobs, "application/json", "[]"),
            400,
            "the batch has no events",
        ),
        (post(&s, jobs, nd, "\n\n"), 400, "the batch has no events"),
        (
            post(&s, "/v1/pipelines/nope/jobs", nd, "{\"n\":1}\n"),
            404,
            "no pipeline `nope`; this server runs `adder`",
        ),
        (get(&s, "/v1/jobs/12345"), 404, "no job `12345`"),
        (get(&s, "/v1/jobs/abc"), 404, "no job `abc`"),
        (
            get(&s, "/v1/nothing"),
            404,
            "no such route; docs/api.md lists the routes",
        ),
        (
            get(&s, "/v1/events?limit=0"),
            400,
            "`limit` must be between 1 and 1000, got `0`",
        ),
        (
            get(&s, "/v1/events?field.a..b=1"),
            400,
            "field filter `field.a..b`: a field name is dot-separated letters, digits, '_' and '-', e.g. `field.service=auth` or `field.request.identity=alice`",
        ),
        (
            get(&s, "/v1/events?since=yesterday"),
            400,
            "`since` must be an RFC 3339 time (2024-05-01T12:00:00Z) or milliseconds since the epoch, got `yesterday`",
        ),
        (
            get(&s, "/v1/events?colour=red"),
            400,
            "unknown parameter `colour`; use `pipeline`, `job`, `since`, `until`, `q`, `field.<name>`, `order`, `cursor`, `limit`",
        ),
    ];
    for (i, (r, status, message)) in cases.iter().enumerate() {
        assert_eq!(
            (r.status, r.error().as_str()),
            (*status, *message),
            "case {i}: {}",
            r.body
        );
    }
    // Nothing was partially accepted: no job, no event.
    assert_eq!(get(&s, "/v1/jobs").json()["jobs"], json!([]));
    assert_eq!(get(&s, "/v1/events").json()["events"], json!([]));
    let metrics = get(&s, "/metrics").body;
    assert!(
        metrics.contains("wasmpipe_batches_refused_total{pipeline=\"adder\",status=\"400\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasmpipe_batches_accepted_total{pipeline=\"adder\"} 0"),
        "{metrics}"
    );
}

#[test]
fn auth_is_enforced_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let serve = "[[serve.token]]\nname = \"reader\"\nenv = \"WP_TEST_READ\"\npermissions = [\"read\"]\n\n[[serve.token]]\nname = \"writer\"\nenv = \"WP_TEST_WRITE\"\npermissions = [\"write\"]\n";
    let m = adder(dir.path(), serve);
    // A token whose variable is unset stops the server at start, naming it.
    let r = wasmpipe()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(&m)
        .env("WP_TEST_READ", "r-secret-123")
        .env_remove("WP_TEST_WRITE")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("environment variable `WP_TEST_WRITE` of token `writer` is not set"),
        "{err}"
    );

    let s = Server::start(
        &m,
        &[
            ("WP_TEST_READ", "r-secret-123"),
            ("WP_TEST_WRITE", "w-secret-456"),
        ],
    );
    let read = ("authorization", "Bearer r-secret-123");
    let write = ("authorization", "Bearer w-secret-456");
    let ct = ("content-type", "application/json");
    let body: &[u8] = br#"[{"n": 5}]"#;
    let ok = request(
        "POST",
        &s.url("/v1/pipelines/adder/jobs"),
        &[write, ct],
        Some(body),
    )
    .unwrap();
    assert_eq!(ok.status, 202, "{}", ok.body);
    let id = ok.json()["job"].as_i64().unwrap();
    wait_job(&s, id, &[read]);
    let routes: Vec<(&str, String, bool)> = vec![
        ("POST", "/v1/pipelines/adder/jobs".into(), true),
        ("GET", format!("/v1/jobs/{id}"), false),
        ("GET", "/v1/jobs".into(), false),
        ("GET", "/v1/events".into(), false),
        ("GET", "/v1/dead-letters".into(), false),
        ("POST", format!("/v1/jobs/{id}/replay"), true),
        ("POST", format!("/v1/jobs/{id}/dead-letters/retry"), true),
        ("GET", "/metrics".into(), false),
    ];
    for (method, path, writes) in &routes {
        let url = s.url(path);
        let send =
            |h: &[(&str, &str)]| request(method, &url, &[h, &[ct]].concat(), Some(body)).unwrap();
        let none = send(&[]);
        assert_eq!(
            (none.status, none.error().as_str()),
            (401, "missing `Authorization: Bearer <token>` header"),
            "{method} {path}"
        );
        assert_eq!(
            none.headers.get("www-authenticate").map(String::as_str),
            Some("Bearer")
        );
        let bad = send(&[("authorization", "Bearer guess")]);
        assert_eq!(
            (bad.status, bad.error().as_str()),
            (401, "unknown token"),
            "{method} {path}"
        );
        let (right, wrong, missing) = if *writes {
            (write, read, "reader` lacks the `write")
        } else {
            (read, write, "writer` lacks the `read")
        };
        let denied = send(&[wrong]);
        assert_eq!(
            (denied.status, denied.error()),
            (403, format!("token `{missing}` permission")),
            "{method} {path}"
        );
        let allowed = send(&[right]);
        assert!(
            ![401, 403].contains(&allowed.status),
            "{method} {path}: {}",
            allowed.body
        );
    }
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(get(&s, probe).status, 200, "{probe} needs no token");
    }
}

#[test]
fn a_flood_gets_429_with_retry_after_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // `faulty` spins ~10 ms on n = -5: the workers fall behind at once.
    let stages = stage("faulty", "map", "faulty", "");
    let serve =
        "max_backlog = 3000\nmax_body = \"2MiB\"\nchunk_size = 10\nmax_concurrent_ingest = 2";
    let s = Server::start(&manifest(dir.path(), "flood", &stages, serve), &[]);
    let pad = "x".repeat(1000);
    let batch: String = (0..500)
        .map(|i| format!("{{\"n\":-5,\"i\":{i},\"pad\":\"{pad}\"}}\n"))
        .collect();
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let url = s.url("/v1/pipelines/flood/jobs");
    let deadline = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    let r = request(
                        "POST",
                        &url,
                        &[("content-type", "application/x-ndjson")],
                        Some(batch.as_bytes()),
                    )
                    .expect("the server answers every request");
                    if [429, 503].contains(&r.status) {
                        let after: u64 = r.headers["retry-after"].parse().unwrap();
                        assert!((1..=60).contains(&after));
                    }
                    *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                }
            });
        }
    });
    let statuses = statuses.lock().unwrap().clone();
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let throttled =
        statuses.get(&429).copied().unwrap_or(0) + statuses.get(&503).copied().unwrap_or(0);
    assert!(
        statuses.keys().all(|k| [202, 429, 503].contains(k)),
        "{statuses:?}"
    );
    assert!(accepted >= 1 && throttled >= 10, "{statuses:?}");
    assert!(
        accepted * 500 <= 3000 + 500,
        "the backlog limit holds: {statuses:?}"
    );
    let metrics = get(&s, "/metrics").body;
    let queued: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmpipe_queue_events{pipeline=\"flood\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(queued <= 3000, "{queued} events queued");
    eprintln!(
        "flood: {statuses:?}, {queued} queued, peak RSS {} KiB",
        s.peak_rss_kib()
    );
    // The stated bound: 100 MiB. Bodies in memory are at most
    // max_concurrent_ingest × max_body (4 MiB here; refused ones are read
    // and dropped, not kept); the rest is the runtime, the compiled
    // stages, SQLite's page cache and the queue of chunk keys. About 32 MiB
    // is measured.
    let peak = s.peak_rss_kib();
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
    assert_eq!(s.stop(), Some(0), "SIGTERM with a backlog still exits 0");
}

#[test]
fn sigterm_finishes_in_flight_chunks_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let stages = stage("faulty", "map", "faulty", "");
    let m = manifest(dir.path(), "slow", &stages, "chunk_size = 5");
    let s = Server::start(&m, &[]);
    assert_eq!(get(&s, "/healthz").json()["status"], "ok");
    assert_eq!(get(&s, "/readyz").json()["stages"][0]["name"], "faulty");
    let events: Vec<Value> = (0..40).map(|i| json!({"n": -5, "i": i})).collect();
    let r = post(
        &s,
        "/v1/pipelines/slow/jobs",
        "application/x-ndjson",
        &ndjson(&events),
    );
    assert_eq!(r.status, 202);
    let id = r.json()["job"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(s.stop(), Some(0));
    let s = Server::start(&m, &[]);
    let job = wait_job(&s, id, &[]);
    assert_eq!(job["events_out"], 40);
    let mut is: Vec<u64> = all_events(&s, &format!("job={id}"), &[])
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    is.sort();
    assert_eq!(
        is,
        (0..40).collect::<Vec<_>>(),
        "every event once across the restart"
    );
    let metrics = get(&s, "/metrics").body;
    for needle in [
        "wasmpipe_stage_chunk_seconds_bucket{pipeline=\"slow\",stage=\"faulty\",le=\"+Inf\"}",
        "wasmpipe_queue_events{pipeline=\"slow\"} 0",
        "wasmpipe_ingest_seconds_count",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
    assert!(s.log().contains("resuming"), "{}", s.log());
}

/// One crash scenario: clients post batches while the server is killed
/// with SIGKILL at random moments and restarted. `check` verifies the
/// final store given the acknowledged batches (job id → batch) and every
/// batch attempted.
fn crash_scenario(
    m: &Path,
    tag: u64,
    mut check: impl FnMut(&Server, &BTreeMap<i64, Vec<i64>>, &[Vec<i64>]),
) {
    let acked = Arc::new(Mutex::new(BTreeMap::<i64, Vec<i64>>::new()));
    let attempted = Arc::new(Mutex::new(Vec::<Vec<i64>>::new()));
    let mut seed = tag
        .wrapping_mul(6364136223846793005)
        .wrapping_add(std::process::id() as u64);
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..4 {
        let s = Server::start(m, &[]);
        let kill_after = Duration::from_millis(150 + rand(500));
        let stop = Instant::now() + kill_after;
        std::thread::scope(|scope| {
            for c in 0..3u64 {
                let (acked, attempted, url) = (
                    acked.clone(),
                    attempted.clone(),
                    s.url(&format!(
                        "/v1/pipelines/{}/jobs",
                        m.file_stem().unwrap().to_str().unwrap()
                    )),
                );
                let mut k = round * 1_000_000 + c * 100_000 + tag * 10_000_000;
                scope.spawn(move || {
                    let mut b = 0;
                    loop {
                        let size = 20 + (k % 7) as usize * 40;
                        let batch: Vec<i64> =
                            (0..size as i64).map(|i| (k as i64) * 1000 + i).collect();
                        k += 1;
                        b += 1;
                        attempted.lock().unwrap().push(batch.clone());
                        let body: String = batch
                            .iter()
                            .enumerate()
                            .map(|(i, n)| format!("{{\"n\":{n},\"i\":{i}}}\n"))
                            .collect();
                        match request(
                            "POST",
                            &url,
                            &[("content-type", "application/x-ndjson")],
                            Some(body.as_bytes()),
                        ) {
                            Ok(r) if r.status == 202 => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .insert(r.json()["job"].as_i64().unwrap(), batch);
                            }
                            Ok(r) => panic!("unexpected {}: {}", r.status, r.body),
                            Err(_) => return b, // the server is gone
                        }
                    }
                });
            }
            std::thread::sleep(kill_after);
            let _ = stop;
            s.kill();
        });
    }
    let s = Server::start(m, &[]);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 8,
        "the clients got through: {} batches acknowledged",
        acked.len()
    );
    // Wait for every job (acknowledged or not) to finish.
    let t = Instant::now();
    loop {
        let jobs = all_jobs(&s);
        if jobs.iter().all(|j| j["status"] == "done") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "jobs not done: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let attempted = attempted.lock().unwrap().clone();
    let jobs = all_jobs(&s).len();
    let resumed = s.log().matches("resuming").count();
    eprintln!(
        "{}: {} batches sent, {} acknowledged, {jobs} jobs stored, {resumed} restarts resumed queued chunks",
        m.display(),
        attempted.len(),
        acked.len()
    );
    check(&s, &acked, &attempted);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let stored = manifest(
        dir.path(),
        "stored",
        &stage("double", "map", "double", ""),
        "chunk_size = 16",
    );
    let summed = adder(dir.path(), "chunk_size = 16");
    std::thread::scope(|scope| {
        // Outputs stored: every acknowledged event exactly once; every other
        // job whole.
        scope.spawn(|| {
            crash_scenario(&stored, 1, |s, acked, attempted| {
                let sizes: BTreeSet<usize> = attempted.iter().map(Vec::len).collect();
                let jobs = all_jobs(s);
                for j in &jobs {
                    let id = j["id"].as_i64().unwrap();
                    let events = all_events(s, &format!("job={id}"), &[]);
                    let mut ns: Vec<i64> = events
                        .iter()
                        .map(|e| e["event"]["n"].as_i64().unwrap() / 2)
                        .collect();
                    ns.sort();
                    match acked.get(&id) {
                        Some(batch) => assert_eq!(
                            &ns, batch,
                            "acknowledged job {id}: every event exactly once"
                        ),
                        None => {
                            assert!(
                                sizes.contains(&ns.len()),
                                "unacknowledged job {id} is whole"
                            );
                            assert!(
                                attempted.contains(&ns),
                                "unacknowledged job {id} is one batch, whole"
                            );
                        }
                    }
                }
                for id in acked.keys() {
                    assert!(
                        jobs.iter().any(|j| j["id"] == *id),
                        "acknowledged job {id} exists"
                    );
                }
            })
        });
        // Reduce results: every job's sum is its batch's, doubled.
        scope.spawn(|| {
            crash_scenario(&summed, 2, |s, acked, attempted| {
                let sums: BTreeSet<i64> = attempted
                    .iter()
                    .map(|b| 2 * b.iter().sum::<i64>())
                    .collect();
                for (id, batch) in acked {
                    let j = get(s, &format!("/v1/jobs/{id}")).json();
                    assert_eq!(
                        j["result"],
                        json!(2 * batch.iter().sum::<i64>()),
                        "job {id}: {j}"
                    );
                    assert_eq!(j["events_in"].as_u64(), Some(batch.len() as u64));
                }
                for j in all_jobs(s) {
                    assert!(
                        sums.contains(&j["result"].as_i64().unwrap()),
                        "every job's result is one batch's: {j}"
                    );
                }
            })
        });
    });
}

#[test]
fn retention_deletes_old_events_and_the_input_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let stages = stage("double", "map", "double", "");
    let s = Server::start(
        &manifest(dir.path(), "short", &stages, "retention = \"300ms\""),
        &[],
    );
    let r = post(
        &s,
        "/v1/pipelines/short/jobs",
        "application/json",
        r#"[{"n":1},{"n":2}]"#,
    );
    let id = r.json()["job"].as_i64().unwrap();
    wait_job(&s, id, &[]);
    let t = Instant::now();
    while !all_events(&s, &format!("job={id}"), &[]).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "events outlive their retention"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let r = post(&s, &format!("/v1/jobs/{id}/replay"), "application/json", "");
    assert_eq!(
        (r.status, r.error()),
        (
            410,
            format!("the input of job {id} is past its retention and was deleted")
        )
    );
    let job = get(&s, &format!("/v1/jobs/{id}")).json();
    assert_eq!(job["events_out"], 2, "the job's record stays");
}

#[test]
fn slow_senders_hold_the_ingest_slots_and_others_get_503() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&adder(dir.path(), "max_concurrent_ingest = 1"), &[]);
    let addr = s.base.strip_prefix("http://").unwrap().to_string();
    // A client that sends half its body, then stalls, holding the one slot.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(slow, "POST /v1/pipelines/adder/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: 16\r\n\r\n{{\"n\":1}}\n").unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        "{\"n\":2}\n",
    );
    assert_eq!(
        (r.status, r.error().as_str()),
        (
            503,
            "too many batches are being received at once; retry later"
        )
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "it waited for a slot first"
    );
    // The stalled client finishes; its batch is accepted whole.
    slow.write_all(b"{\"n\":3}\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut slow, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let job = wait_job(&s, 1, &[]);
    assert_eq!(job["result"], 8);
}

/// Sends raw bytes on a new connection and returns what comes back (until
/// the server closes, or `wait` passes).
fn raw_exchange(s: &Server, bytes: &[u8], wait: Duration) -> String {
    use std::io::{Read as _, Write as _};
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(wait)).unwrap();
    conn.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_body_that_stalls_gets_408_and_frees_its_ingest_slot() {
    let dir = tempfile::tempdir().unwrap();
    let m = adder(
        dir.path(),
        "body_timeout = \"300ms\"\nmax_concurrent_ingest = 1",
    );
    let s = Server::start(&m, &[]);
    // Headers and the start of a 1000-byte body, then nothing.
    let stalled = b"POST /v1/pipelines/adder/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: 1000\r\n\r\n{\"n\":1}\n";
    let answer = raw_exchange(&s, stalled, Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("serve.body_timeout"), "{answer}");
    // The one slot is free again.
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        "{\"n\":2}\n",
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn invalid_utf8_and_deep_nesting_are_refused_at_ingest_and_a_bom_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&adder(dir.path(), ""), &[]);
    let url = s.url("/v1/pipelines/adder/jobs");
    let send =
        |ct: &str, body: &[u8]| request("POST", &url, &[("content-type", ct)], Some(body)).unwrap();
    for ct in ["application/x-ndjson", "application/json"] {
        let body: &[u8] = if ct == "application/json" {
            b"[{\"n\":1},{\"n\":2,\"x\":\"\xff\"}]"
        } else {
            b"{\"n\":1}\n{\"n\":2,\"x\":\"\xff\"}\n"
        };
        let r = send(ct, body);
        assert_eq!(r.status, 400, "{ct}: {}", r.body);
    }
    let r = send(
        "application/x-ndjson",
        b"{\"n\":1}\n{\"n\":2,\"x\":\"\xff\"}\n",
    );
    assert!(
        r.error().contains("line 2") && r.error().contains("not valid UTF-8"),
        "{}",
        r.body
    );
    let deep = format!("{{\"n\":1,\"x\":{}{}}}\n", "[".repeat(200), "]".repeat(200));
    let r = send("application/x-ndjson", deep.as_bytes());
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("deeper than 128"), "{}", r.body);
    // A byte-order mark before the first event is not part of it.
    let r = send(
        "application/x-ndjson",
        b"\xEF\xBB\xBF{\"n\":20}\n{\"n\":1}\n",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(
        (job["result"].as_i64(), job["dead_letters"].as_u64()),
        (Some(42), Some(0)),
        "{job}"
    );
}

#[test]
fn refusals_have_json_bodies_cursors_are_checked_and_listings_show_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&adder(dir.path(), ""), &[]);
    let r = request("DELETE", &s.url("/v1/jobs"), &[], None).unwrap();
    assert_eq!(r.status, 405);
    assert!(r.error().contains("method"), "{}", r.body);
    let r = get(&s, "/v1/jobs?cursor=-1");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("non-negative"), "{}", r.body);
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        "{\"n\":1}\n",
    );
    let id = r.json()["job"].as_i64().unwrap();
    let job = wait_job(&s, id, &[]);
    let listed = get(&s, "/v1/jobs").json();
    let listed = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(listed["stage_versions"], job["stage_versions"], "{listed}");
    assert_eq!(job["stage_versions"].as_array().unwrap().len(), 1, "{job}");
}

#[test]
fn a_database_of_the_previous_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let m = adder(dir.path(), "");
    let s = Server::start(&m, &[]);
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        "{\"n\":1}\n{\"n\":2}\n",
    );
    let id = r.json()["job"].as_i64().unwrap();
    assert_eq!(wait_job(&s, id, &[])["result"], 6);
    assert_eq!(s.stop(), Some(0));
    // Version 1 had no `jobs.pinned`, nor (before version 3) event times
    // and the search index.
    let path = dir.path().join("adder.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "ALTER TABLE jobs DROP COLUMN pinned; DROP INDEX events_time; ALTER TABLE events DROP COLUMN time;
         DROP TABLE events_text; DROP TABLE dead_text; DROP TABLE search_state; PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(db);
    let s = Server::start(&m, &[]);
    let job = get(&s, &format!("/v1/jobs/{id}")).json();
    assert_eq!(
        (&job["result"], &job["pinned"]),
        (&json!(6), &Value::Null),
        "{job}"
    );
    let r = post(&s, &format!("/v1/jobs/{id}/replay"), "application/json", "");
    assert_eq!(r.status, 202, "{}", r.body);
    let again = wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(again["result"], 6, "{again}");
    assert_eq!(s.stop(), Some(0));
    let db = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 3);
}

/// A tmpfs mounted over `dir` for a test, unmounted when dropped. Mounting
/// needs root, as CI runs.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs (this test fills a disk, and needs root, as CI runs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_refuses_batches_with_503_loses_nothing_and_takes_them_again_once_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let fs = Tmpfs::mount(&disk, "24m");
    // Room to give back later.
    std::fs::write(disk.join("filler"), vec![7u8; 6 << 20]).unwrap();
    let stages = stage(
        "keep",
        "filter",
        "errors_only",
        "params = { min_level = \"debug\" }",
    );
    let text = format!(
        "[pipeline]\nname = \"full\"\n\n{stages}\n[runtime]\nworkers = 2\n\n[serve]\ndatabase = {}\nmax_events = 1000\n",
        toml_path(&fs.0.join("full.db"))
    );
    let m = write(dir.path(), "full.toml", &text);
    let s = Server::start(&m, &[]);
    let batch = |from: usize, n: usize| -> String {
        let events: Vec<Value> = (from..from + n)
            .map(|i| json!({ "level": "info", "n": i, "msg": format!("event {i} {}", "x".repeat(200)) }))
            .collect();
        ndjson(&events)
    };
    let mut accepted = Vec::new();
    let mut sent = 0;
    let refusal = loop {
        assert!(accepted.len() < 2000, "24 MiB never filled up");
        let r = post(
            &s,
            "/v1/pipelines/full/jobs",
            "application/x-ndjson",
            &batch(sent, 500),
        );
        sent += 500;
        match r.status {
            202 => accepted.push(r.json()["job"].as_i64().unwrap()),
            _ => break r,
        }
    };
    assert_eq!(refusal.status, 503, "{}", refusal.body);
    assert!(
        refusal
            .error()
            .contains("the disk holding the journal is full"),
        "{}",
        refusal.body
    );
    assert!(
        refusal.headers.contains_key("retry-after"),
        "{:?}",
        refusal.headers
    );
    assert!(!accepted.is_empty());
    assert_eq!(get(&s, "/healthz").status, 200);
    // Space is freed: batches are taken again, by themselves.
    std::fs::remove_file(disk.join("filler")).unwrap();
    let t = Instant::now();
    loop {
        let r = post(
            &s,
            "/v1/pipelines/full/jobs",
            "application/x-ndjson",
            &batch(sent, 10),
        );
        if r.status == 202 {
            accepted.push(r.json()["job"].as_i64().unwrap());
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "ingest never resumed: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Everything accepted is processed and stored, once.
    let mut want = 0;
    for id in &accepted {
        let j = wait_job(&s, *id, &[]);
        assert_eq!(j["events_out"], j["events_in"], "{j}");
        want += j["events_in"].as_u64().unwrap();
    }
    let total = get(&s, "/v1/events/histogram?buckets=1").json()["total"]
        .as_u64()
        .unwrap();
    assert_eq!(total, want);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_damaged_database_is_refused_at_start_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let m = adder(dir.path(), "");
    let s = Server::start(&m, &[]);
    let body: String = (0..3000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/x-ndjson",
        &body,
    );
    wait_job(&s, r.json()["job"].as_i64().unwrap(), &[]);
    assert_eq!(s.stop(), Some(0));
    let db = dir.path().join("adder.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    }
    let _ = std::fs::remove_file(dir.path().join("adder.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("adder.db-shm"));
    let good = std::fs::read(&db).unwrap();
    assert!(good.len() > 8 * 4096, "{} bytes", good.len());
    let mut overwritten = good.clone();
    overwritten[3 * 4096..4 * 4096].fill(0xff);
    let damaged: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("a page overwritten", overwritten),
        ("not a database", b"hello, I am not SQLite".repeat(500)),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&db, &bytes).unwrap();
        let r = crate::util::run_bounded(
            wasmpipe()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .arg(&m),
            Duration::from_secs(20),
        );
        assert_eq!(r.code, 1, "{what}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("is not a sound wasmpipe database; restore it")
                && r.stderr.contains("move it aside"),
            "{what}: {}",
            r.stderr
        );
        assert!(!r.stdout.contains("listening"), "{what}: served anyway");
    }
    // The good copy put back serves its events.
    std::fs::write(&db, &good).unwrap();
    let s = Server::start(&m, &[]);
    assert_eq!(get(&s, "/v1/events/histogram").json()["total"], 3000);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn slow_headers_lose_their_connection_and_past_the_bound_connections_wait_not_reset() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let m = adder(dir.path(), "header_timeout = \"1s\"\nmax_connections = 4\n");
    let s = Server::start(&m, &[]);
    let addr = s.url("").trim_start_matches("http://").to_string();
    // A slowloris: a header line, then a byte every 200 ms, never done.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let closed = loop {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b"X").is_err() {
            break t.elapsed();
        }
        slow.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut b = [0u8; 256];
        match slow.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(_) => break t.elapsed(),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break t.elapsed(),
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a slow client kept its connection for 10 s"
        );
    };
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    // The bound: 4 silent connections hold every slot; a fifth client
    // waits (it is not reset), and is answered once their headers time out.
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let r = get(&s, "/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "answered past the bound at once ({:?})",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(idle);
    // Ordinary work is unaffected.
    let r = post(
        &s,
        "/v1/pipelines/adder/jobs",
        "application/json",
        "[{\"n\":1},{\"n\":2}]",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        wait_job(&s, r.json()["job"].as_i64().unwrap(), &[])["result"],
        6
    );
    assert_eq!(s.stop(), Some(0));
}
