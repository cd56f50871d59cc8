//! What `serve`'s embedded workers and `wasmpipe worker` both need around
//! the executor: a stored chunk as a [`Chunk`], and its context.

use crate::exec::chunk::line_starts;
use crate::exec::{Chunk, RunContext};
use anyhow::Result;

/// The context object stages see for one chunk of a stored job.
pub fn chunk_context(
    job: i64,
    host: &str,
    context: &str,
    pipeline: &str,
    seq: u64,
) -> Result<Vec<u8>> {
    let extra = match serde_json::from_str(context)? {
        serde_json::Value::Object(m) => m,
        _ => Default::default(),
    };
    RunContext {
        job: job.to_string(),
        host: host.to_string(),
        extra,
    }
    .chunk_json(pipeline, seq)
}

/// Stored chunk data as a [`Chunk`] (line numbers are event numbers).
pub fn to_chunk(data: Vec<u8>, seq: u64, first_index: u64) -> Chunk {
    let starts: Vec<u32> = line_starts(&data).into_iter().map(|s| s as u32).collect();
    let lines = (0..starts.len() as u64)
        .map(|i| first_index + i + 1)
        .collect();
    Chunk {
        seq,
        data,
        starts,
        first_index,
        lines,
        rejects: Vec::new(),
    }
}
