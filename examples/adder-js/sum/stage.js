// The adder's reduce stage (plugins/sum in Rust): sums `n` over `{"n": ...}`
// events. The accumulator, and so the stage's output, is the bare number.
// Test: `node --test`. A thrown exception makes that one event a dead
// letter with its message.
/** A `reduce` stage: the sum starts at 0. */
export const initial = 0;

export function reduce(acc, event, ctx) {
  const n = event?.n;
  if (!Number.isSafeInteger(n)) throw new Error('event has no integer `n`');
  return add(acc, n);
}

/** Sums of different chunks (parallel workers) add up. */
export function combine(a, b) {
  return add(a, b);
}

function add(a, b) {
  const sum = a + b;
  if (!Number.isSafeInteger(sum)) throw new Error(`the sum ${a} + ${b} is too large to be exact`);
  return sum;
}
