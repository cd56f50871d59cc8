use wasmpipe_sdk::prelude::*;

#[map]
unsafe fn double(ev: Value) -> Value {
    ev
}

fn main() {}
