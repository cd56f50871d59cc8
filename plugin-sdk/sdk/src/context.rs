//! [`Context`]: what a stage function may know besides the event itself.

use serde_json::{Map, Value};

/// The stage's view of its surroundings, passed as an optional last argument
/// (`ctx: &Context<P>`) to every stage function.
///
/// `P` is the type of the stage's `params` from the manifest. They are
/// deserialized once, when the host initialises the instance, so a function
/// that reads them per event pays nothing per event. The default, [`Value`],
/// accepts any params.
///
/// Outside wasm the context is an ordinary value, so unit tests can build one
/// and call the stage function directly:
///
/// ```
/// use wasmpipe_sdk::Context;
/// use serde_json::{Map, Value};
///
/// let mut meta = Map::new();
/// meta.insert("host".into(), Value::from("web-1"));
/// let ctx = Context::new("enrich", 42u32).with_meta(meta);
/// assert_eq!(*ctx.params(), 42);
/// assert_eq!(ctx.meta_str("host"), Some("web-1"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Context<P = Value> {
    pub(crate) stage: String,
    pub(crate) params: P,
    pub(crate) meta: Map<String, Value>,
    pub(crate) index: usize,
}

impl<P> Context<P> {
    /// A context for the stage named `stage` with the given params, no chunk
    /// metadata and event index 0.
    pub fn new(stage: impl Into<String>, params: P) -> Self {
        Context {
            stage: stage.into(),
            params,
            meta: Map::new(),
            index: 0,
        }
    }

    /// Replaces the chunk metadata (what the host sends with each chunk).
    #[must_use]
    pub fn with_meta(mut self, meta: Map<String, Value>) -> Self {
        self.meta = meta;
        self
    }

    /// Replaces the index of the current event within its chunk.
    #[must_use]
    pub fn with_index(mut self, index: usize) -> Self {
        self.index = index;
        self
    }

    /// The stage's params, as given in the manifest.
    pub fn params(&self) -> &P {
        &self.params
    }

    /// The stage's name in the manifest (not the Rust function's name: one
    /// module can serve several stages of a pipeline).
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// Metadata the host attached to the current chunk, such as `pipeline`,
    /// `job`, `host` and `received_at`. Empty when the host sent none.
    pub fn meta(&self) -> &Map<String, Value> {
        &self.meta
    }

    /// The chunk metadata entry `key` when it is a string.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(Value::as_str)
    }

    /// Index of the current event within its chunk (0 outside a chunk).
    pub fn index(&self) -> usize {
        self.index
    }
}
