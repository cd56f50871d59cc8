//! Where jobs, their chunks, stored events, dead letters and results are
//! kept: [`sqlite`] for a single `wasmpipe serve` (the journal and the
//! store in one file), [`postgres`] for a cluster of ingest nodes and
//! workers. Both answer in the types of [`model`] and commit a chunk's
//! whole [`crate::exec::ChunkReport`] in one transaction.

pub mod model;
pub mod postgres;
pub mod sqlite;

pub use model::{
    Chunks, Combine, DeadRow, ErrorKind, EventQuery, EventRow, InputPurged, JobRow, WindowQuery,
    WindowRow,
};

/// Milliseconds since the Unix epoch: the time stamps of stored records.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
