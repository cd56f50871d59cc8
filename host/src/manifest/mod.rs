//! The pipeline manifest (TOML): plain serde types that validate while they
//! parse, then a second pass for what needs the whole file (stage order,
//! unique names, plugin files on disk). Every error is a [`Diagnostic`]
//! pointing at the offending text. `docs/manifest.md` documents each field.

pub mod budget;
mod cluster;
mod diagnostic;
mod serve;
mod settings;
mod units;
mod window;

pub use budget::{Budget, BudgetSection};
pub use cluster::{
    NATS_URL_ENV, POSTGRES_URL_ENV, QueueKind, QueueSection, StoreKind, StoreSection, redact,
};
pub use diagnostic::Diagnostic;
pub use serve::{ListenAddr, Permission, ServeSection, TlsSection, TokenSection};
pub use settings::Settings;
pub use units::{ByteSize, DurationSpec, Retries};
pub use window::{DEFAULT_IDLE, DEFAULT_MAX_OPEN_WINDOWS, TimeFormat, WindowKind, WindowSection};

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Default number of events per chunk: large enough that the per-call cost
/// vanishes, small enough that a chunk of 300-byte events stays near 1 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 4096;
/// Default memory limit of one stage instance.
pub const DEFAULT_MEMORY: ByteSize = ByteSize(64 << 20);
/// Most output bytes one guest call may return, unless `limits.output` says.
pub const DEFAULT_OUTPUT: ByteSize = ByteSize(64 << 20);
/// Default wall-time limit of one guest call (one chunk).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it was read from.
    pub path: PathBuf,
    /// The directory relative paths in it are resolved against.
    pub dir: PathBuf,
    /// The raw TOML document.
    pub doc: Document,
}

/// The TOML document as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// `[pipeline]`: the pipeline's identity.
    pub pipeline: PipelineSection,
    /// `[source]`: where events come from.
    #[serde(default)]
    pub source: SourceSection,
    /// `[[stage]]`: the stages, in order.
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageSection>,
    /// `[sink]`: where outputs go.
    #[serde(default)]
    pub sink: SinkSection,
    /// `[dead_letters]`: where failed events go.
    #[serde(default)]
    pub dead_letters: DeadLetterSection,
    /// `[runtime]`: workers, chunking and default limits.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[serve]`: the HTTP service (`wasmpipe serve`).
    #[serde(default)]
    pub serve: Option<ServeSection>,
    /// `[queue]`: where accepted work waits (embedded SQLite or NATS).
    #[serde(default)]
    pub queue: Option<QueueSection>,
    /// `[store]`: the central database (SQLite or PostgreSQL).
    #[serde(default)]
    pub store: Option<StoreSection>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// The pipeline's name; tags logs, metrics and stored results.
    pub name: Name,
    /// Free text for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// `[source]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Input file, relative to the manifest; `"-"` or absent means stdin.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// How events are framed in the input.
    #[serde(default)]
    pub format: Option<SourceFormat>,
}

/// How events are framed in a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// One JSON value per line (NDJSON); blank lines are skipped.
    Jsonl,
    /// A single JSON array whose elements are the events.
    JsonArray,
}

/// `[[stage]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSection {
    /// The stage's name, unique in the pipeline.
    pub name: Spanned<Name>,
    /// What the stage does; must match the kind its plugin exports.
    pub kind: Spanned<StageKind>,
    /// The compiled stage module (`.wasm`), or a stage crate's directory
    /// (built with `wasmpipe build`), relative to the manifest.
    pub plugin: Spanned<String>,
    /// Parameters handed to the stage at start-up (its `Context::params`).
    #[serde(default)]
    pub params: Option<Spanned<toml::Table>>,
    /// For a keyed reduce: a JSON pointer (`"/service"`) naming each event's
    /// group key. One result per key.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Limits overriding `[runtime]`'s defaults for this stage.
    #[serde(default)]
    pub limits: Limits,
    /// Host resources the stage may touch; none by default.
    #[serde(default)]
    pub allow: Allow,
    /// Sample events (JSON lines, relative to the manifest) that a new
    /// version of the stage must process without a failure before
    /// `run --watch` swaps it in, and that `check` runs it on.
    #[serde(default)]
    pub samples: Option<Spanned<String>>,
    /// How events reach this stage, overriding `[runtime] events`.
    #[serde(default)]
    pub events: Option<EventEncoding>,
    /// For a reduce: fold per event-time window (and key) instead of over
    /// the whole input.
    #[serde(default)]
    pub window: Option<Spanned<WindowSection>>,
    /// The dead letters a version of this stage may make before it is
    /// judged bad (see [`budget`]).
    #[serde(default)]
    pub budget: Option<BudgetSection>,
    /// Under `run --watch`: a candidate version beside this one (see
    /// [`budget::CandidateSection`]).
    #[serde(default)]
    pub candidate: Option<budget::CandidateSection>,
}

/// `events` of `[runtime]` or a stage: whether the host may hand a stage
/// its events as MessagePack frames instead of JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventEncoding {
    /// Frames to every stage whose module takes them (the SDK's do), except
    /// in a pipeline of one map, filter or flat_map stage: there no stage
    /// boundary is saved, and a filter or a `Merge` map, which read only
    /// some fields of the JSON text, do better on the text itself.
    #[default]
    Auto,
    /// Frames to every stage whose module takes them.
    Msgpack,
    /// JSON lines, always: for a stage that needs the event's text (a
    /// `serde_json::value::RawValue` field), or to compare.
    Json,
}

/// Resource limits of one stage instance.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory an instance may grow to.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Longest a single guest call (one chunk) may run.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Most output bytes one guest call may hand back (default 64 MiB);
    /// past it the chunk is split, down to the event that overflows alone,
    /// which becomes a dead letter.
    #[serde(default)]
    pub output: Option<ByteSize>,
}

/// Capabilities granted to a stage. The default grants nothing: no files,
/// no environment variables, a clock frozen at the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Host environment variables the stage may read (by name).
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directories the stage may open.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Whether the stage sees the real wall and monotonic clocks.
    #[serde(default)]
    pub clock: bool,
}

/// One directory made visible to a stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Host path, relative to the manifest.
    pub host: Spanned<String>,
    /// Path the stage opens it by.
    pub guest: String,
    /// Whether the stage may write in it.
    #[serde(default)]
    pub writable: bool,
}

/// `[sink]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Output file (JSON lines), relative to the manifest; `"-"` or absent
    /// means stdout.
    #[serde(default)]
    pub path: Option<String>,
}

/// `[dead_letters]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSection {
    /// Dead-letter file (JSON lines), relative to the manifest. Defaults to
    /// `<pipeline>.dead.jsonl` beside the manifest; created on first use.
    #[serde(default)]
    pub path: Option<String>,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Worker threads; each runs every stage of the pipeline. Default: cores.
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
    /// Events per chunk (one guest call per stage per chunk).
    #[serde(default)]
    pub chunk_size: Option<std::num::NonZeroUsize>,
    /// Keep outputs in input order (default). `false` writes chunks as they
    /// finish.
    #[serde(default)]
    pub ordered: Option<bool>,
    /// Default memory limit per stage instance.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Default wall-time limit per guest call.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Largest single event; larger ones are dead-lettered by the source.
    #[serde(default)]
    pub max_event_size: Option<ByteSize>,
    /// Where compiled modules are cached; default `$XDG_CACHE_HOME/wasmpipe`.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Whether each output object gets a `"_versions"` field naming the
    /// version of every stage that produced it.
    #[serde(default)]
    pub lineage: Option<bool>,
    /// Retries of an event whose stage timed out, before it becomes a dead
    /// letter (every mode; default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Pause before the first timeout retry; doubles with each further one
    /// (default 100ms).
    #[serde(default)]
    pub retry_backoff: Option<DurationSpec>,
    /// How events reach stages (default `auto`: MessagePack where the
    /// stage's module takes it).
    #[serde(default)]
    pub events: Option<EventEncoding>,
}

/// A stage kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// One event in, one out.
    Map,
    /// Keeps or drops each event.
    Filter,
    /// One event in, any number out.
    FlatMap,
    /// Folds events into an accumulator.
    Reduce,
}

impl StageKind {
    /// The kind as spelled in manifests and stage metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Map => wasmpipe_abi::kind::MAP,
            StageKind::Filter => wasmpipe_abi::kind::FILTER,
            StageKind::FlatMap => wasmpipe_abi::kind::FLAT_MAP,
            StageKind::Reduce => wasmpipe_abi::kind::REDUCE,
        }
    }

    /// Parses the spelling used in stage metadata.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "map" => Some(StageKind::Map),
            "filter" => Some(StageKind::Filter),
            "flat_map" => Some(StageKind::FlatMap),
            "reduce" => Some(StageKind::Reduce),
            _ => None,
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline or stage name: ASCII letters, digits, `-` and `_`, starting
/// with a letter, at most 64 characters. Names appear in logs, metrics,
/// URLs and dead letters, so they stay plain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok_start = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        let bad = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'));
        if s.is_empty() {
            return Err(
                "name must not be empty; hint: use ASCII letters, digits, '-' and '_'".into(),
            );
        }
        if let Some(c) = bad {
            return Err(format!(
                "invalid name `{s}`: `{c}` is not allowed; hint: use ASCII letters, digits, '-' and '_', e.g. `{}`",
                s.replace(|c: char| !(c.is_ascii_alphanumeric() || c == '_'), "-")
            ));
        }
        if !ok_start {
            return Err(format!(
                "invalid name `{s}`; hint: a name starts with a letter"
            ));
        }
        if s.len() > 64 {
            return Err(format!(
                "invalid name `{s}`; hint: a name has at most 64 characters"
            ));
        }
        Ok(Name(s))
    }
}

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path:?}: {source}")]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ManifestError {
    /// The diagnostic, when the problem is located in the file.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ManifestError::Invalid(d) => Some(d),
            ManifestError::Io { .. } => None,
        }
    }
}

impl Manifest {
    /// Reads, parses and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(path, &text)
    }

    /// Parses and validates manifest `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let doc: Document = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            // Validators write "what is wrong; hint: what to do" (see units.rs).
            let full = e.message().trim_end();
            let (message, hint) = match full.split_once("; hint: ") {
                Some((m, h)) => (m.to_string(), h.to_string()),
                None => (full.to_string(), hint_for(full)),
            };
            ManifestError::Invalid(Box::new(
                Diagnostic::new(path, text, span, message).with_hint(hint),
            ))
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let manifest = Manifest {
            path: path.to_path_buf(),
            dir,
            doc,
        };
        manifest
            .validate(text)
            .map_err(|d| ManifestError::Invalid(Box::new(d)))?;
        Ok(manifest)
    }

    fn validate(&self, text: &str) -> Result<(), Diagnostic> {
        let at = |span: std::ops::Range<usize>, msg: String| {
            Diagnostic::new(&self.path, text, span, msg)
        };
        let stages = &self.doc.stages;
        if stages.is_empty() {
            let span = text.find("[pipeline]").map_or(0..0, |i| i..i + 10);
            return Err(at(span, "the pipeline has no stages".into())
                .with_hint("add a `[[stage]]` table with `name`, `kind` and `plugin`"));
        }
        let mut names = HashSet::new();
        for (i, stage) in stages.iter().enumerate() {
            if !names.insert(stage.name.get_ref().clone()) {
                return Err(at(
                    stage.name.span(),
                    format!("stage name `{}` is used twice", stage.name.get_ref()),
                )
                .with_hint("give every stage a unique `name`"));
            }
            let kind = *stage.kind.get_ref();
            if kind == StageKind::Reduce && i + 1 != stages.len() {
                return Err(at(stage.kind.span(), format!("reduce stage `{}` must be the last stage", stage.name.get_ref()))
                    .with_hint("a reduce consumes every event; move it to the end, or run a second pipeline over its result"));
            }
            if let Some(key) = &stage.key {
                if kind != StageKind::Reduce {
                    return Err(at(
                        key.span(),
                        format!(
                            "`key` is only meaningful on a reduce stage, and `{}` is a {kind}",
                            stage.name.get_ref()
                        ),
                    )
                    .with_hint("remove `key`, or make this stage a `reduce`"));
                }
                if !key.get_ref().starts_with('/') {
                    return Err(at(
                        key.span(),
                        format!("`key` must be a JSON pointer, got `{}`", key.get_ref()),
                    )
                    .with_hint(format!(
                        "JSON pointers start with '/', e.g. `key = \"/{}\"`",
                        key.get_ref().trim_start_matches(['.', '$'])
                    )));
                }
            }
            if let Some(window) = &stage.window {
                if kind != StageKind::Reduce {
                    return Err(at(
                        window.span(),
                        format!(
                            "`window` is only meaningful on a reduce stage, and `{}` is a {kind}",
                            stage.name.get_ref()
                        ),
                    )
                    .with_hint("remove `window`, or make this stage a `reduce`"));
                }
                window.get_ref().validate(&at)?;
            }
            if let Some(budget) = &stage.budget {
                budget.validate(&stage.name.get_ref().to_string(), &at)?;
            }
            if let Some(c) = &stage.candidate {
                c.validate(&stage.name.get_ref().to_string(), &at)?;
                if !self.resolve(c.plugin.get_ref()).exists() {
                    return Err(at(
                        c.plugin.span(),
                        format!(
                            "candidate plugin {:?} of stage `{}` does not exist",
                            self.resolve(c.plugin.get_ref()),
                            stage.name.get_ref()
                        ),
                    )
                    .with_hint("paths are relative to the manifest"));
                }
            }
            let plugin = self.resolve(stage.plugin.get_ref());
            if plugin.is_dir() && crate::build::Language::of(&plugin).is_err() {
                return Err(at(stage.plugin.span(), format!("plugin {:?} of stage `{}` is a directory without a `Cargo.toml`, `stage.js`, `stage.ts` or `stage.py`", plugin, stage.name.get_ref()))
                    .with_hint("point `plugin` at a `.wasm` file or at a stage's directory (`wasmpipe new` makes one)"));
            }
            if !plugin.exists() {
                return Err(at(stage.plugin.span(), format!("plugin file {:?} of stage `{}` does not exist", plugin, stage.name.get_ref()))
                    .with_hint("build the plugins first (`cd plugins && cargo build --release`); paths are relative to the manifest"));
            }
            if let Some(samples) = &stage.samples
                && !self.resolve(samples.get_ref()).is_file()
            {
                return Err(at(
                    samples.span(),
                    format!(
                        "samples file {:?} of stage `{}` does not exist",
                        self.resolve(samples.get_ref()),
                        stage.name.get_ref()
                    ),
                )
                .with_hint("write a few sample events, one JSON value per line; paths are relative to the manifest"));
            }
            for grant in &stage.allow.dirs {
                let host = self.resolve(grant.host.get_ref());
                if !host.is_dir() {
                    return Err(at(
                        grant.host.span(),
                        format!("granted directory {host:?} does not exist"),
                    )
                    .with_hint("create it, or fix the path (relative to the manifest)"));
                }
            }
        }
        if let Some(src) = &self.doc.source.path
            && src.get_ref() != "-"
            && !self.resolve(src.get_ref()).is_file()
        {
            let message = format!(
                "source file {:?} does not exist",
                self.resolve(src.get_ref())
            );
            return Err(at(src.span(), message).with_hint(
                "fix the path (relative to the manifest), or pass `--input` on the command line",
            ));
        }
        if let Some(serve) = &self.doc.serve {
            serve.validate(&at)?;
        }
        cluster::validate(self.doc.queue.as_ref(), self.doc.store.as_ref(), &at)?;
        if let Some(store) = &self.doc.store
            && *store.kind.get_ref() == StoreKind::Postgres
            && store.postgres_url().is_none()
        {
            return Err(at(store.kind.span(), "the `postgres` store has no `url`".into())
                .with_hint(format!("add `url = \"postgres://user@host/database\"` to `[store]`, or set {POSTGRES_URL_ENV}")));
        }
        Ok(())
    }

    /// Resolves a path written in the manifest against the manifest's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The timeout retry policy of every mode: `[runtime] retries` and
    /// `retry_backoff`, else `[serve]`'s older `retries` and `backoff`.
    pub fn retries(&self) -> Retries {
        let rt = &self.doc.runtime;
        let serve = self.doc.serve.as_ref();
        let default = Retries::DEFAULT;
        Retries {
            times: rt
                .retries
                .or(serve.and_then(|s| s.retries))
                .unwrap_or(default.times),
            backoff: rt
                .retry_backoff
                .or(serve.and_then(|s| s.backoff))
                .map_or(default.backoff, |d| d.0),
        }
    }

    /// Whether the pipeline runs on a cluster: `[queue] kind = "nats"`
    /// (and so `[store] kind = "postgres"`).
    pub fn clustered(&self) -> bool {
        self.doc
            .queue
            .as_ref()
            .is_some_and(|q| *q.kind.get_ref() == QueueKind::Nats)
    }

    /// The manifest's pipeline name.
    pub fn name(&self) -> &str {
        self.doc.pipeline.name.as_str()
    }

    /// Locates `span` of this manifest's text as a diagnostic (re-reading the
    /// file), for errors found after parsing, such as a stage whose plugin
    /// exports the wrong kind.
    pub fn diagnostic_at(&self, span: std::ops::Range<usize>, message: String) -> Diagnostic {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        Diagnostic::new(&self.path, &text, span, message)
    }
}

/// Hints for serde/toml messages that do not say what to do next.
fn hint_for(message: &str) -> String {
    let hint = if message.starts_with("unknown field") {
        "check the spelling; docs/manifest.md lists every field of every table"
    } else if message.starts_with("missing field") {
        "this field is required; docs/manifest.md describes it"
    } else if message.starts_with("unknown variant") {
        "use one of the values listed above"
    } else if message.contains("nonzero") {
        "use a number greater than zero"
    } else if message.starts_with("invalid type") {
        "docs/manifest.md gives the type of every field"
    } else {
        "this is not valid TOML here; docs/manifest.md shows a complete manifest"
    };
    hint.to_string()
}
