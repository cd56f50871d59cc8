//! The stage runtime: one engine, stages compiled once, sandboxed instances
//! called once per chunk. Shared by every way of running a pipeline.

mod cache;
mod component;
mod deadline;
mod engine;
mod error;
mod instance;
mod sandbox;
mod stage;
pub mod stages;
pub mod window;

pub use component::{ComponentState, is_component};
pub use engine::{
    EPOCH_TICK, ModuleOrigin, Runtime, RuntimeConfig, content_hash, default_cache_dir,
};
pub use error::StageError;
pub use instance::{CallOutput, StageInstance};
pub use sandbox::{LOG_LINES_CUT, LOG_LINES_DROPPED, StageState};
pub use stage::{Encoding, KindMismatch, Metadata, Stage, StageSpec, linker};
pub use stages::{LiveStages, StageSet};
