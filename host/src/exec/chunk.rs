//! The chunk: the unit of work, of retry and of progress. A run of events
//! framed as newline-delimited JSON, with where each came from in the source;
//! its identity from end to end; and the ways a chunk is cut into pieces.

use super::framing;

/// A chunk's identity from end to end: the same four numbers in the
/// SQLite journal, in JetStream's headers, in PostgreSQL's chunk records
/// and in what stages see (`Context::meta().chunk` is `seq`).
///
/// A chunk cut into pieces (to fit a NATS message, or halved to isolate
/// an event that kills its workers) gives each piece its own
/// `first_index` and `events` but keeps its `seq`: stages see the number
/// of the chunk the events were accepted in, whatever happened after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkId {
    /// The job (for `run`, 0).
    pub job: i64,
    /// The chunk's number in its job, from 0, in event order.
    pub seq: u64,
    /// Index in the job of its first event.
    pub first_index: u64,
    /// Events in it.
    pub events: u64,
}

impl ChunkId {
    /// The identity of `piece` of this chunk: its own events, the same
    /// job and chunk number.
    pub fn piece(&self, piece: &Piece<'_>) -> ChunkId {
        ChunkId {
            first_index: self.first_index + piece.offset,
            events: piece.events,
            ..*self
        }
    }
}

/// Part of a chunk's NDJSON data, cut at line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// Events of the chunk before this piece.
    pub offset: u64,
    /// Events in it.
    pub events: u64,
    /// Its lines, each ending in `\n` (the last one possibly not).
    pub data: &'a [u8],
}

/// An event larger than the piece size it had to fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// Its offset in the chunk.
    pub offset: u64,
    /// Its size in bytes, newline included.
    pub size: usize,
}

/// Cuts NDJSON `data` into pieces of at most `limit` bytes, at line ends
/// (a chunk too large for a NATS message). Fails, cutting nothing, if one
/// event alone is larger than `limit`.
pub fn cut_by_bytes(data: &[u8], limit: usize) -> Result<Vec<Piece<'_>>, Oversized> {
    let mut pieces = Vec::new();
    let (mut start, mut pos, mut offset, mut events) = (0, 0, 0u64, 0u64);
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.len() > limit {
            return Err(Oversized {
                offset: offset + events,
                size: line.len(),
            });
        }
        if pos + line.len() - start > limit {
            pieces.push(Piece {
                offset,
                events,
                data: &data[start..pos],
            });
            (start, offset, events) = (pos, offset + events, 0);
        }
        pos += line.len();
        events += 1;
    }
    if events > 0 {
        pieces.push(Piece {
            offset,
            events,
            data: &data[start..pos],
        });
    }
    Ok(pieces)
}

/// Cuts NDJSON `data` of two events or more into halves at its middle
/// event (a chunk that keeps killing its workers, halved until the event
/// that does it is alone).
pub fn halve(data: &[u8]) -> Option<[Piece<'_>; 2]> {
    let starts = line_starts(data);
    let n = starts.len();
    if n < 2 {
        return None;
    }
    let mid = n / 2;
    let (a, b) = data.split_at(starts[mid]);
    Some([
        Piece {
            offset: 0,
            events: mid as u64,
            data: a,
        },
        Piece {
            offset: mid as u64,
            events: (n - mid) as u64,
            data: b,
        },
    ])
}

/// Groups whole events into NDJSON chunks of at most `size` events: how
/// an HTTP batch, and a retry of a job's dead letters, are cut before
/// they are journaled or published. (Files and stdin are cut as they are
/// read, by [`super::source`].)
#[derive(Debug)]
pub struct Batcher {
    size: usize,
    chunks: Vec<(Vec<u8>, u64)>,
    cur: Vec<u8>,
    n: u64,
}

impl Batcher {
    /// A batcher of chunks of `size` events (at least 1).
    pub fn new(size: usize) -> Batcher {
        Batcher {
            size: size.max(1),
            chunks: Vec::new(),
            cur: Vec::new(),
            n: 0,
        }
    }

    /// Adds one event (without its newline).
    pub fn push(&mut self, event: &[u8]) {
        self.cur.extend_from_slice(event);
        self.cur.push(b'\n');
        self.n += 1;
        if self.n as usize >= self.size {
            self.chunks.push((std::mem::take(&mut self.cur), self.n));
            self.n = 0;
        }
    }

    /// The chunks: each one's NDJSON data and event count, in order.
    pub fn finish(mut self) -> Vec<(Vec<u8>, u64)> {
        if self.n > 0 {
            self.chunks.push((self.cur, self.n));
        }
        self.chunks
    }
}

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
        let mut index = self.first_index + i as u64;
        // Rejects are in index order: each one at or before the index
        // found so far pushes the event one further.
        for r in &self.rejects {
            if r.index <= index {
                index += 1;
            }
        }
        index
    }

    /// The chunk without the events that are not valid UTF-8, which become
    /// rejects; `None` when every event is, the common case, found in one
    /// pass over the data.
    pub fn screened(&self) -> Option<Chunk> {
        if framing::all_utf8(&self.data) {
            return None;
        }
        let refused: Vec<(usize, String)> = (0..self.len())
            .filter_map(|i| framing::check_utf8(self.event(i)).err().map(|e| (i, e)))
            .collect();
        if refused.is_empty() {
            return None;
        }
        let mut out = Chunk {
            seq: self.seq,
            first_index: self.first_index,
            rejects: self.rejects.clone(),
            ..Chunk::default()
        };
        let mut refused = refused.into_iter().peekable();
        for i in 0..self.len() {
            match refused.next_if(|(r, _)| *r == i) {
                Some((_, error)) => out.rejects.push(Reject {
                    index: self.index(i),
                    line: self.lines[i],
                    error,
                    preview: self.event(i).to_vec(),
                }),
                None => out.push(self.event(i), self.lines[i]),
            }
        }
        out.rejects.sort_by_key(|r| r.index);
        Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screening_moves_refused_events_to_rejects_and_keeps_indices() {
        let mut c = Chunk {
            first_index: 10,
            ..Chunk::default()
        };
        c.rejects.push(Reject {
            index: 10,
            line: 1,
            error: "too large".into(),
            preview: Vec::new(),
        });
        c.push(b"{\"a\":1}", 2);
        c.push(b"{\"a\":\"\xff\"}", 3);
        c.push(b"{\"a\":3}", 4);
        assert_eq!((c.index(0), c.index(1), c.index(2)), (11, 12, 13));
        let s = c.screened().expect("one event is not UTF-8");
        assert_eq!(s.len(), 2);
        assert_eq!(s.event(1), b"{\"a\":3}");
        assert_eq!((s.index(0), s.index(1)), (11, 13));
        let r: Vec<(u64, u64)> = s.rejects.iter().map(|r| (r.index, r.line)).collect();
        assert_eq!(r, [(10, 1), (12, 3)]);
        assert!(s.rejects[1].error.contains("not valid UTF-8"));
        assert!(s.screened().is_none(), "what is left passes");
    }

    #[test]
    fn a_batcher_cuts_every_size_events_and_keeps_the_rest() {
        let mut b = Batcher::new(2);
        for e in [&b"a"[..], b"b", b"c"] {
            b.push(e);
        }
        assert_eq!(
            b.finish(),
            vec![(b"a\nb\n".to_vec(), 2), (b"c\n".to_vec(), 1)]
        );
        assert!(Batcher::new(0).finish().is_empty());
    }

    #[test]
    fn cutting_by_bytes_keeps_lines_whole_and_counts_events() {
        let data = b"{\"n\":1}\n{\"n\":22}\n{\"n\":333}\n{\"n\":4}\n";
        let got = cut_by_bytes(data, 20).unwrap();
        assert_eq!(
            got,
            vec![
                Piece {
                    offset: 0,
                    events: 2,
                    data: &b"{\"n\":1}\n{\"n\":22}\n"[..]
                },
                Piece {
                    offset: 2,
                    events: 2,
                    data: &b"{\"n\":333}\n{\"n\":4}\n"[..]
                },
            ]
        );
        assert_eq!(
            cut_by_bytes(data, 9),
            Err(Oversized {
                offset: 2,
                size: 10
            })
        );
        assert_eq!(cut_by_bytes(b"", 9), Ok(vec![]));
    }

    #[test]
    fn halving_splits_at_the_middle_event_and_keeps_the_chunk_number() {
        let data = b"a\nb\nc\n";
        let [a, b] = halve(data).unwrap();
        assert_eq!((a.offset, a.events, a.data), (0, 1, &b"a\n"[..]));
        assert_eq!((b.offset, b.events, b.data), (1, 2, &b"b\nc\n"[..]));
        assert!(halve(b"a\n").is_none());
        let id = ChunkId {
            job: 3,
            seq: 7,
            first_index: 100,
            events: 3,
        };
        let piece = id.piece(&b);
        assert_eq!(
            piece,
            ChunkId {
                job: 3,
                seq: 7,
                first_index: 101,
                events: 2
            }
        );
    }
}
