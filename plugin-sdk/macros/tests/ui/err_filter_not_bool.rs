use wasmpipe_sdk::prelude::*;

#[filter]
fn keep(ev: &Value) -> Option<bool> {
    Some(true)
}

mod unit {
    use wasmpipe_sdk::prelude::*;
    #[filter]
    fn keep(ev: &Value) {}
}

fn main() {}
