//! Building stages from their sources: for `wasmpipe build`, and for
//! manifests whose `plugin` is a stage's directory (built when loaded,
//! rebuilt by `run --watch` when its sources change).
//!
//! A directory with a `Cargo.toml` is a Rust crate, built by cargo for
//! `wasm32-wasip1` (a core module); one with a `stage.js`, `stage.ts` or
//! `stage.py` is built into a component by componentize-js or
//! componentize-py ([`js`], [`python`]). wasmpipe installs none of these
//! tools: when one is missing it says what to install.

pub mod js;
pub mod python;

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// Whether builds keep their progress to themselves (`run -q`): the tools'
/// success chatter ("Component built successfully") and the "built stage"
/// line. Their diagnostics, on stderr, are shown either way.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Makes the builds of this process quiet (see [`QUIET`]).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether JavaScript and Python stages are built as development builds
/// (`--watch`): the stage's code appended to an interpreter built once per
/// machine, live in the time it takes to bundle, rather than snapshotted
/// into a component of its own (see `runtime::source_section`).
static DEVELOPMENT: AtomicBool = AtomicBool::new(false);

/// Makes the JavaScript and Python builds of this process development
/// builds (see [`DEVELOPMENT`]).
pub fn set_development(on: bool) {
    DEVELOPMENT.store(on, Ordering::Relaxed);
}

fn development() -> bool {
    DEVELOPMENT.load(Ordering::Relaxed)
}

/// The target stages are compiled for.
pub const TARGET: &str = "wasm32-wasip1";

/// The language a stage directory is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Language {
    /// A crate (`Cargo.toml`).
    Rust,
    /// `stage.js`, or `stage.ts` (the path).
    JavaScript(PathBuf),
    /// `stage.py`.
    Python(PathBuf),
}

impl Language {
    /// What the stage directory `dir` holds.
    pub fn of(dir: &Path) -> Result<Language> {
        if dir.join("Cargo.toml").is_file() {
            return Ok(Language::Rust);
        }
        for file in ["stage.ts", "stage.js"] {
            if dir.join(file).is_file() {
                return Ok(Language::JavaScript(dir.join(file)));
            }
        }
        if dir.join("stage.py").is_file() {
            return Ok(Language::Python(dir.join("stage.py")));
        }
        bail!(
            "{dir:?} is not a stage: it has no `Cargo.toml` (Rust), `stage.js`, `stage.ts` or `stage.py` (create one with `wasmpipe new NAME --kind map --lang rust|js|ts|python`)"
        )
    }
}

/// Builds the stage at `dir` and returns the path of the `.wasm` (a core
/// module for Rust, a component for the others). The tools' progress and
/// diagnostics go to stderr.
pub fn build_stage(dir: &Path) -> Result<PathBuf> {
    build(dir).map(|(wasm, _)| wasm)
}

/// As [`build_stage`], and whether anything was built (a component whose
/// sources have not changed since it was built is not built again).
fn build(dir: &Path) -> Result<(PathBuf, bool)> {
    if !dir.is_dir() {
        bail!("{dir:?} is not a directory");
    }
    let dir = &dir.canonicalize()?;
    match Language::of(dir)? {
        Language::Rust => build_crate(dir).map(|wasm| (wasm, true)),
        Language::JavaScript(source) => js::build(dir, &source, development()),
        Language::Python(source) => python::build(dir, &source, development()),
    }
}

/// Where the toolchains `wasmpipe toolchains install` sets up live:
/// `$WASMPIPE_TOOLCHAINS`, else `$XDG_DATA_HOME/wasmpipe/toolchains`, else
/// `~/.local/share/wasmpipe/toolchains`.
pub fn toolchains_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WASMPIPE_TOOLCHAINS") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Some(PathBuf::from(d).join("wasmpipe/toolchains"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/wasmpipe/toolchains"))
}

/// The folder, inside a JavaScript or Python stage, where wasmpipe writes
/// the SDK's runtime, the WIT world and the component it builds.
pub const WORK_DIR: &str = ".wasmpipe";

/// The `wasmpipe:stage` world, as the host was built with it.
pub const STAGE_WIT: &str = include_str!("../../../plugin-sdk/wit/stage.wit");

/// The name of the stage in the folder `dir`: the folder's.
fn stage_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".into())
}

/// Writes `files` (name, text) into `dir`, leaving unchanged files alone so
/// their times do not wake a watcher; says whether any changed.
pub(crate) fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<bool> {
    let mut changed = false;
    for (name, text) in files {
        let p = dir.join(name);
        if std::fs::read(&p).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        std::fs::create_dir_all(p.parent().expect("a file in a folder"))?;
        std::fs::write(&p, text).with_context(|| format!("cannot write {p:?}"))?;
        changed = true;
    }
    Ok(changed)
}

/// The development interpreter of `language` (`js`, `python`) for the
/// SDK files `inputs`: `<cache>/interpreters/<language>-<digest>.wasm`,
/// made by `make(folder, out)` the first time (a few seconds, once per
/// machine and SDK version). `make` gets an empty folder to work in and
/// writes the component to `out`.
fn interpreter(
    language: &str,
    inputs: &[&str],
    make: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    use sha2::{Digest as _, Sha256};
    let mut digest = Sha256::new();
    for input in inputs {
        digest.update(input.as_bytes());
        digest.update([0]);
    }
    let digest = hex::encode(digest.finalize());
    let dir = crate::runtime::default_cache_dir()
        .or_else(|| toolchains_dir().map(|t| t.join("cache")))
        .context("no folder for the development interpreter: set WASMPIPE_CACHE_DIR")?
        .join("interpreters");
    let path = dir.join(format!("{language}-{}.wasm", &digest[..16]));
    if path.is_file() {
        return Ok(path);
    }
    let work = dir.join(format!(
        "{language}-{}.{}.tmp",
        &digest[..16],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {work:?}"))?;
    if !quiet() {
        tracing::info!(
            "building the {language} development interpreter (once per machine and SDK version)"
        );
    }
    let out = work.join("interpreter.wasm");
    let made = make(&work, &out).and_then(|()| {
        std::fs::rename(&out, &path).with_context(|| format!("cannot write {path:?}"))
    });
    let _ = std::fs::remove_dir_all(&work);
    made?;
    // The interpreters of earlier SDK versions are not used again.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{language}-")) && name.ends_with(".wasm") && e.path() != path
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(path)
}

/// Whether the component `out` was built from the stage's sources as they
/// are now (and by this SDK: `sdk_changed` says the SDK files were just
/// rewritten). Component builds are not reproducible byte for byte, and a
/// new version costs a compilation, so an unchanged stage is not rebuilt.
fn up_to_date(dir: &Path, out: &Path, sdk_changed: bool) -> bool {
    let built = std::fs::metadata(out).and_then(|m| m.modified());
    !sdk_changed && built.is_ok_and(|t| t >= newest_source(dir))
}

/// Whether `path` was modified after `out` was (or `out` does not exist).
fn newer_than(path: &Path, out: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    match (modified(path), modified(out)) {
        (Ok(p), Ok(o)) => p > o,
        _ => true,
    }
}

/// Runs a build tool with its output on stderr; `what` names it in errors.
fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    // stdout is the caller's (`wasmpipe build` prints the path there). The
    // tools print progress on their stdout and diagnostics on stderr.
    let progress = if quiet() {
        Stdio::null()
    } else {
        std::io::stderr().into()
    };
    let status = cmd
        // componentize-py and wizer (under componentize-js) are Rust
        // programs: a user's RUST_BACKTRACE, set to debug wasmpipe, would
        // bury the tool's own message (a Python traceback, a JavaScript
        // exception) in frames.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(progress)
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        return Err(ToolFailed {
            what: what.to_string(),
            status: status.to_string(),
            code: status.code(),
        }
        .into());
    }
    Ok(())
}

/// A build tool that ran and failed; its own messages went to stderr.
#[derive(Debug)]
pub(crate) struct ToolFailed {
    what: String,
    status: String,
    /// Its exit code, which some tools use to say what failed.
    pub code: Option<i32>,
}

impl std::fmt::Display for ToolFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed ({}); its messages are above",
            self.what, self.status
        )
    }
}

impl std::error::Error for ToolFailed {}

/// Runs a build tool to its end and returns what it said, for a caller
/// that reads its messages before showing them; `what` names it in errors.
fn tool_output(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    cmd.env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))
}

/// Shows on stderr what a tool that succeeded said (see [`QUIET`]): its
/// stdout is progress, its stderr warnings.
fn show_progress(output: &std::process::Output) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    if !quiet() {
        let _ = err.write_all(&output.stdout);
    }
    let _ = err.write_all(&output.stderr);
}

/// Runs `cargo build --release --target wasm32-wasip1` in the crate at
/// `dir` and returns the path of the `.wasm` it produced. Cargo's own
/// progress and diagnostics go to stderr.
pub fn build_crate(dir: &Path) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{dir:?} is not a stage crate: it has no `Cargo.toml`");
    }
    let dir = &dir.canonicalize()?;
    let manifest = dir.join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    if quiet() {
        // Cargo's progress, not its diagnostics.
        cmd.arg("--quiet");
    }
    let out = cmd
        .args(["build", "--release", "--target", TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        // Cargo reads `.cargo/config.toml` from the working directory.
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cargo:?} (is a Rust toolchain installed?)"))?;
    if !out.status.success() {
        bail!(
            "`cargo build --release --target {TARGET}` failed in {dir:?} (is the target installed? `rustup target add {TARGET}`)"
        );
    }
    let wanted = manifest.canonicalize().unwrap_or(manifest);
    let mut wasm = None;
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let of_crate = msg["manifest_path"]
            .as_str()
            .is_some_and(|p| Path::new(p).canonicalize().is_ok_and(|p| p == wanted));
        let files = msg["filenames"].as_array().into_iter().flatten();
        for f in files.filter_map(|f| f.as_str()) {
            if of_crate && f.ends_with(".wasm") {
                wasm = Some(PathBuf::from(f));
            }
        }
    }
    wasm.with_context(|| {
        format!("building {dir:?} produced no `.wasm`; a stage crate needs `crate-type = [\"cdylib\"]` under `[lib]`")
    })
}

/// What was last built from each crate directory, and when its newest
/// source file was written.
static BUILT: Mutex<Option<HashMap<PathBuf, (PathBuf, SystemTime)>>> = Mutex::new(None);

/// The `.wasm` of the stage crate at `dir`, built now unless it was built
/// by this process since its sources last changed (so reloading a manifest
/// does not run cargo for every unchanged crate).
pub fn stage_artifact(dir: &Path) -> Result<PathBuf> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let newest = newest_source(&key);
    {
        let built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((wasm, at)) = built.as_ref().and_then(|m| m.get(&key))
            && *at >= newest
            && wasm.is_file()
        {
            return Ok(wasm.clone());
        }
    }
    let started = std::time::Instant::now();
    let (wasm, rebuilt) = build(&key)?;
    if rebuilt && !quiet() {
        tracing::info!(
            "built stage {} in {:.1}s: {}",
            key.display(),
            started.elapsed().as_secs_f64(),
            wasm.display()
        );
    }
    BUILT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, (wasm.clone(), newest));
    Ok(wasm)
}

/// Folders inside a stage that hold what its build wrote or fetched.
const NOT_SOURCE: [&str; 6] = [
    "target",
    ".git",
    "node_modules",
    ".venv",
    WORK_DIR,
    "__pycache__",
];

/// Whether a change to `path` inside the stage at `dir` can change what the
/// stage builds to: its Rust, JavaScript, TypeScript or Python sources and
/// `Cargo.toml` / `package.json`, outside what builds write. Test files
/// (`*.test.js`, `test_*.py`) are sources too: rebuilding for one is cheap
/// next to missing a change.
pub fn is_stage_source(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    if rel
        .components()
        .any(|c| NOT_SOURCE.iter().any(|n| c.as_os_str() == *n))
    {
        return false;
    }
    path.extension()
        .is_some_and(|e| ["rs", "js", "mjs", "ts", "py"].iter().any(|x| e == *x))
        || path
            .file_name()
            .is_some_and(|n| n == "Cargo.toml" || n == "package.json")
}

/// The latest modification time of the crate's sources.
fn newest_source(dir: &Path) -> SystemTime {
    fn walk(dir: &Path, root: &Path, newest: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if p.file_name()
                    .is_some_and(|n| !NOT_SOURCE.iter().any(|x| n == *x))
                {
                    walk(&p, root, newest);
                }
            } else if is_stage_source(root, &p)
                && let Ok(m) = meta.modified()
            {
                *newest = (*newest).max(m);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    walk(dir, dir, &mut newest);
    newest
}
