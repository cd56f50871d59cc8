// W1's second stage, as plugins/sum in Rust: the sum of `n`.
export const initial = 0;

export function reduce(acc, event, ctx) {
  return acc + event.n;
}

export function combine(a, b) {
  return a + b;
}
