//! `#[filter]`: one event in, the same event (byte for byte) or nothing out.

use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::{ItemFn, Type, TypeReference};

use crate::args::no_args;
use crate::common::{Glue, call, ctx_type, expand as frame, process_export};
use crate::signature::{Kind, Returns, StageFn, returns};

pub(crate) fn expand(attr: TokenStream, func: ItemFn) -> syn::Result<TokenStream> {
    no_args(Kind::Filter, attr)?;
    let stage = StageFn::new(Kind::Filter, func, 1)?;
    let event_ty = &stage.args[0];
    // By reference: the function only looks, and what passes is the original
    // line, not a re-encoding of a value the function could have changed.
    if !matches!(
        event_ty,
        Type::Reference(TypeReference {
            mutability: None,
            ..
        })
    ) {
        return Err(syn::Error::new_spanned(
            event_ty,
            "`#[filter]` takes the event by reference: `event: &T`",
        ));
    }
    match returns(&stage.func.sig.output) {
        Returns::Value(Type::Path(p)) if p.qself.is_none() && p.path.is_ident("bool") => {}
        Returns::Value(ty) | Returns::Result(ty) => {
            return Err(syn::Error::new_spanned(
                ty,
                "`#[filter]` functions return `bool`: whether to keep the event",
            ));
        }
        Returns::Unit => {
            return Err(syn::Error::new(
                stage.sig_span(),
                "`#[filter]` functions return `bool`: whether to keep the event",
            ));
        }
    }
    let call = call(&stage, 1, &["__wp_event"]);
    let ctx_ty = ctx_type(&stage, 1);
    let events = quote_spanned!(event_ty.span()=> __wp::events());
    let functions = quote_spanned! {Span::mixed_site()=>
        #[allow(dead_code)]
        fn __wasmpipe_process(__wp_rt: &__wp::Runtime, __wp_meta: &[u8], __wp_input: &[u8]) -> i32 {
            __wp_rt.filter(__wp_meta, __wp_input, #events, |__wp_event: #event_ty, __wp_ctx: #ctx_ty| #call)
        }
    };
    Ok(frame(
        Kind::Filter,
        &stage,
        1,
        Glue {
            functions,
            exports: process_export(),
            key_fn: None,
        },
    ))
}
