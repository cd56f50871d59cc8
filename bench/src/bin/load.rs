//! Load generator for `wasmpipe serve`: starts the server on a loopback
//! port with a fresh database (durable: WAL, synchronous = FULL), posts
//! batches from several client threads for a while, and reports the
//! ingest rate (events acknowledged per second), the 202 latency
//! percentiles and the end-to-end rate (until every accepted event is
//! processed and stored), for batches of 100 and 1,000 events; then the
//! two doors side by side: NDJSON batches against OTLP/HTTP exports
//! (protobuf, plain and gzipped) of as many log records, with the server's
//! CPU time per million records; then what a candidate version beside
//! the live one costs (none, a shadow, a canary on half the chunks).
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
            let r = run_one(
                &bin_dir.join("wasmpipe"),
                &m,
                batch,
                &opts,
                Door::Ndjson,
                None,
            )?;
            println!(
                "| {name} | {batch} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
                opts.clients, r.ingest_rate, r.p50, r.p99, r.max, r.e2e_rate, r.peak_rss_mib
            );
            std::fs::remove_dir_all(&dir)?;
        }
    }
    // The doors side by side, in the same run: the `store` workload (every
    // record stored) fed as NDJSON batches and as OTLP exports of as many
    // log records.
    println!();
    println!(
        "| door (store workload) | records per request | clients | ingest records/s | p50 ms | p99 ms | end-to-end records/s | server CPU s per million records |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for door in [
        Door::Ndjson,
        Door::Otlp { gzip: false },
        Door::Otlp { gzip: true },
    ] {
        let batch = 1000;
        let dir = tempdir(&repo)?;
        let manifest = format!(
            "[pipeline]\nname = \"load\"\n\n[runtime]\nworkers = {}\n\n[serve]\ndatabase = \"load.db\"\nmax_backlog = 2000000\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {:?}\n",
            opts.workers,
            plugins.join("stamp.wasm").display().to_string()
        );
        let m = dir.join("load.toml");
        std::fs::write(&m, manifest)?;
        let r = run_one(&bin_dir.join("wasmpipe"), &m, batch, &opts, door, None)?;
        println!(
            "| {} | {batch} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |",
            door.name(),
            opts.clients,
            r.ingest_rate,
            r.p50,
            r.p99,
            r.e2e_rate,
            r.cpu_per_million
        );
        std::fs::remove_dir_all(&dir)?;
    }
    // A candidate beside the live version, in the same run: the `store`
    // workload with `double` live and, as the candidate, the same code as
    // another version (`double` with a custom section appended), so the
    // figures are the cost of deploying, not of a different stage.
    println!();
    println!(
        "| candidate (store workload, batches of 1000) | clients | ingest events/s | p99 ms | end-to-end events/s | vs none | server CPU s per million events | chunks the candidate ran / skipped |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut none = 0.0;
    for (name, query) in [
        ("none", None),
        ("shadow", Some("mode=shadow")),
        ("canary, 50 % of chunks", Some("mode=canary&percent=50")),
    ] {
        let dir = tempdir(&repo)?;
        let manifest = format!(
            "[pipeline]\nname = \"load\"\n\n[runtime]\nworkers = {}\n\n[serve]\ndatabase = \"load.db\"\nmax_backlog = 2000000\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {:?}\n",
            opts.workers,
            plugins.join("double.wasm").display().to_string()
        );
        let m = dir.join("load.toml");
        std::fs::write(&m, manifest)?;
        let candidate = match query {
            Some(q) => {
                let mut module = std::fs::read(plugins.join("double.wasm"))?;
                // A custom section: id 0, its size, the name's length and
                // the name (all under 128 bytes, so one-byte LEB128s).
                let name = b"wasmpipe-bench-candidate";
                module.extend([0, name.len() as u8 + 1, name.len() as u8]);
                module.extend(name);
                let path = dir.join("candidate.wasm");
                std::fs::write(&path, module)?;
                Some((q, path))
            }
            None => None,
        };
        let deploy = candidate.as_ref().map(|(q, p)| (*q, p.as_path()));
        let r = run_one(
            &bin_dir.join("wasmpipe"),
            &m,
            1000,
            &opts,
            Door::Ndjson,
            deploy,
        )?;
        if query.is_none() {
            none = r.e2e_rate;
        }
        let ran = r.candidate.map_or("-".to_string(), |(ran, skipped)| {
            format!("{ran} / {skipped}")
        });
        println!(
            "| {name} | {} | {:.0} | {:.1} | {:.0} | {:.2}x | {:.2} | {ran} |",
            opts.clients,
            r.ingest_rate,
            r.p99,
            r.e2e_rate,
            r.e2e_rate / none,
            r.cpu_per_million
        );
        std::fs::remove_dir_all(&dir)?;
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
    /// Server CPU seconds (user + system) per million events accepted.
    cpu_per_million: f64,
    /// A candidate's chunks: run by it (compared, for a shadow), and
    /// skipped by a shadow that was behind.
    candidate: Option<(u64, u64)>,
}

fn tempdir(repo: &Path) -> Result<std::path::PathBuf> {
    let d = repo.join(format!("target/bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// How a load generator sends its events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    /// NDJSON batches to `/v1/pipelines/load/jobs`.
    Ndjson,
    /// OTLP/HTTP protobuf exports to `/v1/logs`, gzipped or not.
    Otlp { gzip: bool },
}

impl Door {
    fn name(self) -> &'static str {
        match self {
            Door::Ndjson => "NDJSON batch (`/v1/pipelines/{name}/jobs`)",
            Door::Otlp { gzip: false } => "OTLP protobuf (`/v1/logs`)",
            Door::Otlp { gzip: true } => "OTLP protobuf, gzip (`/v1/logs`)",
        }
    }

    /// The path, a body of `batch` events (log lines), its headers, and
    /// the status that says it was accepted.
    fn request(
        self,
        batch: usize,
    ) -> (
        &'static str,
        Vec<u8>,
        Vec<(&'static str, &'static str)>,
        u16,
    ) {
        let line = |i: usize| format!("request handled in {} ms by svc-{}", i % 100, i % 7);
        match self {
            Door::Ndjson => {
                let body: String = (0..batch)
                    .map(|i| {
                        format!(
                            "{{\"n\":{i},\"service\":\"svc-{}\",\"msg\":\"{}\"}}\n",
                            i % 7,
                            line(i)
                        )
                    })
                    .collect();
                (
                    "/v1/pipelines/load/jobs",
                    body.into_bytes(),
                    vec![("content-type", "application/x-ndjson")],
                    202,
                )
            }
            Door::Otlp { gzip } => {
                use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
                use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
                use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
                use prost::Message as _;
                let text = |s: String| AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                };
                let records = (0..batch)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_796_637_600_000_000_000 + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(text(line(i))),
                        attributes: vec![KeyValue {
                            key: "n".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::IntValue(i as i64)),
                            }),
                        }],
                        ..Default::default()
                    })
                    .collect();
                let export = ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                            attributes: vec![KeyValue {
                                key: "service.name".into(),
                                value: Some(text("svc".into())),
                            }],
                            ..Default::default()
                        }),
                        scope_logs: vec![ScopeLogs {
                            log_records: records,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                };
                let mut body = export.encode_to_vec();
                let mut headers = vec![("content-type", "application/x-protobuf")];
                if gzip {
                    use std::io::Write as _;
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&body).expect("gzip in memory");
                    body = e.finish().expect("gzip in memory");
                    headers.push(("content-encoding", "gzip"));
                }
                ("/v1/logs", body, headers, 200)
            }
        }
    }
}

fn run_one(
    wasmpipe: &Path,
    manifest: &Path,
    batch: usize,
    opts: &Opts,
    door: Door,
    deploy: Option<(&str, &Path)>,
) -> Result<Report> {
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
    let (path, body, headers, accepted_status) = door.request(batch);
    let url = format!("{base}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    if let Some((query, module)) = deploy {
        let mut r = agent
            .post(&format!("{base}/v1/deployments?stage=double&{query}"))
            .header("content-type", "application/wasm")
            .send(&std::fs::read(module)?[..])?;
        if r.status().as_u16() != 201 {
            bail!(
                "the candidate was refused: {}",
                r.body_mut().read_to_string()?
            );
        }
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(opts.seconds);
    let mut latencies: Vec<f64> = Vec::new();
    let mut accepted = 0u64;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..opts.clients)
            .map(|_| {
                let (agent, url, body, headers) = (agent.clone(), &url, &body, &headers);
                s.spawn(move || -> Result<(Vec<f64>, u64)> {
                    let mut lat = Vec::new();
                    let mut n = 0;
                    while Instant::now() < until {
                        let t = Instant::now();
                        let mut req = agent.post(url);
                        for (k, v) in headers {
                            req = req.header(*k, *v);
                        }
                        let mut r = req.send(&body[..])?;
                        let text =
                            String::from_utf8_lossy(&r.body_mut().read_to_vec()?).into_owned();
                        match r.status().as_u16() {
                            s if s == accepted_status => {
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
    // The server's CPU time so far (user + system), from /proc.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    let cpu_secs = ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let candidate = match deploy {
        Some(_) => {
            let v: serde_json::Value = serde_json::from_str(
                &agent
                    .get(&format!("{base}/v1/deployments"))
                    .call()?
                    .body_mut()
                    .read_to_string()?,
            )?;
            let t = &v["active"]["tally"];
            Some((
                t["candidate"]["chunks"].as_u64().unwrap_or(0),
                t["shadow"]["skipped"].as_u64().unwrap_or(0),
            ))
        }
        None => None,
    };
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
        cpu_per_million: cpu_secs / (accepted.max(1) as f64 / 1e6),
        candidate,
    })
}
