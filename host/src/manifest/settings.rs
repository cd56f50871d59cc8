//! `[serve]` resolved: the limits and policies `serve`'s routes and every
//! worker of a stored chunk (embedded or on a cluster) go by.

use super::{DEFAULT_CHUNK_SIZE, Manifest, ServeSection};
use crate::exec::window::spec::{TimeSource, WindowSpec};
use crate::store::{FieldPath, Indexing};
use std::time::Duration;

/// Limits and policies from `[serve]`, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest body.
    pub max_body: usize,
    /// Most events per batch.
    pub max_events: usize,
    /// Largest event.
    pub max_event_size: usize,
    /// Most queued events.
    pub max_backlog: u64,
    /// Events per chunk.
    pub chunk_size: usize,
    /// Longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Timeout retries, and the pause before a chunk is tried again.
    pub retries: super::Retries,
    /// Stored events are kept this long.
    pub retention: Option<Duration>,
    /// Header naming the identity.
    pub identity_header: Option<String>,
    /// Store the events a final reduce folds in.
    pub store_reduce_input: bool,
    /// Web origins allowed to post to the ingest routes (CORS).
    pub cors_origins: Vec<String>,
    /// What the store indexes for search.
    pub indexing: Indexing,
}

impl Settings {
    /// From the manifest's `[serve]` (or its defaults).
    pub fn new(manifest: &Manifest, serve: &ServeSection) -> Settings {
        Settings {
            max_body: serve.max_body.0 as usize,
            max_events: serve.max_events.get(),
            max_event_size: serve.max_event_size.0 as usize,
            max_backlog: serve.max_backlog.get(),
            chunk_size: serve
                .chunk_size
                .or(manifest.doc.runtime.chunk_size)
                .map_or(DEFAULT_CHUNK_SIZE.min(1000), |n| n.get()),
            body_timeout: serve.body_timeout.0,
            retries: manifest.retries(),
            retention: serve.retention.map(|d| d.0),
            identity_header: serve
                .identity_header
                .as_ref()
                .map(|h| h.get_ref().to_ascii_lowercase()),
            store_reduce_input: serve.store_reduce_input,
            cors_origins: serve.cors_origins.clone(),
            indexing: indexing(manifest, serve),
        }
    }
}

/// `[serve]`'s `index`, `full_text` and `time` (else a windowed reduce's
/// event time), resolved.
fn indexing(manifest: &Manifest, serve: &ServeSection) -> Indexing {
    let time = match &serve.time {
        Some(p) => TimeSource::Field {
            pointer: p.get_ref().clone(),
            path: crate::runtime::window::pointer_path(p.get_ref()),
            format: super::TimeFormat::Auto,
        },
        None => manifest
            .doc
            .stages
            .iter()
            .rev()
            .find_map(|s| s.window.as_ref())
            .map_or(TimeSource::Arrival, |w| {
                WindowSpec::from_section(w.get_ref()).time
            }),
    };
    Indexing {
        full_text: serve.full_text,
        // Checked by the manifest's validation.
        fields: serve
            .index
            .iter()
            .filter_map(|p| FieldPath::pointer(p.get_ref()).ok())
            .collect(),
        time,
    }
}
