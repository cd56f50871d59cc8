use wasmpipe_sdk::prelude::*;

#[map]
fn first(ev: Value) -> Value {
    ev
}

#[map]
fn second(ev: Value) -> Value {
    ev
}

fn main() {}
