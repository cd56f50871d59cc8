//! Reduce stage: benchmark W3 (docs/performance.md) with the group key
//! computed by a key function instead of the manifest's `key`: per
//! `service`, the number of events, the sum of `duration_ms` and the number
//! of errors.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Log {
    service: String,
    level: String,
    duration_ms: f64,
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
struct Stats {
    count: u64,
    sum_ms: f64,
    errors: u64,
}

#[reduce(combine = merge, key = service)]
fn service_stats_by_key(acc: &mut Stats, log: Log) {
    acc.count += 1;
    acc.sum_ms += log.duration_ms;
    acc.errors += (log.level == "error") as u64;
}

fn service(log: &Log) -> &str {
    &log.service
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
    fn groups_by_service() {
        let log = Log {
            service: "auth".into(),
            level: "error".into(),
            duration_ms: 2.5,
        };
        assert_eq!(service(&log), "auth");
        let mut acc = Stats::default();
        service_stats_by_key(&mut acc, log);
        assert_eq!(
            acc,
            Stats {
                count: 1,
                sum_ms: 2.5,
                errors: 1
            }
        );
    }
}
