//! The data path shared by every way of running a pipeline: sources cut
//! input into chunks, the executor runs a chunk through every stage (the
//! chain) and reports what it came to, and `run`'s pipeline runs
//! executors in parallel and writes the reports.

pub mod chain;
pub mod chunk;
pub mod dead_letter;
pub mod deploy;
pub mod diff;
pub mod encoding;
pub mod executor;
pub mod framing;
pub mod pipeline;
pub mod source;
pub mod stored;
pub mod window;

pub use crate::runtime::stages::{LiveStages, StageSet};
pub use chain::{Chain, ChunkOutcome, Failure, StageCounts};
pub use chunk::{Chunk, ChunkId};
pub use dead_letter::{DeadLetter, DeadLetterSink};
pub use executor::{ChunkReport, Executor, Policy, Retries};
pub use pipeline::{
    Pipeline, RunContext, RunSummary, default_workers, host_name, load_stage, stage_spec,
};
pub use source::{ChunkLimits, JsonArray, JsonLines, Source};

/// Milliseconds since the Unix epoch: the time stamps of stored records
/// and the window clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
