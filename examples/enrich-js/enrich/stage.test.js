import test from 'node:test';
import assert from 'node:assert/strict';
import { init, map } from './stage.js';

const ctx = {
  stage: 'test',
  params: { region: 'eu-west-1' },
  meta: { host: 'web-1', received_at: '2024-05-01T12:00:00Z', job: 3 },
  index: 0,
};

test('adds fields, keys sorted', () => {
  const out = map({ level: 'warn', msg: 'disk 91%' }, ctx);
  const expected = {
    env: 'prod',
    host: 'web-1',
    level: 'warn',
    level_num: 30,
    msg: 'disk 91%',
    received_at: '2024-05-01T12:00:00Z',
    region: 'eu-west-1',
  };
  assert.deepEqual(out, expected);
  assert.equal(JSON.stringify(out), JSON.stringify(expected));
});

test('refuses unknown levels', () => {
  assert.throws(() => map({ level: 'fatal' }, ctx), { message: 'unknown level `fatal`' });
  assert.throws(() => map({ level: 'toString' }, ctx), { message: 'unknown level `toString`' });
  assert.throws(() => map({ msg: '?' }, ctx), { message: 'event has no string `level`' });
  assert.throws(() => map({ level: 3 }, ctx), { message: 'event has no string `level`' });
});

test('env comes from the params, or defaults to prod', () => {
  assert.equal(map({ level: 'info' }, { ...ctx, params: { region: 'us', env: 'staging' } }).env, 'staging');
  assert.equal(map({ level: 'info' }, { ...ctx, params: { region: 'us' } }).env, 'prod');
});

test('missing metadata is null', () => {
  const out = map({ level: 'debug' }, { ...ctx, meta: {} });
  assert.equal(out.host, null);
  assert.equal(out.received_at, null);
});

test('refuses params without a region', () => {
  assert.throws(() => init({ env: 'prod' }), /region/);
  init({ region: 'us' });
});
