//! The wasmpipe stage ABI, version 1: the one definition of export names,
//! status codes and the result envelope, shared by the host (`wasmpipe`) and
//! the guest SDK (`wasmpipe-sdk`). `docs/abi.md` is the prose specification;
//! the two must change together.
//!
//! # Shape of the ABI
//!
//! A stage is a core wasm module for `wasm32-wasip1`. The host hands it a
//! whole *chunk* of newline-delimited JSON events per call, never one event
//! per call. The guest answers through a fixed [`Descriptor`] in its own
//! memory: the outputs (newline-delimited JSON), for each output the index of
//! the input event it came from, and per-event errors. One bad event therefore
//! never fails its chunk.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

/// The ABI version this crate describes. The host refuses modules whose
/// metadata names another version.
pub const ABI_VERSION: u32 = 1;

/// Names of the functions (and the memory) a stage module exports.
pub mod export {
    /// The guest's linear memory.
    pub const MEMORY: &str = "memory";
    /// `() -> i32`: address of the guest's [`Descriptor`](crate::Descriptor);
    /// constant for the life of an instance.
    pub const DESCRIPTOR: &str = "wasmpipe_descriptor";
    /// `() -> i32 status`: writes the stage metadata JSON to `out`.
    pub const METADATA: &str = "wasmpipe_metadata";
    /// `(len: i32) -> i32 ptr`: allocates `len` bytes the host fills with a
    /// call's input. The next call that receives the buffer takes ownership.
    pub const ALLOC: &str = "wasmpipe_alloc";
    /// `(cfg_ptr, cfg_len) -> i32 status`: configures the instance once with
    /// the stage configuration JSON (name, params, key).
    pub const INIT: &str = "wasmpipe_init";
    /// `(ctx_ptr, ctx_len, in_ptr, in_len) -> i32 status`: runs a map,
    /// filter or flat_map stage over one chunk.
    pub const PROCESS: &str = "wasmpipe_process";
    /// `(ctx_ptr, ctx_len, acc_ptr, acc_len, in_ptr, in_len) -> i32 status`:
    /// folds one chunk into an accumulator (`acc_len == 0`: the initial one)
    /// and writes the new accumulator JSON to `out`.
    pub const REDUCE: &str = "wasmpipe_reduce";
    /// `(a_ptr, a_len, b_ptr, b_len) -> i32 status`: combines two
    /// accumulators into one, written to `out`.
    pub const COMBINE: &str = "wasmpipe_combine";
    /// Optional `() -> ()`: reactor initialisation, called once after
    /// instantiation when exported.
    pub const INITIALIZE: &str = "_initialize";
}

/// How the events of a chunk are encoded between the host and a stage.
///
/// Every stage takes JSON lines. A stage whose metadata lists
/// [`encoding::MSGPACK`] under `events` may instead be configured (the
/// `events` field of its init configuration) to take and return
/// MessagePack *frames*: the host then parses each event's JSON once,
/// natively, and stages decode a compact binary instead of JSON text;
/// consecutive stages that speak it hand frames to each other with no JSON
/// in between. Accumulators, params and chunk metadata stay JSON.
pub mod encoding {
    /// Newline-delimited JSON: one event per line (the default).
    pub const JSON: &str = "json";
    /// MessagePack frames: per event, a little-endian `u32` length and then
    /// that many bytes holding one MessagePack value (maps for objects,
    /// str for strings, int / float 64 for numbers: the JSON data model).
    pub const MSGPACK: &str = "msgpack";
}

/// Writing the MessagePack values of frames, each header and number in its
/// shortest form: the one encoder of the host's transcoder and the SDK's
/// serializer, so that both write the same bytes for the same value.
pub mod msgpack {
    use alloc::vec::Vec;

    /// An unsigned integer.
    #[inline]
    pub fn put_uint(out: &mut Vec<u8>, v: u64) {
        match v {
            0..=0x7f => out.push(v as u8),
            0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(v as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend_from_slice(&(v as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    /// A signed integer (a non-negative one as unsigned).
    #[inline]
    pub fn put_int(out: &mut Vec<u8>, v: i64) {
        match v {
            0.. => put_uint(out, v as u64),
            -32..=-1 => out.push(v as i8 as u8),
            -128..=-33 => out.extend_from_slice(&[0xd0, v as i8 as u8]),
            -32768..=-129 => {
                out.push(0xd1);
                out.extend_from_slice(&(v as i16).to_be_bytes());
            }
            -2147483648..=-32769 => {
                out.push(0xd2);
                out.extend_from_slice(&(v as i32).to_be_bytes());
            }
            _ => {
                out.push(0xd3);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    /// A float 64.
    #[inline]
    pub fn put_f64(out: &mut Vec<u8>, v: f64) {
        out.push(0xcb);
        out.extend_from_slice(&v.to_be_bytes());
    }

    /// A string.
    #[inline]
    pub fn put_str(out: &mut Vec<u8>, v: &str) {
        let n = v.len();
        match n {
            0..=31 => out.push(0xa0 | n as u8),
            32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
            0x100..=0xffff => {
                out.push(0xda);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(0xdb);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(v.as_bytes());
    }

    /// The markers of a map's headers: fix, 16-bit and 32-bit.
    pub const MAP: [u8; 3] = [0x80, 0xde, 0xdf];
    /// The markers of an array's headers: fix, 16-bit and 32-bit.
    pub const ARRAY: [u8; 3] = [0x90, 0xdc, 0xdd];

    /// The header of a map ([`MAP`]) or array ([`ARRAY`]) of `n` entries.
    #[inline]
    pub fn put_header(out: &mut Vec<u8>, n: usize, [fix, m16, m32]: [u8; 3]) {
        match n {
            0..=15 => out.push(fix | n as u8),
            16..=0xffff => {
                out.push(m16);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m32);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    /// Rewrites the 32-bit header reserved at `at` (5 bytes, written before
    /// the entries, whose number was not known then) for `n` entries in its
    /// shortest form, moving the entries back over the room it does not need.
    pub fn close_header(out: &mut Vec<u8>, at: usize, n: usize, markers: [u8; 3]) {
        let mut h = Vec::with_capacity(5);
        put_header(&mut h, n, markers);
        out[at..at + h.len()].copy_from_slice(&h);
        if h.len() < 5 {
            out.copy_within(at + 5.., at + h.len());
            out.truncate(out.len() - (5 - h.len()));
        }
    }
}

/// Length of a frame's header (the little-endian `u32` byte count).
pub const FRAME_HEADER: usize = 4;

/// Appends one MessagePack frame: `value`'s length, then `value`.
pub fn push_frame(out: &mut impl Extend<u8>, value: &[u8]) {
    out.extend((value.len() as u32).to_le_bytes());
    out.extend(value.iter().copied());
}

/// Iterates over the values of a buffer of frames. A truncated frame ends
/// the iteration with an `Err` carrying the byte offset of its header.
pub fn frames(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], usize>> {
    let total = bytes.len();
    let mut failed = false;
    core::iter::from_fn(move || {
        if bytes.is_empty() || failed {
            return None;
        }
        let at = total - bytes.len();
        let len = match bytes {
            [a, b, c, d, rest @ ..]
                if u32::from_le_bytes([*a, *b, *c, *d]) as usize <= rest.len() =>
            {
                u32::from_le_bytes([*a, *b, *c, *d]) as usize
            }
            _ => {
                failed = true;
                return Some(Err(at));
            }
        };
        let value = &bytes[FRAME_HEADER..FRAME_HEADER + len];
        bytes = &bytes[FRAME_HEADER + len..];
        Some(Ok(value))
    })
}

/// Status codes returned by the guest's entry points.
pub mod status {
    /// The call completed; per-event errors, if any, are in the error records.
    pub const OK: i32 = 0;
    /// The call failed as a whole (bad configuration, undecodable
    /// accumulator); the error records hold one record whose index is
    /// [`NO_EVENT`](crate::NO_EVENT) and whose message says why.
    pub const FAILED: i32 = 1;
}

/// The event index used where an error or cursor concerns no single event.
pub const NO_EVENT: u32 = u32::MAX;

/// Stage kinds, as spelled in metadata and manifests.
pub mod kind {
    /// One event in, one event out (or an error).
    pub const MAP: &str = "map";
    /// One event in, the same event out or nothing.
    pub const FILTER: &str = "filter";
    /// One event in, zero or more events out.
    pub const FLAT_MAP: &str = "flat_map";
    /// Events folded into an accumulator; accumulators combine.
    pub const REDUCE: &str = "reduce";
    /// Every kind, in documentation order.
    pub const ALL: [&str; 4] = [MAP, FILTER, FLAT_MAP, REDUCE];
}

/// Byte offsets of the fields of the descriptor, a block of little-endian
/// `u32`s in guest memory at the address `wasmpipe_descriptor()` returns.
///
/// The guest fills it before returning from every call. `cursor` is also
/// kept current *during* a call, so that when a call traps, times out or runs
/// out of memory, the host still learns which event was being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Descriptor {
    /// Address of the output bytes.
    pub out_ptr: u32,
    /// Length of the output bytes.
    pub out_len: u32,
    /// Address of the origin table: one little-endian `u32` per output line,
    /// the index (within the call's input chunk) of the event it came from.
    pub origin_ptr: u32,
    /// Number of entries in the origin table (= number of output lines).
    pub origin_count: u32,
    /// Address of the error records (see [`ErrorRecord`] encoding).
    pub err_ptr: u32,
    /// Length in bytes of the error records.
    pub err_len: u32,
    /// Index of the event being processed, or [`NO_EVENT`].
    pub cursor: u32,
    /// Address of the last panic message (UTF-8), if any.
    pub panic_ptr: u32,
    /// Length of the last panic message; 0 when there was none.
    pub panic_len: u32,
    /// Reserved; guests write 0.
    pub reserved: u32,
}

impl Descriptor {
    /// Size of the descriptor in bytes.
    pub const SIZE: usize = 40;

    /// Decodes a descriptor from its little-endian bytes.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let f = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        Descriptor {
            out_ptr: f(0),
            out_len: f(1),
            origin_ptr: f(2),
            origin_count: f(3),
            err_ptr: f(4),
            err_len: f(5),
            cursor: f(6),
            panic_ptr: f(7),
            panic_len: f(8),
            reserved: f(9),
        }
    }

    /// Encodes the descriptor as little-endian bytes.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let fields = [
            self.out_ptr,
            self.out_len,
            self.origin_ptr,
            self.origin_count,
            self.err_ptr,
            self.err_len,
            self.cursor,
            self.panic_ptr,
            self.panic_len,
            self.reserved,
        ];
        let mut b = [0u8; Self::SIZE];
        for (i, v) in fields.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// One per-event error as decoded from the error records: a little-endian
/// `u32` event index, a little-endian `u32` message length, then the UTF-8
/// message bytes. Records follow each other with no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRecord<'a> {
    /// Index of the failed event within the call's input, or [`NO_EVENT`].
    pub index: u32,
    /// Why it failed.
    pub message: &'a [u8],
}

/// Appends one error record to `out` using the record encoding.
pub fn encode_error(out: &mut impl Extend<u8>, index: u32, message: &[u8]) {
    out.extend(index.to_le_bytes());
    out.extend((message.len() as u32).to_le_bytes());
    out.extend(message.iter().copied());
}

/// Iterates over encoded error records. A truncated trailing record ends the
/// iteration with an `Err` carrying the byte offset where decoding failed.
pub fn decode_errors(mut bytes: &[u8]) -> impl Iterator<Item = Result<ErrorRecord<'_>, usize>> {
    let total = bytes.len();
    let mut failed = false;
    core::iter::from_fn(move || {
        if bytes.is_empty() || failed {
            return None;
        }
        let at = total - bytes.len();
        if bytes.len() < 8 {
            failed = true;
            return Some(Err(at));
        }
        let index = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if bytes.len() - 8 < len {
            failed = true;
            return Some(Err(at));
        }
        let message = &bytes[8..8 + len];
        bytes = &bytes[8 + len..];
        Some(Ok(ErrorRecord { index, message }))
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn descriptor_round_trips() {
        let d = Descriptor {
            out_ptr: 1,
            out_len: 2,
            origin_ptr: 3,
            origin_count: 4,
            err_ptr: 5,
            err_len: 6,
            cursor: 7,
            panic_ptr: 8,
            panic_len: 9,
            reserved: 0,
        };
        assert_eq!(Descriptor::from_bytes(&d.to_bytes()), d);
    }

    #[test]
    fn error_records_round_trip_and_detect_truncation() {
        let mut buf = Vec::new();
        encode_error(&mut buf, 3, b"bad");
        encode_error(&mut buf, NO_EVENT, b"");
        let recs: Vec<_> = decode_errors(&buf).collect();
        assert_eq!(
            recs,
            [
                Ok(ErrorRecord {
                    index: 3,
                    message: b"bad"
                }),
                Ok(ErrorRecord {
                    index: NO_EVENT,
                    message: b""
                })
            ]
        );
        let cut = &buf[..buf.len() - 3];
        let recs: Vec<_> = decode_errors(cut).collect();
        assert_eq!(recs.last(), Some(&Err(11)));
    }

    #[test]
    fn frames_round_trip_and_detect_truncation() {
        let mut buf = Vec::new();
        push_frame(&mut buf, &[0x80]);
        push_frame(&mut buf, b"");
        push_frame(&mut buf, &[0xa1, b'x']);
        let all: Vec<_> = frames(&buf).collect();
        assert_eq!(all, [Ok(&[0x80][..]), Ok(&[][..]), Ok(&[0xa1, b'x'][..])]);
        // A header cut short, and a value shorter than its header says.
        assert_eq!(frames(&buf[..7]).last(), Some(Err(5)));
        assert_eq!(frames(&buf[..buf.len() - 1]).last(), Some(Err(9)));
        assert_eq!(frames(&[1, 0]).collect::<Vec<_>>(), [Err(0)]);
    }
}
