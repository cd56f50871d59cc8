//! [`Merge`]: a map output that adds fields to the input event instead of
//! replacing it, and [`Output`], the trait every map output implements.

use serde::Serialize;

/// Adds the fields of `T` to the input event instead of replacing it.
///
/// A map (or flat_map) returning `Merge(fields)` outputs the input event
/// unchanged, with `fields` (which must serialize as an object) added after
/// its own. The stage then decodes only the fields it reads and encodes only
/// the fields it adds, which for an enrichment stage over large events is
/// several times faster than decoding and re-encoding the whole event. Over
/// JSON lines (`events = "json"`) the fields are spliced in before the
/// closing `}` and every other byte stays as it was; over MessagePack frames
/// (the default) the event's entries are copied as they are and the host
/// prints the whole object once, at the end of the pipeline.
///
/// Fields are appended, never replaced: if the event may already hold a
/// field of the same name, the output would hold it twice, so return the
/// whole event instead.
///
/// ```
/// use wasmpipe_sdk::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Log {
///     duration_ms: u64,
/// }
///
/// #[derive(Serialize)]
/// struct Slow {
///     slow: bool,
/// }
///
/// #[map]
/// fn flag_slow(log: Log) -> Merge<Slow> {
///     Merge(Slow { slow: log.duration_ms > 500 })
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge<T>(pub T);

/// What a map or flat_map may return for each output: any `Serialize` type
/// (written as JSON), or [`Merge`] (fields added to the input event).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a stage output",
    label = "outputs must implement `Serialize`, or be `Merge<T>` with `T: Serialize`",
    note = "derive it: `#[derive(Serialize)]`"
)]
pub trait Output {
    /// Appends this output, as one line of JSON without the newline, to
    /// `out`; `event` is the input event's JSON text.
    fn write_output(&self, event: &[u8], out: &mut Vec<u8>) -> Result<(), String>;

    /// Appends this output as one MessagePack frame to `out`; `event` is the
    /// input event's MessagePack (`docs/abi.md`, "Event encodings").
    fn write_msgpack(&self, event: &[u8], out: &mut Vec<u8>) -> Result<(), String>;
}

impl<T: Serialize> Output for T {
    fn write_output(&self, _event: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, self).map_err(|e| format!("cannot encode output: {e}"))
    }

    fn write_msgpack(&self, _event: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        crate::runtime::msgpack::write_frame(out, self)
    }
}

impl<T: Serialize> Output for Merge<T> {
    fn write_msgpack(&self, event: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        crate::runtime::msgpack::write_merged(out, event, &self.0)
    }

    fn write_output(&self, event: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let event = event.trim_ascii();
        let (Some(b'{'), Some(b'}')) = (event.first(), event.last()) else {
            return Err(
                "`Merge` adds fields to an object, but the event is not a JSON object".into(),
            );
        };
        let start = out.len();
        // The event without its closing brace, then the fields' object, whose
        // opening brace becomes the separating comma.
        out.extend_from_slice(&event[..event.len() - 1]);
        let mark = out.len();
        if let Err(e) = serde_json::to_writer(&mut *out, &self.0) {
            out.truncate(start);
            return Err(format!("cannot encode output: {e}"));
        }
        if out.get(mark) != Some(&b'{') {
            out.truncate(start);
            return Err("the fields given to `Merge` must serialize as a JSON object".into());
        }
        let no_fields = out.len() - mark == 2;
        let empty_event = event[1..event.len() - 1]
            .iter()
            .all(u8::is_ascii_whitespace);
        if no_fields {
            out.truncate(mark);
            out.push(b'}');
        } else if empty_event {
            out.remove(mark);
        } else {
            out[mark] = b',';
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(event: &str, fields: serde_json::Value) -> Result<String, String> {
        let mut out = b"prefix:".to_vec();
        Merge(fields).write_output(event.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn splices_fields_before_the_closing_brace() {
        assert_eq!(
            merged(r#"{"a":1, "b" : [2]}"#, json!({"c": true})).unwrap(),
            r#"prefix:{"a":1, "b" : [2],"c":true}"#
        );
        assert_eq!(
            merged(" { } ", json!({"c": 1})).unwrap(),
            r#"prefix:{ "c":1}"#
        );
        assert_eq!(
            merged(r#"{"a":1}"#, json!({})).unwrap(),
            r#"prefix:{"a":1}"#
        );
        let out = merged(r#"{"a":{"x":"}"}}"#, json!({"b": 2})).unwrap();
        let v: serde_json::Value = serde_json::from_str(out.trim_start_matches("prefix:")).unwrap();
        assert_eq!(v, json!({"a": {"x": "}"}, "b": 2}));
    }

    #[test]
    fn refuses_what_it_cannot_splice() {
        assert!(
            merged("[1]", json!({"c": 1}))
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            merged(r#"{"a":1}"#, json!([1]))
                .unwrap_err()
                .contains("must serialize as a JSON object")
        );
        let mut out = b"kept".to_vec();
        assert!(Merge(json!(1)).write_output(b"{}", &mut out).is_err());
        assert_eq!(out, b"kept", "nothing is left behind on failure");
    }
}
