//! Building stage crates for `wasm32-wasip1` with cargo: for `wasmpipe
//! build`, and for manifests whose `plugin` is a crate directory (built when
//! loaded, rebuilt by `run --watch` when its sources change).

use anyhow::{Context as _, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::SystemTime;

/// The target stages are compiled for.
pub const TARGET: &str = "wasm32-wasip1";

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
    let out = Command::new(&cargo)
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
    let wasm = build_crate(&key)?;
    tracing::info!(
        "built stage crate {} in {:.1}s: {}",
        key.display(),
        started.elapsed().as_secs_f64(),
        wasm.display()
    );
    BUILT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, (wasm.clone(), newest));
    Ok(wasm)
}

/// Whether a change to `path` inside the crate at `dir` can change what the
/// crate builds to: Rust sources, `Cargo.toml`, `build.rs`, outside `target/`.
pub fn is_crate_source(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    if rel
        .components()
        .any(|c| c.as_os_str() == "target" || c.as_os_str() == ".git")
    {
        return false;
    }
    path.extension().is_some_and(|e| e == "rs")
        || path.file_name().is_some_and(|n| n == "Cargo.toml")
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
                if p.file_name().is_some_and(|n| n != "target" && n != ".git") {
                    walk(&p, root, newest);
                }
            } else if is_crate_source(root, &p)
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
