//! The one wasmtime [`Engine`] of a process: its configuration, the epoch
//! ticker that enforces wall-time limits, and the on-disk cache of compiled
//! modules that lets a second run skip compilation.

use super::cache;
use super::component::ComponentState;
use crate::manifest::ByteSize;
use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig,
};

/// How often the epoch advances. Wall-time limits are enforced to within
/// one tick; 10 ms keeps the ticker's cost invisible while a timeout of a
/// few hundred milliseconds stays accurate.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most core instances (and memories, and tables) in one component.
const CORE_PER_COMPONENT: u32 = 8;
/// Most elements in one table: an interpreter built for wasm (CPython,
/// SpiderMonkey) has tens of thousands of functions behind `call_indirect`.
const TABLE_ELEMENTS: usize = 100_000;
/// Most bytes of one core instance's host-side state (its globals,
/// imports and function references), which grow with its functions.
const CORE_INSTANCE_SIZE: usize = 8 << 20;

/// Settings for [`Runtime::new`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// Largest memory any stage may be granted.
    pub max_memory: u64,
    /// Where compiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 64,
            max_memory: 4 << 30,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$WASMPIPE_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmpipe`, else `~/.cache/wasmpipe`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WASMPIPE_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("wasmpipe"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("wasmpipe"))
}

/// The shared engine plus its epoch ticker. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    /// The bound on the cache's size (`cache::max_bytes`).
    cache_max: u64,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    component_linker: OnceLock<wasmtime::component::Linker<ComponentState>>,
}

/// Where a module came from, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// Compiled now (and written to the cache when one is configured).
    Compiled,
    /// Loaded from the on-disk cache.
    Cached,
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(cfg: &RuntimeConfig) -> Result<Runtime> {
        Runtime::build(cfg, false)
    }

    /// A runtime for a pipeline whose stages are hot-reloaded: Cranelift
    /// keeps each compiled function in memory, keyed by its body, so a new
    /// version of a module only compiles the functions that changed.
    pub fn for_reloading(cfg: &RuntimeConfig) -> Result<Runtime> {
        Runtime::build(cfg, true)
    }

    fn build(cfg: &RuntimeConfig, function_cache: bool) -> Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        // A component stage (JavaScript, Python) is several core instances,
        // memories and tables, one of them an interpreter's: the pool has
        // room for that many per instance, and for its large tables.
        pool.total_component_instances(cfg.max_instances)
            .total_core_instances(cfg.max_instances * CORE_PER_COMPONENT)
            // Memories reserve address space (up to 4 GiB each): an
            // interpreter's component has two or three, a core module one.
            .total_memories(cfg.max_instances * 4)
            .total_tables(cfg.max_instances * CORE_PER_COMPONENT)
            .max_memories_per_component(CORE_PER_COMPONENT)
            .max_tables_per_component(CORE_PER_COMPONENT)
            .table_elements(TABLE_ELEMENTS)
            .max_core_instance_size(CORE_INSTANCE_SIZE)
            .max_memory_size(cfg.max_memory as usize)
            // Keep a little of each memory resident so a reused slot does not
            // fault its first pages in again on every instantiation.
            .linear_memory_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Compiled functions are cached by their body: in memory for a
        // reloading pipeline, on disk beside the modules when there is a
        // cache. Two JavaScript (or Python) stages share the interpreter's
        // tens of thousands of functions, so the second compiles in a
        // fraction of the first's time, and so does every rebuild.
        let disk = cfg.cache_dir.as_ref().map(|d| d.join(cache::FUNCTIONS));
        if function_cache || disk.is_some() {
            let cache = FunctionCache {
                disk,
                keep_in_memory: function_cache,
                ..FunctionCache::default()
            };
            config
                .enable_incremental_compilation(Arc::new(cache))
                .map_err(anyhow::Error::from)?;
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasmpipe-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .context("cannot start the epoch ticker thread")?
        };
        Ok(Runtime {
            engine,
            cache_dir: cfg.cache_dir.clone(),
            cache_max: cache::max_bytes(),
            stop,
            ticker: Some(ticker),
            component_linker: OnceLock::new(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Number of epoch ticks that covers `limit`, plus one so that a call is
    /// never cut short by a tick that lands just after it starts.
    pub fn deadline_ticks(limit: Duration) -> u64 {
        (limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
    }

    /// Compiles `wasm` (binary or text), or loads it from the cache.
    pub fn load_module(&self, wasm: &[u8], what: &Path) -> Result<(Module, ModuleOrigin)> {
        self.cached(
            wasm,
            what,
            |engine, wasm| Module::new(engine, wasm),
            // SAFETY: see `cached`.
            |engine, file| unsafe { Module::deserialize_file(engine, file) },
            Module::serialize,
            "module",
        )
    }

    /// As [`Runtime::load_module`], for a component.
    pub fn load_component(&self, wasm: &[u8], what: &Path) -> Result<(Component, ModuleOrigin)> {
        self.cached(
            wasm,
            what,
            |engine, wasm| Component::new(engine, wasm),
            // SAFETY: see `cached`.
            |engine, file| unsafe { Component::deserialize_file(engine, file) },
            Component::serialize,
            "component",
        )
    }

    /// The linker of component stages, built on first use (a pipeline of
    /// core modules never needs it).
    pub fn component_linker(&self) -> Result<&wasmtime::component::Linker<ComponentState>> {
        if let Some(l) = self.component_linker.get() {
            return Ok(l);
        }
        let l = super::component::linker(self)?;
        Ok(self.component_linker.get_or_init(|| l))
    }

    /// Loads compiled code from the cache, or compiles and caches it.
    ///
    /// The cached file is deserialized without checks: it was written by
    /// `serialize` of an engine with the same compatibility hash (it is in
    /// the name), in a cache directory only wasmpipe writes to. A truncated
    /// or foreign file fails to deserialize and is compiled again.
    fn cached<T>(
        &self,
        wasm: &[u8],
        what: &Path,
        compile: impl Fn(&Engine, &[u8]) -> wasmtime::Result<T>,
        deserialize: impl Fn(&Engine, &Path) -> wasmtime::Result<T>,
        serialize: impl Fn(&T) -> wasmtime::Result<Vec<u8>>,
        noun: &str,
    ) -> Result<(T, ModuleOrigin)> {
        let compile = || {
            compile(&self.engine, wasm)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("{} is not a valid WebAssembly {noun}", what.display()))
        };
        let Some(dir) = &self.cache_dir else {
            return Ok((compile()?, ModuleOrigin::Compiled));
        };
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let file = cache::module_file(dir, &content_hash(wasm), compat.finish());
        if file.is_file() {
            match deserialize(&self.engine, &file) {
                Ok(m) => {
                    cache::touch(&file);
                    return Ok((m, ModuleOrigin::Cached));
                }
                Err(e) => {
                    tracing::warn!("ignoring unusable cached {noun} {}: {e:#}", file.display())
                }
            }
        }
        let compiled = compile()?;
        let written = serialize(&compiled)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| write_cache(dir, &file, &bytes));
        match written {
            Err(e) => tracing::warn!("cannot cache compiled {noun} in {}: {e:#}", dir.display()),
            Ok(()) => {
                // The functions this compile wrote are counted too.
                let pruned = cache::prune(dir, self.cache_max, &file);
                if pruned.files > 0 {
                    tracing::info!(
                        "cache {}: removed {} entries used least recently ({}) to stay under {} (WASMPIPE_CACHE_MAX)",
                        dir.display(),
                        pruned.files,
                        ByteSize(pruned.bytes),
                        ByteSize(self.cache_max)
                    );
                }
            }
        }
        Ok((compiled, ModuleOrigin::Compiled))
    }
}

/// Most bytes of compiled functions kept for reloads (a module's worth is
/// a few MiB); past it, new functions are compiled but not kept.
const FUNCTION_CACHE_BYTES: usize = 256 << 20;

/// Cranelift's incremental compilation cache: in memory, and in a folder
/// (one file per function, named by the SHA-256 of its key).
#[derive(Debug, Default)]
struct FunctionCache {
    entries: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    bytes: AtomicUsize,
    keep_in_memory: bool,
    disk: Option<PathBuf>,
}

impl FunctionCache {
    fn file(&self, key: &[u8]) -> Option<PathBuf> {
        Some(cache::function_file(self.disk.as_ref()?, key))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        if self.keep_in_memory {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = entries.get(key) {
                return Some(Cow::Owned(v.clone()));
            }
        }
        // Trusted as the compiled modules beside it are: only wasmpipe
        // writes this folder. A file that does not deserialize (truncated,
        // another Cranelift's) is compiled again by Cranelift.
        let file = self.file(key)?;
        let bytes = std::fs::read(&file).ok()?;
        cache::touch(&file);
        Some(Cow::Owned(bytes))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        if let Some(file) = self.file(key)
            && let Some(dir) = file.parent()
        {
            // Written then renamed, so a concurrent compile never reads
            // half a function; a failure only loses the cache entry.
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&tmp, &value))
                .and_then(|()| std::fs::rename(&tmp, &file));
        }
        if !self.keep_in_memory {
            return true;
        }
        let size = key.len() + value.len();
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > FUNCTION_CACHE_BYTES {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key.to_vec(), value);
        true
    }
}

fn write_cache(dir: &Path, file: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// The hex SHA-256 of a module's bytes: the stage version.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}
