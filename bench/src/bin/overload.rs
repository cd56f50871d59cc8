//! Overload of `wasmpipe serve`: a crowd of clients (2,000 by default),
//! each posting batches over its own keep-alive connection for a while,
//! as a load balancer's prober GETs `/healthz` every 100 ms on a new
//! connection; then the same load from a few clients (4 by default), the
//! baseline, in the same run. Every client starts at once, and retries a
//! `429` or `503` after a short pause (100 ms) rather than its
//! `Retry-After`: a crowd of impatient clients, the worst case.
//!
//! It reports the answers by status (202, 429, 503, other), the requests
//! that got none (the connection refused, reset, closed before a whole
//! answer, or silent for 60 s), accepted batches and events per second,
//! the latency of 202s and of every answer (p50, p99, max), the health
//! probe's (p50, p99, max), serve's peak RSS (VmHWM) and its RSS over the
//! run, the most descriptors it held, and the open-file limit it ran with.
//!
//! It raises its own open-file limit to the hard limit (each client holds
//! a connection), and serve, its child, inherits it; `--serve-nofile N`
//! starts serve with a soft limit of N instead, to see what a smaller one
//! (1024 is a common default) does.
//!
//! Run with: bash bench/run-overload
//! or: target/release/overload [--clients N] [--baseline N] [--seconds N]
//! [--batch N] [--workers N] [--serve-nofile N]

use anyhow::{Context, Result, bail};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

struct Opts {
    clients: usize,
    baseline: usize,
    seconds: u64,
    batch: usize,
    workers: usize,
    serve_nofile: Option<u64>,
}

fn main() -> Result<()> {
    let mut opts = Opts {
        clients: 2000,
        baseline: 4,
        seconds: 10,
        batch: 100,
        workers: 2,
        serve_nofile: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<u64> {
            let v = args.next().with_context(|| format!("{a} takes {what}"))?;
            v.parse()
                .with_context(|| format!("{a} takes {what}, got `{v}`"))
        };
        match a.as_str() {
            "--clients" => opts.clients = num("a number of clients")? as usize,
            "--baseline" => opts.baseline = num("a number of clients (0: none)")? as usize,
            "--seconds" => opts.seconds = num("seconds")?,
            "--batch" => opts.batch = num("events per batch")? as usize,
            "--workers" => opts.workers = num("worker threads")? as usize,
            "--serve-nofile" => opts.serve_nofile = Some(num("an open-file limit")?),
            _ => bail!(
                "unknown argument `{a}`; use --clients N, --baseline N, --seconds N, --batch N, --workers N, --serve-nofile N"
            ),
        }
    }
    let limit = raise_nofile()?;
    if limit < opts.clients as u64 + 64 {
        bail!(
            "the open-file limit is {limit}, too few for {} clients (each holds a connection); raise the hard limit (`ulimit -Hn`, or LimitNOFILE= for a service) or use fewer --clients",
            opts.clients
        );
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the directory of this executable")?
        .to_path_buf();
    let repo = bin_dir.join("../..").canonicalize()?;
    let plugin = repo.join("plugins/target/wasm32-wasip1/release/double.wasm");
    if !plugin.exists() {
        bail!(
            "{} is missing; build the plugins first (`bash bench/run-overload` does)",
            plugin.display()
        );
    }
    println!(
        "serve: `double` (a map, every output stored as a row), {} workers, defaults otherwise (max_concurrent_ingest 4, max_backlog 1,000,000, max_connections 4096); batches of {} events (~{} bytes); {} s per row; this process's open-file limit {limit}",
        opts.workers,
        opts.batch,
        body(opts.batch).len(),
        opts.seconds
    );
    let mut rows = Vec::new();
    for clients in [opts.baseline, opts.clients] {
        if clients == 0 {
            continue;
        }
        let dir = repo.join(format!("target/bench-overload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let m = dir.join("load.toml");
        std::fs::write(
            &m,
            format!(
                "[pipeline]\nname = \"load\"\n\n[runtime]\nworkers = {}\n\n[serve]\ndatabase = \"load.db\"\n\n[[stage]]\nname = \"double\"\nkind = \"map\"\nplugin = {:?}\n",
                opts.workers,
                plugin.display().to_string()
            ),
        )?;
        let r = run(&bin_dir.join("wasmpipe"), &m, clients, &opts)?;
        std::fs::remove_dir_all(&dir)?;
        rows.push((clients, r));
    }
    println!();
    println!(
        "| clients | requests | 202 | 429 | 503 | other | no answer | accepted batches/s | accepted events/s | peak RSS MiB | RSS at ¼, ½, ¾, end MiB | most descriptors | serve's open-file limit |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for (clients, r) in &rows {
        let secs = r.elapsed.as_secs_f64();
        println!(
            "| {clients} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            r.answered() + r.failures.len() as u64,
            r.status(202),
            r.status(429),
            r.status(503),
            r.answered() - r.status(202) - r.status(429) - r.status(503),
            r.failures.len(),
            r.status(202) as f64 / secs,
            (r.status(202) * opts.batch as u64) as f64 / secs,
            r.peak_rss_kib as f64 / 1024.0,
            r.rss_quarters
                .iter()
                .map(|k| format!("{:.0}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
            r.max_fds,
            r.nofile,
        );
    }
    println!();
    println!(
        "| clients | 202 p50 ms | 202 p99 ms | 202 max ms | any answer p50 ms | any answer p99 ms | any answer max ms | health probes | health p50 ms | health p99 ms | health max ms | slowest connect ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (clients, r) in &rows {
        let (a, all, h) = (
            Pct::of(&r.accepted_ms),
            Pct::of(&r.answer_ms),
            Pct::of(&r.health_ms),
        );
        println!(
            "| {clients} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.0} |",
            a.p50,
            a.p99,
            a.max,
            all.p50,
            all.p99,
            all.max,
            r.health_ms.len(),
            h.p50,
            h.p99,
            h.max,
            r.slowest_connect_ms
        );
    }
    for (clients, r) in &rows {
        if r.health_failures > 0 {
            println!(
                "{clients} clients: {} health probes failed",
                r.health_failures
            );
        }
        if !r.failures.is_empty() {
            let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
            for f in &r.failures {
                *kinds.entry(f.as_str()).or_default() += 1;
            }
            println!("{clients} clients: requests without an answer: {kinds:?}");
        }
    }
    Ok(())
}

/// Raises this process's soft open-file limit to its hard limit; returns it.
fn raise_nofile() -> Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer to a rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        l.rlim_cur = l.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(l.rlim_cur)
}

fn body(batch: usize) -> String {
    (0..batch)
        .map(|i| {
            format!(
                "{{\"n\":{i},\"service\":\"svc-{}\",\"msg\":\"request handled in {} ms\"}}\n",
                i % 7,
                i % 100
            )
        })
        .collect()
}

#[derive(Default)]
struct Report {
    elapsed: Duration,
    statuses: std::collections::BTreeMap<u16, u64>,
    /// What went wrong with each request that got no answer.
    failures: Vec<String>,
    accepted_ms: Vec<f64>,
    answer_ms: Vec<f64>,
    health_ms: Vec<f64>,
    health_failures: u64,
    slowest_connect_ms: f64,
    peak_rss_kib: u64,
    rss_quarters: Vec<u64>,
    max_fds: usize,
    nofile: String,
}

impl Report {
    fn status(&self, s: u16) -> u64 {
        self.statuses.get(&s).copied().unwrap_or(0)
    }
    fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

struct Pct {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Pct {
    fn of(v: &[f64]) -> Pct {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        Pct {
            p50: at(0.5),
            p99: at(0.99),
            max: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// What a client tallies.
#[derive(Default)]
struct Tally {
    statuses: std::collections::BTreeMap<u16, u64>,
    failures: Vec<String>,
    accepted_ms: Vec<f64>,
    answer_ms: Vec<f64>,
    slowest_connect_ms: f64,
}

fn run(wasmpipe: &Path, manifest: &Path, clients: usize, opts: &Opts) -> Result<Report> {
    let log = std::fs::File::create(manifest.with_extension("log"))?;
    let mut cmd = Command::new(wasmpipe);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .arg(manifest)
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(n) = opts.serve_nofile {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
                l.rlim_cur = n.min(l.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("cannot start wasmpipe serve")?;
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = lines.next().context("the server exited")??;
    let addr = line
        .strip_prefix("listening on http://")
        .with_context(|| format!("expected `listening on http://...`, got `{line}`"))?
        .to_string();
    let nofile = std::fs::read_to_string(format!("/proc/{pid}/limits"))?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_string())
        .unwrap_or_default();
    let body = body(opts.batch);
    let request = format!(
        "POST /v1/pipelines/load/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let probe = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let length = Duration::from_secs(opts.seconds);
    let start = Instant::now();
    let until = start + length;
    let done = AtomicBool::new(false);
    let mut report = Report {
        nofile,
        ..Report::default()
    };
    std::thread::scope(|s| -> Result<()> {
        // Serve's memory and descriptors, every 100 ms.
        let sampler = s.spawn(|| {
            let mut samples: Vec<(Duration, u64)> = Vec::new();
            let mut max_fds = 0;
            while !done.load(Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    samples.push((start.elapsed(), kib));
                }
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                max_fds = max_fds.max(fds);
                std::thread::sleep(Duration::from_millis(100));
            }
            (samples, max_fds)
        });
        let prober = s.spawn(|| {
            let (mut ms, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let t = Instant::now();
                let mut c = Conn::new(&addr);
                match c.exchange(probe.as_bytes()) {
                    Ok(200) => ms.push(t.elapsed().as_secs_f64() * 1e3),
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
            }
            (ms, failed)
        });
        let crowd = (0..clients)
            .map(|_| {
                let (addr, request) = (&addr, &request);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(s, move || {
                        let mut c = Conn::new(addr);
                        let mut t = Tally::default();
                        while Instant::now() < until {
                            let sent = Instant::now();
                            match c.exchange(request.as_bytes()) {
                                Ok(status) => {
                                    let ms = sent.elapsed().as_secs_f64() * 1e3 - c.connect_ms;
                                    *t.statuses.entry(status).or_default() += 1;
                                    t.answer_ms.push(ms);
                                    if status == 202 {
                                        t.accepted_ms.push(ms);
                                    } else {
                                        std::thread::sleep(Duration::from_millis(100));
                                    }
                                }
                                Err(e) => {
                                    t.failures.push(e);
                                    std::thread::sleep(Duration::from_millis(100));
                                }
                            }
                            t.slowest_connect_ms = t.slowest_connect_ms.max(c.connect_ms);
                        }
                        t
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot start a client thread")?;
        for c in crowd {
            let t = c.join().expect("a client thread panicked");
            for (k, v) in t.statuses {
                *report.statuses.entry(k).or_default() += v;
            }
            report.failures.extend(t.failures);
            report.accepted_ms.extend(t.accepted_ms);
            report.answer_ms.extend(t.answer_ms);
            report.slowest_connect_ms = report.slowest_connect_ms.max(t.slowest_connect_ms);
        }
        report.elapsed = start.elapsed();
        (report.health_ms, report.health_failures) = prober.join().expect("the prober panicked");
        done.store(true, Relaxed);
        let (samples, max_fds) = sampler.join().expect("the sampler panicked");
        report.max_fds = max_fds;
        report.rss_quarters = (1..=4)
            .map(|q| {
                let at = length * q / 4;
                samples
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= at)
                    .map_or(0, |s| s.1)
            })
            .collect();
        Ok(())
    })?;
    report.peak_rss_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
    // SAFETY: a plain kill(2) of the server this process started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "serve exited with {status} after the load; its log is {}",
            manifest.with_extension("log").display()
        );
    }
    Ok(report)
}

/// A field of /proc/PID/status in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A client's keep-alive connection: one request at a time, its answer
/// read whole (serve sends a `Content-Length`). A failure of the
/// connection is an error named by its kind; a `Connection: close`
/// announced in an answer is not, and the next request opens a new one.
struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    /// How long the last request waited for its connection to open.
    connect_ms: f64,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
            connect_ms: 0.0,
        }
    }

    fn exchange(&mut self, req: &[u8]) -> Result<u16, String> {
        self.connect_ms = 0.0;
        if self.stream.is_none() {
            let t = Instant::now();
            let s = TcpStream::connect(&self.addr).map_err(|e| kind("connect", &e))?;
            self.connect_ms = t.elapsed().as_secs_f64() * 1e3;
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
        }
        let s = self.stream.as_mut().expect("connected above");
        let answer = s
            .write_all(req)
            .map_err(|e| kind("send", &e))
            .and_then(|()| read_answer(s));
        if !matches!(answer, Ok((_, false))) {
            self.stream = None;
        }
        answer.map(|(status, _)| status)
    }
}

/// A short name for a failed connection: what was being done and how it
/// failed (`read: reset`, `read: closed`, `read: timeout`, ...).
fn kind(doing: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let how = match e.kind() {
        K::ConnectionReset => "reset",
        K::ConnectionRefused => "refused",
        K::ConnectionAborted => "aborted",
        K::BrokenPipe => "broken pipe",
        K::WouldBlock | K::TimedOut => "timeout",
        K::UnexpectedEof => "closed",
        _ => return format!("{doing}: {e}"),
    };
    format!("{doing}: {how}")
}

/// Reads one HTTP/1.1 answer: its status, and whether it closes the
/// connection.
fn read_answer(s: &mut TcpStream) -> Result<(u16, bool), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut more = |buf: &mut Vec<u8>| -> Result<(), String> {
        match s.read(&mut chunk) {
            Ok(0) => Err("read: closed".into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(kind("read", &e)),
        }
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        more(&mut buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "read: not HTTP".to_string())?;
    let (mut len, mut close) = (None, false);
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse::<usize>().ok(),
                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let len = len.ok_or_else(|| "read: no Content-Length".to_string())?;
    while buf.len() < head_end + len {
        more(&mut buf)?;
    }
    Ok((status, close))
}
