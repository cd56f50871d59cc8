//! Runs each workload with wasmpipe and with the native baseline,
//! alternately, in the same run; checks that their outputs are identical;
//! prints events/s, MB/s, the wasmpipe/native ratio and peak RSS.
//!
//! Run with: bash bench/run   (builds everything first)
//! or: target/release/compare [--rounds N] [--workers N] [--quick]

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Opts {
    rounds: usize,
    workers: usize,
    w1_lines: u64,
    w2_events: u64,
}

fn main() -> Result<()> {
    let mut opts = Opts {
        rounds: 3,
        workers: 2,
        w1_lines: 10_000_000,
        w2_events: 2_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => opts.rounds = args.next().context("--rounds N")?.parse()?,
            "--workers" => opts.workers = args.next().context("--workers N")?.parse()?,
            "--quick" => {
                opts.w1_lines = 1_000_000;
                opts.w2_events = 200_000;
            }
            _ => bail!("unknown argument `{a}`; use --rounds N, --workers N, --quick"),
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let repo = bin_dir.join("../..").canonicalize()?;
    let data = repo.join("target/bench-data");
    std::fs::create_dir_all(&data)?;
    let plugins = repo.join("plugins/target/wasm32-wasip1/release");
    for p in [
        "double",
        "sum",
        "bench_adder",
        "bench_enrich",
        "bench_stats",
    ] {
        ensure!(
            plugins.join(format!("{p}.wasm")).is_file(),
            "plugin {p} is not built; run `bash bench/run`"
        );
    }
    // Outputs go to memory (/dev/shm) where there is one, so that W2's
    // 800 MB of output measures the programs rather than the disk.
    let shm = Path::new("/dev/shm");
    let out = if shm.is_dir() {
        shm.join("wasmpipe-bench")
    } else {
        data.join("out")
    };
    std::fs::create_dir_all(&out)?;
    let env = Env {
        wasmpipe: bin_dir.join("wasmpipe"),
        native: bin_dir.join("native"),
        data: data.clone(),
        out,
        plugins,
    };

    let w1 = env.ensure_data("w1", opts.w1_lines, |w, n| {
        wasmpipe_bench::data::adder(w, n)
    })?;
    let w1_small = env.ensure_data("w1-small", opts.w1_lines / 10, |w, n| {
        wasmpipe_bench::data::adder(w, n)
    })?;
    let logs = env.ensure_data("logs", opts.w2_events, |w, n| {
        wasmpipe_bench::data::logs(w, n)
    })?;

    let adder = env.manifest("w1", &[("double", "map", ""), ("sum", "reduce", "")])?;
    let fused = env.manifest("w1-fused", &[("bench_adder", "reduce", "")])?;
    let enrich = env.manifest("w2", &[("bench_enrich", "map", "")])?;
    let merge = env.manifest("w2-merge", &[("bench_merge", "map", "")])?;
    let stats = env.manifest("w3", &[("bench_stats", "reduce", "")])?;

    // Compile each module into the cache first: the runs below measure a
    // warm start, as every run after the first is.
    for m in [&adder, &fused, &enrich, &merge, &stats] {
        let status = Command::new(&env.wasmpipe)
            .arg("check")
            .arg(m)
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(status.success(), "`wasmpipe check {}` failed", m.display());
    }
    println!(
        "wasmpipe benchmark: {} workers, best of {} rounds, {}",
        opts.workers,
        opts.rounds,
        today()
    );
    println!();
    println!(
        "| workload | program | events/s | MB/s | vs native ({}t) | peak RSS |",
        opts.workers
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (name, work, input, manifest, events) in [
        ("W1 adder", "w1", &w1, &adder, opts.w1_lines),
        ("W1 fused (1 stage)", "w1", &w1, &fused, opts.w1_lines),
        ("W2 enrich", "w2", &logs, &enrich, opts.w2_events),
        ("W2 enrich with Merge", "w2", &logs, &merge, opts.w2_events),
        ("W3 keyed reduce", "w3", &logs, &stats, opts.w2_events),
    ] {
        let bytes = std::fs::metadata(input)?.len();
        let mut best = [Measure::worst(), Measure::worst(), Measure::worst()];
        let mut hashes = Vec::new();
        for _ in 0..opts.rounds {
            // Alternate the programs within each round so that a noisy
            // neighbour hurts all three alike.
            for (i, run) in [
                env.native(work, 1, input)?,
                env.native(work, opts.workers, input)?,
                env.wasmpipe(manifest, opts.workers, input)?,
            ]
            .into_iter()
            .enumerate()
            {
                hashes.push((i, run.1.clone()));
                best[i] = best[i].min(run.0);
            }
        }
        let reference = &hashes[0].1;
        for (i, h) in &hashes {
            ensure!(
                h == reference,
                "{name}: program {i} produced different output ({h} vs {reference})"
            );
        }
        let native_n = best[1].wall;
        for (label, m) in [
            ("native 1 thread", best[0]),
            (&format!("native {} threads", opts.workers)[..], best[1]),
            ("wasmpipe", best[2]),
        ] {
            let secs = m.wall.as_secs_f64();
            println!(
                "| {name} | {label} | {:.2}M | {:.0} | {:.2}x | {} MB |",
                events as f64 / secs / 1e6,
                bytes as f64 / secs / 1e6,
                native_n.as_secs_f64() / secs,
                m.rss >> 20
            );
        }
        rows.push((name, best[2]));
    }
    // Memory must be flat in input size: W1 at a tenth of the input.
    let small = env.wasmpipe(&adder, opts.workers, &w1_small)?.0;
    println!();
    println!(
        "peak RSS, W1 at {} vs {} lines: {} MB vs {} MB ({:.2}x)",
        opts.w1_lines,
        opts.w1_lines / 10,
        rows[0].1.rss >> 20,
        small.rss >> 20,
        rows[0].1.rss as f64 / small.rss as f64
    );
    // Start-up: one event through the adder with modules already cached.
    let one = data.join("one.jsonl");
    std::fs::write(&one, "{\"n\":1}\n")?;
    let mut startup = Duration::MAX;
    for _ in 0..5 {
        startup = startup.min(env.wasmpipe(&adder, 1, &one)?.0.wall);
    }
    println!(
        "start-up to first event processed (whole process, cached modules): {:.1} ms",
        startup.as_secs_f64() * 1e3
    );
    Ok(())
}

struct Env {
    wasmpipe: PathBuf,
    native: PathBuf,
    /// Inputs and manifests.
    data: PathBuf,
    /// Outputs, compared by hash after each run.
    out: PathBuf,
    plugins: PathBuf,
}

#[derive(Clone, Copy)]
struct Measure {
    wall: Duration,
    rss: u64,
}

impl Measure {
    fn worst() -> Measure {
        Measure {
            wall: Duration::MAX,
            rss: 0,
        }
    }

    /// The faster run, keeping the larger peak RSS seen.
    fn min(self, other: Measure) -> Measure {
        Measure {
            wall: self.wall.min(other.wall),
            rss: self.rss.max(other.rss),
        }
    }
}

impl Env {
    fn ensure_data(
        &self,
        name: &str,
        count: u64,
        write: impl Fn(&mut BufWriter<std::fs::File>, u64) -> std::io::Result<()>,
    ) -> Result<PathBuf> {
        let path = self.data.join(format!("{name}-{count}.jsonl"));
        if !path.is_file() {
            eprintln!("generating {}", path.display());
            let tmp = path.with_extension("tmp");
            let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            write(&mut w, count)?;
            w.flush()?;
            drop(w);
            std::fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }

    fn manifest(&self, name: &str, stages: &[(&str, &str, &str)]) -> Result<PathBuf> {
        let mut text = format!("[pipeline]\nname = \"{name}\"\n");
        for (plugin, kind, extra) in stages {
            let path = self.plugins.join(format!("{plugin}.wasm"));
            text.push_str(&format!(
                "\n[[stage]]\nname = \"{plugin}\"\nkind = \"{kind}\"\nplugin = {:?}\n{extra}",
                path.display().to_string()
            ));
        }
        let path = self.data.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn native(&self, work: &str, threads: usize, input: &Path) -> Result<(Measure, String)> {
        let out = self.out.join(format!("{work}-native.out"));
        let mut cmd = Command::new(&self.native);
        cmd.arg(work).arg(threads.to_string()).arg(input).arg(&out);
        let m = measure(cmd)?;
        Ok((m, hash(&out)?))
    }

    fn wasmpipe(&self, manifest: &Path, workers: usize, input: &Path) -> Result<(Measure, String)> {
        let out = self.out.join("wasmpipe.out");
        let mut cmd = Command::new(&self.wasmpipe);
        cmd.arg("run")
            .arg(manifest)
            .args(["-q", "-w", &workers.to_string(), "--meta"])
            .arg(format!("received_at={}", wasmpipe_bench::RECEIVED_AT))
            .arg("--meta")
            .arg(format!("host={}", wasmpipe_bench::HOST))
            .arg("-i")
            .arg(input)
            .arg("-o")
            .arg(&out);
        let m = measure(cmd)?;
        Ok((m, hash(&out)?))
    }
}

/// Runs `cmd`, returning its wall time and its own peak RSS (`wait4`).
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
    Ok(Measure {
        wall,
        rss: usage.ru_maxrss as u64 * 1024,
    })
}

fn hash(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(&h.finalize()[..8]))
}

fn today() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output().ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
