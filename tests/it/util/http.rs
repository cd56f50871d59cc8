//! The HTTP harness of the tests of `serve`, the console, tail, diff and
//! windows: `wasmpipe serve` as a child process on a free loopback port
//! (so that it can be SIGKILLed), and a blocking client.

use super::{Process, agent, wasmpipe};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running `wasmpipe serve` on a free loopback port.
pub(crate) struct Server {
    proc: Process,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(manifest: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with(manifest, env, &[])
    }

    pub(crate) fn start_with(manifest: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let proc = Process::start(
            wasmpipe()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args)
                .arg(manifest)
                .envs(env.iter().copied()),
            manifest.with_extension("log"),
        );
        let base = proc
            .hello
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        Server { proc, base }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Where its log is written.
    pub(crate) fn proc_log_path(&self) -> PathBuf {
        self.proc.log.clone()
    }

    pub(crate) fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(self) -> Option<i32> {
        self.proc.stop()
    }

    pub(crate) fn kill(mut self) {
        self.proc.kill();
    }

    /// Peak resident memory, KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.proc.peak_rss_kib()
    }
}

/// A response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    /// The body as text (lossily, for a binary one).
    pub(crate) body: String,
    /// The body's bytes.
    pub(crate) bytes: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub(crate) fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub(crate) fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, ureq::Error> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(body.unwrap_or_default().to_vec()).unwrap();
    let mut r = agent().run(req)?;
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = r.body_mut().with_config().limit(64 << 20).read_to_vec()?;
    Ok(Resp {
        status: r.status().as_u16(),
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
    })
}

pub(crate) fn get(s: &Server, path: &str) -> Resp {
    request("GET", &s.url(path), &[], None).unwrap()
}

pub(crate) fn post(s: &Server, path: &str, ct: &str, body: &str) -> Resp {
    request(
        "POST",
        &s.url(path),
        &[("content-type", ct)],
        Some(body.as_bytes()),
    )
    .unwrap()
}

pub(crate) fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Polls a job until it is done.
pub(crate) fn wait_job(s: &Server, id: i64, headers: &[(&str, &str)]) -> Value {
    let t = Instant::now();
    loop {
        let r = request("GET", &s.url(&format!("/v1/jobs/{id}")), headers, None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        if j["status"] == "done" {
            return j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "job {id} not done in 60 s: {j}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every stored event matching `query`, following cursors.
pub(crate) fn all_events(s: &Server, query: &str, headers: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/events?{query}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = request("GET", &s.url(&path), headers, None).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        out.extend(v["events"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Every job, newest first, following `next_cursor` (a crash test can
/// store more jobs than one page holds).
pub(crate) fn all_jobs(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/v1/jobs?limit=1000".to_string();
    loop {
        let v = get(s, &path).json();
        out.extend(v["jobs"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/jobs?limit=1000&cursor={c}"),
            None => return out,
        }
    }
}
