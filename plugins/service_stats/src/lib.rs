//! Reduce stage: benchmark W3 (docs/performance.md) written the way the
//! README teaches, grouped by the manifest's `key = "/service"`: per
//! group, the number of events, the sum of `duration_ms` and the number of
//! errors.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Log {
    level: String,
    duration_ms: f64,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Stats {
    count: u64,
    sum_ms: f64,
    errors: u64,
}

#[reduce(combine = merge)]
fn service_stats(acc: &mut Stats, log: Log) {
    acc.count += 1;
    acc.sum_ms += log.duration_ms;
    acc.errors += (log.level == "error") as u64;
}

fn merge(a: Stats, b: Stats) -> Stats {
    Stats {
        count: a.count + b.count,
        sum_ms: a.sum_ms + b.sum_ms,
        errors: a.errors + b.errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sums_and_errors() {
        let mut acc = Stats::default();
        for (level, ms) in [("error", 1.5), ("info", 2.0)] {
            service_stats(
                &mut acc,
                Log {
                    level: level.into(),
                    duration_ms: ms,
                },
            );
        }
        let other = Stats {
            count: 1,
            sum_ms: 0.5,
            errors: 1,
        };
        assert_eq!(
            merge(acc, other),
            Stats {
                count: 3,
                sum_ms: 4.0,
                errors: 2
            }
        );
    }
}
