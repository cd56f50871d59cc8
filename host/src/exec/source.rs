//! Sources split input into chunks without ever holding more than one
//! chunk: JSON lines (split at newlines) and a JSON array (split at its
//! top-level commas by a small scanner that also strips insignificant
//! whitespace, so a pretty-printed element becomes one line).

use super::chunk::{Chunk, Reject};
use std::io::{self, BufRead};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How large a chunk may grow, in events and in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Most events per chunk.
    pub events: usize,
    /// A chunk closes once its data reaches this many bytes.
    pub bytes: usize,
    /// Largest single event; larger ones are dead-lettered by the source.
    pub max_event: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            events: crate::manifest::DEFAULT_CHUNK_SIZE,
            bytes: 4 << 20,
            max_event: 1 << 20,
        }
    }
}

/// A stream of chunks.
pub trait Source: Send {
    /// The next chunk, or `None` at the end of input. Chunks are numbered
    /// from 0 by the source.
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>>;
}

/// Bytes of a preview kept for an oversized event's dead letter.
const PREVIEW: usize = 256;

/// JSON lines: one event per line, blank lines skipped.
pub struct JsonLines<R> {
    reader: R,
    limits: ChunkLimits,
    seq: u64,
    index: u64,
    line: u64,
    done: bool,
    read: Arc<AtomicU64>,
}

impl<R: BufRead + Send> JsonLines<R> {
    /// Reads JSON lines from `reader`; `read` counts bytes consumed.
    pub fn new(reader: R, limits: ChunkLimits, read: Arc<AtomicU64>) -> Self {
        JsonLines {
            reader,
            limits,
            seq: 0,
            index: 0,
            line: 0,
            done: false,
            read,
        }
    }
}

impl<R: BufRead + Send> Source for JsonLines<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let mut chunk = Chunk {
            seq: self.seq,
            first_index: self.index,
            ..Chunk::default()
        };
        while chunk.len() < self.limits.events && chunk.data.len() < self.limits.bytes {
            // Read one line straight into the chunk, stopping to copy once it
            // is too large to be an event.
            let line_start = chunk.data.len();
            let mut oversized = false;
            let mut saw_any = false;
            let mut complete = false;
            loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                saw_any = true;
                let (take, found) = match memchr::memchr(b'\n', buf) {
                    Some(i) => (i, true),
                    None => (buf.len(), false),
                };
                if !oversized {
                    if chunk.data.len() - line_start + take > self.limits.max_event {
                        oversized = true;
                        let keep = (line_start + PREVIEW).min(chunk.data.len());
                        chunk.data.truncate(keep);
                        let room = (line_start + PREVIEW).saturating_sub(chunk.data.len());
                        chunk.data.extend_from_slice(&buf[..take.min(room)]);
                    } else {
                        chunk.data.extend_from_slice(&buf[..take]);
                    }
                }
                let used = take + found as usize;
                self.reader.consume(used);
                self.read.fetch_add(used as u64, Ordering::Relaxed);
                if found {
                    complete = true;
                    break;
                }
            }
            if !saw_any {
                self.done = true;
                break;
            }
            self.line += 1;
            if oversized {
                let preview = chunk.data.split_off(line_start);
                chunk.rejects.push(Reject {
                    index: self.index,
                    line: self.line,
                    error: format!(
                        "event is larger than the limit of {} bytes (runtime.max_event_size)",
                        self.limits.max_event
                    ),
                    preview,
                });
                self.index += 1;
                continue;
            }
            let mut end = chunk.data.len();
            if end > line_start && chunk.data[end - 1] == b'\r' {
                end -= 1;
            }
            if chunk.data[line_start..end]
                .iter()
                .all(u8::is_ascii_whitespace)
            {
                chunk.data.truncate(line_start);
                if !complete {
                    self.done = true;
                    break;
                }
                continue;
            }
            chunk.data.truncate(end);
            chunk.data.push(b'\n');
            chunk.starts.push(line_start as u32);
            chunk.lines.push(self.line);
            self.index += 1;
            if !complete {
                self.done = true;
                break;
            }
        }
        if chunk.is_empty() && chunk.rejects.is_empty() {
            return Ok(None);
        }
        self.seq += 1;
        Ok(Some(chunk))
    }
}

/// A JSON array whose elements are the events: `[{...}, {...}]`.
pub struct JsonArray<R> {
    reader: R,
    limits: ChunkLimits,
    seq: u64,
    index: u64,
    /// Current 1-based line and column, for events and errors.
    line: u64,
    col: u64,
    state: ArrayState,
    read: Arc<AtomicU64>,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// After `[` or `,`: expecting an element (or `]` right after `[`).
    Element { first: bool },
    /// Inside an element.
    Value {
        depth: u32,
        in_string: bool,
        escape: bool,
    },
    /// After an element: expecting `,` or `]`.
    Separator,
    /// After the closing `]`.
    End,
}

impl<R: BufRead + Send> JsonArray<R> {
    /// Reads a JSON array from `reader`; `name` names the input in errors.
    pub fn new(reader: R, limits: ChunkLimits, read: Arc<AtomicU64>, name: String) -> Self {
        JsonArray {
            reader,
            limits,
            seq: 0,
            index: 0,
            line: 1,
            col: 0,
            state: ArrayState::Start,
            read,
            name,
        }
    }

    fn syntax(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}:{}:{}: {what}", self.name, self.line, self.col),
        )
    }
}

impl<R: BufRead + Send> Source for JsonArray<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut chunk = Chunk {
            seq: self.seq,
            first_index: self.index,
            ..Chunk::default()
        };
        let mut ev_start = 0usize;
        let mut ev_line = 0u64;
        let mut oversized = false;
        'outer: while chunk.len() < self.limits.events && chunk.data.len() < self.limits.bytes {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return match self.state {
                    ArrayState::End => break 'outer,
                    ArrayState::Start if self.index == 0 && chunk.is_empty() => {
                        Err(self.syntax("expected a JSON array, found end of input"))
                    }
                    _ => {
                        Err(self
                            .syntax("unexpected end of input inside the JSON array (missing `]`?)"))
                    }
                };
            }
            let mut used = 0;
            let mut exit: Option<Result<(), &str>> = None;
            for &b in buf {
                used += 1;
                if b == b'\n' {
                    self.line += 1;
                    self.col = 0;
                } else {
                    self.col += 1;
                }
                match self.state {
                    ArrayState::Start => {
                        if b == b'[' {
                            self.state = ArrayState::Element { first: true };
                        } else if !b.is_ascii_whitespace() {
                            exit = Some(Err(
                                "expected `[` at the start of a JSON array source (use `format = \"jsonl\"` for JSON lines)",
                            ));
                            break;
                        }
                    }
                    ArrayState::Element { first } => {
                        if b.is_ascii_whitespace() {
                            continue;
                        }
                        if b == b']' && first {
                            self.state = ArrayState::End;
                            continue;
                        }
                        if b == b']' || b == b',' {
                            exit = Some(Err("expected an array element"));
                            break;
                        }
                        ev_start = chunk.data.len();
                        ev_line = self.line;
                        oversized = false;
                        chunk.data.push(b);
                        self.state = match b {
                            b'{' | b'[' => ArrayState::Value {
                                depth: 1,
                                in_string: false,
                                escape: false,
                            },
                            b'"' => ArrayState::Value {
                                depth: 0,
                                in_string: true,
                                escape: false,
                            },
                            _ => ArrayState::Value {
                                depth: 0,
                                in_string: false,
                                escape: false,
                            },
                        };
                    }
                    ArrayState::Value {
                        depth,
                        in_string,
                        escape,
                    } => {
                        let mut next = (depth, in_string, escape);
                        let mut end_of_value = false;
                        if in_string {
                            if escape {
                                next.2 = false;
                            } else if b == b'\\' {
                                next.2 = true;
                            } else if b == b'"' {
                                next.1 = false;
                            }
                        } else {
                            match b {
                                b'"' => next.1 = true,
                                b'{' | b'[' => next.0 += 1,
                                b'}' | b']' if depth > 0 => next.0 -= 1,
                                b',' | b']' if depth == 0 => end_of_value = true,
                                _ => {}
                            }
                        }
                        if depth == 0 && !in_string && b.is_ascii_whitespace() {
                            // Whitespace ends a scalar element (`2 3` is two values, not `23`).
                            finish(
                                &mut self.index,
                                &self.limits,
                                &mut chunk,
                                ev_start,
                                ev_line,
                                oversized,
                            );
                            self.state = ArrayState::Separator;
                            continue;
                        }
                        if end_of_value {
                            finish(
                                &mut self.index,
                                &self.limits,
                                &mut chunk,
                                ev_start,
                                ev_line,
                                oversized,
                            );
                            self.state = if b == b']' {
                                ArrayState::End
                            } else {
                                ArrayState::Element { first: false }
                            };
                            if chunk.len() >= self.limits.events
                                || chunk.data.len() >= self.limits.bytes
                            {
                                exit = Some(Ok(()));
                                break;
                            }
                            continue;
                        }
                        // Whitespace outside strings is dropped so that every
                        // event fits on one line.
                        if (in_string || !b.is_ascii_whitespace()) && !oversized {
                            chunk.data.push(b);
                            if chunk.data.len() - ev_start > self.limits.max_event {
                                oversized = true;
                                chunk.data.truncate(ev_start + PREVIEW);
                            }
                        }
                        self.state = ArrayState::Value {
                            depth: next.0,
                            in_string: next.1,
                            escape: next.2,
                        };
                        if depth > 0 && next.0 == 0 && !next.1 {
                            self.state = ArrayState::Separator;
                            finish(
                                &mut self.index,
                                &self.limits,
                                &mut chunk,
                                ev_start,
                                ev_line,
                                oversized,
                            );
                        } else if depth == 0 && in_string && !next.1 {
                            // A top-level string element just closed.
                            self.state = ArrayState::Separator;
                            finish(
                                &mut self.index,
                                &self.limits,
                                &mut chunk,
                                ev_start,
                                ev_line,
                                oversized,
                            );
                        }
                    }
                    ArrayState::Separator => match b {
                        b',' => {
                            self.state = ArrayState::Element { first: false };
                            if chunk.len() >= self.limits.events
                                || chunk.data.len() >= self.limits.bytes
                            {
                                exit = Some(Ok(()));
                                break;
                            }
                        }
                        b']' => self.state = ArrayState::End,
                        _ if b.is_ascii_whitespace() => {}
                        _ => {
                            exit = Some(Err("expected `,` or `]` after an array element"));
                            break;
                        }
                    },
                    ArrayState::End => {
                        if !b.is_ascii_whitespace() {
                            exit = Some(Err("unexpected data after the end of the JSON array"));
                            break;
                        }
                    }
                }
            }
            self.reader.consume(used);
            self.read.fetch_add(used as u64, Ordering::Relaxed);
            match exit {
                Some(Ok(())) => break 'outer,
                Some(Err(what)) => return Err(self.syntax(what)),
                None => {}
            }
        }
        if chunk.is_empty() && chunk.rejects.is_empty() {
            return Ok(None);
        }
        self.seq += 1;
        Ok(Some(chunk))
    }
}

/// Closes the array element that started at `start` of `chunk.data`.
fn finish(
    index: &mut u64,
    limits: &ChunkLimits,
    chunk: &mut Chunk,
    start: usize,
    line: u64,
    oversized: bool,
) {
    {
        if oversized {
            let preview = chunk.data.split_off(start);
            chunk.rejects.push(Reject {
                index: *index,
                line,
                error: format!(
                    "event is larger than the limit of {} bytes (runtime.max_event_size)",
                    limits.max_event
                ),
                preview,
            });
        } else {
            chunk.data.push(b'\n');
            chunk.starts.push(start as u32);
            chunk.lines.push(line);
        }
        *index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events(src: &mut dyn Source) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some(c) = src.next_chunk().unwrap() {
            for i in 0..c.len() {
                out.push((String::from_utf8(c.event(i).to_vec()).unwrap(), c.lines[i]));
            }
        }
        out
    }

    fn limits(events: usize) -> ChunkLimits {
        ChunkLimits {
            events,
            bytes: 1 << 20,
            max_event: 64,
        }
    }

    #[test]
    fn json_lines_skip_blank_lines_and_keep_line_numbers() {
        let input = b"{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}";
        let mut src = JsonLines::new(&input[..], limits(2), Arc::default());
        let evs = all_events(&mut src);
        assert_eq!(
            evs,
            [
                ("{\"a\":1}".into(), 1),
                ("{\"a\":2}".into(), 4),
                ("{\"a\":3}".into(), 5)
            ]
        );
    }

    #[test]
    fn json_lines_reject_oversized_events() {
        let big = format!("{{\"s\":\"{}\"}}", "x".repeat(100));
        let input = format!("{{\"a\":1}}\n{big}\n{{\"a\":2}}\n");
        let mut src = JsonLines::new(input.as_bytes(), limits(10), Arc::default());
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.event(1), b"{\"a\":2}");
        assert_eq!(c.rejects.len(), 1);
        assert_eq!((c.rejects[0].index, c.rejects[0].line), (1, 2));
        assert!(src.next_chunk().unwrap().is_none());
    }

    #[test]
    fn json_array_splits_elements_and_strips_whitespace() {
        let input =
            b"[\n  {\"a\": [1, 2], \"s\": \"x, ]\\\" y\"},\n  3,\n  \"str\" ,\n  {\"b\": {}}\n]\n";
        let mut src = JsonArray::new(&input[..], limits(3), Arc::default(), "in.json".into());
        let evs = all_events(&mut src);
        assert_eq!(
            evs,
            [
                (r#"{"a":[1,2],"s":"x, ]\" y"}"#.into(), 2),
                ("3".into(), 3),
                ("\"str\"".into(), 4),
                (r#"{"b":{}}"#.into(), 5)
            ]
        );
    }

    #[test]
    fn json_array_reports_structure_errors_with_position() {
        let mut src = JsonArray::new(
            &b"[1, 2 3]"[..],
            limits(10),
            Arc::default(),
            "in.json".into(),
        );
        let err = src.next_chunk().unwrap_err().to_string();
        assert_eq!(
            err,
            "in.json:1:7: expected `,` or `]` after an array element"
        );
        let mut src = JsonArray::new(&b"[1, 2"[..], limits(10), Arc::default(), "in.json".into());
        assert!(
            src.next_chunk()
                .unwrap_err()
                .to_string()
                .contains("missing `]`")
        );
        let mut src = JsonArray::new(&b"[]"[..], limits(10), Arc::default(), "in.json".into());
        assert!(src.next_chunk().unwrap().is_none());
    }
}
