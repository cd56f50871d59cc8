//! Shared by the benchmark binaries: the three workloads' data, their
//! computations as plain native Rust (the baseline wasmpipe is measured
//! against), and the fixed context values both sides use so their outputs
//! can be compared byte for byte.
//!
//! # Layout
//! - [`data`]: deterministic data for W1 (adder) and W2/W3 (log events).
//! - [`native`]: W1, W2 and W3 computed natively, on N threads.
//! - `bin/gen.rs (uses [`data`])`, `bin/native.rs`: command-line wrappers.
//! - `bin/compare.rs`: builds and runs everything, prints the table.

pub mod data;
pub mod native;

/// `received_at` both sides stamp on W2 events (wasmpipe via `--meta`).
pub const RECEIVED_AT: &str = "2026-11-27T12:00:00.000Z";
/// `host` both sides stamp on W2 events.
pub const HOST: &str = "bench-host";
