//! Scale-out: `wasmpipe serve` as an ingest node and `wasmpipe worker`s on
//! a real nats-server (JetStream) and a real PostgreSQL, all on loopback,
//! each a child process that can be SIGKILLed. `tests/services` starts the
//! servers (`tests/run` calls it) and exports where they are.
//!
//! Every test has its own database and its own JetStream stream. They run
//! one at a time: one of them restarts PostgreSQL.

use crate::util::{Process, agent, plugin, repo, short_version, toml_path, wasmpipe, write};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Where `tests/services` put PostgreSQL and NATS.
struct Services {
    postgres: String,
    nats: String,
    /// `bash …/tests/services`, to which a command is appended.
    control: String,
}

fn services() -> Services {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the scale-out tests need PostgreSQL and nats-server; \
                 run them with `bash tests/run`, or first `eval \"$(bash tests/services start)\"`"
            )
        })
    };
    Services {
        postgres: var("WASMPIPE_TEST_POSTGRES"),
        nats: var("WASMPIPE_TEST_NATS"),
        control: var("WASMPIPE_TEST_SERVICES"),
    }
}

/// Runs `tests/services <command>`.
fn control(command: &str) {
    let cmd = format!("{} {command}", services().control);
    let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs SQL with psql; returns the rows, one line each, fields split by `|`.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("cannot run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The processes of a cluster test are [`Process`]es.
type Proc = Process;

/// What a worker counts.
trait Metric {
    /// A worker's metric `name{labels}`, summed over label sets that
    /// contain `labels`.
    fn metric(&self, name: &str, labels: &str) -> u64;
}

impl Metric for Process {
    fn metric(&self, name: &str, labels: &str) -> u64 {
        let url = self.hello.rsplit(' ').next().unwrap();
        let text = agent()
            .get(url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    }
}

/// An ingest node, its workers, their database and stream.
/// Where a cluster finds NATS and PostgreSQL when not at the services'
/// plain URLs.
#[derive(Default)]
struct Endpoints {
    /// Another NATS URL.
    nats: Option<String>,
    /// Appended to the PostgreSQL URL (`?sslmode=...`).
    store_options: String,
}

struct Cluster {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    db: String,
    nats: String,
    ingest: Proc,
    workers: Vec<Proc>,
    started: usize,
}

impl Cluster {
    /// `stages` are `[[stage]]` tables; `queue` more `[queue]` keys.
    fn start(name: &str, stages: &str, chunk_size: usize, queue: &str, workers: usize) -> Cluster {
        Cluster::start_with(name, stages, chunk_size, queue, "", workers)
    }

    /// [`Cluster::start`] with more `[serve]` keys.
    fn start_with(
        name: &str,
        stages: &str,
        chunk_size: usize,
        queue: &str,
        serve: &str,
        workers: usize,
    ) -> Cluster {
        let runtime = format!("chunk_size = {chunk_size}\n");
        Cluster::start_full(name, stages, &runtime, queue, serve, workers)
    }

    /// [`Cluster::start_with`] with the whole `[runtime]` table's keys.
    fn start_full(
        name: &str,
        stages: &str,
        runtime: &str,
        queue: &str,
        serve: &str,
        workers: usize,
    ) -> Cluster {
        Cluster::start_at(
            name,
            stages,
            runtime,
            queue,
            serve,
            workers,
            &Endpoints::default(),
        )
    }

    /// [`Cluster::start_full`] with NATS and PostgreSQL reached another way.
    fn start_at(
        name: &str,
        stages: &str,
        runtime: &str,
        queue: &str,
        serve: &str,
        workers: usize,
        at: &Endpoints,
    ) -> Cluster {
        let mut svc = services();
        if let Some(nats) = &at.nats {
            svc.nats = nats.clone();
        }
        let db = format!("wasmpipe_test_{name}");
        psql(
            &format!("{}/postgres", svc.postgres),
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
        psql(
            &format!("{}/postgres", svc.postgres),
            &format!("CREATE DATABASE {db}"),
        );
        let dir = tempfile::tempdir().unwrap();
        // A stream per run, so a run never sees an earlier run's chunks.
        let stream = format!(
            "test-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let text = format!(
            "[pipeline]\nname = \"{name}\"\n{stages}\n\
             [runtime]\n{runtime}\
             [serve]\nmax_events = 2000000\nmax_body = \"64MiB\"\nmax_event_size = \"4MiB\"\nmax_backlog = 4000000\n{serve}\n\
             [queue]\nkind = \"nats\"\nstream = \"{stream}\"\n{queue}\n\
             [store]\nkind = \"postgres\"\nurl = \"{}/{db}{}\"\n",
            svc.postgres, at.store_options
        );
        let text = if queue.contains("max_bytes") {
            text
        } else {
            // Each stream reserves its `max_bytes` of JetStream storage.
            text.replace("[store]", "max_bytes = \"256MiB\"\n[store]")
        };
        let manifest = write(dir.path(), &format!("{name}.toml"), &text);
        let ingest = Proc::start(
            wasmpipe()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .arg(&manifest)
                .env("WASMPIPE_NATS_URL", &svc.nats),
            dir.path().join("ingest.log"),
        );
        assert!(
            ingest.hello.starts_with("listening on "),
            "{}",
            ingest.hello
        );
        let mut c = Cluster {
            db: format!("{}/{db}", svc.postgres),
            nats: svc.nats,
            dir,
            manifest,
            ingest,
            workers: Vec::new(),
            started: 0,
        };
        for _ in 0..workers {
            c.add_worker();
        }
        c
    }

    /// SIGKILLs the ingest node and starts another on the same manifest.
    fn restart_ingest(&mut self) {
        self.ingest.kill();
        self.started += 1;
        self.ingest = Proc::start(
            wasmpipe()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .arg(&self.manifest)
                .env("WASMPIPE_NATS_URL", &self.nats),
            self.dir.path().join(format!("ingest-{}.log", self.started)),
        );
    }

    /// Starts one more worker process (one slot).
    fn add_worker(&mut self) {
        self.add_worker_with(&[]);
    }

    /// Starts one more worker process (one slot) with more arguments.
    fn add_worker_with(&mut self, args: &[&str]) {
        let manifest = self.manifest.clone();
        self.add_worker_on(&manifest, args);
    }

    /// Starts one more worker process (one slot) reading `manifest`.
    fn add_worker_on(&mut self, manifest: &Path, args: &[&str]) {
        self.started += 1;
        let log = self.dir.path().join(format!("worker-{}.log", self.started));
        let w = Proc::start(
            wasmpipe()
                .args(["worker", "--workers", "1", "--metrics", "127.0.0.1:0"])
                .args(args)
                .arg(manifest)
                .env("WASMPIPE_NATS_URL", &self.nats),
            log,
        );
        assert!(
            w.hello.starts_with("worker ready; metrics on http://"),
            "{}",
            w.hello
        );
        self.workers.push(w);
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.ingest.hello.strip_prefix("listening on ").unwrap()
        )
    }

    fn logs(&self) -> String {
        let mut s = format!("--- ingest\n{}", self.ingest.log());
        for w in &self.workers {
            s.push_str(&format!("--- {}\n{}", w.log.display(), w.log()));
        }
        s
    }

    /// Posts a batch; returns the job id.
    fn post(&self, body: &str) -> i64 {
        let url = self.url(&format!(
            "/v1/pipelines/{}/jobs",
            self.manifest.file_stem().unwrap().to_str().unwrap()
        ));
        let r = agent()
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .send(body)
            .expect("POST failed");
        let status = r.status().as_u16();
        let text = r
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap();
        assert_eq!(status, 202, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["job"].as_i64().unwrap()
    }

    /// The job as the API shows it; `None` while the API cannot answer
    /// (PostgreSQL restarting).
    fn job(&self, id: i64) -> Option<Value> {
        let mut r = agent()
            .get(self.url(&format!("/v1/jobs/{id}")))
            .call()
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    /// Polls until `until` holds for the job, with a deadline.
    fn wait(&self, id: i64, secs: u64, until: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            if let Some(j) = self.job(id)
                && until(&j)
            {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "job {id} not there in {secs} s: {:?}\n{}",
                self.job(id),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_done(&self, id: i64, secs: u64) -> Value {
        self.wait(id, secs, |j| j["status"] == "done")
    }

    fn sql(&self, sql: &str) -> String {
        psql(&self.db, sql)
    }

    /// Asserts that events `0..n` of job `id` are each stored exactly once,
    /// as `{"n": 2 × their n}` (the double stage), and nothing else is.
    fn assert_stored_once(&self, id: i64, n: u64) {
        let got = self.sql(&format!(
            "SELECT count(*), count(DISTINCT idx), min(idx), max(idx), \
             sum((body::jsonb->>'n')::bigint) FROM wasmpipe.events WHERE job = {id}"
        ));
        let n = n as i64;
        assert_eq!(
            got,
            format!("{n}|{n}|0|{}|{}", n - 1, n * (n - 1)),
            "count, distinct, min, max, sum of the stored events"
        );
        assert_eq!(
            self.sql("SELECT count(*) FROM wasmpipe.events"),
            n.to_string(),
            "no stray events"
        );
    }
}

fn adder_stages() -> String {
    format!(
        "[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\n\
         [[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\n",
        toml_path(&plugin("double")),
        toml_path(&plugin("sum"))
    )
}

fn numbers(n: u64) -> String {
    let mut s = String::with_capacity(n as usize * 14);
    for i in 0..n {
        s.push_str(&format!("{{\"n\":{i}}}\n"));
    }
    s
}

/// 2 × (0 + … + n-1).
fn doubled_sum(n: u64) -> i64 {
    (n * (n - 1)) as i64
}

#[test]
fn three_workers_store_a_million_events_once_and_reduce_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start("million", &adder_stages(), 1000, "", 3);
    let n = 1_000_000;
    let t = Instant::now();
    let id = c.post(&numbers(n));
    let job = c.wait_done(id, 300);
    eprintln!("1,000,000 events through 3 workers in {:?}", t.elapsed());
    assert_eq!(job["result"], doubled_sum(n), "{job}");
    assert_eq!(job["events_out"], n);
    assert_eq!(job["dead_letters"], 0);
    c.assert_stored_once(id, n);
    let workers: i64 = c
        .sql("SELECT count(DISTINCT worker) FROM wasmpipe.chunks")
        .parse()
        .unwrap();
    assert!(
        workers >= 2,
        "the chunks were shared among the workers: {workers}"
    );
    // Each worker's /metrics counts what it did; together, the whole job.
    let sum = |name: &str, labels: &str| -> u64 {
        c.workers.iter().map(|w| w.metric(name, labels)).sum()
    };
    assert_eq!(sum("wasmpipe_chunks_done_total", ""), 1000);
    assert_eq!(sum("wasmpipe_events_stored_total", ""), n);
    assert_eq!(sum("wasmpipe_stage_events_in_total", "stage=\"double\""), n);
    // The read API serves the stored events from PostgreSQL.
    let mut r = agent()
        .get(c.url(&format!("/v1/events?job={id}&field.n=20&limit=5")))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{v}");
    assert_eq!(events[0]["index"], 10);
    assert_eq!(events[0]["event"]["n"], 20);
    for w in c.workers.into_iter() {
        assert_eq!(w.stop(), Some(0));
    }
    assert_eq!(c.ingest.stop(), Some(0));
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_and_stores_nothing_twice() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start("sigkill", &adder_stages(), 500, "ack_wait = \"1s\"", 3);
    let n = 300_000;
    let id = c.post(&numbers(n));
    c.wait(id, 120, |j| j["chunks_done"].as_u64() >= Some(60));
    let victim = c.workers[0].child.id();
    c.workers[0].kill();
    let job = c.wait_done(id, 180);
    assert_eq!(job["result"], doubled_sum(n), "{job}");
    c.assert_stored_once(id, n);
    let before: i64 = c
        .sql(&format!(
            "SELECT count(*) FROM wasmpipe.chunks WHERE worker LIKE '%/{victim}'"
        ))
        .parse()
        .unwrap();
    assert!(
        before > 0,
        "the killed worker had committed chunks before it died"
    );
}

#[test]
fn postgres_restarted_mid_job_and_workers_retry() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start("pgrestart", &adder_stages(), 500, "", 3);
    let n = 300_000;
    let id = c.post(&numbers(n));
    c.wait(id, 120, |j| j["chunks_done"].as_u64() >= Some(60));
    control("restart-postgres");
    let job = c.wait_done(id, 180);
    assert_eq!(job["result"], doubled_sum(n), "{job}");
    c.assert_stored_once(id, n);
    let retried = c
        .workers
        .iter()
        .filter(|w| w.log().contains("retrying"))
        .count();
    assert!(
        retried >= 1,
        "a worker met the restart and retried:\n{}",
        c.logs()
    );
}

#[test]
fn nats_away_mid_job_gives_503_and_the_job_completes_when_it_is_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start("natsaway", &adder_stages(), 500, "ack_wait = \"2s\"", 2);
    let n = 200_000;
    let id = c.post(&numbers(n));
    c.wait(id, 120, |j| j["chunks_done"].as_u64() >= Some(40));
    control("stop-nats");
    // A batch now cannot be made durable: it is refused, not half-taken.
    let r = agent()
        .post(c.url("/v1/pipelines/natsaway/jobs"))
        .header("content-type", "application/x-ndjson")
        .send("{\"n\":1}\n")
        .unwrap();
    let refused = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").is_some();
    assert_eq!(refused, 503);
    assert!(retry_after, "a 503 says when to retry");
    let ready = agent().get(c.url("/readyz")).call().unwrap();
    assert_eq!(ready.status().as_u16(), 503, "not ready without NATS");
    control("start-nats");
    let job = c.wait_done(id, 180);
    assert_eq!(job["result"], doubled_sum(n), "{job}");
    c.assert_stored_once(id, n);
    let refused_jobs = c.sql("SELECT count(*) FROM wasmpipe.jobs WHERE state = 'abandoned'");
    assert_eq!(
        refused_jobs, "1",
        "the refused batch is recorded as abandoned"
    );
    // And new work flows again.
    let next = c.post(&numbers(1000));
    assert_eq!(c.wait_done(next, 60)["result"], doubled_sum(1000));
}

#[test]
fn a_poison_event_under_redelivery_ends_as_one_dead_letter() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // `faulty` hangs on n = -6 and says so; this test kills whichever
    // worker says so, as if the event crashed it. Its timeout is far off,
    // so only redelivery and splitting can get past the event.
    let stages = format!(
        "[[stage]]\nname = \"faulty\"\nkind = \"map\"\nplugin = {}\nlimits = {{ timeout = \"300s\" }}\n\
         [[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\n",
        toml_path(&plugin("faulty")),
        toml_path(&plugin("sum"))
    );
    let mut c = Cluster::start(
        "poison",
        &stages,
        8,
        "ack_wait = \"1s\"\nmax_attempts = 1",
        3,
    );
    let poison_at = 21;
    let values: Vec<i64> = (0..40)
        .map(|i| if i == poison_at { -6 } else { i + 100 })
        .collect();
    let body: String = values.iter().map(|v| format!("{{\"n\":{v}}}\n")).collect();
    let id = c.post(&body);
    let mut kills = 0;
    let t = Instant::now();
    loop {
        if c.job(id).is_some_and(|j| j["status"] == "done") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the job is stuck after {kills} kills: {:?}\n{}",
            c.job(id),
            c.logs()
        );
        let hit = c
            .workers
            .iter()
            .position(|w| w.log().contains("hanging on n=-6"));
        if let Some(i) = hit {
            let mut w = c.workers.remove(i);
            w.kill();
            kills += 1;
            c.add_worker();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let job = c.job(id).unwrap();
    assert!(
        kills >= 2,
        "the poison event was redelivered: {kills} kills"
    );
    assert_eq!(job["dead_letters"], 1, "{job}");
    let expected: i64 = values.iter().filter(|&&v| v != -6).sum();
    assert_eq!(job["result"], expected, "{job}");
    assert_eq!(job["events_out"], 39);
    assert_eq!(
        c.sql("SELECT idx, stage, event FROM wasmpipe.dead_letters"),
        format!("{poison_at}|worker|\\x{}", hex::encode(b"{\"n\":-6}"))
    );
    assert_eq!(
        c.sql(&format!(
            "SELECT count(*), count(DISTINCT idx) FROM wasmpipe.events WHERE job = {id}"
        )),
        "39|39"
    );
    // The queue is not stuck: a later job goes through.
    let later: String = (100..200).map(|v| format!("{{\"n\":{v}}}\n")).collect();
    let job = c.wait_done(c.post(&later), 60);
    assert_eq!(job["result"], (100..200).sum::<i64>(), "{job}");
}

#[test]
fn manifests_that_mix_queue_and_store_wrongly_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "bad.toml",
        &format!(
            "[pipeline]\nname = \"bad\"\n{}\n[queue]\nkind = \"nats\"\n",
            adder_stages()
        ),
    );
    let out = wasmpipe().args(["worker"]).arg(&m).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the `nats` queue needs the `postgres` store") && err.contains("bad.toml:"),
        "{err}"
    );
}

#[test]
fn an_ingest_node_retries_dead_letters_replays_diffs_and_refuses_oversized_events() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stages = format!(
        "[[stage]]\nname = \"faulty\"\nkind = \"map\"\nplugin = {}\n\
         [[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\n",
        toml_path(&plugin("faulty")),
        toml_path(&plugin("sum"))
    );
    let c = Cluster::start("routes", &stages, 10, "", 1);
    let ready = agent().get(c.url("/readyz")).call().unwrap();
    assert_eq!(ready.status(), 200);

    // faulty fails n = 13 ("unlucky 13"): one dead letter, naming the
    // versions of its chunk.
    let id = c.post(&numbers(30));
    let job = c.wait_done(id, 60);
    assert_eq!(job["dead_letters"], 1, "{job}");
    assert_eq!(job["result"], (0..30).sum::<i64>() - 13);
    let mut r = agent()
        .get(c.url(&format!("/v1/dead-letters?job={id}")))
        .call()
        .unwrap();
    let dead: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        dead["dead_letters"][0]["versions"],
        json!({ "faulty": short_version(&plugin("faulty")), "sum": short_version(&plugin("sum")) }),
        "{dead}"
    );

    let send = |method: &str, path: &str, body: Vec<u8>| {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(c.url(path))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .unwrap();
        let mut r = agent().run(req).unwrap();
        let status = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        (status, v)
    };
    // A retry is a new job through the same queue; the event fails again.
    let (status, v) = send("POST", &format!("/v1/jobs/{id}/dead-letters/retry"), vec![]);
    assert_eq!(status, 202, "{v}");
    let retry = v["job"].as_i64().unwrap();
    let job = c.wait_done(retry, 60);
    assert_eq!(
        (job["kind"].as_str(), job["origin"].as_i64()),
        (Some("retry"), Some(id))
    );
    assert_eq!(job["dead_letters"], 1, "{job}");
    assert_eq!(
        c.sql(&format!(
            "SELECT retried_by FROM wasmpipe.dead_letters WHERE job = {id}"
        )),
        retry.to_string()
    );
    let (status, v) = send("POST", &format!("/v1/jobs/{id}/dead-letters/retry"), vec![]);
    assert_eq!(status, 409, "nothing left to retry: {v}");

    // The input is kept in PostgreSQL: a replay is a new job through the
    // queue, exactly the original again.
    let (status, v) = send("POST", &format!("/v1/jobs/{id}/replay"), vec![]);
    assert_eq!(status, 202, "{v}");
    let replay = v["job"].as_i64().unwrap();
    let job = c.wait_done(replay, 60);
    assert_eq!(
        (job["kind"].as_str(), job["origin"].as_i64()),
        (Some("replay"), Some(id))
    );
    assert_eq!(
        (&job["result"], &job["dead_letters"], &job["events_in"]),
        (&json!((0..30).sum::<i64>() - 13), &json!(1), &json!(30)),
        "{job}"
    );
    let stored = |job: i64| {
        c.sql(&format!(
            "SELECT string_agg(idx || ':' || body, ',' ORDER BY idx, id) FROM wasmpipe.events WHERE job = {job}"
        ))
    };
    assert!(!stored(id).is_empty());
    assert_eq!(stored(replay), stored(id));
    // A retry job keeps its input too: it replays.
    let (status, v) = send("POST", &format!("/v1/jobs/{retry}/replay"), vec![]);
    assert_eq!(status, 202, "{v}");
    let job = c.wait_done(v["job"].as_i64().unwrap(), 60);
    assert_eq!(
        (&job["events_in"], &job["dead_letters"]),
        (&json!(1), &json!(1)),
        "{job}"
    );
    // Input past retention answers 410, not a replay of nothing.
    c.sql(&format!("DELETE FROM wasmpipe.inputs WHERE job = {retry}"));
    let (status, v) = send("POST", &format!("/v1/jobs/{retry}/replay"), vec![]);
    assert_eq!(status, 410, "{v}");

    // A diff runs on the ingest node itself, from the stored input: with
    // `double` in place of `faulty`, 13 is no longer a dead letter, every
    // other nonzero event changes (outputs feeding a reduce are not
    // listed, so only the dead letter and the result show), and nothing
    // is stored.
    let jobs_before = c.sql("SELECT count(*) FROM wasmpipe.jobs");
    let url = format!("/v1/jobs/{id}/diff?stage=faulty");
    let (status, v) = send("POST", &url, std::fs::read(plugin("double")).unwrap());
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            &v["events"],
            &v["changed"],
            &v["fixed_dead_letters"],
            &v["new_dead_letters"]
        ),
        (&json!(30), &json!(1), &json!(1), &json!(0)),
        "{v}"
    );
    assert_eq!(v["changes"][0]["index"], 13, "{v}");
    assert_eq!(v["result"]["before"], (0..30).sum::<i64>() - 13, "{v}");
    assert_eq!(v["result"]["after"], 2 * (0..30).sum::<i64>(), "{v}");
    assert_eq!(c.sql("SELECT count(*) FROM wasmpipe.jobs"), jobs_before);

    // Chunks larger than a NATS message are cut; an event larger than one
    // is refused whole, naming it.
    let wide = "x".repeat(400_000);
    let body: String = (0..6)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{wide}\"}}\n"))
        .collect();
    let (status, v) = send("POST", "/v1/pipelines/routes/jobs", body.into_bytes());
    assert_eq!(status, 202, "{v}");
    let job = c.wait_done(v["job"].as_i64().unwrap(), 60);
    assert_eq!(job["result"], 15, "{job}");
    let huge = format!(
        "{{\"n\":1}}\n{{\"n\":2,\"pad\":\"{}\"}}\n",
        "y".repeat(1_100_000)
    );
    let (status, v) = send("POST", "/v1/pipelines/routes/jobs", huge.into_bytes());
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("event 1 is"), "{v}");
}

#[test]
fn a_keyed_reduce_is_combined_per_key_across_workers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stages = format!(
        "[[stage]]\nname = \"words\"\nkind = \"flat_map\"\nplugin = {}\n\
         [[stage]]\nname = \"count\"\nkind = \"reduce\"\nplugin = {}\nkey = \"/word\"\n",
        toml_path(&plugin("words")),
        toml_path(&plugin("word_count"))
    );
    let c = Cluster::start("keyed", &stages, 100, "", 2);
    let lines = 20_000;
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    let mut words = 0;
    let mut body = String::new();
    for i in 0..lines {
        let text = format!("w{} w{} x{}", i % 7, i % 13, i % 3);
        for w in text.split(' ') {
            *expected.entry(w.to_string()).or_default() += 1;
            words += 1;
        }
        body.push_str(&format!("{{\"text\":\"{text}\"}}\n"));
    }
    let id = c.post(&body);
    let job = c.wait_done(id, 120);
    assert_eq!(job["keyed"], true);
    assert_eq!(
        job["result"],
        serde_json::to_value(&expected).unwrap(),
        "{job}"
    );
    assert_eq!(
        c.sql(&format!(
            "SELECT count(*), count(DISTINCT idx) FROM wasmpipe.events WHERE job = {id}"
        )),
        format!("{words}|{lines}"),
        "every word stored once, from every line"
    );
    let workers: i64 = c
        .sql("SELECT count(DISTINCT worker) FROM wasmpipe.chunks")
        .parse()
        .unwrap();
    assert_eq!(workers, 2, "both workers took chunks");
}

#[test]
fn workers_run_javascript_and_python_stages_like_rust_ones() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The examples' stage folders, built once here so that the workers
    // (which would build them on load) find them up to date.
    let double = repo().join("examples/adder-js/double");
    let sum = repo().join("examples/adder-python/sum");
    for dir in [&double, &sum] {
        let out = wasmpipe().arg("build").arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stages = format!(
        "[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {}\n\
         [[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\n",
        toml_path(&double),
        toml_path(&sum)
    );
    let c = Cluster::start("polyglot", &stages, 500, "", 2);
    let n = 20_000;
    let mut body = numbers(n);
    body.push_str("{\"n\":\"seven\"}\n");
    let id = c.post(&body);
    let job = c.wait_done(id, 180);
    assert_eq!(job["result"], doubled_sum(n), "{job}");
    assert_eq!(job["dead_letters"], 1, "{job}");
    c.assert_stored_once(id, n);
    let dead = c.sql(&format!(
        "SELECT stage || ': ' || error FROM wasmpipe.dead_letters WHERE job = {id}"
    ));
    assert_eq!(dead, "double: event has no integer `n`");
    let workers: i64 = c
        .sql("SELECT count(DISTINCT worker) FROM wasmpipe.chunks")
        .parse()
        .unwrap();
    assert_eq!(workers, 2, "both workers took chunks");
}

#[test]
fn a_full_stream_gives_429_and_takes_batches_again_once_drained() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // No worker yet: the stream fills up.
    let mut c = Cluster::start("full", &adder_stages(), 1000, "max_bytes = \"64KiB\"", 0);
    let first = c.post(&numbers(4000)); // about 44 KB of the 64
    let r = agent()
        .post(c.url("/v1/pipelines/full/jobs"))
        .header("content-type", "application/x-ndjson")
        .send(numbers(4000).as_str())
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.into_body().read_to_string().unwrap();
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(body.contains("max_bytes"), "{body}");
    assert_eq!(
        c.sql("SELECT state FROM wasmpipe.jobs ORDER BY id"),
        "accepted\nabandoned",
        "the refused batch's job is abandoned, the first stays accepted"
    );
    // A worker drains the stream: the first job completes alone, and the
    // queue takes batches again.
    c.add_worker();
    assert_eq!(c.wait_done(first, 60)["result"], doubled_sum(4000));
    c.assert_stored_once(first, 4000);
    let next = c.post(&numbers(4000));
    assert_eq!(c.wait_done(next, 60)["result"], doubled_sum(4000));
}

/// A soak, not run by default (`bash tests/soak-cluster [SECONDS]` runs it):
/// jobs keep arriving while workers are SIGKILLed and replaced at random
/// and PostgreSQL is restarted now and then; at the end every job has its
/// exact result and every event is stored exactly once.
#[test]
#[ignore = "a soak of several minutes; run with tests/soak-cluster"]
fn soak_random_kills_and_restarts_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seconds: u64 = std::env::var("WASMPIPE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let mut c = Cluster::start("soak", &adder_stages(), 500, "ack_wait = \"1s\"", 3);
    let mut seed = std::process::id() as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut jobs: Vec<(i64, u64)> = Vec::new();
    let (mut kills, mut restarts) = (0, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(seconds) {
        let n = 1 + rand(50_000);
        // PostgreSQL may be restarting: the ingest node answers 503 then.
        let url = c.url("/v1/pipelines/soak/jobs");
        let r = agent()
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .send(numbers(n).as_str());
        if let Ok(mut r) = r
            && r.status() == 202
        {
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            jobs.push((v["job"].as_i64().unwrap(), n));
        }
        match rand(10) {
            0..=2 => {
                let i = rand(c.workers.len() as u64) as usize;
                c.workers.remove(i).kill();
                kills += 1;
                c.add_worker();
            }
            3 if rand(3) == 0 => {
                control("restart-postgres");
                restarts += 1;
            }
            _ => std::thread::sleep(Duration::from_millis(rand(500))),
        }
    }
    eprintln!(
        "soak: {} jobs, {} events, {kills} workers killed, {restarts} PostgreSQL restarts in {:?}",
        jobs.len(),
        jobs.iter().map(|j| j.1).sum::<u64>(),
        t.elapsed()
    );
    for &(id, n) in &jobs {
        let job = c.wait_done(id, 600);
        assert_eq!(job["result"], doubled_sum(n), "{job}");
        let got = c.sql(&format!(
            "SELECT count(*), count(DISTINCT idx), sum((body::jsonb->>'n')::bigint) FROM wasmpipe.events WHERE job = {id}"
        ));
        assert_eq!(got, format!("{n}|{n}|{}", doubled_sum(n)), "job {id}");
    }
    assert!(jobs.len() > 10 && kills > 5, "the soak did something");
}

#[test]
fn a_watching_worker_swaps_a_changed_plugin_between_chunks() {
    use crate::reload::{short_hash, version};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let plugins = tempfile::tempdir().unwrap();
    let wasm = plugins.path().join("tag.wasm");
    let (v1, v2) = (version("v1"), version("v2"));
    std::fs::write(&wasm, &v1).unwrap();
    let stages = format!(
        "[[stage]]\nname = \"tag\"\nkind = \"map\"\nplugin = {}\n",
        toml_path(&wasm)
    );
    let mut c = Cluster::start("watch", &stages, 10, "", 0);
    c.add_worker_with(&["--watch"]);
    let body: String = (0..50).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let tags = |id: i64| {
        c.sql(&format!(
            "SELECT DISTINCT body::jsonb->>'tag' FROM wasmpipe.events WHERE job = {id}"
        ))
    };
    let first = c.post(&body);
    c.wait_done(first, 60);
    assert_eq!(tags(first), "v1");

    std::fs::write(plugins.path().join("tag.wasm.tmp"), &v2).unwrap();
    std::fs::rename(plugins.path().join("tag.wasm.tmp"), &wasm).unwrap();
    let t = Instant::now();
    while !c.workers[0]
        .log()
        .contains("hot reload: now serving generation 1")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no reload:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = c.post(&body);
    let job = c.wait_done(second, 60);
    assert_eq!(tags(second), "v2", "{job}");
    let versions = job["stage_versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{job}");
    assert!(
        versions[0]["tag"]
            .as_str()
            .unwrap()
            .starts_with(&short_hash(&v2)),
        "{job}"
    );
    assert_eq!(
        c.sql(&format!(
            "SELECT count(*) FROM wasmpipe.events WHERE job = {second}"
        )),
        "50"
    );
}

#[test]
fn retention_purges_events_and_chunk_records_but_keeps_jobs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start_with("retain", &adder_stages(), 100, "", "retention = \"1s\"", 1);
    let id = c.post(&numbers(1000));
    assert_eq!(c.wait_done(id, 60)["result"], doubled_sum(1000));
    let t = Instant::now();
    let count = |table: &str| {
        c.sql(&format!(
            "SELECT count(*) FROM wasmpipe.{table} WHERE job = {id}"
        ))
    };
    while count("events") != "0" || count("chunks") != "0" {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "not purged:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let job = c.job(id).unwrap();
    assert_eq!(
        job["result"],
        doubled_sum(1000),
        "the job's record and result stay"
    );
    assert_eq!(job["events_out"], 1000);
}

#[test]
fn workers_splice_lineage_and_see_the_ingest_nodes_chunk_numbers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stages = format!(
        "[[stage]]\nname = \"stamp\"\nkind = \"map\"\nplugin = {}\n",
        toml_path(&plugin("stamp"))
    );
    let mut c = Cluster::start_full(
        "lineage",
        &stages,
        "chunk_size = 3\nlineage = true\n",
        "",
        "",
        0,
    );
    // The worker's own manifest cuts 5-event chunks: what stages see as
    // their chunk number is still the ingest node's, carried with the chunk.
    let text = std::fs::read_to_string(&c.manifest)
        .unwrap()
        .replace("chunk_size = 3", "chunk_size = 5");
    let other = write(c.dir.path(), "lineage-worker.toml", &text);
    c.add_worker_on(&other, &[]);
    let body: String = (0..10).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let id = c.post(&body);
    let job = c.wait_done(id, 60);
    let version = short_version(&plugin("stamp"));
    assert_eq!(
        job["stage_versions"],
        json!([{ "stamp": version }]),
        "{job}"
    );
    let rows = c.sql(&format!(
        "SELECT idx, body FROM wasmpipe.events WHERE job = {id} ORDER BY idx"
    ));
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 10, "{rows:?}");
    for row in rows {
        let (idx, body) = row.split_once('|').unwrap();
        let idx: u64 = idx.parse().unwrap();
        let ev: Value = serde_json::from_str(body).unwrap();
        assert_eq!(ev["request"]["chunk"], idx / 3, "{ev}");
        assert_eq!(ev["_versions"], json!({ "stamp": version }), "{ev}");
    }
}

#[test]
fn a_job_its_ingest_node_never_accepted_is_abandoned_and_blocks_no_other() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start("stale", &adder_stages(), 100, "", 1);
    // As an ingest node leaves a job it died accepting: `pending`, long ago.
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 120_000;
    let stale: i64 = c
        .sql(&format!(
            "INSERT INTO wasmpipe.jobs (pipeline, kind, received_at, context, events_in, chunks) \
             VALUES ('stale', 'ingest', {long_ago}, '{{}}', 10, 1) RETURNING id"
        ))
        .parse()
        .unwrap();
    // Other jobs go through meanwhile.
    let id = c.post(&numbers(1000));
    let job = c.wait_done(id, 60);
    assert_eq!(job["result"], doubled_sum(1000), "{job}");
    let t = Instant::now();
    while c.sql(&format!(
        "SELECT state FROM wasmpipe.jobs WHERE id = {stale}"
    )) != "abandoned"
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "job {stale} still pending:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        c.sql("SELECT count(*) FROM wasmpipe.schema_version"),
        "1",
        "one schema row however many processes started"
    );
}

#[test]
fn windows_close_once_across_workers_with_one_killed_mid_stream() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Batch b holds events of window [10 b s, 10 b s + 10 s) only, so each
    // window's exact result is its batch's sum. Lateness covers a killed
    // worker's chunks, redelivered after `ack_wait` behind later batches.
    let stages = format!(
        "[[stage]]\nname = \"sum\"\nkind = \"reduce\"\nplugin = {}\n\
         window = {{ kind = \"tumbling\", size = \"10s\", time = \"/t\", format = \"millis\", lateness = \"1h\", idle = \"1h\" }}\n",
        toml_path(&plugin("sum"))
    );
    let mut c = Cluster::start("windows", &stages, 10, "ack_wait = \"1s\"", 3);
    let batches = 60i64;
    let mut expected = std::collections::BTreeMap::new();
    let mut ids = Vec::new();
    for b in 0..batches {
        let n = 40 + b % 3 * 10;
        let body: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"t\":{},\"n\":{}}}\n",
                    b * 10_000 + i * 9_999 / n,
                    b * 1000 + i
                )
            })
            .collect();
        expected.insert(b * 10_000, (0..n).map(|i| b * 1000 + i).sum::<i64>());
        ids.push(c.post(&body));
        if b == batches / 3 {
            c.wait(ids[2], 60, |j| j["status"] == "done");
            c.workers[0].kill();
        }
    }
    for id in &ids {
        c.wait_done(*id, 180);
    }
    // Then one event far ahead: its watermark passes every batch's window.
    let flush = c.post(&format!(
        "{{\"t\":{},\"n\":0}}\n",
        (batches + 10_000) * 10_000
    ));
    c.wait_done(flush, 60);
    let t = Instant::now();
    let rows = loop {
        let rows = c.sql("SELECT start_at, value FROM wasmpipe.windows ORDER BY start_at");
        if rows.lines().count() >= batches as usize || t.elapsed() > Duration::from_secs(30) {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let got: std::collections::BTreeMap<i64, i64> = rows
        .lines()
        .map(|l| {
            let (s, v) = l.split_once('|').unwrap();
            (s.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(
        rows.lines().count(),
        got.len(),
        "no window stored twice:\n{rows}"
    );
    assert_eq!(
        got,
        expected,
        "every window exactly its batch's sum\n{}",
        c.logs()
    );
    assert_eq!(c.sql("SELECT count(*) FROM wasmpipe.dead_letters"), "0");
    // The ingest node reads them over HTTP.
    let mut r = agent().get(c.url("/v1/windows?limit=1000")).call().unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["windows"].as_array().unwrap().len(), batches as usize);
    let workers: i64 = c
        .sql("SELECT count(DISTINCT worker) FROM wasmpipe.chunks")
        .parse()
        .unwrap();
    assert!(workers >= 2, "several workers committed windows");
}

/// The PostgreSQL store on its own, through the library: a chunk range
/// committed twice (a redelivery after a commit whose acknowledgement was
/// lost), or a piece of one committed after the whole (a split of a chunk
/// whose first worker was presumed dead but committed), is applied once;
/// the job's result is combined once, by the commit that completes it.
#[test]
fn postgres_applies_a_chunk_committed_twice_once() {
    use wasmpipe::exec::stored::{Committed, StoredJob};
    use wasmpipe::exec::{ChunkId, ChunkReport, DeadLetter};
    use wasmpipe::store::postgres::PgStore;
    use wasmpipe::store::{Combine, NewJob};

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let svc = services();
    let db = "wasmpipe_test_commit_twice";
    let admin = format!("{}/postgres", svc.postgres);
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    psql(&admin, &format!("CREATE DATABASE {db}"));
    let report = |first: u64, events: &[&str]| ChunkReport {
        seq: 0,
        output: events
            .iter()
            .flat_map(|e| format!("{e}\n").into_bytes())
            .collect(),
        origin: (first..first + events.len() as u64).collect(),
        dead: vec![DeadLetter {
            stage: Some("s".into()),
            error: "refused".into(),
            index: first,
            line: first + 1,
            attempts: 1,
            event: b"{}".to_vec(),
        }],
        partial: events.len().to_string().into_bytes(),
        counts: Vec::new(),
        events_read: events.len() as u64,
        retries: 0,
        set: wasmpipe::runtime::StageSet::new(0, Vec::new()),
        windows: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = PgStore::connect(&format!("{}/{db}", svc.postgres), 2, &Default::default())
            .await
            .unwrap();
        let id = store
            .insert_job(&NewJob {
                pipeline: "p".into(),
                kind: "ingest",
                origin: None,
                received_at: 1,
                context: "{}".into(),
                chunks: vec![(b"1\n2\n".to_vec(), 2), (b"3\n".to_vec(), 1)],
                pinned: None,
            })
            .await
            .unwrap();
        assert!(store.accept_job(id).await.unwrap());
        let job = StoredJob {
            pipeline: "p".into(),
            context: "{}".into(),
            received_at: 1,
            pinned: None,
        };
        let combined = std::sync::atomic::AtomicU32::new(0);
        let mut sum = |parts: Vec<Vec<u8>>| -> anyhow::Result<Vec<u8>> {
            combined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let n: u64 = parts
                .iter()
                .map(|p| std::str::from_utf8(p).unwrap().parse::<u64>().unwrap())
                .sum();
            Ok(n.to_string().into_bytes())
        };
        let range = |first_index: u64, events: u64| ChunkId {
            job: id,
            seq: first_index,
            first_index,
            events,
        };
        let (first, second) = (report(0, &["1", "2"]), report(2, &["3"]));
        let mut commit = async |r: ChunkId, report: &ChunkReport| {
            let combine = Some(&mut sum as &mut Combine<'_>);
            store
                .complete_chunk(r, &job, report, "test", combine, None)
                .await
                .unwrap()
        };
        assert_eq!(
            commit(range(0, 2), &first).await,
            Committed::Stored { finished: false }
        );
        assert_eq!(commit(range(0, 2), &first).await, Committed::Duplicate);
        assert_eq!(
            commit(range(0, 1), &report(0, &["1"])).await,
            Committed::Duplicate,
            "a piece of a committed range"
        );
        assert_eq!(
            commit(range(2, 1), &second).await,
            Committed::Stored { finished: true }
        );
        assert_eq!(commit(range(2, 1), &second).await, Committed::Duplicate);
        let j = store.job(id).await.unwrap().unwrap();
        assert_eq!((j.events_out, j.dead_letters, j.chunks_done), (3, 2, 2));
        assert_eq!(j.result.as_deref(), Some("3"));
        assert_eq!(
            combined.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the result is combined once, by the last commit"
        );
    });
    assert_eq!(
        psql(
            &format!("{}/{db}", svc.postgres),
            "SELECT (SELECT count(*) FROM wasmpipe.events), (SELECT count(*) FROM wasmpipe.dead_letters)",
        ),
        "3|2",
        "stored events and dead letters"
    );
}

/// `POST /v1/logs` on an ingest node: the export's records go through
/// JetStream to a worker and are stored in PostgreSQL once each, in
/// order, like any batch's; so are those of the real Python SDK.
#[test]
fn an_ingest_node_takes_opentelemetry_logs_for_its_workers() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message as _;

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stages = format!(
        "[[stage]]\nname = \"stamp\"\nkind = \"map\"\nplugin = {}\n",
        toml_path(&plugin("stamp"))
    );
    let c = Cluster::start_full("otlp", &stages, "chunk_size = 4\n", "", "", 1);
    let records: Vec<LogRecord> = (0..10)
        .map(|i| LogRecord {
            time_unix_nano: 1_796_637_600_000_000_000 + i,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("line {i}"))),
            }),
            ..Default::default()
        })
        .collect();
    let export = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = agent()
        .post(c.url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .send(&export.encode_to_vec()[..])
        .expect("POST failed");
    assert_eq!(r.status().as_u16(), 200);
    let id: i64 = c
        .sql("SELECT max(id) FROM wasmpipe.jobs")
        .parse()
        .expect("a job");
    let job = c.wait_done(id, 60);
    assert_eq!(
        (job["events_in"].as_i64(), job["events_out"].as_i64()),
        (Some(10), Some(10))
    );
    let rows = c.sql(&format!(
        "SELECT body::jsonb->>'body', body::jsonb->'request'->>'pipeline' FROM wasmpipe.events WHERE job = {id} ORDER BY idx"
    ));
    let expected: Vec<String> = (0..10).map(|i| format!("line {i}|otlp")).collect();
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        expected,
        "each record once, in order"
    );

    // The real Python SDK (examples/otel/app.py) through the ingest node.
    crate::otlp::run_python_app(&c.url("/v1/logs"), 10, &[]);
    let count = |what: &str| -> i64 {
        c.sql(&format!(
            "SELECT count({what}) FROM wasmpipe.events WHERE body::jsonb->'scope'->>'name' = 'checkout.payments'"
        ))
        .parse()
        .unwrap()
    };
    let t = Instant::now();
    while count("*") < 10 {
        assert!(t.elapsed() < Duration::from_secs(60), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (count("*"), count("DISTINCT body::jsonb->>'body'")),
        (10, 10),
        "each record once"
    );
}

#[test]
fn an_ingest_node_searches_and_answers_read_only_sql_on_postgres() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start_full(
        "logs",
        &crate::search::stages(),
        "chunk_size = 40\n",
        "",
        crate::search::SERVE,
        2,
    );
    let base = c.url("");
    let events = crate::search::corpus(400);
    for id in crate::search::post_events(&base, &events) {
        c.wait_done(id, 60);
    }
    crate::search::check_searches(&base, &events);
    // The text index and the field indexes were built.
    let indexes = c.sql(
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes \
         WHERE schemaname = 'wasmpipe' AND tablename = 'events'",
    );
    assert!(
        indexes.contains("events_text") && indexes.contains("events_field_service"),
        "{indexes}"
    );

    // SQL in PostgreSQL's dialect, the same views.
    let q = |sql: &str| crate::search::query(&base, &json!({ "sql": sql }));
    let r =
        q("SELECT data->>'service' AS service, count(*) AS n FROM events GROUP BY 1 ORDER BY 1");
    assert_eq!(r.status, 200, "{}", r.body);
    let third = events.len() / 3 + 1;
    assert_eq!(r.json()["columns"], json!(["service", "n"]));
    assert_eq!(
        r.json()["rows"][0],
        json!([
            "api",
            events.iter().filter(|e| e["service"] == "api").count()
        ]),
        "{}",
        r.body
    );
    assert!(r.json()["rows"][1][1].as_u64().unwrap() <= third as u64);
    let r = q("SELECT count(*) AS jobs, sum(events_out) AS out FROM jobs");
    assert_eq!(r.json()["rows"], json!([[2, 400]]), "{}", r.body);

    let checksum = || {
        ["events", "dead_letters", "jobs", "windows", "inputs", "chunks"]
            .map(|t| c.sql(&format!("SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM wasmpipe.{t} x")))
            .join(",")
    };
    let before = checksum();
    let mut refused: Vec<(&str, u16)> = crate::search::REFUSED.to_vec();
    refused.extend([
        ("SELECT * FROM wasmpipe.inputs", 403),
        ("SELECT pg_read_file('/etc/passwd')", 403),
        ("SELECT set_config('role', 'none', true), query_to_xml('SELECT * FROM wasmpipe.inputs', true, false, '')", 403),
        ("SELECT * FROM events FOR UPDATE", 403),
        ("SELECT lo_import('/etc/passwd')", 403),
        ("COPY (SELECT 1) TO '/tmp/wasmpipe-copy'", 0),
        ("SELEC 1", 400),
    ]);
    for (sql, status) in refused {
        crate::search::assert_refused(&base, sql, status);
    }
    let r = crate::search::query(
        &base,
        &json!({ "sql": "SELECT pg_sleep(5)", "timeout_ms": 300 }),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.error().contains("timeout"), "{}", r.body);
    let r = crate::search::query(
        &base,
        &json!({ "sql": "SELECT id FROM events", "limit": 10 }),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        checksum(),
        before,
        "the database changed under read-only SQL"
    );
    assert!(!Path::new("/tmp/wasmpipe-copy").exists());
    // The pooled connections are as they were: SQL and the API still work.
    assert_eq!(
        q("SELECT count(*) AS n FROM events").json()["rows"],
        json!([[400]])
    );
}

#[test]
fn a_version_2_postgres_schema_is_upgraded_in_place_and_searched() {
    use wasmpipe::store::postgres::PgStore;
    use wasmpipe::store::{EventQuery, FieldPath, Indexing, Search};

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let svc = services();
    let db = "wasmpipe_test_upgrade";
    let admin = format!("{}/postgres", svc.postgres);
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    psql(&admin, &format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", svc.postgres);
    let indexing = Indexing {
        fields: vec![FieldPath::pointer("/service").unwrap()],
        ..Indexing::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A version 4 schema taken back to version 2 (no event time, no text
    // of dead letters, no views, no search indexes), with events in it.
    rt.block_on(PgStore::connect(&url, 2, &indexing)).unwrap();
    psql(
        &url,
        "DROP SCHEMA wasmpipe_query CASCADE; DROP INDEX wasmpipe.events_text, wasmpipe.events_time, wasmpipe.dead_text; \
         DROP INDEX wasmpipe.events_field_service_9df6b026; \
         ALTER TABLE wasmpipe.events DROP COLUMN time; ALTER TABLE wasmpipe.dead_letters DROP COLUMN words; \
         DROP TABLE wasmpipe.deployments, wasmpipe.deployment_stats; \
         UPDATE wasmpipe.schema_version SET version = 2; \
         INSERT INTO wasmpipe.events (job, pipeline, idx, at, body) VALUES \
           (1, 'p', 0, 1000, '{\"service\":\"auth\",\"msg\":\"db timeout\"}'), \
           (1, 'p', 1, 1000, '{\"service\":\"api\",\"msg\":\"fine\"}')",
    );
    let store = rt.block_on(PgStore::connect(&url, 2, &indexing)).unwrap();
    assert_eq!(
        psql(&url, "SELECT max(version) FROM wasmpipe.schema_version"),
        "4"
    );
    // Version 4's deployments came with the upgrade.
    assert_eq!(psql(&url, "SELECT count(*) FROM wasmpipe.deployments"), "0");
    let indexes = psql(
        &url,
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'wasmpipe'",
    );
    for want in [
        "events_text",
        "events_time",
        "dead_text",
        "events_field_service_9df6b026",
    ] {
        assert!(indexes.contains(want), "{want} missing: {indexes}");
    }
    let search = Search::parse("timeout service:auth").unwrap();
    let found = rt
        .block_on(store.events(&EventQuery {
            terms: search.terms,
            fields: search.fields,
            limit: 10,
            ..EventQuery::default()
        }))
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].index, found[0].time),
        (0, 1000),
        "old events get their arrival as their time"
    );
    // Connecting again changes nothing.
    rt.block_on(PgStore::connect(&url, 2, &indexing)).unwrap();
    assert_eq!(
        psql(&url, "SELECT count(*) FROM wasmpipe.schema_version"),
        "2"
    );
}

/// A nats-server of a test's own, with TLS that verifies its clients
/// (the services' server is plain); killed when dropped.
struct TlsNats {
    child: std::process::Child,
    url: String,
}

impl TlsNats {
    fn start(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> TlsNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = write(
            dir,
            "nats.conf",
            &format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {} }}\n\
                 tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n}}\n",
                toml_path(&dir.join("js")),
                toml_path(cert),
                toml_path(key),
                toml_path(ca)
            ),
        );
        let log = dir.join("nats.log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .spawn()
            .expect("cannot start nats-server");
        let t = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server is ready")
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsNats {
            child,
            url: format!("tls://127.0.0.1:{port}"),
        }
    }
}

impl Drop for TlsNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_cluster_runs_over_verified_tls_to_postgres_and_nats() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::Ca::new("nats CA");
    let (ca_file, cert, key, _) = ca.files(dir.path(), "nats-server");
    let (_, client_cert, client_key, _) = ca.files(dir.path(), "wasmpipe");
    let nats = TlsNats::start(dir.path(), &ca_file, &cert, &key);
    let pg_ca = std::env::var("WASMPIPE_TEST_CA")
        .expect("WASMPIPE_TEST_CA is not set: start the services with `bash tests/services start`");
    let queue = format!(
        "tls_ca = {}\ntls_cert = {}\ntls_key = {}\n",
        toml_path(&ca_file),
        toml_path(&client_cert),
        toml_path(&client_key)
    );
    let at = Endpoints {
        nats: Some(nats.url.clone()),
        store_options: format!(
            "?sslmode=verify-full&sslrootcert={pg_ca}&application_name=wasmpipe_tls"
        ),
    };
    let c = Cluster::start_at(
        "tls",
        &adder_stages(),
        "chunk_size = 100\n",
        &queue,
        "",
        2,
        &at,
    );
    let id = c.post(&numbers(1000));
    let job = c.wait_done(id, 120);
    assert_eq!(job["result"], doubled_sum(1000), "{job}");
    c.assert_stored_once(id, 1000);
    // Every connection of the ingest node and the workers is encrypted.
    let seen = psql(
        &format!("{}/postgres", services().postgres),
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'wasmpipe_tls'",
    );
    let (tls, plain) = seen.split_once('|').unwrap();
    assert!(tls.parse::<u32>().unwrap() >= 3, "{seen}");
    assert_eq!(plain, "0", "{seen}");

    // PostgreSQL's certificate checked against the wrong CA: the worker
    // stops at once and says it was the certificate.
    let text = std::fs::read_to_string(&c.manifest)
        .unwrap()
        .replace(&pg_ca, ca_file.to_str().unwrap());
    let wrong = write(dir.path(), "wrong.toml", &text);
    let out = crate::util::run_bounded(
        wasmpipe()
            .args(["worker", "--workers", "1"])
            .arg(&wrong)
            .env("WASMPIPE_NATS_URL", &nats.url),
        Duration::from_secs(60),
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
}

#[test]
fn passwords_and_tokens_stay_out_of_errors() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let svc = services();
    let manifest = |store: &str| {
        write(
            dir.path(),
            "secret.toml",
            &format!(
                "[pipeline]\nname = \"secret\"\n{}\n[queue]\nkind = \"nats\"\n\
                 [store]\nkind = \"postgres\"\nurl = \"{store}\"\n",
                adder_stages()
            ),
        )
    };
    // A PostgreSQL password, in a URL and in libpq's key=value form.
    for store in [
        "postgres://postgres:pw-s3cret@127.0.0.1:1/x".to_string(),
        "host=127.0.0.1 port=1 user=postgres password='pw s3cret'".to_string(),
    ] {
        let m = manifest(&store);
        let out = crate::util::run_bounded(
            wasmpipe().args(["worker", "--workers", "1"]).arg(&m),
            Duration::from_secs(60),
        );
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("PostgreSQL"), "{}", out.stderr);
        assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    }
    // A NATS token in the URL, with NATS not there.
    let m = manifest(&format!("{}/postgres", svc.postgres));
    let out = crate::util::run_bounded(
        wasmpipe()
            .args(["worker", "--workers", "1"])
            .arg(&m)
            .env("WASMPIPE_NATS_URL", "nats://tok-s3cret@127.0.0.1:1"),
        Duration::from_secs(60),
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("NATS"), "{}", out.stderr);
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
}

/// A POST to the ingest node's API with `body`; (status, JSON answer).
fn api_post(c: &Cluster, path: &str, body: &[u8]) -> (u16, Value) {
    let r = crate::util::http::request(
        "POST",
        &c.url(path),
        &[("content-type", "application/wasm")],
        Some(body),
    )
    .unwrap();
    (r.status, r.json())
}

#[test]
fn a_canary_through_an_ingest_node_runs_on_every_worker_across_a_kill_and_a_promote() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stages = format!(
        "[[stage]]\nname = \"s\"\nkind = \"map\"\nplugin = {}\n",
        toml_path(&plugin("faulty"))
    );
    let mut c = Cluster::start_full(
        "deploys",
        &stages,
        "chunk_size = 8\nlineage = true\n",
        "ack_wait = \"1s\"",
        "",
        2,
    );
    let (fv, dv) = (
        short_version(&plugin("faulty")),
        short_version(&plugin("double")),
    );
    let (status, d) = api_post(
        &c,
        "/v1/deployments?stage=s&mode=canary&percent=50",
        &std::fs::read(plugin("double")).unwrap(),
    );
    assert_eq!(status, 201, "{d}");
    let id = d["id"].as_i64().unwrap();
    // Every worker loads the candidate from PostgreSQL within a second or so.
    let t = Instant::now();
    while !c
        .workers
        .iter()
        .all(|w| w.log().contains(&format!("deployment {id}: version {dv}")))
    {
        assert!(t.elapsed() < Duration::from_secs(15), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Even numbers: none of them is one `faulty` fails.
    let batch = |j: i64, n: i64| -> (String, Vec<i64>) {
        let ns: Vec<i64> = (0..n).map(|i| j * 100_000 + i * 10 + 20).collect();
        (ns.iter().map(|n| format!("{{\"n\":{n}}}\n")).collect(), ns)
    };
    let mut posted = Vec::new();
    for j in 0..4 {
        let (body, ns) = batch(j, 400);
        posted.push((c.post(&body), ns));
    }
    c.wait(posted[0].0, 60, |j| j["chunks_done"].as_u64() >= Some(10));
    c.workers[0].kill();
    c.add_worker();
    // The deployment is PostgreSQL's: an ingest node killed and started
    // again finds it as it was.
    c.restart_ingest();
    let r = crate::util::http::request("GET", &c.url(&format!("/v1/deployments/{id}")), &[], None)
        .unwrap();
    assert_eq!(r.json()["state"], "active", "{}", r.body);
    for (job, _) in &posted {
        c.wait_done(*job, 120);
    }
    // Each event stored once, by one version per chunk, both versions seen.
    let mut by_chunk: BTreeMap<(i64, u64), BTreeSet<String>> = BTreeMap::new();
    for (job, ns) in &posted {
        let rows = c.sql(&format!(
            "SELECT idx, body FROM wasmpipe.events WHERE job = {job} ORDER BY idx"
        ));
        let rows: Vec<&str> = rows.lines().collect();
        assert_eq!(rows.len(), ns.len(), "job {job}");
        for (i, row) in rows.iter().enumerate() {
            let (idx, body) = row.split_once('|').unwrap();
            assert_eq!(
                idx.parse::<usize>().unwrap(),
                i,
                "job {job}: stored twice or lost"
            );
            let ev: Value = serde_json::from_str(body).unwrap();
            let version = ev["_versions"]["s"].as_str().unwrap().to_string();
            let want = if version == dv { 2 * ns[i] } else { ns[i] };
            assert!(version == dv || version == fv, "{ev}");
            assert_eq!(ev["n"], want, "{ev}");
            by_chunk
                .entry((*job, i as u64 / 8))
                .or_default()
                .insert(version);
        }
    }
    assert!(by_chunk.values().all(|v| v.len() == 1), "{by_chunk:?}");
    let on_candidate = by_chunk.values().filter(|v| v.contains(&dv)).count();
    assert!(
        on_candidate > 20 && on_candidate < 180,
        "{on_candidate} of {} chunks on the candidate",
        by_chunk.len()
    );
    // Promoted through the ingest node: every worker, and one started
    // after it, runs the candidate.
    let (status, d) = api_post(&c, &format!("/v1/deployments/{id}/promote"), b"");
    assert_eq!(status, 200, "{d}");
    let t = Instant::now();
    while !c.workers[1..].iter().all(|w| {
        w.log().contains(&format!(
            "deployment {id}: version {dv} of stage `s` promoted"
        ))
    }) {
        assert!(t.elapsed() < Duration::from_secs(15), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    c.add_worker();
    let (body, ns) = batch(9, 160);
    let job = c.post(&body);
    c.wait_done(job, 60);
    let sum: i64 = c
        .sql(&format!(
            "SELECT sum((body::jsonb->>'n')::bigint) FROM wasmpipe.events WHERE job = {job} AND body::jsonb->'_versions'->>'s' = '{dv}'"
        ))
        .parse()
        .unwrap();
    assert_eq!(sum, 2 * ns.iter().sum::<i64>(), "{}", c.logs());
    // The workers' figures reach the API through PostgreSQL.
    let r = crate::util::http::request("GET", &c.url(&format!("/v1/deployments/{id}")), &[], None)
        .unwrap();
    let d = r.json();
    assert_eq!(d["state"], "promoted", "{d}");
    assert!(
        d["tally"]["candidate"]["chunks"].as_u64().unwrap() > 0,
        "{d}"
    );
}
