//! The work queue and the workers. The queue holds only chunk keys (the
//! chunks themselves are in the store), so memory does not grow with the
//! backlog's bytes. Each worker is a thread with its own [`Chain`]: it
//! loads a chunk, runs it through the chain exactly as `wasmpipe run`
//! does, retries events whose stage timed out, and commits outputs, dead
//! letters, reduce partial and done mark together.

use super::Service;
use super::store::{ChunkKey, ChunkResult, NewDeadLetter};
use crate::exec::chunk::line_starts;
use crate::exec::{Chain, Chunk, Failure, RunContext};
use anyhow::{Context as _, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Chunk keys waiting for a worker.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    cv: Condvar,
}

#[derive(Default)]
struct Inner {
    ready: VecDeque<ChunkKey>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds chunks at the back.
    pub fn push(&self, keys: impl IntoIterator<Item = ChunkKey>) {
        let mut q = self.lock();
        q.ready.extend(keys);
        drop(q);
        self.cv.notify_all();
    }

    /// The next chunk; `None` once the queue is closed.
    pub fn pop(&self) -> Option<ChunkKey> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(k) = q.ready.pop_front() {
                return Some(k);
            }
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops handing out chunks; those left stay in the store for the next start.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no chunk is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A worker's loop: until the queue closes, process chunks. A chunk whose
/// processing fails as a whole (an instance cannot be created, the disk is
/// full) stays queued in the store and is tried again after a pause.
pub fn worker(svc: &Service, mut chain: Chain) {
    let versions = serde_json::Value::Object(
        chain
            .stages()
            .iter()
            .map(|s| {
                (
                    s.name().to_string(),
                    serde_json::Value::from(s.version.clone()),
                )
            })
            .collect(),
    )
    .to_string();
    while let Some(key) = svc.queue.pop() {
        let t = Instant::now();
        match process(svc, &mut chain, key, &versions) {
            Ok(()) => svc.metrics.chunk_latency.observe(t.elapsed()),
            Err(e) => {
                tracing::error!("job {} chunk {}: {e:#}; will retry", key.job, key.seq);
                svc.metrics.chunk_errors.fetch_add(1, Relaxed);
                std::thread::sleep(svc.settings.backoff);
                svc.queue.push([key]);
            }
        }
    }
}

fn process(svc: &Service, chain: &mut Chain, key: ChunkKey, versions: &str) -> Result<()> {
    let Some(input) = svc.store.load_chunk(key, super::now_ms())? else {
        // Already done (queued twice): nothing to do.
        return Ok(());
    };
    let chunk = to_chunk(input.data, key.seq as u64, input.first_index);
    let extra = match serde_json::from_str(&input.context)? {
        serde_json::Value::Object(m) => m,
        _ => Default::default(),
    };
    let run_ctx = RunContext {
        job: key.job.to_string(),
        host: svc.host.clone(),
        extra,
    };
    let ctx = run_ctx.chunk_json(&input.pipeline, key.seq as u64)?;

    chain.set_accumulator(Vec::new());
    let first = chain.process(&chunk, &ctx)?;
    record_stages(svc, &first.counts);
    let mut output = first.output;
    let mut origin: Vec<u64> = first
        .output_origin
        .iter()
        .map(|&o| chunk.first_index + u64::from(o))
        .collect();
    let mut failures = first.failures;
    let mut attempts: HashMap<u32, u32> = HashMap::new();
    let mut retries = 0u64;
    for attempt in 1..=svc.settings.retries {
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
        std::thread::sleep(svc.settings.backoff * 2u32.saturating_pow(attempt - 1));
        let mut sub = Chunk {
            seq: chunk.seq,
            first_index: chunk.first_index,
            ..Chunk::default()
        };
        for &i in &again {
            sub.push(chunk.event(i as usize), chunk.lines[i as usize]);
            attempts.insert(i, attempt + 1);
        }
        retries += again.len() as u64;
        svc.metrics.retries.fetch_add(again.len() as u64, Relaxed);
        let o = chain.process(&sub, &ctx)?;
        record_stages(svc, &o.counts);
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

    let stages = chain.stages().to_vec();
    let errors: Vec<String> = failures
        .iter()
        .map(|f| match attempts.get(&f.event) {
            Some(n) if f.transient => format!("{} (after {n} attempts)", f.error),
            _ => f.error.clone(),
        })
        .collect();
    let dead = failures
        .iter()
        .zip(&errors)
        .map(|(f, error)| NewDeadLetter {
            stage: stages[f.stage].name(),
            error,
            index: chunk.first_index + u64::from(f.event),
            attempts: attempts.get(&f.event).copied().unwrap_or(1),
            event: chunk.event(f.event as usize),
        })
        .collect::<Vec<_>>();
    let outputs = output.iter().filter(|&&b| b == b'\n').count() as u64;
    let res = ChunkResult {
        output: &output,
        origin: &origin,
        dead,
        partial,
        versions,
        retries,
    };
    let reduces = svc.reduces;
    let mut combine = |partials: Vec<Vec<u8>>| -> Result<Vec<u8>> {
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
    };
    let committed = svc
        .store
        .complete_chunk(
            key,
            &res,
            super::now_ms(),
            reduces.then_some(&mut combine as &mut super::store::Combine<'_>),
        )
        .with_context(|| {
            format!(
                "cannot store the outputs of job {} chunk {}",
                key.job, key.seq
            )
        })?;
    if committed {
        svc.backlog.fetch_sub(key.events, Relaxed);
        svc.processed.fetch_add(key.events, Relaxed);
        svc.metrics.chunks_done.fetch_add(1, Relaxed);
        svc.metrics.events_stored.fetch_add(outputs, Relaxed);
        svc.metrics
            .dead_letters
            .fetch_add(res.dead.len() as u64, Relaxed);
    }
    Ok(())
}

fn record_stages(svc: &Service, counts: &[crate::exec::StageCounts]) {
    for (m, c) in svc.metrics.stages.iter().zip(counts) {
        m.events_in.fetch_add(c.events_in, Relaxed);
        m.events_out.fetch_add(c.events_out, Relaxed);
        m.failed.fetch_add(c.failed, Relaxed);
        if c.events_in > 0 {
            m.latency.observe(c.busy);
        }
    }
}

/// A stored chunk's data as a [`Chunk`] (line numbers are event numbers).
fn to_chunk(data: Vec<u8>, seq: u64, first_index: u64) -> Chunk {
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
