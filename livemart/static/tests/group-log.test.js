import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MessageLog } from '../group-log.js';

const msg = (seq, text = `m${seq}`) => ({ seq, text });

test('messages are kept once and in seq order whatever the arrival order', () => {
  const log = new MessageLog();
  assert.equal(log.add(msg(3)), true);
  assert.equal(log.add(msg(1)), true);
  assert.equal(log.add(msg(2)), true);
  assert.equal(log.add(msg(2, 'again')), false);
  assert.equal(log.add({ seq: 'x' }), false);
  assert.deepEqual(log.ordered().map((m) => m.text), ['m1', 'm2', 'm3']);
  assert.equal(log.highest, 3);
  assert.equal(log.lowest, 1);
});

test('a live message above a hole asks for the missing range', () => {
  const log = new MessageLog();
  log.reset(10);
  log.add(msg(11));
  assert.equal(log.gapBelow(12), null);
  assert.equal(log.gapBelow(15), 11);
  log.add(msg(15));
  log.add(msg(13));
  assert.equal(log.contiguous, 11);
  log.add(msg(12));
  assert.equal(log.contiguous, 13);
  // seq 14 never existed (e.g. a failed write); once fetched, the hole is settled.
  log.settledUpTo(14);
  assert.equal(log.contiguous, 15);
  assert.equal(log.gapBelow(16), null);
});

test('successorOf finds where a late message goes', () => {
  const log = new MessageLog();
  log.add(msg(2));
  log.add(msg(5));
  log.add(msg(9));
  assert.equal(log.successorOf(3), 5);
  assert.equal(log.successorOf(1), 2);
  assert.equal(log.successorOf(9), null);
});
