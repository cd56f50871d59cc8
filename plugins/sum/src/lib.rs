//! Reduce stage: sums `n` over `{"n": i64}` events. The accumulator, and so
//! the stage's output, is the bare number.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Num {
    n: i64,
}

#[reduce(combine = add)]
fn sum(acc: i64, ev: Num) -> i64 {
    acc + ev.n
}

/// Sums of different chunks add up.
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_combines() {
        let chunk = [1, 2, 3].map(|n| Num { n });
        let total = chunk.into_iter().fold(0, sum);
        assert_eq!(total, 6);
        assert_eq!(add(total, sum(0, Num { n: 4 })), 10);
    }
}
