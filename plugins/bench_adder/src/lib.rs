//! W1 of the benchmarks (docs/performance.md) as ONE stage: the sum of the
//! doubles, the same computation as `double` followed by `sum` but with one
//! JSON decode per event instead of two decodes and an encode. Measured next
//! to the two-stage pipeline to show what each stage boundary costs.

use wasmpipe_bench_model::{Num, double};
use wasmpipe_sdk::prelude::*;

#[reduce(combine = add)]
fn bench_adder(acc: i64, ev: Num) -> i64 {
    acc + double(ev).n
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_doubles() {
        assert_eq!(bench_adder(bench_adder(0, Num { n: 2 }), Num { n: 3 }), 10);
        assert_eq!(add(4, 5), 9);
    }
}
