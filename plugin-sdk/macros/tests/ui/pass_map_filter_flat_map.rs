//! Every accepted shape of map, filter and flat_map. Stages sit in separate
//! modules: one stage per module, and the exports only exist on wasm32.
use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
pub struct In {
    n: i64,
}

#[derive(Serialize)]
pub struct Out {
    n: i64,
}

#[derive(Deserialize)]
pub struct Params {
    factor: i64,
}

mod plain {
    use super::*;
    #[map]
    pub fn double(ev: In) -> Out {
        Out { n: ev.n * 2 }
    }
}

mod fallible_with_ctx {
    use super::*;
    #[map]
    pub fn scale(ev: In, ctx: &Context<Params>) -> Result<Out, String> {
        ev.n.checked_mul(ctx.params().factor).map(|n| Out { n }).ok_or_else(|| "overflow".to_owned())
    }
}

mod untyped {
    use super::*;
    // `&Context` reads the params as a `Value`.
    #[map]
    fn tag(mut ev: Value, ctx: &Context) -> Value {
        ev["stage"] = ctx.stage().into();
        ev
    }
}

mod keep {
    use super::*;
    #[filter]
    fn positive(ev: &In) -> bool {
        ev.n > 0
    }
}

mod keep_with_ctx {
    use super::*;
    #[filter]
    fn above(ev: &In, ctx: &Context<Params>) -> bool {
        ev.n > ctx.params().factor
    }
}

mod split {
    use super::*;
    #[flat_map]
    fn repeat(ev: In) -> Vec<Out> {
        (0..ev.n).map(|n| Out { n }).collect()
    }
}

mod split_fallible {
    use super::*;
    #[flat_map]
    fn maybe(ev: In, _ctx: &Context) -> Result<Option<Out>, std::fmt::Error> {
        Ok((ev.n > 0).then_some(Out { n: ev.n }))
    }
}

mod names {
    use super::*;
    // Generated locals cannot collide with the user's names, even with
    // items that would turn a parameter into a pattern.
    #[allow(non_camel_case_types, dead_code)]
    struct event;
    #[allow(non_upper_case_globals, dead_code)]
    const ctx: u8 = 0;
    #[map]
    fn input(ev: In) -> Out {
        Out { n: ev.n }
    }
}

fn main() {
    // The functions stay plain Rust, callable as written.
    assert_eq!(plain::double(In { n: 2 }).n, 4);
    let ctx = Context::new("scale", Params { factor: 3 });
    assert_eq!(fallible_with_ctx::scale(In { n: 2 }, &ctx).map(|o| o.n), Ok(6));
}
