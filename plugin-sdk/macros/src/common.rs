//! What every kind generates around the user's function: the one-stage
//! marker, the stage description, the init glue and the exports shared by all
//! kinds.
//!
//! Glue functions compile on every target, so a type error in a stage (an
//! output that is not `Serialize`, a `combine` of the wrong type) shows in a
//! native `cargo check` or `cargo test`. Only the `extern "C"` exports are
//! wasm32-only.
//!
//! Generated code is quoted at `Span::mixed_site()`, so its local variables
//! cannot capture or shadow the user's. Locals also carry a `__wp_` prefix:
//! hygiene does not stop an identifier in a pattern from resolving to a
//! call-site item, and a unit struct or constant named `event` would turn a
//! parameter `event` into a pattern.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, format_ident, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ReturnType, Type};

use crate::signature::{Kind, StageFn};

/// The kind-specific parts of the expansion.
pub(crate) struct Glue {
    /// Glue functions, compiled on every target.
    pub(crate) functions: TokenStream,
    /// `extern "C"` exports, wasm32-only.
    pub(crate) exports: TokenStream,
    /// For a reduce with `key = fn`, that function's name.
    pub(crate) key_fn: Option<String>,
}

/// The type of the stage function's context argument, or the context of a
/// function that takes none.
pub(crate) fn ctx_type(stage: &StageFn, min: usize) -> TokenStream {
    match stage.ctx(min) {
        Some(ty) => ty.to_token_stream(),
        None => quote_spanned!(Span::mixed_site()=> &::wasmpipe_sdk::Context<__wp::NoParams>),
    }
}

/// A call of the stage function with the named leading arguments and, when
/// it takes one, the context `ctx`; all are locals of the generated code.
pub(crate) fn call(stage: &StageFn, min: usize, args: &[&str]) -> TokenStream {
    let name = &stage.func.sig.ident;
    let mut args: Vec<Ident> = args
        .iter()
        .map(|a| Ident::new(a, Span::mixed_site()))
        .collect();
    if stage.ctx(min).is_some() {
        args.push(Ident::new("__wp_ctx", Span::mixed_site()));
    }
    quote_spanned!(Span::mixed_site()=> #name(#(#args),*))
}

/// The codecs of a stage's events and outputs, spanned at the event type and
/// the return type: a missing `Deserialize` or `Serialize` is reported there.
pub(crate) fn codecs(event_ty: &Type, output: &ReturnType) -> (TokenStream, TokenStream) {
    let events = quote_spanned!(event_ty.span()=> __wp::events());
    let output_span = match output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => output.span(),
    };
    let outputs = quote_spanned!(output_span=> __wp::outputs());
    (events, outputs)
}

/// `PhantomData<P>` for the stage's params type `P`, read off the context
/// argument's type whatever its spelling.
fn params(stage: &StageFn, min: usize) -> TokenStream {
    match stage.ctx(min) {
        Some(ty) => params_of(ty),
        None => quote_spanned!(Span::mixed_site()=> ::core::marker::PhantomData::<__wp::NoParams>),
    }
}

fn params_of(ctx: &Type) -> TokenStream {
    // Spanned at the context type, so that "`Params: Deserialize` is not
    // satisfied" points at the user's `&Context<Params>`.
    quote_spanned!(ctx.span()=> __wp::params_of(|_: #ctx| {}))
}

/// The full expansion of a stage: the function unchanged, then the marker and
/// the glue in an anonymous const block.
pub(crate) fn expand(kind: Kind, stage: &StageFn, min: usize, glue: Glue) -> TokenStream {
    let func = &stage.func;
    let ident = &func.sig.ident;
    let name = ident.unraw().to_string();
    let kind_const = format_ident!("{}", kind.name().to_uppercase());
    let key_fn = match &glue.key_fn {
        Some(k) => quote_spanned!(Span::mixed_site()=> ::core::option::Option::Some(#k)),
        None => quote_spanned!(Span::mixed_site()=> ::core::option::Option::None),
    };
    let params = params(stage, min);
    let Glue {
        functions, exports, ..
    } = glue;
    // One stage per module: a second stage defines this name again, and the
    // error points at the second stage's name. Stages in different modules of
    // one crate collide on their `no_mangle` exports instead.
    let marker = quote_spanned! {ident.span()=>
        #[doc(hidden)]
        #[allow(dead_code, non_camel_case_types)]
        struct __wasmpipe_stage;
    };
    quote_spanned! {Span::mixed_site()=>
        #func

        #marker

        const _: () = {
            use ::wasmpipe_sdk::__private as __wp;

            static __WASMPIPE_STAGE: __wp::StageInfo = __wp::StageInfo {
                kind: __wp::kind::#kind_const,
                name: #name,
                key_fn: #key_fn,
            };

            #[allow(dead_code)]
            fn __wasmpipe_init(__wp_rt: &__wp::Runtime, __wp_cfg: &[u8]) -> i32 {
                __wp_rt.init(&__WASMPIPE_STAGE, __wp_cfg, #params)
            }

            #functions

            #[cfg(target_arch = "wasm32")]
            #[unsafe(no_mangle)]
            pub extern "C" fn _initialize() {
                __wp::export::initialize()
            }

            #[cfg(target_arch = "wasm32")]
            #[unsafe(no_mangle)]
            pub extern "C" fn wasmpipe_descriptor() -> i32 {
                __wp::export::descriptor()
            }

            #[cfg(target_arch = "wasm32")]
            #[unsafe(no_mangle)]
            pub extern "C" fn wasmpipe_alloc(__wp_len: i32) -> i32 {
                __wp::export::alloc(__wp_len)
            }

            #[cfg(target_arch = "wasm32")]
            #[unsafe(no_mangle)]
            pub extern "C" fn wasmpipe_metadata() -> i32 {
                __wp::export::metadata(&__WASMPIPE_STAGE)
            }

            #[cfg(target_arch = "wasm32")]
            #[unsafe(no_mangle)]
            pub extern "C" fn wasmpipe_init(__wp_cfg_ptr: i32, __wp_cfg_len: i32) -> i32 {
                // SAFETY: the host passes a buffer from `wasmpipe_alloc`, as the ABI requires.
                unsafe { __wp::export::init(__wp_cfg_ptr, __wp_cfg_len, __wasmpipe_init) }
            }

            #exports
        };
    }
}

/// `wasmpipe_process`, the export of map, filter and flat_map stages, calling
/// the glue function `__wasmpipe_process`.
pub(crate) fn process_export() -> TokenStream {
    quote_spanned! {Span::mixed_site()=>
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn wasmpipe_process(__wp_ctx_ptr: i32, __wp_ctx_len: i32, __wp_in_ptr: i32, __wp_in_len: i32) -> i32 {
            // SAFETY: the host passes buffers from `wasmpipe_alloc`, as the ABI requires.
            unsafe { __wp::export::process(__wp_ctx_ptr, __wp_ctx_len, __wp_in_ptr, __wp_in_len, __wasmpipe_process) }
        }
    }
}
