//! The arguments of `#[reduce(...)]`; the other kinds take none.

use proc_macro2::{Span, TokenStream};
use syn::Path;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;

use crate::signature::Kind;

/// `#[reduce(combine = f, init = g, key = h)]`.
pub(crate) struct ReduceArgs {
    /// `fn(A, A) -> A`: merges accumulators of different chunks. Required,
    /// because the host folds chunks in parallel.
    pub(crate) combine: Path,
    /// `fn() -> A`: the initial accumulator; `A::default()` when absent.
    pub(crate) init: Option<Path>,
    /// `fn(&T) -> K` with `K: ToString`: the stage groups by this key.
    pub(crate) key: Option<Path>,
}

/// Fails when a kind that takes no arguments was given some.
pub(crate) fn no_args(kind: Kind, attr: TokenStream) -> syn::Result<()> {
    if attr.is_empty() {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        attr,
        format!("`#[{}]` takes no arguments", kind.name()),
    ))
}

impl ReduceArgs {
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<Self> {
        let (mut combine, mut init, mut key) = (None, None, None);
        let parser = syn::meta::parser(|meta| {
            let slot = if meta.path.is_ident("combine") {
                &mut combine
            } else if meta.path.is_ident("init") {
                &mut init
            } else if meta.path.is_ident("key") {
                &mut key
            } else {
                let name = meta
                    .path
                    .get_ident()
                    .map_or_else(|| "?".to_owned(), ToString::to_string);
                return Err(meta.error(format!(
                    "unknown `#[reduce]` argument `{name}`; expected `combine = fn`, `init = fn` or `key = fn`"
                )));
            };
            set_once(slot, &meta)
        });
        parser.parse2(attr)?;
        let combine = combine.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "`#[reduce]` needs `combine = fn(A, A) -> A` to merge the accumulators of chunks folded in parallel, \
                 e.g. `#[reduce(combine = merge)]`",
            )
        })?;
        Ok(ReduceArgs { combine, init, key })
    }
}

fn set_once(slot: &mut Option<Path>, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if slot.is_some() {
        let name = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(meta.error(format!("duplicate `{name}` argument")));
    }
    *slot = Some(meta.value()?.parse()?);
    Ok(())
}
