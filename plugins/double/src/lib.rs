//! Map stage: `{"n": 21}` becomes `{"n": 42}`.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct In {
    n: i64,
}

#[derive(Serialize, Debug, PartialEq)]
struct Out {
    n: i64,
}

#[map]
fn double(ev: In) -> Out {
    Out { n: ev.n * 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles() {
        assert_eq!(double(In { n: 21 }), Out { n: 42 });
        assert_eq!(double(In { n: -3 }), Out { n: -6 });
    }
}
