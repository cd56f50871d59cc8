//! W3 of the benchmarks (docs/performance.md): per service, the number of
//! events, the sum of `duration_ms` and the number of errors. The fold is
//! `wasmpipe_bench_model::add_sample`, the same code the native baseline runs.

use wasmpipe_bench_model::{Sample, Stats, add_sample, merge};
use wasmpipe_sdk::prelude::*;

#[reduce(combine = merge, key = service)]
fn bench_stats(acc: &mut Stats, s: Sample<String>) {
    add_sample(acc, &s);
}

fn service(s: &Sample<String>) -> &str {
    &s.service
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sums_and_errors() {
        let mut acc = Stats::default();
        bench_stats(
            &mut acc,
            Sample {
                service: "a".into(),
                level: "error".into(),
                duration_ms: 5,
            },
        );
        bench_stats(
            &mut acc,
            Sample {
                service: "a".into(),
                level: "info".into(),
                duration_ms: 7,
            },
        );
        assert_eq!(
            acc,
            Stats {
                count: 2,
                duration_ms: 12,
                errors: 1
            }
        );
        assert_eq!(
            service(&Sample {
                service: "x".into(),
                level: String::new(),
                duration_ms: 0
            }),
            "x"
        );
    }
}
