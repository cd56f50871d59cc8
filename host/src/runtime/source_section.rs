//! A development build: one prebuilt interpreter component and the
//! stage's code in a custom section after it.
//!
//! Snapshotting a JavaScript or Python stage into a component takes
//! seconds (componentize-js or componentize-py initialize the whole
//! interpreter with the stage's code loaded), and each new component is
//! compiled again. `run --watch` and the other `--watch` modes are for
//! the edit loop, where seconds per save are what users notice, so their
//! builds are an interpreter component, built and compiled once per
//! machine and SDK, followed by a custom section `wasmpipe-stage-source`
//! holding the stage's code. The host strips the section before it
//! compiles, so every edit finds the interpreter in the compiled-code
//! cache, and hands its contents to the guest through `host.source`; the
//! interpreter evaluates it when the instance is first called.
//!
//! The stage's version is still the hash of the whole file, section
//! included, so it names exactly the code that ran.

/// The custom section's name.
pub const SECTION: &str = "wasmpipe-stage-source";

/// Splits a component into the interpreter (all before a final
/// `wasmpipe-stage-source` section) and the section's contents. Anything
/// else, including a component whose section is not last or not UTF-8, is
/// returned whole with no source.
pub fn split(bytes: &[u8]) -> (&[u8], Option<&str>) {
    let whole = (bytes, None);
    // The preamble: magic and version/layer, 8 bytes.
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return whole;
    }
    let mut at = 8;
    while at < bytes.len() {
        let start = at;
        let id = bytes[at];
        let Some((size, n)) = leb_u32(&bytes[at + 1..]) else {
            return whole;
        };
        let body = at + 1 + n;
        let Some(end) = body
            .checked_add(size as usize)
            .filter(|&e| e <= bytes.len())
        else {
            return whole;
        };
        if id == 0 && end == bytes.len() {
            let content = &bytes[body..end];
            let Some((len, n)) = leb_u32(content) else {
                return whole;
            };
            let Some(name) = content.get(n..n + len as usize) else {
                return whole;
            };
            if name == SECTION.as_bytes() {
                return match std::str::from_utf8(&content[n + len as usize..]) {
                    Ok(source) => (&bytes[..start], Some(source)),
                    Err(_) => whole,
                };
            }
        }
        at = end;
    }
    whole
}

/// An unsigned LEB128 number of at most 32 bits, and the bytes it took.
fn leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// Appends a `wasmpipe-stage-source` section holding `source` to the
/// interpreter component `interpreter` (the JavaScript SDK's build script
/// does the same).
pub fn append(interpreter: &mut Vec<u8>, source: &str) {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut content = Vec::new();
    leb(SECTION.len(), &mut content);
    content.extend_from_slice(SECTION.as_bytes());
    content.extend_from_slice(source.as_bytes());
    interpreter.push(0);
    leb(content.len(), interpreter);
    interpreter.extend_from_slice(&content);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: preamble only (version 0x0d, layer 1).
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn with(interpreter: &[u8], source: &str) -> Vec<u8> {
        let mut bytes = interpreter.to_vec();
        append(&mut bytes, source);
        bytes
    }

    #[test]
    fn a_final_source_section_is_split_off() {
        let code = "exports.map = (e) => e;\n".repeat(20);
        let built = with(EMPTY, &code);
        assert_eq!(split(&built), (EMPTY, Some(code.as_str())));
    }

    #[test]
    fn anything_else_is_whole() {
        assert_eq!(split(EMPTY), (EMPTY, None));
        // A section of another name.
        let mut other = with(EMPTY, "x");
        let at = other.len() - 1 - SECTION.len();
        other[at] = b'W';
        assert_eq!(split(&other).1, None);
        // Not last: a second section after it.
        let twice = with(&with(EMPTY, "a"), "b");
        assert_eq!(split(&twice), (&with(EMPTY, "a")[..], Some("b")));
        let mut not_last = with(EMPTY, "a");
        not_last.extend_from_slice(&[0, 1, 0]);
        assert_eq!(split(&not_last).1, None);
        // Cut short, and not UTF-8.
        let built = with(EMPTY, "abc");
        assert_eq!(split(&built[..built.len() - 1]).1, None);
        let mut bad = with(EMPTY, "abc");
        *bad.last_mut().unwrap() = 0xff;
        assert_eq!(split(&bad).1, None);
        assert_eq!(split(b"junk").1, None);
    }
}
