//! A loaded stage: its compiled module, an `InstancePre` ready to stamp out
//! instances, and the metadata the module exports, checked against the ABI
//! version and the manifest's declared kind.

use super::engine::{ModuleOrigin, Runtime, content_hash};
use super::error::load_call_error;
use super::instance::StageInstance;
use super::sandbox::{StageState, wasi_ctx};
use crate::manifest::{Allow, EventEncoding, StageKind};
use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmpipe_abi::{ABI_VERSION, export};
use wasmtime::{ExternType, InstancePre, Linker, Module, Store};

/// What a stage module says about itself (`wasmpipe_metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// ABI version the module was built for.
    pub abi: u32,
    /// Stage kind: `map`, `filter`, `flat_map` or `reduce`.
    pub kind: String,
    /// The stage function's name in its source.
    pub name: String,
    /// The SDK (name and version) that built it, when one did.
    #[serde(default)]
    pub sdk: Option<String>,
    /// Whether a reduce stage computes its own group key.
    #[serde(default)]
    pub keyed: bool,
    /// The event encodings the module takes; absent: JSON only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

/// How one stage's events are encoded in and out (`docs/abi.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON lines.
    #[default]
    Json,
    /// MessagePack frames.
    MsgPack,
}

/// Everything needed to load one stage, taken from a manifest entry (or
/// built by hand for `inspect` and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// Stage name (unique in the pipeline).
    pub name: String,
    /// Declared kind; `None` accepts whatever the module exports.
    pub kind: Option<StageKind>,
    /// Path of the `.wasm` (or `.wat`) file.
    pub plugin: PathBuf,
    /// Parameters (JSON) handed to `wasmpipe_init`.
    pub params: serde_json::Value,
    /// JSON pointer of the group key of a keyed reduce.
    pub key: Option<String>,
    /// Memory limit per instance in bytes.
    pub memory: u64,
    /// Wall-time limit per guest call.
    pub timeout: Duration,
    /// Most output bytes per guest call.
    pub output: u64,
    /// Granted capabilities.
    pub allow: Allow,
    /// Directory granted paths are relative to.
    pub base_dir: PathBuf,
    /// Whether the stage may be given MessagePack events.
    pub events: EventEncoding,
    /// For a reduce: the windows it folds per (the host's concern).
    pub window: Option<super::window::WindowSpec>,
    /// The dead letters a version may make before it is judged bad.
    pub budget: Option<crate::manifest::Budget>,
}

impl StageSpec {
    /// A stage outside any manifest (`inspect`, `build`, `test`, benchmarks):
    /// any kind, no params, the default limits, no capabilities.
    pub fn standalone(name: &str, plugin: PathBuf) -> StageSpec {
        StageSpec {
            name: name.into(),
            kind: None,
            plugin,
            params: serde_json::json!({}),
            key: None,
            memory: crate::manifest::DEFAULT_MEMORY.0,
            timeout: crate::manifest::DEFAULT_TIMEOUT,
            output: crate::manifest::DEFAULT_OUTPUT.0,
            allow: Allow::default(),
            base_dir: PathBuf::from("."),
            events: EventEncoding::Auto,
            window: None,
            budget: None,
        }
    }
}

/// A stage whose module is compiled, linked and checked.
pub struct Stage {
    /// The spec it was loaded from.
    pub spec: StageSpec,
    /// The module's own description.
    pub meta: Metadata,
    /// The kind it exports.
    pub kind: StageKind,
    /// Content hash of the module bytes: the stage version.
    pub version: String,
    /// Whether compilation was skipped thanks to the cache.
    pub origin: ModuleOrigin,
    /// Whether outputs are trusted to be one valid JSON value per line
    /// (modules built by the Rust SDK, which serializes with serde_json).
    pub trusted_output: bool,
    /// How its events go in and out.
    pub encoding: Encoding,
    pub(crate) code: Code,
    pub(crate) config_json: Vec<u8>,
}

/// What a stage's instances are made from.
pub(crate) enum Code {
    /// A core module speaking the ABI of docs/abi.md.
    Module(InstancePre<StageState>),
    /// A component of the `wasmpipe:stage` world.
    Component(super::component::LoadedComponent),
}

/// The linker every stage is instantiated through: WASI preview 1 (its
/// waiting calls bounded by the call's deadline), nothing else. What a stage may reach is decided by its `WasiP1Ctx`, not here.
pub fn linker(rt: &Runtime) -> Result<Linker<StageState>> {
    let mut linker = Linker::new(rt.engine());
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut StageState| &mut s.wasi)
        .map_err(anyhow::Error::from)?;
    super::deadline::add_to_linker(&mut linker)?;
    Ok(linker)
}

impl Stage {
    /// Reads, compiles (or loads from cache), links and checks a stage.
    pub fn load(rt: &Runtime, linker: &Linker<StageState>, spec: StageSpec) -> Result<Arc<Stage>> {
        let bytes = std::fs::read(&spec.plugin)
            .with_context(|| format!("cannot read plugin {:?}", spec.plugin))?;
        Stage::from_bytes(rt, linker, spec, &bytes)
    }

    /// As [`Stage::load`], with the module's bytes in hand (a version
    /// uploaded to compare, say); `spec.plugin` only names it in errors.
    pub fn from_bytes(
        rt: &Runtime,
        linker: &Linker<StageState>,
        spec: StageSpec,
        bytes: &[u8],
    ) -> Result<Arc<Stage>> {
        let version = content_hash(bytes);
        let (code, meta, origin) = if super::component::is_component(bytes) {
            let (loaded, meta, origin) =
                super::component::load(rt, bytes, &spec.plugin, spec.timeout)?;
            (Code::Component(loaded), meta, origin)
        } else {
            let (module, origin) = rt.load_module(bytes, &spec.plugin)?;
            check_exports(&module, &spec.plugin)?;
            let pre = linker.instantiate_pre(&module).map_err(anyhow::Error::from).with_context(|| {
                format!("plugin {:?} imports something the host does not provide (only WASI preview 1 is available to a core module)", spec.plugin)
            })?;
            let meta = read_metadata(rt, &pre, &spec.plugin, spec.timeout)?;
            (Code::Module(pre), meta, origin)
        };
        if meta.abi != ABI_VERSION {
            bail!(
                "plugin {:?} was built for wasmpipe ABI version {}, but this host speaks version {ABI_VERSION}; rebuild it with a matching wasmpipe-sdk",
                spec.plugin,
                meta.abi
            );
        }
        let kind = StageKind::parse(&meta.kind).ok_or_else(|| {
            anyhow!(
                "plugin {:?} declares unknown stage kind `{}`",
                spec.plugin,
                meta.kind
            )
        })?;
        if let Code::Module(pre) = &code {
            check_kind_exports(pre.module(), kind, &spec.plugin)?;
        }
        if let Some(declared) = spec.kind
            && declared != kind
        {
            bail!(KindMismatch {
                stage: spec.name.clone(),
                declared,
                exported: kind,
                plugin: spec.plugin.clone()
            });
        }
        let takes_msgpack = meta
            .events
            .iter()
            .flatten()
            .any(|e| e == wasmpipe_abi::encoding::MSGPACK);
        let encoding = match spec.events {
            EventEncoding::Auto | EventEncoding::Msgpack if takes_msgpack => Encoding::MsgPack,
            _ => Encoding::Json,
        };
        let mut config = serde_json::json!({
            "stage": spec.name,
            "params": spec.params,
            "key": spec.key,
        });
        if encoding == Encoding::MsgPack {
            config["events"] = wasmpipe_abi::encoding::MSGPACK.into();
        }
        let config_json = serde_json::to_vec(&config)?;
        let trusted_output = meta
            .sdk
            .as_deref()
            .is_some_and(|s| s.starts_with("wasmpipe-sdk"));
        Ok(Arc::new(Stage {
            spec,
            meta,
            kind,
            version,
            origin,
            trusted_output,
            encoding,
            code,
            config_json,
        }))
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A short form of the version, for logs and lineage.
    pub fn short_version(&self) -> &str {
        &self.version[..12]
    }

    /// Creates a configured instance (WASI context, limits, `wasmpipe_init`).
    pub fn instantiate(&self, rt: &Runtime) -> Result<StageInstance> {
        StageInstance::new(rt, self)
    }
}

/// A stage whose module exports a different kind than the manifest declares.
#[derive(Debug, thiserror::Error)]
#[error(
    "stage `{stage}` is declared as `{declared}` but its plugin {plugin:?} exports a `{exported}` stage"
)]
pub struct KindMismatch {
    /// Stage name.
    pub stage: String,
    /// Kind in the manifest.
    pub declared: StageKind,
    /// Kind the module exports.
    pub exported: StageKind,
    /// The plugin path.
    pub plugin: PathBuf,
}

fn check_exports(module: &Module, path: &Path) -> Result<()> {
    for name in [
        export::DESCRIPTOR,
        export::METADATA,
        export::ALLOC,
        export::INIT,
    ] {
        match module.get_export(name) {
            Some(ExternType::Func(_)) => {}
            _ => bail!(
                "plugin {path:?} is not a wasmpipe stage: it does not export the function `{name}` (build stages with wasmpipe-sdk, or see docs/abi.md)"
            ),
        }
    }
    match module.get_export(export::MEMORY) {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => bail!("plugin {path:?} does not export its memory as `memory`"),
    }
}

fn check_kind_exports(module: &Module, kind: StageKind, path: &Path) -> Result<()> {
    let needed: &[&str] = match kind {
        StageKind::Reduce => &[export::REDUCE, export::COMBINE],
        _ => &[export::PROCESS],
    };
    for name in needed {
        if !matches!(module.get_export(name), Some(ExternType::Func(_))) {
            bail!("plugin {path:?} declares a `{kind}` stage but does not export `{name}`");
        }
    }
    Ok(())
}

/// Reads a module's metadata in an instance of its own, with the stage's
/// own time limit: a module that loops or sleeps here is refused as timed
/// out, not left to hang the load.
fn read_metadata(
    rt: &Runtime,
    pre: &InstancePre<StageState>,
    path: &Path,
    timeout: Duration,
) -> Result<Metadata> {
    let wasi = wasi_ctx("metadata", &Allow::default(), Path::new("."))?;
    let mut store = Store::new(rt.engine(), StageState::new(wasi, 64 << 20, timeout, false));
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(Runtime::deadline_ticks(timeout));
    let instance = pre.instantiate(&mut store).map_err(|e| {
        if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            load_call_error(e, format!("plugin {path:?} in its start function"), timeout)
        } else {
            anyhow::Error::from(e).context(format!("cannot instantiate plugin {path:?}"))
        }
    })?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, export::INITIALIZE) {
        init.call(&mut store, ()).map_err(|e| {
            load_call_error(e, format!("plugin {path:?} in `_initialize`"), timeout)
        })?;
    }
    let call = |store: &mut Store<StageState>, name: &str| -> Result<i32> {
        let f = instance
            .get_typed_func::<(), i32>(&mut *store, name)
            .map_err(anyhow::Error::from)?;
        f.call(&mut *store, ())
            .map_err(|e| load_call_error(e, format!("plugin {path:?} in `{name}`"), timeout))
    };
    let desc = call(&mut store, export::DESCRIPTOR)? as u32;
    let status = call(&mut store, export::METADATA)?;
    if status != wasmpipe_abi::status::OK {
        bail!("plugin {path:?} failed to report its metadata (status {status})");
    }
    let memory = instance
        .get_memory(&mut store, export::MEMORY)
        .context("no memory export")?;
    let data = memory.data(&store);
    let d = super::instance::read_descriptor(data, desc)
        .ok_or_else(|| anyhow!("plugin {path:?}: descriptor out of bounds"))?;
    let bytes = data
        .get(d.out_ptr as usize..(d.out_ptr as usize).saturating_add(d.out_len as usize))
        .ok_or_else(|| anyhow!("plugin {path:?}: metadata out of bounds"))?;
    serde_json::from_slice(bytes).with_context(|| {
        format!(
            "plugin {path:?} reported malformed metadata: {}",
            String::from_utf8_lossy(bytes)
        )
    })
}
