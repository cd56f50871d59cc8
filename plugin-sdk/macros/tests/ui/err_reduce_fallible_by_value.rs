use wasmpipe_sdk::prelude::*;

fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[reduce(combine = add)]
fn sum(acc: i64, ev: i64) -> Result<i64, String> {
    Ok(acc + ev)
}

mod no_return {
    use wasmpipe_sdk::prelude::*;
    #[reduce(combine = super::add)]
    fn sum(acc: i64, ev: i64) {}
}

mod in_place_returns_value {
    use wasmpipe_sdk::prelude::*;
    #[reduce(combine = super::add)]
    fn sum(acc: &mut i64, ev: i64) -> i64 {
        *acc + ev
    }
}

mod shared_acc {
    use wasmpipe_sdk::prelude::*;
    #[reduce(combine = super::add)]
    fn sum(acc: &i64, ev: i64) -> i64 {
        *acc + ev
    }
}

fn main() {}
