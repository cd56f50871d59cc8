//! Reading one field of an event, natively: the event time a window needs
//! and, for sessions, the group key. Events reach a reduce as MessagePack
//! frames (walked here without decoding the rest) or as JSON lines.

use super::spec::{Millis, TimeSource};
use crate::exec::encoding::frame_value;
use crate::manifest::TimeFormat;
use crate::runtime::Encoding;
use std::borrow::Cow;

/// A field's value, as far as a time or a key needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// Text.
    Str(Cow<'a, str>),
    /// A negative integer (or one MessagePack wrote signed).
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// `null`.
    Null,
    /// An array or an object.
    Composite(&'static str),
}

/// The value at `path` in `event`, `None` when a segment is missing.
pub fn lookup<'a>(
    encoding: Encoding,
    event: &'a [u8],
    path: &[String],
) -> Result<Option<Scalar<'a>>, String> {
    match encoding {
        Encoding::MsgPack => {
            let mut rd = frame_value(event);
            for seg in path {
                if !seek_member(&mut rd, seg)? {
                    return Ok(None);
                }
            }
            scalar(&mut rd).map(Some)
        }
        Encoding::Json => {
            let v: serde_json::Value = serde_json::from_slice(event)
                .map_err(|e| format!("the event is not valid JSON: {e}"))?;
            let mut at = &v;
            for seg in path {
                at = match at {
                    serde_json::Value::Object(m) => match m.get(seg) {
                        Some(v) => v,
                        None => return Ok(None),
                    },
                    serde_json::Value::Array(a) => {
                        match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                            Some(v) => v,
                            None => return Ok(None),
                        }
                    }
                    _ => return Ok(None),
                };
            }
            Ok(Some(match at {
                serde_json::Value::String(s) => Scalar::Str(Cow::Owned(s.clone())),
                serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) => Scalar::UInt(u),
                    (_, Some(i), _) => Scalar::Int(i),
                    (_, _, Some(f)) => Scalar::Float(f),
                    _ => Scalar::Null,
                },
                serde_json::Value::Bool(b) => Scalar::Bool(*b),
                serde_json::Value::Null => Scalar::Null,
                serde_json::Value::Array(_) => Scalar::Composite("an array"),
                serde_json::Value::Object(_) => Scalar::Composite("an object"),
            }))
        }
    }
}

/// The event time of `event`, in epoch milliseconds, or why there is none.
pub fn event_time(
    source: &TimeSource,
    encoding: Encoding,
    event: &[u8],
    arrival: Millis,
) -> Result<Millis, String> {
    let TimeSource::Field {
        pointer,
        path,
        format,
    } = source
    else {
        return Ok(arrival);
    };
    let value = lookup(encoding, event, path)?
        .ok_or_else(|| format!("no event time: `{pointer}` is not in the event"))?;
    let bad = |what: String| {
        let expected = match format {
            TimeFormat::Auto => "RFC 3339 text or epoch seconds or milliseconds",
            TimeFormat::Rfc3339 => "RFC 3339 text",
            TimeFormat::Seconds => "epoch seconds",
            TimeFormat::Millis => "epoch milliseconds",
        };
        format!("event time `{pointer}` is not {expected}: {what}")
    };
    let number = |x: f64| -> Result<Millis, String> {
        let ms = match format {
            TimeFormat::Millis => x,
            TimeFormat::Seconds => x * 1000.0,
            TimeFormat::Auto if x.abs() >= 1e11 => x,
            TimeFormat::Auto => x * 1000.0,
            TimeFormat::Rfc3339 => return Err(bad(format!("the number {x}"))),
        };
        if !ms.is_finite() || ms.abs() > 1e16 {
            return Err(bad(format!("the number {x} is out of range")));
        }
        Ok(ms.round() as Millis)
    };
    match value {
        Scalar::Str(s) => match format {
            TimeFormat::Auto | TimeFormat::Rfc3339 => {
                parse_rfc3339(&s).ok_or_else(|| bad(format!("{s:?}")))
            }
            _ => Err(bad(format!("the text {s:?}"))),
        },
        Scalar::Int(i) if *format == TimeFormat::Millis => Ok(i),
        Scalar::UInt(u) if *format == TimeFormat::Millis && u <= i64::MAX as u64 => Ok(u as i64),
        Scalar::Int(i) => number(i as f64),
        Scalar::UInt(u) => number(u as f64),
        Scalar::Float(f) => number(f),
        Scalar::Null => Err(format!("no event time: `{pointer}` is null")),
        Scalar::Bool(b) => Err(bad(format!("{b}"))),
        Scalar::Composite(what) => Err(bad(what.to_string())),
    }
}

/// The group key of `event` at `pointer`, as the SDK's manifest `key`
/// makes it: strings as they are, numbers and booleans as their text.
pub fn event_key(
    encoding: Encoding,
    event: &[u8],
    pointer: &str,
    path: &[String],
) -> Result<String, String> {
    match lookup(encoding, event, path)? {
        None => Err(format!("key `{pointer}` not found in event")),
        Some(Scalar::Str(s)) => Ok(s.into_owned()),
        Some(Scalar::Int(i)) => Ok(i.to_string()),
        Some(Scalar::UInt(u)) => Ok(u.to_string()),
        Some(Scalar::Float(f)) => {
            Ok(serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string()))
        }
        Some(Scalar::Bool(b)) => Ok(b.to_string()),
        Some(Scalar::Null) => Err(format!("key `{pointer}` is null in event")),
        Some(Scalar::Composite(what)) => Err(format!(
            "key `{pointer}` is {what}; keys must be strings, numbers or booleans"
        )),
    }
}

/// Parses RFC 3339 text (any offset) to epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Epoch milliseconds as RFC 3339 text in UTC, with milliseconds.
pub fn format_rfc3339(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

// --- MessagePack, just enough to find a member and read a scalar -------

fn take<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rd.len() < n {
        return Err("the event's frame is truncated".into());
    }
    let (a, b) = rd.split_at(n);
    *rd = b;
    Ok(a)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| acc << 8 | b as u64)
}

/// Reads a marker's length argument: (kind, length or value bytes).
enum Head<'a> {
    Str(&'a [u8]),
    Map(usize),
    Array(usize),
    Scalar(Scalar<'static>),
    /// Bytes to skip (binary, extension).
    Skip,
}

fn head<'a>(rd: &mut &'a [u8]) -> Result<Head<'a>, String> {
    let m = take(rd, 1)?[0];
    Ok(match m {
        0x00..=0x7f => Head::Scalar(Scalar::UInt(m as u64)),
        0xe0..=0xff => Head::Scalar(Scalar::Int(m as i8 as i64)),
        0x80..=0x8f => Head::Map((m & 0x0f) as usize),
        0x90..=0x9f => Head::Array((m & 0x0f) as usize),
        0xa0..=0xbf => Head::Str(take(rd, (m & 0x1f) as usize)?),
        0xc0 => Head::Scalar(Scalar::Null),
        0xc2 => Head::Scalar(Scalar::Bool(false)),
        0xc3 => Head::Scalar(Scalar::Bool(true)),
        0xc4..=0xc6 => {
            let n = be(take(rd, 1 << (m - 0xc4))?) as usize;
            take(rd, n)?;
            Head::Skip
        }
        0xc7..=0xc9 => {
            let n = be(take(rd, 1 << (m - 0xc7))?) as usize;
            take(rd, n + 1)?;
            Head::Skip
        }
        0xca => Head::Scalar(Scalar::Float(f32::from_bits(be(take(rd, 4)?) as u32) as f64)),
        0xcb => Head::Scalar(Scalar::Float(f64::from_bits(be(take(rd, 8)?)))),
        0xcc..=0xcf => Head::Scalar(Scalar::UInt(be(take(rd, 1 << (m - 0xcc))?))),
        0xd0 => Head::Scalar(Scalar::Int(take(rd, 1)?[0] as i8 as i64)),
        0xd1 => Head::Scalar(Scalar::Int(be(take(rd, 2)?) as u16 as i16 as i64)),
        0xd2 => Head::Scalar(Scalar::Int(be(take(rd, 4)?) as u32 as i32 as i64)),
        0xd3 => Head::Scalar(Scalar::Int(be(take(rd, 8)?) as i64)),
        0xd4..=0xd8 => {
            take(rd, 1 + (1 << (m - 0xd4)))?;
            Head::Skip
        }
        0xd9..=0xdb => {
            let n = be(take(rd, 1 << (m - 0xd9))?) as usize;
            Head::Str(take(rd, n)?)
        }
        0xdc..=0xdd => Head::Array(be(take(rd, 2 << (m - 0xdc))?) as usize),
        0xde..=0xdf => Head::Map(be(take(rd, 2 << (m - 0xde))?) as usize),
        0xc1 => return Err("the event's frame holds the reserved marker 0xc1".into()),
    })
}

/// Steps over one value (depth-first, without recursion).
fn skip(rd: &mut &[u8]) -> Result<(), String> {
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        match head(rd)? {
            Head::Map(n) => pending += 2 * n as u64,
            Head::Array(n) => pending += n as u64,
            _ => {}
        }
    }
    Ok(())
}

/// Moves `rd` to the value of member `name` (an object's field, or an
/// array's element by index); false when there is none.
fn seek_member(rd: &mut &[u8], name: &str) -> Result<bool, String> {
    match head(rd)? {
        Head::Map(n) => {
            for _ in 0..n {
                let matched = match head(rd)? {
                    Head::Str(k) => k == name.as_bytes(),
                    Head::Map(m) => {
                        for _ in 0..2 * m {
                            skip(rd)?;
                        }
                        false
                    }
                    Head::Array(m) => {
                        for _ in 0..m {
                            skip(rd)?;
                        }
                        false
                    }
                    _ => false,
                };
                if matched {
                    return Ok(true);
                }
                skip(rd)?;
            }
            Ok(false)
        }
        Head::Array(n) => match name.parse::<usize>() {
            Ok(i) if i < n => {
                for _ in 0..i {
                    skip(rd)?;
                }
                Ok(true)
            }
            _ => Ok(false),
        },
        _ => Ok(false),
    }
}

fn scalar<'a>(rd: &mut &'a [u8]) -> Result<Scalar<'a>, String> {
    Ok(match head(rd)? {
        Head::Str(s) => Scalar::Str(
            std::str::from_utf8(s)
                .map(Cow::Borrowed)
                .map_err(|_| "the event's frame holds text that is not UTF-8".to_string())?,
        ),
        Head::Map(_) => Scalar::Composite("an object"),
        Head::Array(_) => Scalar::Composite("an array"),
        Head::Scalar(s) => s,
        Head::Skip => Scalar::Composite("binary data"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::encoding::json_to_frame;

    fn frame(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        json_to_frame(json, &mut out).unwrap();
        out
    }

    fn field(json: &str) -> TimeSource {
        let _ = json;
        TimeSource::Field {
            pointer: "/t".into(),
            path: vec!["t".into()],
            format: TimeFormat::Auto,
        }
    }

    #[test]
    fn times_read_the_same_from_frames_and_json() {
        let cases = [
            (
                r#"{"a":[1,{"b":2}],"t":"2026-12-01T17:00:00Z"}"#,
                Ok(1_796_144_400_000),
            ),
            (
                r#"{"t":"2026-12-01T18:00:00.250+01:00"}"#,
                Ok(1_796_144_400_250),
            ),
            (r#"{"t":1796144400}"#, Ok(1_796_144_400_000)),
            (r#"{"t":1796144400.5}"#, Ok(1_796_144_400_500)),
            (r#"{"t":1796144400123}"#, Ok(1_796_144_400_123)),
            (
                r#"{"x":{"t":1},"y":"z"}"#,
                Err("no event time: `/t` is not in the event"),
            ),
            (r#"{"t":null}"#, Err("no event time: `/t` is null")),
            (
                r#"{"t":"yesterday"}"#,
                Err(
                    "event time `/t` is not RFC 3339 text or epoch seconds or milliseconds: \"yesterday\"",
                ),
            ),
            (
                r#"{"t":[1]}"#,
                Err(
                    "event time `/t` is not RFC 3339 text or epoch seconds or milliseconds: an array",
                ),
            ),
        ];
        for (json, want) in cases {
            let want = want.map_err(String::from);
            let src = field(json);
            assert_eq!(
                event_time(&src, Encoding::Json, json.as_bytes(), 0),
                want,
                "{json}"
            );
            assert_eq!(
                event_time(&src, Encoding::MsgPack, &frame(json), 0),
                want,
                "{json} as a frame"
            );
        }
        assert_eq!(
            event_time(&TimeSource::Arrival, Encoding::Json, b"{}", 42),
            Ok(42)
        );
    }

    #[test]
    fn keys_read_as_the_sdk_writes_them() {
        let path = vec!["k".to_string(), "0".to_string()];
        for (json, want) in [
            (r#"{"k":["auth"]}"#, Ok("auth")),
            (r#"{"k":[-3]}"#, Ok("-3")),
            (r#"{"k":[true]}"#, Ok("true")),
            (r#"{"k":[]}"#, Err("key `/k/0` not found in event")),
            (
                r#"{"k":[{}]}"#,
                Err("key `/k/0` is an object; keys must be strings, numbers or booleans"),
            ),
        ] {
            let want = want.map(String::from).map_err(String::from);
            assert_eq!(
                event_key(Encoding::MsgPack, &frame(json), "/k/0", &path),
                want
            );
            assert_eq!(
                event_key(Encoding::Json, json.as_bytes(), "/k/0", &path),
                want
            );
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let f = frame(r#"{"aaaa":"bbbbbbbb","t":5}"#);
        for cut in 4..f.len() {
            let _ = event_time(&field(""), Encoding::MsgPack, &f[..cut], 0);
        }
    }

    #[test]
    fn times_print_as_utc_millis() {
        assert_eq!(
            format_rfc3339(1_796_144_400_250),
            "2026-12-01T17:00:00.250Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339("2026-12-01T17:00:00.250Z"),
            Some(1_796_144_400_250)
        );
    }
}
