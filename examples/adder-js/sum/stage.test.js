import test from 'node:test';
import assert from 'node:assert/strict';
import { initial, reduce, combine } from './stage.js';

const ctx = { stage: 'test', params: {}, meta: {}, index: 0 };

test('sums and combines', () => {
  const total = [1, 2, 3].map((n) => ({ n })).reduce((acc, ev) => reduce(acc, ev, ctx), initial);
  assert.equal(total, 6);
  assert.equal(combine(total, reduce(initial, { n: 4 }, ctx)), 10);
});

test('refuses what is not an integer n', () => {
  assert.throws(() => reduce(0, { m: 1 }, ctx), /no integer `n`/);
  assert.throws(() => reduce(0, { n: 0.5 }, ctx), /no integer `n`/);
  assert.throws(() => reduce(Number.MAX_SAFE_INTEGER, { n: 1 }, ctx), /too large/);
});
