import test from 'node:test';
import assert from 'node:assert/strict';
import { map } from './stage.js';

const ctx = { stage: 'test', params: {}, meta: { identity: 'web', remote_addr: '10.0.0.1:5000' }, index: 0 };

test('enriches and masks card numbers', () => {
  const out = map(
    {
      body: 'payment failed for 4111 1111 1111 1111',
      severity_number: 17,
      attributes: { card: '4111-1111-1111-1111', order_id: 4 },
      resource: { 'service.name': 'checkout' },
    },
    ctx,
  );
  assert.equal(out.body, 'payment failed for **** 1111');
  assert.deepEqual(out.attributes, { card: '**** 1111', order_id: 4 });
  assert.equal(out.service, 'checkout');
  assert.equal(out.level, 'error');
  assert.equal(out.sender, 'web');
});

test('a record without a resource or severity keeps nulls', () => {
  const out = map({ body: { structured: true } }, { ...ctx, meta: {} });
  assert.deepEqual(out.body, { structured: true });
  assert.equal(out.service, null);
  assert.equal(out.level, null);
  assert.equal(out.sender, null);
});
