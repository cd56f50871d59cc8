//! Reading a stage function's signature: what every kind requires of it, and
//! the pieces (argument types, fallibility) the generators need.
//!
//! Every misuse becomes a `syn::Error` spanned at the offending tokens; where
//! one function has several problems they are all reported at once.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type, TypeReference};

/// The stage kinds, one attribute each.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Map,
    Filter,
    FlatMap,
    Reduce,
}

impl Kind {
    /// The attribute's name, as written by users and in the ABI's kinds.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::Filter => "filter",
            Kind::FlatMap => "flat_map",
            Kind::Reduce => "reduce",
        }
    }

    /// The accepted shapes, quoted in argument-count errors.
    fn shapes(self) -> &'static str {
        match self {
            Kind::Map => "`fn(event: T) -> U` or `fn(event: T, ctx: &Context<P>) -> U`",
            Kind::Filter => "`fn(event: &T) -> bool` or `fn(event: &T, ctx: &Context<P>) -> bool`",
            Kind::FlatMap => {
                "`fn(event: T) -> impl IntoIterator<Item = U>` or `fn(event: T, ctx: &Context<P>) -> impl IntoIterator<Item = U>`"
            }
            Kind::Reduce => {
                "`fn(acc: A, event: T) -> A` or `fn(acc: &mut A, event: T) [-> Result<(), E>]`, with an optional last `ctx: &Context<P>`"
            }
        }
    }
}

/// What a return type is, as far as the glue cares.
pub(crate) enum Returns<'a> {
    /// No return type, or `()`.
    Unit,
    /// `Result<..>` (any path ending in `Result`, aliases included): `Err`
    /// fails the event.
    Result(&'a Type),
    /// Anything else.
    Value(&'a Type),
}

pub(crate) fn returns(output: &ReturnType) -> Returns<'_> {
    let ty = match output {
        ReturnType::Default => return Returns::Unit,
        ReturnType::Type(_, ty) => &**ty,
    };
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => Returns::Unit,
        Type::Path(p)
            if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Result") =>
        {
            Returns::Result(ty)
        }
        _ => Returns::Value(ty),
    }
}

/// A stage function that passed the checks every kind shares.
pub(crate) struct StageFn {
    pub(crate) func: ItemFn,
    /// The types of its arguments, in order.
    pub(crate) args: Vec<Type>,
}

impl StageFn {
    /// Checks what every kind requires: a plain, non-generic free function
    /// taking `min..=min + 1` arguments, the optional last one a context
    /// reference.
    pub(crate) fn new(kind: Kind, func: ItemFn, min: usize) -> syn::Result<Self> {
        let sig = &func.sig;
        let attr = kind.name();
        let mut errors = Errors::default();
        if let Some(t) = &sig.asyncness {
            errors.push(syn::Error::new(t.span, format!("`#[{attr}]` cannot be applied to an `async fn`: stages run to completion once per chunk")));
        }
        if let Some(t) = &sig.unsafety {
            errors.push(syn::Error::new(t.span, format!("`#[{attr}]` cannot be applied to an `unsafe fn`: the generated code calls it for every event")));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(syn::Error::new_spanned(
                &sig.generics,
                format!("`#[{attr}]` functions cannot be generic: the event and output types must be concrete to be decoded and encoded"),
            ));
        }
        if let Some(v) = &sig.variadic {
            errors.push(syn::Error::new_spanned(
                v,
                format!("`#[{attr}]` functions cannot be variadic"),
            ));
        }
        let mut args = Vec::new();
        for arg in &sig.inputs {
            match arg {
                FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                    r,
                    format!("`#[{attr}]` functions cannot take `self`: use a free function"),
                )),
                FnArg::Typed(t) => {
                    if let Some(impl_trait) = find_impl_trait(&t.ty) {
                        errors.push(syn::Error::new_spanned(
                            impl_trait,
                            format!("`#[{attr}]` functions cannot take `impl Trait` arguments: name a concrete type"),
                        ));
                    }
                    args.push((*t.ty).clone());
                }
            }
        }
        errors.finish()?;

        if args.len() < min || args.len() > min + 1 {
            let found = args.len();
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "`#[{attr}]` functions take {min} or {} arguments, found {found}; expected {}",
                    min + 1,
                    kind.shapes()
                ),
            ));
        }
        if let Some(ctx) = args.get(min)
            && !matches!(
                ctx,
                Type::Reference(TypeReference {
                    mutability: None,
                    ..
                })
            )
        {
            return Err(syn::Error::new_spanned(
                ctx,
                "the last argument of a stage function is its context and must be a shared reference: \
                 `ctx: &Context<P>`",
            ));
        }
        Ok(StageFn { func, args })
    }

    /// The context argument's type, when the function takes one.
    pub(crate) fn ctx(&self, min: usize) -> Option<&Type> {
        self.args.get(min)
    }

    /// Span to report problems with the whole signature at.
    pub(crate) fn sig_span(&self) -> Span {
        self.func.sig.span()
    }
}

/// An `impl Trait` anywhere in `ty` (`&impl Debug`, `Vec<impl Debug>`): an
/// anonymous generic parameter, which the glue cannot name.
fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Reference(r) => find_impl_trait(&r.elem),
        Type::Slice(s) => find_impl_trait(&s.elem),
        Type::Array(a) => find_impl_trait(&a.elem),
        Type::Ptr(p) => find_impl_trait(&p.elem),
        Type::Paren(p) => find_impl_trait(&p.elem),
        Type::Group(g) => find_impl_trait(&g.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_impl_trait),
        Type::Path(p) => p
            .path
            .segments
            .iter()
            .find_map(|segment| match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::Type(t) => find_impl_trait(t),
                        _ => None,
                    })
                }
                _ => None,
            }),
        _ => None,
    }
}

/// Requires `ty` to be taken by value: the event is decoded into an owned
/// value that the function then owns.
pub(crate) fn by_value(kind: Kind, what: &str, ty: &Type) -> syn::Result<()> {
    if let Type::Reference(_) = ty {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "`#[{}]` takes the {what} by value: `{what}: T`",
                kind.name()
            ),
        ));
    }
    Ok(())
}

/// Collects several errors into one compile error per problem.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
