use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct In {
    n: i64,
}

struct Out {
    n: i64,
}

#[map]
fn double(ev: In) -> Out {
    Out { n: ev.n * 2 }
}

fn main() {}
