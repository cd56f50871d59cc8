//! Windowed reduce (docs/guide.md, "Windows"): out-of-order events with
//! late ones, several keys, every kind of window, one and two workers,
//! tiny and large chunks; each result and each late event checked against
//! a computation written here from the definitions alone. Then streams:
//! a window written as soon as it closes, and closed by a quiet stream;
//! the bound on open windows; and what the manifest refuses.

use crate::util::{plugin, run_manifest, toml_path, wasmpipe, write};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::Path;

const SERVICES: [&str; 3] = ["auth", "cart", "ledger"];
const T0: i64 = 1_796_140_800_000; // 2026-12-01T16:00:00Z

/// A small deterministic generator (the tests must not depend on a seed
/// they cannot print).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One event: (time ms, service, level is error, duration).
type Ev = (i64, &'static str, bool, u64);

/// Events over ~20 minutes from T0 + 10 min, out of order by up to 15 s, with one in 40
/// far behind (2-4 minutes), and the times written three ways.
fn events(n: usize) -> (Vec<Ev>, String) {
    let mut rng = Lcg(7);
    let mut evs = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        let base = T0 + 600_000 + (i as i64) * 1_200_000 / n as i64;
        let mut t = base - rng.next(15_000) as i64;
        if rng.next(40) == 0 {
            t -= 120_000 + rng.next(120_000) as i64;
        }
        let svc = SERVICES[rng.next(3) as usize];
        let err = rng.next(5) == 0;
        let d = rng.next(500);
        let ts = match i % 3 {
            0 => json!(time_text(t)),
            1 => json!(t),
            _ => json!(t as f64 / 1000.0),
        };
        let level = if err { "error" } else { "info" };
        text.push_str(&format!(
            "{}\n",
            json!({"ts": ts, "service": svc, "level": level, "duration_ms": d})
        ));
        evs.push((t, svc, err, d));
    }
    (evs, text)
}

fn time_text(ms: i64) -> String {
    // Written without the host's formatter: seconds since T0 on a known day.
    let secs = (ms - T0).div_euclid(1000);
    let frac = (ms - T0).rem_euclid(1000);
    let (h, m, s) = (16 + secs / 3600, secs % 3600 / 60, secs % 60);
    format!("2026-12-01T{h:02}:{m:02}:{s:02}.{frac:03}Z")
}

#[derive(Clone, Copy)]
enum Kind {
    Tumbling(i64),
    Hopping(i64, i64),
    Session(i64),
}

/// What the pipeline must give: result lines in closing order (end, start,
/// key) and the indices of the late events.
fn model(evs: &[Ev], kind: Kind, lateness: i64) -> (Vec<Value>, BTreeSet<usize>) {
    let mut max: Option<i64> = None;
    let mut late = BTreeSet::new();
    // (end, start, key) -> (count, sum, errors)
    let mut windows: BTreeMap<(i64, i64, String), (u64, u64, u64)> = BTreeMap::new();
    let mut admitted: BTreeMap<&str, Vec<(i64, usize)>> = BTreeMap::new();
    for (i, &(t, svc, err, d)) in evs.iter().enumerate() {
        let wm = max.map(|m| m - lateness);
        let open = |end: i64| wm.is_none_or(|w| w < end);
        let mut counted = false;
        let mut add = |s: i64, e: i64| {
            let w = windows.entry((e, s, svc.to_string())).or_default();
            w.0 += 1;
            w.1 += d;
            w.2 += err as u64;
        };
        match kind {
            Kind::Tumbling(size) => {
                let s = t.div_euclid(size) * size;
                if open(s + size) {
                    add(s, s + size);
                    counted = true;
                }
            }
            Kind::Hopping(size, hop) => {
                let mut s = t.div_euclid(hop) * hop;
                while s + size > t {
                    if open(s + size) {
                        add(s, s + size);
                        counted = true;
                    }
                    s -= hop;
                }
            }
            Kind::Session(_) => {
                if wm.is_none_or(|w| w < t) {
                    admitted.entry(svc).or_default().push((t, i));
                    counted = true;
                }
            }
        }
        if !counted {
            late.insert(i);
        }
        max = Some(max.map_or(t, |m| m.max(t)));
    }
    if let Kind::Session(gap) = kind {
        for (svc, mut ts) in admitted {
            ts.sort();
            let mut k = 0;
            while k < ts.len() {
                let mut j = k;
                while j + 1 < ts.len() && ts[j + 1].0 - ts[j].0 < gap {
                    j += 1;
                }
                let members = &ts[k..=j];
                let w = windows
                    .entry((ts[j].0 + gap, ts[k].0, svc.to_string()))
                    .or_default();
                for &(_, i) in members {
                    w.0 += 1;
                    w.1 += evs[i].3;
                    w.2 += evs[i].2 as u64;
                }
                k = j + 1;
            }
        }
    }
    let lines = windows
        .into_iter()
        .map(|((e, s, key), (c, sum, errs))| {
            json!({
                "window": {"start": stamp(s), "end": stamp(e)},
                "key": key,
                "value": {"count": c, "sum_ms": sum as f64, "errors": errs},
            })
        })
        .collect();
    (lines, late)
}

fn stamp(ms: i64) -> String {
    time_text(ms)
}

fn manifest(dir: &Path, name: &str, window: &str, extra: &str) -> std::path::PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "[pipeline]\nname = \"{name}\"\n\n[runtime]\n{extra}\n\n[[stage]]\nname = \"stats\"\nkind = \"reduce\"\nplugin = {}\nkey = \"/service\"\nwindow = {{ {window} }}\n",
            toml_path(&plugin("service_stats"))
        ),
    )
}

/// Runs the pipeline; returns (exit code, output values, dead letters).
fn run(dir: &Path, manifest: &Path, input: &Path, args: &[&str]) -> (i32, Vec<Value>, Vec<Value>) {
    let out = dir.join("out.jsonl");
    let dead = dir.join("dead.jsonl");
    let _ = std::fs::remove_file(&dead);
    let mut all = vec![
        "-q",
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dead-letters",
        dead.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let r = run_manifest(manifest, &all);
    assert!(r.code == 0 || r.code == 3, "{}", r.stderr);
    let parse = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    (r.code, parse(&out), parse(&dead))
}

#[test]
fn every_kind_of_window_matches_an_independent_computation_whatever_the_chunking() {
    let dir = tempfile::tempdir().unwrap();
    let (evs, text) = events(1500);
    let input = write(dir.path(), "in.jsonl", &text);
    let kinds = [
        (
            "tumbling",
            Kind::Tumbling(60_000),
            r#"kind = "tumbling", size = "1m""#,
        ),
        (
            "hopping",
            Kind::Hopping(60_000, 20_000),
            r#"kind = "hopping", size = "1m", hop = "20s""#,
        ),
        (
            "session",
            Kind::Session(4_000),
            r#"kind = "session", gap = "4s""#,
        ),
    ];
    for (name, kind, table) in kinds {
        let (want, late) = model(&evs, kind, 10_000);
        assert!(
            late.len() > 20 && want.len() > 10,
            "{name}: the data must exercise lateness"
        );
        let m = manifest(
            dir.path(),
            name,
            &format!(r#"{table}, time = "/ts", lateness = "10s""#),
            "",
        );
        for (chunk, workers) in [("1", "1"), ("7", "2"), ("4096", "2"), ("250", "1")] {
            let (code, got, dead) = run(
                dir.path(),
                &m,
                &input,
                &["--chunk-size", chunk, "-w", workers],
            );
            let at = format!("{name}, chunks of {chunk}, {workers} workers");
            assert_eq!(code, 3, "{at}: late events are dead letters");
            assert_eq!(got.len(), want.len(), "{at}: number of windows");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{at}");
            }
            let dead_idx: BTreeSet<usize> = dead
                .iter()
                .map(|d| d["index"].as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                dead_idx, late,
                "{at}: the late events are exactly the dead letters"
            );
            for d in &dead {
                let e = d["error"].as_str().unwrap();
                assert!(e.starts_with("late: event time "), "{at}: {e}");
                assert_eq!(d["stage"], "stats");
            }
        }
    }
}

#[test]
fn an_unkeyed_window_and_events_without_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"n\":1,\"t\":1000}\n{\"n\":2,\"t\":9999}\n{\"n\":4}\n{\"n\":8,\"t\":\"noon\"}\n{\"n\":16,\"t\":10000}\n{\"n\":32,\"t\":null}\n{\"n\":64,\"t\":25000}\n{\"n\":\"x\",\"t\":26000}\n",
    );
    let m = write(
        dir.path(),
        "sum.toml",
        &format!(
            "[pipeline]\nname = \"sum\"\n\n[[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\nwindow = {{ kind = \"tumbling\", size = \"10s\", time = \"/t\", format = \"millis\" }}\n",
            toml_path(&plugin("sum"))
        ),
    );
    let (code, got, dead) = run(dir.path(), &m, &input, &[]);
    assert_eq!(code, 3);
    assert_eq!(
        got,
        [
            json!({"window": {"start": "1970-01-01T00:00:00.000Z", "end": "1970-01-01T00:00:10.000Z"}, "value": 3}),
            json!({"window": {"start": "1970-01-01T00:00:10.000Z", "end": "1970-01-01T00:00:20.000Z"}, "value": 16}),
            json!({"window": {"start": "1970-01-01T00:00:20.000Z", "end": "1970-01-01T00:00:30.000Z"}, "value": 64}),
        ]
    );
    let reasons: Vec<(u64, &str)> = dead
        .iter()
        .map(|d| (d["index"].as_u64().unwrap(), d["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (2, "no event time: `/t` is not in the event"),
            (
                3,
                "event time `/t` is not epoch milliseconds: the text \"noon\""
            ),
            (5, "no event time: `/t` is null"),
            // Failed in the fold: a dead letter for that, and not late too.
            (
                7,
                "event does not match `Num`: invalid type: string \"x\", expected i64"
            ),
        ]
    );
}

/// Reads lines from the child's stdout on a thread, so that the test can
/// wait for one with a deadline.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_stream_writes_each_window_when_it_closes_and_a_quiet_one_still_closes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        "stream",
        r#"kind = "tumbling", size = "10s", time = "/ts", idle = "2s""#,
        "chunk_size = 1\nworkers = 1",
    );
    let mut child = wasmpipe()
        .arg("run")
        .arg(&m)
        .args(["-q", "--dead-letters"])
        .arg(dir.path().join("dead.jsonl"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let ev = |t: i64, svc: &str| {
        format!("{{\"ts\":{t},\"service\":\"{svc}\",\"level\":\"info\",\"duration_ms\":1}}\n")
    };
    // Window [0 s, 10 s): two events, then one at 12 s closes it (no lateness).
    stdin.write_all(ev(T0 + 1000, "auth").as_bytes()).unwrap();
    stdin.write_all(ev(T0 + 5000, "auth").as_bytes()).unwrap();
    stdin.write_all(ev(T0 + 12_000, "cart").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let first = lines
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a closed window is written while the stream is open");
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["key"], "auth");
    assert_eq!(v["value"]["count"], 2);
    // Then nothing: after `idle` the clock follows the wall clock and the
    // window [10 s, 20 s) closes some 8 s later, with stdin still open.
    let second = lines
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("a quiet stream closes its windows");
    let v: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(v["key"], "cart");
    assert_eq!(v["window"]["start"], stamp(T0 + 10_000));
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn open_windows_are_bounded_and_the_events_past_the_bound_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        "bounded",
        r#"kind = "tumbling", size = "1s", time = "/ts", lateness = "1h", max_open_windows = 3"#,
        "chunk_size = 1\nworkers = 1",
    );
    let text: String = (0..5)
        .map(|i| {
            format!(
                "{{\"ts\":{},\"service\":\"auth\",\"level\":\"info\",\"duration_ms\":{i}}}\n",
                T0 + i * 1000
            )
        })
        .collect();
    let input = write(dir.path(), "in.jsonl", &text);
    let (code, got, dead) = run(dir.path(), &m, &input, &[]);
    assert_eq!(code, 3);
    assert_eq!(got.len(), 3, "{got:?}");
    let idx: Vec<u64> = dead.iter().map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, [3, 4]);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("too many open windows: 3 are open (`max_open_windows` = 3)"),
        "{}",
        dead[0]["error"]
    );
}

#[test]
fn sessions_need_a_key_the_host_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "s.toml",
        &format!(
            "[pipeline]\nname = \"s\"\n\n[[stage]]\nname = \"stats\"\nkind = \"reduce\"\nplugin = {}\nwindow = {{ kind = \"session\", gap = \"1m\", time = \"/ts\" }}\n",
            toml_path(&plugin("service_stats_by_key"))
        ),
    );
    let input = write(dir.path(), "in.jsonl", "");
    let r = run_manifest(&m, &["-i", input.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("session windows need the group key in the manifest"),
        "{}",
        r.stderr
    );
}

// --- serve: windows span jobs, survive SIGKILL, and are read over HTTP ---

use crate::util::http::{Server, all_jobs, get, post, request, wait_job};
use std::time::{Duration, Instant};

/// Every closed window of `s`, following cursors `limit` at a time.
fn all_windows(s: &Server, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/windows?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = get(s, &path);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        out.extend(v["windows"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn serve_manifest(
    dir: &Path,
    name: &str,
    workers: u32,
    stage: &str,
    serve: &str,
) -> std::path::PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "[pipeline]\nname = \"{name}\"\n\n[runtime]\nworkers = {workers}\n\n{stage}\n[serve]\ndatabase = \"{name}.db\"\n{serve}\n"
        ),
    )
}

#[test]
fn serve_windows_span_jobs_and_are_listed_by_key_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let stage = format!(
        "[[stage]]\nname = \"stats\"\nkind = \"reduce\"\nplugin = {}\nkey = \"/service\"\nwindow = {{ kind = \"tumbling\", size = \"1m\", time = \"/ts\", lateness = \"10s\", idle = \"1h\" }}\n",
        toml_path(&plugin("service_stats"))
    );
    let m = serve_manifest(dir.path(), "winserve", 1, &stage, "chunk_size = 5");
    let s = Server::start(&m, &[]);
    let (evs, text) = events(600);
    let (want, late) = model(&evs, Kind::Tumbling(60_000), 10_000);
    // The stream as many batches, one after another, each waited for, and
    // one worker: commit order is input order, and the model applies exactly.
    let lines: Vec<&str> = text.lines().collect();
    let mut jobs = Vec::new();
    for batch in lines.chunks(37) {
        let r = post(
            &s,
            "/v1/pipelines/winserve/jobs",
            "application/x-ndjson",
            &(batch.join("\n") + "\n"),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.json()["job"].as_i64().unwrap();
        let j = wait_job(&s, id, &[]);
        assert_eq!(
            j["result"],
            Value::Null,
            "a windowed job has no result of its own: {j}"
        );
        jobs.push(j);
    }
    // Every window that the last events' watermark passed is closed.
    let max = evs.iter().map(|e| e.0).max().unwrap();
    let closed: Vec<&Value> = want
        .iter()
        .filter(|w| w["window"]["end"].as_str().unwrap() <= stamp(max - 10_000).as_str())
        .collect();
    let got = all_windows(&s, "pipeline=winserve", 7);
    let strip = |w: &Value| json!({"window": w["window"], "key": w["key"], "value": w["value"]});
    assert_eq!(
        got.iter().map(strip).collect::<Vec<_>>(),
        closed.iter().map(|w| (*w).clone()).collect::<Vec<_>>()
    );
    // Late events are the jobs' dead letters.
    let dead: u64 = jobs
        .iter()
        .map(|j| j["dead_letters"].as_u64().unwrap())
        .sum();
    assert_eq!(dead, late.len() as u64);
    // Filters: one key, and a time range of windows.
    let auth = all_windows(&s, "pipeline=winserve&key=auth", 1000);
    assert!(!auth.is_empty() && auth.iter().all(|w| w["key"] == "auth"));
    let from = stamp(T0 + 15 * 60_000);
    let to = stamp(T0 + 20 * 60_000);
    let ranged = all_windows(&s, &format!("since={from}&until={to}"), 1000);
    assert_eq!(
        ranged.len(),
        closed
            .iter()
            .filter(|w| w["window"]["start"].as_str().unwrap() >= from.as_str()
                && w["window"]["end"].as_str().unwrap() <= to.as_str())
            .count()
    );
    assert!(!ranged.is_empty());
    let r = get(&s, "/v1/windows?colour=red");
    assert_eq!(
        (r.status, r.error().contains("unknown parameter `colour`")),
        (400, true),
        "{}",
        r.body
    );
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_pipeline_without_windows_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let stage = format!(
        "[[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\n",
        toml_path(&plugin("sum"))
    );
    let m = serve_manifest(dir.path(), "plain", 2, &stage, "");
    let s = Server::start(&m, &[]);
    let r = get(&s, "/v1/windows");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.error().contains("has no windowed reduce"), "{}", r.body);
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn serve_killed_at_random_points_stores_every_window_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Batch b holds events of window [10 b s, 10 b s + 10 s) only, so each
    // window's exact result is its batch's sum. Lateness (360 batches)
    // covers the chunks two workers commit out of order when one is
    // descheduled while the other runs through tiny chunks; the stream is
    // some 800 batches long, so most windows close while the server is
    // being killed, and the rest at the end.
    let stage = format!(
        "[[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\nwindow = {{ kind = \"tumbling\", size = \"10s\", time = \"/t\", format = \"millis\", lateness = \"1h\", idle = \"1h\" }}\n",
        toml_path(&plugin("sum"))
    );
    let m = serve_manifest(dir.path(), "crash", 2, &stage, "chunk_size = 8");
    let batch = |b: i64| -> (String, i64) {
        let n = 30 + (b % 5) * 11;
        let body = (0..n)
            .map(|i| {
                format!(
                    "{{\"t\":{},\"n\":{}}}\n",
                    b * 10_000 + (i * 9_999) / n,
                    b * 1000 + i
                )
            })
            .collect();
        (body, (0..n).map(|i| b * 1000 + i).sum())
    };
    let mut acked = BTreeSet::new();
    let mut attempted = BTreeMap::new();
    let mut b = 0i64;
    let mut seed = std::process::id() as u64 | 1;
    for _round in 0..4 {
        let s = Server::start(&m, &[]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_at = Instant::now() + Duration::from_millis(200 + seed % 600);
        let url = s.url("/v1/pipelines/crash/jobs");
        let poster = std::thread::spawn(move || {
            let mut sent = Vec::new();
            loop {
                let (body, sum) = batch(b);
                sent.push((b, sum, None));
                let r = request(
                    "POST",
                    &url,
                    &[("content-type", "application/x-ndjson")],
                    Some(body.as_bytes()),
                );
                match r {
                    Ok(r) if r.status == 202 => sent.last_mut().unwrap().2 = Some(()),
                    Ok(r) => panic!("unexpected {}: {}", r.status, r.body),
                    Err(_) => return (sent, b + 1),
                }
                b += 1;
            }
        });
        std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
        s.kill();
        let (sent, next) = poster.join().unwrap();
        for (k, sum, ok) in sent {
            attempted.insert(k, sum);
            if ok.is_some() {
                acked.insert(k);
            }
        }
        b = next;
    }
    let s = Server::start(&m, &[]);
    // Once every job is done (a resumed chunk must not come after it), one
    // event far ahead moves the watermark past every batch's window.
    let t = Instant::now();
    while !all_jobs(&s).iter().all(|j| j["status"] == "done") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "jobs not done\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = post(
        &s,
        "/v1/pipelines/crash/jobs",
        "application/x-ndjson",
        &format!("{{\"t\":{},\"n\":0}}\n", (b + 1000) * 10_000),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let t = Instant::now();
    let got = loop {
        let done = all_jobs(&s).iter().all(|j| j["status"] == "done");
        let got = all_windows(&s, "", 100);
        if done
            && acked
                .iter()
                .all(|k| got.iter().any(|w| window_batch(w) == *k))
        {
            break got;
        }
        let missing: Vec<_> = acked
            .iter()
            .filter(|k| !got.iter().any(|w| window_batch(w) == **k))
            .collect();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "windows not closed (jobs done: {done}): {} windows, acknowledged batches without one: {missing:?}\n{}",
            got.len(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        acked.len() >= 4,
        "the client got through: {} batches acknowledged",
        acked.len()
    );
    let mut seen = BTreeSet::new();
    for w in &got {
        let k = window_batch(w);
        assert!(seen.insert(k), "window of batch {k} stored twice: {w}");
        assert_eq!(
            w["value"].as_i64(),
            attempted.get(&k).copied(),
            "window of batch {k}: exactly its batch, once: {w}"
        );
    }
    for k in &acked {
        assert!(seen.contains(k), "acknowledged batch {k} has its window");
    }
    let dead = get(&s, "/v1/dead-letters?limit=1000").json();
    assert_eq!(
        dead["dead_letters"].as_array().unwrap().len(),
        0,
        "nothing late: {dead}"
    );
    eprintln!(
        "{} batches sent, {} acknowledged, {} windows",
        attempted.len(),
        acked.len(),
        got.len()
    );
    assert_eq!(s.stop(), Some(0));
}

/// The batch a window of the crash test belongs to: its start / 10 s.
fn window_batch(w: &Value) -> i64 {
    let start = w["window"]["start"].as_str().unwrap();
    // 1970-01-01THH:MM:SS.000Z
    let h: i64 = start[11..13].parse().unwrap();
    let m: i64 = start[14..16].parse().unwrap();
    let s: i64 = start[17..19].parse().unwrap();
    (h * 3600 + m * 60 + s) / 10
}

#[test]
fn wasmpipe_test_runs_a_windowed_reduce_over_samples() {
    let dir = crate::util::repo().join("examples/windows");
    let stage = plugin("service_stats");
    let window = r#"kind = "tumbling", size = "1m", time = "/ts", lateness = "10s""#;
    let r = crate::util::run(&[
        "test",
        stage.to_str().unwrap(),
        "-i",
        dir.join("logs.jsonl").to_str().unwrap(),
        "--key",
        "/service",
        "--window",
        window,
        "--expect",
        dir.join("expected.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3, "matches, with dead letters: {}", r.stderr);
    assert!(
        r.stderr.contains("11 events in, 5 outputs, 3 dead letters"),
        "{}",
        r.stderr
    );
    let bad = crate::util::run(&[
        "test",
        stage.to_str().unwrap(),
        "-i",
        dir.join("logs.jsonl").to_str().unwrap(),
        "--window",
        r#"kind = "hopping", size = "1m", time = "/ts""#,
    ]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("a hopping window needs `hop`"),
        "{}",
        bad.stderr
    );
}
