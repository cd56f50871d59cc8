//! Search and SQL over a large store of W2 events (docs/performance.md,
//! "Search and SQL"):
//!
//! 1. builds, once, a store of at least `--events` events (10 M): W2's
//!    `logs.jsonl` posted through `wasmpipe serve` with the W2 stage
//!    (`log_enrich`), again and again, each pass `k` with its `ts` moved
//!    `k` days on, so that the store spans several days; `[serve]` indexes
//!    `/service`, `/level` and `/user_id`, takes `/ts` as the event's time
//!    and keeps the full-text index. A store that already holds enough
//!    events is reused (one that holds fewer is completed);
//! 2. times the first page of searches (a common word, a rare one, one
//!    that occurs nowhere, a phrase, a field over an hour, an absent field
//!    value, a word with a field), a histogram of a search over a day, and
//!    read-only SQL (count per service per minute over a day, count per
//!    level over the whole store): each 5 times, median and max, every
//!    answer checked (status, rows, order, and exact counts where the data
//!    says what they must be);
//! 3. times ingest (`--ingest-events` events, posted the same way, from
//!    the first post until every job is done) into a fresh database with
//!    the indexes on and off, alternated, `--rounds` times each, and the
//!    store's size on disk per event. `--breakdown` adds runs with one
//!    kind of index each (full text; the three fields; the time), to see
//!    what each costs.
//!
//! Run with: bash bench/run-query   (builds everything, writes the data)
//! or: target/release/query [--events N] [--ingest-events N] [--rounds N] [--store DIR]
//!                          [--breakdown] [--chunk-size N] [--no-queries]
//!
//! `--no-queries` skips the store and its queries (ingest only);
//! `--rounds 0` skips ingest (queries only).
//!
//! The data is `$REFERENCE_DIR/data/logs.jsonl` (default
//! `~/.cache/wasmpipe-reference`), written by `../shared/reference/run`.

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// Events per posted batch (NDJSON).
const BATCH: usize = 10_000;
/// Client threads posting batches.
const CLIENTS: usize = 2;
const PIPELINE: &str = "logs";
/// W2's stage params, as compare.rs gives them.
const RECEIVED_AT: &str = "2026-11-27T12:00:00.000Z";
const HOST: &str = "bench-host";
/// Times each query runs.
const RUNS: usize = 5;
/// What the queries look for in W2's data (see `Expect`).
const COMMON_WORD: &str = "timeout";
const RARE_USER: &str = "u93741";
const NO_WORD: &str = "zyzzyva";
const PHRASE: &str = "connection timeout";
const SERVICE: &str = "cart";
const NO_USER: &str = "u-nobody";

struct Opts {
    events: u64,
    ingest_events: u64,
    rounds: usize,
    breakdown: bool,
    /// `[serve] chunk_size` of every manifest (wasmpipe's default when `None`).
    chunk_size: Option<u64>,
    /// Build (or reuse) the store and time the queries; without, only ingest.
    queries: bool,
    store: PathBuf,
    reference: PathBuf,
}

fn main() -> Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let mut opts = Opts {
        events: 10_000_000,
        ingest_events: 1_000_000,
        rounds: 2,
        breakdown: false,
        chunk_size: None,
        queries: true,
        store: home.join(".cache/wasmpipe-query-bench"),
        reference: std::env::var_os("REFERENCE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/wasmpipe-reference")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => opts.events = args.next().context("--events N")?.parse()?,
            "--ingest-events" => {
                opts.ingest_events = args.next().context("--ingest-events N")?.parse()?
            }
            "--rounds" => opts.rounds = args.next().context("--rounds N")?.parse()?,
            "--store" => opts.store = args.next().context("--store DIR")?.into(),
            "--breakdown" => opts.breakdown = true,
            "--chunk-size" => {
                opts.chunk_size = Some(args.next().context("--chunk-size N")?.parse()?)
            }
            "--no-queries" => opts.queries = false,
            _ => bail!(
                "unknown argument `{a}`; use --events N, --ingest-events N, --rounds N, --store DIR, --breakdown, --chunk-size N, --no-queries"
            ),
        }
    }
    ensure!(
        opts.events > 0 && opts.ingest_events > 0,
        "--events and --ingest-events must be positive"
    );
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let repo = bin_dir.join("../..").canonicalize()?;
    let plugin = repo.join("plugins/target/wasm32-wasip1/release/log_enrich.wasm");
    ensure!(
        plugin.is_file(),
        "the plugin log_enrich is not built: `cd plugins && cargo build --release` (bash bench/run-query does)"
    );
    let data = opts.reference.join("data/logs.jsonl");
    ensure!(
        data.is_file(),
        "no {}: run `bash ../shared/reference/run --rounds 1` (bash bench/run-query does)",
        data.display()
    );
    std::fs::create_dir_all(&opts.store)?;
    let store = opts.store.canonicalize()?;
    // A copy of the binary: a build finishing during the run must not
    // change the program half-way.
    let wasmpipe = store.join("wasmpipe");
    std::fs::copy(bin_dir.join("wasmpipe"), &wasmpipe).context("copying wasmpipe")?;
    let version = Command::new(&wasmpipe).arg("--version").output()?;

    let t = Instant::now();
    let logs = Logs::read(&data)?;
    eprintln!(
        "read {} events of {} in {:.1} s",
        logs.lines.len(),
        data.display(),
        t.elapsed().as_secs_f64()
    );

    println!("# Search and SQL over stored W2 events\n");
    println!(
        "{}, nproc = {}, store {}, {} client threads posting NDJSON batches of {BATCH} events\n",
        String::from_utf8_lossy(&version.stdout).trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        store.display(),
        CLIENTS,
    );

    if let Some(n) = opts.chunk_size {
        println!("`[serve] chunk_size = {n}` in every manifest\n");
    }
    let env = Env {
        wasmpipe,
        plugin,
        logs,
        chunk_size: opts.chunk_size,
    };
    let mut failures = Vec::new();
    // 1. The store, and the queries on it.
    if opts.queries {
        let db_dir = store.join("store");
        std::fs::create_dir_all(&db_dir)?;
        let server = env.start(&db_dir, Indexes::ON)?;
        let count = build_store(&env, &server.api, opts.events)?;
        println!();
        run_queries(&env, &server.api, count, &mut failures)?;
        server.stop()?;
        let size = disk_size(&db_dir)?;
        println!(
            "\nStore on disk: {:.2} GB, {:.0} bytes per event (.db and -wal files after the server stopped; the journaled input is kept).\n",
            size as f64 / 1e9,
            size as f64 / count as f64
        );
    }

    // 2. Ingest with the indexes on and off, alternated (`--rounds 0`:
    // not at all).
    if opts.rounds > 0 {
        ingest(&env, &store, &opts, &mut failures)?;
    }

    if !failures.is_empty() {
        println!("\n**Checks failed:**\n");
        for f in &failures {
            println!("- {f}");
        }
        bail!("{} checks failed", failures.len());
    }
    Ok(())
}

/// W2's events, one line each, and what the queries expect of them.
struct Logs {
    bytes: Vec<u8>,
    /// Each line's start and end (without its newline).
    lines: Vec<(usize, usize)>,
    /// The date every `ts` has (days since the epoch), and the hour of
    /// the first one.
    day0: i64,
    first_hour: i64,
}

impl Logs {
    fn read(path: &Path) -> Result<Logs> {
        let bytes = std::fs::read(path)?;
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                if i > start {
                    lines.push((start, i));
                }
                start = i + 1;
            }
        }
        if start < bytes.len() {
            lines.push((start, bytes.len()));
        }
        ensure!(!lines.is_empty(), "{} is empty", path.display());
        let mut logs = Logs {
            bytes,
            lines,
            day0: 0,
            first_hour: 0,
        };
        // Every pass moves the dates by whole days: each line must begin
        // with its `ts`, and every `ts` be on the same day, so that pass k
        // is exactly day0 + k.
        let first = logs.line(0);
        let (day0, first_hour) = (
            date_of(first)?,
            std::str::from_utf8(first.get(18..20).context("ts")?)?.parse()?,
        );
        (logs.day0, logs.first_hour) = (day0, first_hour);
        for i in 0..logs.lines.len() {
            let d = date_of(logs.line(i))?;
            ensure!(
                d == logs.day0,
                "line {} of {} is on another day than the first: the passes' days would overlap",
                i + 1,
                path.display()
            );
        }
        Ok(logs)
    }

    fn line(&self, i: usize) -> &[u8] {
        let (a, b) = self.lines[i];
        &self.bytes[a..b]
    }

    fn len(&self) -> u64 {
        self.lines.len() as u64
    }

    /// The NDJSON body of lines `from..to` of pass `pass` (dates moved
    /// `pass` days on).
    fn body(&self, pass: u64, from: usize, to: usize) -> Vec<u8> {
        let (a, _) = self.lines[from];
        let (_, b) = self.lines[to - 1];
        let mut out = Vec::with_capacity(b - a + (to - from));
        if pass == 0 {
            for i in from..to {
                out.extend_from_slice(self.line(i));
                out.push(b'\n');
            }
            return out;
        }
        let (y, m, d) = civil_from_days(self.day0 + pass as i64);
        let date = format!("{y:04}-{m:02}-{d:02}");
        for i in from..to {
            let line = self.line(i);
            out.extend_from_slice(&line[..7]);
            out.extend_from_slice(date.as_bytes());
            out.extend_from_slice(&line[17..]);
            out.push(b'\n');
        }
        out
    }

    /// The lines (indexes) that `pred` holds for.
    fn lines_where(&self, pred: impl Fn(&[u8]) -> bool) -> Vec<usize> {
        (0..self.lines.len())
            .filter(|&i| pred(self.line(i)))
            .collect()
    }

    /// Of a store holding the first `count` events posted, the number
    /// stored in pass `pass` (whole passes are the whole file).
    fn stored_in_pass(&self, count: u64, pass: u64) -> u64 {
        count.saturating_sub(pass * self.len()).min(self.len())
    }

    /// How many of `lines` a store of `count` events holds, in all passes
    /// or in pass `pass` only.
    fn count_of(&self, lines: &[usize], count: u64, pass: Option<u64>) -> u64 {
        let passes = count.div_ceil(self.len());
        (0..passes)
            .filter(|p| pass.is_none_or(|q| q == *p))
            .map(|p| {
                let n = self.stored_in_pass(count, p) as usize;
                lines.iter().take_while(|&&i| i < n).count() as u64
            })
            .sum()
    }
}

/// The string value of `"key":"` in a W2 line (no escapes in W2's values).
fn value_of<'a>(line: &'a [u8], key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let at = line.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&line[at..at + len]).ok()
}

/// The words of `text`, as the search index splits them: runs of letters
/// and digits, lower-cased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Days since the epoch of the `ts` a W2 line begins with.
fn date_of(line: &[u8]) -> Result<i64> {
    ensure!(
        line.starts_with(b"{\"ts\":\"") && line.len() > 17,
        "a W2 line begins with its `ts`: {}",
        String::from_utf8_lossy(&line[..line.len().min(40)])
    );
    let s = std::str::from_utf8(&line[7..17])?;
    let p = |r: std::ops::Range<usize>| -> Result<i64> {
        s.get(r).context("date")?.parse().context("date")
    };
    Ok(days_from_civil(p(0..4)?, p(5..7)?, p(8..10)?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM` of milliseconds since the epoch.
fn rfc3339_minute(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let in_day = ms.rem_euclid(DAY_MS) / 60_000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}", in_day / 60, in_day % 60)
}

/// Percent-encodes a query-string value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `[serve]` indexes of a manifest.
#[derive(Clone, Copy)]
struct Indexes {
    /// `full_text`
    full_text: bool,
    /// `index = ["/service", "/level", "/user_id"]`
    fields: bool,
    /// `time = "/ts"`
    time: bool,
}

impl Indexes {
    const ON: Indexes = Indexes {
        full_text: true,
        fields: true,
        time: true,
    };
    const OFF: Indexes = Indexes {
        full_text: false,
        fields: false,
        time: false,
    };

    fn name(self) -> &'static str {
        match (self.full_text, self.fields, self.time) {
            (true, true, true) => "on (full text, 3 fields, time)",
            (false, false, false) => "off",
            (true, false, false) => "full text only",
            (false, true, true) => "3 fields and time only",
            (false, true, false) => "3 fields only",
            (false, false, true) => "time only",
            _ => "other",
        }
    }
}

struct Env {
    wasmpipe: PathBuf,
    plugin: PathBuf,
    logs: Logs,
    chunk_size: Option<u64>,
}

impl Env {
    /// The manifest of the W2 stage storing into `dir/events.db`, with
    /// the indexes of `indexes`.
    fn manifest(&self, dir: &Path, indexes: Indexes) -> Result<PathBuf> {
        let mut serve = format!("full_text = {}\n", indexes.full_text);
        if indexes.fields {
            serve.push_str("index = [\"/service\", \"/level\", \"/user_id\"]\n");
        }
        if indexes.time {
            serve.push_str("time = \"/ts\"\n");
        }
        if let Some(n) = self.chunk_size {
            serve.push_str(&format!("chunk_size = {n}\n"));
        }
        let text = format!(
            "[pipeline]\nname = \"{PIPELINE}\"\n\n[runtime]\nworkers = 2\n\n\
             [serve]\ndatabase = {:?}\nmax_body = \"64MiB\"\nmax_events = 100000\nmax_backlog = 2000000\n{serve}\n\
             [[stage]]\nname = \"log_enrich\"\nkind = \"map\"\nplugin = {:?}\n\
             params = {{ received_at = \"{RECEIVED_AT}\", host = \"{HOST}\" }}\n",
            dir.join("events.db").display().to_string(),
            self.plugin.display().to_string(),
        );
        let path = dir.join("manifest.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `wasmpipe serve` on a loopback port over `dir`'s database.
    fn start(&self, dir: &Path, indexes: Indexes) -> Result<Server> {
        let manifest = self.manifest(dir, indexes)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))?;
        let mut child = Command::new(&self.wasmpipe)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg(&manifest)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start wasmpipe serve")?;
        let mut lines = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = match lines.next() {
            Some(line) => line?,
            None => {
                let _ = child.wait();
                bail!(
                    "the server exited; see {}",
                    dir.join("server.log").display()
                );
            }
        };
        let base = first
            .strip_prefix("listening on ")
            .with_context(|| format!("not a listening line: {first}"))?
            .to_string();
        // Whatever else it prints must not fill the pipe.
        std::thread::spawn(move || lines.for_each(drop));
        // No `timeout_global`: with it, ureq 3.5 took about 4 ms more for
        // each request on this machine (0.2-0.5 ms answers measured as
        // 4 ms), which would hide what the quick queries cost.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Server {
            child: Some(child),
            api: Api { base, agent },
        })
    }

    /// Posts the events `from..to` of the endless sequence "the file, the
    /// file a day later, ..." from `CLIENTS` threads, in batches; prints
    /// progress when `progress`.
    fn post(&self, api: &Api, from: u64, to: u64, progress: bool) -> Result<()> {
        let n = self.logs.len();
        let mut plan = Vec::new();
        let mut g = from;
        while g < to {
            let (pass, line) = (g / n, (g % n) as usize);
            let end = (line + BATCH).min(n as usize).min(line + (to - g) as usize);
            plan.push((pass, line, end));
            g += (end - line) as u64;
        }
        let next = AtomicUsize::new(0);
        let posted = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        while !failed.load(Relaxed) {
                            let Some(&(pass, a, b)) = plan.get(next.fetch_add(1, Relaxed)) else {
                                return Ok(());
                            };
                            let body = self.logs.body(pass, a, b);
                            if let Err(e) = api.post_batch(&body, b - a) {
                                failed.store(true, Relaxed);
                                return Err(e);
                            }
                            posted.fetch_add((b - a) as u64, Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            let mut last = Instant::now();
            while progress && !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(30) {
                    last = Instant::now();
                    let p = posted.load(Relaxed);
                    eprintln!(
                        "  {:>5.0} s: posted {} of {} events, stored {} ({:.0} events/s posted)",
                        start.elapsed().as_secs_f64(),
                        from + p,
                        to,
                        api.counter("wasmpipe_events_stored_total").unwrap_or(0),
                        p as f64 / start.elapsed().as_secs_f64()
                    );
                }
            }
            for h in handles {
                h.join().expect("client thread")?;
            }
            Ok(())
        })
    }
}

struct Server {
    child: Option<Child>,
    api: Api,
}

impl Server {
    /// SIGTERM, and wait for it to exit.
    fn stop(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait()?;
            ensure!(
                status.success() || status.code().is_none(),
                "the server exited with {status}"
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Clone)]
struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// Posts one NDJSON batch of `n` events until it is accepted.
    fn post_batch(&self, body: &[u8], n: usize) -> Result<()> {
        let url = format!("{}/v1/pipelines/{PIPELINE}/jobs", self.base);
        loop {
            let mut r = self
                .agent
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .send(body)?;
            let text = r.body_mut().read_to_string()?;
            match r.status().as_u16() {
                202 => {
                    let v: Value = serde_json::from_str(&text)?;
                    ensure!(
                        v["accepted"].as_u64() == Some(n as u64),
                        "posted {n} events, answer {text}"
                    );
                    return Ok(());
                }
                429 | 503 => std::thread::sleep(Duration::from_millis(100)),
                s => bail!("POST {url}: status {s}: {text}"),
            }
        }
    }

    /// GET: status, body and milliseconds until the body was read.
    fn get(&self, path: &str) -> Result<(u16, String, f64)> {
        let t = Instant::now();
        let mut r = self.agent.get(format!("{}{path}", self.base)).call()?;
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        Ok((r.status().as_u16(), text, t.elapsed().as_secs_f64() * 1e3))
    }

    /// `POST /v1/query`: status, body and milliseconds.
    fn sql(&self, sql: &str, limit: u32) -> Result<(u16, String, f64)> {
        let body = json!({"sql": sql, "limit": limit, "timeout_ms": 10_000}).to_string();
        let t = Instant::now();
        let mut r = self
            .agent
            .post(format!("{}/v1/query", self.base))
            .header("content-type", "application/json")
            .send(body.as_bytes())?;
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        Ok((r.status().as_u16(), text, t.elapsed().as_secs_f64() * 1e3))
    }

    /// The one number a query answers (`null` as 0).
    fn scalar(&self, sql: &str) -> Result<i64> {
        let (status, text, _) = self.sql(sql, 1)?;
        ensure!(status == 200, "{sql}: status {status}: {text}");
        let v: Value = serde_json::from_str(&text)?;
        let cell = &v["rows"][0][0];
        Ok(if cell.is_null() {
            0
        } else {
            cell.as_i64().with_context(|| format!("{sql}: {text}"))?
        })
    }

    /// A counter or gauge of the pipeline from `/metrics`.
    fn counter(&self, name: &str) -> Result<u64> {
        let (status, text, _) = self.get("/metrics")?;
        ensure!(status == 200, "/metrics: status {status}");
        let prefix = format!("{name}{{pipeline=\"{PIPELINE}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .with_context(|| format!("no {name} in /metrics"))?
            .trim()
            .parse()
            .context(name.to_string())
    }

    /// Waits until every accepted event is processed and every job done.
    fn wait_idle(&self) -> Result<()> {
        loop {
            if self.counter("wasmpipe_queue_events")? == 0
                && self.scalar("SELECT count(*) FROM jobs WHERE finished_at IS NULL")? == 0
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sum of the sizes of the database files (`.db`, `.db-wal`) in `dir`.
fn disk_size(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".db") || name.ends_with(".db-wal") {
            n += e.metadata()?.len();
        }
    }
    Ok(n)
}

/// Brings the store to at least `events` events; its event count.
fn build_store(env: &Env, api: &Api, events: u64) -> Result<u64> {
    // Jobs a previous build left queued are finished first.
    api.wait_idle()?;
    let have = api.scalar("SELECT count(*) FROM events")? as u64;
    if have >= events {
        println!(
            "Store: reused, it holds {have} events already (at least the {events} asked): not rebuilt."
        );
        return Ok(have);
    }
    if have > 0 {
        eprintln!("the store holds {have} events: completing it to {events}");
    } else {
        eprintln!("building the store: {events} events");
    }
    let t = Instant::now();
    env.post(api, have, events, true)?;
    let posted = t.elapsed().as_secs_f64();
    api.wait_idle()?;
    let secs = t.elapsed().as_secs_f64();
    let count = api.scalar("SELECT count(*) FROM events")? as u64;
    let dead = api.scalar("SELECT coalesce(sum(dead_letters), 0) FROM jobs")?;
    ensure!(
        count >= events && dead == 0,
        "the store holds {count} events and {dead} dead letters after posting {events}"
    );
    println!(
        "Store: built {} events (now {count}) in {secs:.0} s: {:.0} events/s end to end (all posted after {posted:.0} s), indexes on.",
        events - have,
        (events - have) as f64 / secs
    );
    Ok(count)
}

/// A check of one returned event.
type EventCheck = Box<dyn Fn(&Value) -> Result<()>>;

/// What a query must answer.
enum Expect {
    /// A page of `/v1/events`: exactly `rows` events (newest first), each
    /// passing `each`.
    Page { rows: usize, each: EventCheck },
    /// A histogram of `total` matches.
    Histogram { total: u64 },
    /// SQL rows whose last column sums to `sum`.
    Sql { sum: u64 },
}

struct Query {
    what: String,
    request: Request,
    expect: Expect,
}

enum Request {
    Get(String),
    Sql(String, u32),
}

fn run_queries(env: &Env, api: &Api, count: u64, failures: &mut Vec<String>) -> Result<()> {
    let logs = &env.logs;
    let passes = count.div_ceil(logs.len());
    // The day queried: the middle one of the store.
    let pass = (passes - 1) / 2;
    let day_start = (logs.day0 + pass as i64) * DAY_MS;
    let day_end = day_start + DAY_MS;
    let hour_start = day_start + logs.first_hour * HOUR_MS;
    let hour_end = hour_start + HOUR_MS;
    let hour_prefix = rfc3339_minute(hour_start)[..13].to_string();
    let msg_has = |line: &[u8], word: &str| {
        value_of(line, "msg").is_some_and(|m| words(m).any(|w| w == word))
    };
    let common = logs.lines_where(|l| msg_has(l, COMMON_WORD));
    let rare = logs.lines_where(|l| value_of(l, "user_id") == Some(RARE_USER));
    let phrase = logs.lines_where(|l| {
        value_of(l, "msg").is_some_and(|m| {
            let w: Vec<String> = words(m).collect();
            w.windows(2).any(|p| p.join(" ") == PHRASE)
        })
    });
    let common_cart =
        logs.lines_where(|l| value_of(l, "service") == Some(SERVICE) && msg_has(l, COMMON_WORD));
    let cart_hour = logs.lines_where(|l| {
        value_of(l, "service") == Some(SERVICE)
            && value_of(l, "ts")
                .is_some_and(|t| t[11..13].parse::<i64>().ok() == Some(logs.first_hour))
    });
    let page = |n: u64| n.min(50) as usize;
    let count_in_store = |lines: &[usize]| logs.count_of(lines, count, None);
    let n_rare = count_in_store(&rare);

    // Checks of one returned event.
    let msg_word = |word: &'static str| -> EventCheck {
        Box::new(move |e: &Value| {
            let m = e["event"]["msg"].as_str().unwrap_or("");
            ensure!(words(m).any(|w| w == word), "event without `{word}`: {e}");
            Ok(())
        })
    };
    let service_is = |s: &'static str| {
        move |e: &Value| -> Result<()> {
            ensure!(e["event"]["service"] == s, "event of another service: {e}");
            Ok(())
        }
    };
    let any = || -> EventCheck { Box::new(|_| Ok(())) };

    let queries = vec![
        Query {
            what: "latest page, no filter (baseline)".into(),
            request: Request::Get("/v1/events?order=desc&limit=50".into()),
            expect: Expect::Page {
                rows: page(count),
                each: any(),
            },
        },
        Query {
            what: format!(
                "word, common: `q={COMMON_WORD}` ({} events)",
                count_in_store(&common)
            ),
            request: Request::Get(format!("/v1/events?q={COMMON_WORD}&order=desc&limit=50")),
            expect: Expect::Page {
                rows: page(count_in_store(&common)),
                each: msg_word(COMMON_WORD),
            },
        },
        Query {
            what: format!("word, rare: `q={RARE_USER}` (a user id, {n_rare} events)"),
            request: Request::Get(format!("/v1/events?q={RARE_USER}&order=desc&limit=50")),
            expect: Expect::Page {
                rows: page(n_rare),
                each: Box::new(|e: &Value| {
                    ensure!(e["event"]["user_id"] == RARE_USER, "another user: {e}");
                    Ok(())
                }),
            },
        },
        Query {
            what: format!("word, nowhere: `q={NO_WORD}`"),
            request: Request::Get(format!("/v1/events?q={NO_WORD}&order=desc&limit=50")),
            expect: Expect::Page {
                rows: 0,
                each: any(),
            },
        },
        Query {
            what: format!(
                "phrase: `q=\"{PHRASE}\"` ({} events)",
                count_in_store(&phrase)
            ),
            request: Request::Get(format!(
                "/v1/events?q={}&order=desc&limit=50",
                enc(&format!("\"{PHRASE}\""))
            )),
            expect: Expect::Page {
                rows: page(count_in_store(&phrase)),
                each: Box::new(|e: &Value| {
                    let m = e["event"]["msg"].as_str().unwrap_or("");
                    let w: Vec<String> = words(m).collect();
                    ensure!(
                        w.windows(2).any(|p| p.join(" ") == PHRASE),
                        "no phrase: {e}"
                    );
                    Ok(())
                }),
            },
        },
        Query {
            what: format!(
                "field + time: `field.service={SERVICE}`, one hour ({hour_prefix}h, {} events)",
                logs.count_of(&cart_hour, count, Some(pass))
            ),
            request: Request::Get(format!(
                "/v1/events?field.service={SERVICE}&since={hour_start}&until={hour_end}&order=desc&limit=50"
            )),
            expect: Expect::Page {
                rows: page(logs.count_of(&cart_hour, count, Some(pass))),
                each: {
                    let prefix = hour_prefix.clone();
                    let service = service_is(SERVICE);
                    Box::new(move |e: &Value| {
                        service(e)?;
                        ensure!(
                            e["time"].as_str().is_some_and(|t| t.starts_with(&prefix)),
                            "event outside the hour: {e}"
                        );
                        Ok(())
                    })
                },
            },
        },
        Query {
            what: format!("field, indexed, no such value: `field.user_id={NO_USER}`"),
            request: Request::Get(format!(
                "/v1/events?field.user_id={NO_USER}&order=desc&limit=50"
            )),
            expect: Expect::Page {
                rows: 0,
                each: any(),
            },
        },
        Query {
            what: format!("field, indexed, rare: `field.user_id={RARE_USER}` ({n_rare} events)"),
            request: Request::Get(format!(
                "/v1/events?field.user_id={RARE_USER}&order=desc&limit=50"
            )),
            expect: Expect::Page {
                rows: page(n_rare),
                each: Box::new(|e: &Value| {
                    ensure!(e["event"]["user_id"] == RARE_USER, "another user: {e}");
                    Ok(())
                }),
            },
        },
        Query {
            what: format!(
                "word + field: `q={COMMON_WORD} service:{SERVICE}` ({} events)",
                count_in_store(&common_cart)
            ),
            request: Request::Get(format!(
                "/v1/events?q={}&order=desc&limit=50",
                enc(&format!("{COMMON_WORD} service:{SERVICE}"))
            )),
            expect: Expect::Page {
                rows: page(count_in_store(&common_cart)),
                each: {
                    let word = msg_word(COMMON_WORD);
                    let service = service_is(SERVICE);
                    Box::new(move |e: &Value| {
                        word(e)?;
                        service(e)
                    })
                },
            },
        },
        Query {
            what: format!(
                "histogram: `q={COMMON_WORD}` over one day ({}), 60 buckets",
                &hour_prefix[..10]
            ),
            request: Request::Get(format!(
                "/v1/events/histogram?q={COMMON_WORD}&since={day_start}&until={day_end}&buckets=60"
            )),
            expect: Expect::Histogram {
                total: logs.count_of(&common, count, Some(pass)),
            },
        },
        Query {
            what: format!(
                "SQL: count per service per minute over one day ({})",
                &hour_prefix[..10]
            ),
            request: Request::Sql(
                format!(
                    "SELECT data->>'service' AS service, time / 60000 * 60000 AS minute, count(*) AS n \
                     FROM events WHERE time >= {day_start} AND time < {day_end} GROUP BY 1, 2"
                ),
                10_000,
            ),
            expect: Expect::Sql {
                sum: logs.stored_in_pass(count, pass),
            },
        },
        Query {
            what: format!("SQL: count per level over one day ({})", &hour_prefix[..10]),
            request: Request::Sql(
                format!(
                    "SELECT data->>'level' AS level, count(*) AS n FROM events \
                     WHERE time >= {day_start} AND time < {day_end} GROUP BY 1"
                ),
                10_000,
            ),
            expect: Expect::Sql {
                sum: logs.stored_in_pass(count, pass),
            },
        },
        Query {
            what: "SQL: count per level, whole store".into(),
            request: Request::Sql(
                "SELECT data->>'level' AS level, count(*) AS n FROM events GROUP BY 1".into(),
                10_000,
            ),
            expect: Expect::Sql { sum: count },
        },
    ];

    println!(
        "Queries on the store of {count} events ({passes} days of W2's events), each run {RUNS} times in a row (the first on a cold server cache):\n"
    );
    println!("| query | median ms | max ms | answer |");
    println!("|---|---:|---:|---|");
    for q in &queries {
        let mut times = Vec::new();
        let mut answer = String::new();
        let mut error = None;
        for _ in 0..RUNS {
            let (status, text, ms) = match &q.request {
                Request::Get(path) => api.get(path)?,
                Request::Sql(sql, limit) => api.sql(sql, *limit)?,
            };
            if status == 422 && text.contains("ran past its") {
                // Not an error of the benchmark: the answer to give is
                // that the statement does not finish in its 10 s.
                error = Some(format!("did not finish: 422 after {ms:.0} ms, {text}"));
                break;
            }
            match check(status, &text, &q.expect) {
                Ok(a) => {
                    times.push(ms);
                    answer = a;
                }
                Err(e) => {
                    error = Some(format!("{e:#} (after {ms:.0} ms)"));
                    break;
                }
            }
        }
        if let Some(e) = error {
            if e.starts_with("did not finish") {
                println!(
                    "| {} | > 10,000 | – | **{}** |",
                    q.what,
                    e.replace('|', "\\|")
                );
                continue;
            }
            println!(
                "| {} | – | – | **failed**: {} |",
                q.what,
                e.replace('|', "\\|")
            );
            failures.push(format!("{}: {e}", q.what));
            continue;
        }
        let max = times.iter().copied().fold(0.0, f64::max);
        times.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.1} | {:.1} | {answer} |",
            q.what,
            times[times.len() / 2],
            max
        );
    }
    Ok(())
}

/// Checks an answer; what it says, for the table.
fn check(status: u16, text: &str, expect: &Expect) -> Result<String> {
    let cut = |t: &str| t.chars().take(300).collect::<String>();
    ensure!(status == 200, "status {status}: {}", cut(text));
    let v: Value = serde_json::from_str(text).context("not JSON")?;
    match expect {
        Expect::Page { rows, each } => {
            let events = v["events"].as_array().context("no `events`")?;
            ensure!(
                events.len() == *rows,
                "{} events, {rows} expected",
                events.len()
            );
            let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
            ensure!(ids.len() == events.len(), "an event without an id");
            ensure!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first");
            for e in events {
                each(e)?;
            }
            Ok(format!(
                "{} events{}",
                events.len(),
                if v["next_cursor"].is_null() {
                    ""
                } else {
                    ", more pages"
                }
            ))
        }
        Expect::Histogram { total } => {
            let t = v["total"].as_u64().context("no `total`")?;
            let buckets = v["buckets"].as_array().context("no `buckets`")?;
            let sum: u64 = buckets.iter().filter_map(|b| b["count"].as_u64()).sum();
            ensure!(t == *total, "total {t}, {total} expected");
            ensure!(sum == t, "buckets sum to {sum}, total {t}");
            Ok(format!(
                "total {t} in {} buckets of {} min",
                buckets.len(),
                v["interval_ms"].as_i64().unwrap_or(0) / 60_000
            ))
        }
        Expect::Sql { sum } => {
            let rows = v["rows"].as_array().context("no `rows`")?;
            let s: u64 = rows
                .iter()
                .filter_map(|r| r.as_array()?.last()?.as_u64())
                .sum();
            ensure!(!rows.is_empty(), "no rows");
            ensure!(s == *sum, "counts sum to {s}, {sum} expected");
            Ok(format!(
                "{} rows, counts sum to {s}; server's elapsed_ms {}",
                rows.len(),
                v["elapsed_ms"]
            ))
        }
    }
}

/// Ingest with the indexes on and off (and, with `--breakdown`, each
/// kind alone: full text, the three fields, the time), alternated, in
/// fresh databases.
fn ingest(env: &Env, store: &Path, opts: &Opts, failures: &mut Vec<String>) -> Result<()> {
    let n = opts.ingest_events;
    let mut variants = vec![Indexes::ON, Indexes::OFF];
    if opts.breakdown {
        variants.push(Indexes {
            full_text: true,
            fields: false,
            time: false,
        });
        variants.push(Indexes {
            full_text: false,
            fields: true,
            time: false,
        });
        variants.push(Indexes {
            full_text: false,
            fields: false,
            time: true,
        });
    }
    println!(
        "Ingest of {n} events, from the first post until every job is done, in a fresh database each run, {} alternated:\n",
        variants
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| run | indexes | events/s end to end | seconds | on disk, bytes per event |");
    println!("|---:|---|---:|---:|---:|");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut sizes: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..opts.rounds {
        for (k, &indexes) in variants.iter().enumerate() {
            let dir = store.join("ingest");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let server = env.start(&dir, indexes)?;
            let t = Instant::now();
            env.post(&server.api, 0, n, false)?;
            server.api.wait_idle()?;
            let secs = t.elapsed().as_secs_f64();
            let stored = server.api.scalar("SELECT count(*) FROM events")? as u64;
            let dead = server
                .api
                .scalar("SELECT coalesce(sum(dead_letters), 0) FROM jobs")?;
            if stored != n || dead != 0 {
                failures.push(format!(
                    "ingest round {}, indexes {}: {stored} events stored of {n}, {dead} dead letters",
                    round + 1,
                    indexes.name()
                ));
            }
            server.stop()?;
            let per_event = disk_size(&dir)? as f64 / n as f64;
            let rate = n as f64 / secs;
            rates[k].push(rate);
            sizes[k].push(per_event);
            println!(
                "| {} | {} | {rate:.0} | {secs:.1} | {per_event:.0} |",
                round + 1,
                indexes.name()
            );
            std::io::stdout().flush()?;
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    let rates: Vec<f64> = rates.iter_mut().map(median).collect();
    let sizes: Vec<f64> = sizes.iter_mut().map(median).collect();
    println!();
    println!("| indexes | median events/s | against off | bytes per event on disk |");
    println!("|---|---:|---:|---:|");
    for (k, v) in variants.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.3} | {:.0} |",
            v.name(),
            rates[k],
            rates[k] / rates[1],
            sizes[k]
        );
    }
    println!(
        "\nratio on/off: {:.3} (ingest {:.1} % slower with the indexes); disk {:.2}x",
        rates[0] / rates[1],
        (1.0 - rates[0] / rates[1]) * 100.0,
        sizes[0] / sizes[1]
    );
    Ok(())
}
