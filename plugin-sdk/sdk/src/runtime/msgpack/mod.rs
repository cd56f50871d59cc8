//! Events as MessagePack frames (`docs/abi.md`, "Event encodings"): what a
//! stage decodes and encodes when the host configures it with
//! `events = "msgpack"`.
//!
//! The host has already parsed each event's JSON natively, so a stage reads
//! a length-prefixed binary instead of running a JSON parser under the wasm
//! compiler; and a stage whose output goes to another SDK stage never prints
//! JSON at all. The serde configuration keeps the JSON data model: structs
//! are maps with their field names, enums are tagged as serde_json tags them,
//! and types that print differently for people (addresses, UUIDs, times)
//! use their human-readable form, so that a stage sees and produces exactly
//! what it would with JSON.

mod de;
mod ser;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasmpipe_abi::FRAME_HEADER;

use super::events::short_type_name;
pub(crate) use de::{Error, Found, Reader};

/// Decodes one event into the stage's input type.
pub(crate) fn parse_event<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut reader = Reader::new(bytes);
    match T::deserialize(&mut reader) {
        Ok(v) if reader.is_done() => Ok(v),
        Ok(_) => Err("invalid event MessagePack: bytes follow the value".into()),
        Err(e) => Err(describe_event_error::<T>(&e)),
    }
}

/// As for JSON, tells "the event is not what the stage expects" (serde's own
/// errors: a missing field, a wrong type) from "the bytes are not an event".
pub(crate) fn describe_event_error<T>(e: &Error) -> String {
    if e.is_malformed() {
        e.to_string()
    } else {
        format!("event does not match `{}`: {e}", short_type_name::<T>())
    }
}

/// Appends `value` as one frame.
pub(crate) fn write_frame<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    if let Err(e) = write_value(out, value) {
        out.truncate(start);
        return Err(format!("cannot encode output: {e}"));
    }
    close_frame(out, start);
    Ok(())
}

/// Appends `value`'s MessagePack, without a frame header.
pub(crate) fn write_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), ser::Error> {
    ser::write(out, value)
}

/// Writes the length of the frame whose header starts at `start`.
pub(crate) fn close_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
}

/// Appends an input event unchanged, as a frame.
pub(crate) fn push_raw(out: &mut Vec<u8>, event: &[u8]) {
    wasmpipe_abi::push_frame(out, event);
}

/// The header of a MessagePack map at the start of `bytes`: its number of
/// entries and the header's length. `None` when `bytes` holds no map.
pub(crate) fn map_header(bytes: &[u8]) -> Option<(u32, usize)> {
    match *bytes.first()? {
        m @ 0x80..=0x8f => Some(((m & 0x0f) as u32, 1)),
        0xde => Some((
            u16::from_be_bytes(bytes.get(1..3)?.try_into().ok()?) as u32,
            3,
        )),
        0xdf => Some((u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?), 5)),
        _ => None,
    }
}

/// [`Merge`](crate::Merge) over frames: the event's entries, then the
/// fields' entries, under one map header counting both.
pub(crate) fn write_merged<T: Serialize>(
    out: &mut Vec<u8>,
    event: &[u8],
    fields: &T,
) -> Result<(), String> {
    let Some((n, event_header)) = map_header(event) else {
        return Err("`Merge` adds fields to an object, but the event is not a JSON object".into());
    };
    let start = out.len();
    // A map32 header always has room for the sum; decoders take any form.
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(0xdf);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&event[event_header..]);
    let mark = out.len();
    if let Err(e) = write_value(out, fields) {
        out.truncate(start);
        return Err(format!("cannot encode output: {e}"));
    }
    let Some((m, fields_header)) = map_header(&out[mark..]) else {
        out.truncate(start);
        return Err("the fields given to `Merge` must serialize as a JSON object".into());
    };
    out.copy_within(mark + fields_header.., mark);
    out.truncate(out.len() - fields_header);
    let count = start + FRAME_HEADER + 1;
    out[count..count + 4].copy_from_slice(&(n + m).to_be_bytes());
    close_frame(out, start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    fn frame_of(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, v).unwrap();
        out
    }

    fn value_of(frame: &[u8]) -> Value {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "one whole frame");
        parse_event(&frame[4..]).unwrap()
    }

    #[test]
    fn values_keep_the_json_data_model() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum Level {
            Info,
            Custom(String),
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Ev {
            n: i64,
            f: f64,
            s: String,
            o: Option<u8>,
            l: Level,
            c: Level,
            addr: std::net::Ipv4Addr,
        }
        let ev = Ev {
            n: -3,
            f: 1.5,
            s: "é\n".into(),
            o: None,
            l: Level::Info,
            c: Level::Custom("x".into()),
            addr: "10.0.0.1".parse().unwrap(),
        };
        let mut out = Vec::new();
        write_frame(&mut out, &ev).unwrap();
        assert_eq!(
            value_of(&out),
            json!({"n": -3, "f": 1.5, "s": "é\n", "o": null, "l": "Info", "c": {"Custom": "x"}, "addr": "10.0.0.1"})
        );
        let back: Ev = parse_event(&out[4..]).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn frames_agree_with_an_independent_implementation() {
        // Ours encodes, rmp-serde decodes; rmp-serde encodes, ours decodes.
        let values = [
            json!({"n": 1, "neg": -200, "big": u64::MAX, "min": i64::MIN, "f": 1.5, "z": null}),
            json!({"s": "x".repeat(40), "t": "y".repeat(300), "u": "z".repeat(70000), "b": [true, false]}),
            json!(
                (0..20)
                    .map(|i| (format!("k{i}"), json!([i, {"i": i}])))
                    .collect::<serde_json::Map<_, _>>()
            ),
            json!((0..70000).collect::<Vec<u32>>()),
        ];
        for v in &values {
            let mut ours = Vec::new();
            write_value(&mut ours, v).unwrap();
            let theirs_read: Value = rmp_serde::from_slice(&ours).unwrap();
            assert_eq!(&theirs_read, v);
            let theirs = rmp_serde::to_vec(v).unwrap();
            assert_eq!(&parse_event::<Value>(&theirs).unwrap(), v);
        }
        // Unit is null, as in JSON (rmp-serde writes a unit struct as `[]`).
        #[derive(Serialize)]
        struct Unit;
        let mut out = Vec::new();
        write_value(&mut out, &Unit).unwrap();
        assert_eq!(out, [0xc0]);
        // A length hint that lies is an error, not a broken frame.
        struct Liar;
        impl Serialize for Liar {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element(&1)?;
                seq.end()
            }
        }
        assert!(write_value(&mut Vec::new(), &Liar).is_err());
    }

    #[test]
    fn decode_errors_name_the_type() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Num {
            n: i64,
        }
        let frame = frame_of(&json!({"m": 1}));
        assert_eq!(
            parse_event::<Num>(&frame[4..]).unwrap_err(),
            "event does not match `Num`: missing field `n`"
        );
        let frame = frame_of(&json!({"n": "x"}));
        let e = parse_event::<Num>(&frame[4..]).unwrap_err();
        assert_eq!(
            e,
            "event does not match `Num`: invalid type: string \"x\", expected i64"
        );
        for bad in [
            &[0x81, 0xa1][..],
            &[0x81, 0xa1, b'n', 0x01, 0x02],
            &[0x81, 0xa1, b'n', 0xd4, 0, 0],
        ] {
            let e = parse_event::<Num>(bad).unwrap_err();
            assert!(e.starts_with("invalid event MessagePack"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn merge_counts_both_maps() {
        let event = frame_of(&json!({"a": 1, "b": [2]}));
        let mut out = b"pre".to_vec();
        write_merged(&mut out, &event[4..], &json!({"c": true})).unwrap();
        assert_eq!(&out[..3], b"pre");
        assert_eq!(value_of(&out[3..]), json!({"a": 1, "b": [2], "c": true}));
        let mut out = Vec::new();
        write_merged(&mut out, &event[4..], &json!({})).unwrap();
        assert_eq!(value_of(&out), json!({"a": 1, "b": [2]}));
    }

    #[test]
    fn merge_refuses_what_it_cannot_splice() {
        let list = frame_of(&json!([1]));
        let mut out = b"kept".to_vec();
        let e = write_merged(&mut out, &list[4..], &json!({"c": 1})).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let event = frame_of(&json!({"a": 1}));
        let e = write_merged(&mut out, &event[4..], &json!([1])).unwrap_err();
        assert!(e.contains("must serialize as a JSON object"), "{e}");
        assert_eq!(out, b"kept", "nothing is left behind on failure");
    }
}
