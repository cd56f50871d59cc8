//! What both stores hold, as the API and the workers see it: jobs, stored
//! events, dead letters and the filters of a listing. The SQLite store of
//! a single `serve` and the PostgreSQL store of a cluster answer in these
//! same types, so the HTTP routes do not know which one they read.

use super::search::{FieldPath, Term};
use anyhow::Result;

/// What a failed store call came to, for whoever decides whether to try
/// it again: retry safety is a match on this, in one place, not a search
/// through an error chain at every call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database is away, restarting or out of resources: the same
    /// call may work once it is back.
    Unavailable,
    /// The call lost to a concurrent one (a deadlock, a serialization
    /// failure, SQLite busy): the same call may work at once.
    Conflict,
    /// Anything else (a constraint, a bad statement, one of wasmpipe's own
    /// checks): it would fail again the same way.
    Other,
}

/// A replay of a job whose input retention has deleted: there is nothing
/// to run again (the API answers 410 Gone for this, and only this).
#[derive(Debug, thiserror::Error)]
#[error("the input of job {job} is past its retention and was deleted")]
pub struct InputPurged {
    /// The job.
    pub job: i64,
}

/// A job's input cut into chunks: each chunk's events (NDJSON) and count.
pub type Chunks = Vec<(Vec<u8>, u64)>;

/// How a job's chunks are combined into its result: given the non-empty
/// partials in chunk order, returns the result (JSON).
pub type Combine<'a> = dyn FnMut(Vec<Vec<u8>>) -> Result<Vec<u8>> + Send + 'a;

/// One row of `jobs`, as the API shows it.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Id.
    pub id: i64,
    /// Pipeline.
    pub pipeline: String,
    /// `ingest`, `replay`, `retry`.
    pub kind: String,
    /// The job replayed or retried.
    pub origin: Option<i64>,
    /// Times (ms).
    pub received_at: i64,
    /// First chunk taken up.
    pub started_at: Option<i64>,
    /// Last chunk done.
    pub finished_at: Option<i64>,
    /// Request state.
    pub context: String,
    /// Events accepted.
    pub events_in: u64,
    /// Events stored.
    pub events_out: u64,
    /// Events dead-lettered.
    pub dead_letters: u64,
    /// Timeout retries made.
    pub retries: u64,
    /// Chunks.
    pub chunks: u64,
    /// Chunks done.
    pub chunks_done: u64,
    /// The reduce result (JSON), once done.
    pub result: Option<String>,
    /// The distinct stage-version sets its chunks were processed by.
    pub versions: Vec<String>,
    /// Its client was answered with an error and its chunks are dropped
    /// (ingest nodes on NATS only).
    pub abandoned: bool,
    /// The stage versions a replay was asked to run on (JSON: stage name
    /// to whole version), if any.
    pub pinned: Option<String>,
}

/// A stored event or dead letter, as listed.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Row id (the cursor).
    pub id: i64,
    /// Job.
    pub job: i64,
    /// Pipeline.
    pub pipeline: String,
    /// Index in the job of the input event it came from.
    pub index: u64,
    /// The job's received_at (ms).
    pub at: i64,
    /// The event's own time where the manifest names one, else `at` (ms).
    pub time: i64,
    /// The event (JSON).
    pub body: String,
}

/// A dead letter, as listed.
#[derive(Debug, Clone)]
pub struct DeadRow {
    /// Row id (the cursor).
    pub id: i64,
    /// Job.
    pub job: i64,
    /// Pipeline.
    pub pipeline: String,
    /// Stage.
    pub stage: String,
    /// Why.
    pub error: String,
    /// Index of the event in its job.
    pub index: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The job's received_at (ms).
    pub at: i64,
    /// The event.
    pub event: Vec<u8>,
    /// The job that retried it.
    pub retried_by: Option<i64>,
    /// The versions of the stages of the chunk it was in (JSON: stage name
    /// to 12 hex digits), as `run`'s dead-letter records end with; `None`
    /// only if that chunk's record is gone.
    pub versions: Option<String>,
}

/// Filters of an event listing.
#[derive(Debug, Default, Clone)]
pub struct EventQuery {
    /// Pipeline.
    pub pipeline: Option<String>,
    /// Job.
    pub job: Option<i64>,
    /// From this time (ms, inclusive): the event's time.
    pub since: Option<i64>,
    /// Before this time (ms, exclusive).
    pub until: Option<i64>,
    /// The field's value, as text, equals the value.
    pub fields: Vec<(FieldPath, String)>,
    /// Words, phrases and prefixes the event's text must all hold.
    pub terms: Vec<Term>,
    /// Rows after this id (oldest first).
    pub after: i64,
    /// Newest first, from rows before `before`.
    pub newest_first: bool,
    /// With `newest_first`: rows before this id.
    pub before: Option<i64>,
    /// Most rows.
    pub limit: u32,
}

/// Filters of a dead-letter listing, oldest first.
#[derive(Debug, Default, Clone)]
pub struct DeadQuery {
    /// Pipeline.
    pub pipeline: Option<String>,
    /// Job.
    pub job: Option<i64>,
    /// Words, phrases and prefixes its error or event must all hold.
    pub terms: Vec<Term>,
    /// Rows after this id.
    pub after: i64,
    /// Most rows.
    pub limit: u32,
}

/// Matches of an event query counted over time.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Matches in all.
    pub total: u64,
    /// The range the buckets cover (ms; the matches' when not asked).
    pub since: Option<i64>,
    /// End of the range (exclusive).
    pub until: Option<i64>,
    /// Width of a bucket (ms).
    pub interval: i64,
    /// Matches per bucket, from `since`, every bucket present.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Buckets over `since..until` (ms): about `buckets` of them, each a
    /// round width (1 s, 5 s, 1 min, 1 h, 1 day...), the first starting at
    /// a multiple of its width. Returns the first start, the width and the
    /// number of buckets.
    pub fn frame(since: i64, until: i64, buckets: u32) -> (i64, i64, i64) {
        const SEC: i64 = 1000;
        const WIDTHS: [i64; 19] = [
            1,
            10,
            100,
            SEC,
            5 * SEC,
            10 * SEC,
            30 * SEC,
            60 * SEC,
            5 * 60 * SEC,
            10 * 60 * SEC,
            30 * 60 * SEC,
            3600 * SEC,
            3 * 3600 * SEC,
            6 * 3600 * SEC,
            12 * 3600 * SEC,
            86400 * SEC,
            7 * 86400 * SEC,
            30 * 86400 * SEC,
            365 * 86400 * SEC,
        ];
        let until = until.max(since + 1);
        let ceil = |a: i64, b: i64| (a + b - 1) / b;
        let want = ceil(until - since, i64::from(buckets.max(1)));
        let width = WIDTHS
            .iter()
            .copied()
            .find(|&w| w >= want)
            .unwrap_or_else(|| ceil(want, WIDTHS[18]) * WIDTHS[18]);
        let first = since.div_euclid(width) * width;
        (first, width, ceil(until - first, width))
    }
}

/// An answer to read-only SQL.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows of JSON values.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Why read-only SQL was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement does not parse or names what does not exist.
    #[error("{0}")]
    Invalid(String),
    /// It would write, attach, change settings or read files.
    #[error("{0}")]
    Refused(String),
    /// Past the row limit or the statement timeout.
    #[error("{0}")]
    TooBig(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A closed window's result, as listed.
#[derive(Debug, Clone)]
pub struct WindowRow {
    /// Row id (the cursor).
    pub id: i64,
    /// Pipeline.
    pub pipeline: String,
    /// Start (inclusive) and end (exclusive), ms.
    pub start: i64,
    /// End, ms.
    pub end: i64,
    /// Group key (`None`: an unkeyed reduce).
    pub key: Option<String>,
    /// The result (JSON).
    pub value: String,
    /// When it closed (ms).
    pub closed_at: i64,
}

/// Filters of a window listing.
#[derive(Debug, Default, Clone)]
pub struct WindowQuery {
    /// Pipeline.
    pub pipeline: Option<String>,
    /// Group key.
    pub key: Option<String>,
    /// Windows starting at or after this (ms).
    pub since: Option<i64>,
    /// Windows ending at or before this (ms).
    pub until: Option<i64>,
    /// Rows after this id.
    pub after: i64,
    /// Most rows.
    pub limit: u32,
}

/// A candidate version of a stage deployed beside the live one, as
/// recorded (see [`crate::exec::deploy`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentRow {
    /// Its id.
    pub id: i64,
    /// Pipeline.
    pub pipeline: String,
    /// The stage it is a version of.
    pub stage: String,
    /// The candidate's whole version.
    pub version: String,
    /// The live version's when it was deployed: a promote replaces that
    /// one, and after a restart it applies only if that one is still live.
    pub base: String,
    /// `shadow` or `canary`.
    pub mode: String,
    /// A canary's share of chunks, in percent (100 for a shadow: it sees
    /// every chunk).
    pub percent: u8,
    /// `active`, `promoted`, `aborted`, `rolled_back` or `dropped`.
    pub state: String,
    /// When (ms) and by whom (a token's or certificate's name).
    pub created_at: i64,
    /// See `created_at`.
    pub created_by: String,
    /// When it stopped being active.
    pub ended_at: Option<i64>,
    /// Who ended it (`error budget` for an automatic rollback).
    pub ended_by: Option<String>,
    /// Why it ended, where there is more to say.
    pub reason: Option<String>,
}

/// A deployment to record.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// As in [`DeploymentRow`].
    pub pipeline: String,
    /// As in [`DeploymentRow`].
    pub stage: String,
    /// As in [`DeploymentRow`].
    pub version: String,
    /// As in [`DeploymentRow`].
    pub base: String,
    /// As in [`DeploymentRow`].
    pub mode: String,
    /// As in [`DeploymentRow`].
    pub percent: u8,
    /// As in [`DeploymentRow`].
    pub created_at: i64,
    /// As in [`DeploymentRow`].
    pub created_by: String,
    /// The candidate module: every process running the pipeline loads it
    /// from here, after a restart too.
    pub module: Vec<u8>,
}
