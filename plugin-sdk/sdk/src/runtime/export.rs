//! What the generated `extern "C"` exports call: the instance's one
//! [`Runtime`], hand-over of input buffers, the panic hook and reactor
//! initialisation.
//!
//! The `unsafe` functions take addresses and lengths from the host. They
//! compile on every target so that the SDK builds and is tested natively, but
//! only wasm32 exports call them, with buffers from [`alloc`].

use std::panic::PanicHookInfo;
use std::ptr;
use std::sync::Once;

use super::{Runtime, StageInfo};

thread_local! {
    /// The instance's runtime. wasm32-wasip1 has a single thread, so this is
    /// one static with a stable address, which `wasmpipe_descriptor` relies on.
    static RUNTIME: Runtime = const { Runtime::new() };
}

/// Runs `f` with the instance's runtime.
pub fn with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> R {
    RUNTIME.with(f)
}

/// `_initialize`: runs the module's static constructors once.
///
/// A `cdylib` for wasm32-wasip1 is linked without wasi-libc's reactor start
/// file, and stable Rust has no switch for it (`-Z wasi-exec-model=reactor`
/// is nightly-only and meant for binaries). When nothing references
/// `__wasm_call_ctors`, wasm-ld treats the module as a command and wraps
/// every export so that it runs the constructors before and the destructors
/// after each call. Exporting our own `_initialize` that calls
/// `__wasm_call_ctors`, as wasi-libc's `crt1-reactor.c` does, makes the
/// module a reactor: constructors run once, when the host calls
/// `_initialize` after instantiation, and exports are left unwrapped.
pub fn initialize() {
    #[cfg(target_arch = "wasm32")]
    {
        static CTORS: Once = Once::new();
        unsafe extern "C" {
            /// Synthesised by wasm-ld: calls every static constructor.
            fn __wasm_call_ctors();
        }
        // SAFETY: a linker-provided function without arguments; `Once` keeps
        // a second `_initialize` from running constructors twice.
        CTORS.call_once(|| unsafe { __wasm_call_ctors() });
    }
}

/// `wasmpipe_descriptor`.
pub fn descriptor() -> i32 {
    with_runtime(|rt| rt.descriptor_ptr() as usize as i32)
}

/// `wasmpipe_alloc`: a buffer of `len` bytes the host fills with a call's
/// input. Ownership passes to the call that receives it ([`take`]).
pub fn alloc(len: i32) -> i32 {
    alloc_buffer(len as u32 as usize) as usize as i32
}

/// Allocates and leaks a `len`-byte buffer.
pub fn alloc_buffer(len: usize) -> *mut u8 {
    // A boxed slice has exactly `len` bytes of capacity, which `take_buffer`
    // needs to rebuild it.
    Box::into_raw(vec![0u8; len].into_boxed_slice()).cast()
}

/// Takes back a buffer from [`alloc_buffer`].
///
/// # Safety
/// Unless `len` is 0, `ptr` must come from `alloc_buffer(len)` and not have
/// been taken back yet. With `len` 0, `ptr` is ignored: the host may pass 0
/// for an absent input without allocating.
pub unsafe fn take_buffer(ptr: *mut u8, len: usize) -> Box<[u8]> {
    if len == 0 {
        return Box::default();
    }
    // SAFETY: per this function's contract.
    unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(ptr, len)) }
}

/// [`take_buffer`] for the ABI's `i32` address and length.
///
/// # Safety
/// As for [`take_buffer`].
pub unsafe fn take(ptr: i32, len: i32) -> Box<[u8]> {
    // SAFETY: per this function's contract.
    unsafe { take_buffer(ptr as u32 as usize as *mut u8, len as u32 as usize) }
}

/// `wasmpipe_metadata`.
pub fn metadata(stage: &StageInfo) -> i32 {
    with_runtime(|rt| rt.metadata(stage))
}

/// `wasmpipe_init`: installs the panic hook, then runs the stage's init glue.
///
/// # Safety
/// The buffer must come from [`alloc`] (see [`take_buffer`]).
pub unsafe fn init(cfg_ptr: i32, cfg_len: i32, glue: fn(&Runtime, &[u8]) -> i32) -> i32 {
    install_panic_hook();
    // SAFETY: per this function's contract.
    let cfg = unsafe { take(cfg_ptr, cfg_len) };
    with_runtime(|rt| glue(rt, &cfg))
}

/// `wasmpipe_process`.
///
/// # Safety
/// Both buffers must come from [`alloc`] (see [`take_buffer`]).
pub unsafe fn process(
    ctx_ptr: i32,
    ctx_len: i32,
    in_ptr: i32,
    in_len: i32,
    glue: fn(&Runtime, &[u8], &[u8]) -> i32,
) -> i32 {
    // SAFETY: per this function's contract.
    let (meta, input) = unsafe { (take(ctx_ptr, ctx_len), take(in_ptr, in_len)) };
    with_runtime(|rt| glue(rt, &meta, &input))
}

/// `wasmpipe_reduce`.
///
/// # Safety
/// All three buffers must come from [`alloc`] (see [`take_buffer`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn reduce(
    ctx_ptr: i32,
    ctx_len: i32,
    acc_ptr: i32,
    acc_len: i32,
    in_ptr: i32,
    in_len: i32,
    glue: fn(&Runtime, &[u8], &[u8], &[u8]) -> i32,
) -> i32 {
    // SAFETY: per this function's contract.
    let (meta, acc, input) = unsafe {
        (
            take(ctx_ptr, ctx_len),
            take(acc_ptr, acc_len),
            take(in_ptr, in_len),
        )
    };
    with_runtime(|rt| glue(rt, &meta, &acc, &input))
}

/// `wasmpipe_combine`.
///
/// # Safety
/// Both buffers must come from [`alloc`] (see [`take_buffer`]).
pub unsafe fn combine(
    a_ptr: i32,
    a_len: i32,
    b_ptr: i32,
    b_len: i32,
    glue: fn(&Runtime, &[u8], &[u8]) -> i32,
) -> i32 {
    // SAFETY: per this function's contract.
    let (a, b) = unsafe { (take(a_ptr, a_len), take(b_ptr, b_len)) };
    with_runtime(|rt| glue(rt, &a, &b))
}

/// Makes a panic leave its message where the host looks after the trap.
///
/// With `panic = "abort"` the instance traps right after the hook returns, so
/// the hook is the only chance to say what happened. It replaces the default
/// hook rather than chaining it: the default one prints to stderr, and the
/// SDK itself never prints.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = panic_message(info);
            with_runtime(|rt| rt.record_panic(&message));
        }));
    });
}

/// `panicked at src/lib.rs:10:5: message`, on one line.
fn panic_message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload_as_str().unwrap_or("Box<dyn Any>");
    match info.location() {
        Some(location) => format!("panicked at {location}: {payload}"),
        None => format!("panicked: {payload}"),
    }
}
