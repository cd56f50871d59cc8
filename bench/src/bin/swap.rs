//! Hot-reload figures for docs/performance.md: how long from a plugin file
//! being written to its new version serving, and how much throughput a
//! pipeline loses while its stage is swapped every second.
//!
//! It runs `wasmpipe run --watch` on the `version_tag` stage with lineage
//! on, feeds stdin as fast as the pipeline takes it, and reads stdout,
//! noting when each output first carries a new version. Versions are made
//! by patching the tag the plugin carries (see plugins/version_tag).
//!
//! Then the author's loop, per language: a stage made by `wasmpipe new`
//! runs under `run --watch`, its source is edited, and the time from the
//! save to the first output of the new version is taken (JavaScript,
//! TypeScript and Python run as development builds; see
//! host/src/runtime/source_section.rs), beside the time `wasmpipe build`
//! takes to make the production component of the same edit.
//!
//! Run with: cargo build --release -p wasmpipe -p wasmpipe-bench &&
//! (cd plugins && cargo build --release) && target/release/swap [--seconds N] [--rounds N]
//! [--edits rust,js,ts,python | --edits none] [--edits-only]

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Opts {
    seconds: u64,
    rounds: usize,
    /// The languages whose edit loop is timed.
    edits: Vec<String>,
    /// Only the edit loop, not the swaps of a built plugin.
    edits_only: bool,
}

fn main() -> Result<()> {
    let mut opts = Opts {
        seconds: 5,
        rounds: 3,
        edits: ["rust", "js", "ts", "python"].map(String::from).to_vec(),
        edits_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => opts.seconds = args.next().context("--seconds N")?.parse()?,
            "--rounds" => opts.rounds = args.next().context("--rounds N")?.parse()?,
            "--edits" => {
                let list = args.next().context("--edits rust,js,ts,python")?;
                opts.edits = list
                    .split(',')
                    .filter(|l| *l != "none")
                    .map(String::from)
                    .collect();
            }
            "--edits-only" => opts.edits_only = true,
            _ => bail!(
                "unknown argument `{a}`; use --seconds N, --rounds N, --edits LANGS, --edits-only"
            ),
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let repo = bin_dir.join("../..").canonicalize()?;
    let wasmpipe = bin_dir.join("wasmpipe");
    let work = repo.join("target/bench-data/swap");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    println!("machine: {} cores, load average {}", cores(), loadavg());
    if !opts.edits_only {
        swaps(&repo, &wasmpipe, &work, &opts)?;
    }
    for lang in &opts.edits {
        stage_edit(&wasmpipe, &work, lang)?;
    }
    Ok(())
}

/// Swap latency and throughput of a built plugin replaced on disk.
fn swaps(repo: &Path, wasmpipe: &Path, work: &Path, opts: &Opts) -> Result<()> {
    let plugin = repo.join("plugins/target/wasm32-wasip1/release/version_tag.wasm");
    ensure!(
        plugin.is_file(),
        "build the plugins first: (cd plugins && cargo build --release)"
    );
    let base = std::fs::read(&plugin)?;
    // A private module cache: "new" versions really are compiled.
    let cache = work.join("cache");
    let live = work.join("tag.wasm");
    std::fs::write(&live, patch(&base, "v1"))?;
    let manifest = work.join("swap.toml");
    std::fs::write(
        &manifest,
        format!(
            "[pipeline]\nname = \"swap\"\n\n[[stage]]\nname = \"tag\"\nkind = \"map\"\nplugin = {:?}\n\n[runtime]\nlineage = true\nworkers = 2\n",
            live.display().to_string()
        ),
    )?;
    let mut p = Piped::start(wasmpipe, &manifest, &cache)?;
    p.wait_rate(Duration::from_secs(2));

    // Swap latency: the file is written (to a temporary name, then renamed
    // over the plugin), then the first output line carrying the new version.
    println!("\nswap latency (file renamed into place -> first output with the new version):");
    let mut fresh = Vec::new();
    for i in 0..5 {
        let tag = format!("n{i}");
        fresh.push(p.swap(&live, &patch(&base, &tag))?);
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut seen = Vec::new();
    for i in 0..5 {
        let tag = format!("n{}", i % 2);
        seen.push(p.swap(&live, &patch(&base, &tag))?);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Compiled ahead by `wasmpipe check` (as `wasmpipe build` does), which
    // shares the module cache.
    let mut ahead = Vec::new();
    for i in 0..5 {
        let bytes = patch(&base, &format!("p{i}"));
        let staged = work.join("staged.wasm");
        std::fs::write(&staged, &bytes)?;
        let staged_manifest = work.join("staged.toml");
        std::fs::write(
            &staged_manifest,
            "[pipeline]\nname = \"staged\"\n\n[[stage]]\nname = \"tag\"\nkind = \"map\"\nplugin = \"staged.wasm\"\n",
        )?;
        let st = Command::new(wasmpipe)
            .arg("check")
            .arg(&staged_manifest)
            .env("WASMPIPE_CACHE_DIR", &cache)
            .stdout(Stdio::null())
            .status()?;
        ensure!(st.success(), "wasmpipe check failed");
        ahead.push(p.swap(&live, &bytes)?);
        std::thread::sleep(Duration::from_millis(300));
    }
    report("  new version (compiled)        ", &fresh);
    report("  version seen before (cached)  ", &seen);
    report("  new, compiled ahead by `check`", &ahead);
    println!(
        "  reload thread's own time (load, compile, check), new versions: {}",
        p.checked_ms(5)
    );

    // Throughput while swapping every second: the three modes alternate,
    // round after round, so that a noisy neighbour slows all of them alike.
    println!(
        "\nthroughput, {} rounds of {} s per mode (events/s, median of rounds):",
        opts.rounds, opts.seconds
    );
    let secs = Duration::from_secs(opts.seconds);
    let (mut steady, mut cached, mut compiled) = (Vec::new(), Vec::new(), Vec::new());
    let (mut k, mut f) = (0, 0);
    for _ in 0..opts.rounds {
        steady.push(p.rate_over(secs, |_| Ok(()))?);
        cached.push(p.rate_over(secs, |p| {
            k += 1;
            p.swap_no_wait(&live, &patch(&base, &format!("n{}", k % 2)))
        })?);
        compiled.push(p.rate_over(secs, |p| {
            f += 1;
            p.swap_no_wait(&live, &patch(&base, &format!("{:02}", f % 100)))
        })?);
    }
    let rate = |v: &[(f64, f64)]| median(&v.iter().map(|x| x.0).collect::<Vec<_>>());
    let cpu = |v: &[(f64, f64)]| median(&v.iter().map(|x| x.1).collect::<Vec<_>>());
    let rounds = |v: &[(f64, f64)]| list(&v.iter().map(|x| x.0).collect::<Vec<_>>());
    let (base_rate, base_cpu) = (rate(&steady), cpu(&steady));
    println!(
        "  no swaps                        {base_rate:>12.0}  CPU {base_cpu:.3} s per M outputs  (rounds: {})",
        rounds(&steady)
    );
    for (what, r) in [
        ("swap every 1 s, cached versions", &cached),
        ("swap every 1 s, new versions   ", &compiled),
    ] {
        println!(
            "  {what} {:>12.0} ({:+.1}%)  CPU {:.3} s per M outputs ({:+.1}%)  (rounds: {})",
            rate(r),
            (rate(r) / base_rate - 1.0) * 100.0,
            cpu(r),
            (cpu(r) / base_cpu - 1.0) * 100.0,
            rounds(r)
        );
    }
    let (code, log) = p.finish()?;
    // 3: the line the feeder was writing when the pipeline stopped is a
    // dead letter.
    ensure!(
        code == 0 || code == 3,
        "wasmpipe exited with {code}:\n{log}"
    );
    ensure!(!log.contains("rejected"), "a swap was rejected:\n{log}");
    Ok(())
}

/// The author's loop in `lang` (rust, js, ts, python): a stage from
/// `wasmpipe new` under `run --watch`, its source edited four times; the
/// time from the save to the first output of the new version. Then the
/// production build of an edit, `wasmpipe build`, for comparison.
fn stage_edit(wasmpipe: &Path, work: &Path, lang: &str) -> Result<()> {
    let name = format!("edited-{lang}");
    let st = Command::new(wasmpipe)
        .args(["new", &name, "--kind", "map", "--lang", lang, "--dir"])
        .arg(work)
        .stdout(Stdio::null())
        .status()?;
    ensure!(st.success(), "wasmpipe new --lang {lang} failed");
    let dir = work.join(&name);
    // What the edit changes in each scaffold: a field added to the output
    // (the samples' expected outputs are not checked), or in Rust the
    // factor.
    let (file, from, to): (&str, &str, fn(usize) -> String) = match lang {
        "rust" => ("src/lib.rs", "checked_mul(2)", |i| {
            format!("checked_mul({})", 3 + i % 2)
        }),
        "js" | "ts" => (
            if lang == "js" { "stage.js" } else { "stage.ts" },
            "n: event.n * 2 }",
            |i| format!("n: event.n * 2, edit: {i} }}"),
        ),
        "python" => ("stage.py", "\"n\": n}", |i| {
            format!("\"n\": n, \"edit\": {i}}}")
        }),
        _ => bail!("--edits takes rust, js, ts and python, not {lang}"),
    };
    let source = dir.join(file);
    let original = std::fs::read_to_string(&source)?;
    ensure!(
        original.contains(from),
        "the {lang} scaffold changed: no `{from}` in {source:?}"
    );
    // A cache of its own: the first start builds the development
    // interpreter, as on a new machine.
    let cache = work.join(format!("cache-{lang}"));
    let started = Instant::now();
    let mut p = Piped::start_input(wasmpipe, &dir.join("pipeline.toml"), &cache, "{\"n\":1}\n")?;
    p.wait_rate(Duration::ZERO);
    let first = started.elapsed();
    drop(p.finish());
    let started = Instant::now();
    let mut p = Piped::start_input(wasmpipe, &dir.join("pipeline.toml"), &cache, "{\"n\":1}\n")?;
    p.wait_rate(Duration::from_secs(1));
    let again = started.elapsed();
    println!(
        "\n{lang} stage edit (source saved -> first output of the new version, `run --watch`):"
    );
    println!(
        "  start, first output: {:.1} s on a new machine, {:.1} s after",
        first.as_secs_f64(),
        again.as_secs_f64()
    );
    let mut times = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        std::fs::write(&source, original.replace(from, &to(i)))?;
        times.push(p.wait_new_version(started)?);
        std::thread::sleep(Duration::from_millis(500));
    }
    report("  edit live                     ", &times);
    println!(
        "  of which the build: {}",
        p.log_values("built stage ", " in ", "s:")
    );
    println!(
        "  whole reload (build, load, compile, check): {}",
        p.checked_ms(usize::MAX)
    );
    let (code, log) = p.finish()?;
    ensure!(
        code == 0 || code == 3,
        "wasmpipe exited with {code}:\n{log}"
    );
    ensure!(!log.contains("rejected"), "an edit was rejected:\n{log}");
    // The production build of one more edit.
    std::fs::write(&source, original.replace(from, &to(99)))?;
    let started = Instant::now();
    let st = Command::new(wasmpipe)
        .arg("build")
        .arg(&dir)
        .env("WASMPIPE_CACHE_DIR", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    ensure!(st.success(), "wasmpipe build {dir:?} failed");
    println!(
        "  `wasmpipe build` of an edit (production component, compiled): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `bytes` of version_tag with its tag patched to `tag` (two characters).
fn patch(bytes: &[u8], tag: &str) -> Vec<u8> {
    let marker = b"wasmpipe-version-tag:";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the version marker is in the module");
    let mut out = bytes.to_vec();
    out[at + 21..at + 23].copy_from_slice(tag.as_bytes());
    out
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{:.2}M", r / 1e6))
        .collect::<Vec<_>>()
        .join(" ")
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..12].to_string()
}

fn report(what: &str, times: &[Duration]) {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "{what} median {:>6.0} ms  min {:>6.0} ms  max {:>6.0} ms  (n={})",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    );
}

/// A watched pipeline: a feeder thread keeps stdin full, a reader thread
/// counts outputs and notes when each version first appears.
struct Piped {
    child: Child,
    outputs: Arc<AtomicU64>,
    first_seen: Arc<Mutex<Vec<(String, Instant)>>>,
    log: Arc<Mutex<String>>,
}

impl Piped {
    fn start(wasmpipe: &Path, manifest: &Path, cache: &Path) -> Result<Piped> {
        let mut buf = String::new();
        for i in 0..100_000 {
            buf.push_str(&format!("{{\"id\":{i},\"n\":{}}}\n", i % 1000));
        }
        Piped::start_input(wasmpipe, manifest, cache, &buf)
    }

    /// Starts the pipeline, feeding `input` to it over and over.
    fn start_input(wasmpipe: &Path, manifest: &Path, cache: &Path, input: &str) -> Result<Piped> {
        let mut child = Command::new(wasmpipe)
            .args(["run", "--watch"])
            .arg(manifest)
            .env("WASMPIPE_CACHE_DIR", cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start wasmpipe")?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let input = input.as_bytes().to_vec();
        std::thread::spawn(move || while stdin.write_all(&input).is_ok() {});
        let outputs = Arc::new(AtomicU64::new(0));
        let first_seen = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
        let stdout = child.stdout.take().context("stdout")?;
        let (o, seen) = (outputs.clone(), first_seen.clone());
        std::thread::spawn(move || {
            let key = b"\"_versions\":{\"";
            let mut r = BufReader::with_capacity(1 << 20, stdout);
            let mut line = Vec::new();
            let mut current = Vec::new();
            while r
                .read_until(b'\n', &mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                o.fetch_add(1, Ordering::Relaxed);
                if let Some(at) = line.windows(key.len()).rposition(|w| w == key) {
                    // `"_versions":{"<stage>":"<12 hex>"`
                    let rest = &line[at + key.len()..];
                    if let Some(q) = rest.windows(3).position(|w| w == b"\":\"")
                        && let Some(v) = rest.get(q + 3..q + 15)
                        && v != current.as_slice()
                    {
                        current = v.to_vec();
                        let v = String::from_utf8_lossy(v).into_owned();
                        seen.lock().unwrap().push((v, Instant::now()));
                    }
                }
                line.clear();
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("stderr")?;
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Ok(Piped {
            child,
            outputs,
            first_seen,
            log,
        })
    }

    /// Waits until outputs flow, then lets them run for `warm`.
    fn wait_rate(&mut self, warm: Duration) {
        while self.outputs.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(warm);
    }

    /// Puts `bytes` in place (written beside it, then renamed over it) and
    /// waits for the first output carrying its version.
    fn swap(&mut self, live: &Path, bytes: &[u8]) -> Result<Duration> {
        let want = short_hash(bytes);
        let started = Instant::now();
        self.swap_no_wait(live, bytes)?;
        self.wait_version(started, |v| *v == want)
    }

    /// Waits for the first output, after `started`, of a version other
    /// than the one served then; returns how long after `started` it came.
    fn wait_new_version(&self, started: Instant) -> Result<Duration> {
        let before = self
            .first_seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, at)| *at < started)
            .map(|(v, _)| v.clone());
        self.wait_version(started, |v| Some(v) != before.as_ref())
    }

    /// Waits for the first output, after `started`, of a version `wanted`
    /// accepts; returns how long after `started` it came.
    fn wait_version(&self, started: Instant, wanted: impl Fn(&String) -> bool) -> Result<Duration> {
        let deadline = started + Duration::from_secs(300);
        loop {
            if let Some((_, at)) = self
                .first_seen
                .lock()
                .unwrap()
                .iter()
                .find(|(v, at)| *at >= started && wanted(v))
            {
                return Ok(*at - started);
            }
            ensure!(
                Instant::now() < deadline,
                "the version waited for was never served:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn swap_no_wait(&mut self, live: &Path, bytes: &[u8]) -> Result<()> {
        let tmp: PathBuf = live.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, live)?;
        Ok(())
    }

    /// Outputs per second over `span`, and the CPU time wasmpipe spent
    /// per million outputs, calling `each_second` once a second.
    fn rate_over(
        &mut self,
        span: Duration,
        mut each_second: impl FnMut(&mut Piped) -> Result<()>,
    ) -> Result<(f64, f64)> {
        let start_n = self.outputs.load(Ordering::Relaxed);
        let start_cpu = cpu_seconds(self.child.id());
        let started = Instant::now();
        let mut next = started + Duration::from_secs(1);
        while started.elapsed() < span {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += Duration::from_secs(1);
            if started.elapsed() < span {
                each_second(self)?;
            }
        }
        let n = self.outputs.load(Ordering::Relaxed) - start_n;
        let cpu = cpu_seconds(self.child.id()) - start_cpu;
        Ok((
            n as f64 / started.elapsed().as_secs_f64(),
            cpu / (n as f64 / 1e6),
        ))
    }

    /// The text between `after` and `before` on log lines containing `what`.
    fn log_values(&self, what: &str, after: &str, before: &str) -> String {
        let log = self.log.lock().unwrap();
        let v: Vec<String> = log
            .lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| {
                let rest = l.rsplit_once(after)?.1;
                Some(format!("{} s", rest.split(before).next()?))
            })
            .collect();
        v.join(", ")
    }

    /// The "checked in N ms" of the first `n` reloads.
    fn checked_ms(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let ms: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("checked in ").nth(1))
            .take(n)
            .collect();
        ms.join(", ")
    }

    /// Stops the pipeline with SIGTERM; its exit code and log.
    fn finish(mut self) -> Result<(i32, String)> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        Ok((status.code().unwrap_or(-1), log))
    }
}

/// User + system CPU time of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
