//! Holds wasmpipe against the reference native program
//! (`../shared/reference`: the benchmark workloads as a plain Rust program,
//! serde_json into borrowed structs, input mapped, N threads): each
//! workload runs with both, alternately, in the same run, on the same
//! files; the results are checked (W1's sum, W2's bytes, W3's table) and
//! the figures printed as a table for docs/performance.md.
//!
//! Run with: bash bench/run   (builds everything, and the reference)
//! or: target/release/compare [--reference DIR] [--rounds N] [--workers N] [--only-w4]
//!
//! `DIR` is where the reference's `run` put its build and data
//! (`$REFERENCE_DIR`, default `~/.cache/wasmpipe-reference`).

use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fixed string W2 stamps on every event, as the reference is told.
const RECEIVED_AT: &str = "2026-11-27T12:00:00.000Z";
const HOST: &str = "bench-host";

struct Opts {
    rounds: usize,
    workers: usize,
    reference: PathBuf,
    /// Only W4 (windows), for a quicker run.
    only_w4: bool,
}

fn main() -> Result<()> {
    let mut opts = Opts {
        rounds: 3,
        workers: 2,
        reference: std::env::var_os("REFERENCE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/wasmpipe-reference")
            }),
        only_w4: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => opts.rounds = args.next().context("--rounds N")?.parse()?,
            "--workers" => opts.workers = args.next().context("--workers N")?.parse()?,
            "--reference" => opts.reference = args.next().context("--reference DIR")?.into(),
            "--only-w4" => opts.only_w4 = true,
            _ => bail!(
                "unknown argument `{a}`; use --rounds N, --workers N, --reference DIR, --only-w4"
            ),
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let repo = bin_dir.join("../..").canonicalize()?;
    let data = opts.reference.join("data");
    let native = opts.reference.join("target/release/native");
    ensure!(
        native.is_file() && data.join("logs.jsonl").is_file(),
        "the reference is not built in {}: run `bash ../shared/reference/run` (or `bash bench/run`, which does)",
        opts.reference.display()
    );
    let plugins = repo.join("plugins/target/wasm32-wasip1/release");
    // Outputs go to memory (/dev/shm) where there is one, so that W2's
    // 900 MB of output measures the programs rather than the disk.
    let shm = Path::new("/dev/shm");
    let out = if shm.is_dir() {
        shm.join("wasmpipe-bench")
    } else {
        repo.join("target/bench-out")
    };
    std::fs::create_dir_all(&out)?;
    let env = Env {
        wasmpipe: bin_dir.join("wasmpipe"),
        native,
        data,
        out,
        plugins,
        manifests: repo.join("target/bench-manifests"),
    };
    std::fs::create_dir_all(&env.manifests)?;

    let numbers = env.data.join("numbers.jsonl");
    let logs = env.data.join("logs.jsonl");
    let w2_params = format!("params = {{ received_at = \"{RECEIVED_AT}\", host = \"{HOST}\" }}");
    let adder = [("double", "map", ""), ("sum", "reduce", "")];
    let key = "key = \"/service\"";
    let rows: Vec<Row> = vec![
        Row::new(
            "W1 adder (double, sum: the README's)",
            W::One,
            &numbers,
            env.manifest("w1", &adder, "auto")?,
        ),
        Row::new(
            "W1 adder, events = \"json\"",
            W::One,
            &numbers,
            env.manifest("w1-json", &adder, "json")?,
        ),
        Row::new(
            "W2 enrich (typed structs, owned fields), events = \"msgpack\"",
            W::Two,
            &logs,
            env.manifest("w2", &[("log_enrich", "map", &w2_params)], "msgpack")?,
        ),
        Row::new(
            "W2 enrich with `Merge`, events = \"msgpack\"",
            W::Two,
            &logs,
            env.manifest(
                "w2-merge",
                &[("log_enrich_merge", "map", &w2_params)],
                "msgpack",
            )?,
        ),
        Row::new(
            "W2 enrich, `auto` (one stage: JSON lines)",
            W::Two,
            &logs,
            env.manifest("w2-auto", &[("log_enrich", "map", &w2_params)], "auto")?,
        ),
        Row::new(
            "W2 enrich with `Merge`, `auto` (one stage: JSON lines)",
            W::Two,
            &logs,
            env.manifest(
                "w2-merge-auto",
                &[("log_enrich_merge", "map", &w2_params)],
                "auto",
            )?,
        ),
        Row::new(
            "W3 per service (manifest `key`)",
            W::Three,
            &logs,
            env.manifest("w3", &[("service_stats", "reduce", key)], "auto")?,
        ),
        Row::new(
            "W3 per service (key function)",
            W::Three,
            &logs,
            env.manifest(
                "w3-keyfn",
                &[("service_stats_by_key", "reduce", "")],
                "auto",
            )?,
        ),
        Row::new(
            "W3 per service (manifest `key`), events = \"json\"",
            W::Three,
            &logs,
            env.manifest("w3-json", &[("service_stats", "reduce", key)], "json")?,
        ),
    ];
    if opts.only_w4 {
        return w4(&env, &logs, &bin_dir, &opts);
    }
    // Compile each module into the cache first: the runs below measure a
    // warm start, as every run after the first is.
    for r in &rows {
        let status = Command::new(&env.wasmpipe)
            .arg("check")
            .arg(&r.manifest)
            .stdout(Stdio::null())
            .status()?;
        ensure!(
            status.success(),
            "`wasmpipe check {}` failed",
            r.manifest.display()
        );
    }
    println!(
        "wasmpipe against the reference native program: {} workers vs {} threads, {} rounds, medians, {}",
        opts.workers,
        opts.workers,
        opts.rounds,
        today()
    );
    println!();
    println!("{TABLE_HEAD}");
    for row in &rows {
        let pairs = env.pairs(row, opts.workers, opts.rounds)?;
        let f = Figures::of(&pairs, row.work.events());
        println!("{}", f.row(&row.name));
    }

    // Scaling: events/s per worker as workers grow, against the reference
    // on as many threads.
    println!();
    println!("| workload | workers | events/s | per worker | efficiency | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in [&rows[2], &rows[6]] {
        let mut one = 0.0;
        for w in [1, 2] {
            let f = Figures::of(&env.pairs(row, w, opts.rounds)?, row.work.events());
            if w == 1 {
                one = f.rate;
            }
            println!(
                "| {} | {w} | {:.2} M | {:.2} M | {:.0}% | {:.2}x |",
                row.name,
                f.rate / 1e6,
                f.rate / w as f64 / 1e6,
                100.0 * f.rate / (w as f64 * one),
                f.ratio
            );
        }
    }

    w4(&env, &logs, &bin_dir, &opts)?;

    // Memory must be flat in input size: W1 at a tenth of the input.
    let small = env.data.join("numbers_1m.jsonl");
    if small.is_file() {
        let big = env.wasmpipe(&rows[0].manifest, opts.workers, &numbers)?;
        let little = env.wasmpipe(&rows[0].manifest, opts.workers, &small)?;
        println!();
        println!(
            "peak RSS, W1 over 10,000,000 vs 1,000,000 lines: {} MB vs {} MB",
            big.rss >> 20,
            little.rss >> 20
        );
    }
    Ok(())
}

/// W4, windows: per service and per one-minute tumbling window of `ts`,
/// `service_stats` over the reference's 2 M log events with their times
/// moved back by up to 10 s (out of order, none later than the lateness),
/// against `w4native` (this crate's native program doing the same), each
/// run checked against the other; then the memory with 100,000 windows
/// open at once.
fn w4(env: &Env, logs: &Path, bin_dir: &Path, opts: &Opts) -> Result<()> {
    let input = env.out.join("w4.jsonl");
    if !input.is_file() {
        jitter(logs, &input)?;
    }
    let window = "key = \"/service\"\nwindow = { kind = \"tumbling\", size = \"1m\", time = \"/ts\", lateness = \"10s\" }";
    let manifest = env.manifest("w4", &[("service_stats", "reduce", window)], "auto")?;
    let status = Command::new(&env.wasmpipe)
        .arg("check")
        .arg(&manifest)
        .stdout(Stdio::null())
        .status()?;
    ensure!(
        status.success(),
        "`wasmpipe check {}` failed",
        manifest.display()
    );
    let native = bin_dir.join("w4native");
    let run_native = |input: &Path| -> Result<Measure> {
        let mut cmd = Command::new(&native);
        cmd.arg(input)
            .args(["--threads", &opts.workers.to_string()]);
        cmd.stdout(std::fs::File::create(env.out.join("native.out"))?);
        measure(cmd)
    };
    let mut pairs = Vec::new();
    for _ in 0..opts.rounds {
        // Exit code 0: no event was late or failed.
        let ours = env.wasmpipe(&manifest, opts.workers, &input)?;
        let theirs = run_native(&input)?;
        same_windows(&env.out.join("wasmpipe.out"), &env.out.join("native.out"))?;
        pairs.push((ours, theirs));
    }
    let f = Figures::of(&pairs, 2_000_000);
    println!();
    println!("{TABLE_HEAD}");
    println!(
        "{}",
        f.row(
            "W4 per service per 1-minute window, out of order by up to 10 s (`lateness = \"10s\"`)"
        )
    );
    // 100,000 services in one minute: as many windows open at the end.
    let open = env.out.join("w4_open.jsonl");
    let mut text = String::new();
    for i in 0..100_000u64 {
        text.push_str(&format!(
            "{{\"ts\":\"2026-11-27T10:00:{:02}.{:03}Z\",\"level\":\"info\",\"service\":\"service-{i:06}\",\"duration_ms\":{}.5}}\n",
            i * 60 / 100_000,
            i % 1000,
            i % 97
        ));
    }
    std::fs::write(&open, text)?;
    let ours = env.wasmpipe(&manifest, opts.workers, &open)?;
    let theirs = run_native(&open)?;
    same_windows(&env.out.join("wasmpipe.out"), &env.out.join("native.out"))?;
    let lines = std::fs::read_to_string(env.out.join("wasmpipe.out"))?
        .lines()
        .count();
    ensure!(
        lines == 100_000,
        "W4 open windows: {lines} results, expected 100000"
    );
    println!();
    println!(
        "peak RSS with 100,000 windows open at once (100,000 keys in one minute): {} MB (native {} MB)",
        ours.rss >> 20,
        theirs.rss >> 20
    );
    Ok(())
}

/// Writes `logs` with each `ts` moved back by 0-9.999 s (a fixed sequence).
fn jitter(logs: &Path, out: &Path) -> Result<()> {
    use std::io::{BufRead, Write};
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for line in std::io::BufReader::new(std::fs::File::open(logs)?).lines() {
        let line = line?;
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line)?;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let back = ((seed >> 33) % 10_000) as i64;
        let ts = v["ts"].as_str().context("ts")?;
        let t = humantime_ms(ts)? - back;
        v.insert("ts".into(), ms_text(t).into());
        serde_json::to_writer(&mut w, &v)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of the reference's logs, within one day.
fn humantime_ms(ts: &str) -> Result<i64> {
    let n = |r: std::ops::Range<usize>| -> Result<i64> { Ok(ts.get(r).context("ts")?.parse()?) };
    ensure!(&ts[..11] == "2026-11-27T", "the logs' day changed: {ts}");
    Ok(((n(11..13)? * 60 + n(14..16)?) * 60 + n(17..19)?) * 1000 + n(20..23)? + DAY0)
}

/// 2026-11-27T00:00:00Z in epoch milliseconds.
const DAY0: i64 = 1_795_737_600_000;

fn ms_text(t: i64) -> String {
    let r = t - DAY0;
    format!(
        "2026-11-27T{:02}:{:02}:{:02}.{:03}Z",
        r / 3_600_000,
        r / 60_000 % 60,
        r / 1000 % 60,
        r % 1000
    )
}

/// Both programs' windows agree: counts exactly, sums to 1e-9.
fn same_windows(ours: &Path, theirs: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<Vec<serde_json::Value>> {
        std::fs::read_to_string(p)?
            .lines()
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    };
    let (a, b) = (read(ours)?, read(theirs)?);
    ensure!(
        a.len() == b.len(),
        "W4: {} windows, the native program has {}",
        a.len(),
        b.len()
    );
    for (x, y) in a.iter().zip(&b) {
        let (vx, vy) = (&x["value"], &y["value"]);
        let (sx, sy) = (
            vx["sum_ms"].as_f64().context("sum")?,
            vy["sum_ms"].as_f64().context("sum")?,
        );
        ensure!(
            x["window"] == y["window"]
                && x["key"] == y["key"]
                && vx["count"] == vy["count"]
                && vx["errors"] == vy["errors"]
                && ((sx - sy) / sy.abs().max(1.0)).abs() < 1e-9,
            "W4: {x} differs from the native {y}"
        );
    }
    Ok(())
}

/// The three workloads, as the reference names them.
#[derive(Clone, Copy, PartialEq)]
enum W {
    One,
    Two,
    Three,
}

impl W {
    fn events(self) -> u64 {
        match self {
            W::One => 10_000_000,
            W::Two | W::Three => 2_000_000,
        }
    }
}

struct Row {
    name: String,
    work: W,
    input: PathBuf,
    manifest: PathBuf,
}

impl Row {
    fn new(name: &str, work: W, input: &Path, manifest: PathBuf) -> Row {
        Row {
            name: name.into(),
            work,
            input: input.into(),
            manifest,
        }
    }
}

/// One run of a program.
#[derive(Clone, Copy)]
struct Measure {
    wall: Duration,
    cpu: Duration,
    rss: u64,
}

/// Medians over the pairs (wasmpipe, native) of one row.
struct Figures {
    rate: f64,
    ratio: f64,
    cpu_per_m: f64,
    native_cpu_per_m: f64,
    rss: u64,
    native_rss: u64,
}

/// The head of the results table; [`Figures::row`] fills it.
const TABLE_HEAD: &str = "| workload | events/s | ratio (native wall / wasmpipe wall) | CPU s per M events (native) | peak RSS (native) |\n|---|---:|---:|---:|---:|";

impl Figures {
    /// One row of the results table.
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.2} M | **{:.2}x** | {:.2} ({:.2}) | {} MB ({} MB) |",
            self.rate / 1e6,
            self.ratio,
            self.cpu_per_m,
            self.native_cpu_per_m,
            self.rss >> 20,
            self.native_rss >> 20
        )
    }

    fn of(pairs: &[(Measure, Measure)], events: u64) -> Figures {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let m = events as f64 / 1e6;
        Figures {
            rate: events as f64 / median(pairs.iter().map(|p| p.0.wall.as_secs_f64()).collect()),
            ratio: median(
                pairs
                    .iter()
                    .map(|(w, n)| n.wall.as_secs_f64() / w.wall.as_secs_f64())
                    .collect(),
            ),
            cpu_per_m: median(pairs.iter().map(|p| p.0.cpu.as_secs_f64()).collect()) / m,
            native_cpu_per_m: median(pairs.iter().map(|p| p.1.cpu.as_secs_f64()).collect()) / m,
            rss: pairs.iter().map(|p| p.0.rss).max().unwrap_or(0),
            native_rss: pairs.iter().map(|p| p.1.rss).max().unwrap_or(0),
        }
    }
}

struct Env {
    wasmpipe: PathBuf,
    native: PathBuf,
    data: PathBuf,
    out: PathBuf,
    plugins: PathBuf,
    manifests: PathBuf,
}

impl Env {
    fn manifest(&self, name: &str, stages: &[(&str, &str, &str)], events: &str) -> Result<PathBuf> {
        let mut text =
            format!("[pipeline]\nname = \"{name}\"\n\n[runtime]\nevents = \"{events}\"\n");
        for (plugin, kind, extra) in stages {
            let path = self.plugins.join(format!("{plugin}.wasm"));
            ensure!(
                path.is_file(),
                "plugin {plugin} is not built; run `bash bench/run`"
            );
            text.push_str(&format!(
                "\n[[stage]]\nname = \"{plugin}\"\nkind = \"{kind}\"\nplugin = {:?}\n{extra}\n",
                path.display().to_string()
            ));
        }
        let path = self.manifests.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `rounds` pairs of runs, wasmpipe then the reference, each checked.
    fn pairs(&self, row: &Row, workers: usize, rounds: usize) -> Result<Vec<(Measure, Measure)>> {
        let mut pairs = Vec::new();
        for _ in 0..rounds {
            let ours = self.wasmpipe(&row.manifest, workers, &row.input)?;
            let theirs = self.native(row.work, workers, &row.input)?;
            self.check(row)?;
            pairs.push((ours, theirs));
        }
        Ok(pairs)
    }

    fn native(&self, work: W, threads: usize, input: &Path) -> Result<Measure> {
        let mut cmd = Command::new(&self.native);
        let name = match work {
            W::One => "w1",
            W::Two => "w2",
            W::Three => "w3",
        };
        cmd.arg(name)
            .arg(input)
            .args(["--threads", &threads.to_string()]);
        if work == W::Two {
            cmd.args(["--received-at", RECEIVED_AT, "--out"])
                .arg(self.out.join("native.out"));
            cmd.stdout(Stdio::null());
        } else {
            cmd.stdout(std::fs::File::create(self.out.join("native.out"))?);
        }
        measure(cmd)
    }

    fn wasmpipe(&self, manifest: &Path, workers: usize, input: &Path) -> Result<Measure> {
        let mut cmd = Command::new(&self.wasmpipe);
        cmd.arg("run")
            .arg(manifest)
            .args(["-q", "-w", &workers.to_string(), "-i"])
            .arg(input)
            .arg("-o")
            .arg(self.out.join("wasmpipe.out"));
        measure(cmd)
    }

    /// The last two runs of `row` agree: W1's sums, W2's bytes, W3's counts
    /// exactly and its sums of floats (added in another order) to 1e-9.
    fn check(&self, row: &Row) -> Result<()> {
        // Read as streams, never whole: this process's own size would count
        // in the next child's peak RSS (Linux carries the high-water mark of
        // the forked image across `exec`).
        let ours = self.out.join("wasmpipe.out");
        let theirs = self.out.join("native.out");
        match row.work {
            W::One => {
                let expected = std::fs::read_to_string(self.data.join("expected_w1.txt"))?;
                let (ours, theirs) = (
                    std::fs::read_to_string(&ours)?,
                    std::fs::read_to_string(&theirs)?,
                );
                ensure!(
                    ours.trim() == expected.trim() && theirs.trim() == expected.trim(),
                    "{}: W1 sums differ from {}",
                    row.name,
                    expected.trim()
                );
            }
            W::Two => ensure!(
                hash(&ours)? == hash(&theirs)?,
                "{}: W2 output differs from the reference's",
                row.name
            ),
            W::Three => {
                let expected = std::fs::read_to_string(self.data.join("expected_w3.tsv"))?;
                let mut want = BTreeMap::new();
                for line in expected.lines() {
                    let f: Vec<&str> = line.split('\t').collect();
                    want.insert(
                        f[0].to_owned(),
                        (
                            f[1].parse::<u64>()?,
                            f[2].parse::<f64>()?,
                            f[3].parse::<u64>()?,
                        ),
                    );
                }
                let mut got = BTreeMap::new();
                for line in std::fs::read_to_string(&ours)?.lines() {
                    let v: serde_json::Value = serde_json::from_str(line)?;
                    let s = &v["value"];
                    got.insert(
                        v["key"].as_str().context("key")?.to_owned(),
                        (
                            s["count"].as_u64().context("count")?,
                            s["sum_ms"].as_f64().context("sum_ms")?,
                            s["errors"].as_u64().context("errors")?,
                        ),
                    );
                }
                ensure!(
                    got.len() == want.len(),
                    "{}: {} groups, expected {}",
                    row.name,
                    got.len(),
                    want.len()
                );
                for (k, w) in &want {
                    let g = got
                        .get(k)
                        .with_context(|| format!("{}: no group {k}", row.name))?;
                    ensure!(
                        g.0 == w.0 && g.2 == w.2 && ((g.1 - w.1) / w.1).abs() < 1e-9,
                        "{}: group {k} is {g:?}, expected {w:?}",
                        row.name
                    );
                }
            }
        }
        Ok(())
    }
}

/// Runs `cmd`, returning its wall time, CPU time and peak RSS (`wait4`).
fn measure(mut cmd: Command) -> Result<Measure> {
    let started = Instant::now();
    // Waited for by `wait4` below, which std does not know about.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `child` is ours and not yet waited for; the pointers are valid.
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, usage.as_mut_ptr()) };
    let wall = started.elapsed();
    ensure!(rc == child.id() as i32, "wait4 failed");
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    // SAFETY: filled in by the successful wait4.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Measure {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        rss: usage.ru_maxrss as u64 * 1024,
    })
}

fn hash(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output().ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
