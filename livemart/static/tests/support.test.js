import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiError, createApi, listFrom } from '../api.js';
import { errorText } from '../errors.js';
import { formatCount, formatCountdown, formatMoney, parseTime } from '../format.js';
import { decodeToken, sessionFrom } from '../session.js';

function token(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}.signature`;
}

test('token claims are read for display, including non-ASCII names', () => {
  const t = token({ sub: '42', name: 'Zoë 小红', exp: 2000 });
  assert.deepEqual(decodeToken(t), { sub: '42', name: 'Zoë 小红', exp: 2000 });
  const session = sessionFrom(t, 1_000_000);
  assert.equal(session.userId, '42');
  assert.equal(session.name, 'Zoë 小红');
  assert.equal(session.expired, false);
  assert.equal(sessionFrom(t, 2_000_000).expired, true);
  assert.equal(decodeToken('not a token'), null);
  assert.equal(sessionFrom('a.b.c').token, null);
});

test('server times may be ISO strings, seconds or milliseconds', () => {
  assert.equal(parseTime('2026-01-01T00:00:00Z'), Date.UTC(2026, 0, 1));
  assert.equal(parseTime(1_767_225_600), Date.UTC(2026, 0, 1));
  assert.equal(parseTime(1_767_225_600_000), Date.UTC(2026, 0, 1));
  assert.equal(parseTime('soon'), null);
  assert.equal(parseTime(undefined), null);
});

test('countdowns, counts and money', () => {
  assert.equal(formatCountdown(61_000), '1:01');
  assert.equal(formatCountdown(3_600_000 + 5000), '1:00:05');
  assert.equal(formatCountdown(-5), '0:00');
  assert.equal(formatCountdown(400), '0:01');
  assert.equal(formatCount(999), '999');
  assert.equal(formatCount(1250), '1.3k');
  assert.equal(formatCount(35_400), '35k');
  assert.equal(formatCount(1_400_000), '1.4M');
  assert.match(formatMoney(1999, 'USD'), /19\.99/);
  assert.equal(formatMoney(1999), '19.99');
  assert.equal(formatMoney(1999, 'NOPE'), '19.99 NOPE');
});

test('error codes read as sentences, unknown ones fall back to the message', () => {
  assert.match(errorText({ code: 'sold_out' }), /Sold out/);
  assert.equal(errorText({ code: 'weird', message: 'Weird thing' }), 'Weird thing');
  assert.equal(errorText(null), 'Something went wrong.');
});

test('the API sends the bearer token and turns error bodies into codes', async () => {
  const calls = [];
  const responses = [
    new Response(JSON.stringify({ id: 1 }), { status: 201 }),
    new Response(JSON.stringify({ error: { code: 'sold_out', message: 'none left' } }), { status: 409 }),
    new Response('Bad gateway', { status: 503 }),
  ];
  const api = createApi({
    base: 'http://shop.test/#/room/1',
    getToken: () => 'tok',
    fetch: async (url, init) => {
      calls.push({ url: String(url), init });
      return responses.shift();
    },
  });
  assert.deepEqual(await api.post('/api/rooms', { title: 't' }, { 'Idempotency-Key': 'k' }), { id: 1 });
  assert.equal(calls[0].url, 'http://shop.test/api/rooms');
  assert.equal(calls[0].init.headers.Authorization, 'Bearer tok');
  assert.equal(calls[0].init.headers['Idempotency-Key'], 'k');
  assert.equal(calls[0].init.body, '{"title":"t"}');
  await assert.rejects(api.get('/api/flash-sales/1'), (e) => e instanceof ApiError && e.code === 'sold_out' && e.status === 409);
  await assert.rejects(api.del('/api/reservations/1'), { code: 'unavailable', status: 503 });
});

test('a failed fetch is a network error', async () => {
  const api = createApi({ base: 'http://x.test/', getToken: () => null, fetch: async () => { throw new TypeError('offline'); } });
  await assert.rejects(api.get('/api/orders'), { code: 'network' });
});

test('lists may come bare or wrapped', () => {
  assert.deepEqual(listFrom([1]), [1]);
  assert.deepEqual(listFrom({ groups: [2] }, 'groups'), [2]);
  assert.deepEqual(listFrom({ other: 1 }, 'groups'), []);
});
