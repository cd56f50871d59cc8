//! `serve`'s embedded workers: threads, each with its own [`Executor`],
//! that take chunk keys from the in-memory queue, load the chunk from the
//! SQLite journal, run it exactly as `wasmpipe run` does, and commit
//! outputs, dead letters, reduce partial and done mark together.

use super::Service;
use crate::exec::ChunkId;
use crate::exec::{Executor, stored};
use crate::store::{Combine, now_ms};
use anyhow::{Context as _, Result};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// A worker's loop: until the queue closes, process chunks. A chunk whose
/// processing fails as a whole (an instance cannot be created, the disk is
/// full) stays queued in the store and is tried again after a pause.
pub fn run(svc: &Service, mut exec: Executor) {
    let queue = svc.embedded().1;
    while let Some(key) = queue.pop() {
        let t = Instant::now();
        match run_chunk(svc, &mut exec, key) {
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

/// Closes the windows of a quiet stream: once a second, a tick advances
/// the stored clock if no events came for the window's `idle` time.
pub fn tick_windows(svc: &Service) {
    let Some(book) = &svc.windows else { return };
    while !svc.stopping.load(Relaxed) {
        std::thread::sleep(std::time::Duration::from_secs(1));
        match svc.embedded().0.tick_windows(&svc.pipeline, book, now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("idle stream: {n} windows closed"),
            Err(e) => tracing::warn!("cannot advance the window clock: {e:#}"),
        }
    }
}

fn run_chunk(svc: &Service, exec: &mut Executor, key: ChunkId) -> Result<()> {
    let store = svc.embedded().0;
    let Some(input) = store.load_chunk(key, now_ms())? else {
        // Already done (queued twice): nothing to do.
        return Ok(());
    };
    let chunk = stored::to_chunk(input.data, key.seq, input.first_index);
    let ctx = stored::chunk_context(key.job, &svc.host, &input.context, &input.pipeline, key.seq)?;
    let report = match &input.pinned {
        None => exec.run(&chunk, &ctx)?,
        // A replay asked for named versions: those or none. After a
        // restart they may be gone; then its events are dead letters
        // saying so (a retry runs them on the current versions), rather
        // than outputs of a version nobody asked for.
        Some(pin) => match svc.live.pinned(pin) {
            Ok(set) => exec.run_on(set, &chunk, &ctx)?,
            Err(stage) => {
                let at = exec
                    .stages()
                    .iter()
                    .position(|s| s.name() == stage)
                    .unwrap_or(0);
                let why = format!(
                    "the replay asked for stage `{stage}` at a version this server no longer has loaded ({pin}); retry the dead letters to run them on the current version"
                );
                exec.refuse(&chunk, at, &why)
            }
        },
    };
    svc.metrics.record(&report);
    let committed = match &svc.windows {
        // A windowed reduce has no job result: its windows span jobs.
        Some(book) => store.complete_chunk(key, &report, now_ms(), None, Some((book, exec))),
        None => {
            let mut combine = |partials: Vec<Vec<u8>>| exec.combine(partials);
            let combine = svc.reduces.then_some(&mut combine as &mut Combine<'_>);
            store.complete_chunk(key, &report, now_ms(), combine, None)
        }
    };
    let committed = committed.with_context(|| {
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
