use wasmpipe_sdk::prelude::*;

mod none {
    use wasmpipe_sdk::prelude::*;
    #[map]
    fn nothing() -> Value {
        Value::Null
    }
}

mod three {
    use wasmpipe_sdk::prelude::*;
    #[flat_map]
    fn many(ev: Value, ctx: &Context, extra: u8) -> Vec<Value> {
        vec![ev]
    }
}

mod one {
    use wasmpipe_sdk::prelude::*;
    #[reduce(combine = add)]
    fn sum(acc: i64) -> i64 {
        acc
    }
}

fn main() {}
