//! The benchmark workloads' types and per-event computations. Both the
//! native baseline (`bench/`) and the wasm stages (`plugins/bench_*`) use
//! exactly this code, so any difference in speed is the price of running
//! it in wasmpipe, and their outputs must agree byte for byte.
#![no_std]

use core::borrow::Borrow;
use serde::{Deserialize, Serialize};

/// W1's event.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct Num {
    /// The number.
    pub n: i64,
}

/// W1's map: `n * 2`.
pub fn double(ev: Num) -> Num {
    Num { n: ev.n * 2 }
}

/// A W2 log event. Generic over the string type so the native baseline can
/// borrow from its input (`&str`) while a stage owns its strings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Log<S> {
    /// Timestamp (RFC 3339).
    pub ts: S,
    /// `debug`, `info`, `warn` or `error`.
    pub level: S,
    /// One of 20 services.
    pub service: S,
    /// The user.
    pub user_id: u64,
    /// Free text.
    pub msg: S,
    /// How long the request took.
    pub duration_ms: u64,
    /// Deployment tags.
    pub tags: Tags<S>,
}

/// A W2 event's tags.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Tags<S> {
    /// Cloud region.
    pub region: S,
    /// Service version.
    pub version: S,
}

/// A W2 event after enrichment.
#[derive(Debug, Clone, Serialize)]
pub struct Enriched<S, C> {
    /// The event as received.
    #[serde(flatten)]
    pub log: Log<S>,
    /// When the event was received (from the context).
    pub received_at: C,
    /// Which host received it (from the context).
    pub host: C,
    /// The level as a number (10, 20, 30, 40; 0 for unknown).
    pub level_num: u8,
    /// Whether the request took over 500 ms.
    pub slow: bool,
}

/// A level as a number: 10, 20, 30, 40; 0 for an unknown level.
pub fn level_num(level: &str) -> u8 {
    match level {
        "debug" => 10,
        "info" => 20,
        "warn" => 30,
        "error" => 40,
        _ => 0,
    }
}

/// Whether a request was slow.
pub fn is_slow(duration_ms: u64) -> bool {
    duration_ms > 500
}

/// W2's map.
pub fn enrich<S: Borrow<str>, C>(log: Log<S>, received_at: C, host: C) -> Enriched<S, C> {
    let level_num = level_num(log.level.borrow());
    let slow = is_slow(log.duration_ms);
    Enriched {
        log,
        received_at,
        host,
        level_num,
        slow,
    }
}

/// The two fields of a W2 event that its enrichment reads, for a stage that
/// adds fields (`wasmpipe_sdk::Merge`) instead of re-encoding the event.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    /// The level, decoded without allocating.
    pub level: Level,
    /// How long the request took.
    pub duration_ms: u64,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// Anything else.
    #[serde(other)]
    Other,
}

impl Level {
    /// The level's name, as in the event.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Other => "",
        }
    }
}

/// The fields W2's enrichment adds, in the order `Enriched` writes them.
#[derive(Debug, Clone, Serialize)]
pub struct Added<C> {
    /// When the event was received.
    pub received_at: C,
    /// Which host received it.
    pub host: C,
    /// The level as a number.
    pub level_num: u8,
    /// Whether the request took over 500 ms.
    pub slow: bool,
}

/// W2's map, as the fields it adds.
pub fn added<C>(p: &Probe, received_at: C, host: C) -> Added<C> {
    Added {
        received_at,
        host,
        level_num: level_num(p.level.as_str()),
        slow: is_slow(p.duration_ms),
    }
}

/// The fields of a W2 event that W3 reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample<S> {
    /// The group key.
    pub service: S,
    /// Counted when `error`.
    pub level: S,
    /// Summed.
    pub duration_ms: u64,
}

/// W3's accumulator, one per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stats {
    /// Events.
    pub count: u64,
    /// Sum of `duration_ms`.
    pub duration_ms: u64,
    /// Events with level `error`.
    pub errors: u64,
}

/// W3's fold.
pub fn add_sample<S: Borrow<str>>(acc: &mut Stats, s: &Sample<S>) {
    acc.count += 1;
    acc.duration_ms += s.duration_ms;
    acc.errors += (s.level.borrow() == "error") as u64;
}

/// W3's combine.
pub fn merge(a: Stats, b: Stats) -> Stats {
    Stats {
        count: a.count + b.count,
        duration_ms: a.duration_ms + b.duration_ms,
        errors: a.errors + b.errors,
    }
}
