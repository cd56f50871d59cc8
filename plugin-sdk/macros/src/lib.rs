//! Attribute macros of the wasmpipe SDK. Use them through `wasmpipe-sdk`,
//! whose runtime the generated code calls.
//!
//! Each attribute keeps the function as written (unit tests call it directly)
//! and adds, next to it, glue that runs the function over a chunk of events
//! and the `extern "C"` exports of the wasmpipe ABI, the latter only when
//! compiling for wasm32. Misuse is reported as a compile error at the
//! offending tokens.
//!
//! # Layout
//! - `signature`: checks every kind shares; classifying return types.
//! - `args`: the arguments of `#[reduce(...)]`.
//! - `common`: the expansion around every stage and the shared exports.
//! - `map` (also `flat_map`), `filter`, `reduce`: the generators per kind.
#![deny(missing_docs)]

mod args;
mod common;
mod filter;
mod map;
mod reduce;
mod signature;

use proc_macro::TokenStream;
use syn::Item;

use crate::signature::Kind;

/// Marks a map stage: one output event per input event.
///
/// ```text
/// #[map] fn f(event: T) -> U
/// #[map] fn f(event: T, ctx: &Context<P>) -> U
/// #[map] fn f(event: T [, ctx: &Context<P>]) -> Result<U, E>   // E: Display
/// ```
/// `T: Deserialize`, `U: Serialize`. An `Err` fails that event only: the host
/// receives its index and `e.to_string()`.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, attr, item)
}

/// Marks a filter stage: keeps the events for which the function returns
/// `true`, passing them on byte for byte.
///
/// ```text
/// #[filter] fn f(event: &T) -> bool
/// #[filter] fn f(event: &T, ctx: &Context<P>) -> bool
/// ```
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, attr, item)
}

/// Marks a flat_map stage: any number of output events per input event, each
/// tagged with the index of the event it came from.
///
/// ```text
/// #[flat_map] fn f(event: T [, ctx: &Context<P>]) -> I              // I: IntoIterator<Item = U>
/// #[flat_map] fn f(event: T [, ctx: &Context<P>]) -> Result<I, E>
/// ```
#[proc_macro_attribute]
pub fn flat_map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::FlatMap, attr, item)
}

/// Marks a reduce stage: folds events into an accumulator `A`
/// (`Serialize + Deserialize`); the host combines the accumulators of chunks
/// folded in parallel.
///
/// ```text
/// #[reduce(combine = merge)] fn f(acc: A, event: T [, ctx: &Context<P>]) -> A
/// #[reduce(combine = merge)] fn f(acc: &mut A, event: T [, ctx: &Context<P>])
/// #[reduce(combine = merge)] fn f(acc: &mut A, event: T [, ctx: &Context<P>]) -> Result<(), E>
/// ```
/// A fallible reduce takes the accumulator by `&mut` so that it survives an
/// `Err`; return the error before changing the accumulator, since the host
/// expects a failed event to leave no trace in it.
///
/// Arguments:
/// - `combine = merge` (required): `fn merge(a: A, b: A) -> A`;
/// - `init = start`: `fn start() -> A`, the initial accumulator; `A::default()`
///   when absent;
/// - `key = by`: `fn by(event: &T) -> K` with `K: ToString`: folds each key's
///   events separately, into a JSON object from key to accumulator. Without
///   it, the manifest's `key` (a JSON pointer into the event) does the same.
#[proc_macro_attribute]
pub fn reduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Reduce, attr, item)
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2 = proc_macro2::TokenStream::from(item);
    let result = match syn::parse2::<Item>(item2.clone()) {
        Ok(Item::Fn(func)) => {
            let attr = attr.into();
            match kind {
                Kind::Map | Kind::FlatMap => map::expand(kind, attr, func),
                Kind::Filter => filter::expand(attr, func),
                Kind::Reduce => reduce::expand(attr, func),
            }
        }
        Ok(other) => Err(syn::Error::new_spanned(
            other,
            format!(
                "`#[{}]` applies to a function: `fn name(event: T, ...) -> ...`",
                kind.name()
            ),
        )),
        Err(e) => Err(e),
    };
    match result {
        Ok(tokens) => tokens.into(),
        // Keep the item, so that a misused attribute does not also produce
        // errors about the function being missing.
        Err(e) => {
            let mut tokens = e.to_compile_error();
            tokens.extend(item2);
            tokens.into()
        }
    }
}
