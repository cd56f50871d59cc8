//! Write wasmpipe stages as plain Rust functions.
//!
//! A stage crate is a `cdylib` built for `wasm32-wasip1` holding one
//! function marked with one of [`map`], [`filter`], [`flat_map`] or
//! [`reduce`]. The attribute leaves the function as it is, so unit tests call
//! it directly, and generates the ABI exports (see the `wasmpipe-abi` crate)
//! that run it over each chunk of events the host sends.
//!
//! ```
//! use wasmpipe_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct In {
//!     n: i64,
//! }
//!
//! #[derive(Serialize)]
//! struct Out {
//!     n: i64,
//! }
//!
//! #[map]
//! fn double(ev: In) -> Out {
//!     Out { n: ev.n * 2 }
//! }
//! # fn main() { assert_eq!(double(In { n: 21 }).n, 42); }
//! ```
//!
//! Events and outputs are any serde types (`Value` included). A function may
//! take a last `ctx: &Context<P>` argument for the stage's params `P` and the
//! chunk's metadata, and may return `Result<_, E>` with `E: Display`: an `Err`
//! fails that one event, whose index and message reach the host. The
//! attribute docs list each kind's accepted signatures.
//!
//! # Layout
//! - `context`: [`Context`], the stage's params and the chunk's metadata.
//! - `runtime` (exposed to the macros as `__private`, not public API): the
//!   guest side of the ABI: buffers, descriptor, the per-kind chunk loops,
//!   panic capture. It compiles and is tested natively; only the generated
//!   `extern "C"` exports are wasm32-only.
#![deny(missing_docs)]

mod context;
mod merge;
mod runtime;

pub use context::Context;
pub use merge::{Merge, Output};
pub use wasmpipe_sdk_macros::{filter, flat_map, map, reduce};

/// The names a stage crate needs: `use wasmpipe_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{Context, Merge, filter, flat_map, map, reduce};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::Value;
}

/// Used by the code the macros generate. Not public API: it changes with the
/// macros, in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::export;
    pub use crate::runtime::{
        Accumulators, ByValue, Events, Fold, InPlace, NoParams, Outputs, Runtime, StageInfo,
        accumulators, events, outputs,
    };
    pub use wasmpipe_abi::kind;

    use crate::Context;
    use std::marker::PhantomData;

    /// The type of the absent key function of a reduce without `key = fn`.
    pub type NoKey<T> = fn(&T, &mut String);

    /// Writes the group name of a key returned by a `key = fn` function into
    /// a buffer reused for every event, so that finding an existing group
    /// allocates nothing. A helper rather than a bound on the runtime, so
    /// that a key borrowed from the event (`fn(&Word) -> &str`) works too.
    pub fn write_key<K: std::fmt::Display + ?Sized>(key: &K, buf: &mut String) {
        use std::fmt::Write;
        buf.clear();
        // Writing to a `String` cannot fail.
        let _ = write!(buf, "{key}");
    }

    /// The params type `P` of a stage, read off a closure whose argument has
    /// the type of the stage function's context argument. This accepts any
    /// spelling of that type (`&Context<P>`, `&Context`, an alias) without
    /// the macro having to parse it.
    pub fn params_of<P>(_: impl FnOnce(&Context<P>)) -> PhantomData<P> {
        PhantomData
    }
}
