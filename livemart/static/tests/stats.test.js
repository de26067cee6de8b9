import assert from 'node:assert/strict';
import { test } from 'node:test';

import { labelFor, statRows } from '../stats.js';

test('labels read as words', () => {
  assert.equal(labelFor(['peak_viewers']), 'Peak viewers');
  assert.equal(labelFor(['gmv_cents']), 'GMV');
  assert.equal(labelFor(['conversion', 'all']), 'Conversion (all)');
});

test('known figures come first, with money and ratios formatted', () => {
  const rows = statRows({
    orders_by_source: { room: 3, group: 1 },
    gmv_cents: 123_456,
    currency: 'USD',
    peak_viewers: 1200,
    conversion: { all: 0.25, interacting: 0.5, silent: 0 },
    note: 'ignored text',
    list: [1, 2],
  });
  assert.deepEqual(
    rows.map((r) => r.key),
    ['peak_viewers', 'gmv_cents', 'conversion.all', 'conversion.interacting', 'conversion.silent', 'orders_by_source.room', 'orders_by_source.group'],
  );
  const byKey = Object.fromEntries(rows.map((r) => [r.key, r.value]));
  assert.match(byKey.gmv_cents, /1,234\.56/);
  assert.equal(byKey['conversion.all'], '25.0%');
  assert.equal(byKey['conversion.silent'], '0.0%');
  assert.equal(byKey['orders_by_source.room'], '3');
});

test('GMV per currency is money in that currency', () => {
  const rows = statRows({ gmv_cents: 0, currency: null, gmv_by_currency: { EUR: 1234 } });
  const byKey = Object.fromEntries(rows.map((r) => [r.key, r.value]));
  assert.equal(byKey.gmv_cents, '0.00');
  assert.match(byKey['gmv_by_currency.EUR'], /12\.34/);
  assert.match(byKey['gmv_by_currency.EUR'], /€|EUR/);
});

test('nothing useful gives no rows', () => {
  assert.deepEqual(statRows(null), []);
  assert.deepEqual(statRows({ title: 'x' }), []);
});
