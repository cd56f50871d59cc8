//! Reading a chunk: splitting it into lines, decoding events, extracting keys.
//! The wording of per-event error messages lives here, so that every stage
//! kind reports a bad event the same way.

use serde::de::DeserializeOwned;
use serde_json::Value;

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

/// Decodes an event already parsed as JSON (keyed reduce reads the key first).
pub(crate) fn event_from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| describe_event_error::<T>(&e))
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

/// The grouping key of `event` at the JSON pointer `pointer`.
///
/// Strings are used as they are; numbers and booleans by their JSON text, so
/// `{"code": 404}` and `{"code": "404"}` share a group. Null, arrays and objects
/// are refused rather than stringified: grouping by them is almost always a
/// wrong pointer.
pub(crate) fn key_at(event: &Value, pointer: &str) -> Result<String, String> {
    match event.pointer(pointer) {
        None => Err(format!("key `{pointer}` not found in event")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(Value::Null) => Err(format!("key `{pointer}` is null in event")),
        Some(Value::Array(_)) => Err(format!(
            "key `{pointer}` is an array; keys must be strings, numbers or booleans"
        )),
        Some(Value::Object(_)) => Err(format!(
            "key `{pointer}` is an object; keys must be strings, numbers or booleans"
        )),
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

    #[test]
    fn keys_from_pointers() {
        let ev = json!({"s": "web", "n": 404, "b": true, "z": null, "o": {"a": 1}, "l": [1]});
        assert_eq!(key_at(&ev, "/s").unwrap(), "web");
        assert_eq!(key_at(&ev, "/n").unwrap(), "404");
        assert_eq!(key_at(&ev, "/b").unwrap(), "true");
        assert_eq!(key_at(&ev, "/o/a").unwrap(), "1");
        assert_eq!(
            key_at(&ev, "/service").unwrap_err(),
            "key `/service` not found in event"
        );
        assert_eq!(key_at(&ev, "/z").unwrap_err(), "key `/z` is null in event");
        assert!(key_at(&ev, "/o").unwrap_err().contains("is an object"));
        assert!(key_at(&ev, "/l").unwrap_err().contains("is an array"));
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
