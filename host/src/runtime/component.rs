//! Stages that are WebAssembly components of the `wasmpipe:stage` world
//! (`plugin-sdk/wit/stage.wit`): what the JavaScript, TypeScript and
//! Python SDKs build. They run beside core modules under the same
//! sandbox, and the executor cannot tell them apart: an instance takes a
//! chunk and hands back output lines, origins and error records, in the
//! same [`CallOutput`] a core module's descriptor points to.
//!
//! The sandbox is the core module's, in WASI 0.2 terms:
//! - the WASI context grants only what the manifest allows (no files,
//!   environment, sockets or name lookups; frozen clocks), and stdout and
//!   stderr go to the host log tagged with the stage name;
//! - every memory of the component is capped by the stage's memory limit,
//!   and the epoch ends a call at its time limit;
//! - `wasi:io/poll`, where every WASI 0.2 wait ends up (a Python
//!   `time.sleep`, a timer), is replaced by one that gives up at the
//!   call's deadline, so a guest asleep in the host is stopped as a guest
//!   looping in wasm is;
//! - a trap ends the call; the executor then discards the instance, as it
//!   must: a component instance that trapped cannot be entered again.

use super::engine::{ModuleOrigin, Runtime};
use super::error::{StageError, load_call_error, trap_error};
use super::instance::CallOutput;
use super::sandbox::{MemoryLimiter, wasi_builder};
use super::stage::{Metadata, Stage};
use crate::manifest::Allow;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmpipe_abi::{NO_EVENT, encode_error};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "plugin",
    });
}

use bindings::Plugin;
use bindings::exports::wasmpipe::stage::stage::Output;

/// Whether `bytes` hold a component (binary, or text starting with
/// `(component`) rather than a core module.
pub fn is_component(bytes: &[u8]) -> bool {
    if let Some(header) = bytes.strip_prefix(b"\0asm") {
        // The version field's high half is the layer: 0 module, 1 component.
        return header.get(2..4) == Some(&[1, 0]);
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let mut rest = text.trim_start();
    // Skip `;;` line comments before the first form.
    while let Some(after) = rest.strip_prefix(";;") {
        rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
    }
    rest.strip_prefix('(')
        .is_some_and(|r| r.trim_start().starts_with("component"))
}

/// The data each component instance's `Store` carries.
pub struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// When the current call must end (see [`Bounded`]).
    deadline: Instant,
    /// The event the guest named last through `host.cursor`.
    cursor: u32,
    /// A development build's code, handed over by `host.source`
    /// (see [`super::source_section`]).
    source: Option<Arc<str>>,
}

impl ComponentState {
    fn new(
        wasi: WasiCtx,
        memory: u64,
        timeout: Duration,
        source: Option<Arc<str>>,
    ) -> ComponentState {
        ComponentState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory,
                refused: false,
                largest: 0,
            },
            deadline: Instant::now() + timeout,
            cursor: NO_EVENT,
            source,
        }
    }

    fn start_call(&mut self, timeout: Duration) {
        self.limiter.refused = false;
        self.cursor = NO_EVENT;
        self.deadline = Instant::now() + timeout;
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::wasmpipe::stage::host::Host for ComponentState {
    fn cursor(&mut self, index: u32) {
        self.cursor = index;
    }

    fn source(&mut self) -> String {
        // Empty for a component that carries no code of its own: the
        // interpreter then says it was run without a stage.
        self.source.as_deref().unwrap_or_default().to_string()
    }
}

/// The linker components are instantiated through: WASI 0.2 with its
/// waits bounded, and the `host` interface.
pub fn linker(rt: &Runtime) -> Result<Linker<ComponentState>> {
    let mut linker = Linker::new(rt.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<ComponentState, Bounded>(
        &mut linker,
        |s| BoundedTable {
            table: &mut s.table,
            deadline: s.deadline,
        },
    )
    .map_err(anyhow::Error::from)?;
    linker.allow_shadowing(false);
    Plugin::add_to_linker::<ComponentState, wasmtime::component::HasSelf<ComponentState>>(
        &mut linker,
        |s| s,
    )
    .map_err(anyhow::Error::from)?;
    Ok(linker)
}

/// `wasi:io/poll` bounded by the call's deadline.
struct Bounded;

impl HasData for Bounded {
    type Data<'a> = BoundedTable<'a>;
}

/// The resource table, and the deadline its waits end at.
struct BoundedTable<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

/// Waits for `f`, at most until `deadline`; past it the call traps with
/// [`Trap::Interrupt`], which the instance reports as a timeout.
fn bounded<T>(
    deadline: Instant,
    f: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let deadline = tokio::time::Instant::from_std(deadline);
    in_tokio(async move {
        match tokio::time::timeout_at(deadline, f).await {
            Ok(r) => r,
            Err(_) => Err(Trap::Interrupt.into()),
        }
    })
}

use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

impl wasmtime_wasi::p2::bindings::sync::io::poll::Host for BoundedTable<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        bounded(self.deadline, async_poll::Host::poll(self.table, pollables))
    }
}

impl wasmtime_wasi::p2::bindings::sync::io::poll::HostPollable for BoundedTable<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        in_tokio(async_poll::HostPollable::ready(self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        bounded(
            self.deadline,
            async_poll::HostPollable::block(self.table, pollable),
        )
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}

/// A compiled component, linked and ready to instantiate.
#[derive(Clone)]
pub struct LoadedComponent {
    pre: bindings::PluginPre<ComponentState>,
    /// A development build's code (see [`super::source_section`]).
    source: Option<Arc<str>>,
}

/// Compiles (or loads from the cache) and links a component, and reads its
/// metadata on a throw-away instance under the stage's time limit.
pub(crate) fn load(
    rt: &Runtime,
    bytes: &[u8],
    path: &Path,
    timeout: Duration,
) -> Result<(LoadedComponent, Metadata, ModuleOrigin)> {
    // A development build is compiled without its code, so every edit
    // finds the interpreter in the cache.
    let (code, source) = super::source_section::split(bytes);
    let (component, origin) = rt.load_component(code, path)?;
    let linker = rt.component_linker()?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!("component {path:?} imports something the host does not provide (WASI 0.2 and the `wasmpipe:stage/host` interface are available; see docs/abi.md)")
        })?;
    let pre = bindings::PluginPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!("component {path:?} is not a wasmpipe stage: it does not export `wasmpipe:stage/stage@0.1.0` (build it with `wasmpipe build`, or see docs/abi.md)")
        })?;
    let loaded = LoadedComponent {
        pre,
        source: source.map(Arc::from),
    };
    let wasi = wasi_builder("metadata", &Allow::default(), Path::new("."))?.build();
    let state = ComponentState::new(wasi, 1 << 30, timeout, loaded.source.clone());
    let mut store = Store::new(rt.engine(), state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(Runtime::deadline_ticks(timeout));
    let plugin = loaded.pre.instantiate(&mut store).map_err(|e| {
        load_call_error(e, format!("cannot instantiate component {path:?}"), timeout)
    })?;
    let m = plugin
        .wasmpipe_stage_stage()
        .call_describe(&mut store)
        .map_err(|e| load_call_error(e, format!("component {path:?} in `describe`"), timeout))?;
    let meta = Metadata {
        abi: m.abi,
        kind: m.kind,
        name: m.name,
        sdk: Some(m.sdk),
        keyed: m.keyed,
        events: None,
    };
    Ok((loaded, meta, origin))
}

/// A configured instance of a component stage.
///
/// An interpreter's heap lives in linear memory, which never shrinks: a
/// JavaScript engine that keeps its garbage until memory runs out (as
/// SpiderMonkey in a component does) would end every long run at its
/// memory limit. So an instance whose memory has passed half its limit
/// is replaced by a fresh one, from the snapshot, before its next call:
/// a few milliseconds once in a while, and the limit stays what it
/// means, the most one chunk may need.
///
/// The SDKs' runtimes name the running event (`host.cursor`) only on an
/// instance whose config asks for it (`"cursor": "each"`): a host call
/// per event would cost an interpreter more than most stage functions.
/// So when a call traps, runs out of time or out of memory with no event
/// named, the chunk is run again on a fresh instance that names each
/// event, and that call's outcome is the chunk's: the failure pinned to
/// its event, or, if it does not happen again (a timeout on a busy
/// machine), the outputs. The price falls on failures alone: the chunk's
/// events up to the culprit run twice, a timeout takes twice its limit.
pub struct ComponentInstance {
    store: Store<ComponentState>,
    plugin: Plugin,
    /// Whether this instance names each event (see above).
    naming: bool,
    /// What a fresh instance is made from.
    engine: wasmtime::Engine,
    loaded: LoadedComponent,
    spec: super::stage::StageSpec,
    config: String,
    /// The last call's results, in the core ABI's layout.
    out: Vec<u8>,
    origins: Vec<u8>,
    errors: Vec<u8>,
}

impl ComponentInstance {
    pub(crate) fn new(
        rt: &Runtime,
        stage: &Stage,
        loaded: &LoadedComponent,
    ) -> Result<ComponentInstance> {
        let spec = stage.spec.clone();
        let config = String::from_utf8(stage.config_json.clone()).context("config is not UTF-8")?;
        let (store, plugin) = fresh(rt.engine(), loaded, &spec, &config)?;
        Ok(ComponentInstance {
            store,
            plugin,
            naming: false,
            engine: rt.engine().clone(),
            loaded: loaded.clone(),
            spec,
            config,
            out: Vec::new(),
            origins: Vec::new(),
            errors: Vec::new(),
        })
    }

    /// Replaces the instance by a fresh one when its memory has passed
    /// half its limit (see [`ComponentInstance`]), or when it names each
    /// event and the next call need not.
    fn renew_if_worn(&mut self) -> Result<(), StageError> {
        if self.naming {
            return self.renew(false);
        }
        if self.store.data().limiter.largest <= self.spec.memory / 2 {
            return Ok(());
        }
        tracing::debug!(
            "stage `{}`: a fresh instance replaces one whose memory passed half its limit",
            self.spec.name
        );
        self.renew(false)
    }

    /// Replaces the instance by a fresh one, naming each event or not.
    fn renew(&mut self, naming: bool) -> Result<(), StageError> {
        let config = if naming {
            let mut c: serde_json::Value =
                serde_json::from_str(&self.config).expect("the host wrote the config");
            c["cursor"] = "each".into();
            c.to_string()
        } else {
            self.config.clone()
        };
        let (store, plugin) =
            fresh(&self.engine, &self.loaded, &self.spec, &config).map_err(|e| match e
                .downcast::<StageError>()
            {
                Ok(e) => e,
                Err(e) => StageError::Trap {
                    stage: self.spec.name.clone(),
                    event: None,
                    message: format!("{e:#}"),
                },
            })?;
        self.store = store;
        self.plugin = plugin;
        self.naming = naming;
        Ok(())
    }

    /// Makes one call of `f` over a chunk; if it fails with no event
    /// named, runs it again on an instance that names each event (see
    /// [`ComponentInstance`]).
    fn call_over_chunk<T>(
        &mut self,
        f: impl Fn(&Plugin, &mut Store<ComponentState>) -> wasmtime::Result<T>,
    ) -> Result<wasmtime::Result<T>, StageError> {
        self.start_call()?;
        let r = f(&self.plugin, &mut self.store);
        if r.is_ok() || self.naming || self.store.data().cursor != NO_EVENT {
            return Ok(r);
        }
        tracing::debug!(
            "stage `{}`: a call failed with no event named; running the chunk again, naming each event",
            self.spec.name
        );
        self.renew(true)?;
        self.arm();
        Ok(f(&self.plugin, &mut self.store))
    }

    /// Runs a map, filter or flat_map stage over one chunk of JSON lines.
    pub fn process(&mut self, ctx: &[u8], input: &[u8]) -> Result<CallOutput<'_>, StageError> {
        let ctx = self.text(ctx, "context")?;
        let input = self.text(input, "chunk")?;
        let r = self.call_over_chunk(|plugin, store| {
            plugin
                .wasmpipe_stage_stage()
                .call_process(store, ctx, input)
        })?;
        self.finish(r)
    }

    /// Folds one chunk into `acc` (empty: the initial accumulator).
    pub fn reduce(
        &mut self,
        ctx: &[u8],
        acc: &[u8],
        input: &[u8],
    ) -> Result<CallOutput<'_>, StageError> {
        let ctx = self.text(ctx, "context")?;
        let acc = if acc.is_empty() {
            None
        } else {
            Some(self.text(acc, "accumulator")?)
        };
        let input = self.text(input, "chunk")?;
        let r = self.call_over_chunk(|plugin, store| {
            plugin
                .wasmpipe_stage_stage()
                .call_reduce(store, ctx, acc, input)
        })?;
        self.finish(r)
    }

    /// Combines two accumulators.
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<CallOutput<'_>, StageError> {
        let a = self.text(a, "accumulator")?;
        let b = self.text(b, "accumulator")?;
        self.start_call()?;
        let r = self
            .plugin
            .wasmpipe_stage_stage()
            .call_combine(&mut self.store, a, b);
        let r = r.map(|r| {
            r.map(|out| Output {
                out: out.into_bytes(),
                origins: Vec::new(),
                errors: Vec::new(),
            })
        });
        self.finish(r)
    }

    /// Bytes the host hands a component are always UTF-8 (chunks are
    /// checked at the source, the rest the host wrote); one that is not is
    /// a host bug, said as an ABI failure rather than a panic.
    fn text<'a>(&self, bytes: &'a [u8], what: &str) -> Result<&'a str, StageError> {
        std::str::from_utf8(bytes).map_err(|e| StageError::Abi {
            stage: self.spec.name.clone(),
            message: format!("the {what} handed to the component is not UTF-8: {e}"),
        })
    }

    fn start_call(&mut self) -> Result<(), StageError> {
        self.renew_if_worn()?;
        self.arm();
        Ok(())
    }

    /// Starts the clock of a call.
    fn arm(&mut self) {
        self.store.data_mut().start_call(self.spec.timeout);
        self.store
            .set_epoch_deadline(Runtime::deadline_ticks(self.spec.timeout));
    }

    fn finish(
        &mut self,
        r: wasmtime::Result<Result<Output, String>>,
    ) -> Result<CallOutput<'_>, StageError> {
        let output = match r {
            Ok(Ok(o)) => o,
            Ok(Err(message)) => {
                return Err(StageError::Failed {
                    stage: self.spec.name.clone(),
                    message,
                });
            }
            Err(e) => return Err(self.classify(e)),
        };
        if output.out.len() as u64 > self.spec.output {
            return Err(StageError::OutputTooLarge {
                stage: self.spec.name.clone(),
                limit: self.spec.output,
            });
        }
        self.out = output.out;
        self.origins.clear();
        self.origins
            .extend(output.origins.iter().flat_map(|o| o.to_le_bytes()));
        self.errors.clear();
        let refused = self.store.data().limiter.refused;
        for e in &output.errors {
            if refused && is_interpreter_oom(&e.message) {
                // The interpreter caught its allocator's failure and threw
                // it at the stage, which knows nothing of the limit: said
                // as a core module's is, with the limit to raise.
                let oom = StageError::OutOfMemory {
                    stage: self.spec.name.clone(),
                    event: None,
                    limit: self.spec.memory,
                };
                encode_error(&mut self.errors, e.index, oom.to_string().as_bytes());
            } else {
                encode_error(&mut self.errors, e.index, e.message.as_bytes());
            }
        }
        Ok(CallOutput {
            out: &self.out,
            origins: &self.origins,
            errors: &self.errors,
        })
    }

    fn classify(&self, e: wasmtime::Error) -> StageError {
        classify(&self.store, &self.spec, e)
    }
}

/// Whether an event's error is an interpreter's own out-of-memory error:
/// SpiderMonkey's `out of memory`, CPython's bare `MemoryError`. Only
/// those exact words, and only after a call in which the memory limit
/// refused to grow (see [`ComponentInstance::finish`]), so a stage's own message
/// that mentions memory is left alone.
fn is_interpreter_oom(message: &str) -> bool {
    let m = message.trim();
    m.eq_ignore_ascii_case("out of memory") || m == "MemoryError"
}

/// A new instance of the component, configured with `init(config)`.
fn fresh(
    engine: &wasmtime::Engine,
    loaded: &LoadedComponent,
    spec: &super::stage::StageSpec,
    config: &str,
) -> Result<(Store<ComponentState>, Plugin)> {
    let wasi = wasi_builder(&spec.name, &spec.allow, &spec.base_dir)?.build();
    let state = ComponentState::new(wasi, spec.memory, spec.timeout, loaded.source.clone());
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(Runtime::deadline_ticks(spec.timeout));
    let plugin = loaded.pre.instantiate(&mut store).map_err(|e| {
        load_call_error(
            e,
            format!("cannot instantiate stage `{}` (is its memory limit below what the component needs at start?)", spec.name),
            spec.timeout,
        )
    })?;
    store.data_mut().start_call(spec.timeout);
    store.set_epoch_deadline(Runtime::deadline_ticks(spec.timeout));
    match plugin.wasmpipe_stage_stage().call_init(&mut store, config) {
        Ok(Ok(())) => Ok((store, plugin)),
        // Kept typed, so a caller can tell rejected params from a trap.
        Ok(Err(message)) => Err(StageError::Failed {
            stage: spec.name.clone(),
            message,
        }
        .into()),
        Err(e) => Err(classify(&store, spec, e).into()),
    }
}

/// Turns a trap into a typed stage error, naming the event the guest's
/// cursor points at.
fn classify(
    store: &Store<ComponentState>,
    spec: &super::stage::StageSpec,
    e: wasmtime::Error,
) -> StageError {
    let state = store.data();
    let event = Some(state.cursor).filter(|&c| c != NO_EVENT);
    trap_error(
        &e,
        &spec.name,
        event,
        spec.timeout,
        spec.memory,
        state.limiter.refused,
        None,
    )
}
