use wasmpipe_sdk::prelude::*;

#[map(fast)]
fn double(ev: Value) -> Value {
    ev
}

fn main() {}
