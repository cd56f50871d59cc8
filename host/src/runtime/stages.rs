//! Versioned stage sets, for swapping stages while a pipeline runs.
//!
//! A [`StageSet`] is one generation of a pipeline's stages. [`LiveStages`]
//! holds the current one; `--watch` publishes a new set when a plugin or
//! the manifest changes. `run`'s reader stamps every chunk with the set
//! that is current when the chunk is cut from the source, so versions
//! change in input order; `serve`'s and `worker`'s executors take the
//! current set as they take up a chunk. Either way a chunk is processed
//! by one version of each stage, and in-flight chunks finish on the
//! version they started with.

use crate::runtime::Stage;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};

/// One generation of a pipeline's stages.
pub struct StageSet {
    /// 0 for the stages a run started with, then 1, 2, ... per swap.
    pub generation: u64,
    /// The stages, in order.
    pub stages: Vec<Arc<Stage>>,
    /// `{"stage":"<12 hex>",...}`: the short version of every stage.
    versions: Box<RawValue>,
    /// `"_versions":{...}`, spliced into output objects when lineage is on.
    lineage_field: Vec<u8>,
}

impl std::fmt::Debug for StageSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSet")
            .field("generation", &self.generation)
            .field("versions", &self.versions)
            .finish()
    }
}

impl StageSet {
    /// A set of `stages` numbered `generation`.
    pub fn new(generation: u64, stages: Vec<Arc<Stage>>) -> Arc<StageSet> {
        let map: serde_json::Map<String, serde_json::Value> = stages
            .iter()
            .map(|s| (s.name().to_string(), s.short_version().into()))
            .collect();
        let text = serde_json::to_string(&map).expect("a map of strings serializes");
        let lineage_field = format!("\"_versions\":{text}").into_bytes();
        let versions = RawValue::from_string(text).expect("serde_json wrote valid JSON");
        Arc::new(StageSet {
            generation,
            stages,
            versions,
            lineage_field,
        })
    }

    /// The short version of every stage, as a JSON object keyed by stage name.
    pub fn versions(&self) -> &RawValue {
        &self.versions
    }

    /// Adds `"_versions":{...}` to every output line that is a JSON object;
    /// other lines (numbers, strings, arrays) are left as they are.
    pub fn splice_lineage(&self, output: &mut Vec<u8>) {
        splice_field(output, &self.lineage_field);
    }
}

/// The current stage set of a running pipeline, replaced whole by
/// [`LiveStages::publish`], and the versions it ran before.
pub struct LiveStages {
    current: Mutex<Arc<StageSet>>,
    /// Sets built for jobs pinned to named versions, by pin, for the
    /// current generation only; and how many were ever built, since they
    /// are numbered down from `u64::MAX` so that no two sets, published or
    /// pinned, share a number (an executor switches on the number).
    pinned: Mutex<(std::collections::HashMap<String, Arc<StageSet>>, u64)>,
    /// Every stage version this process has run, newest last, at most
    /// [`KEPT_VERSIONS`] per stage: what a replay or a diff may name.
    history: Mutex<Vec<Arc<Stage>>>,
}

/// Versions of each stage kept loadable after a hot reload replaced them.
/// Each holds its compiled module, a few megabytes at most.
pub const KEPT_VERSIONS: usize = 8;

impl LiveStages {
    /// Starts at generation 0 with `stages`.
    pub fn new(stages: Vec<Arc<Stage>>) -> LiveStages {
        LiveStages {
            history: Mutex::new(stages.clone()),
            pinned: Mutex::default(),
            current: Mutex::new(StageSet::new(0, stages)),
        }
    }

    /// The version of stage `name` whose version starts with `version`
    /// (at least 6 hex digits), if this process still has it.
    pub fn version(&self, name: &str, version: &str) -> Option<Arc<Stage>> {
        if version.len() < 6 {
            return None;
        }
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history
            .iter()
            .rev()
            .find(|s| s.name() == name && s.version.starts_with(version))
            .cloned()
    }

    /// The current stages with each stage named in `pin` (stage name to
    /// whole version) at that version; `Err` names a stage whose version
    /// this process no longer has.
    pub fn pinned(&self, pin: &str) -> Result<Arc<StageSet>, String> {
        let current = self.current();
        // The unpinned stages are the current ones: a set per generation.
        let key = format!("{}:{pin}", current.generation);
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let (sets, built) = &mut *pinned;
        if let Some(set) = sets.get(&key) {
            return Ok(set.clone());
        }
        // Sets of earlier generations hold versions the history let go.
        let prefix = format!("{}:", current.generation);
        sets.retain(|k, _| k.starts_with(&prefix));
        let versions: std::collections::BTreeMap<String, String> =
            serde_json::from_str(pin).map_err(|e| format!("unreadable pin `{pin}`: {e}"))?;
        let mut stages = current.stages.clone();
        for (name, version) in &versions {
            let stage = self.version(name, version).ok_or_else(|| name.clone())?;
            match stages.iter_mut().find(|s| s.name() == name) {
                Some(s) => *s = stage,
                None => return Err(name.clone()),
            }
        }
        let set = StageSet::new(u64::MAX - *built, stages);
        *built += 1;
        sets.insert(key, set.clone());
        Ok(set)
    }

    /// A set of `stages` that is not published (a candidate's: the
    /// current stages with one replaced), numbered apart from every
    /// published or pinned set.
    pub fn derived(&self, stages: Vec<Arc<Stage>>) -> Arc<StageSet> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let built = &mut pinned.1;
        let set = StageSet::new(u64::MAX - *built, stages);
        *built += 1;
        set
    }

    /// Keeps `stage` (a candidate) loadable by its version, as a version
    /// that ran here: a replay or a diff may name it.
    pub fn remember(&self, stage: &Arc<Stage>) {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if !history
            .iter()
            .any(|h| h.name() == stage.name() && h.version == stage.version)
        {
            history.push(stage.clone());
        }
    }

    /// The short versions of stage `name` still loadable, newest first.
    pub fn versions_of(&self, name: &str) -> Vec<String> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history
            .iter()
            .rev()
            .filter(|s| s.name() == name)
            .map(|s| s.short_version().to_string())
            .collect()
    }

    /// The current stages with the one named as `by` replaced by it (a
    /// candidate, or an older version).
    pub fn current_with(&self, by: &Arc<Stage>) -> Vec<Arc<Stage>> {
        self.current()
            .stages
            .iter()
            .map(|s| {
                if s.name() == by.name() {
                    by.clone()
                } else {
                    s.clone()
                }
            })
            .collect()
    }

    /// The current set. Cheap: one uncontended lock and a reference count.
    pub fn current(&self) -> Arc<StageSet> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `stages` the current set, numbered one past the previous one;
    /// chunks read from now on run on it.
    pub fn publish(&self, stages: Vec<Arc<Stage>>) -> Arc<StageSet> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let next = StageSet::new(cur.generation + 1, stages);
        *cur = next.clone();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for s in &next.stages {
            if !history
                .iter()
                .any(|h| h.name() == s.name() && h.version == s.version)
            {
                history.push(s.clone());
            }
            let of_stage = history.iter().filter(|h| h.name() == s.name()).count();
            if of_stage > KEPT_VERSIONS
                && let Some(oldest) = history.iter().position(|h| h.name() == s.name())
            {
                history.remove(oldest);
            }
        }
        next
    }
}

/// Inserts `field` (`"name":value`) before the closing brace of every line
/// of `buf` that ends in `}` (ignoring trailing whitespace). A byte splice,
/// no parsing: outputs are already known to be one JSON value per line.
fn splice_field(buf: &mut Vec<u8>, field: &[u8]) {
    if buf.is_empty() {
        return;
    }
    let lines = memchr::memchr_iter(b'\n', buf).count() + 1;
    let mut out = Vec::with_capacity(buf.len() + lines * (field.len() + 1));
    for line in buf.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let end = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end == 0 || body[end - 1] != b'}' {
            out.extend_from_slice(line);
            continue;
        }
        let close = end - 1;
        let empty = body[..close]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .is_some_and(|i| body[i] == b'{');
        out.extend_from_slice(&body[..close]);
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(field);
        out.extend_from_slice(&line[close..]);
    }
    *buf = out;
}

#[cfg(test)]
mod tests {
    use super::splice_field;

    fn spliced(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        splice_field(&mut b, br#""_v":{"a":"1"}"#);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn splices_into_objects_only() {
        assert_eq!(
            spliced("{\"n\":1}\n{}\n3\n\"s\"\n[1]\n{ \"x\" : {} } \n"),
            "{\"n\":1,\"_v\":{\"a\":\"1\"}}\n{\"_v\":{\"a\":\"1\"}}\n3\n\"s\"\n[1]\n{ \"x\" : {} ,\"_v\":{\"a\":\"1\"}} \n"
        );
        assert_eq!(spliced(""), "");
        assert_eq!(spliced("{\"n\":1}"), "{\"n\":1,\"_v\":{\"a\":\"1\"}}");
    }
}
