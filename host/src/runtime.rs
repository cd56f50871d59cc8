//! The stage runtime: one engine, stages compiled once, sandboxed instances
//! called once per chunk. Shared by every way of running a pipeline.

mod cache;
mod component;
mod deadline;
mod engine;
mod error;
mod instance;
mod sandbox;
pub(crate) mod source_section;
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

/// A stage of a hand-written fixture (`tests/fixtures`), on its own engine,
/// for the unit tests of the chain and the executor.
#[cfg(test)]
pub(crate) fn fixture_stage(
    fixture: &str,
    timeout: std::time::Duration,
) -> (std::sync::Arc<Runtime>, std::sync::Arc<Stage>) {
    let rt = std::sync::Arc::new(
        Runtime::new(&RuntimeConfig {
            max_instances: 8,
            max_memory: 64 << 20,
            cache_dir: None,
        })
        .unwrap(),
    );
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(fixture);
    let spec = StageSpec {
        timeout,
        ..StageSpec::standalone("s", path)
    };
    let stage = Stage::load(&rt, &linker(&rt).unwrap(), spec).unwrap();
    (rt, stage)
}
