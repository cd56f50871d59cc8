//! wasmpipe: run stages compiled to WebAssembly over streams of JSON events.
//!
//! # Layout
//!
//! - [`manifest`]: the pipeline manifest (TOML), validated while parsed;
//!   errors point at `file:line:column` with a hint.
//! - [`runtime`]: the wasmtime engine, the module cache, sandboxed stage
//!   instances and the ABI calls (one per chunk).
//! - [`exec`]: the data path shared by every command: sources split input
//!   into chunks, the chain runs a chunk through every stage with fault
//!   isolation, the pipeline runs chains on worker threads and writes the
//!   sink and dead letters.
//! - [`watch`]: hot reload for `run --watch`: file watching, the checks a
//!   new stage version passes, swapping it in between chunks; the
//!   never-ending source.
//! - [`build`]: building stage crates for `wasm32-wasip1` with cargo.
//! - [`serve`]: `wasmpipe serve`, the HTTP service: ingest into a SQLite
//!   journal, workers running the same chunk executor, stored events,
//!   results per job.
//! - [`cli`]: the `wasmpipe` command line, one module per subcommand.
#![deny(missing_docs)]

pub mod build;
pub mod cli;
pub mod exec;
pub mod manifest;
pub mod runtime;
pub mod serve;
pub mod watch;
