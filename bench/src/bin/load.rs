//! Load generator for `wasmpipe serve`: starts the server on a loopback
//! port with a fresh database (durable: WAL, synchronous = FULL), posts
//! batches from several client threads for a while, and reports the
//! ingest rate (events acknowledged per second), the 202 latency
//! percentiles and the end-to-end rate (until every accepted event is
//! processed and stored), for batches of 100 and 1,000 events.
//!
//! Run with: bash bench/run-serve   (builds everything first)
//! or: target/release/load [--seconds N] [--clients N] [--workers N]

use anyhow::{Context, Result, bail};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    seconds: u64,
    clients: usize,
    workers: usize,
}

fn main() -> Result<()> {
    let mut opts = Opts {
        seconds: 5,
        clients: 4,
        workers: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => opts.seconds = args.next().context("--seconds N")?.parse()?,
            "--clients" => opts.clients = args.next().context("--clients N")?.parse()?,
            "--workers" => opts.workers = args.next().context("--workers N")?.parse()?,
            _ => bail!("unknown argument `{a}`; use --seconds N, --clients N, --workers N"),
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_path_buf();
    let repo = bin_dir.join("../..").canonicalize()?;
    let plugins = repo.join("plugins/target/wasm32-wasip1/release");
    println!(
        "| workload | batch | clients | ingest events/s | p50 ms | p99 ms | max ms | end-to-end events/s | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, stages) in [
        (
            "adder (map + reduce, result per job)",
            vec![("double", "map"), ("sum", "reduce")],
        ),
        ("store (map, every output stored)", vec![("double", "map")]),
    ] {
        for batch in [100usize, 1000] {
            let dir = tempdir(&repo)?;
            let mut manifest = format!(
                "[pipeline]\nname = \"load\"\n\n[runtime]\nworkers = {}\n\n[serve]\ndatabase = \"load.db\"\nmax_backlog = 2000000\n\n",
                opts.workers
            );
            for (plugin, kind) in &stages {
                manifest.push_str(&format!(
                    "[[stage]]\nname = \"{plugin}\"\nkind = \"{kind}\"\nplugin = {:?}\n\n",
                    plugins.join(format!("{plugin}.wasm")).display().to_string()
                ));
            }
            let m = dir.join("load.toml");
            std::fs::write(&m, manifest)?;
            let r = run_one(&bin_dir.join("wasmpipe"), &m, batch, &opts)?;
            println!(
                "| {name} | {batch} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
                opts.clients, r.ingest_rate, r.p50, r.p99, r.max, r.e2e_rate, r.peak_rss_mib
            );
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

struct Report {
    ingest_rate: f64,
    p50: f64,
    p99: f64,
    max: f64,
    e2e_rate: f64,
    peak_rss_mib: f64,
}

fn tempdir(repo: &Path) -> Result<std::path::PathBuf> {
    let d = repo.join(format!("target/bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn run_one(wasmpipe: &Path, manifest: &Path, batch: usize, opts: &Opts) -> Result<Report> {
    let log = std::fs::File::create(manifest.with_extension("log"))?;
    let mut child = Command::new(wasmpipe)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(manifest)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start wasmpipe serve")?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = lines.next().context("the server exited")??;
    let base = line
        .strip_prefix("listening on ")
        .context("listening line")?
        .to_string();
    let url = format!("{base}/v1/pipelines/load/jobs");
    let body: String = (0..batch)
        .map(|i| {
            format!(
                "{{\"n\":{i},\"service\":\"svc-{}\",\"msg\":\"request handled in {} ms\"}}\n",
                i % 7,
                i % 100
            )
        })
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let start = Instant::now();
    let until = start + Duration::from_secs(opts.seconds);
    let mut latencies: Vec<f64> = Vec::new();
    let mut accepted = 0u64;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..opts.clients)
            .map(|_| {
                let (agent, url, body) = (agent.clone(), &url, &body);
                s.spawn(move || -> Result<(Vec<f64>, u64)> {
                    let mut lat = Vec::new();
                    let mut n = 0;
                    while Instant::now() < until {
                        let t = Instant::now();
                        let mut r = agent
                            .post(url)
                            .header("content-type", "application/x-ndjson")
                            .send(body.as_bytes())?;
                        let text = r.body_mut().read_to_string()?;
                        match r.status().as_u16() {
                            202 => {
                                lat.push(t.elapsed().as_secs_f64() * 1e3);
                                n += batch as u64;
                            }
                            429 | 503 => std::thread::sleep(Duration::from_millis(50)),
                            s => bail!("unexpected status {s}: {text}"),
                        }
                    }
                    Ok((lat, n))
                })
            })
            .collect();
        for h in handles {
            let (lat, n) = h.join().expect("client thread")?;
            latencies.extend(lat);
            accepted += n;
        }
        Ok(())
    })?;
    let ingest_secs = start.elapsed().as_secs_f64();
    // Wait until every accepted event is processed.
    let metrics_url = format!("{base}/metrics");
    loop {
        let text = agent
            .get(&metrics_url)
            .call()?
            .body_mut()
            .read_to_string()?;
        let queued: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("wasmpipe_queue_events{pipeline=\"load\"} "))
            .context("queue gauge")?
            .parse()?;
        if queued == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let e2e_secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Report {
        ingest_rate: accepted as f64 / ingest_secs,
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or(0.0),
        e2e_rate: accepted as f64 / e2e_secs,
        peak_rss_mib: peak_kib / 1024.0,
    })
}
