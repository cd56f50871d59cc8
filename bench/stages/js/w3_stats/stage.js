// W3 (docs/performance.md), as plugins/service_stats in Rust: grouped by
// the manifest's `key = "/service"`, per group the number of events, the
// sum of `duration_ms` and the number of errors.
export const initial = { count: 0, sum_ms: 0, errors: 0 };

export function reduce(acc, event, ctx) {
  return {
    count: acc.count + 1,
    sum_ms: acc.sum_ms + event.duration_ms,
    errors: acc.errors + (event.level === 'error' ? 1 : 0),
  };
}

export function combine(a, b) {
  return {
    count: a.count + b.count,
    sum_ms: a.sum_ms + b.sum_ms,
    errors: a.errors + b.errors,
  };
}
