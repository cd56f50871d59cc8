use wasmpipe_sdk::prelude::*;

fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[reduce(combine = add, initial = zero)]
fn sum(acc: i64, ev: i64) -> i64 {
    acc + ev
}

mod duplicate {
    use wasmpipe_sdk::prelude::*;
    #[reduce(combine = super::add, combine = super::add)]
    fn sum(acc: i64, ev: i64) -> i64 {
        acc + ev
    }
}

fn main() {}
