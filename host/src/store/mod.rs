//! Where jobs, their chunks, stored events, dead letters and results are
//! kept, behind one interface, [`Backend`]:
//!
//! - [`embedded`]: a single `wasmpipe serve`; [`sqlite`] is its journal
//!   and store in one file, and it queues chunk keys in memory;
//! - [`cluster`]: ingest nodes and `wasmpipe worker`s; [`postgres`] holds
//!   jobs and results, JetStream the chunks.
//!
//! Both answer in the types of [`model`] and commit a chunk's whole
//! [`crate::exec::ChunkReport`] in one transaction, at most once.

pub mod backend;
pub mod cluster;
pub mod embedded;
pub mod model;
pub mod postgres;
mod postgres_deploys;
pub mod search;
pub mod sql;
pub mod sqlite;
mod sqlite_deploys;

pub use backend::{Backend, Backlog, NewJob, Refused, Results, Submitted};
pub use model::{
    Chunks, Combine, DeadQuery, DeadRow, DeploymentRow, ErrorKind, EventQuery, EventRow, Histogram,
    InputPurged, JobRow, NewDeployment, QueryError, Table, WindowQuery, WindowRow,
};
pub use search::{FieldPath, Indexing, Search, Term};

/// Events as NDJSON chunks of `chunk_size` (a retry's dead letters).
pub fn cut(events: &[Vec<u8>], chunk_size: usize) -> Chunks {
    let mut batch = crate::exec::chunk::Batcher::new(chunk_size);
    for e in events {
        batch.push(e);
    }
    batch.finish()
}
