//! The window book: what happens when a chunk's window partials are
//! committed, in commit order, against the open windows and the clock of a
//! store (memory for `run`, SQLite for `serve`, PostgreSQL for `worker`).
//!
//! **Admission.** The watermark before an event is the largest event time
//! committed before it (earlier chunks, and earlier events of its own
//! chunk) minus `lateness`. An event counts in a tumbling or hopping window
//! whose end is past that watermark, and in a session when its own time is
//! past it; an event that counts nowhere is a dead letter `late: ...`.
//! The executor folded each window's events without knowing the earlier
//! chunks, so a fold some of whose events do not count is folded again
//! from only those that do (rare: it takes an event from behind the
//! watermark in the same window as ones that are not).
//!
//! **Closing.** After the chunk, a window whose end is at or behind the
//! watermark is emitted once and leaves the store. `run` commits chunks in
//! input order, so its windows and late events do not depend on chunking
//! or workers; `serve` and `worker` commit in the order chunks finish.
//!
//! **Bound.** At most `max_open_windows` (window, key) entries are open;
//! the events of a window or session that would open one more are dead
//! letters saying so, never an out-of-memory.

use super::field::format_rfc3339;
use super::memory::{Changes, Clock, Closed, MemoryWindows};
use super::plan::sessions_of;
use super::spec::{Millis, WindowSpec};
use crate::exec::dead_letter::DeadLetter;
use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, HashMap};

/// One fold of a windowed reduce over some of a chunk's events.
#[derive(Debug, Clone)]
pub struct WindowPart {
    /// The window (tumbling or hopping); `None`: one session per key of
    /// its members.
    pub span: Option<(Millis, Millis)>,
    /// The events folded: their index in the source or job, in fold order.
    pub members: Vec<u64>,
    /// Each member's event time.
    pub times: Vec<Millis>,
    /// Each member's key (sessions only).
    pub keys: Vec<String>,
    /// The members' events as the reduce took them, for a re-fold.
    pub input: Vec<u8>,
    /// The reduce accumulator of the fold (JSON).
    pub partial: Vec<u8>,
}

/// A windowed reduce's share of one chunk.
#[derive(Debug, Default)]
pub struct WindowedChunk {
    /// Every event that reached the reduce with a time, by index: (index,
    /// time). The order the watermark advances in.
    pub times: Vec<(u64, Millis)>,
    /// The folds.
    pub parts: Vec<WindowPart>,
    /// What a late event's dead letter says besides why, by index.
    pub events: Vec<DeadLetter>,
    /// The chunk's context JSON (a re-fold calls the guest with it).
    pub ctx: Vec<u8>,
}

/// A re-fold's result: the new parts, and the events that failed this
/// time (index, why).
pub type Refolded = (Vec<WindowPart>, Vec<(u64, String)>);

/// The guest calls a commit may need, made by an executor.
pub trait Fold {
    /// Combines two accumulators with the reduce's `combine`.
    fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>>;
    /// Folds the events `keep` selects of `part` again: the new parts (for
    /// sessions, the kept events may form several) and any events that
    /// failed this time, with why.
    fn refold(&mut self, ctx: &[u8], part: &WindowPart, keep: &[bool]) -> Result<Refolded>;
}

/// What one commit of a chunk's window parts came to (the windows' side of
/// a chunk commit; the chunk's own is [`crate::exec::stored::Committed`]).
#[derive(Debug, Default)]
pub struct WindowsCommitted {
    /// Windows closed by it, in window order (already emitted).
    pub closed: Vec<Closed>,
    /// Events that count in no window (late, or refused by the bound).
    pub dead: Vec<DeadLetter>,
}

/// The book's logic; the state is all in the [`WindowStore`].
#[derive(Debug, Clone)]
pub struct WindowBook {
    /// The windows.
    pub spec: WindowSpec,
    /// Whether the reduce's accumulator is one object per key.
    pub keyed: bool,
}

/// The open windows a commit or a tick can touch, for a database to load
/// into a [`super::MemoryWindows::staged`] before running the book on it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Every open window ending at or before this may close.
    pub due_until: Option<Millis>,
    /// Tumbling or hopping windows the chunk adds to, every key.
    pub spans: Vec<(Millis, Millis)>,
    /// Sessions of a key overlapping `[from, to)`: (key, from, to).
    pub sessions: Vec<(String, Millis, Millis)>,
}

impl WindowBook {
    /// What committing `chunk` (or, with `None`, a tick at `now`) can
    /// touch, given the stored clock.
    pub fn needs(&self, clock: Clock, chunk: Option<&WindowedChunk>, now: Millis) -> Needs {
        let mut n = Needs::default();
        let max = match chunk {
            Some(c) => c
                .times
                .iter()
                .map(|t| t.1)
                .max()
                .into_iter()
                .chain(clock.max_time)
                .max(),
            None => match (clock.max_time, clock.last_seen) {
                (Some(m), Some(seen)) if now - seen >= self.spec.idle => Some(m + (now - seen)),
                _ => None,
            },
        };
        n.due_until = max.map(|m| m.saturating_sub(self.spec.lateness));
        let Some(chunk) = chunk else { return n };
        let gap = self.spec.sessions().unwrap_or(0);
        let mut spans = std::collections::BTreeSet::new();
        let mut sessions: BTreeMap<&str, (Millis, Millis)> = BTreeMap::new();
        for p in &chunk.parts {
            match p.span {
                Some(w) => {
                    spans.insert(w);
                }
                None => {
                    for (k, &t) in p.keys.iter().zip(&p.times) {
                        let r = sessions.entry(k.as_str()).or_insert((t, t + gap));
                        r.0 = r.0.min(t);
                        r.1 = r.1.max(t + gap);
                    }
                }
            }
        }
        n.spans = spans.into_iter().collect();
        n.sessions = sessions
            .into_iter()
            .map(|(k, (a, b))| (k.to_string(), a, b))
            .collect();
        n
    }

    /// Commits one chunk's windows at wall time `now`.
    pub fn commit(
        &self,
        store: &mut MemoryWindows,
        chunk: &WindowedChunk,
        now: Millis,
        fold: &mut dyn Fold,
    ) -> Result<WindowsCommitted> {
        let mut clock = store.clock();
        // The watermark before each event, in the order of the input;
        // `chunk.times` is sorted by index, so an event is found by search.
        let lateness = self.spec.lateness;
        let mut prefix = clock.max_time;
        let watermark: Vec<Option<Millis>> = chunk
            .times
            .iter()
            .map(|&(_, t)| {
                let wm = prefix.map(|m| m - lateness);
                prefix = Some(prefix.map_or(t, |m| m.max(t)));
                wm
            })
            .collect();
        let at = |index: u64| chunk.times.binary_search_by_key(&index, |t| t.0).ok();
        // Events that count somewhere, and why the others were refused
        // when it was not lateness (the bound on open windows).
        let mut counted = vec![false; chunk.times.len()];
        let mut refused: HashMap<u64, String> = HashMap::new();
        let mut failed: Vec<(u64, String)> = Vec::new();
        for part in &chunk.parts {
            let keep: Vec<bool> = part
                .members
                .iter()
                .zip(&part.times)
                .map(|(&i, &t)| {
                    let wm = at(i).and_then(|k| watermark[k]);
                    match part.span {
                        Some((_, end)) => wm.is_none_or(|w| w < end),
                        None => wm.is_none_or(|w| w < t),
                    }
                })
                .collect();
            let refolded;
            let parts: &[WindowPart] = if keep.iter().all(|&k| k) {
                std::slice::from_ref(part)
            } else if !keep.iter().any(|&k| k) {
                &[]
            } else {
                let (parts, bad) = fold.refold(&chunk.ctx, part, &keep)?;
                failed.extend(bad);
                refolded = parts;
                &refolded
            };
            for p in parts {
                let outcome = self.apply(store, p, fold)?;
                for (&i, why) in p.members.iter().zip(outcome) {
                    match (why, at(i)) {
                        (None, Some(k)) => counted[k] = true,
                        (Some(why), _) => {
                            refused.insert(i, why);
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        if let Some(max) = prefix {
            clock.max_time = Some(max);
        }
        if !chunk.times.is_empty() {
            clock.last_seen = Some(now);
        }
        store.set_clock(clock);
        let closed = self.close(store, clock)?;
        let nowhere = chunk
            .times
            .iter()
            .enumerate()
            .filter(|&(k, _)| !counted[k])
            .map(|(k, &(index, t))| {
                let why = refused
                    .remove(&index)
                    .unwrap_or_else(|| self.late_reason(t, watermark[k]));
                (index, why)
            });
        let failed_first: Vec<(u64, String)> = failed.into_iter().chain(nowhere).collect();
        let mut dead: Vec<DeadLetter> = Vec::new();
        for (index, why) in failed_first {
            if let Ok(k) = chunk.events.binary_search_by_key(&index, |d| d.index) {
                dead.push(DeadLetter {
                    error: why,
                    ..chunk.events[k].clone()
                });
            }
        }
        dead.sort_by_key(|d| d.index);
        dead.dedup_by_key(|d| d.index);
        Ok(WindowsCommitted { closed, dead })
    }

    /// Runs a commit of `chunk` (or, with none, a tick) on windows a
    /// database staged for it (see [`Self::needs`]): what to write back,
    /// with the windows closed, and the late events' dead letters.
    pub fn run_staged(
        &self,
        mut staged: MemoryWindows,
        chunk: Option<(&WindowedChunk, &mut dyn Fold)>,
        now: Millis,
    ) -> Result<(Changes, Vec<Closed>, Vec<DeadLetter>)> {
        let (closed, late) = match chunk {
            Some((chunk, fold)) => {
                let c = self.commit(&mut staged, chunk, now, fold)?;
                (c.closed, c.dead)
            }
            None => (self.tick(&mut staged, now)?, Vec::new()),
        };
        Ok((staged.changes(), closed, late))
    }

    /// Advances the clock of a quiet stream: once `idle` has passed since
    /// the last events, event time moves with the wall clock. Returns the
    /// windows that closes.
    pub fn tick(&self, store: &mut MemoryWindows, now: Millis) -> Result<Vec<Closed>> {
        let mut clock = store.clock();
        let (Some(max), Some(seen)) = (clock.max_time, clock.last_seen) else {
            return Ok(Vec::new());
        };
        if now - seen < self.spec.idle {
            return Ok(Vec::new());
        }
        clock.max_time = Some(max + (now - seen));
        clock.last_seen = Some(now);
        store.set_clock(clock);
        self.close(store, clock)
    }

    /// Closes every open window (the end of a finite input).
    pub fn finish(&self, store: &mut MemoryWindows) -> Result<Vec<Closed>> {
        self.emit(store, Millis::MAX)
    }

    /// Takes the windows ending at or before `watermark`, as results.
    fn emit(&self, store: &mut MemoryWindows, watermark: Millis) -> Result<Vec<Closed>> {
        let mut closed = store.take_due(watermark);
        if !self.keyed {
            for c in &mut closed {
                c.key = None;
            }
        }
        Ok(closed)
    }

    fn close(&self, store: &mut MemoryWindows, clock: Clock) -> Result<Vec<Closed>> {
        let Some(max) = clock.max_time else {
            return Ok(Vec::new());
        };
        self.emit(store, max.saturating_sub(self.spec.lateness))
    }

    fn late_reason(&self, t: Millis, watermark: Option<Millis>) -> String {
        let wm = watermark.map_or_else(|| "none".into(), format_rfc3339);
        match self.spec.sessions() {
            Some(_) => format!(
                "late: event time {} is at or behind the watermark {wm}",
                format_rfc3339(t)
            ),
            None => format!(
                "late: event time {} is behind the watermark {wm} for every window it falls in",
                format_rfc3339(t)
            ),
        }
    }

    fn full(&self, open: u64) -> String {
        format!(
            "too many open windows: {open} are open (`max_open_windows` = {}); raise it, or lower `lateness` so that windows close sooner",
            self.spec.max_open
        )
    }

    /// Adds part `p` to the open windows. For each member: `None` if it now
    /// counts in a window, else why not.
    fn apply(
        &self,
        store: &mut MemoryWindows,
        p: &WindowPart,
        fold: &mut dyn Fold,
    ) -> Result<Vec<Option<String>>> {
        let counted = |why: Option<String>| vec![why; p.members.len()];
        match p.span {
            Some((start, end)) => {
                let values = self.values(&p.partial)?;
                let mut old = Vec::new();
                let mut fresh = 0u64;
                for (k, _) in &values {
                    match store.get(start, end, k) {
                        Some(v) => old.push((k.clone(), v)),
                        None => fresh += 1,
                    }
                }
                if fresh > 0 {
                    let open = store.open_count();
                    if open + fresh > self.spec.max_open {
                        return Ok(counted(Some(self.full(open))));
                    }
                }
                let merged = if old.is_empty() {
                    values
                } else {
                    let mine: Vec<_> = values
                        .iter()
                        .filter(|(k, _)| old.iter().any(|(o, _)| o == k))
                        .cloned()
                        .collect();
                    let mut out: Vec<(String, Vec<u8>)> = values
                        .into_iter()
                        .filter(|(k, _)| !old.iter().any(|(o, _)| o == k))
                        .collect();
                    let combined = fold.combine(&self.pack(&old)?, &self.pack(&mine)?)?;
                    out.extend(self.values(&combined)?);
                    out
                };
                for (k, v) in merged {
                    store.put(start, end, &k, &v);
                }
                Ok(counted(None))
            }
            None => {
                let gap = self.spec.sessions().unwrap_or(1);
                let positions: Vec<usize> = (0..p.members.len()).collect();
                let sessions = sessions_of(gap, &positions, &p.times, &p.keys);
                let values: BTreeMap<String, Vec<u8>> =
                    self.values(&p.partial)?.into_iter().collect();
                let mut why: HashMap<String, String> = HashMap::new();
                for (key, (mut start, mut end)) in sessions {
                    let Some(mut value) = values
                        .get(if self.keyed { key.as_str() } else { "" })
                        .cloned()
                    else {
                        continue;
                    };
                    let old = store.overlapping(&key, start, end);
                    if old.is_empty() {
                        let open = store.open_count();
                        if open >= self.spec.max_open {
                            why.insert(key, self.full(open));
                            continue;
                        }
                    }
                    for (s, e, v) in old {
                        value = fold.combine(
                            &self.pack(&[(key.clone(), v)])?,
                            &self.pack(&[(key.clone(), value)])?,
                        )?;
                        value = self
                            .values(&value)?
                            .into_iter()
                            .next()
                            .map(|(_, v)| v)
                            .unwrap_or_default();
                        store.remove(s, e, &key);
                        start = start.min(s);
                        end = end.max(e);
                    }
                    store.put(start, end, &key, &value);
                }
                Ok(p.keys
                    .iter()
                    .map(|k| why.get(k.as_str()).cloned())
                    .collect())
            }
        }
    }

    /// A partial as (key, value) pairs: per key for a keyed reduce, else
    /// one pair with key `""`.
    fn values(&self, partial: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        if !self.keyed {
            return Ok(vec![(String::new(), partial.to_vec())]);
        }
        let map: BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(partial)
                .context("a keyed reduce returned an accumulator that is not a JSON object")?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, v.get().as_bytes().to_vec()))
            .collect())
    }

    /// The accumulator holding `values` (the inverse of [`Self::values`]).
    fn pack(&self, values: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
        if !self.keyed {
            return Ok(values.first().map(|(_, v)| v.clone()).unwrap_or_default());
        }
        let mut out = b"{".to_vec();
        for (n, (k, v)) in values.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k)?;
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! The book over a store staged per commit (as SQLite and PostgreSQL
    //! use it) gives what it gives over all windows in memory (as `run`
    //! uses it): the same windows, in the same order, and the same late
    //! events, for every kind.

    use super::*;
    use crate::exec::window::plan::plan;
    use crate::exec::window::spec::{Kind, TimeSource};

    /// A reduce that sums: partials are JSON numbers (unkeyed) or objects
    /// of numbers (keyed), events are JSON lines `{"k":..,"n":..}`.
    struct Sum {
        keyed: bool,
    }

    fn fold_events(keyed: bool, events: &[(String, i64)]) -> Vec<u8> {
        if keyed {
            let mut m = BTreeMap::new();
            for (k, n) in events {
                *m.entry(k.clone()).or_insert(0i64) += n;
            }
            serde_json::to_vec(&m).unwrap()
        } else {
            events
                .iter()
                .map(|e| e.1)
                .sum::<i64>()
                .to_string()
                .into_bytes()
        }
    }

    impl Fold for Sum {
        fn combine(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
            if !self.keyed {
                let (x, y): (i64, i64) = (serde_json::from_slice(a)?, serde_json::from_slice(b)?);
                return Ok((x + y).to_string().into_bytes());
            }
            let mut x: BTreeMap<String, i64> = serde_json::from_slice(a)?;
            for (k, v) in serde_json::from_slice::<BTreeMap<String, i64>>(b)? {
                *x.entry(k).or_default() += v;
            }
            Ok(serde_json::to_vec(&x)?)
        }

        fn refold(&mut self, _ctx: &[u8], part: &WindowPart, keep: &[bool]) -> Result<Refolded> {
            let lines: Vec<&[u8]> = part
                .input
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            let kept: Vec<usize> = (0..lines.len()).filter(|&i| keep[i]).collect();
            let evs: Vec<(String, i64)> = kept.iter().map(|&i| parse(lines[i])).collect();
            let times: Vec<Millis> = kept.iter().map(|&i| part.times[i]).collect();
            let keys: Vec<String> = if part.keys.is_empty() {
                Vec::new()
            } else {
                kept.iter().map(|&i| part.keys[i].clone()).collect()
            };
            Ok((
                parts_of(
                    self.keyed,
                    &SPEC_FOR_REFOLD.with(|s| s.borrow().clone().unwrap()),
                    part.span,
                    &kept.iter().map(|&i| part.members[i]).collect::<Vec<_>>(),
                    &times,
                    &keys,
                    &evs,
                ),
                Vec::new(),
            ))
        }
    }

    thread_local! {
        static SPEC_FOR_REFOLD: std::cell::RefCell<Option<WindowSpec>> = const { std::cell::RefCell::new(None) };
    }

    fn parse(line: &[u8]) -> (String, i64) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        (
            v["k"].as_str().unwrap().to_string(),
            v["n"].as_i64().unwrap(),
        )
    }

    /// Folds events as the chain does: per group of the plan (or into
    /// `span` alone).
    fn parts_of(
        keyed: bool,
        spec: &WindowSpec,
        span: Option<(Millis, Millis)>,
        members: &[u64],
        times: &[Millis],
        keys: &[String],
        evs: &[(String, i64)],
    ) -> Vec<WindowPart> {
        let groups = match span {
            Some(w) => vec![(Some(w), (0..evs.len()).collect())],
            None => plan(spec, times, keys),
        };
        groups
            .into_iter()
            .map(|(span, g)| WindowPart {
                span,
                members: g.iter().map(|&i| members[i]).collect(),
                times: g.iter().map(|&i| times[i]).collect(),
                keys: if keys.is_empty() {
                    Vec::new()
                } else {
                    g.iter().map(|&i| keys[i].clone()).collect()
                },
                input: g
                    .iter()
                    .flat_map(|&i| {
                        format!("{{\"k\":\"{}\",\"n\":{}}}\n", evs[i].0, evs[i].1).into_bytes()
                    })
                    .collect(),
                partial: fold_events(
                    keyed,
                    &g.iter().map(|&i| evs[i].clone()).collect::<Vec<_>>(),
                ),
            })
            .collect()
    }

    fn chunk_of(
        keyed: bool,
        spec: &WindowSpec,
        first: u64,
        evs: &[(Millis, String, i64)],
    ) -> WindowedChunk {
        let members: Vec<u64> = (0..evs.len() as u64).map(|i| first + i).collect();
        let times: Vec<Millis> = evs.iter().map(|e| e.0).collect();
        let keys: Vec<String> = if spec.sessions().is_some() {
            evs.iter().map(|e| e.1.clone()).collect()
        } else {
            Vec::new()
        };
        let pairs: Vec<(String, i64)> = evs.iter().map(|e| (e.1.clone(), e.2)).collect();
        let parts = if spec.sessions().is_some() {
            parts_of(keyed, spec, None, &members, &times, &keys, &pairs)
        } else {
            plan(spec, &times, &keys)
                .into_iter()
                .flat_map(|(w, g)| {
                    let m: Vec<u64> = g.iter().map(|&i| members[i]).collect();
                    let t: Vec<Millis> = g.iter().map(|&i| times[i]).collect();
                    let p: Vec<(String, i64)> = g.iter().map(|&i| pairs[i].clone()).collect();
                    parts_of(keyed, spec, w, &m, &t, &[], &p)
                })
                .collect()
        };
        WindowedChunk {
            times: members.iter().copied().zip(times.iter().copied()).collect(),
            parts,
            events: members
                .iter()
                .map(|&i| DeadLetter {
                    stage: Some("s".into()),
                    error: String::new(),
                    index: i,
                    line: i + 1,
                    attempts: 1,
                    event: Vec::new(),
                })
                .collect(),
            ctx: Vec::new(),
        }
    }

    #[test]
    fn a_store_staged_per_commit_gives_what_memory_gives() {
        let kinds = [
            Kind::Tumbling { size: 100 },
            Kind::Hopping { size: 100, hop: 30 },
            Kind::Session { gap: 25 },
        ];
        for kind in kinds {
            for keyed in [false, true] {
                let spec = WindowSpec {
                    kind,
                    time: TimeSource::Arrival,
                    lateness: 40,
                    idle: 1_000_000,
                    max_open: 1000,
                };
                SPEC_FOR_REFOLD.with(|s| *s.borrow_mut() = Some(spec.clone()));
                let book = WindowBook {
                    spec: spec.clone(),
                    keyed,
                };
                let mut seed = 11u64;
                let mut rnd = |n: u64| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) % n
                };
                let evs: Vec<(Millis, String, i64)> = (0..400)
                    .map(|i| {
                        let t = i * 7 - rnd(60) as i64 - if rnd(25) == 0 { 200 } else { 0 };
                        // Unkeyed sessions are one stream: the host's key is "".
                        let k = if keyed {
                            format!("k{}", rnd(3))
                        } else {
                            String::new()
                        };
                        (t, k, rnd(100) as i64)
                    })
                    .collect();
                let mut memory = MemoryWindows::default();
                // The "database": every open window, and the clock.
                let mut db: BTreeMap<(Millis, Millis, String), Vec<u8>> = BTreeMap::new();
                let mut clock = Clock::default();
                let (mut closed_mem, mut closed_db, mut late_mem, mut late_db) =
                    (vec![], vec![], vec![], vec![]);
                let mut first = 0;
                for piece in evs.chunks(13) {
                    let chunk = chunk_of(keyed, &spec, first, piece);
                    first += piece.len() as u64;
                    let c = book
                        .commit(&mut memory, &chunk, 0, &mut Sum { keyed })
                        .unwrap();
                    closed_mem.extend(c.closed);
                    late_mem.extend(c.dead.into_iter().map(|d| d.index));
                    // Staged: load what `needs` names, commit, write back.
                    let needs = book.needs(clock, Some(&chunk), 0);
                    let rows: Vec<_> = db
                        .iter()
                        .filter(|((s, e, k), _)| {
                            needs.due_until.is_some_and(|u| *e <= u)
                                || needs.spans.contains(&(*s, *e))
                                || needs
                                    .sessions
                                    .iter()
                                    .any(|(nk, from, to)| nk == k && s < to && e > from)
                        })
                        .map(|((s, e, k), v)| (*s, *e, k.clone(), v.clone()))
                        .collect();
                    let staged = MemoryWindows::staged(clock, rows, db.len() as u64);
                    let (ch, closed, late) = book
                        .run_staged(staged, Some((&chunk, &mut Sum { keyed })), 0)
                        .unwrap();
                    late_db.extend(late.into_iter().map(|d| d.index));
                    closed_db.extend(closed);
                    clock = ch.clock;
                    for (s, e, k, v) in ch.upserts {
                        db.insert((s, e, k), v);
                    }
                    for (s, e, k) in ch.deletes {
                        db.remove(&(s, e, k));
                    }
                }
                closed_mem.extend(book.finish(&mut memory).unwrap());
                let mut rest = MemoryWindows::staged(
                    clock,
                    db.iter()
                        .map(|((s, e, k), v)| (*s, *e, k.clone(), v.clone()))
                        .collect(),
                    db.len() as u64,
                );
                closed_db.extend(book.finish(&mut rest).unwrap());
                assert!(
                    closed_mem.len() > 10,
                    "{kind:?}: {} windows",
                    closed_mem.len()
                );
                assert!(!late_mem.is_empty(), "{kind:?}: the data has late events");
                assert_eq!(closed_db, closed_mem, "{kind:?}, keyed {keyed}: windows");
                assert_eq!(late_db, late_mem, "{kind:?}, keyed {keyed}: late events");
                // A window's value is its key's own: a number here.
                for c in &closed_mem {
                    let v: serde_json::Value = serde_json::from_slice(&c.value).unwrap();
                    assert!(v.is_i64(), "{kind:?}, keyed {keyed}: {v}");
                    assert_eq!(c.key.is_some(), keyed);
                }
            }
        }
    }
}
