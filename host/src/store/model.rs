//! What both stores hold, as the API and the workers see it: jobs, stored
//! events, dead letters and the filters of a listing. The SQLite store of
//! a single `serve` and the PostgreSQL store of a cluster answer in these
//! same types, so the HTTP routes do not know which one they read.

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
}

/// Filters of an event listing.
#[derive(Debug, Default, Clone)]
pub struct EventQuery {
    /// Pipeline.
    pub pipeline: Option<String>,
    /// Job.
    pub job: Option<i64>,
    /// From this time (ms, inclusive).
    pub since: Option<i64>,
    /// Before this time (ms, exclusive).
    pub until: Option<i64>,
    /// `(JSON path, value)`: the field's value, as text, equals the value.
    pub fields: Vec<(String, String)>,
    /// Rows after this id.
    pub after: i64,
    /// Most rows.
    pub limit: u32,
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
