//! The bodies of the fuzz targets of `bench/fuzz` (`bash bench/fuzz/run`):
//! one function per parser of what a client, a file or a guest wrote.
//! Each checks a property of its parser's answer, not only that it does
//! not panic; a broken property is a panic, which libFuzzer reports as a
//! crash and the corpus test (`tests/it/fuzz_corpus.rs`) as a failure.
//! Both run these same functions: libFuzzer over the inputs it makes up,
//! CI over every file of `bench/fuzz/corpus/<target>/` and of
//! `bench/fuzz/regressions/<target>/` (the inputs that once failed).
//!
//! Not an API: nothing else in wasmpipe calls this module.

use crate::exec::chunk::{Chunk, cut_by_bytes, halve, line_starts};
use crate::exec::encoding::{self, Parser};
use crate::exec::framing;
use crate::exec::source::{ChunkLimits, JsonArray, JsonLines, Source};
use crate::exec::window::spec::WindowSpec;
use crate::manifest::{Manifest, Retries, Settings, StageKind};
use crate::runtime::Encoding;
use crate::serve::ingest::{Format, parse_batch};
use crate::serve::otlp::{Wire, decode};
use crate::serve::toolkit::{ApiError, Params};
use crate::store::{Indexing, Search, Term};
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A target's body: panics when its property does not hold on the input.
pub type Target = fn(&[u8]);

/// Every target: its name (its binary in `bench/fuzz/fuzz_targets/`, its
/// folders under `bench/fuzz/corpus/` and `bench/fuzz/regressions/`) and
/// its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("jsonl", jsonl),
    ("json_array", json_array),
    ("ingest", ingest),
    ("frames", frames),
    ("json_frame", json_frame),
    ("search", search),
    ("query_string", query_string),
    ("otlp", otlp),
];

/// `Manifest::parse`, as `run`, `serve`, `check` and `worker` call it.
///
/// A manifest that fails names a line and a column inside its text, and
/// its rendering shows them as `file:line:column`. One that parses keeps
/// the promises validation makes (stages, unique names, a reduce only
/// last), resolves into serve settings, and its windows give each event
/// time no more windows than a key may have open, each covering it.
///
/// Relative paths resolve against a scratch directory holding a plugin
/// file `stage.wasm`, a stage crate `stage/`, input files `events.jsonl`
/// and `samples.jsonl` and a directory `data/`, the names the corpus uses,
/// so that validation gets past its file checks.
pub fn manifest(data: &[u8]) {
    // `Manifest::load` reads the file as UTF-8 text, refusing anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = manifest_dir().join("fuzz.toml");
    let m = match Manifest::parse(&path, text) {
        Ok(m) => m,
        Err(e) => {
            let d = e
                .diagnostic()
                .expect("a manifest parsed from text fails with a diagnostic, never I/O");
            assert_inside(text.as_bytes(), d.line, d.column, true, &d.message);
            let at = format!("{}:{}:{}", path.display(), d.line, d.column);
            assert!(d.to_string().contains(&at), "the diagnostic shows {at}");
            return;
        }
    };
    let stages = &m.doc.stages;
    assert!(!stages.is_empty(), "a manifest without stages parsed");
    let mut names = HashSet::new();
    for (i, stage) in stages.iter().enumerate() {
        assert!(
            names.insert(stage.name.get_ref().as_str()),
            "a stage name twice"
        );
        let kind = *stage.kind.get_ref();
        assert!(
            kind != StageKind::Reduce || i + 1 == stages.len(),
            "a reduce not last"
        );
        let Some(window) = &stage.window else {
            continue;
        };
        let spec = WindowSpec::from_section(window.get_ref());
        // Times as events carry them: the epoch, a moment of 2026, before 1970.
        // Counted up to the default `max_open_windows` (a manifest that
        // raises it past that is only checked that far).
        let max = spec.max_open;
        let cap = max.min(crate::manifest::DEFAULT_MAX_OPEN_WINDOWS);
        for t in [0, 1_796_637_600_123, -1] {
            let n = spec
                .windows_of(t)
                .take(cap as usize + 1)
                .inspect(|&(start, end)| {
                    assert!(start <= t && t < end, "window {start}..{end} misses {t}")
                })
                .count() as u64;
            assert!(
                n <= cap || max > cap,
                "an event at {t} is in more than {max} windows (max_open_windows)"
            );
        }
    }
    if let Some(serve) = &m.doc.serve {
        Settings::new(&m, serve);
    }
    m.retries();
}

/// The scratch directory manifests are parsed in (see [`manifest`]).
fn manifest_dir() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("wasmpipe-fuzz-manifest");
        let made = (|| -> io::Result<()> {
            std::fs::create_dir_all(dir.join("data"))?;
            std::fs::create_dir_all(dir.join("stage"))?;
            for file in [
                "stage.wasm",
                "events.jsonl",
                "samples.jsonl",
                "stage/Cargo.toml",
            ] {
                std::fs::write(dir.join(file), b"")?;
            }
            Ok(())
        })();
        made.unwrap_or_else(|e| panic!("cannot set up {dir:?}: {e}"));
        dir
    })
}

/// Limits small enough for fuzzed inputs to reach every one of them.
const LIMITS: ChunkLimits = ChunkLimits {
    events: 3,
    bytes: 64,
    max_event: 40,
};

/// Bytes of an oversized event kept for its dead letter (as the sources keep).
const PREVIEW: usize = 256;

/// One event read from a source, or one it refused, with its index and
/// 1-based line in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Event(u64, u64, Vec<u8>),
    Reject(u64, u64, Vec<u8>),
}

/// The JSON-lines source (`run`'s files and stdin), read in blocks of any
/// size.
///
/// Every line is accounted for: each non-blank line is one event, its
/// bytes exactly (without `\n`, nor the `\r` of a `\r\n`), with its index
/// and line number, or, when longer than `max_event`, one refused event
/// whose preview is its start; blank lines are skipped. The same whether
/// the reader hands out the input whole or a byte at a time. Chunks hold
/// at most their limit of events, count every byte read, and can be cut
/// back into their events by the executor's tools (screening, halving,
/// cutting by bytes).
pub fn jsonl(data: &[u8]) {
    let expect = jsonl_model(data);
    for step in [usize::MAX, 1, 7] {
        let read = Arc::new(AtomicU64::new(0));
        let reader = Trickle { data, step };
        let mut src = JsonLines::new(reader, LIMITS, read.clone());
        let got = read_all(&mut src).expect("reading from memory cannot fail");
        assert_eq!(got, expect, "JSON lines read {step} bytes at a time");
        assert_eq!(
            read.load(Ordering::Relaxed),
            data.len() as u64,
            "bytes read"
        );
    }
}

/// What [`jsonl`] expects of its input, from the definition alone.
fn jsonl_model(data: &[u8]) -> Vec<Read> {
    let data = framing::strip_bom(data);
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // After a final `\n` (or in nothing at all) there is no further line.
    if data.is_empty() || data.ends_with(b"\n") {
        lines.pop();
    }
    let last = lines.len();
    let mut out = Vec::new();
    let mut index = 0;
    for (i, line) in lines.into_iter().enumerate() {
        let n = i as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() > LIMITS.max_event {
            let keep = line.len().min(PREVIEW).min(LIMITS.max_event);
            out.push(Read::Reject(index, n, line[..keep].to_vec()));
        } else {
            let terminated = i + 1 < last || data.ends_with(b"\n");
            let event = match line.strip_suffix(b"\r") {
                Some(l) if terminated => l,
                _ => line,
            };
            out.push(Read::Event(index, n, event.to_vec()));
        }
        index += 1;
    }
    out
}

/// A reader that hands out at most `step` bytes per `read` (the sources'
/// unit tests use it too).
pub(crate) struct Trickle<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) step: usize,
}

impl io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Every event and refusal of `src`, in index order, after checking each
/// chunk on its own.
fn read_all(src: &mut dyn Source) -> io::Result<Vec<Read>> {
    let mut out = Vec::new();
    let mut seq = 0;
    while let Some(c) = src.next_chunk()? {
        assert_eq!(c.seq, seq, "chunks are numbered in order");
        seq += 1;
        assert_eq!(
            c.first_index,
            out.len() as u64,
            "a chunk starts where the last ended"
        );
        check_chunk(&c);
        let mut items: Vec<Read> = (0..c.len())
            .map(|i| Read::Event(c.index(i), c.lines[i], c.event(i).to_vec()))
            .chain(
                c.rejects
                    .iter()
                    .map(|r| Read::Reject(r.index, r.line, r.preview.clone())),
            )
            .collect();
        items.sort_by_key(|r| match r {
            Read::Event(i, ..) | Read::Reject(i, ..) => *i,
        });
        out.extend(items);
    }
    Ok(out)
}

/// What every chunk a source reads promises, and what the executor's
/// tools do with it.
fn check_chunk(c: &Chunk) {
    assert!(!c.is_empty() || !c.rejects.is_empty(), "an empty chunk");
    assert!(c.len() <= LIMITS.events, "{} events in a chunk", c.len());
    assert!(
        c.data.len() <= LIMITS.bytes + LIMITS.max_event + 1,
        "{} bytes in a chunk",
        c.data.len()
    );
    assert!(c.data.is_empty() || c.data.ends_with(b"\n"));
    let starts: Vec<usize> = c.starts.iter().map(|&s| s as usize).collect();
    assert_eq!(line_starts(&c.data), starts, "one event per line");
    assert!(c.rejects.windows(2).all(|w| w[0].index < w[1].index));
    // The executor screens out what is not UTF-8, keeping every index.
    match c.screened() {
        None => assert!((0..c.len()).all(|i| framing::check_utf8(c.event(i)).is_ok())),
        Some(s) => {
            assert_eq!(s.events_read(), c.events_read(), "screening loses nothing");
            let kept: HashSet<u64> = (0..c.len()).map(|i| c.index(i)).collect();
            for i in 0..s.len() {
                assert!(framing::check_utf8(s.event(i)).is_ok());
                assert!(kept.contains(&s.index(i)), "screening moved an event");
            }
        }
    }
    // A chunk that kills its workers is halved, one too large for a NATS
    // message cut by bytes: both at line ends, losing nothing.
    if let Some([a, b]) = halve(&c.data) {
        assert_eq!([a.data, b.data].concat(), c.data);
        assert_eq!((a.events + b.events, b.offset), (c.len() as u64, a.events));
    } else {
        assert!(c.len() < 2, "{} events not halved", c.len());
    }
    let limit = 20;
    match cut_by_bytes(&c.data, limit) {
        Ok(pieces) => {
            let whole: Vec<u8> = pieces.iter().flat_map(|p| p.data.iter().copied()).collect();
            assert_eq!(whole, c.data);
            let mut offset = 0;
            for p in &pieces {
                assert!(p.data.len() <= limit && p.offset == offset);
                offset += p.events;
            }
            assert_eq!(offset, c.len() as u64);
        }
        Err(o) => assert_eq!(o.size, c.event(o.offset as usize).len() + 1),
    }
}

/// The JSON-array source (`format = "json_array"`), read through buffers
/// of any size.
///
/// Whatever it makes of its input is the same whether the buffer holds
/// all of it or a byte at a time, its error included. An error names a
/// line and column inside the input. An input that is a JSON array (to
/// serde_json) is read without error, and each element is one event: its
/// text without the whitespace outside strings, starting on the element's
/// line, or a refusal when that text is longer than `max_event`. No event
/// holds a line end.
pub fn json_array(data: &[u8]) {
    let read = |capacity: usize| {
        let reader = io::BufReader::with_capacity(capacity, data);
        let mut src = JsonArray::new(reader, LIMITS, Arc::default(), "in.json".into());
        read_all(&mut src).map_err(|e| e.to_string())
    };
    let got = read(1 << 16);
    for capacity in [1, 5] {
        assert_eq!(
            read(capacity),
            got,
            "read through a buffer of {capacity} bytes"
        );
    }
    let items = match got {
        Ok(items) => items,
        Err(e) => {
            let at = e
                .strip_prefix("in.json:")
                .and_then(|rest| rest.split_once(": "))
                .and_then(|(at, _)| at.split_once(':'))
                .and_then(|(l, c)| Some((l.parse().ok()?, c.parse().ok()?)));
            let (line, column) = at.unwrap_or_else(|| panic!("no `in.json:L:C: ` in {e:?}"));
            assert_inside(data, line, column, false, &e);
            return;
        }
    };
    for item in &items {
        if let Read::Event(_, _, ev) = item {
            assert!(!ev.is_empty() && !ev.contains(&b'\n'), "event {ev:?}");
        }
    }
    let body = framing::strip_bom(data);
    let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
        return;
    };
    assert_eq!(items.len(), elements.len(), "one event per element");
    for (i, (item, el)) in items.iter().zip(&elements).enumerate() {
        let text = strip_space(el.get().as_bytes());
        let offset = el.get().as_ptr() as usize - body.as_ptr() as usize;
        let line = body[..offset].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        match item {
            Read::Event(index, l, ev) => {
                assert_eq!((*index, *l, ev), (i as u64, line, &text), "element {i}");
            }
            Read::Reject(index, l, preview) => {
                assert_eq!((*index, *l), (i as u64, line), "element {i}");
                assert!(text.len() > LIMITS.max_event && text.starts_with(preview));
            }
        }
    }
}

/// A JSON text without the whitespace outside its strings.
fn strip_space(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let (mut in_str, mut esc) = (false, false);
    for &b in text {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if b.is_ascii_whitespace() {
            continue;
        } else if b == b'"' {
            in_str = true;
        }
        out.push(b);
    }
    out
}

/// The serve limits [`ingest`] and [`otlp`] parse under: small, so that
/// fuzzed bodies reach them.
fn settings() -> Settings {
    Settings {
        max_body: 1 << 20,
        max_events: 40,
        max_event_size: 700,
        max_backlog: 1000,
        chunk_size: 3,
        body_timeout: std::time::Duration::from_secs(1),
        retries: Retries::DEFAULT,
        retention: None,
        identity_header: None,
        store_reduce_input: false,
        cors_origins: Vec::new(),
        indexing: Indexing::default(),
    }
}

/// The body of `POST /v1/pipelines/{name}/jobs`, as NDJSON and as a JSON
/// array (`serve::ingest::parse_batch`).
///
/// A batch is taken whole or refused whole (400 or 413), and a refusal
/// that names a line and column names one inside the body. A batch taken
/// is cut into chunks of at most `chunk_size` events, one valid JSON value
/// per line, each passing the checks every source makes: as NDJSON, the
/// body's non-blank lines, in order; as an array, the array's elements,
/// the same values serde_json reads. An array taken gives, sent again as
/// NDJSON, the same chunks.
pub fn ingest(data: &[u8]) {
    let s = settings();
    let body = framing::strip_bom(data);
    match parse_batch(data, Format::Lines, &s) {
        Ok(batch) => {
            let lines = batch_lines(&batch, &s);
            let expect: Vec<&[u8]> = body
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .collect();
            assert_eq!(lines, expect, "the batch is the body's non-blank lines");
        }
        Err(e) => check_refusal(&e, body),
    }
    match parse_batch(data, Format::Array, &s) {
        Ok(batch) => {
            let lines = batch_lines(&batch, &s);
            let elements: Vec<&RawValue> =
                serde_json::from_slice(body).expect("a batch taken is a JSON array");
            assert_eq!(lines.len(), elements.len(), "one event per element");
            for (line, el) in lines.iter().zip(&elements) {
                assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
                if let (Ok(a), Ok(b)) = (
                    serde_json::from_slice::<Value>(line),
                    serde_json::from_str::<Value>(el.get()),
                ) {
                    assert_eq!(a, b, "an event is its element");
                }
            }
            let ndjson: Vec<u8> = lines.iter().flat_map(|l| [*l, b"\n"].concat()).collect();
            let again = parse_batch(&ndjson, Format::Lines, &s).expect("the same events as NDJSON");
            assert_eq!(again.chunks, batch.chunks);
        }
        Err(e) => check_refusal(&e, body),
    }
}

/// The events of a batch, after checking its chunks.
fn batch_lines<'a>(batch: &'a crate::serve::ingest::Batch, s: &Settings) -> Vec<&'a [u8]> {
    let mut lines = Vec::new();
    for (data, n) in &batch.chunks {
        assert!(
            *n as usize <= s.chunk_size && *n > 0,
            "{n} events in a chunk"
        );
        assert!(data.ends_with(b"\n"));
        let chunk: Vec<&[u8]> = data[..data.len() - 1].split(|&b| b == b'\n').collect();
        assert_eq!(chunk.len() as u64, *n, "a chunk's count is its lines");
        for line in chunk {
            assert!(line.len() <= s.max_event_size);
            assert_eq!(framing::check(line), Ok(()));
            assert!(
                serde_json::from_slice::<IgnoredAny>(line).is_ok(),
                "not JSON: {line:?}"
            );
            lines.push(line);
        }
    }
    assert_eq!(
        lines.len() as u64,
        batch.events,
        "the batch's count is its events"
    );
    lines
}

/// A refused body: 400 or 413, and where it names a line (and column),
/// one inside the body.
fn check_refusal(e: &ApiError, body: &[u8]) {
    assert!(
        matches!(e.status.as_u16(), 400 | 413),
        "{}: {}",
        e.status,
        e.message
    );
    let m = &e.message;
    let number = |after: &str| -> Option<usize> {
        let rest = &m[m.find(after)? + after.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    if let Some(line) = number("at line ") {
        let column = number(", column ").unwrap_or(1);
        assert_inside(body, line, column, false, m);
    }
}

/// The decoders of what a stage hands back as MessagePack frames
/// (`exec::encoding`, `wasmpipe_abi::frames`), and of its error records
/// (`wasmpipe_abi::decode_errors`): all a guest's bytes, so any bytes.
///
/// No frame or record is ever reported past the end of its buffer, and
/// the buffer is accounted for: whole frames back to back to its end, or
/// one truncated last. The count the executor checks agrees with the
/// offsets it cuts by. A value that converts to JSON converts to valid
/// JSON, which converts back to the same value, and from there on to the
/// same text (the first text may differ: an `f32` prints as serde_json
/// prints an `f32`, and JSON numbers come back as `f64`s); one that does
/// not convert leaves the output as it was. A conversion of the whole
/// buffer gives one line or one failure per frame.
pub fn frames(data: &[u8]) {
    let starts = encoding::event_starts(Encoding::MsgPack, data);
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert!(starts.first().is_none_or(|&s| s == 0));
    assert!(starts.last().is_none_or(|&s| s < data.len()));
    let decoded: Vec<Result<&[u8], usize>> = wasmpipe_abi::frames(data).collect();
    match encoding::event_count(Encoding::MsgPack, data) {
        Ok(n) => {
            assert_eq!(n, starts.len(), "the count and the offsets agree");
            assert!(decoded.iter().all(Result::is_ok));
        }
        Err(e) => {
            let Some(Err(at)) = decoded.last() else {
                panic!("a count failed ({e}) where every frame is whole");
            };
            assert_eq!(starts.last(), Some(at), "the truncated frame is the last");
            assert!(e.contains(&format!("byte {at} ")), "{e}");
        }
    }
    assert_eq!(decoded.len(), starts.len(), "one frame per offset");
    for (i, frame) in decoded.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        let Ok(value) = frame else {
            assert_eq!(i + 1, decoded.len(), "only the last frame is truncated");
            continue;
        };
        // Within its own slice of the buffer, which it fills.
        let at = value.as_ptr() as usize - data.as_ptr() as usize;
        assert_eq!((at, at + value.len()), (starts[i] + 4, end));
        assert_eq!(encoding::frame_value(&data[starts[i]..end]), *value);
        let mut out = b"kept".to_vec();
        match encoding::msgpack_to_json(value, &mut out) {
            Err(_) => assert_eq!(out, b"kept", "a failed conversion leaves nothing"),
            Ok(()) => {
                let json = std::str::from_utf8(&out[4..]).expect("JSON output is UTF-8");
                let mut de = serde_json::Deserializer::from_str(json);
                de.disable_recursion_limit();
                serde::Deserialize::deserialize(&mut de)
                    .map(|IgnoredAny| ())
                    .and_then(|()| de.end())
                    .unwrap_or_else(|e| panic!("{json:?} is not JSON: {e}"));
                let round = |json: &[u8]| {
                    let text = std::str::from_utf8(json).expect("UTF-8");
                    let mut frame = Vec::new();
                    encoding::json_to_frame(text, &mut frame).expect("its JSON converts back");
                    let mut back = Vec::new();
                    encoding::msgpack_to_json(encoding::frame_value(&frame), &mut back)
                        .expect("and again to JSON");
                    back
                };
                let again = round(json.as_bytes());
                assert_eq!(
                    round(&again),
                    again,
                    "JSON through a frame is a fixed point"
                );
                if let (Some(a), Some(b)) = (json_value(json.as_bytes()), json_value(&again)) {
                    assert_eq!(a, b, "the same value through a frame");
                }
            }
        }
    }
    let mut lines = Vec::new();
    let failed = encoding::convert(Encoding::MsgPack, Encoding::Json, data, &mut lines);
    let converted = memchr::memchr_iter(b'\n', &lines).count();
    assert_eq!(
        converted + failed.len(),
        starts.len(),
        "one line or failure per frame"
    );
    assert!(failed.windows(2).all(|w| w[0].0 < w[1].0));
    // Error records: each one's message right after its 8-byte head; a
    // refusal only where what is left is too short for the length it says.
    let mut at = 0;
    for record in wasmpipe_abi::decode_errors(data) {
        match record {
            Ok(r) => {
                let start = r.message.as_ptr() as usize - data.as_ptr() as usize;
                assert_eq!(start, at + 8, "records follow each other");
                at = start + r.message.len();
                assert!(at <= data.len());
            }
            Err(e) => {
                assert_eq!(e, at, "the truncated record is the next one");
                let rest = &data[at..];
                let len = |h: &[u8]| u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
                assert!(rest.len() < 8 || len(rest) > rest.len() - 8);
                at = data.len();
            }
        }
    }
    assert_eq!(at, data.len(), "the records account for the buffer");
}

/// JSON events to MessagePack frames (`exec::encoding`), as the host
/// hands events to stages: simd-json for long events, serde_json for the
/// rest and for whatever simd-json refuses.
///
/// Both parsers give the same frame, or the same error, whatever the
/// event; the output is left as it was on an error. A frame's header is
/// its length, and it converts back to JSON holding the same value.
pub fn json_frame(data: &[u8]) {
    // Events reach the encoder as `str`s: the executor screens out
    // anything else first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mut fast, mut plain) = (b"x".to_vec(), b"x".to_vec());
    let a = Parser::default().frame(text, &mut fast);
    let b = encoding::json_to_frame(text, &mut plain);
    assert_eq!(a, b, "simd-json and serde_json agree");
    assert_eq!(fast, plain, "simd-json and serde_json write the same frame");
    if b.is_err() {
        assert_eq!(plain, b"x", "a failed conversion leaves nothing");
        return;
    }
    let frame = &plain[1..];
    let len = u32::from_le_bytes(frame[..4].try_into().expect("a header")) as usize;
    assert_eq!(len, frame.len() - 4, "the header is the value's length");
    let mut json = Vec::new();
    encoding::msgpack_to_json(encoding::frame_value(frame), &mut json)
        .expect("a frame converts back");
    if let (Some(a), Some(b)) = (json_value(data), json_value(&json)) {
        assert_eq!(a, b, "the frame holds the event's value");
    }
}

/// The value of JSON text, unless it is not JSON or is deeper than a
/// thread's stack comfortably holds.
fn json_value(bytes: &[u8]) -> Option<Value> {
    if bytes.iter().filter(|&&b| b == b'[' || b == b'{').count() > 200 {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok().map(|()| v)
}

/// `q` of `GET /v1/events` and `/v1/dead-letters` (`store::Search`).
///
/// A search has at most 16 terms; each word and prefix is letters and
/// digits, lower case, and the texts given to SQLite's FTS5 and to
/// PostgreSQL's `to_tsquery` hold nothing their syntax reads (a quote, an
/// operator) but what they themselves add. Field terms name a field path
/// that is safe to write into SQL. A refusal that names a character of
/// the search names one that is in it. The searchable text of any bytes
/// (`words_of`, for events and dead letters) can be computed.
pub fn search(data: &[u8]) {
    let mut words = String::new();
    crate::store::search::words_of(data, &mut words);
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let s = match Search::parse(q) {
        Ok(s) => s,
        Err(e) => {
            if let Some(rest) = e.strip_prefix("the quote at character ") {
                let n: usize = rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no character number in {e:?}"));
                assert_eq!(q.chars().nth(n - 1), Some('"'), "{e}");
            }
            return;
        }
    };
    assert!(s.terms.len() + s.fields.len() <= 16);
    let plain = |w: &str| {
        !w.is_empty()
            && w.chars().all(|c| {
                // Lower case of a letter may be a letter and a combining
                // mark ('İ'): neither is syntax to FTS5 or tsquery.
                (c.is_ascii_alphanumeric() || !c.is_ascii())
                    && !c.is_whitespace()
                    && !c.is_control()
            })
            && w == w.to_lowercase()
    };
    for t in &s.terms {
        match t {
            Term::Words(w) => assert!(w.split(' ').all(plain), "words {w:?}"),
            Term::Prefix(p) => assert!(plain(p), "prefix {p:?}"),
        }
    }
    if let Some(fts) = crate::store::search::fts5(&s.terms) {
        assert_eq!(fts.matches('"').count(), 2 * s.terms.len(), "{fts}");
    }
    for tsq in crate::store::search::pg_tsqueries(&s.terms) {
        assert!(
            !tsq.contains(['\'', '"', '&', '|', '!', '(', ')', '\\']),
            "{tsq}"
        );
    }
    for (path, _) in &s.fields {
        assert!((1..=8).contains(&path.segments().len()));
        for seg in path.segments() {
            assert!(seg.len() <= 64);
            assert!(
                seg.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            );
        }
        path.index_name();
    }
}

/// The query string of every read route (`serve::toolkit::Params`), from
/// the request target on: percent-decoding as axum's `Query` does it,
/// then each route's list of names and each accessor.
///
/// A parameter no route of that list knows is refused naming it. Every
/// value a route reads is refused (400) naming its parameter, or taken
/// within its bounds: ids and cursors from 0, `limit` from 1 to 1000.
pub fn query_string(data: &[u8]) {
    let target = [&b"/v1/events?"[..], data].concat();
    // What is not a request target never reaches a route (hyper answers 400).
    let Ok(uri) = axum::http::Uri::try_from(target.as_slice()) else {
        return;
    };
    type Pairs = axum::extract::Query<Vec<(String, String)>>;
    let Ok(axum::extract::Query(pairs)) = Pairs::try_from_uri(&uri) else {
        return;
    };
    let routes: [&[&str]; 6] = [
        &["pipeline", "cursor", "limit"],
        &[
            "pipeline",
            "job",
            "since",
            "until",
            "q",
            "field.<name>",
            "order",
            "cursor",
            "limit",
        ],
        &[
            "pipeline",
            "job",
            "since",
            "until",
            "q",
            "field.<name>",
            "buckets",
        ],
        &["pipeline", "key", "since", "until", "cursor", "limit"],
        &["pipeline", "job", "q", "cursor", "limit"],
        &[
            "pipeline",
            "job",
            "field.<name>",
            "kinds",
            "cursor",
            "dead_cursor",
        ],
    ];
    let names = |e: &ApiError, name: &str| {
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        assert!(
            e.message.contains(&format!("`{name}`")),
            "{} names `{name}`",
            e.message
        );
    };
    for known in routes {
        let p = match Params::new(pairs.clone(), known) {
            Ok(p) => p,
            Err(e) => {
                assert!(
                    pairs.iter().any(|(k, _)| {
                        !known.contains(&k.as_str()) && e.message.contains(&format!("`{k}`"))
                    }),
                    "{}",
                    e.message
                );
                continue;
            }
        };
        for name in ["job", "cursor", "dead_cursor"] {
            match p.id(name) {
                Ok(id) => assert!(id.is_none_or(|id| id >= 0)),
                Err(e) => names(&e, name),
            }
        }
        for name in ["since", "until"] {
            if let Err(e) = p.time(name) {
                names(&e, name);
            }
        }
        match p.limit() {
            Ok(n) => assert!((1..=1000).contains(&n)),
            Err(e) => names(&e, "limit"),
        }
        if let Err(e) = p.search() {
            names(&e, "q");
        }
        match p.fields() {
            Ok(fields) => {
                let given = pairs
                    .iter()
                    .filter(|(k, _)| k.starts_with("field."))
                    .count();
                assert_eq!(fields.len(), given, "one filter per `field.` parameter");
            }
            Err(e) => assert!(
                e.message.starts_with("field filter `field."),
                "{}",
                e.message
            ),
        }
        if let Ok(q) = p.event_filters() {
            assert!(q.terms.len() <= 16);
        }
    }
}

/// `POST /v1/logs` (`serve::otlp::decode`): an OTLP/HTTP logs export as
/// protobuf and as OTLP/JSON, and a gzipped body's decompression.
///
/// An export is taken or refused whole (400 or 413). One taken gives one
/// event or one rejection per log record, the first rejection's reason
/// when there is one; each event is a JSON object with the documented
/// fields, within `max_event_size` and the checks every source makes, in
/// chunks of at most `chunk_size`. An export taken as OTLP/JSON, encoded
/// as protobuf, gives the same events. Gunzipping never gives more than
/// its limit.
pub fn otlp(data: &[u8]) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message as _;
    let s = settings();
    if data.starts_with(&[0x1f, 0x8b]) {
        match crate::serve::ingest::gunzip(data, 4096) {
            Ok(out) => assert!(out.len() <= 4096),
            Err(e) => assert!(matches!(e.status.as_u16(), 400 | 413), "{}", e.message),
        }
    }
    let records = |r: &ExportLogsServiceRequest| -> u64 {
        r.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum()
    };
    let check = |wire: Wire, request: Option<ExportLogsServiceRequest>| {
        let decoded = match decode(data, wire, &s) {
            Ok(d) => d,
            Err(e) => {
                assert!(matches!(e.status.as_u16(), 400 | 413), "{}", e.message);
                return None;
            }
        };
        let request = request.expect("an export taken is a request");
        let lines = batch_lines(&decoded.batch, &s);
        assert_eq!(lines.len() as u64 + decoded.rejected, records(&request));
        assert_eq!(decoded.rejected > 0, !decoded.why.is_empty());
        const FIELDS: [&str; 15] = [
            "time",
            "time_unix_nano",
            "observed_time",
            "observed_time_unix_nano",
            "severity_text",
            "severity_number",
            "body",
            "attributes",
            "trace_id",
            "span_id",
            "flags",
            "event_name",
            "dropped_attributes_count",
            "resource",
            "scope",
        ];
        for line in &lines {
            let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(line) else {
                // Only a value deeper than serde_json's own limit.
                continue;
            };
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            let mut want = FIELDS.to_vec();
            keys.sort_unstable();
            want.sort_unstable();
            assert_eq!(keys, want, "the fields of a record");
        }
        Some(decoded.batch.chunks)
    };
    let json = serde_json::from_slice::<ExportLogsServiceRequest>(data).ok();
    let from_json = check(Wire::Json, json.clone());
    check(Wire::Protobuf, ExportLogsServiceRequest::decode(data).ok());
    if let (Some(chunks), Some(request)) = (from_json, json) {
        let proto = request.encode_to_vec();
        // protobuf's own nesting limit (100) is below serde_json's (128).
        if let Ok(again) = decode(&proto, Wire::Protobuf, &s) {
            assert_eq!(again.batch.chunks, chunks, "the same export as protobuf");
        }
    }
}

/// That 1-based `line` is a line of `text`, and `column` (1-based, or 0
/// for the start of a line, as serde_json says at the end of input) is at
/// most one past its end, counted in characters or in bytes.
fn assert_inside(text: &[u8], line: usize, column: usize, chars: bool, what: &str) {
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    assert!(
        (1..=lines.len()).contains(&line),
        "line {line} of {} lines: {what}",
        lines.len()
    );
    let l = lines[line - 1];
    let len = if chars {
        String::from_utf8_lossy(l).chars().count()
    } else {
        l.len()
    };
    assert!(
        column <= len + 1,
        "column {column} of line {line}, {len} long: {what}"
    );
}
