//! The per-kind loops over a chunk. One bad event never fails its chunk: it
//! becomes an error record carrying its index, and the loop goes on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Display;

use wasmpipe_abi::encode_error;

use super::codec::{Accumulators, Events, Outputs};
use super::events::{Encoding, key_into, pointer_tokens, split};
use super::msgpack;
use super::{Runtime, State, context_mut, not_initialised, parse_meta};
use crate::Context;

/// Where one event's output lines go. Lines of an event that then fails are
/// taken back, so an event contributes all its outputs or none.
struct Sink<'a> {
    out: &'a mut Vec<u8>,
    origin: &'a mut Vec<u32>,
    index: u32,
    encoding: Encoding,
}

impl Sink<'_> {
    /// Appends `value` as one output (a line or a frame).
    fn push<U>(&mut self, outputs: &Outputs<U>, event: &[u8], value: &U) -> Result<(), String> {
        match self.encoding {
            Encoding::Json => {
                (outputs.json)(self.out, event, value)?;
                self.out.push(b'\n');
            }
            Encoding::MsgPack => (outputs.msgpack)(self.out, event, value)?,
        }
        self.origin.push(self.index);
        Ok(())
    }

    /// Appends an input event unchanged: filters pass events through without
    /// re-encoding them, which is both faster and exact.
    fn push_raw(&mut self, event: &[u8]) {
        match self.encoding {
            Encoding::Json => {
                self.out.extend_from_slice(event);
                self.out.push(b'\n');
            }
            Encoding::MsgPack => msgpack::push_raw(self.out, event),
        }
        self.origin.push(self.index);
    }
}

impl Runtime {
    /// Runs `per_event` over every event of a chunk, keeping the cursor and the
    /// context's index current and turning its errors into error records.
    fn each_event<P: 'static>(
        &self,
        meta: &[u8],
        input: &[u8],
        mut per_event: impl FnMut(&mut Sink<'_>, Encoding, &[u8], &Context<P>) -> Result<(), String>,
    ) -> i32 {
        self.call(|state| {
            let State {
                out,
                origin,
                errors,
                config,
            } = state;
            let (ctx, encoding) = context_mut::<P>(config)?;
            ctx.meta = parse_meta(meta)?;
            for (i, line) in split(encoding, input).enumerate() {
                // A chunk of more than `u32::MAX` events cannot fit in wasm32 memory.
                let index = i as u32;
                self.set_cursor(index);
                ctx.index = i;
                let marks = (out.len(), origin.len());
                let mut sink = Sink {
                    out,
                    origin,
                    index,
                    encoding,
                };
                if let Err(message) = per_event(&mut sink, encoding, line, ctx) {
                    out.truncate(marks.0);
                    origin.truncate(marks.1);
                    encode_error(errors, index, message.as_bytes());
                }
            }
            Ok(())
        })
    }

    /// `wasmpipe_process` of a map stage: one output per event.
    pub fn map<T, U, E, P, F>(
        &self,
        meta: &[u8],
        input: &[u8],
        events: Events<T>,
        outputs: Outputs<U>,
        mut f: F,
    ) -> i32
    where
        E: Display,
        P: 'static,
        F: FnMut(T, &Context<P>) -> Result<U, E>,
    {
        self.each_event(meta, input, |sink, encoding, line, ctx| {
            let event = events.decode(encoding, line)?;
            let output = f(event, ctx).map_err(|e| e.to_string())?;
            sink.push(&outputs, line, &output)
        })
    }

    /// `wasmpipe_process` of a filter stage: the event, byte for byte, or nothing.
    pub fn filter<T, P, F>(&self, meta: &[u8], input: &[u8], events: Events<T>, mut f: F) -> i32
    where
        P: 'static,
        F: FnMut(&T, &Context<P>) -> bool,
    {
        self.each_event(meta, input, |sink, encoding, line, ctx| {
            let event = events.decode(encoding, line)?;
            if f(&event, ctx) {
                sink.push_raw(line);
            }
            Ok(())
        })
    }

    /// `wasmpipe_process` of a flat_map stage: any number of outputs per event.
    pub fn flat_map<T, I, E, P, F>(
        &self,
        meta: &[u8],
        input: &[u8],
        events: Events<T>,
        outputs: Outputs<I::Item>,
        mut f: F,
    ) -> i32
    where
        I: IntoIterator,
        E: Display,
        P: 'static,
        F: FnMut(T, &Context<P>) -> Result<I, E>,
    {
        self.each_event(meta, input, |sink, encoding, line, ctx| {
            let event = events.decode(encoding, line)?;
            for output in f(event, ctx).map_err(|e| e.to_string())? {
                sink.push(&outputs, line, &output)?;
            }
            Ok(())
        })
    }

    /// `wasmpipe_reduce`: folds a chunk into the accumulator `acc` (empty: a
    /// fresh one from `init`) and writes the new accumulator.
    ///
    /// The stage is keyed when `key` is a key function or the manifest gave a
    /// key pointer; the accumulator is then a JSON object from key to `A`.
    #[allow(clippy::too_many_arguments)]
    pub fn reduce<T, A, P, E, I, K, Fo>(
        &self,
        meta: &[u8],
        acc: &[u8],
        input: &[u8],
        events: Events<T>,
        accumulators: Accumulators<A>,
        init: I,
        key: Option<K>,
        mut fold: Fo,
    ) -> i32
    where
        P: 'static,
        E: Display,
        I: Fn() -> A,
        K: Fn(&T, &mut String),
        Fo: Fold<A, T, P, E>,
    {
        self.call(|state| {
            let State {
                out,
                errors,
                config,
                ..
            } = state;
            let pointer = config.as_ref().ok_or_else(not_initialised)?.key.clone();
            let (ctx, encoding) = context_mut::<P>(config)?;
            ctx.meta = parse_meta(meta)?;
            let invalid = |e| format!("invalid accumulator for stage `{}`: {e}", ctx.stage);
            let mut fail =
                |index: u32, message: String| encode_error(errors, index, message.as_bytes());

            if key.is_none() && pointer.is_none() {
                let mut acc = match acc {
                    [] => init(),
                    bytes => (accumulators.read)(bytes).map_err(invalid)?,
                };
                for (i, line) in split(encoding, input).enumerate() {
                    let index = i as u32;
                    self.set_cursor(index);
                    ctx.index = i;
                    match events.decode(encoding, line) {
                        Err(message) => fail(index, message),
                        Ok(event) => {
                            let (next, result) = fold.fold(acc, event, ctx);
                            acc = next;
                            if let Err(e) = result {
                                fail(index, e.to_string());
                            }
                        }
                    }
                }
                return (accumulators.write)(out, &acc).map_err(cannot_encode);
            }

            let mut groups = match acc {
                [] => BTreeMap::new(),
                bytes => (accumulators.read_groups)(bytes).map_err(invalid)?,
            };
            let path = pointer.as_deref().map(pointer_tokens);
            // Reused for every event: an existing group is found without
            // allocating; only a new group's key is copied.
            let mut key_buf = String::new();
            for (i, line) in split(encoding, input).enumerate() {
                let index = i as u32;
                self.set_cursor(index);
                ctx.index = i;
                let event = match (&key, &path) {
                    (Some(key), _) => events
                        .decode(encoding, line)
                        .inspect(|event| key(event, &mut key_buf)),
                    (None, Some(path)) => key_into(
                        encoding,
                        line,
                        pointer.as_deref().unwrap_or_default(),
                        path,
                        &mut key_buf,
                    )
                    .and_then(|()| events.decode(encoding, line)),
                    (None, None) => unreachable!("unkeyed reduce returned above"),
                };
                match event {
                    Err(message) => fail(index, message),
                    Ok(event) => {
                        if let Err(e) = fold.fold_entry(&mut groups, &key_buf, &init, event, ctx) {
                            fail(index, e.to_string());
                        }
                    }
                }
            }
            (accumulators.write_groups)(out, &groups).map_err(cannot_encode)
        })
    }

    /// `wasmpipe_combine`: merges two accumulators with `combine`. For a keyed
    /// stage, groups present in both are combined and the others kept. An
    /// empty input stands for a fresh accumulator.
    pub fn combine<A, I, F>(
        &self,
        a: &[u8],
        b: &[u8],
        accumulators: Accumulators<A>,
        init: I,
        mut combine: F,
    ) -> i32
    where
        I: Fn() -> A,
        F: FnMut(A, A) -> A,
    {
        self.call(|state| {
            let config = state.config.as_ref().ok_or_else(not_initialised)?;
            let read = |bytes: &[u8], which: &str| -> Result<Option<A>, String> {
                match bytes {
                    [] => Ok(None),
                    bytes => (accumulators.read)(bytes)
                        .map(Some)
                        .map_err(|e| format!("invalid {which} accumulator to combine: {e}")),
                }
            };
            let read_groups = |bytes: &[u8], which: &str| -> Result<BTreeMap<String, A>, String> {
                match bytes {
                    [] => Ok(BTreeMap::new()),
                    bytes => (accumulators.read_groups)(bytes)
                        .map_err(|e| format!("invalid {which} accumulator to combine: {e}")),
                }
            };
            if config.keyed {
                let mut groups = read_groups(a, "first")?;
                for (key, theirs) in read_groups(b, "second")? {
                    let merged = match groups.remove(&key) {
                        Some(ours) => combine(ours, theirs),
                        None => theirs,
                    };
                    groups.insert(key, merged);
                }
                return (accumulators.write_groups)(&mut state.out, &groups).map_err(cannot_encode);
            }
            let merged = match (read(a, "first")?, read(b, "second")?) {
                (Some(a), Some(b)) => combine(a, b),
                (Some(one), None) | (None, Some(one)) => one,
                (None, None) => init(),
            };
            (accumulators.write)(&mut state.out, &merged).map_err(cannot_encode)
        })
    }
}

fn cannot_encode(e: serde_json::Error) -> String {
    format!("cannot encode accumulator: {e}")
}

/// How a reduce function folds one event into an accumulator. The two
/// implementations match the two shapes a reduce function may have; the
/// macro picks one from the function's signature.
pub trait Fold<A, T, P, E> {
    /// Folds `event` into an owned accumulator and returns it, with the
    /// event's error if it failed.
    fn fold(&mut self, acc: A, event: T, ctx: &Context<P>) -> (A, Result<(), E>);

    /// Folds `event` into the accumulator of group `key`, starting the group
    /// from `init` when it is new.
    fn fold_entry(
        &mut self,
        groups: &mut BTreeMap<String, A>,
        key: &str,
        init: &impl Fn() -> A,
        event: T,
        ctx: &Context<P>,
    ) -> Result<(), E>;
}

/// `fn(acc: A, event: T [, ctx]) -> A`.
pub struct ByValue<F>(pub F);

/// `fn(acc: &mut A, event: T [, ctx]) -> Result<(), E>` (the glue turns `()`
/// into `Ok`). Fallible reduce functions take this shape, so that the
/// accumulator survives an event's error.
pub struct InPlace<F>(pub F);

impl<A, T, P, F> Fold<A, T, P, Infallible> for ByValue<F>
where
    F: FnMut(A, T, &Context<P>) -> A,
{
    fn fold(&mut self, acc: A, event: T, ctx: &Context<P>) -> (A, Result<(), Infallible>) {
        ((self.0)(acc, event, ctx), Ok(()))
    }

    fn fold_entry(
        &mut self,
        groups: &mut BTreeMap<String, A>,
        key: &str,
        init: &impl Fn() -> A,
        event: T,
        ctx: &Context<P>,
    ) -> Result<(), Infallible> {
        // The function consumes the accumulator, so it leaves the map for the
        // call: `remove_entry` + `insert` needs no placeholder value and
        // reuses the group's key.
        let (key, acc) = match groups.remove_entry(key) {
            Some(entry) => entry,
            None => (key.to_owned(), init()),
        };
        groups.insert(key, (self.0)(acc, event, ctx));
        Ok(())
    }
}

impl<A, T, P, E, F> Fold<A, T, P, E> for InPlace<F>
where
    F: FnMut(&mut A, T, &Context<P>) -> Result<(), E>,
{
    fn fold(&mut self, mut acc: A, event: T, ctx: &Context<P>) -> (A, Result<(), E>) {
        let result = (self.0)(&mut acc, event, ctx);
        (acc, result)
    }

    fn fold_entry(
        &mut self,
        groups: &mut BTreeMap<String, A>,
        key: &str,
        init: &impl Fn() -> A,
        event: T,
        ctx: &Context<P>,
    ) -> Result<(), E> {
        if let Some(acc) = groups.get_mut(key) {
            return (self.0)(acc, event, ctx);
        }
        (self.0)(
            groups.entry(key.to_owned()).or_insert_with(init),
            event,
            ctx,
        )
    }
}
