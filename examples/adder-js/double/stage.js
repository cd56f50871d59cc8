// The adder's map stage (plugins/double in Rust): `{"n": 21}` becomes
// `{"n": 42}`. Like the Rust stage, the output holds `n` alone.
// Test: `node --test`. A thrown exception makes that one event a dead
// letter with its message.
/** A `map` stage: one event in, one out. */
export function map(event, ctx) {
  const n = event?.n;
  if (!Number.isSafeInteger(n)) throw new Error('event has no integer `n`');
  if (!Number.isSafeInteger(n * 2)) throw new Error(`${n} is too large to double`);
  return { n: n * 2 };
}
