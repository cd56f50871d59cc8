// W1's first stage (docs/performance.md), as plugins/double in Rust:
// `{"n": 21}` becomes `{"n": 42}`.
export function map(event, ctx) {
  return { n: event.n * 2 };
}
