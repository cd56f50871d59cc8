//! `window` on a reduce stage: the reduce folds events per event-time
//! window (and key) instead of over the whole input. Checked here, as
//! written; `exec::window::WindowSpec` is what the executor runs.

use super::Diagnostic;
use super::units::DurationSpec;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::num::NonZeroU64;

/// Default most open windows (per window and key) before new ones are
/// refused: room for a day of minutes for 70 keys.
pub const DEFAULT_MAX_OPEN_WINDOWS: u64 = 100_000;
/// Default quiet time after which the watermark follows the wall clock.
pub const DEFAULT_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// `window = { kind = "tumbling", size = "1m", time = "/ts", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    /// `tumbling`, `hopping` or `session`.
    pub kind: Spanned<WindowKind>,
    /// Length of a tumbling or hopping window.
    #[serde(default)]
    pub size: Option<Spanned<DurationSpec>>,
    /// Distance between the starts of hopping windows.
    #[serde(default)]
    pub hop: Option<Spanned<DurationSpec>>,
    /// Quiet time that ends a session.
    #[serde(default)]
    pub gap: Option<Spanned<DurationSpec>>,
    /// A JSON pointer to the event time, or `"arrival"`.
    pub time: Spanned<String>,
    /// How the event time is written (default: detected).
    #[serde(default)]
    pub format: Option<TimeFormat>,
    /// How far behind the latest event time an event may be and still
    /// count (default: none).
    #[serde(default)]
    pub lateness: Option<DurationSpec>,
    /// Quiet time after which the watermark advances with the wall clock
    /// (streams only: stdin, `--watch`, `serve`, `worker`).
    #[serde(default)]
    pub idle: Option<DurationSpec>,
    /// Most windows (per key) open at once.
    #[serde(default)]
    pub max_open_windows: Option<NonZeroU64>,
}

/// The kinds of window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Back-to-back windows of `size`: each event is in exactly one.
    Tumbling,
    /// Windows of `size` starting every `hop`: an event is in each one
    /// that covers it.
    Hopping,
    /// Per key, events closer than `gap` to each other.
    Session,
}

/// How an event time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 text, or a number: epoch milliseconds from 10^11 up (any
    /// time after 1973), epoch seconds below.
    #[default]
    Auto,
    /// RFC 3339 text (`2026-12-01T17:00:00Z`, `...+01:00`).
    Rfc3339,
    /// Epoch seconds (a number, fractions allowed).
    Seconds,
    /// Epoch milliseconds (a number).
    Millis,
}

impl WindowSection {
    /// Checks what the field types cannot: the lengths each kind needs.
    pub(super) fn validate(
        &self,
        at: &dyn Fn(std::ops::Range<usize>, String) -> Diagnostic,
    ) -> Result<(), Diagnostic> {
        self.problem().map_or(Ok(()), |(span, message, hint)| {
            Err(at(span, message).with_hint(hint))
        })
    }

    /// [`Self::validate`] outside a manifest (`wasmpipe test --window`):
    /// what is wrong, and the hint.
    pub fn check(&self) -> Result<(), (String, String)> {
        self.problem()
            .map_or(Ok(()), |(_, message, hint)| Err((message, hint)))
    }

    /// The first problem: where, what, and what to do.
    fn problem(&self) -> Option<(std::ops::Range<usize>, String, String)> {
        self.find_problem().err()
    }

    fn find_problem(&self) -> Result<(), (std::ops::Range<usize>, String, String)> {
        let at = |span: std::ops::Range<usize>, message: String| (span, message);
        let with_hint = |(span, message): (std::ops::Range<usize>, String), hint: &str| {
            (span, message, hint.to_string())
        };
        let kind = *self.kind.get_ref();
        let needs = |field: &str, hint: &str| {
            with_hint(
                at(
                    self.kind.span(),
                    format!("a {} window needs `{field}`", kind_name(kind)),
                ),
                hint,
            )
        };
        let stray = |span: std::ops::Range<usize>, field: &str| {
            with_hint(
                at(
                    span,
                    format!("`{field}` does not apply to a {} window", kind_name(kind)),
                ),
                "tumbling windows take `size`, hopping windows `size` and `hop`, sessions `gap`",
            )
        };
        match kind {
            WindowKind::Tumbling => {
                if self.size.is_none() {
                    return Err(needs("size", "add `size = \"1m\"` (any duration)"));
                }
                if let Some(h) = &self.hop {
                    return Err(stray(h.span(), "hop"));
                }
                if let Some(g) = &self.gap {
                    return Err(stray(g.span(), "gap"));
                }
            }
            WindowKind::Hopping => {
                let Some(size) = &self.size else {
                    return Err(needs("size", "add `size = \"5m\"` and `hop = \"1m\"`"));
                };
                let Some(hop) = &self.hop else {
                    return Err(needs(
                        "hop",
                        "add `hop = \"1m\"`: a window starts every hop",
                    ));
                };
                if hop.get_ref() > size.get_ref() {
                    return Err(with_hint(
                        at(
                            hop.span(),
                            format!(
                                "`hop` ({}) is longer than `size` ({}): some events would be in no window",
                                hop.get_ref(),
                                size.get_ref()
                            ),
                        ),
                        "make `hop` at most `size`; `hop` equal to `size` is a tumbling window",
                    ));
                }
                // Each event is in `size / hop` windows, one fold each: more
                // than a key may have open can never all be folded, and a
                // hop of 1ms in a day would fold each event 86 million times
                // (found by fuzzing, bench/fuzz/regressions/manifest). In
                // milliseconds clamped as `WindowSpec` has them.
                let ms = |d: &DurationSpec| d.0.as_millis().min(i64::MAX as u128);
                let per_event = (ms(size.get_ref()) - 1) / ms(hop.get_ref()) + 1;
                let max_open = self
                    .max_open_windows
                    .map_or(DEFAULT_MAX_OPEN_WINDOWS, NonZeroU64::get);
                if per_event > u128::from(max_open) {
                    return Err(with_hint(
                        at(
                            hop.span(),
                            format!(
                                "`hop` ({}) puts each event in {per_event} windows of `size` ({}), more than `max_open_windows` ({max_open})",
                                hop.get_ref(),
                                size.get_ref()
                            ),
                        ),
                        "make `hop` longer (at least `size` / `max_open_windows`), or `size` shorter",
                    ));
                }
                if let Some(g) = &self.gap {
                    return Err(stray(g.span(), "gap"));
                }
            }
            WindowKind::Session => {
                if self.gap.is_none() {
                    return Err(needs(
                        "gap",
                        "add `gap = \"30m\"`: a session ends after this long without events",
                    ));
                }
                if let Some(s) = &self.size {
                    return Err(stray(s.span(), "size"));
                }
                if let Some(h) = &self.hop {
                    return Err(stray(h.span(), "hop"));
                }
            }
        }
        let time = self.time.get_ref();
        if time != "arrival" && !time.starts_with('/') {
            return Err(with_hint(
                at(
                    self.time.span(),
                    format!("`time` must be a JSON pointer or \"arrival\", got `{time}`"),
                ),
                &format!(
                    "JSON pointers start with '/', e.g. `time = \"/{}\"`",
                    time.trim_start_matches(['.', '$'])
                ),
            ));
        }
        if time == "arrival" && self.format.is_some() {
            return Err(with_hint(
                at(
                    self.time.span(),
                    "`format` applies to an event field, not to `arrival`".into(),
                ),
                "remove `format`",
            ));
        }
        Ok(())
    }
}

fn kind_name(k: WindowKind) -> &'static str {
    match k {
        WindowKind::Tumbling => "tumbling",
        WindowKind::Hopping => "hopping",
        WindowKind::Session => "session",
    }
}
