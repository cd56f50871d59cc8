//! `#[map]` (one event in, one event out) and `#[flat_map]` (one event
//! in, any number out): the same glue but for the runtime entry point and
//! what the function must return.

use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;
use syn::ItemFn;

use crate::args::no_args;
use crate::common::{Glue, call, codecs, ctx_type, expand as frame, process_export};
use crate::signature::{Kind, Returns, StageFn, by_value, returns};

/// Expands `#[map]` or `#[flat_map]` (`kind`).
pub(crate) fn expand(kind: Kind, attr: TokenStream, func: ItemFn) -> syn::Result<TokenStream> {
    let (entry, returns_what) = match kind {
        Kind::Map => (
            quote::format_ident!("map"),
            "`#[map]` functions return the output event: `-> U` or `-> Result<U, E>`",
        ),
        Kind::FlatMap => (
            quote::format_ident!("flat_map"),
            "`#[flat_map]` functions return their outputs: `-> impl IntoIterator<Item = U>` or \
             `-> Result<impl IntoIterator<Item = U>, E>`",
        ),
        _ => unreachable!("map::expand expands #[map] and #[flat_map] only"),
    };
    no_args(kind, attr)?;
    let stage = StageFn::new(kind, func, 1)?;
    let event_ty = &stage.args[0];
    by_value(kind, "event", event_ty)?;
    let call = call(&stage, 1, &["__wp_event"]);
    let body = match returns(&stage.func.sig.output) {
        Returns::Unit => {
            return Err(syn::Error::new(stage.sig_span(), returns_what));
        }
        Returns::Result(_) => call,
        Returns::Value(_) => {
            quote_spanned!(Span::mixed_site()=> ::core::result::Result::Ok::<_, ::core::convert::Infallible>(#call))
        }
    };
    let ctx_ty = ctx_type(&stage, 1);
    let (events, outputs) = codecs(event_ty, &stage.func.sig.output);
    let functions = quote_spanned! {Span::mixed_site()=>
        #[allow(dead_code)]
        fn __wasmpipe_process(__wp_rt: &__wp::Runtime, __wp_meta: &[u8], __wp_input: &[u8]) -> i32 {
            __wp_rt.#entry(__wp_meta, __wp_input, #events, #outputs, |__wp_event: #event_ty, __wp_ctx: #ctx_ty| #body)
        }
    };
    Ok(frame(
        kind,
        &stage,
        1,
        Glue {
            functions,
            exports: process_export(),
            key_fn: None,
        },
    ))
}
