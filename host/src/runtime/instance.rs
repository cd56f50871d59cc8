//! One live, sandboxed instance of a stage and the three calls of the ABI:
//! `process` (map / filter / flat_map), `reduce` and `combine`. Each call
//! passes a whole chunk; failures come back as typed [`StageError`]s.

use super::engine::Runtime;
use super::error::{StageError, load_call_error, trap_error};
use super::sandbox::{StageState, wasi_ctx};
use super::stage::{Code, Stage};
use anyhow::{Context as _, Result};
use std::time::Duration;
use wasmpipe_abi::{Descriptor, NO_EVENT, decode_errors, export, status};
use wasmtime::{InstancePre, Memory, Store, Trap, TypedFunc};

/// A guest call's results, borrowed from guest memory until the next call.
#[derive(Debug, Clone, Copy)]
pub struct CallOutput<'a> {
    /// Output bytes: NDJSON events, or an accumulator's JSON.
    pub out: &'a [u8],
    /// Origin table: little-endian `u32` input index per output line.
    pub origins: &'a [u8],
    /// Encoded per-event error records.
    pub errors: &'a [u8],
}

impl CallOutput<'_> {
    /// The origin of each output line.
    pub fn origins(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.origins
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Per-event errors as (index, message).
    pub fn errors(&self) -> impl Iterator<Item = (u32, String)> + '_ {
        decode_errors(self.errors).map(|r| match r {
            Ok(r) => (r.index, String::from_utf8_lossy(r.message).into_owned()),
            Err(at) => (NO_EVENT, format!("malformed error record at byte {at}")),
        })
    }
}

/// Parameters of `wasmpipe_process` and `wasmpipe_combine`: two buffers.
type FourArgs = (i32, i32, i32, i32);
/// Parameters of `wasmpipe_reduce`: three buffers.
type SixArgs = (i32, i32, i32, i32, i32, i32);

/// Looks up an export that only some kinds have, checking its signature.
fn optional_func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<StageState>,
    name: &str,
    stage: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    let f = instance
        .get_typed_func(&mut *store, name)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!("stage `{stage}`: export `{name}` has the wrong signature (see docs/abi.md)")
        })?;
    Ok(Some(f))
}

/// A configured instance of one stage, of a core module or a component:
/// the same three calls either way.
// A few instances per stage, each held for many calls: the variants'
// sizes do not matter, and a box would be one more indirection per call.
#[allow(clippy::large_enum_variant)]
pub enum StageInstance {
    /// An instance of a core module.
    Module(ModuleInstance),
    /// An instance of a component (`super::component`).
    Component(super::component::ComponentInstance),
}

impl StageInstance {
    pub(crate) fn new(rt: &Runtime, stage: &Stage) -> Result<StageInstance> {
        Ok(match &stage.code {
            Code::Module(pre) => StageInstance::Module(ModuleInstance::new(rt, stage, pre)?),
            Code::Component(c) => {
                StageInstance::Component(super::component::ComponentInstance::new(rt, stage, c)?)
            }
        })
    }

    /// Runs a map, filter or flat_map stage over one chunk.
    pub fn process(&mut self, ctx: &[u8], input: &[u8]) -> Result<CallOutput<'_>, StageError> {
        match self {
            StageInstance::Module(m) => m.process(ctx, input),
            StageInstance::Component(c) => c.process(ctx, input),
        }
    }

    /// Folds one chunk into `acc` (empty: the initial accumulator); the new
    /// accumulator is `out`.
    pub fn reduce(
        &mut self,
        ctx: &[u8],
        acc: &[u8],
        input: &[u8],
    ) -> Result<CallOutput<'_>, StageError> {
        match self {
            StageInstance::Module(m) => m.reduce(ctx, acc, input),
            StageInstance::Component(c) => c.reduce(ctx, acc, input),
        }
    }

    /// Combines two accumulators.
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<CallOutput<'_>, StageError> {
        match self {
            StageInstance::Module(m) => m.combine(a, b),
            StageInstance::Component(c) => c.combine(a, b),
        }
    }
}

/// A configured instance of a core module stage.
pub struct ModuleInstance {
    store: Store<StageState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    process: Option<TypedFunc<FourArgs, i32>>,
    reduce: Option<TypedFunc<SixArgs, i32>>,
    combine: Option<TypedFunc<FourArgs, i32>>,
    desc_addr: u32,
    stage: String,
    memory_limit: u64,
    timeout: Duration,
    output_limit: u64,
}

impl ModuleInstance {
    fn new(rt: &Runtime, stage: &Stage, pre: &InstancePre<StageState>) -> Result<ModuleInstance> {
        let spec = &stage.spec;
        let wasi = wasi_ctx(&spec.name, &spec.allow, &spec.base_dir)?;
        let mut store = Store::new(
            rt.engine(),
            StageState::new(wasi, spec.memory, spec.timeout, spec.allow.clock),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(Runtime::deadline_ticks(spec.timeout));
        // Instantiation runs the module's start function, under the same
        // time limit as every other call.
        let instance = pre.instantiate(&mut store).map_err(|e| {
            if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                load_call_error(e, format!("stage `{}` in its start function", spec.name), spec.timeout)
            } else {
                anyhow::Error::from(e).context(format!("cannot instantiate stage `{}` (is its memory limit below the module's minimum?)", spec.name))
            }
        })?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, export::INITIALIZE) {
            init.call(&mut store, ()).map_err(|e| {
                load_call_error(
                    e,
                    format!("stage `{}` in `_initialize`", spec.name),
                    spec.timeout,
                )
            })?;
        }
        let memory = instance
            .get_memory(&mut store, export::MEMORY)
            .context("no memory export")?;
        let func_err = |name: &str| {
            format!(
                "stage `{}`: export `{name}` has the wrong signature (see docs/abi.md)",
                spec.name
            )
        };
        let desc_addr = instance
            .get_typed_func::<(), i32>(&mut store, export::DESCRIPTOR)
            .map_err(anyhow::Error::from)
            .with_context(|| func_err(export::DESCRIPTOR))?
            .call(&mut store, ())
            .map_err(|e| {
                load_call_error(
                    e,
                    format!("stage `{}` in `{}`", spec.name, export::DESCRIPTOR),
                    spec.timeout,
                )
            })? as u32;
        let alloc = instance
            .get_typed_func(&mut store, export::ALLOC)
            .map_err(anyhow::Error::from)
            .with_context(|| func_err(export::ALLOC))?;
        let init = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, export::INIT)
            .map_err(anyhow::Error::from)
            .with_context(|| func_err(export::INIT))?;
        let process = optional_func(&instance, &mut store, export::PROCESS, &spec.name)?;
        let reduce = optional_func(&instance, &mut store, export::REDUCE, &spec.name)?;
        let combine = optional_func(&instance, &mut store, export::COMBINE, &spec.name)?;
        let mut inst = ModuleInstance {
            store,
            memory,
            alloc,
            process,
            reduce,
            combine,
            desc_addr,
            stage: spec.name.clone(),
            memory_limit: spec.memory,
            timeout: spec.timeout,
            output_limit: spec.output,
        };
        let cfg = inst
            .write(&stage.config_json)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let res = inst.call(|s| init.call(s, cfg));
        if let Err(e) = res {
            // Kept typed, so a caller can tell rejected params from a trap.
            return Err(e.into());
        }
        Ok(inst)
    }

    /// Runs a map, filter or flat_map stage over one NDJSON chunk.
    pub fn process(&mut self, ctx: &[u8], input: &[u8]) -> Result<CallOutput<'_>, StageError> {
        let Some(f) = self.process.clone() else {
            return Err(self.abi_error("the stage does not export `wasmpipe_process`".into()));
        };
        let c = self.write(ctx)?;
        let i = self.write(input)?;
        let d = self.call(|s| f.call(s, (c.0, c.1, i.0, i.1)))?;
        self.output(d)
    }

    /// Folds one chunk into `acc` (empty: the initial accumulator); the new
    /// accumulator is `out`.
    pub fn reduce(
        &mut self,
        ctx: &[u8],
        acc: &[u8],
        input: &[u8],
    ) -> Result<CallOutput<'_>, StageError> {
        let Some(f) = self.reduce.clone() else {
            return Err(self.abi_error("the stage does not export `wasmpipe_reduce`".into()));
        };
        let c = self.write(ctx)?;
        let a = if acc.is_empty() {
            (0, 0)
        } else {
            self.write(acc)?
        };
        let i = self.write(input)?;
        let d = self.call(|s| f.call(s, (c.0, c.1, a.0, a.1, i.0, i.1)))?;
        self.output(d)
    }

    /// Combines two accumulators.
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<CallOutput<'_>, StageError> {
        let Some(f) = self.combine.clone() else {
            return Err(self.abi_error("the stage does not export `wasmpipe_combine`".into()));
        };
        let a = self.write(a)?;
        let b = self.write(b)?;
        let d = self.call(|s| f.call(s, (a.0, a.1, b.0, b.1)))?;
        self.output(d)
    }

    /// Copies `data` into a guest buffer from `wasmpipe_alloc`.
    fn write(&mut self, data: &[u8]) -> Result<(i32, i32), StageError> {
        let len = i32::try_from(data.len())
            .map_err(|_| self.abi_error(format!("input of {} bytes is too large", data.len())))?;
        let alloc = self.alloc.clone();
        self.reset_limits();
        let ptr = alloc
            .call(&mut self.store, len)
            .map_err(|e| self.classify(e))?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, data)
            .map_err(|_| {
                self.abi_error(format!(
                    "`wasmpipe_alloc({len})` returned out-of-bounds pointer {ptr:#x}"
                ))
            })?;
        Ok((ptr, len))
    }

    fn reset_limits(&mut self) {
        self.store.data_mut().start_call(self.timeout);
        self.store
            .set_epoch_deadline(Runtime::deadline_ticks(self.timeout));
    }

    /// Runs one guest entry point and interprets its status.
    fn call(
        &mut self,
        f: impl FnOnce(&mut Store<StageState>) -> wasmtime::Result<i32>,
    ) -> Result<Descriptor, StageError> {
        self.reset_limits();
        let status = f(&mut self.store).map_err(|e| self.classify(e))?;
        let d = self
            .descriptor()
            .ok_or_else(|| self.abi_error("descriptor out of bounds".into()))?;
        if status == status::OK {
            return Ok(d);
        }
        let errors = self.slice(d.err_ptr, d.err_len).unwrap_or_default();
        let message = decode_errors(errors)
            .filter_map(Result::ok)
            .map(|r| String::from_utf8_lossy(r.message).into_owned())
            .next()
            .unwrap_or_else(|| format!("status {status} without a message"));
        Err(StageError::Failed {
            stage: self.stage.clone(),
            message,
        })
    }

    /// Turns a wasmtime error from a call into a typed stage error, using the
    /// guest's cursor and panic message, which survive the trap in memory.
    fn classify(&self, e: wasmtime::Error) -> StageError {
        let d = self.descriptor();
        let event = d.map(|d| d.cursor).filter(|&c| c != NO_EVENT);
        let panic = d
            .filter(|d| d.panic_len > 0)
            .and_then(|d| self.slice(d.panic_ptr, d.panic_len))
            .map(|p| String::from_utf8_lossy(p).into_owned());
        trap_error(
            &e,
            &self.stage,
            event,
            self.timeout,
            self.memory_limit,
            self.store.data().limiter.refused,
            panic,
        )
    }

    fn descriptor(&self) -> Option<Descriptor> {
        read_descriptor(self.memory.data(&self.store), self.desc_addr)
    }

    fn slice(&self, ptr: u32, len: u32) -> Option<&[u8]> {
        self.memory
            .data(&self.store)
            .get(ptr as usize..(ptr as usize).checked_add(len as usize)?)
    }

    fn output(&self, d: Descriptor) -> Result<CallOutput<'_>, StageError> {
        // A length that runs past the guest's own memory is a lie, not a
        // large output: said as such, or its author would raise
        // `limits.output` in vain.
        let memory = self.memory.data_size(&self.store) as u64;
        let end = u64::from(d.out_ptr) + u64::from(d.out_len);
        if end > memory {
            return Err(self.abi_error(format!(
                "the output descriptor claims {} bytes at offset {}, past the end of the stage's {memory}-byte memory",
                d.out_len, d.out_ptr
            )));
        }
        // Checked before anything is copied out of the guest: its memory
        // is bounded, and so is what the host takes from it.
        if u64::from(d.out_len) > self.output_limit {
            return Err(StageError::OutputTooLarge {
                stage: self.stage.clone(),
                limit: self.output_limit,
            });
        }
        let oob = |what: &str| self.abi_error(format!("{what} out of bounds"));
        let out = self
            .slice(d.out_ptr, d.out_len)
            .ok_or_else(|| oob("output"))?;
        let origins = self
            .slice(d.origin_ptr, d.origin_count.saturating_mul(4))
            .ok_or_else(|| oob("origin table"))?;
        let errors = self
            .slice(d.err_ptr, d.err_len)
            .ok_or_else(|| oob("error records"))?;
        Ok(CallOutput {
            out,
            origins,
            errors,
        })
    }

    fn abi_error(&self, message: String) -> StageError {
        StageError::Abi {
            stage: self.stage.clone(),
            message,
        }
    }
}

/// Reads the descriptor at `addr` of a guest memory.
pub(crate) fn read_descriptor(mem: &[u8], addr: u32) -> Option<Descriptor> {
    let bytes = mem.get(addr as usize..addr as usize + Descriptor::SIZE)?;
    Some(Descriptor::from_bytes(bytes.try_into().ok()?))
}
