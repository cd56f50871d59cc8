//! The chunk executor: runs one chunk through every stage of a pipeline on
//! one worker (one instance per stage, one call per stage per chunk) and
//! isolates failures so that only the events at fault become dead letters.
//!
//! When a call fails, the instance is discarded and the input is retried
//! on a new one, in pieces:
//! - a trap (a panic) with the guest's cursor naming the event: that event
//!   is dead-lettered and the rest retried together;
//! - a timeout or out-of-memory with a cursor: the events before it, it
//!   alone and the events after it are retried separately, so a slow event
//!   fails alone while a chunk that was merely too big for the limit is
//!   processed in smaller pieces;
//! - no cursor: the input is split in halves, down to single events.

use super::chunk::Chunk;
use super::encoding::{self, event_count, event_starts};
use super::window::book::Refolded;
use super::window::plan::{Group, plan};
use super::window::{Millis, WindowPart, WindowSpec, WindowedChunk, field};
use crate::runtime::{Encoding, Runtime, Stage, StageError, StageInstance};
use anyhow::Result;
use std::borrow::Cow;
use std::sync::Arc;

/// Events in, out and failed for one stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StageCounts {
    /// Events given to the stage.
    pub events_in: u64,
    /// Events the stage produced.
    pub events_out: u64,
    /// Events dead-lettered at this stage.
    pub failed: u64,
    /// Time spent in this stage's guest calls (retries included), summed
    /// over workers.
    pub busy: std::time::Duration,
}

/// A failed event, before it is written as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the event in its chunk (its origin).
    pub event: u32,
    /// The stage it failed in.
    pub stage: usize,
    /// Why.
    pub error: String,
    /// Whether a second try could succeed (a timeout: the machine may just
    /// have been busy), for services that retry before dead-lettering.
    pub transient: bool,
    /// How many of this stage's calls that held the event timed out,
    /// isolation's included: a timed-out event may be run several times
    /// before it is found alone, and its dead letter says how many.
    pub timeouts: u32,
}

/// What a chunk produced.
#[derive(Debug, Default)]
pub struct ChunkOutcome {
    /// Outputs of the last stage (NDJSON); empty when it is a reduce.
    pub output: Vec<u8>,
    /// Number of output events.
    pub output_count: u64,
    /// For each output line, the chunk event it came from.
    pub output_origin: Vec<u32>,
    /// Failed events, in the order found.
    pub failures: Vec<Failure>,
    /// Counts per stage.
    pub counts: Vec<StageCounts>,
    /// A windowed reduce's folds, by chunk position (see
    /// [`super::window`]); `None` for any other pipeline.
    pub windows: Option<WindowedChunk>,
}

/// The stages of a pipeline as run by one worker.
pub struct Chain {
    rt: Arc<Runtime>,
    stages: Vec<Arc<Stage>>,
    instances: Vec<Option<StageInstance>>,
    /// Instances of stage versions the chain ran before its last switch,
    /// newest first, at most [`SPARE_INSTANCES`]: a canary alternates
    /// between two versions chunk by chunk, and each switch back finds its
    /// instance here rather than creating one.
    spare: Vec<(Arc<Stage>, StageInstance)>,
    /// The running accumulator of a final reduce stage (JSON; empty = initial).
    acc: Vec<u8>,
    /// Whether the events a final reduce consumed are also the output.
    keep_reduce_input: bool,
}

/// Instances a chain keeps of versions it switched away from.
const SPARE_INSTANCES: usize = 2;

/// Where a stage's results accumulate while its input is isolated.
struct StageSink {
    out: Vec<u8>,
    origin: Vec<u32>,
    /// (event, why, transient)
    failures: Vec<(u32, String, bool)>,
    /// For each event, how many calls holding it timed out.
    timeouts: std::collections::HashMap<u32, u32>,
}

impl Chain {
    /// A chain over `stages`; instances are created on first use.
    pub fn new(rt: Arc<Runtime>, stages: Vec<Arc<Stage>>) -> Chain {
        let instances = stages.iter().map(|_| None).collect();
        Chain {
            rt,
            stages,
            instances,
            spare: Vec::new(),
            acc: Vec::new(),
            keep_reduce_input: false,
        }
    }

    /// Makes the events a final reduce folds in (less any it failed) the
    /// chain's output too, so that `serve` stores each event as well as the
    /// job's result.
    pub fn keep_reduce_input(&mut self, keep: bool) {
        self.keep_reduce_input = keep;
    }

    /// Creates every instance now, so configuration errors surface before
    /// any input is read.
    pub fn warm_up(&mut self) -> Result<()> {
        for s in 0..self.stages.len() {
            self.instance(s)?;
        }
        Ok(())
    }

    /// The stages.
    pub fn stages(&self) -> &[Arc<Stage>] {
        &self.stages
    }

    /// Runs the next chunks on `stages` (a hot reload, or a canary's
    /// version, between chunks). Instances of stages that did not change
    /// are kept, and so are, spare, a few of those replaced (see
    /// [`Chain::spare`]); others are created on first use. The reduce
    /// accumulator carries over.
    pub fn replace_stages(&mut self, stages: Vec<Arc<Stage>>) {
        let mut old: Vec<(Arc<Stage>, StageInstance)> = self
            .stages
            .drain(..)
            .zip(self.instances.drain(..))
            .filter_map(|(s, i)| Some((s, i?)))
            .collect();
        self.instances = stages
            .iter()
            .map(|s| {
                if let Some(i) = old.iter().position(|(o, _)| Arc::ptr_eq(o, s)) {
                    return Some(old.swap_remove(i).1);
                }
                let i = self.spare.iter().position(|(o, _)| Arc::ptr_eq(o, s))?;
                Some(self.spare.remove(i).1)
            })
            .collect();
        self.stages = stages;
        for o in old {
            self.spare.insert(0, o);
        }
        self.spare.truncate(SPARE_INSTANCES);
    }

    /// Takes the reduce accumulator (JSON), leaving the initial one.
    pub fn take_accumulator(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.acc)
    }

    /// Sets the reduce accumulator the next chunk folds into.
    pub fn set_accumulator(&mut self, acc: Vec<u8>) {
        self.acc = acc;
    }

    fn instance(&mut self, s: usize) -> Result<&mut StageInstance> {
        if self.instances[s].is_none() {
            self.instances[s] = Some(self.stages[s].instantiate(&self.rt)?);
        }
        Ok(self.instances[s]
            .as_mut()
            .expect("instance was just created"))
    }

    /// Runs `chunk` through every stage. `ctx` is the per-chunk context JSON
    /// handed to the guest. An `Err` means the pipeline cannot go on (an
    /// instance cannot even be created); event-level trouble is in
    /// [`ChunkOutcome::failures`].
    pub fn process(&mut self, chunk: &Chunk, ctx: &[u8]) -> Result<ChunkOutcome> {
        let mut outcome = ChunkOutcome {
            counts: vec![StageCounts::default(); self.stages.len().max(1)],
            ..Default::default()
        };
        // The chunk's events as frames when the first stage takes them. An
        // output frame equal to its event's frame here is written back as
        // the event's own line, so that a filter stays byte-exact.
        let mut origin: Vec<u32> = (0..chunk.len() as u32).collect();
        let first = self.stages.first().map_or(Encoding::Json, |s| s.encoding);
        let originals = (first == Encoding::MsgPack).then(|| {
            let (frames, kept) = reencode(
                Encoding::Json,
                first,
                &chunk.data,
                &origin,
                (0, self.stages[0].name()),
                &mut outcome.failures,
            );
            origin = kept.clone();
            (frames, kept)
        });
        outcome.counts[0].failed = outcome.failures.len() as u64;
        let mut input: Cow<[u8]> = match &originals {
            Some((frames, _)) => Cow::Borrowed(frames),
            None => Cow::Borrowed(&chunk.data),
        };
        let mut encoding = first;
        // The stage whose output `input` is (`None`: the chunk itself), to
        // blame for output that cannot be converted.
        let mut producer: Option<usize> = None;
        for s in 0..self.stages.len() {
            if origin.is_empty() {
                break;
            }
            let failed_before = outcome.failures.len();
            let want = self.stages[s].encoding;
            if want != encoding {
                // JSON that does not parse is the event's fault, reported by
                // the stage that needed it parsed (as the SDK would); a frame
                // that does not convert is its producer's.
                let blame = producer
                    .filter(|_| encoding == Encoding::MsgPack)
                    .unwrap_or(s);
                let (buf, kept) = reencode(
                    encoding,
                    want,
                    &input,
                    &origin,
                    (blame, self.stages[blame].name()),
                    &mut outcome.failures,
                );
                outcome.counts[blame].failed += (outcome.failures.len() - failed_before) as u64;
                input = Cow::Owned(buf);
                origin = kept;
                encoding = want;
            }
            outcome.counts[s].events_in =
                (origin.len() + outcome.failures.len() - failed_before) as u64;
            if s == 0 {
                outcome.counts[0].events_in = chunk.len() as u64;
            }
            let mut sink = StageSink {
                out: Vec::new(),
                origin: Vec::new(),
                failures: Vec::new(),
                timeouts: Default::default(),
            };
            let started = std::time::Instant::now();
            let stage = self.stages[s].clone();
            match &stage.spec.window {
                Some(spec) => {
                    let w = self.reduce_windows(s, spec, ctx, &input, &origin, &mut sink)?;
                    outcome.windows = Some(w);
                }
                None => self.run_isolated(s, ctx, &input, &origin, &mut sink)?,
            }
            outcome.counts[s].busy = started.elapsed();
            outcome.counts[s].failed += sink.failures.len() as u64;
            outcome
                .failures
                .extend(
                    sink.failures
                        .into_iter()
                        .map(|(event, error, transient)| Failure {
                            event,
                            stage: s,
                            error,
                            transient,
                            timeouts: sink.timeouts.get(&event).copied().unwrap_or(0),
                        }),
                );
            if self.stages[s].kind == crate::manifest::StageKind::Reduce {
                let failed: std::collections::HashSet<u32> = outcome
                    .failures
                    .iter()
                    .filter(|f| f.stage == s)
                    .map(|f| f.event)
                    .collect();
                if !self.keep_reduce_input {
                    origin.clear();
                    input = Cow::Owned(Vec::new());
                } else if !failed.is_empty() {
                    let starts = event_starts(encoding, &input);
                    let mut kept = Vec::with_capacity(input.len());
                    let mut kept_origin = Vec::with_capacity(origin.len());
                    for (i, &o) in origin.iter().enumerate() {
                        if !failed.contains(&o) {
                            let end = starts.get(i + 1).copied().unwrap_or(input.len());
                            kept.extend_from_slice(&input[starts[i]..end]);
                            kept_origin.push(o);
                        }
                    }
                    origin = kept_origin;
                    input = Cow::Owned(kept);
                }
                break;
            }
            outcome.counts[s].events_out = sink.origin.len() as u64;
            origin = sink.origin;
            input = Cow::Owned(sink.out);
            producer = Some(s);
        }
        if encoding == Encoding::MsgPack && !origin.is_empty() {
            let blame = producer.unwrap_or(0);
            let failed_before = outcome.failures.len();
            let (lines, kept) = match &originals {
                Some(originals) => to_json_keeping_originals(
                    chunk,
                    originals,
                    &input,
                    &origin,
                    (blame, self.stages[blame].name()),
                    &mut outcome.failures,
                ),
                None => reencode(
                    encoding,
                    Encoding::Json,
                    &input,
                    &origin,
                    (blame, self.stages[blame].name()),
                    &mut outcome.failures,
                ),
            };
            let lost = (outcome.failures.len() - failed_before) as u64;
            outcome.counts[blame].failed += lost;
            outcome.counts[blame].events_out =
                outcome.counts[blame].events_out.saturating_sub(lost);
            input = Cow::Owned(lines);
            origin = kept;
        }
        outcome.output_count = origin.len() as u64;
        outcome.output_origin = origin;
        outcome.output = input.into_owned();
        Ok(outcome)
    }

    /// Folds a windowed reduce's input: each event's time (and, for
    /// sessions, key) is read natively, then each window the chunk touches
    /// is one fold from the initial accumulator. Events with no time fail
    /// here; the book decides later which of the rest are late.
    fn reduce_windows(
        &mut self,
        s: usize,
        spec: &WindowSpec,
        ctx: &[u8],
        input: &[u8],
        origin: &[u32],
        sink: &mut StageSink,
    ) -> Result<WindowedChunk> {
        let stage = self.stages[s].clone();
        let enc = stage.encoding;
        let starts = event_starts(enc, input);
        let arrival = arrival_of(ctx);
        let key = match (spec.sessions(), &stage.spec.key) {
            (Some(_), Some(k)) => Some((k.as_str(), super::window::spec::pointer_path(k))),
            _ => None,
        };
        let mut events: Vec<&[u8]> = Vec::with_capacity(origin.len());
        let mut kept: Vec<u32> = Vec::with_capacity(origin.len());
        let mut times: Vec<Millis> = Vec::with_capacity(origin.len());
        let mut keys: Vec<String> = Vec::new();
        for (i, &o) in origin.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(input.len());
            let event = &input[starts[i]..end];
            let text = match enc {
                Encoding::Json => event.strip_suffix(b"\n").unwrap_or(event),
                Encoding::MsgPack => event,
            };
            let found = field::event_time(&spec.time, enc, text, arrival).and_then(|t| {
                let k = match &key {
                    Some((pointer, path)) => field::event_key(enc, text, pointer, path)?,
                    None => String::new(),
                };
                Ok((t, k))
            });
            match found {
                Ok((t, k)) => {
                    events.push(event);
                    kept.push(o);
                    times.push(t);
                    if spec.sessions().is_some() {
                        keys.push(k);
                    }
                }
                Err(why) => sink.failures.push((o, why, false)),
            }
        }
        let groups = plan(spec, &times, &keys);
        let parts = self.fold_groups(s, ctx, &events, &kept, &times, &keys, groups, sink)?;
        // A hopping window's event is folded once per window: it fails once.
        let mut seen = std::collections::HashSet::new();
        sink.failures.retain(|f| seen.insert(f.0));
        Ok(WindowedChunk {
            times: kept.iter().map(|&o| o as u64).zip(times).collect(),
            parts,
            ..WindowedChunk::default()
        })
    }

    /// Folds each group of `events` (positions) from the initial
    /// accumulator, one guest call per group. A part's members are
    /// `origin`s of the events that folded; failures go to `sink`.
    #[allow(clippy::too_many_arguments)]
    fn fold_groups(
        &mut self,
        s: usize,
        ctx: &[u8],
        events: &[&[u8]],
        origin: &[u32],
        times: &[Millis],
        keys: &[String],
        groups: Vec<Group>,
        sink: &mut StageSink,
    ) -> Result<Vec<WindowPart>> {
        let mut parts = Vec::with_capacity(groups.len());
        for (span, members) in groups {
            let mut input = Vec::new();
            let mut org = Vec::with_capacity(members.len());
            for &m in &members {
                input.extend_from_slice(events[m]);
                org.push(origin[m]);
            }
            self.acc = Vec::new();
            let before = sink.failures.len();
            self.run_isolated(s, ctx, &input, &org, sink)?;
            let partial = std::mem::take(&mut self.acc);
            let failed: std::collections::HashSet<u32> =
                sink.failures[before..].iter().map(|f| f.0).collect();
            let folded: Vec<usize> = members
                .into_iter()
                .filter(|&m| !failed.contains(&origin[m]))
                .collect();
            if folded.is_empty() {
                continue;
            }
            if folded.len() < org.len() {
                input.clear();
                for &m in &folded {
                    input.extend_from_slice(events[m]);
                }
            }
            parts.push(WindowPart {
                span,
                members: folded.iter().map(|&m| origin[m] as u64).collect(),
                times: folded.iter().map(|&m| times[m]).collect(),
                keys: if keys.is_empty() {
                    Vec::new()
                } else {
                    folded.iter().map(|&m| keys[m].clone()).collect()
                },
                input,
                partial,
            });
        }
        Ok(parts)
    }

    /// Folds the events of `input` (in the last stage's encoding) again,
    /// for a window book: into window `span`, or for sessions into the
    /// sessions they form. Members, and the failures' indices, are
    /// positions in `input`.
    pub fn refold_window(
        &mut self,
        ctx: &[u8],
        input: &[u8],
        times: &[Millis],
        keys: &[String],
        span: Option<(Millis, Millis)>,
    ) -> Result<Refolded> {
        let s = self.stages.len() - 1;
        let stage = self.stages[s].clone();
        let Some(spec) = &stage.spec.window else {
            anyhow::bail!("stage `{}` has no window", stage.name());
        };
        let starts = event_starts(self.stages[s].encoding, input);
        let events: Vec<&[u8]> = (0..starts.len())
            .map(|i| &input[starts[i]..starts.get(i + 1).copied().unwrap_or(input.len())])
            .collect();
        let origin: Vec<u32> = (0..events.len() as u32).collect();
        let groups = match span {
            Some(w) => vec![(Some(w), (0..events.len()).collect())],
            None => plan(spec, times, keys),
        };
        let mut sink = StageSink {
            out: Vec::new(),
            origin: Vec::new(),
            failures: Vec::new(),
            timeouts: Default::default(),
        };
        let parts = self.fold_groups(s, ctx, &events, &origin, times, keys, groups, &mut sink)?;
        let failed = sink.failures.into_iter().map(|(o, why, _)| (o as u64, why));
        Ok((parts, failed.collect()))
    }

    /// Runs stage `s` over `input`, retrying around failures until every
    /// event has either produced its outputs or been recorded as failed.
    fn run_isolated(
        &mut self,
        s: usize,
        ctx: &[u8],
        input: &[u8],
        origin: &[u32],
        sink: &mut StageSink,
    ) -> Result<()> {
        let mut input = Cow::Borrowed(input);
        let mut origin = Cow::Borrowed(origin);
        loop {
            let err = match self.call(s, ctx, &input, &origin, sink)? {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if err.is_transient() {
                for &o in origin.iter() {
                    *sink.timeouts.entry(o).or_default() += 1;
                }
            }
            if !err.poisons_instance() {
                // The guest refused the call as a whole: every event fails.
                let msg = err.to_string();
                sink.failures
                    .extend(origin.iter().map(|&o| (o, msg.clone(), err.is_transient())));
                return Ok(());
            }
            self.instances[s] = None;
            if err.is_transient() && origin.len() > 1 {
                // Each of these calls may take the whole time limit (10 s
                // by default): say what is going on rather than go quiet.
                tracing::warn!(
                    "{} on a call of {} events; running them again in smaller calls to find the slow one",
                    err.without_event(),
                    origin.len()
                );
            } else {
                tracing::debug!("isolating failure in {} events: {err}", origin.len());
            }
            if origin.len() == 1 {
                sink.failures.push((
                    origin[0],
                    err.without_event().to_string(),
                    err.is_transient(),
                ));
                return Ok(());
            }
            let starts = event_starts(self.stages[s].encoding, &input);
            let cursor = err
                .event()
                .map(|e| e as usize)
                .filter(|&e| e < origin.len());
            match (cursor, &err) {
                (Some(bad), StageError::Trap { .. }) => {
                    // A trap is the event's own doing (a panic, a bad
                    // access): drop it and retry the rest.
                    sink.failures.push((
                        origin[bad],
                        err.without_event().to_string(),
                        err.is_transient(),
                    ));
                    let end = starts.get(bad + 1).copied().unwrap_or(input.len());
                    let mut rest = Vec::with_capacity(input.len());
                    rest.extend_from_slice(&input[..starts[bad]]);
                    rest.extend_from_slice(&input[end..]);
                    let mut rest_origin = origin.to_vec();
                    rest_origin.remove(bad);
                    input = Cow::Owned(rest);
                    origin = Cow::Owned(rest_origin);
                }
                (Some(at), _) => {
                    // Time or memory ran out while on event `at`; it may be
                    // the culprit, or the chunk may simply be too big for
                    // the limit. Run the events before it, it alone, and
                    // the events after it separately: a slow event fails
                    // alone, and a merely large chunk gets smaller.
                    let end = starts.get(at + 1).copied().unwrap_or(input.len());
                    let parts = [
                        (0, starts[at], 0, at),
                        (starts[at], end, at, at + 1),
                        (end, input.len(), at + 1, origin.len()),
                    ];
                    for (from, to, o_from, o_to) in parts {
                        if o_from < o_to {
                            self.run_isolated(
                                s,
                                ctx,
                                &input[from..to],
                                &origin[o_from..o_to],
                                sink,
                            )?;
                        }
                    }
                    return Ok(());
                }
                (None, _) => {
                    let mid = origin.len() / 2;
                    let (a, b) = input.split_at(starts[mid]);
                    self.run_isolated(s, ctx, a, &origin[..mid], sink)?;
                    self.run_isolated(s, ctx, b, &origin[mid..], sink)?;
                    return Ok(());
                }
            }
        }
    }

    /// One guest call over `input`; on success its results are appended to
    /// `sink` (or, for a reduce, become the accumulator).
    fn call(
        &mut self,
        s: usize,
        ctx: &[u8],
        input: &[u8],
        origin: &[u32],
        sink: &mut StageSink,
    ) -> Result<Result<(), StageError>> {
        let stage = self.stages[s].clone();
        let is_reduce = stage.kind == crate::manifest::StageKind::Reduce;
        // Only a reduce consumes the accumulator; it is put back if the call fails.
        let acc = if is_reduce {
            std::mem::take(&mut self.acc)
        } else {
            Vec::new()
        };
        if self.instances[s].is_none() {
            self.instances[s] = Some(stage.instantiate(&self.rt)?);
        }
        let inst = self.instances[s]
            .as_mut()
            .expect("instance was just created");
        let res = if is_reduce {
            inst.reduce(ctx, &acc, input)
        } else {
            inst.process(ctx, input)
        };
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                if is_reduce {
                    self.acc = acc;
                }
                return Ok(Err(e));
            }
        };
        let failures_before = sink.failures.len();
        for (idx, msg) in out.errors() {
            match origin.get(idx as usize) {
                Some(&o) => sink.failures.push((o, msg, false)),
                None => {
                    let message = format!(
                        "error record names event {idx} of a {}-event input: {msg}",
                        origin.len()
                    );
                    sink.failures.truncate(failures_before);
                    if is_reduce {
                        self.acc = acc;
                    }
                    return Ok(Err(StageError::Abi {
                        stage: stage.name().to_string(),
                        message,
                    }));
                }
            }
        }
        if is_reduce {
            tracing::trace!(stage = stage.name(), acc_in = %String::from_utf8_lossy(&acc), acc_out = %String::from_utf8_lossy(out.out), "reduce");
            self.acc = out.out.to_vec();
            return Ok(Ok(()));
        }
        // Everything the guest returned is checked before any of it is
        // used: a bad origin found half-way would leave the lines before
        // it written and then written again when the input is retried.
        let outs: Vec<u32> = out.origins().collect();
        let checked = event_count(stage.encoding, out.out)
            .and_then(|n| check_origins(&outs, n, origin.len()));
        if let Err(message) = checked {
            sink.failures.truncate(failures_before);
            return Ok(Err(StageError::Abi {
                stage: stage.name().to_string(),
                message,
            }));
        }
        if stage.trusted_output {
            sink.origin.extend(outs.iter().map(|&o| origin[o as usize]));
            sink.out.extend_from_slice(out.out);
            return Ok(Ok(()));
        }
        if stage.encoding == Encoding::MsgPack {
            // A stage not built by the SDK: check each frame converts.
            let starts = event_starts(Encoding::MsgPack, out.out);
            let mut scratch = Vec::new();
            for (i, o) in outs.into_iter().enumerate() {
                let g = origin[o as usize];
                let end = starts.get(i + 1).copied().unwrap_or(out.out.len());
                let frame = &out.out[starts[i]..end];
                scratch.clear();
                match encoding::msgpack_to_json(encoding::frame_value(frame), &mut scratch) {
                    Ok(()) => {
                        sink.out.extend_from_slice(frame);
                        sink.origin.push(g);
                    }
                    Err(why) => sink.failures.push((
                        g,
                        format!(
                            "stage `{}` produced output that is not valid MessagePack: {why}",
                            stage.name()
                        ),
                        false,
                    )),
                }
            }
            return Ok(Ok(()));
        }
        // A stage not built by the SDK: check each output is one JSON value.
        for (line, o) in out.out.split(|&b| b == b'\n').zip(outs) {
            let g = origin[o as usize];
            // `IgnoredAny` skips strings without decoding them: UTF-8 is
            // checked apart, so that no sink ever gets bytes that are not.
            let parsed = std::str::from_utf8(line)
                .map_err(|e| format!("is not valid UTF-8 (byte {})", e.valid_up_to()))
                .and_then(|text| {
                    serde_json::from_str::<serde::de::IgnoredAny>(text)
                        .map_err(|e| format!("is not valid JSON: {e}"))
                });
            match parsed {
                Ok(_) => {
                    sink.out.extend_from_slice(line);
                    sink.out.push(b'\n');
                    sink.origin.push(g);
                }
                Err(why) => sink.failures.push((
                    g,
                    format!("stage `{}` produced output that {why}", stage.name()),
                    false,
                )),
            }
        }
        Ok(Ok(()))
    }

    /// The initial accumulator of the final reduce stage (its fold of no
    /// events).
    pub fn initial_accumulator(&mut self) -> Result<Vec<u8>> {
        let s = self.stages.len() - 1;
        let inst = self.instance(s)?;
        Ok(inst.reduce(b"{}", b"", b"").map(|o| o.out.to_vec())?)
    }

    /// Combines two accumulators with the final reduce stage.
    pub fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
        let s = self.stages.len() - 1;
        let inst = self.instance(s)?;
        let res = inst.combine(a, b).map(|o| o.out.to_vec());
        match res {
            Ok(v) => Ok(v),
            Err(e) => {
                self.instances[s] = None;
                Err(e.into())
            }
        }
    }
}

/// Checks a call's origin table against its output and input: one entry
/// per output line, each naming an input event, never going backwards
/// (docs/abi.md), so that a later failure is blamed on the right event.
/// The time a chunk was taken up (its context's `received_at`), for
/// `time = "arrival"`; the wall clock if the context has none.
fn arrival_of(ctx: &[u8]) -> Millis {
    #[derive(serde::Deserialize)]
    struct Ctx {
        received_at: Option<String>,
    }
    serde_json::from_slice::<Ctx>(ctx)
        .ok()
        .and_then(|c| c.received_at)
        .and_then(|t| field::parse_rfc3339(&t))
        .unwrap_or_else(crate::exec::now_ms)
}

fn check_origins(origins: &[u32], lines: usize, inputs: usize) -> Result<(), String> {
    if origins.len() != lines {
        return Err(format!(
            "{lines} output lines but {} origin entries",
            origins.len()
        ));
    }
    let mut last = 0;
    for (i, &o) in origins.iter().enumerate() {
        if o as usize >= inputs {
            return Err(format!("origin {o} is outside the {inputs}-event input"));
        }
        if o < last {
            return Err(format!(
                "origin table goes backwards at output {i} (event {o} after event {last})"
            ));
        }
        last = o;
    }
    Ok(())
}

/// Converts the events of `input` (whose chunk indices are `origin`) from
/// `from` to `to`. An event that does not convert becomes a failure of
/// stage `blame`; returns the converted buffer and the kept origins.
fn reencode(
    from: Encoding,
    to: Encoding,
    input: &[u8],
    origin: &[u32],
    (blame, name): (usize, &str),
    failures: &mut Vec<Failure>,
) -> (Vec<u8>, Vec<u32>) {
    let mut out = Vec::with_capacity(input.len() + input.len() / 4);
    let failed = encoding::convert(from, to, input, &mut out);
    if failed.is_empty() {
        return (out, origin.to_vec());
    }
    let mut kept = Vec::with_capacity(origin.len() - failed.len());
    let mut bad = failed.into_iter().peekable();
    for (i, &o) in origin.iter().enumerate() {
        match bad.next_if(|(at, _)| *at == i) {
            Some((_, error)) => failures.push(Failure {
                event: o,
                stage: blame,
                error: conversion_error(to, name, error),
                transient: false,
                timeouts: 0,
            }),
            None => kept.push(o),
        }
    }
    (out, kept)
}

/// Why an event could not be converted, as its dead letter says it.
fn conversion_error(to: Encoding, stage: &str, error: String) -> String {
    match to {
        // The host parsed the event for the stage: the words are the SDK's.
        Encoding::MsgPack => error,
        Encoding::Json => {
            format!("stage `{stage}` produced output that cannot be written as JSON: {error}")
        }
    }
}

/// The final outputs, as frames, back to JSON lines. `originals` holds the
/// chunk's events as frames, with the chunk index of each; an output frame
/// equal to its event's becomes that event's original line.
fn to_json_keeping_originals(
    chunk: &Chunk,
    (originals, indices): &(Vec<u8>, Vec<u32>),
    input: &[u8],
    origin: &[u32],
    (blame, name): (usize, &str),
    failures: &mut Vec<Failure>,
) -> (Vec<u8>, Vec<u32>) {
    let mut by_event: Vec<Option<&[u8]>> = vec![None; chunk.len()];
    let starts = event_starts(Encoding::MsgPack, originals);
    for (i, (&at, &e)) in starts.iter().zip(indices).enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(originals.len());
        by_event[e as usize] = Some(&originals[at..end]);
    }
    let out_starts = event_starts(Encoding::MsgPack, input);
    let mut out = Vec::with_capacity(input.len() + input.len() / 4);
    let mut kept = Vec::with_capacity(origin.len());
    for (i, &o) in origin.iter().enumerate() {
        let end = out_starts.get(i + 1).copied().unwrap_or(input.len());
        let frame = &input[out_starts[i]..end];
        if by_event[o as usize] == Some(frame) {
            out.extend_from_slice(chunk.event(o as usize));
            out.push(b'\n');
            kept.push(o);
            continue;
        }
        match encoding::msgpack_to_json(encoding::frame_value(frame), &mut out) {
            Ok(()) => {
                out.push(b'\n');
                kept.push(o);
            }
            Err(error) => failures.push(Failure {
                event: o,
                stage: blame,
                error: conversion_error(Encoding::Json, name, error),
                transient: false,
                timeouts: 0,
            }),
        }
    }
    (out, kept)
}

#[cfg(test)]
mod tests {
    //! The isolation algorithm against hand-written guests (`tests/fixtures`).
    use super::*;
    use std::time::Duration;

    fn chain_of(fixture: &str, timeout: Duration) -> Chain {
        let (rt, stage) = crate::runtime::fixture_stage(fixture, timeout);
        Chain::new(rt, vec![stage])
    }

    fn chunk(n: usize) -> Chunk {
        let mut c = Chunk::default();
        for i in 0..n {
            c.push(format!("{{\"i\":{i}}}").as_bytes(), i as u64 + 1);
        }
        c
    }

    #[test]
    fn a_clean_chunk_is_one_call_with_every_origin() {
        let mut chain = chain_of("echo.wat", Duration::from_secs(5));
        let c = chunk(5);
        let out = chain.process(&c, b"{}").unwrap();
        assert_eq!(out.output, c.data);
        assert_eq!(out.output_origin, [0, 1, 2, 3, 4]);
        assert!(out.failures.is_empty());
        assert_eq!(out.counts[0].events_out, 5);
    }

    #[test]
    fn a_call_that_never_ends_fails_each_event_alone_as_transient() {
        let mut chain = chain_of("endless.wat", Duration::from_millis(30));
        let out = chain.process(&chunk(3), b"{}").unwrap();
        assert!(out.output.is_empty());
        let mut failed: Vec<u32> = out.failures.iter().map(|f| f.event).collect();
        failed.sort_unstable();
        assert_eq!(failed, [0, 1, 2], "halved down to single events");
        assert!(
            out.failures.iter().all(|f| f.transient),
            "{:?}",
            out.failures
        );
        assert_eq!(out.failures[0].error, "stage `s` timed out after 30ms");
    }

    #[test]
    fn output_that_is_not_json_fails_its_own_event_only() {
        let mut chain = chain_of("badjson.wat", Duration::from_secs(5));
        let out = chain.process(&chunk(2), b"{}").unwrap();
        let failed: Vec<(u32, bool)> = out
            .failures
            .iter()
            .map(|f| (f.event, f.transient))
            .collect();
        assert_eq!(failed, [(0, false), (1, false)]);
        assert!(
            out.failures[0].error.contains("not valid JSON"),
            "{:?}",
            out.failures
        );
    }

    #[test]
    fn origin_tables_are_checked_whole() {
        assert_eq!(check_origins(&[0, 0, 2], 3, 3), Ok(()));
        assert!(
            check_origins(&[0, 3], 2, 3)
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            check_origins(&[1, 0], 2, 3)
                .unwrap_err()
                .contains("backwards")
        );
        assert!(
            check_origins(&[0], 2, 3)
                .unwrap_err()
                .contains("2 output lines")
        );
    }
}
