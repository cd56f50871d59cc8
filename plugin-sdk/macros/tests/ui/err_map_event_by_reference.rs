use wasmpipe_sdk::prelude::*;

#[map]
fn double(ev: &Value) -> Value {
    ev.clone()
}

mod unit {
    use wasmpipe_sdk::prelude::*;
    #[map]
    fn print(ev: Value) {
        println!("{ev}");
    }
}

fn main() {}
