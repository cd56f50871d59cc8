use wasmpipe_sdk::prelude::*;

struct In {
    n: i64,
}

#[map]
fn double(ev: In) -> Value {
    Value::from(ev.n * 2)
}

fn main() {}
