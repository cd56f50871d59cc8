//! Events between the host and its stages in either encoding
//! (`docs/abi.md`, "Event encodings"): JSON lines, or MessagePack frames for
//! stages whose module takes them.
//!
//! The host parses each event's JSON once, natively, into a frame, so that
//! a stage decodes a compact binary instead of running a JSON parser under
//! the wasm compiler; and stages that speak MessagePack hand frames to each
//! other with no JSON in between. Only the pipeline's edges see JSON: the
//! chunk coming in, and outputs (or dead letters) going out.
//!
//! Both directions are written here by hand, straight from one form to the
//! other: no `Value` is built per event, a string without escapes is copied
//! as it is, and the JSON printed for a frame is what `serde_json` prints for
//! the same value, so that a stage's output is the same bytes whichever
//! encoding carried it.

use crate::runtime::Encoding;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use wasmpipe_abi::FRAME_HEADER;
use wasmpipe_abi::msgpack::{
    ARRAY, MAP, close_header, put_f64, put_header, put_int, put_str, put_uint,
};

/// Nesting deeper than this is refused, on the way in as on the way out.
/// Deeper than `serde_json`'s own 128: a stage that reads only some fields
/// of an event takes it in JSON whatever lies in the fields it skips, and
/// must take it as frames too; both walks recurse, and this keeps them far
/// inside a thread's stack.
const MAX_DEPTH: usize = 512;

/// Byte offsets of the events of a buffer in `encoding`. For frames, a
/// truncated last frame counts as one event (so that it fails alone).
pub fn event_starts(encoding: Encoding, buf: &[u8]) -> Vec<usize> {
    match encoding {
        Encoding::Json => super::chunk::line_starts(buf),
        Encoding::MsgPack => {
            let mut starts = Vec::new();
            let mut at = 0;
            while at < buf.len() {
                starts.push(at);
                at = frame_end(buf, at).unwrap_or(buf.len());
            }
            starts
        }
    }
}

/// Number of events in a buffer a stage returned, or why it is malformed.
pub fn event_count(encoding: Encoding, buf: &[u8]) -> Result<usize, String> {
    match encoding {
        Encoding::Json => {
            let n = memchr::memchr_iter(b'\n', buf).count();
            Ok(if buf.last().is_some_and(|&b| b != b'\n') {
                n + 1
            } else {
                n
            })
        }
        Encoding::MsgPack => wasmpipe_abi::frames(buf).try_fold(0, |n, frame| match frame {
            Ok(_) => Ok(n + 1),
            Err(at) => Err(format!("output frame at byte {at} is truncated")),
        }),
    }
}

/// Where the frame whose header is at `at` ends, if it is whole.
fn frame_end(buf: &[u8], at: usize) -> Option<usize> {
    let header = buf.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes(header.try_into().ok()?) as usize;
    let end = at + FRAME_HEADER + len;
    (end <= buf.len()).then_some(end)
}

/// The value of the frame at `buf[start..end]` (header included).
pub fn frame_value(frame: &[u8]) -> &[u8] {
    &frame[FRAME_HEADER.min(frame.len())..]
}

/// Appends one JSON event (a line, without its newline) as a frame. On
/// failure `out` is as it was and the error reads as the SDK words a JSON
/// event it cannot parse.
pub fn json_to_frame(line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    let mut de = serde_json::Deserializer::from_str(line);
    // `Transcode` counts depth itself, against `MAX_DEPTH`.
    de.disable_recursion_limit();
    let res = Transcode { out, depth: 0 }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Err(e) = res {
        out.truncate(start);
        return Err(format!("invalid event JSON: {e}"));
    }
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends the JSON text of one MessagePack value (a frame's value), or
/// says why it is not one. On failure `out` is as it was.
pub fn msgpack_to_json(value: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let mut rd = value;
    let res = write_json(&mut rd, out, 0).and_then(|()| {
        if rd.is_empty() {
            Ok(())
        } else {
            Err(format!("{} bytes follow the value", rd.len()))
        }
    });
    if res.is_err() {
        out.truncate(start);
    }
    res
}

/// A `serde_json` visitor that writes what it visits as MessagePack.
struct Transcode<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Transcode<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Transcode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        put_int(self.out, v);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        put_uint(self.out, v);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // Always float 64: `1.0` must stay a float, and print back as `1.0`.
        put_f64(self.out, v);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        put_str(self.out, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        let at = open(self.out, depth)?;
        let mut n = 0u32;
        while seq
            .next_element_seed(Transcode {
                out: &mut *self.out,
                depth,
            })?
            .is_some()
        {
            n += 1;
        }
        close_header(self.out, at, n as usize, ARRAY);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        let at = open(self.out, depth)?;
        let mut n = 0u32;
        while map
            .next_key_seed(Transcode {
                out: &mut *self.out,
                depth,
            })?
            .is_some()
        {
            map.next_value_seed(Transcode {
                out: &mut *self.out,
                depth,
            })?;
            n += 1;
        }
        close_header(self.out, at, n as usize, MAP);
        Ok(())
    }
}

/// Events at least this long are parsed with simd-json; shorter ones with
/// serde_json. Measured on the benchmarks' events: for a 12-byte
/// `{"n":N}` serde_json takes half simd-json's time (simd-json's set-up
/// per document dominates), for a 280-byte log event simd-json takes half
/// serde_json's.
const SIMD_FROM: usize = 96;

/// What a worker keeps between events to parse them: simd-json works on a
/// copy of the line it may change, and on buffers it reuses.
#[derive(Default)]
pub struct Parser {
    copy: Vec<u8>,
    buffers: simd_json::Buffers,
    open: Vec<usize>,
}

impl Parser {
    /// [`json_to_frame`], by the faster parser for the event's length. Only
    /// serde_json's answer is ever final for an event simd-json refuses
    /// (its errors, integers beyond 64 bits as floats, the depth limit), so
    /// the two give the same frame or the same error.
    pub fn frame(&mut self, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
        if line.len() >= SIMD_FROM {
            let start = out.len();
            if self.tape_frame(line, out).is_some() {
                return Ok(());
            }
            out.truncate(start);
        }
        json_to_frame(line, out)
    }

    /// The frame of `line` from simd-json's tape, whose containers carry
    /// their lengths, so that headers are written once, in place.
    fn tape_frame(&mut self, line: &str, out: &mut Vec<u8>) -> Option<()> {
        use simd_json::{Node, StaticNode};
        self.copy.clear();
        self.copy.extend_from_slice(line.as_bytes());
        let tape = simd_json::to_tape_with_buffers(&mut self.copy, &mut self.buffers).ok()?;
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        // Entries left in each open container, for the depth limit.
        self.open.clear();
        // simd-json reads `-0` as the integer 0, serde_json as the float
        // -0.0 (printed `-0.0`): a zero makes the text worth a look (found
        // by fuzzing, bench/fuzz/regressions/json_frame).
        let mut zero = false;
        for node in &tape.0 {
            if let Some(left) = self.open.last_mut() {
                *left -= 1;
            }
            match *node {
                Node::Object { len, .. } => {
                    put_header(out, len, MAP);
                    self.open.push(2 * len);
                }
                Node::Array { len, .. } => {
                    put_header(out, len, ARRAY);
                    self.open.push(len);
                }
                Node::String(s) => put_str(out, s),
                Node::Static(StaticNode::I64(0) | StaticNode::U64(0)) => {
                    zero = true;
                    put_int(out, 0)
                }
                Node::Static(StaticNode::I64(v)) => put_int(out, v),
                Node::Static(StaticNode::U64(v)) => put_uint(out, v),
                Node::Static(StaticNode::F64(v)) => put_f64(out, v),
                Node::Static(StaticNode::Bool(b)) => out.push(if b { 0xc3 } else { 0xc2 }),
                Node::Static(StaticNode::Null) => out.push(0xc0),
            }
            if self.open.len() > MAX_DEPTH {
                return None;
            }
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
        }
        if zero && negative_zero(line.as_bytes()) {
            return None;
        }
        let len = (out.len() - start - FRAME_HEADER) as u32;
        out[start..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
        Some(())
    }
}

/// Whether `text` may hold the number `-0` (a `-0` that no digit, `.` or
/// exponent follows; one inside a string only costs the slower parser).
fn negative_zero(text: &[u8]) -> bool {
    memchr::memmem::find_iter(text, b"-0")
        .any(|at| !matches!(text.get(at + 2), Some(b'0'..=b'9' | b'.' | b'e' | b'E')))
}

/// Reserves a 32-bit container header (its length is known only at the
/// end); returns where it starts.
fn open<E: de::Error>(out: &mut Vec<u8>, depth: usize) -> Result<usize, E> {
    if depth > MAX_DEPTH {
        return Err(E::custom(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let at = out.len();
    out.extend_from_slice(&[0; 5]);
    Ok(at)
}

/// Reads `n` bytes off the front of `rd`.
fn take<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rd.len() < n {
        return Err("the value is truncated".into());
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Ok(head)
}

fn be<const N: usize>(rd: &mut &[u8]) -> Result<[u8; N], String> {
    Ok(take(rd, N)?.try_into().expect("took N bytes"))
}

/// Writes the value at the front of `rd` as JSON, as `serde_json` would
/// print the same value.
fn write_json(rd: &mut &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    let marker = take(rd, 1)?[0];
    match marker {
        0x00..=0x7f => int(out, marker as u64),
        0xe0..=0xff => int(out, marker as i8 as i64),
        0xcc => int(out, be::<1>(rd)?[0] as u64),
        0xcd => int(out, u16::from_be_bytes(be(rd)?) as u64),
        0xce => int(out, u32::from_be_bytes(be(rd)?) as u64),
        0xcf => int(out, u64::from_be_bytes(be(rd)?)),
        0xd0 => int(out, be::<1>(rd)?[0] as i8 as i64),
        0xd1 => int(out, i16::from_be_bytes(be(rd)?) as i64),
        0xd2 => int(out, i32::from_be_bytes(be(rd)?) as i64),
        0xd3 => int(out, i64::from_be_bytes(be(rd)?)),
        // An `f32` prints as serde_json prints an `f32`: `0.1`, not the
        // `f64` nearest to it.
        0xca => serde_json::to_writer(&mut *out, &f32::from_be_bytes(be(rd)?))
            .expect("writing to a Vec cannot fail"),
        0xcb => float(out, f64::from_be_bytes(be(rd)?)),
        0xc0 => out.extend_from_slice(b"null"),
        0xc2 => out.extend_from_slice(b"false"),
        0xc3 => out.extend_from_slice(b"true"),
        0xa0..=0xbf => string(out, take(rd, (marker & 0x1f) as usize)?)?,
        0xd9 => {
            let n = be::<1>(rd)?[0] as usize;
            string(out, take(rd, n)?)?
        }
        0xda => {
            let n = u16::from_be_bytes(be(rd)?) as usize;
            string(out, take(rd, n)?)?
        }
        0xdb => {
            let n = u32::from_be_bytes(be(rd)?) as usize;
            string(out, take(rd, n)?)?
        }
        // Bytes (serde_bytes) print as serde_json prints a byte slice: an
        // array of numbers.
        0xc4..=0xc6 => {
            let n = match marker {
                0xc4 => be::<1>(rd)?[0] as usize,
                0xc5 => u16::from_be_bytes(be(rd)?) as usize,
                _ => u32::from_be_bytes(be(rd)?) as usize,
            };
            out.push(b'[');
            for (i, b) in take(rd, n)?.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                int(out, *b as u64);
            }
            out.push(b']');
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let n = match marker {
                0xdc => u16::from_be_bytes(be(rd)?) as usize,
                0xdd => u32::from_be_bytes(be(rd)?) as usize,
                m => (m & 0x0f) as usize,
            };
            nest(depth)?;
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_json(rd, out, depth + 1)?;
            }
            out.push(b']');
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let n = match marker {
                0xde => u16::from_be_bytes(be(rd)?) as usize,
                0xdf => u32::from_be_bytes(be(rd)?) as usize,
                m => (m & 0x0f) as usize,
            };
            nest(depth)?;
            out.push(b'{');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_key(rd, out)?;
                out.push(b':');
                write_json(rd, out, depth + 1)?;
            }
            out.push(b'}');
        }
        0xc1 => return Err("the value holds the reserved marker 0xc1".into()),
        _ => {
            return Err(format!(
                "the value holds a MessagePack extension (marker {marker:#04x}), which JSON cannot carry"
            ));
        }
    }
    Ok(())
}

fn nest(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!(
            "the value is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

/// An object key: a string, or a number or boolean written as a string,
/// as `serde_json` writes the keys of a map keyed by numbers.
fn write_key(rd: &mut &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match rd.first() {
        Some(0xa0..=0xbf | 0xd9..=0xdb) => write_json(rd, out, 0),
        Some(0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 | 0xc2 | 0xc3) => {
            out.push(b'"');
            write_json(rd, out, 0)?;
            out.push(b'"');
            Ok(())
        }
        _ => Err("an object key is not a string, a number or a boolean".into()),
    }
}

fn int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// A float as `serde_json` prints it (the shortest text that reads back
/// the same, `.0` on whole numbers, NaN and the infinities as null): by
/// `serde_json` itself, so that the bytes never drift from a stage's JSON.
fn float(out: &mut Vec<u8>, v: f64) {
    serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
}

/// A string, escaped as `serde_json` escapes it.
fn string(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), String> {
    let (escape, ascii) = scan(bytes);
    if escape || !ascii {
        let s = simdutf8::compat::from_utf8(bytes)
            .map_err(|e| format!("a string is not valid UTF-8 (byte {})", e.valid_up_to()))?;
        if escape {
            serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
            return Ok(());
        }
    }
    // Most strings in events need no escape at all: copied whole.
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
    Ok(())
}

/// In one pass over `bytes`: whether JSON must escape one of them (a quote,
/// a backslash or a control character, what `serde_json` escapes), and
/// whether all are ASCII (and so valid UTF-8 without a further check; only
/// meaningful when there is nothing to escape, since the scan stops at the
/// first block that needs an escape).
fn scan(bytes: &[u8]) -> (bool, bool) {
    let (mut escape, mut high) = (0u8, 0u8);
    for block in bytes.chunks(32) {
        // Byte-wide flags only, so that the fold becomes vector code.
        for &b in block {
            escape |= (b < 0x20) as u8 | (b == b'"') as u8 | (b == b'\\') as u8;
            high |= b;
        }
        if escape != 0 {
            break;
        }
    }
    (escape != 0, high < 0x80)
}

/// Converts a buffer of events from one encoding to the other, dropping
/// the ones that cannot be converted: returns, for each of those, its
/// position in `buf` and why.
pub fn convert(
    from: Encoding,
    to: Encoding,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    match (from, to) {
        (a, b) if a == b => out.extend_from_slice(buf),
        (Encoding::Json, _) => {
            let body = buf.strip_suffix(b"\n").unwrap_or(buf);
            if !buf.is_empty() {
                // Validated once for the whole buffer (chunks are screened
                // before they get here, so this is a formality), the lines
                // parse as `str`s: serde_json then checks no string again.
                let mut parser = Parser::default();
                let mut convert_line = |i: usize, line: Result<&str, String>| {
                    if let Err(e) = line.and_then(|line| parser.frame(line, out)) {
                        failed.push((i, e));
                    }
                };
                match simdutf8::basic::from_utf8(body) {
                    Ok(text) => text
                        .split('\n')
                        .enumerate()
                        .for_each(|(i, line)| convert_line(i, Ok(line))),
                    Err(_) => body
                        .split(|&b| b == b'\n')
                        .enumerate()
                        .for_each(|(i, line)| {
                            convert_line(
                                i,
                                super::framing::check_utf8(line)
                                    .map(|()| std::str::from_utf8(line).expect("checked just now")),
                            )
                        }),
                }
            }
        }
        (Encoding::MsgPack, _) => {
            let starts = event_starts(Encoding::MsgPack, buf);
            for (i, &at) in starts.iter().enumerate() {
                let end = starts.get(i + 1).copied().unwrap_or(buf.len());
                let res = match frame_end(buf, at) {
                    Some(_) => msgpack_to_json(frame_value(&buf[at..end]), out),
                    None => Err("the frame is truncated".into()),
                };
                match res {
                    Ok(()) => out.push(b'\n'),
                    Err(e) => failed.push((i, e)),
                }
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn round_trip(text: &str) -> String {
        let mut frame = Vec::new();
        json_to_frame(text, &mut frame).unwrap();
        let mut back = Vec::new();
        msgpack_to_json(frame_value(&frame), &mut back).unwrap();
        String::from_utf8(back).unwrap()
    }

    #[test]
    fn json_comes_back_as_serde_json_prints_it() {
        for v in [
            json!({"n": 1, "neg": -7, "big": u64::MAX, "f": 1.0, "g": 0.1, "e": 1e300}),
            json!({"s": "é \" \\ \n \u{1}", "t": true, "z": null, "l": [1, [2, []], {}]}),
            json!([{"a": {"b": {"c": "d"}}}, "x", -1.5]),
            json!(
                (0..40)
                    .map(|i| (format!("k{i}"), json!(i)))
                    .collect::<serde_json::Map<_, _>>()
            ),
            json!((0..70000).collect::<Vec<u32>>()),
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(round_trip(&text), text);
        }
        // Spacing and escapes are normalised as serde_json normalises them.
        assert_eq!(
            round_trip(" { \"a\" : \"\\u00e9\" , \"b\":1e3 } "),
            r#"{"a":"é","b":1000.0}"#
        );
    }

    #[test]
    fn both_parsers_write_the_same_frames_and_errors() {
        let long = "x".repeat(SIMD_FROM);
        let mut cases: Vec<String> = vec![
            format!(
                r#"{{"pad":"{long}","f":[0.1,1e300,-0.0,2.5e-308,123456.789,1.7976931348623157e308,5e-324],"i":[0,-1,-33,-129,-32769,-2147483649,127,128,65536,4294967296,18446744073709551615]}}"#
            ),
            format!(
                r#"{{"pad":"{long}","big":123456789012345678901234567890,"neg":-9223372036854775808}}"#
            ),
            format!(
                r#"{{"pad":"{long}","s":"a\"b\\c\n\u00e9\ud83d\ude00","t":true,"n":null,"o":{{}},"l":[]}}"#
            ),
            format!(r#"[{{"pad":"{long}"}},"{}"]"#, "y".repeat(70000)),
            format!(
                r#"{{"pad":"{long}","deep":{}{}}}"#,
                "[".repeat(600),
                "]".repeat(600)
            ),
            format!(r#"{{"pad":"{long}","trailing":1}} x"#),
            format!(r#"{{"pad":"{long}","zeros":[-0,0,-0.0,-0e1,"-0"]}}"#),
            format!(r#"{{"pad":"{long}","cut":"#),
        ];
        for depth in [510, 511, 512, 513] {
            cases.push(format!(
                r#"{{"pad":"{long}","d":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ));
        }
        let keys: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
        cases.push(format!(r#"{{{keys}"pad":"{long}"}}"#));
        for case in &cases {
            let mut parser = Parser::default();
            let (mut fast, mut plain) = (b"x".to_vec(), b"x".to_vec());
            let a = parser.frame(case, &mut fast);
            let b = json_to_frame(case, &mut plain);
            assert_eq!(a, b, "{}", &case[..case.len().min(200)]);
            assert_eq!(fast, plain, "{}", &case[..case.len().min(200)]);
        }
    }

    #[test]
    fn frames_decode_as_the_same_values() {
        let v = json!({"a": [1, -2, 3.5], "b": {"c": "d"}, "e": null});
        let mut frame = Vec::new();
        json_to_frame(&v.to_string(), &mut frame).unwrap();
        let back: Value = rmp_serde::from_slice(frame_value(&frame)).unwrap();
        assert_eq!(back, v);
        assert_eq!(event_starts(Encoding::MsgPack, &frame), [0]);
    }

    #[test]
    fn bad_json_is_refused_with_the_sdks_words() {
        let mut out = b"kept".to_vec();
        assert_eq!(
            json_to_frame("{\"n\":", &mut out).unwrap_err(),
            "invalid event JSON: EOF while parsing a value at line 1 column 5"
        );
        assert!(
            json_to_frame("{} x", &mut out)
                .unwrap_err()
                .contains("trailing characters")
        );
        let deep = "[".repeat(300) + &"]".repeat(300);
        let mut frame = Vec::new();
        json_to_frame(&deep, &mut frame).expect("deeper than serde_json's limit is taken");
        let deeper = "[".repeat(600) + &"]".repeat(600);
        assert!(
            json_to_frame(&deeper, &mut out)
                .unwrap_err()
                .contains("deeper than 512")
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn bad_msgpack_is_refused_and_leaves_nothing() {
        let mut out = b"kept".to_vec();
        for (bytes, why) in [
            (&[0x92, 0x01][..], "truncated"),
            (&[0xa2, 0xff, 0xfe][..], "UTF-8"),
            (&[0x81, 0xc0, 0x01][..], "object key"),
            (&[0xd4, 0x01, 0x02][..], "extension"),
            (&[0x01, 0x02][..], "follow the value"),
        ] {
            let e = msgpack_to_json(bytes, &mut out).unwrap_err();
            assert!(e.contains(why), "{bytes:?}: {e}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 600).chain([0x90]).collect();
        assert!(
            msgpack_to_json(&deep, &mut out)
                .unwrap_err()
                .contains("nested")
        );
        assert_eq!(out, b"kept");
        // Number keys print as strings, bytes as arrays of numbers.
        msgpack_to_json(
            &[0x82, 0x07, 0xc3, 0xa1, b'b', 0xc4, 0x02, 0x01, 0xff],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, br#"kept{"7":true,"b":[1,255]}"#);
    }

    #[test]
    fn conversion_drops_only_the_events_it_cannot_convert() {
        let mut frames = Vec::new();
        let failed = convert(
            Encoding::Json,
            Encoding::MsgPack,
            b"{\"a\":1}\n{oops\n[2]\n",
            &mut frames,
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 1);
        assert_eq!(event_count(Encoding::MsgPack, &frames), Ok(2));
        frames.extend_from_slice(&[1, 0, 0, 0, 0xc1]);
        let mut lines = Vec::new();
        let failed = convert(Encoding::MsgPack, Encoding::Json, &frames, &mut lines);
        assert_eq!(lines, b"{\"a\":1}\n[2]\n");
        assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), [2]);
        assert!(event_count(Encoding::MsgPack, &[5, 0, 0, 0, 1]).is_err());
    }
}
