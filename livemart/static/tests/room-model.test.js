import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MAX_COMMENTS, applyPush, currentOffer, remainingOf, roomFromState } from '../room-model.js';

const snapshot = {
  title: 'Tea tasting',
  status: 'live',
  viewers: 12,
  likes: 40,
  pinned: { id: 5, title: 'Oolong', price_cents: 1200, currency: 'EUR' },
  sales: [
    { id: 9, product_id: 5, stock: 100, remaining: 30, price_cents: 900 },
    { id: 10, product_id: 6, stock: 10, price_cents: 100 },
  ],
  comments: [{ id: 'c1', user_id: 1, name: 'Ann', text: 'hello', ts: 1, off: 7 }],
};

test('a snapshot becomes a room', () => {
  const room = roomFromState(snapshot);
  assert.equal(room.title, 'Tea tasting');
  assert.equal(room.viewers, 12);
  assert.equal(room.likes, 40);
  assert.deepEqual(room.comments.map((c) => [c.off, c.userId, c.name, c.text]), [[7, '1', 'Ann', 'hello']]);
  assert.equal(room.sales.size, 2);
  assert.equal(room.stream, 'live');
  assert.equal(roomFromState({ status: 'offline' }).stream, 'offline');
  assert.equal(roomFromState({ status: 'ended', stream: { status: 'offline' } }).stream, 'offline');
  assert.equal(roomFromState({}).stream, 'unknown');
});

test('counters and the stream follow their events', () => {
  const room = roomFromState(snapshot);
  assert.deepEqual(applyPush(room, { ev: 'likes', off: 8, data: { total: 55 } }), { kind: 'likes' });
  assert.equal(room.likes, 55);
  applyPush(room, { ev: 'viewers', off: 9, data: { count: 3 } });
  assert.equal(room.viewers, 3);
  applyPush(room, { ev: 'stream', off: 10, data: { status: 'live' } });
  assert.equal(room.stream, 'live');
  assert.deepEqual(applyPush(room, { ev: 'room.end', off: 11, data: {} }), { kind: 'ended' });
  assert.equal(room.status, 'ended');
  assert.equal(room.stream, 'offline');
  assert.equal(applyPush(room, { ev: 'no.such.event', off: 12, data: {} }), null);
});

test('comments carry their offset, are capped, and can be deleted by offset', () => {
  const room = roomFromState({});
  for (let off = 1; off <= MAX_COMMENTS + 2; off++) {
    applyPush(room, { ev: 'comment', off, data: { user_id: 'u', name: 'U', text: `#${off}` } });
  }
  assert.equal(room.comments.length, MAX_COMMENTS);
  assert.equal(room.comments[0].off, 3);
  const change = applyPush(room, { ev: 'comment.deleted', off: 999, data: { off: 10 } });
  assert.deepEqual(change, { kind: 'comment.deleted', off: 10 });
  assert.equal(room.comments.some((c) => c.off === 10), false);
  assert.equal(room.comments.length, MAX_COMMENTS - 1);
});

test('the offer is the pinned product with its sale, and follows stock', () => {
  const room = roomFromState(snapshot);
  let offer = currentOffer(room);
  assert.equal(offer.product.title, 'Oolong');
  assert.equal(offer.sale.id, 9);
  assert.equal(remainingOf(offer.sale), 30);
  applyPush(room, { ev: 'stock', off: 8, data: { sale_id: 9, remaining: 2 } });
  assert.equal(remainingOf(currentOffer(room).sale), 2);
  applyPush(room, { ev: 'sale.end', off: 9, data: { sale_id: 9 } });
  offer = currentOffer(room);
  assert.equal(offer.product.title, 'Oolong');
  assert.equal(offer.sale, null);
});

test('with nothing pinned the first running sale is offered', () => {
  const room = roomFromState(snapshot);
  applyPush(room, { ev: 'unpin', off: 8, data: {} });
  const offer = currentOffer(room);
  assert.equal(offer.sale.id, 9);
  assert.equal(remainingOf(room.sales.get('10')), 10);
  applyPush(room, { ev: 'pin', off: 9, data: { product: { id: 6, title: 'Cup' } } });
  assert.equal(currentOffer(room).sale.id, 10);
  applyPush(room, { ev: 'unpin', off: 10, data: {} });
  applyPush(room, { ev: 'sale.end', off: 11, data: { sale_id: 9 } });
  applyPush(room, { ev: 'sale.end', off: 12, data: { sale_id: 10 } });
  assert.equal(currentOffer(room), null);
  applyPush(room, { ev: 'sale.start', off: 13, data: { sale: { id: 11, product_id: 7, stock: 5 } } });
  assert.equal(currentOffer(room).sale.id, 11);
});

test('a purchase reads as a sentence, with defaults for missing names', () => {
  const room = roomFromState({});
  assert.equal(applyPush(room, { ev: 'purchase', data: { name: 'Bo', product_title: 'Cup' } }).text, 'Bo just bought Cup');
  assert.equal(applyPush(room, { ev: 'purchase', data: {} }).text, 'Someone just bought an item');
});

test('stock for an unknown sale changes nothing', () => {
  const room = roomFromState(snapshot);
  assert.equal(applyPush(room, { ev: 'stock', off: 8, data: { sale_id: 77, remaining: 1 } }), null);
});

test('a pinned product may bring its sale along', () => {
  const room = roomFromState({ pinned: { id: 'p', title: 'Cup', sale: { id: 's', product_id: 'p', remaining: 4 } }, sales: [] });
  assert.equal(currentOffer(room).sale.id, 's');
  applyPush(room, { ev: 'stock', off: 2, data: { sale_id: 's', remaining: 3 } });
  assert.equal(remainingOf(currentOffer(room).sale), 3);
  applyPush(room, { ev: 'sale.end', off: 3, data: { sale_id: 's' } });
  assert.equal(currentOffer(room).sale, null);
});
