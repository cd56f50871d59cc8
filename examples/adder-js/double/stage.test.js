import test from 'node:test';
import assert from 'node:assert/strict';
import { map } from './stage.js';

const ctx = { stage: 'test', params: {}, meta: {}, index: 0 };

test('doubles n', () => {
  assert.deepEqual(map({ n: 21 }, ctx), { n: 42 });
  assert.deepEqual(map({ n: -3 }, ctx), { n: -6 });
});

test('keeps n alone, as the Rust stage does', () => {
  assert.deepEqual(map({ n: 1, other: 'x' }, ctx), { n: 2 });
});

test('refuses what is not an integer n', () => {
  assert.throws(() => map({}, ctx), /no integer `n`/);
  assert.throws(() => map({ n: 1.5 }, ctx), /no integer `n`/);
  assert.throws(() => map({ n: '2' }, ctx), /no integer `n`/);
  assert.throws(() => map(null, ctx), /no integer `n`/);
  assert.throws(() => map({ n: Number.MAX_SAFE_INTEGER }, ctx), /too large/);
});
