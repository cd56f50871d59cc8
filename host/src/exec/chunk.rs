//! The chunk: the unit of work, of retry and of progress. A run of events
//! framed as newline-delimited JSON, with where each came from in the source.

/// A chunk of events read from a source.
#[derive(Debug, Default, Clone)]
pub struct Chunk {
    /// Position of the chunk in its source (0, 1, 2, ...); outputs are
    /// written in this order when the pipeline is ordered.
    pub seq: u64,
    /// The events, each followed by `\n`. Never contains blank lines.
    pub data: Vec<u8>,
    /// Byte offset in `data` where each event starts.
    pub starts: Vec<u32>,
    /// 0-based index in the source of the chunk's first event.
    pub first_index: u64,
    /// 1-based source line each event starts on.
    pub lines: Vec<u64>,
    /// Events the source refused before any stage saw them (too large).
    pub rejects: Vec<Reject>,
}

/// An event refused by the source itself.
#[derive(Debug, Clone)]
pub struct Reject {
    /// 0-based index in the source.
    pub index: u64,
    /// 1-based source line.
    pub line: u64,
    /// Why.
    pub error: String,
    /// The start of the event, for the dead letter.
    pub preview: Vec<u8>,
}

impl Chunk {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the chunk holds no events (it may still carry rejects).
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The bytes of event `i`, without its newline.
    pub fn event(&self, i: usize) -> &[u8] {
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.data.len(), |&s| s as usize);
        let ev = &self.data[start..end];
        ev.strip_suffix(b"\n").unwrap_or(ev)
    }

    /// Index in the source of event `i`, counting the events the source
    /// refused before it (they have indices too, but no place in `data`).
    pub fn index(&self, i: usize) -> u64 {
        let before = if self.rejects.is_empty() {
            0
        } else {
            let line = self.lines[i];
            self.rejects.iter().filter(|r| r.line < line).count()
        };
        self.first_index + (i + before) as u64
    }

    /// Events read from the source: those in `data` and those refused.
    pub fn events_read(&self) -> u64 {
        (self.len() + self.rejects.len()) as u64
    }

    /// Appends one event (without newline) read from source line `line`.
    pub fn push(&mut self, event: &[u8], line: u64) {
        self.starts.push(self.data.len() as u32);
        self.data.extend_from_slice(event);
        self.data.push(b'\n');
        self.lines.push(line);
    }
}

/// Byte offsets of the lines of an NDJSON buffer (each line ends in `\n`,
/// the last one possibly not).
pub fn line_starts(buf: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    if buf.is_empty() {
        return starts;
    }
    starts.push(0);
    for nl in memchr::memchr_iter(b'\n', buf) {
        if nl + 1 < buf.len() {
            starts.push(nl + 1);
        }
    }
    starts
}
