//! A JSON-lines source that never ends by itself: it follows a file as it
//! grows (polling at its end) or reads stdin until it closes, and cuts a
//! chunk when it is full or when no data has come for a moment, so that a
//! trickle of events is processed promptly rather than once 4096 have
//! arrived.
//!
//! A reader thread moves raw bytes through a small bounded channel; the
//! chunks themselves are cut by [`JsonLines`] over the complete lines
//! gathered, so blank lines, `\r\n` and oversized events are handled
//! exactly as in a plain run.

use crate::exec::{Chunk, ChunkLimits, JsonLines, Source};
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long the source waits for more data before closing a partial chunk.
pub const LINGER: Duration = Duration::from_millis(20);
/// How often a followed file is polled for appended data at its end.
pub const POLL: Duration = Duration::from_millis(25);
/// Bytes moved per read.
const BLOCK: usize = 64 << 10;

/// Where a [`Follow`] source reads.
#[derive(Debug, Clone)]
pub enum FollowInput {
    /// A file, read from its start and then followed as it grows.
    File(PathBuf),
    /// Standard input, read until it closes.
    Stdin,
}

/// JSON lines from a growing file or from stdin; see the module docs.
pub struct Follow {
    rx: Receiver<io::Result<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    limits: ChunkLimits,
    read: Arc<AtomicU64>,
    /// Bytes received and not yet cut into a chunk.
    pending: Vec<u8>,
    /// How far `pending` has been scanned for line ends, how many complete
    /// lines that covers, and where the last of them ends.
    scanned: usize,
    lines: usize,
    last_end: usize,
    /// Where a full chunk's worth of lines ends, once found.
    full_at: Option<(usize, usize)>,
    /// Discarding the rest of an oversized line until its newline.
    skipping: bool,
    eof: bool,
    seq: u64,
    index: u64,
    line: u64,
}

impl Follow {
    /// Starts reading `input` on a thread of its own. `stop` ends the source
    /// (after what has been received is cut into chunks); `read` counts bytes.
    pub fn new(
        input: FollowInput,
        limits: ChunkLimits,
        stop: Arc<AtomicBool>,
        read: Arc<AtomicU64>,
    ) -> io::Result<Follow> {
        let (tx, rx) = bounded::<io::Result<Vec<u8>>>(8);
        let mut reader: Box<dyn Read + Send> = match &input {
            FollowInput::File(p) => Box::new(std::fs::File::open(p)?),
            FollowInput::Stdin => Box::new(io::stdin()),
        };
        let is_file = matches!(input, FollowInput::File(_));
        let thread_stop = stop.clone();
        // Not joined: a read from stdin cannot be interrupted, and the
        // thread ends with the process.
        std::thread::Builder::new()
            .name("wasmpipe-follow".into())
            .spawn(move || {
                let mut buf = vec![0u8; BLOCK];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) if is_file && !thread_stop.load(Ordering::Relaxed) => {
                            std::thread::sleep(POLL)
                        }
                        Ok(0) => break,
                        Ok(n) => {
                            if tx.send(Ok(buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
            })?;
        Ok(Follow {
            rx,
            stop,
            limits,
            read,
            pending: Vec::new(),
            scanned: 0,
            lines: 0,
            last_end: 0,
            full_at: None,
            skipping: false,
            eof: false,
            seq: 0,
            index: 0,
            line: 0,
        })
    }

    /// Adds received bytes, dropping the middle of any line that grows past
    /// the event size limit (the source then refuses it, with a preview).
    fn receive(&mut self, mut data: &[u8]) {
        self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        if self.skipping {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.skipping = false;
                    data = &data[i..];
                }
                None => return,
            }
        }
        self.pending.extend_from_slice(data);
        self.scan();
        if self.full_at.is_none() && self.pending.len() - self.last_end > self.limits.max_event + 1
        {
            self.pending
                .truncate(self.last_end + self.limits.max_event + 1);
            self.scanned = self.pending.len();
            self.skipping = true;
        }
    }

    /// Finds complete lines in the unscanned part of `pending`.
    fn scan(&mut self) {
        while self.full_at.is_none() {
            let Some(i) = memchr::memchr(b'\n', &self.pending[self.scanned..]) else {
                self.scanned = self.pending.len();
                return;
            };
            let end = self.scanned + i + 1;
            self.scanned = end;
            self.lines += 1;
            self.last_end = end;
            if self.lines >= self.limits.events || end >= self.limits.bytes {
                self.full_at = Some((end, self.lines));
            }
        }
    }

    /// Cuts the first `end` bytes (`lines` lines) of `pending` into a chunk.
    fn cut(&mut self, end: usize, lines: usize) -> io::Result<Option<Chunk>> {
        let data: Vec<u8> = self.pending.drain(..end).collect();
        self.scanned = 0;
        self.lines = 0;
        self.last_end = 0;
        self.full_at = None;
        self.scan();
        let limits = ChunkLimits {
            events: usize::MAX,
            bytes: usize::MAX,
            ..self.limits
        };
        let mut lines_src = JsonLines::new(&data[..], limits, Arc::default());
        let chunk = lines_src.next_chunk()?;
        let first_line = self.line;
        self.line += lines as u64;
        let Some(mut chunk) = chunk else {
            return Ok(None); // only blank lines
        };
        chunk.seq = self.seq;
        chunk.first_index += self.index;
        for l in &mut chunk.lines {
            *l += first_line;
        }
        for r in &mut chunk.rejects {
            r.index += self.index;
            r.line += first_line;
        }
        self.seq += 1;
        self.index += (chunk.len() + chunk.rejects.len()) as u64;
        Ok(Some(chunk))
    }
}

impl Source for Follow {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            if let Some((end, lines)) = self.full_at {
                match self.cut(end, lines)? {
                    Some(c) => return Ok(Some(c)),
                    None => continue,
                }
            }
            if !self.eof && self.stop.load(Ordering::Relaxed) {
                // Take what has already arrived, and nothing after it: the
                // input ends here, even if a writer is still going.
                for _ in 0..self.rx.len() {
                    match self.rx.try_recv() {
                        Ok(block) => self.receive(&block?),
                        Err(_) => break,
                    }
                }
                self.eof = true;
                continue;
            }
            if self.eof {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                if self.pending.last() != Some(&b'\n') {
                    // A last line without its newline is still an event.
                    self.pending.push(b'\n');
                    self.scan();
                }
                if self.full_at.is_some() {
                    continue;
                }
                let (end, lines) = (self.last_end, self.lines);
                match self.cut(end, lines)? {
                    Some(c) => return Ok(Some(c)),
                    None => continue,
                }
            }
            match self.rx.recv_timeout(LINGER) {
                Ok(block) => self.receive(&block?),
                Err(RecvTimeoutError::Timeout) => {
                    if self.lines > 0 {
                        let (end, lines) = (self.last_end, self.lines);
                        if let Some(c) = self.cut(end, lines)? {
                            return Ok(Some(c));
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits(events: usize) -> ChunkLimits {
        ChunkLimits {
            events,
            bytes: 1 << 20,
            max_event: 64,
        }
    }

    #[test]
    fn follows_a_growing_file_and_numbers_events_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n{\"a\"").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut src = Follow::new(
            FollowInput::File(p.clone()),
            limits(2),
            stop.clone(),
            Arc::default(),
        )
        .unwrap();
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!(
            (c.seq, c.len(), c.lines.clone()),
            (0, 1, vec![1]),
            "blank line counted"
        );
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!((c.seq, c.first_index, c.lines.clone()), (1, 1, vec![3, 4]));
        // The partial last line waits for its end.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(format!(":4}}\n{}\n{{\"a\":5}}\n", "x".repeat(200)).as_bytes())
            .unwrap();
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!(c.event(0), b"{\"a\":4}");
        assert_eq!((c.first_index, c.lines[0]), (3, 5));
        assert_eq!(c.rejects.len(), 1, "the oversized line is refused");
        assert_eq!((c.rejects[0].index, c.rejects[0].line), (4, 6));
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!(
            (c.event(0), c.first_index, c.lines[0]),
            (&b"{\"a\":5}"[..], 5, 7)
        );
        f.write_all(b"{\"a\":6}").unwrap();
        std::thread::sleep(POLL * 4);
        stop.store(true, Ordering::Relaxed);
        let c = src.next_chunk().unwrap().unwrap();
        assert_eq!(
            c.event(0),
            b"{\"a\":6}",
            "a final line without newline is kept at stop"
        );
        assert!(src.next_chunk().unwrap().is_none());
    }

    #[test]
    fn a_stop_while_a_writer_goes_on_splits_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, "").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut src = Follow::new(
            FollowInput::File(p.clone()),
            limits(100),
            stop.clone(),
            Arc::default(),
        )
        .unwrap();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            for i in 0..20_000 {
                // Each event arrives in two writes, split mid-line.
                f.write_all(format!("{{\"a\":{i}").as_bytes()).unwrap();
                f.write_all(b"}\n").unwrap();
            }
        });
        let mut events = Vec::new();
        while let Some(c) = src.next_chunk().unwrap() {
            for i in 0..c.len() {
                events.push(String::from_utf8(c.event(i).to_vec()).unwrap());
            }
            if events.len() > 5_000 {
                stop.store(true, Ordering::Relaxed);
            }
        }
        writer.join().unwrap();
        let last = events.len() - 1;
        for (i, e) in events.iter().enumerate() {
            let whole = *e == format!("{{\"a\":{i}}}");
            // Only the very last event may be cut short by the stop.
            assert!(
                whole || (i == last && format!("{{\"a\":{i}}}").starts_with(e.as_str())),
                "event {i}: {e}"
            );
        }
    }
}
