//! What a new version of a stage changes: a stored job's input run through
//! two stage sets (the current one, and the same with one stage replaced),
//! nothing stored, and the two runs compared event by event.
//!
//! Outputs are matched to the input event they came from (the executor's
//! `origin`), so a change is reported against the event a person can look
//! up, whichever stage caused it. Outputs compare as JSON values, so a
//! version that only reorders an object's fields changes nothing. Lineage
//! is off in both runs: `_versions` differs by construction.

use crate::exec::{Chunk, ChunkReport, Executor, LiveStages, Policy};
use crate::runtime::{Runtime, Stage};
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How one input event's fate differs between the two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Outputs where there were none (a filter now lets it through).
    Added,
    /// No outputs where there were some.
    Removed,
    /// Other outputs, or another dead-letter reason.
    Different,
    /// A dead letter now.
    Dead,
    /// A dead letter before, not now.
    Fixed,
}

/// A dead letter in a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failed {
    /// The stage that failed the event.
    pub stage: Option<String>,
    /// Why.
    pub error: String,
}

/// One changed event.
#[derive(Debug, Clone, Serialize)]
pub struct EventChange {
    /// Its index in the job.
    pub index: u64,
    /// What changed.
    pub change: Change,
    /// Its outputs before and after.
    pub before: Vec<Value>,
    /// See `before`.
    pub after: Vec<Value>,
    /// Its dead letter before, if it was one.
    pub before_error: Option<Failed>,
    /// Its dead letter after, if it is one.
    pub after_error: Option<Failed>,
}

/// The reduce result before and after.
#[derive(Debug, Clone, Serialize)]
pub struct ResultChange {
    /// Before.
    pub before: Value,
    /// After.
    pub after: Value,
    /// Whether they differ.
    pub changed: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// Input events compared.
    pub events: u64,
    /// Events whose fate differs.
    pub changed: u64,
    /// Events that became dead letters.
    pub new_dead_letters: u64,
    /// Events that stopped being dead letters.
    pub fixed_dead_letters: u64,
    /// The reduce result before and after (`None`: no reduce, or a
    /// windowed one, whose windows span jobs).
    pub result: Option<ResultChange>,
    /// The first `limit` changed events, by index.
    pub changes: Vec<EventChange>,
    /// Whether more changed than are listed.
    pub truncated: bool,
}

/// What one run made of each event.
#[derive(Default)]
pub struct Fates {
    outputs: BTreeMap<u64, Vec<Value>>,
    dead: BTreeMap<u64, Failed>,
    result: Option<Value>,
}

impl Fates {
    /// Adds what `report` made of its chunk's events; with `lineage`, the
    /// `_versions` lineage put into each output object is left out.
    pub fn add(&mut self, report: &ChunkReport, lineage: bool) {
        self.add_parts(&report.output, &report.origin, &report.dead, lineage);
    }

    /// [`Fates::add`] from a report's outputs, their origins and its dead
    /// letters.
    pub fn add_parts(
        &mut self,
        output: &[u8],
        origins: &[u64],
        dead: &[crate::exec::DeadLetter],
        lineage: bool,
    ) {
        for (line, &origin) in output.split(|&b| b == b'\n').zip(origins) {
            let mut value = serde_json::from_slice(line)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(line).into_owned()));
            if lineage && let Value::Object(m) = &mut value {
                m.remove("_versions");
            }
            self.outputs.entry(origin).or_default().push(value);
        }
        for d in dead {
            self.dead.insert(
                d.index,
                Failed {
                    stage: d.stage.clone(),
                    error: d.error.clone(),
                },
            );
        }
    }
}

/// Runs `chunks` (with their contexts) through `before` and `after` and
/// compares them, listing at most `limit` changed events.
pub fn diff(
    runtime: &Arc<Runtime>,
    policy: Policy,
    before: &[Arc<Stage>],
    after: &[Arc<Stage>],
    chunks: &[(Chunk, Vec<u8>)],
    windowed: bool,
    limit: usize,
) -> Result<Diff> {
    let policy = Policy {
        lineage: false,
        keep_reduce_input: false,
        ..policy
    };
    let a = fates(runtime, policy, before, chunks, windowed)?;
    let b = fates(runtime, policy, after, chunks, windowed)?;
    let events = chunks.iter().map(|(c, _)| c.len() as u64).sum();
    Ok(compare(events, a, b, limit))
}

/// `a` and `b`, two runs' fates of the same `events`, compared event by
/// event; at most `limit` changed events are listed.
pub fn compare(events: u64, a: Fates, b: Fates, limit: usize) -> Diff {
    let mut indices: Vec<u64> = a
        .outputs
        .keys()
        .chain(a.dead.keys())
        .chain(b.outputs.keys())
        .chain(b.dead.keys())
        .copied()
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let mut d = Diff {
        events,
        changed: 0,
        new_dead_letters: 0,
        fixed_dead_letters: 0,
        result: match (a.result, b.result) {
            (Some(before), Some(after)) => Some(ResultChange {
                changed: before != after,
                before,
                after,
            }),
            _ => None,
        },
        changes: Vec::new(),
        truncated: false,
    };
    let none = Vec::new();
    for i in indices {
        let (out_a, out_b) = (
            a.outputs.get(&i).unwrap_or(&none),
            b.outputs.get(&i).unwrap_or(&none),
        );
        let (dead_a, dead_b) = (a.dead.get(&i), b.dead.get(&i));
        let change = match (dead_a, dead_b) {
            (None, Some(_)) => Change::Dead,
            (Some(_), None) => Change::Fixed,
            (Some(x), Some(y)) if x != y => Change::Different,
            // An event can be a dead letter and have outputs when a
            // flat_map's later output failed a later stage; compare both.
            _ if out_a == out_b => continue,
            _ if out_a.is_empty() => Change::Added,
            _ if out_b.is_empty() => Change::Removed,
            _ => Change::Different,
        };
        d.changed += 1;
        match change {
            Change::Dead => d.new_dead_letters += 1,
            Change::Fixed => d.fixed_dead_letters += 1,
            _ => {}
        }
        if d.changes.len() == limit {
            d.truncated = true;
            continue;
        }
        d.changes.push(EventChange {
            index: i,
            change,
            before: out_a.clone(),
            after: out_b.clone(),
            before_error: dead_a.cloned(),
            after_error: dead_b.cloned(),
        });
    }
    d
}

/// One run of `chunks` through `set`, kept per input event.
fn fates(
    runtime: &Arc<Runtime>,
    policy: Policy,
    stages: &[Arc<Stage>],
    chunks: &[(Chunk, Vec<u8>)],
    windowed: bool,
) -> Result<Fates> {
    let live = Arc::new(LiveStages::new(stages.to_vec()));
    let mut exec = Executor::new(runtime.clone(), live, policy);
    let reduces = !windowed
        && stages
            .last()
            .is_some_and(|s| s.kind == crate::manifest::StageKind::Reduce);
    let mut f = Fates::default();
    let mut partials = Vec::new();
    for (chunk, ctx) in chunks {
        let report = exec.run(chunk, ctx)?;
        f.add(&report, false);
        partials.push(report.partial);
    }
    if reduces {
        let result = exec.combine(partials)?;
        f.result = Some(serde_json::from_slice(&result).unwrap_or(Value::Null));
    }
    Ok(f)
}
