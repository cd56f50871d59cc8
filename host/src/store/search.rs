//! Searching stored events: what a search string means, what of an event
//! is searchable, and how both stores index it.
//!
//! A search (`GET /v1/events?q=`) is a list of terms, all of which must
//! match: a word, a `"quoted phrase"`, a `prefix*`, or `field:value` (the
//! same exact match as `field.<name>=value`). Words are matched against
//! the event's *values* (strings and numbers), never its keys, so `level`
//! does not match every event that has a level. Both stores index exactly
//! that text: SQLite through an FTS5 table fed by [`words_of`], PostgreSQL
//! through a GIN index on `jsonb_to_tsvector(.., '["string", "numeric"]')`.
//! They split words the same way on letters and digits; PostgreSQL's
//! parser also keeps host names, e-mail addresses, paths and version
//! numbers whole (docs/api.md says so).

use crate::exec::window::spec::TimeSource;

/// One search term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A word (or a run of words: `foo-bar` is the phrase `foo bar`).
    Words(String),
    /// Words that begin with this (letters and digits).
    Prefix(String),
}

/// A field of stored events: the path of object keys to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// `a.b` (the API's `field.a.b`, or `a.b:value` in a search).
    pub fn dotted(path: &str) -> Result<FieldPath, String> {
        FieldPath::of(path.split('.'), path)
    }

    /// `/a/b` (a JSON pointer, as the manifest names fields).
    pub fn pointer(p: &str) -> Result<FieldPath, String> {
        match p.strip_prefix('/') {
            Some(rest) => FieldPath::of(rest.split('/'), p),
            None => Err(format!(
                "`{p}` is not a JSON pointer; write it like `/service`"
            )),
        }
    }

    fn of<'a>(segs: impl Iterator<Item = &'a str>, whole: &str) -> Result<FieldPath, String> {
        let segs: Vec<String> = segs.map(str::to_string).collect();
        // Paths are written into SQL (an expression index only serves a
        // query that spells the same literal), so they are kept to
        // characters that need no quoting anywhere.
        let ok = |s: &String| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if segs.is_empty() || segs.len() > 8 || !segs.iter().all(ok) {
            return Err(format!(
                "`{whole}`: a field name is letters, digits, '_' and '-' (up to 8 levels), e.g. `service` or `request.identity`"
            ));
        }
        Ok(FieldPath(segs))
    }

    /// Its segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// As the API writes it: `a.b`.
    pub fn dotted_name(&self) -> String {
        self.0.join(".")
    }

    /// The SQLite expression of its value as text, over column `body`
    /// (aliased `table`): strings as they are, numbers as their text,
    /// `true` and `false` as those words (as PostgreSQL's `#>>` gives
    /// them). Field filters and the field indexes use this same spelling.
    pub fn sqlite_expr(&self, table: Option<&str>) -> String {
        let path: String = self.0.iter().map(|s| format!(".\"{s}\"")).collect();
        let body = match table {
            Some(t) => format!("{t}.body"),
            None => "body".to_string(),
        };
        format!(
            "CASE json_type({body}, '${path}') WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
             ELSE CAST(json_extract({body}, '${path}') AS TEXT) END"
        )
    }

    /// The PostgreSQL expression of its value as text, over column `body`.
    pub fn pg_expr(&self) -> String {
        format!("(body::jsonb #>> '{{{}}}')", self.0.join(","))
    }

    /// The name of its index on `events`.
    pub fn index_name(&self) -> String {
        let name: String = self
            .0
            .join("__")
            .chars()
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        // Two paths that differ only in case or '-' / '_' must not share
        // an index name.
        use sha2::Digest as _;
        let h = hex::encode(&sha2::Sha256::digest(self.0.join("/").as_bytes())[..4]);
        format!("events_field_{name}_{h}")
    }
}

/// A parsed `q`: the text terms, and the `field:value` terms as filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// All must match the event's text.
    pub terms: Vec<Term>,
    /// All must match exactly, as `field.<name>=value` does.
    pub fields: Vec<(FieldPath, String)>,
}

/// The most terms a search may have: each is a join in the index.
const MAX_TERMS: usize = 16;

impl Search {
    /// Parses a search string; the error says which term and why.
    pub fn parse(q: &str) -> Result<Search, String> {
        let mut s = Search::default();
        // Characters, not bytes, so that an error can point at one.
        let mut chars = q.chars().enumerate().peekable();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            // A term runs to the next whitespace outside quotes.
            let mut raw = String::new();
            // Where the quote still open was opened: the error names that
            // character, not the term's first (found by fuzzing,
            // bench/fuzz/regressions/search).
            let mut open = None;
            for (at, c) in chars.by_ref() {
                if c == '"' {
                    open = if open.is_some() { None } else { Some(at) };
                } else if c.is_whitespace() && open.is_none() {
                    break;
                }
                raw.push(c);
            }
            if let Some(at) = open {
                return Err(format!(
                    "the quote at character {} of the search is never closed",
                    at + 1
                ));
            }
            s.push(&raw)?;
        }
        if s.terms.len() + s.fields.len() > MAX_TERMS {
            return Err(format!(
                "a search has at most {MAX_TERMS} terms; this one has {}",
                s.terms.len() + s.fields.len()
            ));
        }
        Ok(s)
    }

    fn push(&mut self, raw: &str) -> Result<(), String> {
        // `name:value`: a name that starts with a letter, then a value
        // (quoted if it has spaces). `10:30` and `"a:b"` stay words.
        if let Some((name, value)) = raw.split_once(':')
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && !name.contains('"')
            && !value.is_empty()
        {
            let path = FieldPath::dotted(name).map_err(|e| format!("search term {raw:?}: {e}"))?;
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(v) => v,
                None => value,
            };
            self.fields.push((path, value.to_string()));
            return Ok(());
        }
        if let Some(stem) = raw.strip_suffix('*') {
            let stem = stem.trim_matches('"');
            if stem.is_empty() || !stem.chars().all(char::is_alphanumeric) {
                return Err(format!(
                    "search term {raw:?}: a prefix search is letters and digits followed by `*`, e.g. `time*`"
                ));
            }
            self.terms.push(Term::Prefix(stem.to_lowercase()));
            return Ok(());
        }
        let words = tokens(&raw.replace('"', " ")).join(" ");
        if words.is_empty() {
            return Err(format!(
                "search term {raw:?} has no letters or digits to search for"
            ));
        }
        self.terms.push(Term::Words(words));
        Ok(())
    }
}

/// The FTS5 query of `terms` (`None`: there are none). Every term is
/// quoted, so no FTS5 operator a user types is interpreted.
pub fn fts5(terms: &[Term]) -> Option<String> {
    if terms.is_empty() {
        return None;
    }
    let parts: Vec<String> = terms
        .iter()
        .map(|t| match t {
            Term::Words(w) => format!("\"{w}\""),
            Term::Prefix(p) => format!("\"{p}\"*"),
        })
        .collect();
    Some(parts.join(" AND "))
}

/// The PostgreSQL `tsquery` text of each of `terms`, for
/// `to_tsquery('simple', $n)`: words joined by `<->` (a phrase), a prefix
/// as `stem:*`. Tokens are letters and digits only, so none needs quoting.
pub fn pg_tsqueries(terms: &[Term]) -> Vec<String> {
    terms
        .iter()
        .map(|t| match t {
            Term::Words(w) => w.split(' ').collect::<Vec<_>>().join(" <-> "),
            Term::Prefix(p) => format!("{p}:*"),
        })
        .collect()
}

/// The searchable text of a dead letter: its error, and its event's
/// values (or the event whole, when it is not JSON).
pub fn dead_words(error: &str, event: &[u8]) -> String {
    let mut words = format!("{error}\n");
    words_of(event, &mut words);
    words
}

/// The words of `text`, lowercased: runs of letters and digits, as
/// SQLite's `unicode61` tokenizer splits them.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The searchable text of a JSON event: its string and number values,
/// one per line, without the keys. Read straight off the bytes (the
/// events stored are valid JSON, checked by the stage boundary); a string
/// with escapes is decoded. Text that is not JSON is searchable whole.
pub fn words_of(json: &[u8], out: &mut String) {
    let mut i = 0;
    let n = json.len();
    let start = out.len();
    while i < n {
        match json[i] {
            b'"' => {
                let begin = i + 1;
                let mut j = begin;
                let mut escaped = false;
                while j < n && json[j] != b'"' {
                    if json[j] == b'\\' {
                        escaped = true;
                        j += 1;
                    }
                    j += 1;
                }
                let end = j.min(n);
                i = end + 1;
                // A key is followed by ':'.
                let mut k = i;
                while k < n && json[k].is_ascii_whitespace() {
                    k += 1;
                }
                if k < n && json[k] == b':' {
                    continue;
                }
                let raw = &json[begin..end];
                if escaped {
                    if let Ok(s) =
                        serde_json::from_slice::<String>(&json[begin - 1..(end + 1).min(n)])
                    {
                        out.push_str(&s);
                    }
                } else {
                    out.push_str(&String::from_utf8_lossy(raw));
                }
                out.push('\n');
            }
            b'-' | b'0'..=b'9' => {
                let begin = i;
                while i < n && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                out.push_str(&String::from_utf8_lossy(&json[begin..i]));
                out.push('\n');
            }
            _ => i += 1,
        }
    }
    if out.len() == start
        && !json.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_err()
    {
        out.push_str(&String::from_utf8_lossy(json));
    }
}

/// A search asked of a store whose text index is off.
#[derive(Debug, thiserror::Error)]
#[error(
    "full-text search is off in this server (`[serve] full_text = false`); filter by field (`field.<name>=`) instead, or turn it on"
)]
pub struct TextIndexOff;

/// What the stores index, from the manifest's `[serve]`.
#[derive(Debug, Clone)]
pub struct Indexing {
    /// Index the events' text for `q` (`[serve] full_text`).
    pub full_text: bool,
    /// Fields with an index of their own (`[serve] index`).
    pub fields: Vec<FieldPath>,
    /// Where an event's own time is (`[serve] time`, else the windowed
    /// reduce's `time`); `Arrival` when none is named.
    pub time: TimeSource,
}

impl Default for Indexing {
    fn default() -> Self {
        Indexing {
            full_text: true,
            fields: Vec::new(),
            time: TimeSource::Arrival,
        }
    }
}

impl Indexing {
    /// The time of stored event `body`: its own where the manifest names
    /// a field and the event has a readable one, else its arrival.
    pub fn time_of(&self, body: &[u8], arrival: i64) -> i64 {
        crate::exec::window::field::event_time(
            &self.time,
            crate::runtime::Encoding::Json,
            body,
            arrival,
        )
        .unwrap_or(arrival)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(json: &str) -> String {
        let mut s = String::new();
        words_of(json.as_bytes(), &mut s);
        s
    }

    #[test]
    fn the_searchable_text_is_the_values_not_the_keys() {
        assert_eq!(
            words(
                r#"{"level":"error","msg":"db timeout","n":-12.5e3,"ok":true,"tags":["a b",7],"o":{"k":"v"}}"#
            ),
            "error\ndb timeout\n-12.5e3\na b\n7\nv\n"
        );
        assert_eq!(words(r#"{"m":"caf\u00e9 \"x\""}"#), "café \"x\"\n");
        assert_eq!(words(r#"{"k" : "v"}"#), "v\n");
        assert_eq!(words("not json at all"), "not json at all");
    }

    #[test]
    fn a_search_is_words_phrases_prefixes_and_fields() {
        let s = Search::parse(
            r#"Timeout "connection refused" ord* service:auth user.id:"a b" 10:30 foo-bar"#,
        )
        .unwrap();
        assert_eq!(
            s.terms,
            vec![
                Term::Words("timeout".into()),
                Term::Words("connection refused".into()),
                Term::Prefix("ord".into()),
                Term::Words("10 30".into()),
                Term::Words("foo bar".into()),
            ]
        );
        assert_eq!(
            s.fields,
            vec![
                (FieldPath::dotted("service").unwrap(), "auth".into()),
                (FieldPath::dotted("user.id").unwrap(), "a b".into()),
            ]
        );
        assert_eq!(
            fts5(&s.terms).unwrap(),
            r#""timeout" AND "connection refused" AND "ord"* AND "10 30" AND "foo bar""#
        );
        assert_eq!(pg_tsqueries(&s.terms)[1], "connection <-> refused");
        assert_eq!(pg_tsqueries(&s.terms)[2], "ord:*");
    }

    #[test]
    fn bad_searches_say_what_is_wrong() {
        assert!(
            Search::parse(r#"a "b"#)
                .unwrap_err()
                .contains("never closed")
        );
        assert_eq!(
            Search::parse("été a\"b").unwrap_err(),
            "the quote at character 6 of the search is never closed"
        );
        assert!(Search::parse("fo-o*").unwrap_err().contains("prefix"));
        assert!(Search::parse("--").unwrap_err().contains("no letters"));
        assert!(Search::parse("a$b:c").unwrap_err().contains("field name"));
        assert!(
            Search::parse(&"w ".repeat(17))
                .unwrap_err()
                .contains("at most")
        );
        // FTS5 syntax typed by a user is only ever words.
        let s = Search::parse("NEAR(a b) OR c^").unwrap();
        assert_eq!(
            fts5(&s.terms).unwrap(),
            r#""near a" AND "b" AND "or" AND "c""#
        );
    }

    #[test]
    fn field_paths_are_safe_to_write_into_sql() {
        assert!(FieldPath::pointer("/a'b").is_err());
        assert!(FieldPath::pointer("service").is_err());
        let f = FieldPath::pointer("/request/user-id").unwrap();
        assert!(
            f.sqlite_expr(Some("e")).ends_with(
                r#"ELSE CAST(json_extract(e.body, '$."request"."user-id"') AS TEXT) END"#
            )
        );
        assert_eq!(f.pg_expr(), "(body::jsonb #>> '{request,user-id}')");
        assert_ne!(
            FieldPath::pointer("/a-b").unwrap().index_name(),
            FieldPath::pointer("/a_b").unwrap().index_name()
        );
    }
}
