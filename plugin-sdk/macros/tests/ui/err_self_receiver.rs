use wasmpipe_sdk::prelude::*;

struct Stage;

impl Stage {
    #[map]
    fn double(&self, ev: Value) -> Value {
        ev
    }
}

fn main() {}
