//! `budget` and `candidate` on a stage.
//!
//! `budget`: how many dead letters a version of it may make
//! before it is judged bad. A canary over its budget is rolled back; a
//! live version over it is flagged (a metric, the console) and, with
//! `pause_intake`, ingest answers 503 until a version within it is live.
//! Checked here, as written; `exec::deploy` judges by it.

use super::Diagnostic;
use serde::Deserialize;
use serde_spanned::Spanned;

/// `budget = { max_dead_letter_rate = 0.02, chunks = 20, ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// The share of the events given to the stage it may dead-letter,
    /// from 0 to 1, over the last `chunks` chunks a version ran.
    pub max_dead_letter_rate: Spanned<f64>,
    /// How many of a version's latest chunks the rate is taken over.
    #[serde(default = "default_chunks")]
    pub chunks: Spanned<u32>,
    /// Fewer events than this in those chunks judge nothing yet: two
    /// dead letters among the first ten events say little.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Whether ingest refuses new batches (503, saying why) while the
    /// live version is over its budget.
    #[serde(default)]
    pub pause_intake: bool,
}

fn default_chunks() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}

fn default_min_events() -> u64 {
    100
}

impl BudgetSection {
    /// Checks the numbers make sense.
    pub(super) fn validate(
        &self,
        stage: &str,
        at: &impl Fn(std::ops::Range<usize>, String) -> Diagnostic,
    ) -> Result<(), Diagnostic> {
        let rate = *self.max_dead_letter_rate.get_ref();
        if !(0.0..=1.0).contains(&rate) {
            return Err(at(
                self.max_dead_letter_rate.span(),
                format!(
                    "`max_dead_letter_rate` of stage `{stage}` is {rate}, not a share from 0 to 1"
                ),
            )
            .with_hint("write the share of events, e.g. `max_dead_letter_rate = 0.02` for 2 %"));
        }
        if *self.chunks.get_ref() == 0 {
            return Err(at(
                self.chunks.span(),
                format!("`chunks` of stage `{stage}`'s budget must be at least 1"),
            )
            .with_hint(
                "the rate is judged over a version's latest `chunks` chunks; 20 is the default",
            ));
        }
        Ok(())
    }
}

/// A stage's budget, as the host judges by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// See [`BudgetSection::max_dead_letter_rate`].
    pub max_dead_letter_rate: f64,
    /// See [`BudgetSection::chunks`].
    pub chunks: u32,
    /// See [`BudgetSection::min_events`].
    pub min_events: u64,
    /// See [`BudgetSection::pause_intake`].
    pub pause_intake: bool,
}

impl BudgetSection {
    /// The budget as judged.
    pub fn budget(&self) -> Budget {
        Budget {
            max_dead_letter_rate: *self.max_dead_letter_rate.get_ref(),
            chunks: *self.chunks.get_ref(),
            min_events: self.min_events,
            pause_intake: self.pause_intake,
        }
    }
}

/// `candidate = { plugin = "enrich-v2.wasm", mode = "canary", percent = 10 }`:
/// under `run --watch`, a candidate version beside the live one (serve
/// and workers take theirs from `wasmpipe deploy`, so that every process
/// of a pipeline agrees on one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSection {
    /// The candidate's module (or stage folder), relative to the manifest.
    pub plugin: Spanned<String>,
    /// `shadow` or `canary`.
    pub mode: Spanned<String>,
    /// A canary's share of chunks, 1 to 100.
    #[serde(default)]
    pub percent: Option<Spanned<u8>>,
}

impl CandidateSection {
    /// Checks the mode and share.
    pub(super) fn validate(
        &self,
        stage: &str,
        at: &impl Fn(std::ops::Range<usize>, String) -> Diagnostic,
    ) -> Result<(), Diagnostic> {
        match (self.mode.get_ref().as_str(), &self.percent) {
            ("shadow", None) => Ok(()),
            ("shadow", Some(p)) => Err(at(
                p.span(),
                format!("the shadow candidate of stage `{stage}` runs on every chunk: `percent` is for a canary"),
            )
            .with_hint("remove `percent`, or write `mode = \"canary\"`")),
            ("canary", Some(p)) if (1..=100).contains(p.get_ref()) => Ok(()),
            ("canary", Some(p)) => Err(at(
                p.span(),
                format!("the canary of stage `{stage}` takes {} % of chunks", p.get_ref()),
            )
            .with_hint("write a share from 1 to 100")),
            ("canary", None) => Err(at(
                self.mode.span(),
                format!("the canary of stage `{stage}` has no `percent`"),
            )
            .with_hint("add the share of chunks it serves, e.g. `percent = 10`")),
            (m, _) => Err(at(
                self.mode.span(),
                format!("`mode` of stage `{stage}`'s candidate is `{m}`"),
            )
            .with_hint("write `mode = \"shadow\"` (every chunk, compared, nothing kept) or `mode = \"canary\"` with `percent`")),
        }
    }
}
