//! W4 as a plain native program (docs/performance.md): per service and
//! per one-minute tumbling window of `ts`, the count of events, the sum of
//! `duration_ms` and the number of errors, over JSON lines whose times are
//! out of order by less than the lateness (so no event is late: the
//! driver checks wasmpipe finds none either). Written the way the
//! reference writes W3: the input read whole, split at newlines into one
//! part per thread, serde_json into borrowed structs, a hash map per
//! thread, merged at the end; the times parsed by hand (the format is
//! fixed), which no library beats.
//!
//! Run with: w4native FILE --threads N   (prints the windows as wasmpipe does)

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;

const SIZE: i64 = 60_000;

#[derive(Deserialize)]
struct Log<'a> {
    ts: &'a str,
    level: &'a str,
    service: &'a str,
    duration_ms: f64,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    count: u64,
    sum_ms: f64,
    errors: u64,
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` to epoch milliseconds.
fn millis(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(&b[r]).ok()?.parse().ok()
    };
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

fn stamp(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: w4native FILE --threads N")?;
    let mut threads = 1usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            _ => bail!("unknown argument `{a}`"),
        }
    }
    let data = std::fs::read(&path).with_context(|| format!("cannot read {path}"))?;
    // One part per thread, cut at newlines.
    let mut cuts = vec![0];
    for t in 1..threads {
        let at = data.len() * t / threads;
        let nl = data[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| at + p + 1);
        cuts.push(nl.max(*cuts.last().unwrap()));
    }
    cuts.push(data.len());
    let parts: Vec<HashMap<(i64, &str), Stats>> = std::thread::scope(|s| {
        let handles: Vec<_> = cuts
            .windows(2)
            .map(|w| {
                let part = &data[w[0]..w[1]];
                s.spawn(move || -> Result<HashMap<(i64, &str), Stats>> {
                    let mut m: HashMap<(i64, &str), Stats> = HashMap::new();
                    for line in part.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        let log: Log = serde_json::from_slice(line)?;
                        let t = millis(log.ts).context("bad ts")?;
                        let st = m
                            .entry((t.div_euclid(SIZE) * SIZE, log.service))
                            .or_default();
                        st.count += 1;
                        st.sum_ms += log.duration_ms;
                        st.errors += u64::from(log.level == "error");
                    }
                    Ok(m)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut all: HashMap<(i64, &str), Stats> = HashMap::new();
    for p in parts {
        for (k, v) in p {
            let e = all.entry(k).or_default();
            e.count += v.count;
            e.sum_ms += v.sum_ms;
            e.errors += v.errors;
        }
    }
    let mut rows: Vec<_> = all.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for ((start, service), s) in rows {
        let _ = writeln!(
            out,
            "{{\"window\":{{\"start\":\"{}\",\"end\":\"{}\"}},\"key\":{},\"value\":{{\"count\":{},\"sum_ms\":{},\"errors\":{}}}}}",
            stamp(start),
            stamp(start + SIZE),
            serde_json::to_string(service)?,
            s.count,
            serde_json::to_string(&s.sum_ms)?,
            s.errors
        );
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_round_trip() {
        let t = super::millis("2026-11-27T10:00:00.002Z").unwrap();
        assert_eq!(super::stamp(t), "2026-11-27T10:00:00.002Z");
        assert_eq!(super::millis("1970-01-01T00:00:01.000Z"), Some(1000));
    }
}
