use wasmpipe_sdk::prelude::*;

#[filter]
fn keep(ev: Value) -> bool {
    true
}

fn main() {}
