//! wasmpipe: run stages compiled to WebAssembly over streams of JSON events.
//!
//! # Layout
//!
//! - [`manifest`]: the pipeline manifest (TOML), validated while parsed;
//!   errors point at `file:line:column` with a hint.
//! - [`runtime`]: the wasmtime engine, the module cache, sandboxed stage
//!   instances and the ABI calls (one per chunk), versioned stage sets.
//! - [`exec`]: the data path every mode shares: sources cut input into
//!   chunks, the executor runs one chunk through every stage with fault
//!   isolation, timeout retries and lineage, and returns one chunk report;
//!   `run`'s pipeline runs executors on worker threads, and one loop
//!   ([`exec::stored`]) takes a stored chunk to its commit for `serve`'s
//!   workers and `worker`'s slots alike.
//! - [`reload`]: hot reload for `run`, `serve` and `worker` (`--watch`):
//!   file watching, the checks a new stage version passes; the
//!   never-ending source of `run --watch`.
//! - [`store`]: one interface, [`store::Backend`], for jobs, chunks,
//!   stored events, dead letters and results: embedded (SQLite and an
//!   in-memory queue) for one `serve`, cluster (PostgreSQL and JetStream)
//!   for ingest nodes and workers.
//! - [`queue`]: where chunks wait: in memory, or in NATS JetStream.
//! - [`serve`]: `wasmpipe serve`, the HTTP service (and a cluster's ingest
//!   node), by area, over whichever backend.
//! - [`worker`]: `wasmpipe worker`, a cluster's worker process: the
//!   stored-chunk loop over JetStream, and what only a cluster needs.
//! - [`tls`]: https for `serve` (rustls, certificates re-read when they
//!   change, client certificates), TLS to PostgreSQL as libpq spells it.
//! - [`metrics`]: Prometheus counters of `serve` and `worker`.
//! - [`build`]: building stage crates for `wasm32-wasip1` with cargo.
//! - [`cli`]: the `wasmpipe` command line, one module per subcommand.
#![deny(missing_docs)]

pub mod build;
pub mod cli;
pub mod exec;
// The bodies of the fuzz targets (bench/fuzz), here so that CI runs them
// over their corpora too; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod manifest;
pub mod metrics;
pub mod queue;
pub mod reload;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod tls;
pub mod worker;
