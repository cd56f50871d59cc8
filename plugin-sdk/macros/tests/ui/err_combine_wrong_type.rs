use wasmpipe_sdk::prelude::*;

fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[reduce(combine = add)]
fn sum(acc: i64, ev: i64) -> i64 {
    acc + ev
}

fn main() {}
