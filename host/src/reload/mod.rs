//! Hot reload for `run`, `serve` and `worker` with `--watch`: watch the
//! manifest and every stage's plugin (or crate sources), and swap changed
//! stages into the running pipeline between chunks.
//!
//! File events are debounced (a burst of writes is one change). The
//! changed manifest or plugin is then loaded and checked on the watcher's
//! thread, off the data path: parsed and validated, compiled, checked
//! against the ABI and the declared kind, instantiated with its params and
//! run over the stage's sample events when the manifest names some (see
//! [`trial`]). Only a stage set that passes all of that is published to the
//! pipeline's [`LiveStages`]; each [`crate::exec::Executor`] switches to it
//! before its next chunk, and chunks in flight finish on the old one. Anything that fails is logged with
//! its reason (a manifest error with its `file:line:column`) and the
//! running set stays. A half-written plugin fails to compile and is
//! retried when the next write to it arrives.
//!
//! # Layout
//! - the versioned stage sets themselves are the runtime's
//!   ([`crate::runtime::stages`]).
//! - [`follow`]: the never-ending JSON-lines source (growing file, stdin).
//! - [`trial`]: the check a new stage version must pass.
//! - this module: [`Reloader`] (manifest + plugins -> next stage set) and
//!   the watcher thread; [`stop_on_signal`] for a clean stop.

pub mod follow;
pub mod trial;

use crate::exec::deploy::{Deploys, Mode};
use crate::exec::{LiveStages, StageSet, load_stage, stage_spec};
use crate::manifest::{Document, Manifest, StageKind};
use crate::runtime::{Runtime, Stage, StageState, content_hash, linker};
use anyhow::{Result, bail};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A change is acted on once no file event has arrived for this long, so
/// that the many writes of one save or one `cargo build` are one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// A steady stream of events is acted on at least this often.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// Turns the manifest and plugins on disk into the pipeline's next stage
/// set, or explains why not.
pub struct Reloader {
    /// The manifest the running stage set was made from.
    manifest: Manifest,
    /// A newer, valid manifest whose stages could not all be loaded yet
    /// (say, a crate that did not build): retried on every change, so that
    /// fixing what it needs applies it without saving the manifest again.
    pending: Option<Manifest>,
    runtime: Arc<Runtime>,
    linker: wasmtime::Linker<StageState>,
    live: Arc<LiveStages>,
    /// Where a manifest's `candidate` runs (`run --watch`); `None` where
    /// candidates come from `wasmpipe deploy` (serve, workers).
    deploys: Option<Arc<Deploys>>,
}

/// What the files to watch are, after a (re)load.
#[derive(Debug, Default)]
struct WatchSet {
    /// Directories watched (not recursively) for the files in `files`
    /// and for stage folders' top-level sources (`Cargo.toml`, `stage.js`,
    /// `stage.py`...).
    dirs: HashSet<PathBuf>,
    /// The folders inside stage folders that hold sources (a crate's
    /// `src/`, a JavaScript stage's `lib/`), watched recursively. Only
    /// those that exist: a JavaScript or Python stage has no `src/`, and a
    /// folder made later is watched from the next reload on (a source
    /// that imports it is edited first). What builds and package managers
    /// write (`target/`, `node_modules/`, `.venv/`...) is never watched:
    /// thousands of files change there.
    sources: HashSet<PathBuf>,
    /// Stage folders (crates, JavaScript and Python stages).
    crates: HashSet<PathBuf>,
    /// The manifest (canonical).
    manifest: PathBuf,
    /// Plugin files (canonical directory + file name).
    files: HashSet<PathBuf>,
}

impl Reloader {
    /// A reloader for the pipeline loaded from `manifest`, running `live`.
    pub fn new(manifest: Manifest, runtime: Arc<Runtime>, live: Arc<LiveStages>) -> Result<Self> {
        let linker = linker(&runtime)?;
        Ok(Reloader {
            manifest,
            pending: None,
            runtime,
            linker,
            live,
            deploys: None,
        })
    }

    /// Runs the candidate a stage of the manifest names beside its live
    /// version, on `deploys`, now and after every reload.
    pub fn with_candidates(mut self, deploys: Arc<Deploys>) -> Self {
        self.deploys = Some(deploys);
        self.candidate();
        self
    }

    /// Applies the running manifest's `candidate`, if any (or stops the one
    /// running when the manifest no longer names it).
    fn candidate(&self) {
        let wanted = self
            .manifest
            .doc
            .stages
            .iter()
            .find_map(|st| st.candidate.as_ref().map(|c| (st, c)));
        let Some(deploys) = &self.deploys else {
            if let Some((st, _)) = wanted {
                tracing::warn!(
                    "stage `{}` names a `candidate`: only `run --watch` runs one from the manifest; deploy it to a server with `wasmpipe deploy`",
                    st.name.get_ref()
                );
            }
            return;
        };
        let Some((st, c)) = wanted else {
            deploys.set_local(None);
            return;
        };
        let mut as_stage = st.clone();
        as_stage.plugin = c.plugin.clone();
        as_stage.candidate = None;
        let mode = match c.percent.as_ref().map(|p| *p.get_ref()) {
            Some(p) if c.mode.get_ref() == "canary" => Mode::Canary(p),
            _ => Mode::Shadow,
        };
        match load_stage(&self.manifest, &as_stage, &self.runtime, &self.linker) {
            Ok(stage) => deploys.set_local(Some((stage, mode))),
            Err(e) => tracing::error!(
                "the candidate of stage `{}` cannot be loaded, and does not run: {e:#}",
                st.name.get_ref()
            ),
        }
    }

    /// Re-reads the manifest (when `manifest_changed`) and every plugin, and
    /// publishes a new stage set if anything changed and all of it passes
    /// the checks. Returns the published set; `Ok(None)` when nothing
    /// changed; `Err` (already explained) when the change was rejected.
    pub fn reload(&mut self, manifest_changed: bool) -> Result<Option<Arc<StageSet>>> {
        let started = Instant::now();
        let edited = if manifest_changed {
            match Manifest::load(&self.manifest.path) {
                Ok(m) => Some(m),
                Err(e) => {
                    // Plugins may have changed in the same burst: still
                    // check them, under the last valid manifest.
                    tracing::error!(
                        "hot reload: manifest rejected, the running pipeline goes on: {e}"
                    );
                    self.pending.clone()
                }
            }
        } else {
            self.pending.clone()
        };
        let current = self.live.current();
        let reject = |e: &anyhow::Error| {
            tracing::error!(
                "hot reload: change rejected, still serving generation {}: {e:#}",
                current.generation
            );
        };
        let (next, manifest) = match edited {
            Some(m) => match self.next_stages(&m, &current) {
                Ok(next) => {
                    self.pending = None;
                    (next, m)
                }
                Err(e) => {
                    // The edited manifest waits for what it needs; plugin
                    // changes still apply under the running one.
                    reject(&e);
                    self.pending = Some(m);
                    let running = self.manifest.clone();
                    match self.next_stages(&running, &current) {
                        Ok(next) => (next, running),
                        Err(_) => return Err(e),
                    }
                }
            },
            None => {
                let running = self.manifest.clone();
                match self.next_stages(&running, &current) {
                    Ok(next) => (next, running),
                    Err(e) => {
                        reject(&e);
                        return Err(e);
                    }
                }
            }
        };
        for what in restart_only_changes(&self.manifest.doc, &manifest.doc) {
            tracing::warn!(
                "hot reload: `{what}` changed; it takes effect when the pipeline is restarted"
            );
        }
        self.manifest = manifest;
        self.candidate();
        let unchanged = next.len() == current.stages.len()
            && next
                .iter()
                .zip(&current.stages)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if unchanged {
            tracing::debug!("hot reload: nothing changed");
            return Ok(None);
        }
        let set = self.live.publish(next);
        tracing::info!(
            "hot reload: now serving generation {} ({}), checked in {} ms",
            set.generation,
            describe_change(&current, &set),
            started.elapsed().as_millis()
        );
        Ok(Some(set))
    }

    /// The stages `manifest` asks for: unchanged stages are the running
    /// ones; new or changed ones are loaded and must pass [`trial::trial`].
    fn next_stages(&self, manifest: &Manifest, current: &StageSet) -> Result<Vec<Arc<Stage>>> {
        let mut next = Vec::new();
        for st in &manifest.doc.stages {
            let spec = stage_spec(manifest, st)?;
            let same = current.stages.iter().find(|s| {
                s.spec == spec
                    && std::fs::read(&spec.plugin).is_ok_and(|b| content_hash(&b) == s.version)
            });
            if let Some(s) = same {
                next.push(s.clone());
                continue;
            }
            let loading = Instant::now();
            let stage = load_stage(manifest, st, &self.runtime, &self.linker)?;
            let loaded = loading.elapsed();
            let samples = st.samples.as_ref().map(|p| manifest.resolve(p.get_ref()));
            trial::trial(&self.runtime, &stage, samples.as_deref(), manifest.name()).map_err(
                |e| {
                    let hint = e
                        .downcast_ref::<trial::SampleFailed>()
                        .map(|f| format!("; hint: {}", f.hint(&manifest.path)))
                        .unwrap_or_default();
                    anyhow::anyhow!(
                        "new version {} of stage `{}` failed its check: {e:#}{hint}",
                        stage.short_version(),
                        stage.name()
                    )
                },
            )?;
            tracing::debug!(
                "stage `{}` version {}: loaded ({:?}) in {} ms, checked in {} ms",
                stage.name(),
                stage.short_version(),
                stage.origin,
                loaded.as_millis(),
                (loading.elapsed() - loaded).as_millis()
            );
            next.push(stage);
        }
        let ends_in = |stages: &[Arc<Stage>]| {
            stages
                .last()
                .filter(|s| s.kind == StageKind::Reduce)
                .map(|s| s.spec.key.is_some() || s.meta.keyed)
        };
        if ends_in(&next) != ends_in(&current.stages) {
            bail!(
                "a running pipeline cannot gain, lose or re-key its final reduce (its result is being accumulated); restart the pipeline for that change"
            );
        }
        Ok(next)
    }

    /// Compiles the running stages' modules that were loaded from the
    /// module cache, to fill the runtime's in-memory cache of compiled
    /// functions: then a new version recompiles only what changed.
    fn warm_function_cache(&self) {
        let started = Instant::now();
        let mut n = 0;
        for s in &self.live.current().stages {
            if s.origin != crate::runtime::ModuleOrigin::Cached {
                continue;
            }
            if let Ok(bytes) = std::fs::read(&s.spec.plugin)
                && content_hash(&bytes) == s.version
                && wasmtime::Module::new(self.runtime.engine(), &bytes).is_ok()
            {
                n += 1;
            }
        }
        tracing::debug!(
            "compiled {n} module(s) for the function cache in {} ms",
            started.elapsed().as_millis()
        );
    }

    /// The files and directories the running manifest, and the pending
    /// one if any, depend on.
    fn watch_set(&self) -> WatchSet {
        let mut set = WatchSet {
            manifest: canonical_file(&self.manifest.path),
            ..WatchSet::default()
        };
        if let Some(d) = set.manifest.parent() {
            set.dirs.insert(d.to_path_buf());
        }
        let manifests = std::iter::once(&self.manifest).chain(&self.pending);
        let stages = manifests.flat_map(|m| m.doc.stages.iter().map(move |st| (m, st)));
        let plugins = stages.flat_map(|(m, st)| {
            std::iter::once(m.resolve(st.plugin.get_ref()))
                .chain(st.candidate.as_ref().map(|c| m.resolve(c.plugin.get_ref())))
        });
        for p in plugins {
            if p.is_dir() {
                let c = p.canonicalize().unwrap_or(p);
                set.dirs.insert(c.clone());
                set.sources.extend(source_folders(&c));
                set.crates.insert(c);
            } else {
                let f = canonical_file(&p);
                if let Some(d) = f.parent() {
                    set.dirs.insert(d.to_path_buf());
                }
                set.files.insert(f);
            }
        }
        set
    }
}

/// The folders directly inside the stage folder `dir` that may hold its
/// sources: those in which a source file would count as one (so not
/// `target/`, `node_modules/`, `.venv/` or the like, which
/// [`crate::build::is_stage_source`] knows).
fn source_folders(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| crate::build::is_stage_source(dir, &p.join("probe.rs")))
        .collect()
}

/// `path` with its directory made canonical (the file itself may be
/// missing for a moment while it is replaced).
fn canonical_file(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match path.file_name() {
        Some(n) => dir.join(n),
        None => dir,
    }
}

/// "stage `a` 1a2b3c4d5e6f -> 6f5e4d3c2b1a; stage `b` added".
fn describe_change(old: &StageSet, new: &StageSet) -> String {
    let mut parts = Vec::new();
    for s in &new.stages {
        match old.stages.iter().find(|o| o.name() == s.name()) {
            Some(o) if Arc::ptr_eq(o, s) => {}
            Some(o) if o.version == s.version => parts.push(format!(
                "stage `{}` {} reconfigured",
                s.name(),
                s.short_version()
            )),
            Some(o) => parts.push(format!(
                "stage `{}` {} -> {}",
                s.name(),
                o.short_version(),
                s.short_version()
            )),
            None => parts.push(format!("stage `{}` {} added", s.name(), s.short_version())),
        }
    }
    for o in &old.stages {
        if !new.stages.iter().any(|s| s.name() == o.name()) {
            parts.push(format!("stage `{}` removed", o.name()));
        }
    }
    if parts.is_empty() {
        parts.push("stages reordered".into());
    }
    parts.join("; ")
}

/// Manifest fields a running pipeline cannot pick up.
fn restart_only_changes(old: &Document, new: &Document) -> Vec<&'static str> {
    let mut v = Vec::new();
    let path = |p: &Option<serde_spanned::Spanned<String>>| p.as_ref().map(|p| p.get_ref().clone());
    let (o, n) = (&old.runtime, &new.runtime);
    let checks = [
        (old.pipeline.name != new.pipeline.name, "[pipeline].name"),
        (
            path(&old.source.path) != path(&new.source.path),
            "[source].path",
        ),
        (old.source.format != new.source.format, "[source].format"),
        (old.sink.path != new.sink.path, "[sink].path"),
        (
            old.dead_letters.path != new.dead_letters.path,
            "[dead_letters].path",
        ),
        (o.workers != n.workers, "[runtime].workers"),
        (o.chunk_size != n.chunk_size, "[runtime].chunk_size"),
        (o.ordered != n.ordered, "[runtime].ordered"),
        (
            o.max_event_size != n.max_event_size,
            "[runtime].max_event_size",
        ),
        (o.cache_dir != n.cache_dir, "[runtime].cache_dir"),
        (o.lineage != n.lineage, "[runtime].lineage"),
    ];
    for (changed, what) in checks {
        if changed {
            v.push(what);
        }
    }
    v
}

/// The watcher thread: stops when `stop` is set.
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches what `reloader`'s manifest depends on and reloads on change, on
/// a thread of its own, until the handle is dropped.
pub fn spawn(mut reloader: Reloader) -> Result<WatchHandle> {
    let (tx, rx) = crossbeam_channel::unbounded::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })?;
    let mut watching = HashSet::new();
    let mut set = reloader.watch_set();
    add_watches(&mut watcher, &set, &mut watching);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("wasmpipe-watch".into())
        .spawn(move || {
            tracing::info!(
                "watching {} and {} plugin(s) for changes",
                set.manifest.display(),
                set.files.len() + set.crates.len()
            );
            reloader.warm_function_cache();
            while !thread_stop.load(Ordering::Relaxed) {
                let Ok(first) = rx.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let mut manifest_changed = false;
                let relevant = classify(&set, first, &mut manifest_changed);
                // Debounce: wait for a quiet moment once something relevant
                // happened, taking every event of the burst.
                let burst = Instant::now();
                let mut quiet = Instant::now() + DEBOUNCE;
                while relevant && Instant::now() - burst < DEBOUNCE_MAX {
                    match rx.recv_deadline(quiet) {
                        Ok(ev) => {
                            if classify(&set, ev, &mut manifest_changed) {
                                quiet = Instant::now() + DEBOUNCE;
                            }
                        }
                        Err(_) => break,
                    }
                }
                if !relevant {
                    continue;
                }
                // A rejected change has been logged; the old set runs on.
                let _ = reloader.reload(manifest_changed);
                set = reloader.watch_set();
                add_watches(&mut watcher, &set, &mut watching);
            }
        })?;
    Ok(WatchHandle {
        stop,
        thread: Some(thread),
    })
}

fn add_watches(
    watcher: &mut notify::RecommendedWatcher,
    set: &WatchSet,
    watching: &mut HashSet<(PathBuf, bool)>,
) {
    let dirs = set.dirs.iter().map(|d| (d.clone(), false));
    let sources = set.sources.iter().map(|d| (d.clone(), true));
    for (dir, recursive) in dirs.chain(sources) {
        if watching.contains(&(dir.clone(), recursive)) {
            continue;
        }
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        match watcher.watch(&dir, mode) {
            Ok(()) => {
                watching.insert((dir, recursive));
            }
            Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
        }
    }
}

/// Whether `ev` touches a watched file; notes a manifest change.
fn classify(set: &WatchSet, ev: notify::Result<notify::Event>, manifest: &mut bool) -> bool {
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!("file watching: {e}");
            return false;
        }
    };
    use notify::event::{AccessKind, AccessMode};
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    let mut relevant = false;
    for p in &ev.paths {
        if *p == set.manifest {
            *manifest = true;
            relevant = true;
        } else if set.files.contains(p)
            || set
                .crates
                .iter()
                .any(|c| crate::build::is_stage_source(c, p))
        {
            relevant = true;
        }
    }
    relevant
}

/// Sets `stop` on the first SIGINT (ctrl-c) or SIGTERM; a second one exits
/// at once.
pub fn stop_on_signal(stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("wasmpipe-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    tracing::warn!("cannot install signal handlers");
                    return;
                };
                for n in 0.. {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if n > 0 {
                        std::process::exit(130);
                    }
                    tracing::info!(
                        "stopping: finishing the chunks in flight (again to quit at once)"
                    );
                    stop.store(true, Ordering::Relaxed);
                }
            })
        })?;
    Ok(())
}
