use wasmpipe_sdk::prelude::*;

struct Params {
    factor: i64,
}

#[map]
fn scale(ev: Value, ctx: &Context<Params>) -> Value {
    ev
}

fn main() {}
