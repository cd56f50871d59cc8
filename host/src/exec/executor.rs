//! The executor: the one place a chunk is run, whichever mode feeds it.
//! `run`'s worker threads, `serve`'s embedded workers and `wasmpipe
//! worker`'s slots each own one [`Executor`] and differ only in where the
//! chunk came from and where its [`ChunkReport`] goes.
//!
//! What the executor owns, so that no mode grows its own copy:
//! - **The stage set.** A hot reload publishes a new [`StageSet`]; the
//!   executor switches to it between chunks, never inside one, so every
//!   chunk runs on one version of each stage and its report says which.
//! - **Retries.** An event whose stage timed out is run again, with the
//!   chunk's other timed-out events, up to [`Retries::times`] more times
//!   with a doubling pause (the machine may just have been busy), each
//!   announced by a warning; only then is it a dead letter, saying how many
//!   calls holding it timed out (isolating it takes some too). Other
//!   failures are the event's own doing and are not retried.
//! - **Lineage.** With `[runtime] lineage = true`, each output object gets
//!   `"_versions"`: the same 12-hex versions the dead letters and stores
//!   record.
//! - **Partials.** A final reduce folds each chunk from its initial
//!   accumulator, so a chunk's partial depends on its events alone;
//!   [`Executor::combine`] merges partials, in order, into a result.

use super::chain::{Chain, Failure, StageCounts};
use super::chunk::Chunk;
use super::dead_letter::DeadLetter;
use super::window::book::Refolded;
use super::window::{Fold, WindowPart, WindowedChunk};
use crate::runtime::stages::{LiveStages, StageSet};
use crate::runtime::{Runtime, Stage};
use anyhow::Result;
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::manifest::Retries;

/// What every chunk is run with, from the manifest.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Add `"_versions"` to output objects (`[runtime] lineage`).
    pub lineage: bool,
    /// Timeout retries.
    pub retries: Retries,
    /// Also output the events a final reduce folds in (`serve` stores them).
    pub keep_reduce_input: bool,
}

/// Everything one chunk came to.
#[derive(Debug)]
pub struct ChunkReport {
    /// The chunk's position in its source or job (see [`Chunk::seq`]).
    pub seq: u64,
    /// Output events, NDJSON, lineage spliced in when it is on; empty for
    /// a reduce unless its input is kept.
    pub output: Vec<u8>,
    /// For each output line, the index in the source or job of the event
    /// it came from.
    pub origin: Vec<u64>,
    /// Failed events (the source's refusals among them), in index order.
    pub dead: Vec<DeadLetter>,
    /// The chunk's reduce partial (empty: no event reached the reduce).
    pub partial: Vec<u8>,
    /// Events in, out and failed per stage of [`ChunkReport::set`].
    pub counts: Vec<StageCounts>,
    /// Events read: those the stages saw and those the source refused.
    pub events_read: u64,
    /// Timeout retries made.
    pub retries: u64,
    /// The stage set, and so the versions, that ran the chunk.
    pub set: Arc<StageSet>,
    /// A windowed reduce's folds, for a [`super::window::WindowBook`] to
    /// commit; `None` for any other pipeline.
    pub windows: Option<WindowedChunk>,
}

impl ChunkReport {
    /// Output events.
    pub fn outputs(&self) -> u64 {
        self.origin.len() as u64
    }

    /// The versions that ran the chunk, as stored with it.
    pub fn versions(&self) -> &str {
        self.set.versions().get()
    }
}

/// One worker's executor: a [`Chain`] and the policy around it.
pub struct Executor {
    chain: Chain,
    live: Arc<LiveStages>,
    set: Arc<StageSet>,
    policy: Policy,
}

impl Executor {
    /// An executor running `live`'s current stage set, and its successors.
    pub fn new(runtime: Arc<Runtime>, live: Arc<LiveStages>, policy: Policy) -> Executor {
        let set = live.current();
        let mut chain = Chain::new(runtime, set.stages.clone());
        chain.keep_reduce_input(policy.keep_reduce_input);
        Executor {
            chain,
            live,
            set,
            policy,
        }
    }

    /// Creates every stage instance now, so that configuration errors
    /// surface before any input is read.
    pub fn warm_up(&mut self) -> Result<()> {
        self.chain.warm_up()
    }

    /// The stages of the set the last chunk ran on.
    pub fn stages(&self) -> &[Arc<Stage>] {
        &self.set.stages
    }

    /// Runs `chunk` on the current stage set. `ctx` is the chunk's context
    /// JSON (see [`super::RunContext::chunk_json`]).
    pub fn run(&mut self, chunk: &Chunk, ctx: &[u8]) -> Result<ChunkReport> {
        let set = self.live.current();
        self.run_on(set, chunk, ctx)
    }

    /// A report of `chunk` that makes every event a dead letter of stage
    /// `stage` saying `error`, running nothing: for a chunk that must not
    /// run on any version but one this process no longer has.
    pub fn refuse(&mut self, chunk: &Chunk, stage: usize, error: &str) -> ChunkReport {
        self.switch_to(self.live.current());
        let failures: Vec<Failure> = (0..chunk.len() as u32)
            .map(|event| Failure {
                event,
                stage,
                error: error.to_string(),
                transient: false,
                timeouts: 0,
            })
            .collect();
        let mut counts = vec![StageCounts::default(); self.set.stages.len()];
        if let Some(c) = counts.get_mut(stage) {
            c.events_in = chunk.len() as u64;
            c.failed = chunk.len() as u64;
        }
        let dead = self.dead_letters(chunk, &failures, &HashMap::new(), &HashMap::new());
        self.report_of_dead(chunk, dead, counts)
    }

    /// A report of `chunk` that sets every event aside as a dead letter
    /// of `by` (not a stage: the worker that saw it kill its runs),
    /// saying `error` after `attempts` attempts, running nothing.
    pub fn set_aside(
        &mut self,
        chunk: &Chunk,
        by: &str,
        error: &str,
        attempts: u32,
    ) -> ChunkReport {
        self.switch_to(self.live.current());
        let dead = (0..chunk.len())
            .map(|i| DeadLetter {
                stage: Some(by.to_string()),
                error: error.to_string(),
                index: chunk.index(i),
                line: chunk.lines[i],
                attempts,
                event: chunk.event(i).to_vec(),
            })
            .collect();
        self.report_of_dead(chunk, dead, Vec::new())
    }

    fn report_of_dead(
        &self,
        chunk: &Chunk,
        dead: Vec<DeadLetter>,
        counts: Vec<StageCounts>,
    ) -> ChunkReport {
        ChunkReport {
            seq: chunk.seq,
            output: Vec::new(),
            origin: Vec::new(),
            dead,
            partial: Vec::new(),
            counts,
            events_read: chunk.events_read(),
            retries: 0,
            set: self.set.clone(),
            windows: None,
        }
    }

    /// Runs `chunk` on `set`, which `run` stamps on each chunk as it is
    /// read so that versions change in input order. An `Err` means the
    /// chunk could not be run at all (an instance cannot be created);
    /// trouble with events is in the report's dead letters.
    pub fn run_on(&mut self, set: Arc<StageSet>, chunk: &Chunk, ctx: &[u8]) -> Result<ChunkReport> {
        self.run_from(set, chunk, ctx, Vec::new())
    }

    /// [`Executor::run_on`] with a final reduce folding into `acc` (JSON;
    /// empty: the initial accumulator) rather than from its initial one:
    /// the report's `partial` is then `acc` with the chunk folded in, and
    /// an event that does not fit (out of memory) is a dead letter while
    /// the accumulator stays as it was before it.
    pub fn run_from(
        &mut self,
        set: Arc<StageSet>,
        chunk: &Chunk,
        ctx: &[u8],
        acc: Vec<u8>,
    ) -> Result<ChunkReport> {
        self.switch_to(set);
        // Bytes that are not UTF-8 reach no stage (and so no sink): those
        // events are the source's refusals.
        let screened = chunk.screened();
        let chunk = screened.as_ref().unwrap_or(chunk);
        self.chain.set_accumulator(acc);
        let first = self.chain.process(chunk, ctx)?;
        let mut counts = first.counts;
        let mut output = first.output;
        let mut origin: Vec<u32> = first.output_origin;
        let mut failures = first.failures;
        let mut windows = first.windows;
        let mut attempts: HashMap<u32, u32> = HashMap::new();
        // Calls that timed out holding each event, over every round.
        let mut timeouts: HashMap<u32, u32> = HashMap::new();
        let mut retried = 0u64;
        let retries = self.policy.retries;
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
            let pause = retries.pause(attempt);
            self.warn_retry(chunk, &failures, pause, attempt);
            for f in failures.iter().filter(|f| f.transient) {
                *timeouts.entry(f.event).or_default() += f.timeouts;
            }
            failures.retain(|f| !f.transient);
            std::thread::sleep(pause);
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
            // The reduce folds the retried events into what it has so far.
            let o = self.chain.process(&sub, ctx)?;
            for (total, c) in counts.iter_mut().zip(&o.counts) {
                total.events_out += c.events_out;
                total.failed += c.failed;
                total.busy += c.busy;
            }
            output.extend_from_slice(&o.output);
            origin.extend(o.output_origin.iter().map(|&k| again[k as usize]));
            failures.extend(o.failures.into_iter().map(|f| Failure {
                event: again[f.event as usize],
                ..f
            }));
            if let (Some(w), Some(more)) = (windows.as_mut(), o.windows) {
                let at = |k: u64| again[k as usize] as u64;
                w.times
                    .extend(more.times.into_iter().map(|(k, t)| (at(k), t)));
                w.parts.extend(more.parts.into_iter().map(|mut p| {
                    p.members.iter_mut().for_each(|m| *m = at(*m));
                    p
                }));
            }
        }
        // A windowed reduce's events that failed (in the fold, or in every
        // retry) are dead letters already, not late ones: only the events
        // folded somewhere take part in the watermark. A retried event
        // appears once.
        if let Some(w) = windows.as_mut() {
            let failed: std::collections::HashSet<u32> = failures.iter().map(|f| f.event).collect();
            w.times.retain(|&(k, _)| !failed.contains(&(k as u32)));
            w.times.sort_by_key(|&(k, _)| k);
            w.times.dedup_by_key(|t| t.0);
        }
        // Events that failed once and then succeeded are not failures.
        for (s, c) in counts.iter_mut().enumerate() {
            c.failed = failures.iter().filter(|f| f.stage == s).count() as u64;
        }
        if self.policy.lineage {
            self.set.splice_lineage(&mut output);
        }
        let partial = self.chain.take_accumulator();
        let dead = self.dead_letters(chunk, &failures, &attempts, &timeouts);
        let windows = windows.map(|w| self.windowed(chunk, ctx, w));
        Ok(ChunkReport {
            seq: chunk.seq,
            output,
            origin: origin.iter().map(|&o| chunk.index(o as usize)).collect(),
            dead,
            partial,
            counts,
            events_read: chunk.events_read(),
            retries: retried,
            set: self.set.clone(),
            windows,
        })
    }

    /// A windowed reduce's share of `chunk`, by index in the source or job,
    /// with what each event's dead letter would say were it late.
    fn windowed(&self, chunk: &Chunk, ctx: &[u8], mut w: WindowedChunk) -> WindowedChunk {
        w.times.sort_by_key(|&(k, _)| k);
        let stage = self.set.stages.last().map(|s| s.name().to_string());
        w.events = w
            .times
            .iter()
            .map(|&(k, _)| DeadLetter {
                stage: stage.clone(),
                error: String::new(),
                index: chunk.index(k as usize),
                line: chunk.lines[k as usize],
                attempts: 1,
                event: chunk.event(k as usize).to_vec(),
            })
            .collect();
        for (k, _) in &mut w.times {
            *k = chunk.index(*k as usize);
        }
        for p in &mut w.parts {
            p.members
                .iter_mut()
                .for_each(|m| *m = chunk.index(*m as usize));
        }
        w.ctx = ctx.to_vec();
        w
    }

    /// Combines two accumulators with the final reduce's `combine`.
    pub fn combine_two(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
        self.chain.combine(a, b)
    }

    /// Combines non-empty partials, in order, with the final reduce's
    /// `combine`; with none, the result is its initial accumulator.
    pub fn combine(&mut self, partials: impl IntoIterator<Item = Vec<u8>>) -> Result<Vec<u8>> {
        let mut it = partials.into_iter().filter(|p| !p.is_empty());
        match it.next() {
            None => self.chain.initial_accumulator(),
            Some(mut total) => {
                for p in it {
                    total = self.chain.combine(&total, &p)?;
                }
                Ok(total)
            }
        }
    }

    /// Runs the next calls on `set`. Instances of stages that did not
    /// change are kept (see [`Chain::replace_stages`]).
    pub fn switch_to(&mut self, set: Arc<StageSet>) {
        if set.generation != self.set.generation {
            self.chain.replace_stages(set.stages.clone());
            self.set = set;
        }
    }

    /// Says, for each stage whose calls timed out on some of `chunk`'s
    /// events, that they run again after `pause`: a retry can take the
    /// stage's whole time limit again, and a default limit of 10 s over
    /// a few retries is too long to spend without a word.
    fn warn_retry(
        &self,
        chunk: &Chunk,
        failures: &[Failure],
        pause: std::time::Duration,
        attempt: u32,
    ) {
        let mut by_stage: std::collections::BTreeMap<usize, Vec<&Failure>> = Default::default();
        for f in failures.iter().filter(|f| f.transient) {
            by_stage.entry(f.stage).or_default().push(f);
        }
        for fs in by_stage.values() {
            let mut lines: Vec<u64> = fs.iter().map(|f| chunk.lines[f.event as usize]).collect();
            lines.sort_unstable();
            lines.dedup();
            let (events, them) = match lines.len() {
                1 => (format!("the event on line {}", lines[0]), "it"),
                n if n <= 3 => (
                    format!(
                        "the events on lines {}",
                        lines
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "them",
                ),
                n => (
                    format!("{n} events (lines {}, {} ...)", lines[0], lines[1]),
                    "them",
                ),
            };
            tracing::warn!(
                "{} on {events}; running {them} again in {} (retry {attempt} of {}, `[runtime] retries`)",
                fs[0].error,
                crate::manifest::DurationSpec(pause),
                self.policy.retries.times
            );
        }
    }

    /// The chunk's dead letters, the source's refusals among them, in
    /// index order whichever stage failed them. `attempts` is the round
    /// (1-based) an event last ran in, when it was retried; `timeouts`, the
    /// calls holding it that timed out in the rounds before its last.
    fn dead_letters(
        &self,
        chunk: &Chunk,
        failures: &[Failure],
        attempts: &HashMap<u32, u32>,
        timeouts: &HashMap<u32, u32>,
    ) -> Vec<DeadLetter> {
        let stages = &self.set.stages;
        let mut dead: Vec<DeadLetter> = chunk
            .rejects
            .iter()
            .map(|r| DeadLetter {
                stage: None,
                error: r.error.clone(),
                index: r.index,
                line: r.line,
                attempts: 1,
                event: r.preview.clone(),
            })
            .collect();
        dead.extend(failures.iter().map(|f| {
            let i = f.event as usize;
            // A timed-out event ran in every call that timed out holding
            // it: the chunk's, isolation's and the retries'. Anything else
            // failed on its own in the last round it ran in.
            let tries = if f.transient {
                (timeouts.get(&f.event).copied().unwrap_or(0) + f.timeouts).max(1)
            } else {
                attempts.get(&f.event).copied().unwrap_or(1)
            };
            DeadLetter {
                stage: Some(stages[f.stage].name().to_string()),
                error: if f.transient && tries > 1 {
                    format!("{} (after {tries} attempts)", f.error)
                } else {
                    f.error.clone()
                },
                index: chunk.index(i),
                line: chunk.lines[i],
                attempts: tries,
                event: chunk.event(i).to_vec(),
            }
        }));
        dead.sort_by_key(|d| d.index);
        dead
    }
}

/// The guest calls of a window commit, on this executor's reduce.
impl Fold for Executor {
    fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
        self.chain.combine(a, b)
    }

    fn refold(&mut self, ctx: &[u8], part: &WindowPart, keep: &[bool]) -> Result<Refolded> {
        let s = self.set.stages.len() - 1;
        let starts = super::encoding::event_starts(self.set.stages[s].encoding, &part.input);
        let pick: Vec<usize> = (0..part.members.len()).filter(|&i| keep[i]).collect();
        let mut input = Vec::new();
        for &i in &pick {
            let end = starts.get(i + 1).copied().unwrap_or(part.input.len());
            input.extend_from_slice(&part.input[starts[i]..end]);
        }
        let times: Vec<_> = pick.iter().map(|&i| part.times[i]).collect();
        let keys: Vec<_> = if part.keys.is_empty() {
            Vec::new()
        } else {
            pick.iter().map(|&i| part.keys[i].clone()).collect()
        };
        let (mut parts, failed) = self
            .chain
            .refold_window(ctx, &input, &times, &keys, part.span)?;
        let index = |k: u64| part.members[pick[k as usize]];
        for p in &mut parts {
            p.members.iter_mut().for_each(|m| *m = index(*m));
        }
        let failed = failed.into_iter().map(|(k, why)| (index(k), why)).collect();
        Ok((parts, failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An executor of the hand-written stage `fixture` (`tests/fixtures`),
    /// retrying a timed-out event `times` times.
    fn executor_of(fixture: &str, timeout: Duration, times: u32) -> Executor {
        let (rt, stage) = crate::runtime::fixture_stage(fixture, timeout);
        let policy = Policy {
            lineage: false,
            retries: Retries {
                times,
                backoff: Duration::from_millis(1),
            },
            keep_reduce_input: false,
        };
        Executor::new(rt, Arc::new(LiveStages::new(vec![stage])), policy)
    }

    #[test]
    fn a_retried_event_is_merged_back_by_origin_and_dead_letters_count_its_attempts() {
        let mut exec = executor_of("stall.wat", Duration::from_millis(50), 2);
        let mut chunk = Chunk {
            seq: 7,
            first_index: 100,
            ..Chunk::default()
        };
        for (i, ev) in [r#"{"i":0}"#, r#"{"i":"!"}"#, r#"{"i":2}"#, r#"{"i":3}"#]
            .iter()
            .enumerate()
        {
            chunk.push(ev.as_bytes(), i as u64 + 1);
        }
        let r = exec.run(&chunk, b"{}").unwrap();
        assert_eq!(r.output, b"{\"i\":0}\n{\"i\":2}\n{\"i\":3}\n");
        assert_eq!(
            r.origin,
            [100, 102, 103],
            "outputs keep their events' indices"
        );
        assert_eq!(
            r.retries, 2,
            "only the event that timed out is retried, twice"
        );
        assert_eq!(r.dead.len(), 1, "{:?}", r.dead);
        let d = &r.dead[0];
        // With no cursor, isolation halves the chunk: the stalling event
        // times out in the calls of all four, of two, and of itself, then
        // in each of the two retries.
        assert_eq!((d.index, d.line, d.attempts), (101, 2, 5));
        assert_eq!(d.stage.as_deref(), Some("s"));
        assert_eq!(d.error, "stage `s` timed out after 50ms (after 5 attempts)");
        assert_eq!(d.event, br#"{"i":"!"}"#);
        assert_eq!(r.counts[0].failed, 1, "counted once, not once per attempt");
        assert_eq!(r.counts[0].events_out, 3);
        assert_eq!(r.seq, 7);
    }

    #[test]
    fn without_retries_a_timeout_is_a_dead_letter_at_once() {
        let mut exec = executor_of("stall.wat", Duration::from_millis(50), 0);
        let mut alone = Chunk::default();
        alone.push(br#"{"i":"!"}"#, 1);
        let r = exec.run(&alone, b"{}").unwrap();
        assert_eq!(
            (r.dead[0].attempts, r.dead[0].error.as_str()),
            (1, "stage `s` timed out after 50ms")
        );
        let mut chunk = Chunk::default();
        chunk.push(br#"{"i":"!"}"#, 1);
        chunk.push(br#"{"i":1}"#, 2);
        let r = exec.run(&chunk, b"{}").unwrap();
        assert_eq!(r.origin, [1]);
        assert_eq!(r.retries, 0);
        assert_eq!(
            (
                r.dead[0].index,
                r.dead[0].attempts,
                r.dead[0].error.as_str()
            ),
            (0, 2, "stage `s` timed out after 50ms (after 2 attempts)"),
            "isolation ran it twice: with its neighbour, then alone"
        );
    }

    #[test]
    fn the_pause_doubles_from_the_backoff_and_is_capped() {
        let r = Retries {
            times: 5,
            backoff: Duration::from_millis(100),
        };
        let pauses: Vec<u128> = (1..=4).map(|a| r.pause(a).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800]);
        assert_eq!(r.pause(40), Duration::from_secs(60));
        let none = Retries {
            times: 1,
            backoff: Duration::ZERO,
        };
        assert_eq!(none.pause(3), Duration::ZERO);
    }
}
