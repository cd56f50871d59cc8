use wasmpipe_sdk::prelude::*;

#[map]
struct Double;

fn main() {}
