use wasmpipe_sdk::prelude::*;

#[reduce]
fn sum(acc: i64, ev: i64) -> i64 {
    acc + ev
}

fn main() {}
