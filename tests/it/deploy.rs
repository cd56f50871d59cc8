//! Safe deploys on a real `wasmpipe serve`: a candidate version of a stage
//! as a shadow (compared on every chunk, stored nowhere) and as a canary
//! (a share of chunks, each chunk by one version), its error budget
//! rolling a bad canary back, promote and abort, a live version over a
//! budget that pauses intake, and what a SIGKILL leaves of each.
//!
//! The expected figures are computed here from the two plugins'
//! definitions: `faulty` passes `{"n"}` through and dead-letters
//! `n % 1000 == 13`; `double` doubles `n` and fails nothing numeric.

use crate::util::http::{Resp, Server, all_events, request, wait_job};
use crate::util::{fixture, plugin, short_version, toml_path, wasmpipe, write};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const READ: &str = "Bearer deploy-read";
const WRITE: &str = "Bearer deploy-write";

/// A pipeline of one map `s` running `live`, chunks of 16 events, lineage
/// on, and `budget` (a TOML inline table) if given.
fn manifest(dir: &Path, live: &Path, budget: Option<&str>) -> PathBuf {
    let budget = budget
        .map(|b| format!("budget = {b}\n"))
        .unwrap_or_default();
    write(
        dir,
        "deployed.toml",
        &format!(
            "[pipeline]\nname = \"deployed\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\n{budget}\n\
             [runtime]\nlineage = true\nworkers = 1\n\n\
             [serve]\ndatabase = \"deployed.db\"\nchunk_size = 16\n\n\
             [[serve.token]]\nname = \"reader\"\ntoken = \"deploy-read\"\npermissions = [\"read\"]\n\n\
             [[serve.token]]\nname = \"operator\"\ntoken = \"deploy-write\"\npermissions = [\"read\", \"write\"]\n",
            toml_path(live)
        ),
    )
}

fn api(s: &Server, method: &str, path: &str, auth: &str, body: Option<&[u8]>) -> Resp {
    request(
        method,
        &s.url(path),
        &[
            ("authorization", auth),
            ("content-type", "application/wasm"),
        ],
        body,
    )
    .unwrap()
}

/// Deploys the module at `module` as `query` (`mode=shadow`, ...).
fn deploy(s: &Server, query: &str, module: &Path) -> Resp {
    let bytes = std::fs::read(module).unwrap();
    api(
        s,
        "POST",
        &format!("/v1/deployments?stage=s&{query}"),
        WRITE,
        Some(&bytes),
    )
}

fn deployment(s: &Server, id: i64) -> Value {
    let r = api(s, "GET", &format!("/v1/deployments/{id}"), READ, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn post_job(s: &Server, events: &[Value]) -> i64 {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = request(
        "POST",
        &s.url("/v1/pipelines/deployed/jobs"),
        &[
            ("authorization", WRITE),
            ("content-type", "application/x-ndjson"),
        ],
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()["job"].as_i64().unwrap()
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, s: &Server, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `faulty` and `double` make of event `n` (`n >= 8`: faulty has
/// hostile behaviours for a few small numbers): outputs, or dead.
fn faulty(n: i64) -> Option<i64> {
    (n % 1000 != 13).then_some(n)
}

fn double(n: i64) -> Option<i64> {
    Some(2 * n)
}

#[test]
fn a_shadow_counts_exactly_the_events_that_differ_and_stores_nothing_of_the_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), &plugin("faulty"), None), &[]);
    let r = deploy(&s, "mode=shadow", &plugin("double"));
    assert_eq!(r.status, 201, "{}", r.body);
    let d = r.json();
    let id = d["id"].as_i64().unwrap();
    assert_eq!(d["state"], "active");
    assert_eq!(d["created_by"], "operator");
    assert_eq!(d["short_version"], short_version(&plugin("double")));
    assert_eq!(d["short_base"], short_version(&plugin("faulty")));

    // Three jobs of 4 chunks each: the shadow's queue holds 4, and each
    // job waits for the shadow to catch up, so no chunk is skipped.
    let mut all = Vec::new();
    let (mut changed, mut fixed, mut compared) = (0u64, 0u64, 0u64);
    for j in 0..3i64 {
        let ns: Vec<i64> = (0..64).map(|i| j * 1000 + i + 8).collect();
        let events: Vec<Value> = ns.iter().map(|n| json!({ "n": n })).collect();
        let job = post_job(&s, &events);
        wait_job(&s, job, &[("authorization", READ)]);
        for &n in &ns {
            match (faulty(n), double(n)) {
                (a, b) if a == b => {}
                (None, Some(_)) => {
                    changed += 1;
                    fixed += 1;
                }
                _ => changed += 1,
            }
        }
        compared += ns.len() as u64;
        all.push((job, ns));
        let want = compared;
        eventually(20, "the shadow to compare the job", &s, || {
            let t = &deployment(&s, id)["tally"]["shadow"];
            (t["events"].as_u64() == Some(want)).then_some(())
        });
    }
    let d = deployment(&s, id);
    let sh = &d["tally"]["shadow"];
    assert_eq!(sh["skipped"], 0, "{d}");
    assert_eq!(sh["chunks"], 12, "{d}");
    assert_eq!(sh["changed"].as_u64(), Some(changed), "{d}");
    assert_eq!(sh["fixed_dead_letters"].as_u64(), Some(fixed), "{d}");
    assert_eq!(sh["new_dead_letters"], 0, "{d}");
    // The examples are the first changed events, each as the definitions say.
    let examples = sh["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 20, "{d}");
    for e in examples {
        let job = e["job"].as_i64().unwrap();
        let ns = &all.iter().find(|(j, _)| *j == job).unwrap().1;
        let n = ns[e["index"].as_u64().unwrap() as usize];
        match faulty(n) {
            Some(v) => assert_eq!(e["before"], json!([{ "n": v }]), "{e}"),
            None => assert_eq!(e["change"], "fixed", "{e}"),
        }
        assert_eq!(e["after"], json!([{ "n": 2 * n }]), "{e}");
    }
    // The live side counted every chunk, the candidate the shadowed ones.
    assert_eq!(d["tally"]["live"]["chunks"], 12, "{d}");
    assert_eq!(d["tally"]["candidate"]["chunks"], 12, "{d}");
    assert_eq!(
        d["tally"]["live"]["dead_letters"].as_u64(),
        Some(fixed),
        "{d}"
    );
    // Nothing of the candidate is stored: every stored event is faulty's,
    // with faulty's version in its lineage.
    let stored = all_events(&s, "pipeline=deployed", &[("authorization", READ)]);
    let live_outputs: usize = all
        .iter()
        .map(|(_, ns)| ns.iter().filter(|&&n| faulty(n).is_some()).count())
        .sum();
    assert_eq!(stored.len(), live_outputs);
    let faulty_v = short_version(&plugin("faulty"));
    for e in &stored {
        let (job, idx) = (e["job"].as_i64().unwrap(), e["index"].as_u64().unwrap());
        let n = all.iter().find(|(j, _)| *j == job).unwrap().1[idx as usize];
        assert_eq!(e["event"]["n"], n, "{e}");
        assert_eq!(e["event"]["_versions"]["s"], faulty_v.as_str(), "{e}");
    }

    // Abort: recorded with who, and every chunk runs on the live version
    // with nothing more shadowed.
    let r = api(
        &s,
        "POST",
        &format!("/v1/deployments/{id}/abort"),
        WRITE,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "aborted");
    assert_eq!(r.json()["ended_by"], "operator");
    let r = api(
        &s,
        "POST",
        &format!("/v1/deployments/{id}/promote"),
        WRITE,
        None,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("aborted already"), "{}", r.body);
    let job = post_job(&s, &[json!({ "n": 5 })]);
    wait_job(&s, job, &[("authorization", READ)]);
    assert_eq!(deployment(&s, id)["tally"]["shadow"]["chunks"], 12);
}

#[test]
fn a_slow_shadow_skips_chunks_and_never_holds_up_the_live_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), &plugin("faulty"), None), &[]);
    // `slow` spins half a second per call: shadowing 100 chunks in line
    // would take 50 s.
    let r = deploy(&s, "mode=shadow", &fixture("slow.wat"));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let events: Vec<Value> = (0..1600).map(|n| json!({ "n": n + 8 })).collect();
    let t = Instant::now();
    let job = post_job(&s, &events);
    let done = wait_job(&s, job, &[("authorization", READ)]);
    let took = t.elapsed();
    assert_eq!(done["events_out"], 1598, "{done}");
    assert!(
        took < Duration::from_secs(10),
        "{took:?}: the live path waited for the shadow"
    );
    // The shadow's queue holds 64 chunks: most of the rest were skipped
    // the moment they were committed.
    let d = deployment(&s, id);
    let sh = &d["tally"]["shadow"];
    assert!(sh["skipped"].as_u64().unwrap() >= 30, "{d}");
    assert!(sh["chunks"].as_u64().unwrap() < 10, "{d}");
    // Aborted, the shadow stops after the chunk in hand.
    let r = api(
        &s,
        "POST",
        &format!("/v1/deployments/{id}/abort"),
        WRITE,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Stored events by (job, index), with the version that made each.
fn stored_by_version(s: &Server) -> BTreeMap<(i64, u64), (i64, String)> {
    let mut out = BTreeMap::new();
    for e in all_events(s, "pipeline=deployed", &[("authorization", READ)]) {
        let key = (e["job"].as_i64().unwrap(), e["index"].as_u64().unwrap());
        let v = (
            e["event"]["n"].as_i64().unwrap(),
            e["event"]["_versions"]["s"].as_str().unwrap().to_string(),
        );
        assert!(out.insert(key, v).is_none(), "event {key:?} stored twice");
    }
    out
}

/// Dead letters by (job, index).
fn dead_letters(s: &Server) -> BTreeSet<(i64, u64)> {
    let r = api(s, "GET", "/v1/dead-letters?limit=1000", READ, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out = BTreeSet::new();
    for d in r.json()["dead_letters"].as_array().unwrap() {
        let key = (d["job"].as_i64().unwrap(), d["index"].as_u64().unwrap());
        assert!(out.insert(key), "dead letter {key:?} twice");
    }
    out
}

#[test]
fn a_canary_serves_its_share_by_whole_chunks_and_promote_makes_it_live_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &plugin("faulty"), None);
    let s = Server::start(&m, &[]);
    let r = deploy(&s, "mode=canary&percent=30", &plugin("double"));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    // A second candidate waits for this one.
    let r = deploy(&s, "mode=shadow", &plugin("double"));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.error().contains("promote or abort it first"),
        "{}",
        r.body
    );

    let (fv, dv) = (
        short_version(&plugin("faulty")),
        short_version(&plugin("double")),
    );
    let mut posted: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for j in 0..5i64 {
        let ns: Vec<i64> = (0..160).map(|i| j * 10_000 + i).collect();
        let events: Vec<Value> = ns.iter().map(|n| json!({ "n": n })).collect();
        let job = post_job(&s, &events);
        posted.insert(job, ns);
    }
    // Promote while chunks are still being processed.
    let r = api(
        &s,
        "POST",
        &format!("/v1/deployments/{id}/promote"),
        WRITE,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "promoted");
    let after: Vec<i64> = (0..48).map(|i| 900_000 + i).collect();
    let job = post_job(
        &s,
        &after.iter().map(|n| json!({ "n": n })).collect::<Vec<_>>(),
    );
    posted.insert(job, after);
    for &job in posted.keys() {
        wait_job(&s, job, &[("authorization", READ)]);
    }
    let stored = stored_by_version(&s);
    let dead = dead_letters(&s);
    // Every event once: stored, or (faulty's 13s) a dead letter.
    let mut by_chunk: BTreeMap<(i64, u64), BTreeSet<String>> = BTreeMap::new();
    for (&job, ns) in &posted {
        for (i, &n) in ns.iter().enumerate() {
            let key = (job, i as u64);
            match stored.get(&key) {
                Some((v, version)) if *version == fv => assert_eq!(*v, n, "{key:?}"),
                Some((v, version)) if *version == dv => assert_eq!(*v, 2 * n, "{key:?}"),
                Some(other) => panic!("{key:?}: {other:?}"),
                None => {
                    assert!(dead.contains(&key), "event {key:?} lost");
                    assert_eq!(n % 1000, 13);
                    by_chunk
                        .entry((job, i as u64 / 16))
                        .or_default()
                        .insert(fv.clone());
                    continue;
                }
            }
            by_chunk
                .entry((job, i as u64 / 16))
                .or_default()
                .insert(stored[&key].1.clone());
        }
    }
    // Each chunk by exactly one version; the canary took a share of them.
    assert!(by_chunk.values().all(|v| v.len() == 1), "{by_chunk:?}");
    let on_candidate = by_chunk.values().filter(|v| v.contains(&dv)).count();
    assert!(
        on_candidate > 0 && on_candidate < by_chunk.len(),
        "{on_candidate} of {}",
        by_chunk.len()
    );
    // After the promote, every chunk is the candidate's.
    let last = *posted.keys().last().unwrap();
    assert!(
        by_chunk
            .iter()
            .filter(|((j, _), _)| *j == last)
            .all(|(_, v)| v.contains(&dv)),
        "{by_chunk:?}"
    );
    let list = api(&s, "GET", "/v1/deployments", READ, None).json();
    assert_eq!(list["live"]["s"], dv.as_str(), "{list}");
    assert_eq!(list["deployments"][0]["ended_by"], "operator", "{list}");

    // A SIGKILL and a restart keep the promoted version live: the manifest
    // still names faulty's file, and the record says it was replaced.
    s.kill();
    let s = Server::start(&m, &[]);
    let list = api(&s, "GET", "/v1/deployments", READ, None).json();
    assert_eq!(list["live"]["s"], dv.as_str(), "{list}");
    let job = post_job(&s, &[json!({ "n": 21 })]);
    wait_job(&s, job, &[("authorization", READ)]);
    let e = &all_events(&s, &format!("job={job}"), &[("authorization", READ)])[0];
    assert_eq!(e["event"]["n"], 42, "{e}");
    // A plugin changed on disk afterwards is newer, and wins.
    s.stop();
    let m2 = manifest(dir.path(), &plugin("faulty"), None);
    std::fs::write(
        dir.path().join("faulty-copy.wasm"),
        std::fs::read(plugin("version_tag")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&m2).unwrap().replace(
        &toml_path(&plugin("faulty")),
        &toml_path(&dir.path().join("faulty-copy.wasm")),
    );
    std::fs::write(&m2, text).unwrap();
    let s = Server::start(&m2, &[]);
    let list = api(&s, "GET", "/v1/deployments", READ, None).json();
    assert_eq!(
        list["live"]["s"],
        short_version(&plugin("version_tag")).as_str(),
        "{list}"
    );
}

#[test]
fn a_canary_over_its_budget_is_rolled_back_with_nothing_lost_or_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let budget = "{ max_dead_letter_rate = 0.05, chunks = 4, min_events = 32 }";
    let s = Server::start(&manifest(dir.path(), &plugin("double"), Some(budget)), &[]);
    // faulty fails every 13 of each thousand: a quarter of these events.
    let r = deploy(&s, "mode=canary&percent=50", &plugin("faulty"));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let mut posted: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for j in 0..6i64 {
        let ns: Vec<i64> = (0..160)
            .map(|i| j * 100_000 + (i / 4) * 1000 + if i % 4 == 0 { 13 } else { i % 4 })
            .collect();
        let events: Vec<Value> = ns.iter().map(|n| json!({ "n": n })).collect();
        posted.insert(post_job(&s, &events), ns);
    }
    for &job in posted.keys() {
        wait_job(&s, job, &[("authorization", READ)]);
    }
    let d = eventually(10, "the rollback to be recorded", &s, || {
        let d = deployment(&s, id);
        (d["state"] == "rolled_back").then_some(d)
    });
    assert_eq!(d["ended_by"], "error budget", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("over its budget of 5.0 %"), "{reason}");
    assert!(
        reason.contains(&short_version(&plugin("faulty"))),
        "{reason}"
    );
    // The candidate took at most the chunks of its budget's window before
    // it was judged, and then none.
    let cand = d["tally"]["candidate"]["chunks"].as_u64().unwrap();
    assert!((1..=4).contains(&cand), "{d}");
    let stored = stored_by_version(&s);
    let dead = dead_letters(&s);
    let dv = short_version(&plugin("double"));
    let mut candidate_dead = 0;
    for (&job, ns) in &posted {
        for (i, &n) in ns.iter().enumerate() {
            let key = (job, i as u64);
            match stored.get(&key) {
                Some((v, version)) if *version == dv => assert_eq!(*v, 2 * n),
                Some((v, _)) => assert_eq!(*v, n),
                None => {
                    assert!(dead.contains(&key), "event {key:?} lost");
                    candidate_dead += 1;
                }
            }
        }
    }
    assert!(
        candidate_dead > 0 && candidate_dead <= 4 * 16 / 4,
        "{candidate_dead}"
    );
    // The metrics have each version's figures.
    let m = api(&s, "GET", "/metrics", READ, None).body;
    let fv = short_version(&plugin("faulty"));
    assert!(
        m.contains(&format!(
            "wasmpipe_version_dead_letters_total{{pipeline=\"deployed\",stage=\"s\",version=\"{fv}\"}} {candidate_dead}"
        )),
        "{m}"
    );
    assert!(
        m.contains("wasmpipe_stage_over_budget{pipeline=\"deployed\",stage=\"s\"} 0"),
        "{m}"
    );
}

#[test]
fn a_live_version_over_a_budget_that_pauses_intake_answers_503_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let budget = "{ max_dead_letter_rate = 0.1, chunks = 2, min_events = 16, pause_intake = true }";
    let s = Server::start(&manifest(dir.path(), &plugin("faulty"), Some(budget)), &[]);
    let good: Vec<Value> = (0..32).map(|n| json!({ "n": n })).collect();
    let job = post_job(&s, &good);
    wait_job(&s, job, &[("authorization", READ)]);
    let bad: Vec<Value> = (0..32).map(|n| json!({ "n": n * 1000 + 13 })).collect();
    let job = post_job(&s, &bad);
    wait_job(&s, job, &[("authorization", READ)]);
    let r = request(
        "POST",
        &s.url("/v1/pipelines/deployed/jobs"),
        &[
            ("authorization", WRITE),
            ("content-type", "application/x-ndjson"),
        ],
        Some(b"{\"n\":1}\n"),
    )
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error().contains("intake is paused"), "{}", r.body);
    assert!(
        r.error().contains("over its budget of 10.0 %"),
        "{}",
        r.body
    );
    let list = api(&s, "GET", "/v1/deployments", READ, None).json();
    assert_eq!(list["over_budget"][0]["stage"], "s", "{list}");
    let m = api(&s, "GET", "/metrics", READ, None).body;
    assert!(
        m.contains("wasmpipe_stage_over_budget{pipeline=\"deployed\",stage=\"s\"} 1"),
        "{m}"
    );
    // A fixed version promoted is live, and intake resumes.
    let r = deploy(&s, "mode=canary&percent=100", &plugin("double"));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let r = api(
        &s,
        "POST",
        &format!("/v1/deployments/{id}/promote"),
        WRITE,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let job = post_job(&s, &good);
    wait_job(&s, job, &[("authorization", READ)]);
}

#[test]
fn an_active_candidate_survives_a_sigkill_or_is_dropped_with_a_record_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &plugin("faulty"), None);
    let s = Server::start(&m, &[]);
    let r = deploy(&s, "mode=shadow", &plugin("double"));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    s.kill();
    let s = Server::start(&m, &[]);
    assert_eq!(deployment(&s, id)["state"], "active");
    let job = post_job(&s, &(0..16).map(|n| json!({ "n": n })).collect::<Vec<_>>());
    wait_job(&s, job, &[("authorization", READ)]);
    eventually(10, "the restored shadow to compare", &s, || {
        (deployment(&s, id)["tally"]["shadow"]["changed"].as_u64() == Some(15)).then_some(())
    });
    s.kill();
    // The live version changed while it was down: the candidate was
    // deployed beside another one, and is dropped, with the reason.
    let text = std::fs::read_to_string(&m).unwrap().replace(
        &toml_path(&plugin("faulty")),
        &toml_path(&plugin("version_tag")),
    );
    std::fs::write(&m, text).unwrap();
    let s = Server::start(&m, &[]);
    let d = deployment(&s, id);
    assert_eq!(d["state"], "dropped", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("deploy the candidate again"),
        "{d}"
    );
}

#[test]
fn deploy_requests_that_cannot_be_served_are_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), &plugin("faulty"), None), &[]);
    let module = std::fs::read(plugin("double")).unwrap();
    let post = |q: &str, auth: &str, body: &[u8]| {
        api(
            &s,
            "POST",
            &format!("/v1/deployments?{q}"),
            auth,
            Some(body),
        )
    };
    let r = post("stage=s&mode=shadow", READ, &module);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post("stage=nope&mode=shadow", WRITE, &module);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("its stages are s"), "{}", r.body);
    let r = post("stage=s&mode=canary", WRITE, &module);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("needs `percent`"), "{}", r.body);
    let r = post("stage=s&mode=canary&percent=0", WRITE, &module);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post("stage=s&mode=shadow", WRITE, b"");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post("stage=s&mode=shadow", WRITE, b"\0asm garbage");
    assert_eq!(r.status, 422, "{}", r.body);
    // A reduce cannot stand in for a map.
    let r = post(
        "stage=s&mode=shadow",
        WRITE,
        &std::fs::read(plugin("sum")).unwrap(),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let r = post(
        "stage=s&mode=shadow",
        WRITE,
        &std::fs::read(plugin("faulty")).unwrap(),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("the live one"), "{}", r.body);
    let r = api(&s, "POST", "/v1/deployments/77/abort", WRITE, None);
    assert_eq!(r.status, 404, "{}", r.body);
    let list = api(&s, "GET", "/v1/deployments", READ, None).json();
    assert_eq!(list["deployments"], json!([]), "{list}");
}

#[test]
fn the_cli_deploys_shows_and_aborts_a_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), &plugin("faulty"), None), &[]);
    let cli = |args: &[&str]| {
        let out = wasmpipe()
            .args(["deploy", "--server", &s.url(""), "--token", "deploy-write"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let double = plugin("double");
    let (code, out, err) = cli(&["--stage", "s", double.to_str().unwrap(), "--shadow"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("deployment 1 (shadow "), "{out}");
    assert!(out.contains(": active"), "{out}");
    let job = post_job(&s, &(0..16).map(|n| json!({ "n": n })).collect::<Vec<_>>());
    wait_job(&s, job, &[("authorization", READ)]);
    let out = eventually(10, "the status to show the shadow", &s, || {
        let (_, out, _) = cli(&["--status"]);
        out.contains("15 of 16 events changed").then_some(out)
    });
    assert!(out.contains("job 1 #1 different"), "{out}");
    let (code, out, err) = cli(&["--abort", "1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(": aborted by operator"), "{out}");
    let (code, _, err) = cli(&["--abort", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("aborted already"), "{err}");
}

/// The stored bodies of job `job`, lineage left out, sorted.
fn bodies(s: &Server, job: i64) -> Vec<String> {
    let mut v: Vec<String> = all_events(s, &format!("job={job}"), &[("authorization", READ)])
        .into_iter()
        .map(|mut e| {
            e["event"].as_object_mut().unwrap().remove("_versions");
            e["event"].to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_replayed_time_range_equals_the_union_of_its_jobs_replays_and_its_diff_their_sum() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&manifest(dir.path(), &plugin("faulty"), None), &[]);
    let mut jobs = Vec::new();
    for j in 0..3i64 {
        let events: Vec<Value> = (0..40).map(|i| json!({ "n": j * 1000 + i + 8 })).collect();
        let id = post_job(&s, &events);
        wait_job(&s, id, &[("authorization", READ)]);
        jobs.push(id);
        std::thread::sleep(Duration::from_millis(20));
    }
    let at = |id: i64| {
        api(&s, "GET", &format!("/v1/jobs/{id}"), READ, None).json()["timings"]["received_at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // From the first job's arrival until (not including) the third's.
    let range = format!("from={}&to={}", at(jobs[0]), at(jobs[2]));
    let r = api(&s, "POST", &format!("/v1/replay?{range}"), WRITE, None);
    assert_eq!(r.status, 202, "{}", r.body);
    let v = r.json();
    assert_eq!(v["jobs"], json!([jobs[0], jobs[1]]), "{v}");
    assert_eq!(v["accepted"], 80, "{v}");
    let replayed = v["job"].as_i64().unwrap();
    let done = wait_job(&s, replayed, &[("authorization", READ)]);
    // The union of the two jobs' own replays.
    let mut union = Vec::new();
    let mut dead = 0;
    for &job in &jobs[..2] {
        let r = api(&s, "POST", &format!("/v1/jobs/{job}/replay"), WRITE, None);
        assert_eq!(r.status, 202, "{}", r.body);
        let one = r.json()["job"].as_i64().unwrap();
        dead += wait_job(&s, one, &[("authorization", READ)])["dead_letters"]
            .as_u64()
            .unwrap();
        union.extend(bodies(&s, one));
    }
    union.sort();
    assert_eq!(bodies(&s, replayed), union);
    assert_eq!(done["dead_letters"].as_u64(), Some(dead), "{done}");
    assert_eq!(dead, 2, "n = 13 and 1013");

    // The diff of a candidate over the range: the per-job diffs' sum, and
    // nothing stored.
    let count = api(&s, "GET", "/v1/jobs", READ, None).json()["jobs"]
        .as_array()
        .unwrap()
        .len();
    let module = std::fs::read(plugin("double")).unwrap();
    let r = api(
        &s,
        "POST",
        &format!("/v1/diff?{range}&stage=s&limit=1000"),
        WRITE,
        Some(&module),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    let mut changed = 0;
    for &job in &jobs[..2] {
        let r = api(
            &s,
            "POST",
            &format!("/v1/jobs/{job}/diff?stage=s"),
            WRITE,
            Some(&module),
        );
        changed += r.json()["changed"].as_u64().unwrap();
    }
    assert_eq!(d["changed"].as_u64(), Some(changed), "{d}");
    assert_eq!(d["changed"], 80, "every event doubles or is fixed: {d}");
    assert_eq!(d["fixed_dead_letters"], 2, "{d}");
    assert_eq!(d["jobs"], json!([jobs[0], jobs[1]]), "{d}");
    assert!(d["summary"].as_str().unwrap().ends_with("in 2 jobs"), "{d}");
    let c = d["changes"].as_array().unwrap();
    assert_eq!(
        (c[0]["job"].as_i64(), c[79]["job"].as_i64()),
        (Some(jobs[0]), Some(jobs[1]))
    );
    let after = api(&s, "GET", "/v1/jobs", READ, None).json()["jobs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, count, "a diff stores no job");
    // On a named version this process has loaded (a candidate it ran).
    let r = deploy(&s, "mode=shadow", &plugin("double"));
    let did = r.json()["id"].as_i64().unwrap();
    api(
        &s,
        "POST",
        &format!("/v1/deployments/{did}/abort"),
        WRITE,
        None,
    );
    let dv = short_version(&plugin("double"));
    let versions = format!("{{\"versions\": {{\"s\": \"{dv}\"}}}}");
    let r = api(
        &s,
        "POST",
        &format!("/v1/replay?{range}"),
        WRITE,
        Some(versions.as_bytes()),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let pinned = r.json()["job"].as_i64().unwrap();
    let done = wait_job(&s, pinned, &[("authorization", READ)]);
    assert_eq!(done["dead_letters"], 0, "{done}");
    let mut doubled: Vec<i64> = bodies(&s, pinned)
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    doubled.sort_unstable();
    let mut want: Vec<i64> = (0..2i64)
        .flat_map(|j| (0..40).map(move |i| 2 * (j * 1000 + i + 8)))
        .collect();
    want.sort_unstable();
    assert_eq!(doubled, want);
    // Ranges that name nothing.
    let r = api(
        &s,
        "POST",
        &format!("/v1/replay?from={}&to={}", at(jobs[2]), at(jobs[0])),
        WRITE,
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = api(&s, "POST", "/v1/replay?from=1000&to=2000", WRITE, None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = api(&s, "POST", "/v1/replay?from=1000", WRITE, None);
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn run_watch_runs_the_candidate_its_manifest_names_as_a_shadow_then_a_canary() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |candidate: &str| {
        write(
            dir.path(),
            "watched.toml",
            &format!(
                "[pipeline]\nname = \"watched\"\n\n[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\n{candidate}\n\
                 [runtime]\nchunk_size = 8\nworkers = 1\n",
                toml_path(&plugin("faulty"))
            ),
        )
    };
    let double = toml_path(&plugin("double"));
    let m = manifest(&format!(
        "candidate = {{ plugin = {double}, mode = \"shadow\" }}\n"
    ));
    let mut w = crate::reload::Watched::start(&m, dir.path(), &[]);
    let dv = short_version(&plugin("double"));
    w.wait_log(&format!("candidate {dv} of stage `s` runs as a shadow"), 1);
    let events =
        |ns: std::ops::Range<i64>| -> String { ns.map(|n| format!("{{\"n\":{n}}}\n")).collect() };
    // 64 events, one of them (13) a dead letter for faulty only.
    w.feed(&events(8..72));
    let outs = w.wait_outputs(63);
    assert!(
        outs.iter().all(|o| o["n"].as_i64().unwrap() < 72),
        "faulty's outputs only"
    );
    // As a canary on every chunk: new chunks are the candidate's.
    manifest(&format!(
        "candidate = {{ plugin = {double}, mode = \"canary\", percent = 100 }}\n"
    ));
    w.wait_log(
        "stopped: 64 of 64 events changed in 8 chunks (0 new dead letters, 1 fixed, 0 chunks skipped)",
        1,
    );
    w.wait_log("runs as a canary on 100 % of chunks", 1);
    w.feed(&events(100..108));
    let outs = w.wait_outputs(71);
    let ns: Vec<i64> = outs[63..]
        .iter()
        .map(|o| o["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (100..108).map(|n| 2 * n).collect::<Vec<_>>());
    // Named no more: stopped, and faulty serves every chunk again.
    manifest("");
    w.wait_log("stopped: dead letters: live", 1);
    w.feed(&events(200..208));
    let outs = w.wait_outputs(79);
    let ns: Vec<i64> = outs[71..]
        .iter()
        .map(|o| o["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (200..208).collect::<Vec<_>>());
    let (code, log) = w.finish();
    assert_eq!(code, 3, "one dead letter: {log}");
}
