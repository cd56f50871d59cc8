use wasmpipe_sdk::prelude::*;

#[map]
async fn fetch(ev: Value) -> Value {
    ev
}

fn main() {}
