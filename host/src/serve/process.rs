//! One chunk through the stages, as `serve`'s workers and `wasmpipe
//! worker` both run it: the [`Chain`] that `wasmpipe run` uses, then
//! retries of events whose stage timed out, then the dead letters. What
//! happens to the [`Outcome`] (one SQLite or PostgreSQL transaction) is
//! the caller's business.

use super::metrics::Metrics;
use crate::exec::chunk::line_starts;
use crate::exec::{Chain, Chunk, Failure, RunContext};
use anyhow::Result;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// What a chunk's events came to.
pub struct Outcome {
    /// Output events, NDJSON.
    pub output: Vec<u8>,
    /// For each output event, the index in the job of its input event.
    pub origin: Vec<u64>,
    /// Output events.
    pub outputs: u64,
    /// Failed events.
    pub dead: Vec<DeadLetter>,
    /// The chunk's reduce partial (empty: no event reached the reduce).
    pub partial: Vec<u8>,
    /// Timeout retries made.
    pub retries: u64,
}

/// A failed event.
pub struct DeadLetter {
    /// The stage that failed it.
    pub stage: String,
    /// Why.
    pub error: String,
    /// Index of the event in the job.
    pub index: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The event.
    pub event: Vec<u8>,
}

/// How often and how patiently to retry events whose stage timed out.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Retries per event.
    pub times: u32,
    /// First pause; doubles with each further one.
    pub backoff: Duration,
}

/// The stage versions a chain runs, as the JSON object stored with each chunk.
pub fn versions_json(chain: &Chain) -> String {
    serde_json::Value::Object(
        chain
            .stages()
            .iter()
            .map(|s| (s.name().to_string(), s.version.clone().into()))
            .collect(),
    )
    .to_string()
}

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

/// Runs `chunk` through `chain`, retrying events that timed out.
/// `metrics`, when given, records each stage's counts and the retries.
pub fn run_chunk(
    chain: &mut Chain,
    chunk: &Chunk,
    ctx: &[u8],
    retries: Retries,
    metrics: Option<&Metrics>,
) -> Result<Outcome> {
    chain.set_accumulator(Vec::new());
    let first = chain.process(chunk, ctx)?;
    record_stages(metrics, &first.counts);
    let mut output = first.output;
    let mut origin: Vec<u64> = first
        .output_origin
        .iter()
        .map(|&o| chunk.first_index + u64::from(o))
        .collect();
    let mut failures = first.failures;
    let mut attempts: HashMap<u32, u32> = HashMap::new();
    let mut retried = 0u64;
    for attempt in 1..=retries.times {
        let mut again: Vec<u32> = failures
            .iter()
            .filter(|f| f.transient)
            .map(|f| f.event)
            .collect();
        if again.is_empty() {
            break;
        }
        again.sort_unstable();
        again.dedup();
        failures.retain(|f| !f.transient);
        std::thread::sleep(retries.backoff * 2u32.saturating_pow(attempt - 1));
        let mut sub = Chunk {
            seq: chunk.seq,
            first_index: chunk.first_index,
            ..Chunk::default()
        };
        for &i in &again {
            sub.push(chunk.event(i as usize), chunk.lines[i as usize]);
            attempts.insert(i, attempt + 1);
        }
        retried += again.len() as u64;
        if let Some(m) = metrics {
            m.retries.fetch_add(again.len() as u64, Relaxed);
        }
        let o = chain.process(&sub, ctx)?;
        record_stages(metrics, &o.counts);
        output.extend_from_slice(&o.output);
        origin.extend(
            o.output_origin
                .iter()
                .map(|&k| chunk.first_index + u64::from(again[k as usize])),
        );
        failures.extend(o.failures.into_iter().map(|f| Failure {
            event: again[f.event as usize],
            ..f
        }));
    }
    let partial = chain.take_accumulator();
    let stages = chain.stages();
    let dead = failures
        .iter()
        .map(|f| DeadLetter {
            stage: stages[f.stage].name().to_string(),
            error: match attempts.get(&f.event) {
                Some(n) if f.transient => format!("{} (after {n} attempts)", f.error),
                _ => f.error.clone(),
            },
            index: chunk.first_index + u64::from(f.event),
            attempts: attempts.get(&f.event).copied().unwrap_or(1),
            event: chunk.event(f.event as usize).to_vec(),
        })
        .collect();
    let outputs = output.iter().filter(|&&b| b == b'\n').count() as u64;
    Ok(Outcome {
        output,
        origin,
        outputs,
        dead,
        partial,
        retries: retried,
    })
}

/// Combines a job's non-empty chunk partials, in chunk order, into its
/// result with the reduce stage's `combine` (its `init` if there are none).
pub fn combine_partials(chain: &mut Chain, partials: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let mut it = partials.into_iter();
    match it.next() {
        None => chain.initial_accumulator(),
        Some(mut total) => {
            for p in it {
                total = chain.combine(&total, &p)?;
            }
            Ok(total)
        }
    }
}

fn record_stages(metrics: Option<&Metrics>, counts: &[crate::exec::StageCounts]) {
    let Some(metrics) = metrics else { return };
    for (m, c) in metrics.stages.iter().zip(counts) {
        m.events_in.fetch_add(c.events_in, Relaxed);
        m.events_out.fetch_add(c.events_out, Relaxed);
        m.failed.fetch_add(c.failed, Relaxed);
        if c.events_in > 0 {
            m.latency.observe(c.busy);
        }
    }
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
