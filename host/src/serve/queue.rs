//! The work queue and the workers. The queue holds only chunk keys (the
//! chunks themselves are in the store), so memory does not grow with the
//! backlog's bytes. Each worker is a thread with its own [`Executor`]: it
//! loads a chunk, runs it exactly as `wasmpipe run` does, and commits
//! outputs, dead letters, reduce partial and done mark together.

use super::store::ChunkKey;
use super::{Service, process};
use crate::exec::Executor;
use anyhow::{Context as _, Result};
use std::collections::VecDeque;
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
pub fn worker(svc: &Service, mut exec: Executor) {
    let queue = svc.embedded().1;
    while let Some(key) = queue.pop() {
        let t = Instant::now();
        match run(svc, &mut exec, key) {
            Ok(()) => svc.metrics.chunk_latency.observe(t.elapsed()),
            Err(e) => {
                tracing::error!("job {} chunk {}: {e:#}; will retry", key.job, key.seq);
                svc.metrics.chunk_errors.fetch_add(1, Relaxed);
                std::thread::sleep(svc.settings.retries.backoff);
                queue.push([key]);
            }
        }
    }
}

fn run(svc: &Service, exec: &mut Executor, key: ChunkKey) -> Result<()> {
    let store = svc.embedded().0;
    let Some(input) = store.load_chunk(key, super::now_ms())? else {
        // Already done (queued twice): nothing to do.
        return Ok(());
    };
    let chunk = process::to_chunk(input.data, key.seq as u64, input.first_index);
    let ctx = process::chunk_context(
        key.job,
        &svc.host,
        &input.context,
        &input.pipeline,
        key.seq as u64,
    )?;
    let report = exec.run(&chunk, &ctx)?;
    svc.metrics.record(&report);
    let reduces = svc.reduces;
    let mut combine = |partials: Vec<Vec<u8>>| exec.combine(partials);
    let committed = store
        .complete_chunk(
            key,
            &report,
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
        svc.metrics
            .events_stored
            .fetch_add(report.outputs(), Relaxed);
        svc.metrics
            .dead_letters
            .fetch_add(report.dead.len() as u64, Relaxed);
    }
    Ok(())
}
