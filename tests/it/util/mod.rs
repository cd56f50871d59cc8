//! Helpers shared by the test modules: building the plugins once, running
//! the binary, writing manifests, comparing outputs with readable diffs.

pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The built plugin `name`, building every plugin (once per test process)
/// with `cargo build --release` in `plugins/`.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = repo().join("plugins");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet"])
            .current_dir(&root)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building plugins/ failed (is the target installed? `rustup target add wasm32-wasip1`):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(root.join("target/wasm32-wasip1/release"))
    });
    match dir {
        Ok(d) => d.join(format!("{name}.wasm")),
        Err(e) => panic!("{e}"),
    }
}

/// The version every mode records for the plugin at `path`: the first 12
/// hex digits of the SHA-256 of its bytes.
pub fn short_version(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).expect("cannot read plugin");
    hex::encode(sha2::Sha256::digest(bytes))[..12].to_string()
}

/// The `wasmpipe` binary, with a compiled-module cache private to this run.
pub fn wasmpipe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmpipe"));
    cmd.env(
        "WASMPIPE_CACHE_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache"),
    );
    cmd.env_remove("RUST_LOG");
    // `.ci/run` lints what it builds through clippy's driver; the crates a
    // test builds (plugins, scaffolded stages) are built as a user would.
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// The result of running the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `wasmpipe` with `args`.
pub fn run(args: &[&str]) -> Run {
    wasmpipe()
        .args(args)
        .output()
        .expect("cannot run wasmpipe")
        .into()
}

/// Runs `wasmpipe run <manifest> <args>`.
pub fn run_manifest(manifest: &Path, args: &[&str]) -> Run {
    wasmpipe()
        .arg("run")
        .arg(manifest)
        .args(args)
        .output()
        .expect("cannot run wasmpipe")
        .into()
}

/// Runs `cmd` to its end, or kills it and panics once `limit` has passed:
/// for tests of what must not hang, which would otherwise hang the suite.
pub fn run_bounded(cmd: &mut Command, limit: std::time::Duration) -> Run {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run wasmpipe");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for wasmpipe") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("wasmpipe still running after {limit:?}; stderr:\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// Writes `text` as `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("cannot write test file");
    p
}

/// Quotes a path for a TOML string.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Reads a JSON-lines file into values.
pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?} in {p:?}: {e}"))
        })
        .collect()
}

/// Asserts two texts are equal, showing the first differing lines.
pub fn assert_text_eq(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let (a, e): (Vec<_>, Vec<_>) = (actual.lines().collect(), expected.lines().collect());
    let first = a
        .iter()
        .zip(&e)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(e.len()));
    let show = |v: &[&str]| {
        v.iter()
            .skip(first)
            .take(5)
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what} differs at line {} ({} lines vs {} expected)\n--- actual\n{}\n--- expected\n{}",
        first + 1,
        a.len(),
        e.len(),
        show(&a),
        show(&e)
    );
}

/// Starts `cmd` with its stderr appended to `log`, and waits (up to two
/// minutes) for the first line it prints on stdout, which long-running
/// commands use to say they are ready. Returns the child and that line.
pub fn spawn_ready(cmd: &mut Command, log: &Path) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("cannot start wasmpipe");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "{} did not start:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    (child, line)
}

/// An HTTP client for the servers under test: statuses are answers, not
/// errors, and nothing waits longer than a minute.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into()
}

/// A `wasmpipe` process (`serve`, `worker`) started by a test: it said it
/// is ready on its first stdout line (`hello`), and its stderr goes to a
/// log file that failure messages show. Killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub hello: String,
}

impl Process {
    /// Starts `cmd` and waits for its first line (see [`spawn_ready`]).
    pub fn start(cmd: &mut Command, log: PathBuf) -> Process {
        let (child, hello) = spawn_ready(cmd, &log);
        Process { child, log, hello }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends it signal `sig`.
    pub fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) of our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then its exit code; panics if it is still running 30 s on.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "{} did not stop 30 s after SIGTERM",
                self.log.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its peak resident memory, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
