//! The baseline: each workload computed by a plain Rust program over the
//! whole input in memory, with serde_json into borrowed typed structs, on
//! `threads` threads that each take a contiguous share of the lines.

use std::collections::BTreeMap;
use wasmpipe_bench_model::{Log, Num, Sample, Stats, add_sample, double, enrich, merge};

/// Splits `data` into `n` parts at line boundaries.
pub fn split_lines(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        let mut end = if i == n {
            data.len()
        } else {
            (data.len() * i / n).max(start)
        };
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        parts.push(&data[start..end]);
        start = end;
    }
    parts
}

fn lines(part: &[u8]) -> impl Iterator<Item = &[u8]> {
    part.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

fn parallel<'a, T: Send>(
    data: &'a [u8],
    threads: usize,
    f: impl Fn(&'a [u8]) -> T + Sync,
) -> Vec<T> {
    let parts = split_lines(data, threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = parts.iter().map(|p| s.spawn(|| f(p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    })
}

/// W1: the sum of `n * 2`, as wasmpipe's adder prints it.
pub fn adder(data: &[u8], threads: usize) -> Vec<u8> {
    let sums = parallel(data, threads, |part| {
        lines(part)
            .map(|l| double(serde_json::from_slice::<Num>(l).expect("valid W1 line")).n)
            .sum::<i64>()
    });
    format!("{}\n", sums.iter().sum::<i64>()).into_bytes()
}

/// W2: every event enriched, as JSON lines in input order, written to `out`.
///
/// Each thread writes its share into its own buffer; the buffers are then
/// written one after the other (no concatenation, which would copy them).
pub fn enrich_all(
    data: &[u8],
    threads: usize,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let outs = parallel(data, threads, |part| {
        let mut out = Vec::with_capacity(part.len() * 3 / 2);
        for l in lines(part) {
            let log: Log<&str> = serde_json::from_slice(l).expect("valid W2 line");
            serde_json::to_writer(&mut out, &enrich(log, crate::RECEIVED_AT, crate::HOST))
                .expect("serializes");
            out.push(b'\n');
        }
        out
    });
    for o in outs {
        out.write_all(&o)?;
    }
    Ok(())
}

/// W3: per service, count, sum of durations and errors, one
/// `{"key":..,"value":..}` line per service in key order.
pub fn service_stats(data: &[u8], threads: usize) -> Vec<u8> {
    let maps = parallel(data, threads, |part| {
        let mut m: BTreeMap<&str, Stats> = BTreeMap::new();
        for l in lines(part) {
            let s: Sample<&str> = serde_json::from_slice(l).expect("valid W2 line");
            add_sample(m.entry(s.service).or_default(), &s);
        }
        m
    });
    let mut total: BTreeMap<&str, Stats> = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            let e = total.entry(k).or_default();
            *e = merge(*e, v);
        }
    }
    let mut out = Vec::new();
    for (k, v) in total {
        serde_json::to_writer(&mut out, &serde_json::json!({ "key": k, "value": v }))
            .expect("serializes");
        out.push(b'\n');
    }
    out
}
