//! What ingest nodes and workers of a cluster both connect to: the
//! PostgreSQL store and the NATS JetStream queue of the manifest.

use crate::manifest::Manifest;
use crate::queue::jetstream::ChunkQueue;
use crate::store::postgres::{self, PgStore};
use anyhow::{Context as _, Result};

/// Connects to the manifest's PostgreSQL store (creating the schema if
/// needed) and NATS queue (creating the stream if needed).
pub async fn connect(manifest: &Manifest) -> Result<(PgStore, ChunkQueue)> {
    let q = manifest.doc.queue.clone().unwrap_or_default();
    let st = manifest.doc.store.clone().unwrap_or_default();
    let url = st
        .postgres_url()
        .context("`[store]` has no PostgreSQL `url`")?;
    let store = PgStore::connect(&url, st.pool.get()).await?;
    let queue = ChunkQueue::connect(&q, manifest.name()).await?;
    tracing::info!(
        "chunks go through JetStream at {}, results to PostgreSQL at {}",
        postgres::redact(&q.nats_url()),
        postgres::redact(&url)
    );
    Ok((store, queue))
}
