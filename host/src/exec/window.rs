//! Windowed reduce: a reduce stage with a `window` folds each chunk's
//! events per event-time window (and key) in the executor ([`plan`] says
//! which events go together, one guest call per window the chunk
//! touches), and a [`WindowBook`] commits those partials, in commit order,
//! against the open windows of a store: it decides which events are late,
//! combines partials into open windows, and emits each window once, when
//! the watermark passes its end. `docs/guide.md` ("Windows") gives the
//! semantics with a worked example.

pub mod book;
pub mod field;
pub mod memory;
pub mod plan;

/// What a windowed reduce runs: its spec lives with the stage's (the
/// runtime's), and is re-exported here for the window code.
pub use crate::runtime::window as spec;

pub use book::{Fold, Needs, WindowBook, WindowPart, WindowedChunk, WindowsCommitted};
pub use memory::{Changes, Clock, Closed, MemoryWindows};
pub use spec::{Kind, Millis, TimeSource, WindowSpec};
