//! Typed failures of a guest call. Each names the stage, and the event when
//! the guest's cursor says which one it was working on.

use std::fmt;
use std::time::Duration;

/// Why a guest call failed as a whole. Per-event errors a stage returns are
/// not `StageError`s: they become dead letters while the chunk carries on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StageError {
    /// The guest trapped (a panic in a Rust stage, an `unreachable`, an
    /// out-of-bounds access...).
    #[error("stage `{stage}` trapped{}: {message}", at(*event))]
    Trap {
        /// Stage name.
        stage: String,
        /// Event index within the call's input, when known.
        event: Option<u32>,
        /// The panic message, or wasmtime's trap description.
        message: String,
    },
    /// The call ran past its wall-time limit.
    #[error("stage `{stage}` timed out after {}{}", fmt_duration(*limit), at(*event))]
    Timeout {
        /// Stage name.
        stage: String,
        /// Event index within the call's input, when known.
        event: Option<u32>,
        /// The limit that was exceeded.
        limit: Duration,
    },
    /// The guest needed more memory than its limit allows.
    #[error(
        "stage `{stage}` ran out of memory (limit {limit} bytes){}; raise its `limits.memory` if the event needs more",
        at(*event)
    )]
    OutOfMemory {
        /// Stage name.
        stage: String,
        /// Event index within the call's input, when known.
        event: Option<u32>,
        /// The memory limit in bytes.
        limit: u64,
    },
    /// The guest handed back more output than `limits.output` allows.
    #[error(
        "stage `{stage}` produced more than {limit} bytes of output in one call (limits.output)"
    )]
    OutputTooLarge {
        /// Stage name.
        stage: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The guest reported that the whole call failed (status `FAILED`).
    #[error("stage `{stage}` failed: {message}")]
    Failed {
        /// Stage name.
        stage: String,
        /// The guest's message.
        message: String,
    },
    /// The guest broke the ABI (bad pointers, malformed error records...).
    #[error("stage `{stage}` broke the wasmpipe ABI: {message}")]
    Abi {
        /// Stage name.
        stage: String,
        /// What was wrong.
        message: String,
    },
}

fn at(event: Option<u32>) -> String {
    event.map(|e| format!(" on event {e}")).unwrap_or_default()
}

fn fmt_duration(d: Duration) -> impl fmt::Display {
    crate::manifest::DurationSpec(d)
}

impl StageError {
    /// The event the failure is attributed to, if any.
    pub fn event(&self) -> Option<u32> {
        match self {
            StageError::Trap { event, .. }
            | StageError::Timeout { event, .. }
            | StageError::OutOfMemory { event, .. } => *event,
            StageError::Failed { .. }
            | StageError::Abi { .. }
            | StageError::OutputTooLarge { .. } => None,
        }
    }

    /// Whether retrying the same input could succeed (a timeout on a loaded
    /// machine); used by services that retry before dead-lettering.
    pub fn is_transient(&self) -> bool {
        matches!(self, StageError::Timeout { .. })
    }

    /// Whether the failure poisons the instance, so it must be replaced.
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, StageError::Failed { .. })
    }

    /// The same error with the event index cleared, for messages attached to
    /// one event (the index is given separately there).
    pub fn without_event(&self) -> StageError {
        let mut e = self.clone();
        match &mut e {
            StageError::Trap { event, .. }
            | StageError::Timeout { event, .. }
            | StageError::OutOfMemory { event, .. } => *event = None,
            _ => {}
        }
        e
    }
}

/// What a trapped call is reported as, for core modules and components
/// alike: an interrupt is a timeout, a trap after a refused `memory.grow`
/// is out of memory, anything else a trap with the guest's own message
/// when it left one (`panic`), else its root cause.
pub(crate) fn trap_error(
    e: &wasmtime::Error,
    stage: &str,
    event: Option<u32>,
    timeout: Duration,
    memory: u64,
    refused: bool,
    panic: Option<String>,
) -> StageError {
    let stage = stage.to_owned();
    if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        return StageError::Timeout {
            stage,
            event,
            limit: timeout,
        };
    }
    if refused {
        return StageError::OutOfMemory {
            stage,
            event,
            limit: memory,
        };
    }
    StageError::Trap {
        stage,
        event,
        message: panic.unwrap_or_else(|| root_cause(e)),
    }
}

/// An error from a call made while loading a module (`_initialize`, the
/// descriptor, the metadata): a timeout is said as one, with the limit,
/// and any other trap leads with its cause rather than a wasm backtrace.
pub(crate) fn load_call_error(e: wasmtime::Error, what: String, limit: Duration) -> anyhow::Error {
    if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        return anyhow::anyhow!("{what} timed out after {}", fmt_duration(limit));
    }
    anyhow::anyhow!("{what}: {}", root_cause(&e))
}

/// The innermost cause of a wasmtime error: for a trap, the trap (or the
/// WASI error that ended the guest, such as `proc_exit`), not the
/// backtrace wasmtime wraps around it.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return t.to_string();
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("the stage exited with status {}", exit.0);
    }
    e.root_cause().to_string()
}
