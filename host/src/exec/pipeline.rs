//! A pipeline run: a reader thread cuts the source into chunks, worker
//! threads run them through their own [`Chain`], and the calling thread
//! writes outputs (in input order unless unordered) and dead letters.
//!
//! Memory stays flat whatever the input size: the reader must take a credit
//! before reading a chunk and the writer returns it once the chunk is
//! written, so at most `credits` chunks exist at any time.

use super::chain::StageCounts;
use super::chunk::Chunk;
use super::dead_letter::DeadLetterSink;
use super::executor::{ChunkReport, Executor, Policy};
use super::source::Source;
use super::window::{Closed, MemoryWindows, WindowBook};
use crate::manifest::{
    DEFAULT_MEMORY, DEFAULT_OUTPUT, DEFAULT_TIMEOUT, EventEncoding, Manifest, StageKind,
    StageSection,
};
use crate::runtime::stages::{LiveStages, StageSet};
use crate::runtime::{KindMismatch, Runtime, Stage, StageError, StageSpec, StageState, linker};
use anyhow::{Context as _, Result, anyhow, bail};
use crossbeam_channel::{bounded, unbounded};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loaded pipeline, ready to run any number of times.
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// The stages, in order.
    pub stages: Vec<Arc<Stage>>,
    /// The shared runtime.
    pub runtime: Arc<Runtime>,
    /// Worker threads.
    pub workers: usize,
    /// Whether outputs keep input order.
    pub ordered: bool,
    /// How every chunk is run: lineage, timeout retries, reduce input.
    pub policy: Policy,
    /// When set, the stages run are this handle's current set, which may be
    /// replaced while the pipeline runs (`run --watch`); `stages` is then
    /// only the set it started with.
    pub live: Option<Arc<LiveStages>>,
    /// Under `run --watch`, the candidate the manifest names: a canary's
    /// chunks are stamped with its set, and every chunk run is counted
    /// (and shadowed) by it.
    pub deploys: Option<Arc<super::deploy::Deploys>>,
    /// Whether the source may never end (stdin, `--watch`): then a window
    /// also closes when the stream has been quiet for its `idle` time.
    pub streaming: bool,
}

/// Per-chunk context fields every stage can read (`Context::meta`).
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Identifies the run or job.
    pub job: String,
    /// Host name of the machine running the pipeline.
    pub host: String,
    /// More fields, overriding the ones above (e.g. request state, or
    /// `--meta` on the command line).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RunContext {
    /// A context for a local run: a job id from the clock and the host name.
    pub fn local() -> RunContext {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        RunContext {
            job: format!("run-{}", now.as_millis()),
            host: host_name(),
            extra: Default::default(),
        }
    }
}

impl RunContext {
    /// The context JSON of one chunk: pipeline, job, host, the time the
    /// chunk was taken up and its number, then the extra fields.
    pub fn chunk_json(&self, pipeline: &str, chunk: u64) -> Result<Vec<u8>> {
        let received_at =
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut m = serde_json::Map::new();
        m.insert("pipeline".into(), pipeline.into());
        m.insert("job".into(), self.job.clone().into());
        m.insert("host".into(), self.host.clone().into());
        m.insert("received_at".into(), received_at.into());
        m.insert("chunk".into(), chunk.into());
        m.extend(self.extra.clone());
        Ok(serde_json::to_vec(&m)?)
    }
}

/// The machine's host name, or `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Events read from the source (including those it rejected).
    pub events_read: u64,
    /// Counts per stage, in stage order.
    pub stages: Vec<(String, StageKind, StageCounts)>,
    /// Events refused by the source (too large).
    pub rejected: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Lines written to the sink.
    pub outputs: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Pipeline {
    /// Loads every stage of `manifest`: compiled (or from cache), checked
    /// against the ABI and against the kind the manifest declares.
    pub fn from_manifest(manifest: &Manifest, runtime: Arc<Runtime>) -> Result<Pipeline> {
        let doc = &manifest.doc;
        let linker = linker(&runtime)?;
        let mut stages = Vec::new();
        for st in &doc.stages {
            stages.push(load_stage(manifest, st, &runtime, &linker)?);
        }
        let workers = doc
            .runtime
            .workers
            .map_or_else(default_workers, |n| n.get());
        Ok(Pipeline {
            name: manifest.name().to_string(),
            stages,
            runtime,
            workers,
            ordered: doc.runtime.ordered.unwrap_or(true),
            policy: Policy {
                lineage: doc.runtime.lineage.unwrap_or(false),
                retries: manifest.retries(),
                keep_reduce_input: false,
            },
            live: None,
            deploys: None,
            streaming: false,
        })
    }

    /// The window book of a windowed reduce.
    pub fn window_book(&self) -> Option<WindowBook> {
        let last = self.stages.last()?;
        Some(WindowBook {
            spec: last.spec.window.clone()?,
            keyed: self.keyed(),
        })
    }

    /// The stage sets this pipeline runs: the hot-reloaded ones with
    /// `--watch`, else only the set it was loaded with.
    pub fn live(&self) -> Arc<LiveStages> {
        self.live
            .clone()
            .unwrap_or_else(|| Arc::new(LiveStages::new(self.stages.clone())))
    }

    /// An executor for one worker of any mode, running the stage sets of
    /// `live` (one handle shared by all of a process's workers).
    pub fn executor(&self, live: &Arc<LiveStages>) -> Executor {
        Executor::new(self.runtime.clone(), live.clone(), self.policy)
    }

    /// How a stored job's results are made: a job result of a reduce
    /// that is not windowed, or windows that span jobs.
    pub fn results(&self) -> super::stored::Results {
        let windows = self.window_book();
        super::stored::Results {
            reduces: self.reduces() && windows.is_none(),
            windows,
        }
    }

    /// Whether the last stage is a reduce.
    pub fn reduces(&self) -> bool {
        self.stages
            .last()
            .is_some_and(|s| s.kind == StageKind::Reduce)
    }

    /// Whether the reduce gives one result per key.
    pub fn keyed(&self) -> bool {
        self.stages
            .last()
            .is_some_and(|s| s.kind == StageKind::Reduce && (s.spec.key.is_some() || s.meta.keyed))
    }

    /// Runs the pipeline over `source`, writing outputs (or the reduce result)
    /// to `sink` and failed events to `dead`. `progress` is called after each
    /// chunk is written.
    pub fn run(
        &self,
        mut source: Box<dyn Source>,
        sink: &mut dyn Write,
        dead: &mut DeadLetterSink,
        ctx: &RunContext,
        progress: &mut dyn FnMut(&RunSummary),
    ) -> Result<RunSummary> {
        let started = Instant::now();
        let workers = self.workers.max(1);
        let credits = workers * 4;
        let (credit_tx, credit_rx) = bounded::<()>(credits);
        for _ in 0..credits {
            credit_tx.send(()).expect("credit channel has room");
        }
        // Every chunk is stamped with the stage set current when it is read.
        let live = self.live();
        let initial = live.current();
        let (chunk_tx, chunk_rx) = bounded::<(Chunk, Arc<StageSet>)>(credits);
        let (done_tx, done_rx) = unbounded::<Result<ChunkReport>>();

        let mut summary = RunSummary {
            stages: initial
                .stages
                .iter()
                .map(|s| (s.name().to_string(), s.kind, StageCounts::default()))
                .collect(),
            ..Default::default()
        };
        let mut windows = self.window_book().map(|book| Windows {
            book,
            open: MemoryWindows::default(),
            exec: self.executor(&live),
            streaming: self.streaming,
        });
        let result = std::thread::scope(|scope| -> Result<Vec<Vec<u8>>> {
            let reader_live = live.clone();
            let deploys = self.deploys.clone();
            let reader = scope.spawn(move || -> Result<()> {
                while credit_rx.recv().is_ok() {
                    match source.next_chunk().context("cannot read the input")? {
                        Some(chunk) => {
                            let set = deploys
                                .as_ref()
                                .and_then(|d| d.canary_for(0, chunk.seq))
                                .unwrap_or_else(|| reader_live.current());
                            if chunk_tx.send((chunk, set)).is_err() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                Ok(())
            });
            let mut handles = Vec::new();
            for w in 0..workers {
                let chunk_rx = chunk_rx.clone();
                let done_tx = done_tx.clone();
                let mut exec = self.executor(&live);
                let pipeline = &self.name;
                let run_ctx = ctx;
                let deploys = self.deploys.as_deref();
                let handle = std::thread::Builder::new()
                    .name(format!("wasmpipe-worker-{w}"))
                    .spawn_scoped(scope, move || -> Result<Vec<u8>> {
                        exec.warm_up()?;
                        // This worker's share of the reduce: its chunks'
                        // partials, combined as they come.
                        let mut acc = Vec::new();
                        for (chunk, set) in chunk_rx.iter() {
                            let ctx = run_ctx.chunk_json(pipeline, chunk.seq)?;
                            let report =
                                exec.run_on(set.clone(), &chunk, &ctx).and_then(|mut r| {
                                    if let Some(d) = deploys {
                                        d.committed(0, &chunk, &ctx, &r);
                                    }
                                    let partial = std::mem::take(&mut r.partial);
                                    if partial.is_empty() {
                                        return Ok(r);
                                    }
                                    if acc.is_empty() {
                                        acc = partial;
                                        return Ok(r);
                                    }
                                    match exec.combine_two(&acc, &partial) {
                                        Ok(total) => {
                                            acc = total;
                                            Ok(r)
                                        }
                                        // The two do not fit together (out of
                                        // memory, say). Fold this chunk's events
                                        // into the running accumulator instead:
                                        // an event that does not fit is its own
                                        // dead letter, and the last accumulator
                                        // that fit is kept, not the run lost.
                                        Err(e)
                                            if e.downcast_ref::<crate::runtime::StageError>()
                                                .is_some() =>
                                        {
                                            tracing::debug!(
                                                "folding chunk {} event by event: {e:#}",
                                                chunk.seq
                                            );
                                            let kept = acc.clone();
                                            let mut again = exec.run_from(
                                                set,
                                                &chunk,
                                                &ctx,
                                                std::mem::take(&mut acc),
                                            )?;
                                            acc = std::mem::take(&mut again.partial);
                                            if acc.is_empty() {
                                                acc = kept;
                                            }
                                            Ok(again)
                                        }
                                        Err(e) => Err(e),
                                    }
                                });
                            let fatal = report.is_err();
                            if done_tx.send(report).is_err() || fatal {
                                break;
                            }
                        }
                        Ok(acc)
                    })
                    .context("cannot start a worker thread")?;
                handles.push(handle);
            }
            drop(done_tx);
            drop(chunk_rx);

            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            let mut failed = None;
            // A quiet stream still closes its windows: the writer wakes up
            // every second to advance the clock.
            let tick = match &windows {
                Some(_) if self.streaming => Duration::from_secs(1),
                _ => Duration::from_secs(3600),
            };
            loop {
                let report = match done_rx.recv_timeout(tick) {
                    Ok(r) => r,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        if let Some(w) = windows.as_mut() {
                            let closed = w.book.tick(&mut w.open, crate::exec::now_ms())?;
                            write_windows(&closed, sink, &mut summary)?;
                            if !closed.is_empty() {
                                sink.flush().context("cannot write the output")?;
                            }
                        }
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                };
                let report = match report {
                    Ok(r) => r,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if !self.ordered {
                    self.write_chunk(&report, sink, dead, &mut summary, windows.as_mut())?;
                    let _ = credit_tx.send(());
                    progress(&summary);
                    continue;
                }
                pending.insert(report.seq, report);
                while let Some(report) = pending.remove(&next) {
                    self.write_chunk(&report, sink, dead, &mut summary, windows.as_mut())?;
                    next += 1;
                    let _ = credit_tx.send(());
                    progress(&summary);
                }
            }
            drop(credit_tx);
            if let Some(e) = failed {
                drop(done_rx);
                return Err(e);
            }
            let mut accs = Vec::new();
            for h in handles {
                accs.push(
                    h.join()
                        .map_err(|_| anyhow!("a worker thread panicked"))??,
                );
            }
            reader
                .join()
                .map_err(|_| anyhow!("the reader thread panicked"))??;
            if !pending.is_empty() {
                bail!(
                    "internal error: {} chunks were never written",
                    pending.len()
                );
            }
            Ok(accs)
        })?;

        if let Some(w) = windows.as_mut() {
            // The end of the input closes every window still open.
            let closed = w.book.finish(&mut w.open)?;
            write_windows(&closed, sink, &mut summary)?;
            if let Some(last) = summary.stages.last_mut() {
                last.2.events_out = summary.outputs;
            }
        } else if self.reduces() {
            summary.outputs = self.write_result(&live, result, sink)?;
            if let Some(last) = summary.stages.last_mut() {
                last.2.events_out = summary.outputs;
            }
        }
        sink.flush().with_context(|| cut_short(&summary))?;
        dead.flush()?;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    fn write_chunk(
        &self,
        report: &ChunkReport,
        sink: &mut dyn Write,
        dead: &mut DeadLetterSink,
        summary: &mut RunSummary,
        windows: Option<&mut Windows>,
    ) -> Result<()> {
        sink.write_all(&report.output)
            .with_context(|| cut_short(summary))?;
        summary.outputs += report.outputs();
        summary.events_read += report.events_read;
        for (stage, c) in report.set.stages.iter().zip(&report.counts) {
            // By name: a hot reload may add, remove or reorder stages.
            let total = match summary.stages.iter().position(|t| t.0 == stage.name()) {
                Some(j) => &mut summary.stages[j],
                None => {
                    let entry = (stage.name().to_string(), stage.kind, StageCounts::default());
                    summary.stages.push(entry);
                    summary.stages.last_mut().expect("just pushed")
                }
            };
            total.2.events_in += c.events_in;
            total.2.events_out += c.events_out;
            total.2.failed += c.failed;
            total.2.busy += c.busy;
        }
        // A windowed reduce's commit finds the chunk's late events: they
        // are written with its other dead letters, in index order.
        let mut late = Vec::new();
        if let (Some(w), Some(chunk)) = (windows, &report.windows) {
            // Combines and re-folds on the versions that ran the chunk.
            w.exec.switch_to(report.set.clone());
            let done = w
                .book
                .commit(&mut w.open, chunk, crate::exec::now_ms(), &mut w.exec)?;
            if let Some(last) = summary.stages.last_mut() {
                last.2.failed += done.dead.len() as u64;
            }
            write_windows(&done.closed, sink, summary)?;
            if w.streaming && !done.closed.is_empty() {
                sink.flush().context("cannot write the output")?;
            }
            late = done.dead;
        }
        let versions = Some(report.set.versions());
        let mut all: Vec<&super::DeadLetter> = report.dead.iter().chain(&late).collect();
        all.sort_by_key(|d| d.index);
        for d in all {
            if d.stage.is_none() {
                summary.rejected += 1;
            }
            dead.write(&self.name, d, versions)?;
        }
        summary.dead_letters = dead.count();
        Ok(())
    }

    /// Combines the workers' accumulators and writes the result: one line,
    /// or one `{"key":..,"value":..}` line per key, in key order.
    fn write_result(
        &self,
        live: &Arc<LiveStages>,
        accs: Vec<Vec<u8>>,
        sink: &mut dyn Write,
    ) -> Result<u64> {
        let mut exec = self.executor(live);
        let workers = accs.iter().filter(|a| !a.is_empty()).count();
        // Each worker kept its share within the limits (see the fold in
        // `run`); their shares may still not fit together, and which
        // events made them is no longer known: said, not half-written.
        let total = exec.combine(accs).with_context(|| {
            format!(
                "cannot combine the results of {workers} workers within the reduce's limits; raise its `limits.memory`, or run with `--workers 1`, which folds every event into one accumulator and makes each event that does not fit a dead letter"
            )
        })?;
        if !self.keyed() {
            sink.write_all(&total)?;
            sink.write_all(b"\n")?;
            return Ok(1);
        }
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&total)
            .with_context(|| {
                format!(
                    "keyed reduce `{}` returned a result that is not a JSON object",
                    exec.stages().last().map_or("", |s| s.name())
                )
            })?;
        let n = map.len() as u64;
        for (key, value) in map {
            serde_json::to_writer(
                &mut *sink,
                &serde_json::json!({ "key": key, "value": value }),
            )?;
            sink.write_all(b"\n")?;
        }
        Ok(n)
    }
}

/// `run`'s windows: the book, the open windows in memory, and an executor
/// of the writer's own for the combines and re-folds of commits.
struct Windows {
    book: WindowBook,
    open: MemoryWindows,
    exec: Executor,
    streaming: bool,
}

/// What a write error of the output says: how far the run got, so that
/// whoever reads it knows what the output holds (on a full disk, say).
fn cut_short(summary: &RunSummary) -> String {
    format!(
        "cannot write the output: it is cut short after at most {} lines, the outputs of the first {} events read (the last line may be partial); free room or write elsewhere, then run again",
        summary.outputs, summary.events_read
    )
}

/// Writes closed windows, one line each.
fn write_windows(closed: &[Closed], sink: &mut dyn Write, summary: &mut RunSummary) -> Result<()> {
    for c in closed {
        sink.write_all(&c.to_json())
            .context("cannot write the output")?;
        sink.write_all(b"\n").context("cannot write the output")?;
    }
    summary.outputs += closed.len() as u64;
    Ok(())
}

/// The runtime spec of manifest stage `st`. A stage crate directory is
/// built first (see [`crate::build::stage_artifact`]).
pub fn stage_spec(manifest: &Manifest, st: &StageSection) -> Result<StageSpec> {
    let doc = &manifest.doc;
    let mut plugin = manifest.resolve(st.plugin.get_ref());
    if plugin.is_dir() {
        plugin = crate::build::stage_artifact(&plugin)?;
    }
    Ok(StageSpec {
        name: st.name.get_ref().to_string(),
        kind: Some(*st.kind.get_ref()),
        plugin,
        params: match &st.params {
            Some(t) => serde_json::to_value(t.get_ref())
                .context("stage params must be representable as JSON")?,
            None => serde_json::json!({}),
        },
        key: st.key.as_ref().map(|k| k.get_ref().clone()),
        memory: st
            .limits
            .memory
            .or(doc.runtime.memory)
            .unwrap_or(DEFAULT_MEMORY)
            .0,
        timeout: st
            .limits
            .timeout
            .or(doc.runtime.timeout)
            .map_or(DEFAULT_TIMEOUT, |t| t.0),
        output: st.limits.output.unwrap_or(DEFAULT_OUTPUT).0,
        allow: st.allow.clone(),
        base_dir: manifest.dir.clone(),
        events: match st.events.or(doc.runtime.events).unwrap_or_default() {
            EventEncoding::Auto
                if doc.stages.len() == 1 && *st.kind.get_ref() != StageKind::Reduce =>
            {
                EventEncoding::Json
            }
            EventEncoding::Auto => EventEncoding::Msgpack,
            chosen => chosen,
        },
        window: st
            .window
            .as_ref()
            .map(|w| crate::exec::window::WindowSpec::from_section(w.get_ref())),
        budget: st.budget.as_ref().map(|b| b.budget()),
    })
}

/// Loads manifest stage `st`: compiled (or from cache), checked against the
/// ABI and against the kind the manifest declares. Errors point at the
/// manifest.
pub fn load_stage(
    manifest: &Manifest,
    st: &StageSection,
    runtime: &Runtime,
    linker: &wasmtime::Linker<StageState>,
) -> Result<Arc<Stage>> {
    let spec = stage_spec(manifest, st).map_err(|e| {
        let d = manifest.diagnostic_at(
            st.plugin.span(),
            format!("cannot load stage `{}`: {e:#}", st.name.get_ref()),
        );
        anyhow!(d.with_hint("`wasmpipe build <dir>` shows the whole build output"))
    })?;
    let stage = Stage::load(runtime, linker, spec).map_err(|e| match e.downcast::<KindMismatch>() {
        Ok(m) => {
            let hint = format!("set `kind = \"{}\"`, or point `plugin` at a {} stage", m.exported, m.declared);
            anyhow!(manifest.diagnostic_at(st.kind.span(), m.to_string()).with_hint(hint))
        }
        Err(e) => {
            let d = manifest.diagnostic_at(st.plugin.span(), format!("cannot load stage `{}`: {e:#}", st.name.get_ref()));
            anyhow!(d.with_hint("`wasmpipe inspect <plugin>` shows what a plugin exports; docs/abi.md lists what a stage must export"))
        }
    })?;
    // Configure one instance now, so that params the stage rejects stop the
    // pipeline before any input is read, pointing at the params.
    if let Err(e) = stage.instantiate(runtime) {
        let (span, message) = match (e.downcast_ref::<StageError>(), &st.params) {
            (Some(StageError::Failed { message, .. }), Some(p)) => (p.span(), message.clone()),
            (Some(StageError::Failed { message, .. }), None) => (st.name.span(), message.clone()),
            _ => (
                st.plugin.span(),
                format!("cannot start stage `{}`: {e:#}", st.name.get_ref()),
            ),
        };
        let hint = "the stage's params type decides which fields and values it accepts";
        bail!(manifest.diagnostic_at(span, message).with_hint(hint));
    }
    if let Some(key) = &st.key
        && stage.kind == StageKind::Reduce
        && stage.meta.keyed
    {
        let d = manifest.diagnostic_at(
            key.span(),
            format!(
                "stage `{}` computes its own group key, so `key` cannot be set",
                st.name.get_ref()
            ),
        );
        bail!(d.with_hint("remove `key` from the manifest"));
    }
    if let Some(w) = &st.window
        && stage
            .spec
            .window
            .as_ref()
            .is_some_and(|w| w.sessions().is_some())
        && stage.meta.keyed
    {
        let d = manifest.diagnostic_at(
            w.span(),
            format!(
                "session windows need the group key in the manifest, and stage `{}` computes its own",
                st.name.get_ref()
            ),
        );
        bail!(d.with_hint("a session is per key and the host must see each event's key: build the reduce without a key function and set `key = \"/field\"`"));
    }
    Ok(stage)
}

/// Worker threads by default: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
