//! Safe deploys: a candidate version of one stage runs beside the live
//! one until it is promoted, aborted or rolled back by its error budget.
//!
//! - **Shadow**: every chunk the live version ran is run again through
//!   the candidate, on a thread of its own after the chunk was committed,
//!   so the live path neither waits for it nor fails with it. Its outputs
//!   are compared with the live ones event by event (as [`super::diff`]
//!   compares two versions on one stored job) and then dropped: nothing
//!   of a shadow is stored. When the shadow falls behind (its queue of
//!   [`SHADOW_QUEUE`] chunks is full), a chunk is skipped and counted,
//!   never waited for.
//! - **Canary**: a share of the chunks is run by the candidate instead
//!   of the live version. The choice is by chunk (a hash of its job and
//!   number), so a chunk is still processed by exactly one version, and a
//!   chunk run again after a crash goes to the same version as before.
//!   Its outputs carry the candidate's version in lineage like any other.
//!
//! The deployment itself is a record in the store (see
//! [`crate::store::Backend::deploy`]), with the candidate's module: every
//! process running the pipeline (serve's workers, each cluster worker and
//! ingest node) applies what the records say in [`Deploys::sync`], once a
//! second and right after its own API changed them. A promote is a
//! record too, and applies at a chunk boundary like a hot reload; after a
//! restart the promotions are applied again, in order, to the stage
//! versions the manifest loads, each only if the version it replaced is
//! the one running (a plugin changed on disk since is newer and wins). An
//! active candidate is loaded again after a restart, or, if it cannot be
//! (its module does not load, the live version it was deployed beside is
//! not the one running), ended as `dropped` with the reason: never half
//! applied.
//!
//! **Budgets** (`budget` on a stage in the manifest) are judged per
//! version over its latest chunks, in each process: a candidate over its
//! budget is rolled back at once (this process stops giving it chunks,
//! and the record is ended for the others within a second); a live
//! version over its budget is flagged for metrics and the console, and
//! with `pause_intake` ingest refuses batches with a 503 that says why,
//! until another version of the stage is live.

use super::diff::{self, Fates};
use super::{Chunk, ChunkReport, Executor, LiveStages, Policy, StageSet};
use crate::runtime::{Runtime, Stage};
use crate::store::{Backend, DeploymentRow};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Chunks waiting for the shadow at most; past that, chunks are skipped.
/// Room for a burst (the candidate's first chunk also creates its
/// instance), and a bound on the memory they hold.
pub const SHADOW_QUEUE: usize = 64;
/// Changed events kept as examples per process.
pub const EXAMPLES: usize = 20;
/// Points of the dead-letter-rate series kept per process.
const SERIES: usize = 240;

/// How a candidate takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On every chunk, after the live version, stored nowhere.
    Shadow,
    /// On this share (percent) of the chunks, instead of the live version.
    Canary(u8),
}

impl Mode {
    /// As recorded: `shadow` or `canary`, and the share.
    pub fn record(self) -> (&'static str, u8) {
        match self {
            Mode::Shadow => ("shadow", 100),
            Mode::Canary(p) => ("canary", p),
        }
    }

    fn of(row: &DeploymentRow) -> Mode {
        match row.mode.as_str() {
            "canary" => Mode::Canary(row.percent),
            _ => Mode::Shadow,
        }
    }
}

/// One side's figures for the stage under deploy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Side {
    /// Chunks it ran.
    pub chunks: u64,
    /// Events given to the stage.
    pub events: u64,
    /// Events the stage dead-lettered.
    pub dead_letters: u64,
    /// Time in the stage's guest calls, ms.
    pub busy_ms: f64,
}

impl Side {
    fn add(&mut self, o: &Side) {
        self.chunks += o.chunks;
        self.events += o.events;
        self.dead_letters += o.dead_letters;
        self.busy_ms += o.busy_ms;
    }
}

/// What a shadow found so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Shadowed {
    /// Chunks compared.
    pub chunks: u64,
    /// Their events.
    pub events: u64,
    /// Events whose fate differs.
    pub changed: u64,
    /// Events that are dead letters with the candidate only.
    pub new_dead_letters: u64,
    /// Events that are dead letters with the live version only.
    pub fixed_dead_letters: u64,
    /// Chunks not compared: the shadow was behind.
    pub skipped: u64,
    /// Chunks the candidate could not run at all.
    pub failed: u64,
    /// The first changed events, with their job.
    pub examples: Vec<Example>,
    /// The reduce result of the compared chunks, live and candidate.
    pub result: Option<ResultDelta>,
}

/// A changed event of a shadowed chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Example {
    /// Its job.
    pub job: i64,
    /// The change, as a diff reports it.
    #[serde(flatten)]
    pub change: serde_json::Value,
}

/// The reduce results of the shadowed chunks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultDelta {
    /// Combined from the live partials.
    pub live: serde_json::Value,
    /// Combined from the candidate's.
    pub candidate: serde_json::Value,
    /// Whether they differ.
    pub changed: bool,
}

/// A point of the dead-letter-rate chart: one chunk of one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// When (ms).
    pub at: i64,
    /// `live` or `candidate`.
    pub side: String,
    /// Events given to the stage.
    pub events: u64,
    /// Of which dead-lettered.
    pub dead_letters: u64,
}

/// What one process counted of a deployment: stored as JSON per process
/// and summed by [`Tally::merge`] for the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Chunks of the stage under deploy run by the live version.
    pub live: Side,
    /// By the candidate (a canary's chunks, or a shadow's runs).
    pub candidate: Side,
    /// A shadow's comparison.
    pub shadow: Option<Shadowed>,
    /// Per chunk, newest last.
    pub series: Vec<Point>,
}

impl Tally {
    /// The sum of what several processes counted.
    pub fn merge(tallies: impl IntoIterator<Item = Tally>) -> Tally {
        let mut t = Tally::default();
        for o in tallies {
            t.live.add(&o.live);
            t.candidate.add(&o.candidate);
            if let Some(s) = o.shadow {
                let m = t.shadow.get_or_insert_with(Shadowed::default);
                m.chunks += s.chunks;
                m.events += s.events;
                m.changed += s.changed;
                m.new_dead_letters += s.new_dead_letters;
                m.fixed_dead_letters += s.fixed_dead_letters;
                m.skipped += s.skipped;
                m.failed += s.failed;
                m.examples.extend(s.examples);
                // A result per process is of its own chunks: they do not
                // add up without the reduce's combine, so the first stands.
                if m.result.is_none() {
                    m.result = s.result;
                }
            }
            t.series.extend(o.series);
        }
        if let Some(s) = &mut t.shadow {
            s.examples
                .sort_by_key(|e| (e.job, e.change["index"].as_u64()));
            s.examples.truncate(EXAMPLES);
        }
        t.series.sort_by_key(|p| p.at);
        t
    }

    /// In a line: what a shadow found, and each side's dead letters.
    pub fn describe(&self) -> String {
        let rate = |dead: u64, events: u64| {
            if events == 0 {
                "-".to_string()
            } else {
                format!("{:.2} %", dead as f64 * 100.0 / events as f64)
            }
        };
        let mut s = String::new();
        if let Some(sh) = &self.shadow {
            s += &format!(
                "{} of {} events changed in {} chunks ({} new dead letters, {} fixed, {} chunks skipped); ",
                sh.changed,
                sh.events,
                sh.chunks,
                sh.new_dead_letters,
                sh.fixed_dead_letters,
                sh.skipped
            );
        }
        s + &format!(
            "dead letters: live {} of {} events, candidate {} of {}",
            rate(self.live.dead_letters, self.live.events),
            self.live.events,
            rate(self.candidate.dead_letters, self.candidate.events),
            self.candidate.events
        )
    }

    fn point(&mut self, side: &str, events: u64, dead_letters: u64) {
        self.series.push(Point {
            at: super::now_ms(),
            side: side.into(),
            events,
            dead_letters,
        });
        if self.series.len() > SERIES {
            self.series.remove(0);
        }
    }
}

/// A version's latest chunks, for its budget.
#[derive(Debug, Default)]
struct Recent {
    /// (events given, dead-lettered) per chunk, newest last.
    chunks: VecDeque<(u64, u64)>,
}

impl Recent {
    /// Adds a chunk and says whether the version is now over `budget`, as
    /// `(rate, events)` when it is.
    fn add(
        &mut self,
        budget: &crate::manifest::Budget,
        events: u64,
        dead: u64,
    ) -> Option<(f64, u64)> {
        self.chunks.push_back((events, dead));
        while self.chunks.len() > budget.chunks as usize {
            self.chunks.pop_front();
        }
        let (e, d) = self
            .chunks
            .iter()
            .fold((0, 0), |(e, d), (ce, cd)| (e + ce, d + cd));
        let rate = if e == 0 { 0.0 } else { d as f64 / e as f64 };
        (e >= budget.min_events && rate > budget.max_dead_letter_rate).then_some((rate, e))
    }
}

/// Every version's totals, for the metrics.
#[derive(Debug, Default, Clone)]
pub struct VersionTotals {
    /// Chunks.
    pub chunks: u64,
    /// Events given to the stage.
    pub events: u64,
    /// Dead-lettered by it.
    pub dead_letters: u64,
    /// Time in its guest calls, s.
    pub busy: f64,
}

/// The candidate this process runs.
struct Active {
    id: i64,
    stage: Arc<Stage>,
    mode: Mode,
    /// The live set it was last made for, and the candidate set made of it.
    sets: Mutex<Option<(u64, Arc<StageSet>)>>,
    tally: Mutex<Tally>,
    /// Sends chunks to the shadow thread (a shadow only).
    shadow: Option<crossbeam_channel::Sender<ShadowWork>>,
    /// Chunks sent to the shadow and not yet compared.
    pending: std::sync::atomic::AtomicU64,
}

/// A chunk the live version committed, for the shadow to run again.
struct ShadowWork {
    job: i64,
    chunk: Chunk,
    ctx: Vec<u8>,
    set: Arc<StageSet>,
    /// The live report's outputs, their origins and its dead letters,
    /// compared on the shadow's thread (parsing them is not the live
    /// path's work).
    output: Vec<u8>,
    origin: Vec<u64>,
    dead: Vec<super::DeadLetter>,
    partial: Vec<u8>,
    /// The stage under deploy's counts in the live run: a shadow's live
    /// side counts the chunks compared, as its candidate side does.
    live: super::StageCounts,
}

/// A deployment this process ended on its own (a budget rollback, a
/// candidate that cannot load), for [`Deploys::sync`] to record.
#[derive(Debug, Clone)]
struct Ending {
    id: i64,
    state: &'static str,
    reason: String,
    /// What this process counted of it, to the end.
    tally: Tally,
}

/// A live version over its budget.
#[derive(Debug, Clone, Serialize)]
pub struct OverBudget {
    /// The stage.
    pub stage: String,
    /// Its live version (short).
    pub version: String,
    /// What was seen, in words.
    pub reason: String,
    /// Whether ingest is paused for it.
    pub pause_intake: bool,
}

/// A process's deployments: what chunks run on, what is counted, what
/// was decided and waits to be recorded.
pub struct Deploys {
    /// Itself, for the shadow's thread.
    me: Weak<Deploys>,
    live: Arc<LiveStages>,
    runtime: Arc<Runtime>,
    policy: Policy,
    pipeline: String,
    /// This process's name in the stats it reports.
    process: String,
    /// Whether the pipeline's results are a job's reduce (not windows).
    reduces: bool,
    active: Mutex<Option<Arc<Active>>>,
    /// Promotions applied (or passed over), by id: the highest seen.
    promoted_upto: Mutex<i64>,
    /// Deployments this process saw and could not load (ended, or being ended).
    refused: Mutex<Vec<i64>>,
    endings: Mutex<Vec<Ending>>,
    /// Per (stage, whole version): its latest chunks, its totals.
    recent: Mutex<HashMap<(String, String), Recent>>,
    totals: Mutex<BTreeMap<(String, String), VersionTotals>>,
    /// Live versions over their budgets, by stage.
    over: Mutex<BTreeMap<String, (String, OverBudget)>>,
    /// Held by one [`Deploys::sync`] at a time: the API's and the
    /// once-a-second one would otherwise both load a new candidate.
    syncing: tokio::sync::Mutex<()>,
    /// The next id of a candidate with no record (`run --watch`'s).
    local_ids: std::sync::atomic::AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deploys {
    /// Deployments of `pipeline`, run on `live`'s stages.
    pub fn new(
        pipeline: &str,
        live: Arc<LiveStages>,
        runtime: Arc<Runtime>,
        policy: Policy,
        reduces: bool,
    ) -> Arc<Deploys> {
        Arc::new_cyclic(|me| Deploys {
            me: me.clone(),
            live,
            runtime,
            policy,
            pipeline: pipeline.to_string(),
            process: format!("{}/{}", super::host_name(), std::process::id()),
            reduces,
            active: Mutex::default(),
            promoted_upto: Mutex::new(0),
            refused: Mutex::default(),
            endings: Mutex::default(),
            recent: Mutex::default(),
            totals: Mutex::default(),
            over: Mutex::default(),
            syncing: tokio::sync::Mutex::new(()),
            local_ids: std::sync::atomic::AtomicI64::new(-1),
        })
    }

    /// Deployments of `pipeline`'s stages, run on `live` with `policy`.
    pub fn of(pipeline: &super::Pipeline, live: Arc<LiveStages>, policy: Policy) -> Arc<Deploys> {
        Deploys::new(
            &pipeline.name,
            live,
            pipeline.runtime.clone(),
            policy,
            pipeline.reduces() && pipeline.results().windows.is_none(),
        )
    }

    /// [`Deploys::of`], with the promotions and the candidate recorded
    /// before this process started applied: before its first chunk runs.
    pub async fn restored(
        pipeline: &super::Pipeline,
        live: Arc<LiveStages>,
        policy: Policy,
        backend: &dyn Backend,
    ) -> Result<Arc<Deploys>> {
        let deploys = Deploys::of(pipeline, live, policy);
        deploys
            .sync(backend)
            .await
            .context("cannot read the recorded deployments")?;
        Ok(deploys)
    }

    /// Applies the records once a second until `stopping`: candidates other
    /// processes deployed, promoted or ended, and endings this one decided
    /// (a budget rollback); and stores what this process counted.
    pub async fn follow(&self, backend: &dyn Backend, stopping: &std::sync::atomic::AtomicBool) {
        let mut failing = false;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            match self.sync(backend).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(
                        "cannot read or record deployments: {e:#}; trying again every second"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// The set a canary gives chunk `seq` of job `job`, if it goes to the
    /// candidate.
    pub fn canary_for(&self, job: i64, seq: u64) -> Option<Arc<StageSet>> {
        let active = lock(&self.active).clone()?;
        let Mode::Canary(percent) = active.mode else {
            return None;
        };
        (share(job, seq) < u64::from(percent)).then(|| self.candidate_set(&active, None))
    }

    /// The candidate's set: the current live stages (or `on`'s) with the
    /// candidate in its stage's place.
    fn candidate_set(&self, active: &Active, on: Option<&Arc<StageSet>>) -> Arc<StageSet> {
        let live = on.cloned().unwrap_or_else(|| self.live.current());
        let mut sets = lock(&active.sets);
        if let Some((g, set)) = &*sets
            && *g == live.generation
        {
            return set.clone();
        }
        let stages = live
            .stages
            .iter()
            .map(|s| {
                if s.name() == active.stage.name() {
                    active.stage.clone()
                } else {
                    s.clone()
                }
            })
            .collect();
        let set = self.live.derived(stages);
        *sets = Some((live.generation, set.clone()));
        set
    }

    /// After `report` of `chunk` (job `job`) was committed: counts it per
    /// version, judges budgets, and hands it to a shadow.
    pub fn committed(&self, job: i64, chunk: &Chunk, ctx: &[u8], report: &ChunkReport) {
        let active = lock(&self.active).clone();
        let on_candidate = active
            .as_ref()
            .is_some_and(|a| report.set.stages.iter().any(|s| Arc::ptr_eq(s, &a.stage)));
        self.count(report, active.as_deref(), on_candidate, None);
        let Some(active) = active else { return };
        let Some(tx) = &active.shadow else { return };
        // Pinned replays and set-aside chunks ran on no live set.
        if on_candidate || report.set.generation != self.live.current().generation {
            return;
        }
        let live = report
            .set
            .stages
            .iter()
            .position(|s| s.name() == active.stage.name())
            .and_then(|i| report.counts.get(i).cloned())
            .unwrap_or_default();
        let work = ShadowWork {
            job,
            chunk: chunk.clone(),
            ctx: ctx.to_vec(),
            set: report.set.clone(),
            output: report.output.clone(),
            origin: report.origin.clone(),
            dead: report.dead.clone(),
            partial: report.partial.clone(),
            live,
        };
        active
            .pending
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if tx.try_send(work).is_err() {
            active
                .pending
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            let mut t = lock(&active.tally);
            t.shadow.get_or_insert_with(Shadowed::default).skipped += 1;
        }
    }

    /// Counts `report` for every stage's version (or only stage `only`'s),
    /// judges budgets, and for the stage under deploy adds it to
    /// `active`'s tally.
    fn count(
        &self,
        report: &ChunkReport,
        active: Option<&Active>,
        on_candidate: bool,
        only: Option<&str>,
    ) {
        for (stage, c) in report.set.stages.iter().zip(&report.counts) {
            if only.is_some_and(|o| o != stage.name()) {
                continue;
            }
            let key = (stage.name().to_string(), stage.version.clone());
            {
                let mut totals = lock(&self.totals);
                let t = totals.entry(key.clone()).or_default();
                t.chunks += 1;
                t.events += c.events_in;
                t.dead_letters += c.failed;
                t.busy += c.busy.as_secs_f64();
            }
            // A shadow's live side is counted when a chunk is compared.
            if let Some(a) = active
                && a.stage.name() == stage.name()
                && (on_candidate || a.mode != Mode::Shadow)
            {
                let mut t = lock(&a.tally);
                let (side, name) = if on_candidate {
                    (&mut t.candidate, "candidate")
                } else {
                    (&mut t.live, "live")
                };
                side.chunks += 1;
                side.events += c.events_in;
                side.dead_letters += c.failed;
                side.busy_ms += c.busy.as_secs_f64() * 1e3;
                t.point(name, c.events_in, c.failed);
            }
            let Some(budget) = &stage.spec.budget else {
                continue;
            };
            let over =
                lock(&self.recent)
                    .entry(key)
                    .or_default()
                    .add(budget, c.events_in, c.failed);
            let Some((rate, events)) = over else { continue };
            let reason = format!(
                "version {} of stage `{}` dead-lettered {:.1} % of the {events} events of its last {} chunks, over its budget of {:.1} %",
                stage.short_version(),
                stage.name(),
                rate * 100.0,
                budget.chunks,
                budget.max_dead_letter_rate * 100.0
            );
            match active {
                Some(a) if on_candidate || Arc::ptr_eq(&a.stage, stage) => {
                    self.end_here(a.id, "rolled_back", reason);
                }
                _ => {
                    let mut over = lock(&self.over);
                    if !over.contains_key(stage.name()) {
                        tracing::warn!("{reason}");
                    }
                    over.insert(
                        stage.name().to_string(),
                        (
                            stage.version.clone(),
                            OverBudget {
                                stage: stage.name().to_string(),
                                version: stage.short_version().to_string(),
                                reason,
                                pause_intake: budget.pause_intake,
                            },
                        ),
                    );
                }
            }
        }
    }

    /// Stops the candidate `id` here at once, and notes the ending for
    /// [`Deploys::sync`] to record.
    fn end_here(&self, id: i64, state: &'static str, reason: String) {
        let mut active = lock(&self.active);
        if let Some(a) = active.take_if(|a| a.id == id) {
            tracing::warn!("deployment {id}: {state}: {reason}");
            let tally = lock(&a.tally).clone();
            lock(&self.endings).push(Ending {
                id,
                state,
                reason,
                tally,
            });
        }
    }

    /// Live versions over their budgets (those still live).
    pub fn over_budget(&self) -> Vec<OverBudget> {
        let live = self.live.current();
        let mut over = lock(&self.over);
        over.retain(|stage, (version, _)| {
            live.stages
                .iter()
                .any(|s| s.name() == stage && &s.version == version)
        });
        over.values().map(|(_, o)| o.clone()).collect()
    }

    /// Why ingest is paused, if it is.
    pub fn paused(&self) -> Option<String> {
        self.over_budget()
            .into_iter()
            .find(|o| o.pause_intake)
            .map(|o| {
                format!(
                    "intake is paused: {}; deploy a fixed version of the stage (the budget's `pause_intake` refuses batches until one is live)",
                    o.reason
                )
            })
    }

    /// The active candidate's id and what this process counted of it.
    pub fn tally(&self) -> Option<(i64, Tally)> {
        let a = lock(&self.active).clone()?;
        let t = lock(&a.tally).clone();
        Some((a.id, t))
    }

    /// Every version's totals, by (stage, whole version).
    pub fn totals(&self) -> BTreeMap<(String, String), VersionTotals> {
        lock(&self.totals).clone()
    }

    /// Runs `candidate` beside the live version here only, with no record
    /// (`run --watch`, whose manifest names it), or none; says what the one
    /// it replaces found.
    pub fn set_local(&self, candidate: Option<(Arc<Stage>, Mode)>) {
        let same = |a: &Active| {
            candidate.as_ref().is_some_and(|(s, m)| {
                s.name() == a.stage.name() && s.version == a.stage.version && *m == a.mode
            })
        };
        if lock(&self.active).as_deref().is_some_and(same) {
            return;
        }
        // What it reports covers every chunk it was sent.
        self.settle(std::time::Duration::from_secs(10));
        let old = lock(&self.active).take();
        if let Some(a) = old {
            tracing::info!(
                "candidate {} of stage `{}` stopped: {}",
                a.stage.short_version(),
                a.stage.name(),
                lock(&a.tally).describe()
            );
        }
        let Some((stage, mode)) = candidate else {
            return;
        };
        // Local candidates are numbered down from -1: no record has them.
        let id = self
            .local_ids
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.run_candidate(id, stage, mode);
    }

    /// Makes `stage` the candidate `id` here, as `mode`.
    fn run_candidate(&self, id: i64, stage: Arc<Stage>, mode: Mode) {
        self.live.remember(&stage);
        // Judged afresh: a version deployed again after a rollback starts
        // with a clean window.
        lock(&self.recent).remove(&(stage.name().to_string(), stage.version.clone()));
        let shadow = (mode == Mode::Shadow).then(|| self.spawn_shadow(id));
        let (m, p) = mode.record();
        tracing::info!(
            "{} {} of stage `{}` runs as a {m}{} beside {}",
            if id > 0 {
                format!("deployment {id}: version")
            } else {
                "candidate".into()
            },
            stage.short_version(),
            stage.name(),
            if m == "canary" {
                format!(" on {p} % of chunks")
            } else {
                String::new()
            },
            self.live
                .current()
                .stages
                .iter()
                .find(|s| s.name() == stage.name())
                .map_or("", |s| s.short_version())
        );
        *lock(&self.active) = Some(Arc::new(Active {
            id,
            stage,
            mode,
            sets: Mutex::default(),
            tally: Mutex::new(Tally {
                shadow: (mode == Mode::Shadow).then(Shadowed::default),
                ..Tally::default()
            }),
            shadow,
            pending: Default::default(),
        }));
    }

    /// Waits (at most `limit`) for the shadow to compare the chunks it was
    /// sent: at the end of a run, so that its figures cover them.
    pub fn settle(&self, limit: std::time::Duration) {
        let t = std::time::Instant::now();
        while let Some(a) = lock(&self.active).clone()
            && a.pending.load(std::sync::atomic::Ordering::Acquire) > 0
            && t.elapsed() < limit
        {
            drop(a);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The Prometheus text of every version's figures and of the budgets.
    pub fn metrics(&self, pipeline: &str) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let totals = self.totals();
        let short = |v: &str| v.get(..12).unwrap_or(v).to_string();
        for (name, help, kind, get) in [
            (
                "wasmpipe_version_chunks_total",
                "Chunks a stage version ran.",
                "counter",
                (|t: &VersionTotals| t.chunks as f64) as fn(&VersionTotals) -> f64,
            ),
            (
                "wasmpipe_version_events_total",
                "Events given to a stage version.",
                "counter",
                |t| t.events as f64,
            ),
            (
                "wasmpipe_version_dead_letters_total",
                "Events a stage version dead-lettered.",
                "counter",
                |t| t.dead_letters as f64,
            ),
            (
                "wasmpipe_version_busy_seconds_total",
                "Time in a stage version's guest calls.",
                "counter",
                |t| t.busy,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((stage, version), t) in &totals {
                let _ = writeln!(
                    o,
                    "{name}{{pipeline=\"{pipeline}\",stage=\"{stage}\",version=\"{}\"}} {}",
                    short(version),
                    get(t)
                );
            }
        }
        let over = self.over_budget();
        let _ = writeln!(
            o,
            "# HELP wasmpipe_stage_over_budget Whether a stage's live version is over its error budget.\n# TYPE wasmpipe_stage_over_budget gauge"
        );
        for s in &self.live.current().stages {
            let flag = over.iter().any(|x| x.stage == s.name());
            let _ = writeln!(
                o,
                "wasmpipe_stage_over_budget{{pipeline=\"{pipeline}\",stage=\"{}\"}} {}",
                s.name(),
                u8::from(flag)
            );
        }
        o
    }

    /// Brings this process in line with the store's records: endings it
    /// decided are recorded, promotions applied, the active candidate
    /// loaded or dropped; then what it counted of the candidate is stored.
    pub async fn sync(&self, backend: &dyn Backend) -> Result<()> {
        let _one = self.syncing.lock().await;
        let endings = std::mem::take(&mut *lock(&self.endings));
        for e in endings {
            let stored = async {
                let tally = serde_json::to_string(&e.tally)?;
                backend
                    .put_deployment_stats(e.id, &self.process, tally)
                    .await?;
                backend
                    .end_deployment(e.id, e.state, "error budget", Some(e.reason.clone()))
                    .await
            };
            if let Err(err) = stored.await {
                lock(&self.endings).push(e);
                return Err(err);
            }
        }
        let rows = backend.deployments(&self.pipeline, 1000).await?;
        // Promotions, oldest first, each onto the version it replaced.
        let upto = *lock(&self.promoted_upto);
        for row in rows.iter().rev().filter(|r| r.id > upto) {
            if row.state == "promoted" {
                self.promote_here(backend, row).await;
            }
            if row.state != "active" {
                *lock(&self.promoted_upto) = row.id;
            }
        }
        let wanted = rows.iter().find(|r| r.state == "active");
        let running = lock(&self.active).as_ref().map(|a| a.id);
        match (wanted, running) {
            (Some(w), Some(r)) if w.id == r => {}
            (Some(w), _) if lock(&self.refused).contains(&w.id) => {}
            (Some(w), _) => self.start(backend, w).await?,
            (None, Some(r)) => {
                tracing::info!("deployment {r} ended; every chunk runs on the live versions");
                // What was counted to the end is kept with the record.
                let ended = lock(&self.active).take();
                if let Some(a) = ended {
                    let tally = serde_json::to_string(&*lock(&a.tally))?;
                    backend
                        .put_deployment_stats(a.id, &self.process, tally)
                        .await?;
                }
            }
            (None, None) => {}
        }
        if let Some((id, tally)) = self.tally() {
            let json = serde_json::to_string(&tally)?;
            backend
                .put_deployment_stats(id, &self.process, json)
                .await?;
        }
        Ok(())
    }

    /// Makes promoted `row`'s version live here, if the version it
    /// replaced is the one running.
    async fn promote_here(&self, backend: &dyn Backend, row: &DeploymentRow) {
        let current = self.live.current();
        let Some(now) = current.stages.iter().find(|s| s.name() == row.stage) else {
            return;
        };
        if now.version == row.version {
            return;
        }
        if now.version != row.base {
            tracing::info!(
                "deployment {}: promoted version {} of stage `{}` is not applied: it replaced {}, and {} runs here (a newer plugin on disk)",
                row.id,
                &row.version[..12.min(row.version.len())],
                row.stage,
                &row.base[..12.min(row.base.len())],
                now.short_version()
            );
            return;
        }
        let stage = match self.load(backend, row, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    "deployment {}: promoted version of stage `{}` cannot be loaded here: {e:#}",
                    row.id,
                    row.stage
                );
                return;
            }
        };
        let set = self.live.publish(self.live.current_with(&stage));
        tracing::info!(
            "deployment {}: version {} of stage `{}` promoted by {} is live (generation {})",
            row.id,
            stage.short_version(),
            row.stage,
            row.ended_by.as_deref().unwrap_or("?"),
            set.generation
        );
    }

    /// Loads active `row`'s candidate and runs it here, or ends it as
    /// `dropped` saying why it cannot run.
    async fn start(&self, backend: &dyn Backend, row: &DeploymentRow) -> Result<()> {
        let current = self.live.current();
        let Some(now) = current
            .stages
            .iter()
            .find(|s| s.name() == row.stage)
            .cloned()
        else {
            return self
                .drop_row(
                    backend,
                    row,
                    format!("this pipeline has no stage `{}` now", row.stage),
                )
                .await;
        };
        if now.version != row.base {
            let why = format!(
                "stage `{}` runs version {} here, not {} that the candidate was deployed beside (its plugin changed, or a process of the pipeline runs other files); deploy the candidate again",
                row.stage,
                now.short_version(),
                &row.base[..12.min(row.base.len())]
            );
            return self.drop_row(backend, row, why).await;
        }
        let stage = match self.load(backend, row, &now).await {
            Ok(s) => s,
            Err(e) => {
                return self
                    .drop_row(
                        backend,
                        row,
                        format!("the candidate cannot be loaded: {e:#}"),
                    )
                    .await;
            }
        };
        self.run_candidate(row.id, stage, Mode::of(row));
        Ok(())
    }

    async fn drop_row(
        &self,
        backend: &dyn Backend,
        row: &DeploymentRow,
        why: String,
    ) -> Result<()> {
        tracing::warn!("deployment {}: dropped: {why}", row.id);
        lock(&self.refused).push(row.id);
        backend
            .end_deployment(row.id, "dropped", &self.process, Some(why))
            .await?;
        Ok(())
    }

    /// `row`'s module as a version of the stage `now` is a version of.
    async fn load(
        &self,
        backend: &dyn Backend,
        row: &DeploymentRow,
        now: &Arc<Stage>,
    ) -> Result<Arc<Stage>> {
        if let Some(s) = self.live.version(&row.stage, &row.version) {
            return Ok(s);
        }
        let module = backend
            .deployment_module(row.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("its record has no module"))?;
        let (rt, spec) = (self.runtime.clone(), now.spec.clone());
        let stage = tokio::task::spawn_blocking(move || candidate(&rt, spec, &module)).await??;
        if stage.version != row.version {
            anyhow::bail!(
                "its module is version {}, its record says {}",
                stage.short_version(),
                row.version
            );
        }
        Ok(stage)
    }

    /// The shadow's thread: runs each chunk it is sent through the
    /// candidate until the candidate is gone.
    fn spawn_shadow(&self, id: i64) -> crossbeam_channel::Sender<ShadowWork> {
        let (tx, rx) = crossbeam_channel::bounded::<ShadowWork>(SHADOW_QUEUE);
        let deploys = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("wasmpipe-shadow".into())
            .spawn(move || shadow(&deploys, id, &rx));
        if let Err(e) = spawned {
            tracing::error!("deployment {id}: cannot start the shadow's thread: {e}");
        }
        tx
    }

    /// Adds what the shadow found of one chunk to deployment `id`'s tally,
    /// if it is still the active one.
    fn shadowed(&self, id: i64, f: impl FnOnce(&mut Tally)) {
        if let Some(a) = self.active_with(id) {
            f(&mut lock(&a.tally));
        }
    }

    /// Deployment `id`, if it is the active one.
    fn active_with(&self, id: i64) -> Option<Arc<Active>> {
        lock(&self.active).clone().filter(|a| a.id == id)
    }
}

/// Counts a shadowed chunk done when dropped, however its run ended.
struct Compared<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Compared<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Loads `module` as a version of the stage `spec` describes (same
/// params, limits and grants), and configures one instance, so a module
/// that cannot serve is refused before any event runs.
pub fn candidate(
    rt: &Arc<Runtime>,
    mut spec: crate::runtime::StageSpec,
    module: &[u8],
) -> Result<Arc<Stage>> {
    spec.plugin = format!("the uploaded module for `{}`", spec.name).into();
    let linker = crate::runtime::linker(rt)?;
    // Checks the ABI and that the module is of the stage's kind.
    let stage = Stage::from_bytes(rt, &linker, spec, module)?;
    stage.instantiate(rt)?;
    Ok(stage)
}

/// Where in 0..100 chunk `seq` of job `job` falls: a canary of p % takes
/// the chunks below p. SplitMix64's finalizer: neighbouring chunks land
/// far apart, and the same chunk always lands in the same place.
fn share(job: i64, seq: u64) -> u64 {
    let mut z = (job as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seq)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 100
}

/// The shadow of deployment `id`: each chunk the live version committed
/// runs again through the candidate, on this thread, and the two are
/// compared. Ends when the deployment is no longer active here (its
/// sender is dropped with it) or the process stops.
fn shadow(deploys: &Weak<Deploys>, id: i64, rx: &crossbeam_channel::Receiver<ShadowWork>) {
    // Executors of the candidate's sets and of the live ones (the latter
    // only to combine the live partials), and the results so far.
    let mut cand: Option<Executor> = None;
    let mut live: Option<Executor> = None;
    let (mut acc_live, mut acc_cand) = (Vec::new(), Vec::new());
    while let Ok(w) = rx.recv() {
        let Some(d) = deploys.upgrade() else { return };
        let Some(active) = d.active_with(id) else {
            return;
        };
        let _done = Compared(&active.pending);
        let set = d.candidate_set(&active, Some(&w.set));
        let policy = Policy {
            lineage: false,
            ..d.policy
        };
        let new = |set: &Arc<StageSet>| {
            Executor::new(
                d.runtime.clone(),
                Arc::new(LiveStages::new(set.stages.clone())),
                policy,
            )
        };
        let exec = cand.get_or_insert_with(|| new(&set));
        let report = match exec.run_on(set, &w.chunk, &w.ctx) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "deployment {id}: the shadow cannot run a chunk of job {}: {e:#}",
                    w.job
                );
                d.shadowed(id, |t| {
                    t.shadow.get_or_insert_with(Shadowed::default).failed += 1
                });
                continue;
            }
        };
        d.count(&report, Some(&active), true, Some(active.stage.name()));
        let mut before = Fates::default();
        before.add_parts(&w.output, &w.origin, &w.dead, true);
        let mut after = Fates::default();
        after.add(&report, false);
        let found = diff::compare(w.chunk.len() as u64, before, after, EXAMPLES);
        let result = if d.reduces {
            let fold = |exec: &mut Executor, acc: &mut Vec<u8>, p: &[u8]| -> Result<()> {
                if !p.is_empty() {
                    *acc = if acc.is_empty() {
                        p.to_vec()
                    } else {
                        exec.combine_two(acc, p)?
                    };
                }
                Ok(())
            };
            let live_exec = live.get_or_insert_with(|| new(&w.set));
            live_exec.switch_to(w.set.clone());
            let folded = fold(live_exec, &mut acc_live, &w.partial)
                .and_then(|()| fold(exec, &mut acc_cand, &report.partial));
            match folded {
                Ok(()) => {
                    let value =
                        |b: &[u8]| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null);
                    let (l, c) = (value(&acc_live), value(&acc_cand));
                    Some(ResultDelta {
                        changed: l != c,
                        live: l,
                        candidate: c,
                    })
                }
                Err(e) => {
                    tracing::warn!("deployment {id}: the shadow cannot combine results: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        d.shadowed(id, |t| {
            t.live.chunks += 1;
            t.live.events += w.live.events_in;
            t.live.dead_letters += w.live.failed;
            t.live.busy_ms += w.live.busy.as_secs_f64() * 1e3;
            t.point("live", w.live.events_in, w.live.failed);
            let s = t.shadow.get_or_insert_with(Shadowed::default);
            s.chunks += 1;
            s.events += found.events;
            s.changed += found.changed;
            s.new_dead_letters += found.new_dead_letters;
            s.fixed_dead_letters += found.fixed_dead_letters;
            for c in found.changes {
                if s.examples.len() >= EXAMPLES {
                    break;
                }
                s.examples.push(Example {
                    job: w.job,
                    change: serde_json::to_value(c).unwrap_or_default(),
                });
            }
            if result.is_some() {
                s.result = result;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_canary_takes_its_share_of_chunks() {
        for percent in [0u64, 10, 30, 50, 100] {
            let taken = (1..=200i64)
                .flat_map(|job| (0..50u64).map(move |seq| (job, seq)))
                .filter(|&(j, s)| super::share(j, s) < percent)
                .count();
            let share = taken as f64 / 10_000.0 * 100.0;
            assert!((share - percent as f64).abs() < 2.0, "{percent} %: {share}");
        }
        assert_eq!(super::share(7, 3), super::share(7, 3));
    }
}
