//! What every source accepts as an event, whichever mode reads it (a
//! file, stdin, an HTTP body, a stored chunk), so that no edge is more
//! lenient than another:
//! - a UTF-8 byte-order mark at the start of the input is skipped, as most
//!   JSON tools do;
//! - an event is valid UTF-8 ([`check_utf8`] names the byte where it is
//!   not): bytes that are not reach no stage and no sink. Every chunk is
//!   checked by the executor, in one pass over its data;
//! - an event nests at most [`MAX_DEPTH`] arrays and objects: no SDK stage
//!   can deserialize deeper parts (serde_json's limit), and most tools
//!   that would read its dead letter back cannot either. HTTP ingest
//!   refuses deeper events with 400, and a dead letter holds one as text,
//!   never as embedded JSON. From files and stdin such an event is given
//!   to the stages (a scan of every byte for it would cost every event);
//!   a stage that deserializes its deep part makes it a dead letter.
//!
//! Line framing (blank lines skipped, `\r\n` taken as `\n`) is the JSON
//! lines source's.

/// The UTF-8 byte-order mark.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Deepest nesting of arrays and objects an event may have.
pub const MAX_DEPTH: usize = 128;

/// `input` without a leading byte-order mark.
pub fn strip_bom(input: &[u8]) -> &[u8] {
    input.strip_prefix(BOM).unwrap_or(input)
}

/// Why an event is not valid UTF-8, naming the first bad byte.
pub fn check_utf8(event: &[u8]) -> Result<(), String> {
    std::str::from_utf8(event).map(drop).map_err(|e| {
        format!(
            "event is not valid UTF-8 (byte {} of the event)",
            e.valid_up_to()
        )
    })
}

/// Why an event is refused at HTTP ingest, or not embedded as JSON in a
/// dead letter: not UTF-8, or nested deeper than [`MAX_DEPTH`].
pub fn check(event: &[u8]) -> Result<(), String> {
    check_utf8(event)?;
    if brackets(event) > MAX_DEPTH && depth(event) > MAX_DEPTH {
        return Err(format!(
            "event nests arrays and objects deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

/// Whether every event of NDJSON `data` passes [`check_utf8`]: the fast
/// path of a chunk, one pass over all of it.
pub fn all_utf8(data: &[u8]) -> bool {
    // Every chunk passes here: SIMD validation is several times faster.
    simdutf8::basic::from_utf8(data).is_ok()
}

fn brackets(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'[' || b == b'{').count()
}

/// The deepest nesting of `[` and `{` outside strings.
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escape) = (false, false);
    for &b in bytes {
        if in_string {
            match (escape, b) {
                (true, _) => escape = false,
                (false, b'\\') => escape = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_named_by_its_byte() {
        assert_eq!(
            check(b"{\"a\":\"\xff\"}"),
            Err("event is not valid UTF-8 (byte 6 of the event)".into())
        );
        assert_eq!(check("{\"a\":\"é\"}".as_bytes()), Ok(()));
        assert!(!all_utf8(b"{}\n{\"a\":\"\xc3\"}\n"));
        assert!(all_utf8("{}\n{\"a\":\"é\"}\n".as_bytes()));
    }

    #[test]
    fn nesting_is_limited_but_brackets_in_strings_do_not_count() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(
            check(deep.as_bytes())
                .unwrap_err()
                .contains("deeper than 128")
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(check(ok.as_bytes()), Ok(()));
        let wide = format!("[{}]", vec!["{}"; 500].join(","));
        assert_eq!(check(wide.as_bytes()), Ok(()));
        let quoted = format!("{{\"s\":\"{}\\\"\"}}", "[".repeat(500));
        assert_eq!(check(quoted.as_bytes()), Ok(()));
    }

    #[test]
    fn a_leading_bom_is_skipped_once() {
        assert_eq!(strip_bom(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(strip_bom(b"{}"), b"{}");
    }
}
