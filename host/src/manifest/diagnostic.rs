//! Errors that point into a manifest: `file:line:column`, the offending line
//! with a caret under the span, and a hint saying what to do next.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem found in a manifest, located by a byte span of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The manifest file.
    pub path: PathBuf,
    /// 1-based line of the start of the span.
    pub line: usize,
    /// 1-based column (in characters) of the start of the span.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
    /// The source line the span starts on.
    source_line: String,
    /// Width of the caret underline, in characters (at least 1).
    width: usize,
}

impl Diagnostic {
    /// Builds a diagnostic for `span` of `text`, the contents of `path`.
    pub fn new(path: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let source_line = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        let width = text[start..end].chars().count().max(1);
        Diagnostic {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
            source_line,
            width,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(f, "{}", self.message)?;
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            self.path.display(),
            self.line,
            self.column
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        let lead: String = self
            .source_line
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{pad} | {lead}{}", "^".repeat(self.width))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column_of_span() {
        let text = "[pipeline]\nname = \"a b\"\n";
        let at = text.find("\"a b\"").unwrap();
        let d =
            Diagnostic::new(Path::new("m.toml"), text, at..at + 5, "bad name").with_hint("use '-'");
        assert_eq!((d.line, d.column), (2, 8));
        assert_eq!(
            d.to_string(),
            "bad name\n --> m.toml:2:8\n  |\n2 | name = \"a b\"\n  |        ^^^^^\n  = hint: use '-'"
        );
    }
}
