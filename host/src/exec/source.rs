//! Sources split input into chunks without ever holding more than one
//! chunk: JSON lines (split at newlines) and a JSON array (split at its
//! top-level commas by a small scanner that also strips insignificant
//! whitespace, so a pretty-printed element becomes one line).

use super::chunk::{Chunk, Reject};
use super::framing;
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
///
/// Reads the input in large blocks and finds line ends with `memchr`; each
/// run of consecutive events is copied into the chunk with one `memcpy`.
pub struct JsonLines<R> {
    reader: R,
    limits: ChunkLimits,
    seq: u64,
    /// Index of the next event in the source.
    index: u64,
    /// Lines read so far.
    line: u64,
    /// Input read but not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// Inside a line too long to be an event: its dead letter, held until
    /// the rest of the line has been skipped, and whether the line is
    /// blank so far. A blank line is skipped whatever its length: whether
    /// it fits in one read must not decide if it is a dead letter (found
    /// by fuzzing, bench/fuzz/regressions/jsonl).
    skipping: Option<(Reject, bool)>,
    eof: bool,
    /// Whether a byte-order mark at the start has been looked for.
    bom_checked: bool,
    read: Arc<AtomicU64>,
}

/// Bytes asked of the reader at a time.
const READ_BLOCK: usize = 256 << 10;

impl<R: io::Read + Send> JsonLines<R> {
    /// Reads JSON lines from `reader`; `read` counts bytes consumed.
    pub fn new(reader: R, limits: ChunkLimits, read: Arc<AtomicU64>) -> Self {
        JsonLines {
            reader,
            limits,
            seq: 0,
            index: 0,
            line: 0,
            buf: Vec::new(),
            pos: 0,
            skipping: None,
            eof: false,
            bom_checked: false,
            read,
        }
    }

    /// Moves the unconsumed bytes to the front and appends what one `read`
    /// returns; `false` at end of input.
    fn fill(&mut self) -> io::Result<bool> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let old = self.buf.len();
        self.buf.resize(old + READ_BLOCK, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n > 0)
    }

    fn reject(&self, line: u64, start: &[u8]) -> Reject {
        Reject {
            index: self.index,
            line,
            error: format!(
                "event is larger than the limit of {} bytes (runtime.max_event_size)",
                self.limits.max_event
            ),
            // At most `max_event` bytes, so the preview does not depend on
            // how much of the line had been read when it was refused.
            preview: start[..start.len().min(PREVIEW).min(self.limits.max_event)].to_vec(),
        }
    }
}

impl<R: io::Read + Send> Source for JsonLines<R> {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut chunk = Chunk {
            seq: self.seq,
            first_index: self.index,
            ..Chunk::default()
        };
        if !self.bom_checked {
            self.bom_checked = true;
            while self.buf.len() - self.pos < framing::BOM.len() && !self.eof {
                if !self.fill()? {
                    self.eof = true;
                }
            }
            if self.buf[self.pos..].starts_with(framing::BOM) {
                self.pos += framing::BOM.len();
            }
        }
        loop {
            // `buf[run..]` is the run of whole events not yet copied.
            let mut run = self.pos;
            while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
                let (start, end) = (self.pos, self.pos + nl);
                self.pos = end + 1;
                self.line += 1;
                if let Some((reject, blank)) = self.skipping.take() {
                    // The end of an oversized line.
                    if !(blank && self.buf[start..end].iter().all(u8::is_ascii_whitespace)) {
                        chunk.rejects.push(reject);
                        self.index += 1;
                    }
                    run = self.pos;
                    continue;
                }
                let line = &self.buf[start..end];
                let blank = line.iter().all(u8::is_ascii_whitespace);
                if blank || line.len() > self.limits.max_event {
                    chunk.data.extend_from_slice(&self.buf[run..start]);
                    if !blank {
                        let reject = self.reject(self.line, &self.buf[start..end]);
                        chunk.rejects.push(reject);
                        self.index += 1;
                    }
                    run = self.pos;
                    continue;
                }
                if line.ends_with(b"\r") {
                    // `\r\n` line ends: copy the event without its `\r`.
                    chunk.data.extend_from_slice(&self.buf[run..end - 1]);
                    chunk.data.push(b'\n');
                    chunk.starts.push((chunk.data.len() - (end - start)) as u32);
                    run = self.pos;
                } else {
                    chunk.starts.push((chunk.data.len() + start - run) as u32);
                }
                chunk.lines.push(self.line);
                self.index += 1;
                if chunk.starts.len() >= self.limits.events
                    || chunk.data.len() + self.pos - run >= self.limits.bytes
                {
                    chunk.data.extend_from_slice(&self.buf[run..self.pos]);
                    self.seq += 1;
                    return Ok(Some(chunk));
                }
            }
            chunk.data.extend_from_slice(&self.buf[run..self.pos]);
            // `buf[pos..]` is a partial line.
            let partial = &self.buf[self.pos..];
            if let Some((_, blank)) = &mut self.skipping {
                *blank &= partial.iter().all(u8::is_ascii_whitespace);
                self.pos = self.buf.len();
            } else if partial.len() > self.limits.max_event {
                let blank = partial.iter().all(u8::is_ascii_whitespace);
                let reject = self.reject(self.line + 1, partial);
                self.skipping = Some((reject, blank));
                self.pos = self.buf.len();
            }
            if self.eof {
                break;
            }
            if !self.fill()? {
                self.eof = true;
            }
        }
        // End of input: a last line without a newline is an event too.
        if let Some((reject, blank)) = self.skipping.take() {
            self.line += 1;
            if !blank {
                chunk.rejects.push(reject);
                self.index += 1;
            }
        } else if self.pos < self.buf.len() {
            self.line += 1;
            let line = &self.buf[self.pos..];
            if line.iter().all(u8::is_ascii_whitespace) {
                // Blank, as a line that ends in `\n` is: skipped.
            } else if line.len() > self.limits.max_event {
                let reject = self.reject(self.line, line);
                chunk.rejects.push(reject);
                self.index += 1;
            } else {
                chunk.starts.push(chunk.data.len() as u32);
                chunk.lines.push(self.line);
                chunk.data.extend_from_slice(line);
                chunk.data.push(b'\n');
                self.index += 1;
            }
        }
        self.pos = self.buf.len();
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
    /// Bytes of a leading byte-order mark seen so far; `None` once past
    /// the start. Matched byte by byte, as the reader's buffers may cut it
    /// (found by fuzzing, bench/fuzz/regressions/json_array).
    bom: Option<usize>,
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
            bom: Some(0),
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
        let mut broken = false;
        // A chunk closes between elements only (the loop below stops at the
        // first `,` or element end past a limit): one that closed inside an
        // element, where a read happened to end, would cut it in two and
        // hand the next chunk its tail as an event (found by fuzzing,
        // bench/fuzz/regressions/json_array).
        'outer: loop {
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
                if let Some(seen) = self.bom {
                    if b == framing::BOM[seen] {
                        self.bom = (seen + 1 < framing::BOM.len()).then_some(seen + 1);
                        continue;
                    }
                    self.bom = None;
                    if seen > 0 {
                        exit = Some(Err(
                            "expected `[` at the start of a JSON array source, found a cut byte-order mark",
                        ));
                        break;
                    }
                }
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
                        broken = false;
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
                                refusal(oversized, broken),
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
                                refusal(oversized, broken),
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
                        // A line break inside a string (which JSON does not
                        // allow) would cut the event in two lines of the
                        // chunk: the event is refused instead (found by
                        // fuzzing, bench/fuzz/regressions/json_array).
                        if in_string && b == b'\n' {
                            broken = true;
                        }
                        // Whitespace outside strings is dropped so that every
                        // event fits on one line.
                        if (in_string || !b.is_ascii_whitespace()) && !oversized && !broken {
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
                        // An object or array closed its last bracket, or a
                        // top-level string element closed its quote.
                        let closed =
                            !next.1 && ((depth > 0 && next.0 == 0) || (depth == 0 && in_string));
                        if closed {
                            self.state = ArrayState::Separator;
                            finish(
                                &mut self.index,
                                &self.limits,
                                &mut chunk,
                                ev_start,
                                ev_line,
                                refusal(oversized, broken),
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

/// Why the source refuses an array element itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Larger than `max_event`.
    Oversized,
    /// A line break inside a string.
    LineBreak,
}

fn refusal(oversized: bool, broken: bool) -> Option<Refusal> {
    if oversized {
        Some(Refusal::Oversized)
    } else if broken {
        Some(Refusal::LineBreak)
    } else {
        None
    }
}

/// Closes the array element that started at `start` of `chunk.data`.
fn finish(
    index: &mut u64,
    limits: &ChunkLimits,
    chunk: &mut Chunk,
    start: usize,
    line: u64,
    refused: Option<Refusal>,
) {
    {
        if let Some(why) = refused {
            let mut preview = chunk.data.split_off(start);
            preview.truncate(PREVIEW);
            chunk.rejects.push(Reject {
                index: *index,
                line,
                error: match why {
                    Refusal::Oversized => format!(
                        "event is larger than the limit of {} bytes (runtime.max_event_size)",
                        limits.max_event
                    ),
                    Refusal::LineBreak => {
                        "event is not valid JSON: a string holds a line break (write it `\\n`)"
                            .to_string()
                    }
                },
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

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_first_event() {
        let mut lines = JsonLines::new(
            &b"\xEF\xBB\xBF{\"a\":1}\n{\"a\":2}\n"[..],
            limits(10),
            Arc::default(),
        );
        assert_eq!(
            all_events(&mut lines),
            vec![("{\"a\":1}".to_string(), 1), ("{\"a\":2}".to_string(), 2)]
        );
        let mut array = JsonArray::new(
            &b"\xEF\xBB\xBF[{\"a\":1}]"[..],
            limits(10),
            Arc::default(),
            "in.json".into(),
        );
        assert_eq!(all_events(&mut array), vec![("{\"a\":1}".to_string(), 1)]);
    }

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

    use crate::fuzzing::Trickle;

    #[test]
    fn json_lines_are_the_same_whatever_the_read_sizes() {
        let big = format!("{{\"s\":\"{}\"}}", "x".repeat(200));
        let mut input = String::new();
        for i in 0..300 {
            match i % 37 {
                5 => input.push_str(&big),
                9 => input.push_str("   "),
                _ => input.push_str(&format!("{{\"i\":{i}}}")),
            }
            input.push(if i % 11 == 0 { '\r' } else { ' ' });
            input.push('\n');
        }
        input.push_str("{\"last\":true}");
        let expect = |step: usize| {
            let mut src = JsonLines::new(
                Trickle {
                    data: input.as_bytes(),
                    step,
                },
                limits(7),
                Arc::default(),
            );
            let mut events = Vec::new();
            let mut rejects = Vec::new();
            while let Some(c) = src.next_chunk().unwrap() {
                assert!(c.len() <= 7);
                for i in 0..c.len() {
                    events.push((String::from_utf8(c.event(i).to_vec()).unwrap(), c.lines[i]));
                }
                rejects.extend(c.rejects.iter().map(|r| (r.index, r.line, r.preview.len())));
            }
            (events, rejects)
        };
        let (events, rejects) = expect(1 << 20);
        let oversized = (0..300).filter(|i| i % 37 == 5).count();
        let blank = (0..300).filter(|i| i % 37 == 9).count();
        assert_eq!(
            events.len(),
            300 - oversized - blank + 1,
            "all but the oversized and blank lines, plus the last"
        );
        assert_eq!(
            events[0],
            ("{\"i\":0}".to_string(), 1),
            "`\\r` and the space before it are not stripped alike"
        );
        assert_eq!(
            events.last().unwrap(),
            &("{\"last\":true}".to_string(), 301)
        );
        assert_eq!(rejects.len(), oversized);
        assert_eq!(
            rejects[0],
            (5, 6, 64),
            "index, line and the start of the event"
        );
        for step in [1, 3, 64, 65, 250] {
            assert_eq!(
                expect(step),
                (events.clone(), rejects.clone()),
                "read size {step}"
            );
        }
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

    // The three below were found by fuzzing (bench/fuzz/regressions).

    #[test]
    fn a_blank_line_is_skipped_whatever_its_length_and_the_read_sizes() {
        let input = format!(
            "{{\"a\":1}}\n{}\n{{\"b\":2}}\n{}",
            " ".repeat(100),
            "\t".repeat(70)
        );
        for step in [1, 3, 1 << 20] {
            let reader = Trickle {
                data: input.as_bytes(),
                step,
            };
            let mut src = JsonLines::new(reader, limits(10), Arc::default());
            let c = src.next_chunk().unwrap().unwrap();
            assert_eq!((c.len(), c.rejects.len()), (2, 0), "read size {step}");
            assert_eq!(c.lines, [1, 3]);
        }
    }

    #[test]
    fn json_array_chunks_close_between_elements_whatever_the_buffer() {
        let input = format!(
            "\u{feff}[{}]",
            [r#"{"key":"and","value":3}"#; 9].join(",\n")
        );
        let small = ChunkLimits {
            events: 4,
            bytes: 60,
            max_event: 64,
        };
        for capacity in [1, 2, 7, 1 << 16] {
            let reader = io::BufReader::with_capacity(capacity, input.as_bytes());
            let mut src = JsonArray::new(reader, small, Arc::default(), "in.json".into());
            let mut events = 0;
            while let Some(c) = src.next_chunk().unwrap() {
                assert!(c.data.ends_with(b"\n"), "buffer of {capacity}");
                for i in 0..c.len() {
                    assert_eq!(c.event(i), br#"{"key":"and","value":3}"#);
                    events += 1;
                }
            }
            assert_eq!(events, 9, "buffer of {capacity}");
        }
    }

    #[test]
    fn json_array_refuses_an_element_with_a_line_break_in_a_string() {
        let mut src = JsonArray::new(
            &b"[{\"a\":\"line\nbreak\"}, 2]"[..],
            limits(10),
            Arc::default(),
            "in.json".into(),
        );
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!((c.len(), c.event(0)), (1, &b"2"[..]));
        assert_eq!((c.rejects[0].index, c.rejects[0].line), (0, 1));
        assert!(c.rejects[0].error.contains("line break"));
        assert_eq!(c.index(0), 1);
    }
}
