use wasmpipe_sdk::prelude::*;

#[map]
fn enrich(ev: Value, ctx: Context) -> Value {
    ev
}

mod mutable {
    use wasmpipe_sdk::prelude::*;
    #[map]
    fn enrich(ev: Value, ctx: &mut Context) -> Value {
        ev
    }
}

fn main() {}
