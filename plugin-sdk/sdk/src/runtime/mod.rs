//! The guest side of the ABI, called by the code the stage macros generate.
//!
//! Everything here is plain Rust that compiles and runs natively, so the
//! behaviour of every entry point is unit-tested without a wasm runtime: a
//! test builds its own [`Runtime`], calls it like the generated glue does and
//! inspects the buffers the host would read. Only the `extern "C"` functions
//! the macros emit are specific to `wasm32`; they reach the one [`Runtime`] of
//! the instance through [`export`].
//!
//! # Layout
//! - this file: [`Runtime`], its buffers and descriptor, the call protocol,
//!   `metadata` and `init`;
//! - `stages`: the per-kind loops (map, filter, flat_map, reduce, combine);
//! - `codec`: decoding and encoding events, outputs and accumulators;
//! - `events`: splitting a chunk into events and wording per-event errors;
//! - `msgpack`: events as MessagePack frames, when the host asks for them;
//! - [`export`]: the instance's global runtime, buffer hand-over with the
//!   host, the panic hook and reactor initialisation.

mod codec;
mod events;
pub mod export;
pub(crate) mod msgpack;
mod stages;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wasmpipe_abi::{ABI_VERSION, Descriptor, NO_EVENT, encode_error, kind, status};

use crate::Context;
use events::Encoding;

pub use codec::{Accumulators, Events, Outputs, accumulators, events, outputs};
pub use stages::{ByValue, Fold, InPlace};

/// Params type of stages whose function takes no context: the manifest may
/// still give params (a module can be shared by stages), and they are ignored.
pub type NoParams = serde::de::IgnoredAny;

/// What the macro knows about a stage when it expands it.
#[derive(Debug)]
pub struct StageInfo {
    /// One of [`wasmpipe_abi::kind`].
    pub kind: &'static str,
    /// The Rust function's name.
    pub name: &'static str,
    /// For a reduce stage with `key = fn`, the key function's name.
    pub key_fn: Option<&'static str>,
}

/// The stage metadata JSON, in the field order the ABI documents.
#[derive(Serialize)]
struct Metadata<'a> {
    abi: u32,
    kind: &'a str,
    name: &'a str,
    sdk: &'a str,
    keyed: bool,
    /// The event encodings this module takes (`docs/abi.md`).
    events: [&'a str; 2],
}

/// The configuration JSON `wasmpipe_init` receives. Unknown fields are
/// ignored so that a newer host can add some without breaking older stages.
#[derive(Deserialize)]
struct StageConfig {
    stage: String,
    #[serde(default = "empty_object")]
    params: Value,
    #[serde(default)]
    key: Option<String>,
    /// The encoding of events in and out; absent means JSON.
    #[serde(default)]
    events: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// One stage instance's state: the descriptor the host reads, the buffers it
/// points into, and the configuration from `init`.
///
/// The descriptor and the panic message sit outside `state` because the panic
/// hook writes them while a stage function is running, that is while the
/// chunk loop holds `state` borrowed.
pub struct Runtime {
    descriptor: Cell<Descriptor>,
    panic: RefCell<String>,
    state: RefCell<State>,
}

/// Buffers are reused across calls (cleared, capacity kept): after the first
/// few chunks a stage allocates nothing for its output.
struct State {
    out: Vec<u8>,
    origin: Vec<u32>,
    errors: Vec<u8>,
    config: Option<Config>,
}

/// What `init` established.
struct Config {
    /// A `Context<P>` for the stage's params type `P`, which only the glue
    /// knows; the chunk loops downcast it back.
    ctx: Box<dyn Any>,
    /// The manifest's key pointer, for keyed reduce without a key function.
    key: Option<String>,
    /// Whether accumulators are maps from key to accumulator.
    keyed: bool,
    /// How events come in and go out.
    encoding: Encoding,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A runtime before `init`: every call but `metadata` fails.
    pub const fn new() -> Self {
        Runtime {
            descriptor: Cell::new(Descriptor {
                out_ptr: 0,
                out_len: 0,
                origin_ptr: 0,
                origin_count: 0,
                err_ptr: 0,
                err_len: 0,
                cursor: NO_EVENT,
                panic_ptr: 0,
                panic_len: 0,
                reserved: 0,
            }),
            panic: RefCell::new(String::new()),
            state: RefCell::new(State {
                out: Vec::new(),
                origin: Vec::new(),
                errors: Vec::new(),
                config: None,
            }),
        }
    }

    /// Address of the descriptor, which the host reads after every call.
    pub fn descriptor_ptr(&self) -> *const Descriptor {
        self.descriptor.as_ptr()
    }

    /// A copy of the descriptor. Outside wasm its addresses are truncated
    /// native pointers: tests read the buffers with [`Runtime::output`] etc.
    pub fn descriptor(&self) -> Descriptor {
        self.descriptor.get()
    }

    /// The output bytes of the last call.
    pub fn output(&self) -> Vec<u8> {
        self.state.borrow().out.clone()
    }

    /// The origin table of the last call.
    pub fn origins(&self) -> Vec<u32> {
        self.state.borrow().origin.clone()
    }

    /// The error records of the last call, decoded.
    pub fn errors(&self) -> Vec<(u32, String)> {
        let state = self.state.borrow();
        wasmpipe_abi::decode_errors(&state.errors)
            .map(|r| {
                let r = r.expect("the runtime writes whole records");
                (r.index, String::from_utf8_lossy(r.message).into_owned())
            })
            .collect()
    }

    /// The last panic message recorded since the last call began.
    pub fn panic_message(&self) -> String {
        self.panic.borrow().clone()
    }

    /// Records a panic message and points the descriptor at it. Called from
    /// the panic hook, right before the instance traps.
    pub fn record_panic(&self, message: &str) {
        // A panic inside `record_panic` itself would find the buffer borrowed;
        // the first message is the useful one then.
        let Ok(mut buf) = self.panic.try_borrow_mut() else {
            return;
        };
        buf.clear();
        buf.push_str(message);
        let d = self.descriptor.as_ptr();
        // SAFETY: `d` is the `Cell`'s own pointer and `Cell` never hands out
        // references, so nothing aliases the fields. Volatile, because the
        // instance traps right after this and the host reads the memory then:
        // the store must not be deferred or dropped.
        unsafe {
            ptr::write_volatile(&raw mut (*d).panic_ptr, addr(buf.as_ptr()));
            ptr::write_volatile(&raw mut (*d).panic_len, len32(buf.len()));
        }
    }

    /// Publishes the index of the event about to be processed.
    ///
    /// Volatile for the same reason as in [`Runtime::record_panic`]: if the
    /// stage function traps, loops forever or exhausts memory, the host learns
    /// from this field which event did it, so the store has to be in memory
    /// before the function runs, not merged with the next event's.
    fn set_cursor(&self, index: u32) {
        let d = self.descriptor.as_ptr();
        // SAFETY: as in `record_panic`.
        unsafe { ptr::write_volatile(&raw mut (*d).cursor, index) }
    }

    /// Runs one ABI call: fresh buffers, the call's work, then the descriptor.
    ///
    /// `Err(message)` fails the call as a whole: the error records then hold
    /// exactly one record, at [`NO_EVENT`], and the output is empty.
    fn call(&self, body: impl FnOnce(&mut State) -> Result<(), String>) -> i32 {
        self.panic.borrow_mut().clear();
        self.descriptor.set(Descriptor {
            cursor: NO_EVENT,
            panic_ptr: 0,
            panic_len: 0,
            ..self.descriptor.get()
        });
        let mut state = self.state.borrow_mut();
        state.out.clear();
        state.origin.clear();
        state.errors.clear();
        let code = match body(&mut state) {
            Ok(()) => status::OK,
            Err(message) => {
                state.out.clear();
                state.origin.clear();
                state.errors.clear();
                encode_error(&mut state.errors, NO_EVENT, message.as_bytes());
                status::FAILED
            }
        };
        self.descriptor.set(Descriptor {
            out_ptr: addr(state.out.as_ptr()),
            out_len: len32(state.out.len()),
            origin_ptr: addr(state.origin.as_ptr()),
            origin_count: len32(state.origin.len()),
            err_ptr: addr(state.errors.as_ptr()),
            err_len: len32(state.errors.len()),
            cursor: NO_EVENT,
            reserved: 0,
            ..self.descriptor.get()
        });
        code
    }

    /// `wasmpipe_metadata`: what this module is, for the host to check against
    /// the manifest before sending it any configuration.
    pub fn metadata(&self, stage: &StageInfo) -> i32 {
        self.call(|state| {
            let meta = Metadata {
                abi: ABI_VERSION,
                kind: stage.kind,
                name: stage.name,
                // `docs/abi.md`: the host trusts the output lines of modules
                // whose `sdk` starts with `wasmpipe-sdk` to be valid JSON.
                sdk: concat!("wasmpipe-sdk ", env!("CARGO_PKG_VERSION")),
                keyed: stage.key_fn.is_some(),
                events: [
                    wasmpipe_abi::encoding::JSON,
                    wasmpipe_abi::encoding::MSGPACK,
                ],
            };
            serde_json::to_writer(&mut state.out, &meta)
                .map_err(|e| format!("cannot encode metadata: {e}"))
        })
    }

    /// `wasmpipe_init`: parses the stage configuration, and the params into
    /// `P` once for the life of the instance.
    pub fn init<P: DeserializeOwned + 'static>(
        &self,
        stage: &StageInfo,
        cfg: &[u8],
        _params: PhantomData<P>,
    ) -> i32 {
        self.call(|state| {
            state.config = None;
            let cfg: StageConfig = serde_json::from_slice(cfg)
                .map_err(|e| format!("invalid stage configuration: {e}"))?;
            let params = P::deserialize(cfg.params)
                .map_err(|e| format!("invalid params for stage `{}`: {e}", cfg.stage))?;
            if let Some(pointer) = &cfg.key {
                check_key_pointer(stage, &cfg.stage, pointer)?;
            }
            let keyed = stage.key_fn.is_some() || cfg.key.is_some();
            let encoding = match cfg.events.as_deref() {
                None | Some(wasmpipe_abi::encoding::JSON) => Encoding::Json,
                Some(wasmpipe_abi::encoding::MSGPACK) => Encoding::MsgPack,
                Some(other) => {
                    return Err(format!(
                        "stage `{}`: unknown event encoding `{other}`; this SDK takes `json` or `msgpack`",
                        cfg.stage
                    ));
                }
            };
            state.config = Some(Config {
                ctx: Box::new(Context::new(cfg.stage, params)),
                key: cfg.key,
                keyed,
                encoding,
            });
            Ok(())
        })
    }
}

/// A key pointer is only meaningful for a reduce that has no key function of
/// its own, and must be a JSON pointer; saying so at `init` beats failing
/// every event of every chunk.
fn check_key_pointer(stage: &StageInfo, name: &str, pointer: &str) -> Result<(), String> {
    if stage.kind != kind::REDUCE {
        return Err(format!(
            "stage `{name}` is a {} stage; only reduce stages take a `key`",
            stage.kind
        ));
    }
    if let Some(key_fn) = stage.key_fn {
        return Err(format!(
            "stage `{name}` computes its own key with `{key_fn}`; remove `key = {pointer:?}` from the manifest"
        ));
    }
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "invalid key `{pointer}` for stage `{name}`: a JSON pointer starts with `/`, e.g. `/{pointer}`"
        ));
    }
    Ok(())
}

/// The stage's context, with the params type the glue expects, and the
/// encoding of its events.
fn context_mut<P: 'static>(
    config: &mut Option<Config>,
) -> Result<(&mut Context<P>, Encoding), String> {
    let config = config.as_mut().ok_or_else(not_initialised)?;
    let encoding = config.encoding;
    let ctx = config
        .ctx
        .downcast_mut()
        .ok_or_else(|| "internal error: params type differs from `init`".to_owned())?;
    Ok((ctx, encoding))
}

fn not_initialised() -> String {
    "stage not initialised: the host must call `wasmpipe_init` first".to_owned()
}

/// The chunk metadata object; an absent one is empty.
fn parse_meta(meta: &[u8]) -> Result<Map<String, Value>, String> {
    if meta.is_empty() {
        return Ok(Map::new());
    }
    serde_json::from_slice(meta).map_err(|e| format!("invalid chunk metadata: {e}"))
}

/// A guest address as the descriptor stores it. On wasm32 this is exact;
/// natively (tests only) the value is meaningless and never dereferenced.
fn addr<T>(p: *const T) -> u32 {
    p as usize as u32
}

/// A guest length; wasm32 memory is at most 4 GiB, so it always fits there.
fn len32(len: usize) -> u32 {
    len as u32
}

#[cfg(test)]
mod tests;
