//! Where chunks wait for a worker: [`memory`], the in-process queue of a
//! single `wasmpipe serve` (its chunks are in the SQLite journal), and
//! [`jetstream`], the NATS JetStream stream that ingest nodes publish to
//! and every `wasmpipe worker` pulls from.

pub mod jetstream;
pub mod memory;
