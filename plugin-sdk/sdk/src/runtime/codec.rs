//! Codec witnesses: how to decode events and accumulators and encode outputs
//! and accumulators of the types a stage uses.
//!
//! The serde bounds live on the functions that build these values rather
//! than on the chunk loops. The glue builds each one at a span in the user's
//! signature, so that "`In: Deserialize` is not satisfied" points at the
//! event type and "`Out: Serialize`" at the return type, each reported once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Output;
use serde::de::DeserializeOwned;

use super::events::{Encoding, parse_event};
use super::msgpack;

/// Decodes events of type `T`.
pub struct Events<T> {
    pub(crate) from_json: fn(&[u8]) -> Result<T, String>,
    pub(crate) from_msgpack: fn(&[u8]) -> Result<T, String>,
}

impl<T> Events<T> {
    /// Decodes one event in `encoding`.
    #[inline]
    pub(crate) fn decode(&self, encoding: Encoding, event: &[u8]) -> Result<T, String> {
        match encoding {
            Encoding::Json => (self.from_json)(event),
            Encoding::MsgPack => (self.from_msgpack)(event),
        }
    }
}

/// The codec of events of type `T`.
pub fn events<T: DeserializeOwned>() -> Events<T> {
    Events {
        from_json: parse_event::<T>,
        from_msgpack: msgpack::parse_event::<T>,
    }
}

/// Encodes outputs of type `U`, given the input event's text (for
/// [`Merge`](crate::Merge)).
pub struct Outputs<U> {
    pub(crate) json: WriteOutput<U>,
    pub(crate) msgpack: WriteOutput<U>,
}

/// Appends an output (third argument) for an input event (second argument):
/// a JSON text without its newline, or a whole MessagePack frame.
type WriteOutput<U> = fn(&mut Vec<u8>, &[u8], &U) -> Result<(), String>;

/// The codec of outputs of type `U`.
pub fn outputs<U: Output>() -> Outputs<U> {
    Outputs {
        json: |out, event, value| value.write_output(event, out),
        msgpack: |out, event, value| value.write_msgpack(event, out),
    }
}

/// Decodes and encodes accumulators of type `A`, alone or grouped by key.
pub struct Accumulators<A> {
    pub(crate) read: fn(&[u8]) -> serde_json::Result<A>,
    pub(crate) read_groups: fn(&[u8]) -> serde_json::Result<BTreeMap<String, A>>,
    pub(crate) write: fn(&mut Vec<u8>, &A) -> serde_json::Result<()>,
    pub(crate) write_groups: fn(&mut Vec<u8>, &BTreeMap<String, A>) -> serde_json::Result<()>,
}

/// The codec of accumulators of type `A`.
pub fn accumulators<A: Serialize + DeserializeOwned>() -> Accumulators<A> {
    Accumulators {
        read: |bytes| serde_json::from_slice(bytes),
        read_groups: |bytes| serde_json::from_slice(bytes),
        write: |out, acc| serde_json::to_writer(out, acc),
        write_groups: |out, groups| serde_json::to_writer(out, groups),
    }
}
