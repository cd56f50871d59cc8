//! Reading a chunk: splitting it into events, decoding them, extracting keys.
//! The wording of per-event error messages lives here (and, for MessagePack,
//! in `msgpack`), so that every stage kind reports a bad event the same way.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::Value;

/// How the host encodes this instance's events (its init configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON lines.
    #[default]
    Json,
    /// MessagePack frames.
    MsgPack,
}

/// The events of a chunk in either encoding, in order.
///
/// A truncated last frame (which the host never sends) is yielded as it is,
/// and so fails to decode as an event of its own.
pub(crate) fn split(encoding: Encoding, input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut lines = (encoding == Encoding::Json).then(|| lines(input));
    let mut rest = input;
    std::iter::from_fn(move || {
        if let Some(lines) = &mut lines {
            return lines.next();
        }
        if rest.is_empty() {
            return None;
        }
        let len = match rest {
            [a, b, c, d, ..] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
            _ => usize::MAX,
        };
        let body = &rest[rest.len().min(4)..];
        if len > body.len() {
            rest = &[];
            return Some(body);
        }
        rest = &body[len..];
        Some(&body[..len])
    })
}

/// The events of a newline-delimited chunk, in order.
///
/// The host never sends empty lines, but a chunk cut from a file may end with
/// a newline or use `\r\n`; neither may turn into an extra, failing event.
/// An empty line in the middle still counts as an event (and fails to parse),
/// so that guest and host agree on every event's index.
pub(crate) fn lines(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let input = input.strip_suffix(b"\n").unwrap_or(input);
    // memchr finds each newline a word (or a SIMD vector) at a time; a
    // byte-by-byte split costs a few nanoseconds per byte of every event.
    let mut rest = (!input.is_empty()).then_some(input);
    std::iter::from_fn(move || {
        let chunk = rest?;
        let line = match memchr::memchr(b'\n', chunk) {
            Some(nl) => {
                rest = Some(&chunk[nl + 1..]);
                &chunk[..nl]
            }
            None => {
                rest = None;
                chunk
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// Decodes one event line into the stage's input type.
pub(crate) fn parse_event<T: DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| describe_event_error::<T>(&e))
}

/// Tells apart "this is not JSON" from "this JSON is not the event the stage
/// expects": they point at different culprits (the source vs. the stage).
fn describe_event_error<T>(e: &serde_json::Error) -> String {
    if e.is_data() {
        format!("event does not match `{}`: {e}", short_type_name::<T>())
    } else {
        format!("invalid event JSON: {e}")
    }
}

/// The reference tokens of a JSON pointer (RFC 6901): `/a~1b/0` is
/// `["a/b", "0"]`.
pub(crate) fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Writes the grouping key of the event on `line`, found at the JSON
/// pointer whose tokens are `path`, into `buf`.
///
/// Strings are used as they are; numbers and booleans by their JSON text, so
/// `{"code": 404}` and `{"code": "404"}` share a group. Null, arrays and objects
/// are refused rather than stringified: grouping by them is almost always a
/// wrong pointer. The walk skips every value off the path without building
/// it, so no `Value` tree is allocated per event.
pub(crate) fn key_into(
    encoding: Encoding,
    event: &[u8],
    pointer: &str,
    path: &[String],
    buf: &mut String,
) -> Result<(), String> {
    let mut found = Found::Missing;
    match encoding {
        Encoding::Json => Seek {
            path,
            found: &mut found,
            buf: &mut *buf,
        }
        .deserialize(&mut serde_json::Deserializer::from_slice(event))
        .map_err(|e| describe_event_error::<Value>(&e))?,
        // Frames are walked without serde: the members off the path are
        // skipped by their lengths, and the walk stops at the key.
        Encoding::MsgPack => {
            found = super::msgpack::Reader::new(event)
                .seek(path, buf)
                .map_err(|e| super::msgpack::describe_event_error::<Value>(&e))?;
        }
    }
    match found {
        Found::Missing => Err(format!("key `{pointer}` not found in event")),
        Found::Scalar => Ok(()),
        Found::Null => Err(format!("key `{pointer}` is null in event")),
        Found::Array => Err(format!(
            "key `{pointer}` is an array; keys must be strings, numbers or booleans"
        )),
        Found::Object => Err(format!(
            "key `{pointer}` is an object; keys must be strings, numbers or booleans"
        )),
    }
}

use super::msgpack::Found;

/// Walks down `path`, skipping everything else.
struct Seek<'a> {
    path: &'a [String],
    found: &'a mut Found,
    buf: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let Seek { path, found, buf } = self;
        let Some((first, rest)) = path.split_first() else {
            *found = Found::Object;
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut seek = Some(Seek {
            path: rest,
            found,
            buf,
        });
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match seek.take() {
                Some(s) if *k == **first => map.next_value_seed(s)?,
                other => {
                    seek = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let Seek { path, found, buf } = self;
        let Some((first, rest)) = path.split_first() else {
            *found = Found::Array;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let target = first.parse::<usize>().ok();
        let mut seek = Some(Seek {
            path: rest,
            found,
            buf,
        });
        let mut i = 0;
        loop {
            let more = match seek.take() {
                Some(s) if Some(i) == target => seq.next_element_seed(s)?.is_some(),
                other => {
                    seek = other;
                    seq.next_element::<IgnoredAny>()?.is_some()
                }
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(if v { "true" } else { "false" })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(&Value::from(v).to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(&Value::from(v).to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(&Value::from(v).to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            *self.found = Found::Null;
        }
        Ok(())
    }
}

impl Seek<'_> {
    /// A scalar: the key if the path ends here, else the pointer goes
    /// through a scalar and finds nothing.
    fn scalar<E>(self, text: &str) -> Result<(), E> {
        if self.path.is_empty() {
            self.buf.clear();
            self.buf.push_str(text);
            *self.found = Found::Scalar;
        }
        Ok(())
    }
}

/// `type_name` without module paths (`alloc::vec::Vec<words::Word>` becomes
/// `Vec<Word>`): error messages reach people who wrote `Vec<Word>`.
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            // The segment before `::` is a module or crate: drop it.
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(input: &[u8]) -> Vec<&[u8]> {
        lines(input).collect()
    }

    #[test]
    fn lines_tolerate_trailing_newline_and_crlf() {
        assert_eq!(all(b""), Vec::<&[u8]>::new());
        assert_eq!(all(b"\n"), Vec::<&[u8]>::new());
        assert_eq!(all(b"a"), [b"a"]);
        assert_eq!(all(b"a\n"), [b"a"]);
        assert_eq!(all(b"a\r\nb\r\n"), [b"a", b"b"]);
        assert_eq!(all(b"a\nb"), [b"a", b"b"]);
        // An empty line inside the chunk is an event: indices must match the host's.
        assert_eq!(all(b"a\n\nb\n"), [&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn frames_split_and_a_truncated_one_is_an_event() {
        let mut input = Vec::new();
        wasmpipe_abi::push_frame(&mut input, b"ab");
        wasmpipe_abi::push_frame(&mut input, b"");
        let all: Vec<&[u8]> = split(Encoding::MsgPack, &input).collect();
        assert_eq!(all, [&b"ab"[..], b""]);
        input.extend_from_slice(&[9, 0, 0, 0, 1]);
        let all: Vec<&[u8]> = split(Encoding::MsgPack, &input).collect();
        assert_eq!(all, [&b"ab"[..], b"", &[1][..]]);
        assert_eq!(split(Encoding::Json, b"a\nb\n").count(), 2);
    }

    #[test]
    fn event_errors_say_whose_fault() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Num {
            n: i64,
        }
        let syntax = parse_event::<Num>(b"{\"n\":").unwrap_err();
        assert!(
            syntax.starts_with("invalid event JSON: EOF while parsing"),
            "{syntax}"
        );
        let data = parse_event::<Num>(b"{\"m\":1}").unwrap_err();
        assert_eq!(
            data,
            "event does not match `Num`: missing field `n` at line 1 column 7"
        );
    }

    fn key_at(ev: &Value, pointer: &str) -> Result<String, String> {
        let mut buf = String::from("stale");
        let line = serde_json::to_vec(ev).unwrap();
        let json = key_into(
            Encoding::Json,
            &line,
            pointer,
            &pointer_tokens(pointer),
            &mut buf,
        )
        .map(|()| buf.clone());
        let mut frame = Vec::new();
        super::super::msgpack::write_value(&mut frame, ev).unwrap();
        let msgpack = key_into(
            Encoding::MsgPack,
            &frame,
            pointer,
            &pointer_tokens(pointer),
            &mut buf,
        )
        .map(|()| buf.clone());
        assert_eq!(json, msgpack, "the same key from JSON and MessagePack");
        json
    }

    #[test]
    fn keys_from_pointers() {
        let ev = json!({"s": "web", "n": 404, "f": 1.5, "b": true, "z": null, "o": {"a": 1, "a/b": "slash"}, "l": [1, "two"]});
        assert_eq!(key_at(&ev, "/s").unwrap(), "web");
        assert_eq!(key_at(&ev, "/n").unwrap(), "404");
        assert_eq!(key_at(&ev, "/f").unwrap(), "1.5");
        assert_eq!(key_at(&ev, "/b").unwrap(), "true");
        assert_eq!(key_at(&ev, "/o/a").unwrap(), "1");
        assert_eq!(key_at(&ev, "/o/a~1b").unwrap(), "slash");
        assert_eq!(key_at(&ev, "/l/1").unwrap(), "two");
        assert_eq!(
            key_at(&ev, "/service").unwrap_err(),
            "key `/service` not found in event"
        );
        assert_eq!(
            key_at(&ev, "/l/7").unwrap_err(),
            "key `/l/7` not found in event"
        );
        assert_eq!(
            key_at(&ev, "/s/x").unwrap_err(),
            "key `/s/x` not found in event"
        );
        assert_eq!(key_at(&ev, "/z").unwrap_err(), "key `/z` is null in event");
        assert!(key_at(&ev, "/o").unwrap_err().contains("is an object"));
        assert!(key_at(&ev, "/l").unwrap_err().contains("is an array"));
        let mut buf = String::new();
        let bad = key_into(
            Encoding::Json,
            b"{\"s\": ",
            "/s",
            &pointer_tokens("/s"),
            &mut buf,
        )
        .unwrap_err();
        assert!(bad.starts_with("invalid event JSON"), "{bad}");
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<String>");
        assert_eq!(
            short_type_name::<(i64, serde_json::Value)>(),
            "(i64, Value)"
        );
        assert_eq!(
            short_type_name::<std::collections::BTreeMap<String, u8>>(),
            "BTreeMap<String, u8>"
        );
    }
}
