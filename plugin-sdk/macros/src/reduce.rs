//! `#[reduce(combine = f [, init = g] [, key = h])]`: events folded into an
//! accumulator per chunk; accumulators of different chunks combined.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, Type};

use crate::args::ReduceArgs;
use crate::common::{Glue, call, ctx_type, expand as frame};
use crate::signature::{Kind, Returns, StageFn, by_value, returns};

/// How the function folds, from its signature.
enum Shape {
    /// `fn(acc: A, event: T) -> A`.
    ByValue,
    /// `fn(acc: &mut A, event: T)`.
    InPlace,
    /// `fn(acc: &mut A, event: T) -> Result<(), E>`.
    InPlaceFallible,
}

pub(crate) fn expand(attr: TokenStream, func: ItemFn) -> syn::Result<TokenStream> {
    let args = ReduceArgs::parse(attr)?;
    let stage = StageFn::new(Kind::Reduce, func, 2)?;
    let (acc_ty, event_ty) = (&stage.args[0], &stage.args[1]);
    by_value(Kind::Reduce, "event", event_ty)?;
    let (acc_inner, in_place) = match acc_ty {
        Type::Reference(r) if r.mutability.is_some() => (&*r.elem, true),
        Type::Reference(_) => {
            return Err(syn::Error::new_spanned(
                acc_ty,
                "`#[reduce]` takes the accumulator by value (`acc: A`, returning the new one) or as `acc: &mut A`",
            ));
        }
        _ => (acc_ty, false),
    };
    let shape = match (in_place, returns(&stage.func.sig.output)) {
        (false, Returns::Value(_)) => Shape::ByValue,
        (true, Returns::Unit) => Shape::InPlace,
        (true, Returns::Result(_)) => Shape::InPlaceFallible,
        (false, Returns::Result(ty)) => {
            return Err(syn::Error::new_spanned(
                ty,
                "a fallible `#[reduce]` takes the accumulator as `acc: &mut A` and returns `Result<(), E>`, \
                 so that the accumulator survives a failing event",
            ));
        }
        (false, Returns::Unit) => {
            return Err(syn::Error::new(
                stage.sig_span(),
                "a `#[reduce]` taking `acc: A` returns the new accumulator: `fn(acc: A, event: T) -> A`; \
                 to update it in place, take `acc: &mut A`",
            ));
        }
        (true, Returns::Value(ty)) => {
            return Err(syn::Error::new_spanned(
                ty,
                "a `#[reduce]` taking `acc: &mut A` returns `()` or `Result<(), E>`",
            ));
        }
    };

    let s = Span::mixed_site();
    let call = call(&stage, 2, &["__wp_acc", "__wp_event"]);
    let ctx_ty = ctx_type(&stage, 2);
    let fold = match shape {
        Shape::ByValue => {
            quote_spanned!(s=> __wp::ByValue(|__wp_acc: #acc_ty, __wp_event: #event_ty, __wp_ctx: #ctx_ty| #call))
        }
        Shape::InPlaceFallible => {
            quote_spanned!(s=> __wp::InPlace(|__wp_acc: #acc_ty, __wp_event: #event_ty, __wp_ctx: #ctx_ty| #call))
        }
        Shape::InPlace => quote_spanned! {s=>
            __wp::InPlace(|__wp_acc: #acc_ty, __wp_event: #event_ty, __wp_ctx: #ctx_ty| {
                #call;
                ::core::result::Result::Ok::<(), ::core::convert::Infallible>(())
            })
        },
    };
    let init = match &args.init {
        Some(init) => quote!(#init),
        None => {
            quote_spanned!(acc_inner.span()=> <#acc_inner as ::core::default::Default>::default)
        }
    };
    let key = match &args.key {
        Some(key) => quote_spanned! {key.span()=>
            ::core::option::Option::Some(|__wp_event: &#event_ty, __wp_key: &mut ::std::string::String| {
                __wp::write_key(&#key(__wp_event), __wp_key)
            })
        },
        None => quote_spanned!(s=> ::core::option::Option::None::<__wp::NoKey<#event_ty>>),
    };
    let combine = &args.combine;
    let events = quote_spanned!(event_ty.span()=> __wp::events());
    let accumulators = quote_spanned!(acc_inner.span()=> __wp::accumulators());
    let functions = quote_spanned! {s=>
        #[allow(dead_code)]
        fn __wasmpipe_reduce(__wp_rt: &__wp::Runtime, __wp_meta: &[u8], __wp_acc: &[u8], __wp_input: &[u8]) -> i32 {
            __wp_rt.reduce(__wp_meta, __wp_acc, __wp_input, #events, #accumulators, #init, #key, #fold)
        }

        #[allow(dead_code)]
        fn __wasmpipe_combine(__wp_rt: &__wp::Runtime, __wp_a: &[u8], __wp_b: &[u8]) -> i32 {
            __wp_rt.combine(__wp_a, __wp_b, #accumulators, #init, #combine)
        }
    };
    let exports = quote_spanned! {s=>
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn wasmpipe_reduce(
            __wp_ctx_ptr: i32, __wp_ctx_len: i32, __wp_acc_ptr: i32, __wp_acc_len: i32, __wp_in_ptr: i32, __wp_in_len: i32,
        ) -> i32 {
            // SAFETY: the host passes buffers from `wasmpipe_alloc`, as the ABI requires.
            unsafe { __wp::export::reduce(__wp_ctx_ptr, __wp_ctx_len, __wp_acc_ptr, __wp_acc_len, __wp_in_ptr, __wp_in_len, __wasmpipe_reduce) }
        }

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn wasmpipe_combine(__wp_a_ptr: i32, __wp_a_len: i32, __wp_b_ptr: i32, __wp_b_len: i32) -> i32 {
            // SAFETY: the host passes buffers from `wasmpipe_alloc`, as the ABI requires.
            unsafe { __wp::export::combine(__wp_a_ptr, __wp_a_len, __wp_b_ptr, __wp_b_len, __wasmpipe_combine) }
        }
    };
    let key_fn = args.key.as_ref().map(|k| {
        k.segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::")
    });
    Ok(frame(
        Kind::Reduce,
        &stage,
        2,
        Glue {
            functions,
            exports,
            key_fn,
        },
    ))
}
