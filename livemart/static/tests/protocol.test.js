import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import {
  LiveClient,
  SUBPROTOCOL,
  backoffDelay,
  decodeFrame,
  isDuplicate,
  socketUrl,
} from '../protocol.js';
import { ManualClock, ScriptedSocket, settle } from './fakes.js';

let clock;

function makeClient(options = {}) {
  return new LiveClient({
    url: 'ws://example.test/ws',
    WebSocket: ScriptedSocket,
    timers: clock,
    now: clock.now,
    random: () => 0.5,
    requestTimeoutMs: 1000,
    pingIntervalMs: 60_000,
    initialBackoffMs: 400,
    maxBackoffMs: 3200,
    ...options,
  });
}

/** A client with one open socket. */
function openClient(options) {
  const client = makeClient(options);
  client.connect();
  ScriptedSocket.last().serverOpen();
  return client;
}

/** Subscribe and answer with a first snapshot; returns what the handlers saw. */
async function subscribed(client, ch, reply) {
  const seen = { states: [], pushes: [], errors: [] };
  client.subscribe(ch, {
    onState: (state, full) => seen.states.push({ state, full }),
    onPush: (push) => seen.pushes.push(push),
    onError: (error) => seen.errors.push(error),
  });
  ScriptedSocket.last().reply('subscribe', reply);
  await settle();
  return seen;
}

function push(ch, off, ev = 'comment', data = {}) {
  return { ch, ev, off, data };
}

beforeEach(() => {
  clock = new ManualClock();
  ScriptedSocket.reset();
});

describe('frames', () => {
  test('a frame may hold one message or an array of them', () => {
    assert.deepEqual(decodeFrame('{"id":1,"ok":{}}'), [{ id: 1, ok: {} }]);
    assert.deepEqual(decodeFrame('[{"ch":"room:1","ev":"x","off":1},{"ch":"room:1","ev":"y","off":2}]').length, 2);
    assert.deepEqual(decodeFrame('[1, null, {"id": 2}]'), [{ id: 2 }]);
    assert.throws(() => decodeFrame('{not json'));
  });

  test('socket URL follows the page scheme and carries the token', () => {
    assert.equal(socketUrl('https://shop.test/#/room/1', 'a.b.c'), 'wss://shop.test/ws?token=a.b.c');
    assert.equal(socketUrl('http://127.0.0.1:8000/?token=x', null), 'ws://127.0.0.1:8000/ws');
  });

  test('backoff grows to a ceiling and stays within half of it', () => {
    const opts = { initialMs: 500, maxMs: 4000 };
    assert.equal(backoffDelay(0, opts, () => 0), 250);
    assert.equal(backoffDelay(0, opts, () => 0.999999), 500);
    assert.equal(backoffDelay(2, opts, () => 0), 1000);
    assert.equal(backoffDelay(10, opts, () => 0), 2000);
    assert.equal(backoffDelay(10, opts, () => 0.999999), 4000);
  });

  test('ephemeral events repeat the last offset without being duplicates', () => {
    assert.equal(isDuplicate(push('room:1', 5), 5), true);
    assert.equal(isDuplicate(push('room:1', 6), 5), false);
    assert.equal(isDuplicate(push('room:1', 5, 'likes'), 5), false);
    assert.equal(isDuplicate(push('room:1', 5, 'viewers'), 5), false);
    assert.equal(isDuplicate(push('group:1', 5, 'message'), 5), true);
    assert.equal(isDuplicate(push('group:1', 5, 'announcement'), 5), true);
    assert.equal(isDuplicate(push('group:1', 5, 'member.join'), 5), false);
    assert.equal(isDuplicate(push('room:1', 1), null), false);
  });
});

describe('requests', () => {
  test('uses the livemart.json subprotocol and matches replies by id', async () => {
    const client = openClient();
    const socket = ScriptedSocket.last();
    assert.deepEqual(socket.protocols, [SUBPROTOCOL]);
    const first = client.request('ping');
    const second = client.request('comment', { room: '7', text: 'hi' });
    const [ping, comment] = socket.sent;
    assert.equal(ping.op, 'ping');
    assert.deepEqual(comment, { room: '7', text: 'hi', id: comment.id, op: 'comment' });
    assert.notEqual(ping.id, comment.id);
    // Replies may come out of order, even batched in one frame.
    socket.serverSend([{ id: comment.id, ok: { off: 12 } }, { id: ping.id, ok: { t: 1 } }]);
    assert.deepEqual(await second, { off: 12 });
    assert.deepEqual(await first, { t: 1 });
  });

  test('an error reply rejects with its code', async () => {
    const client = openClient();
    const result = client.request('comment', { room: '7', text: 'x' });
    ScriptedSocket.last().serverSend({
      id: ScriptedSocket.last().sent[0].id,
      error: { code: 'muted', message: 'you are muted' },
    });
    await assert.rejects(result, { name: 'ProtocolError', code: 'muted', message: 'you are muted' });
  });

  test('a missing reply times out and a late one is ignored', async () => {
    const client = openClient();
    const result = client.request('like', { room: '7' });
    clock.advance(999);
    await settle();
    let done = false;
    result.catch(() => {
      done = true;
    });
    await settle();
    assert.equal(done, false);
    clock.advance(1);
    await assert.rejects(result, { code: 'timeout' });
    ScriptedSocket.last().reply('like', {});
    assert.equal(client.pending.size, 0);
  });

  test('requests made before the socket opens are sent once it does', async () => {
    const client = makeClient();
    const result = client.request('ping');
    client.connect();
    const socket = ScriptedSocket.last();
    assert.equal(socket.sent.length, 0);
    socket.serverOpen();
    assert.equal(socket.sentOps('ping').length, 1);
    socket.reply('ping', { t: 5 });
    assert.deepEqual(await result, { t: 5 });
  });

  test('requests in flight fail as disconnected when the socket drops', async () => {
    const client = openClient();
    const result = client.request('group.send', { group: '1', text: 'x', client_msg_id: 'k' });
    ScriptedSocket.last().serverClose(1006);
    await assert.rejects(result, { code: 'disconnected' });
  });

  test('close() fails everything and stops reconnecting', async () => {
    const client = openClient();
    const result = client.request('ping');
    const socket = ScriptedSocket.last();
    client.close();
    await assert.rejects(result, { code: 'closed' });
    assert.deepEqual(socket.closedWith, { code: 1000, reason: 'client closed' });
    await assert.rejects(client.request('ping'), { code: 'closed' });
    clock.advance(60_000);
    assert.equal(ScriptedSocket.created.length, 1);
  });
});

describe('pushes', () => {
  test('the snapshot comes first, then pushes in order, each once', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'room:1', {
      off: 3,
      epoch: 'e1',
      recovered: false,
      state: { likes: 10 },
      missed: [],
    });
    assert.deepEqual(seen.states.map((s) => s.state), [{ likes: 10 }]);
    const socket = ScriptedSocket.last();
    socket.serverSend(push('room:1', 4));
    socket.serverSend([push('room:1', 4), push('room:1', 5), push('room:2', 1)]);
    socket.serverSend(push('room:1', 3)); // already in the snapshot
    socket.serverSend(push('room:1', 5, 'likes', { total: 11 })); // a total reuses the last offset
    assert.deepEqual(seen.pushes.map((p) => `${p.ev}@${p.off}`), ['comment@4', 'comment@5', 'likes@5']);
    assert.deepEqual(client.position('room:1'), { off: 5, epoch: 'e1' });
  });

  test('pushes that overtake the subscribe reply wait for the snapshot', async () => {
    const client = openClient();
    const seen = { order: [] };
    client.subscribe('room:1', {
      onState: () => seen.order.push('state'),
      onPush: (p) => seen.order.push(p.off),
    });
    const socket = ScriptedSocket.last();
    socket.serverSend([push('room:1', 8), push('room:1', 9)]);
    socket.reply('subscribe', { off: 8, epoch: 'e', recovered: false, state: {}, missed: [] });
    await settle();
    assert.deepEqual(seen.order, ['state', 9]);
  });

  test('a handler that throws does not stop later pushes', async () => {
    const client = openClient();
    const offs = [];
    client.subscribe('room:1', {
      onPush: (p) => {
        offs.push(p.off);
        if (p.off === 1) throw new Error('page bug');
      },
    });
    const socket = ScriptedSocket.last();
    socket.reply('subscribe', { off: 0, epoch: 'e', recovered: false, state: {} });
    await settle();
    const errors = console.error;
    console.error = () => {};
    try {
      socket.serverSend([push('room:1', 1), push('room:1', 2)]);
    } finally {
      console.error = errors;
    }
    assert.deepEqual(offs, [1, 2]);
  });

  test('a refused subscription reports the error and is dropped', async () => {
    const client = openClient();
    const errors = [];
    client.subscribe('group:9', { onError: (e) => errors.push(e.code) });
    const socket = ScriptedSocket.last();
    socket.serverSend({ id: socket.sentOps('subscribe')[0].id, error: { code: 'not_member' } });
    await settle();
    assert.deepEqual(errors, ['not_member']);
    assert.equal(client.position('group:9'), null);
  });

  test('an unsubscribe push from the server ends the subscription for good', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'room:1', { off: 4, epoch: 'e', recovered: false, state: {} });
    const socket = ScriptedSocket.last();
    socket.serverSend({ ch: 'room:1', ev: 'unsubscribe', off: 0, data: { code: 'banned', reason: 'banned by the host' } });
    socket.serverSend(push('room:1', 5));
    assert.deepEqual(seen.errors.map((e) => [e.code, e.message]), [['banned', 'banned by the host']]);
    assert.equal(seen.pushes.length, 0);
    socket.serverClose(1006);
    clock.advance(400);
    ScriptedSocket.last().serverOpen();
    assert.equal(ScriptedSocket.last().sentOps('subscribe').length, 0);
  });

  test('subscribing again waits until the server answered the unsubscribe', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'group:1', { off: 3, epoch: 'e', recovered: false, state: { unread: 0 } });
    client.unsubscribe('group:1');
    const again = { states: [] };
    client.subscribe('group:1', { onState: (state) => again.states.push(state) });
    const socket = ScriptedSocket.last();
    assert.equal(socket.sentOps('subscribe').length, 1);
    socket.reply('unsubscribe', {});
    await settle();
    assert.equal(socket.sentOps('subscribe').length, 2);
    socket.reply('subscribe', { off: 4, epoch: 'e', recovered: false, state: { unread: 1 } });
    await settle();
    assert.deepEqual(again.states, [{ unread: 1 }]);
    assert.equal(seen.states.length, 1);
  });

  test('unsubscribe stops delivery and tells the server', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'room:1', { off: 0, epoch: 'e', recovered: false, state: {} });
    client.unsubscribe('room:1');
    const socket = ScriptedSocket.last();
    assert.deepEqual(socket.sentOps('unsubscribe').map((f) => f.ch), ['room:1']);
    socket.serverSend(push('room:1', 1));
    assert.equal(seen.pushes.length, 0);
  });
});

describe('reconnect and recovery', () => {
  test('resubscribes with since and delivers the recovered gap without a new snapshot', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'room:1', {
      off: 10,
      epoch: 'e1',
      recovered: false,
      state: { likes: 1 },
    });
    ScriptedSocket.last().serverSend(push('room:1', 11));
    ScriptedSocket.last().serverClose(1006);
    assert.equal(ScriptedSocket.created.length, 1);
    clock.advance(400);
    assert.equal(ScriptedSocket.created.length, 2);
    const socket = ScriptedSocket.last();
    socket.serverOpen();
    assert.deepEqual(socket.sentOps('subscribe')[0].since, { off: 11, epoch: 'e1' });
    socket.reply('subscribe', {
      off: 13,
      epoch: 'e1',
      recovered: true,
      state: { ignored: true },
      missed: [push('room:1', 11), push('room:1', 12), push('room:1', 13)],
    });
    await settle();
    socket.serverSend(push('room:1', 14));
    assert.equal(seen.states.length, 1);
    assert.deepEqual(seen.pushes.map((p) => p.off), [11, 12, 13, 14]);
  });

  test('a failed recovery re-renders from the new snapshot and epoch', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'room:1', { off: 10, epoch: 'e1', recovered: false, state: { v: 1 } });
    ScriptedSocket.last().serverClose(1006);
    clock.advance(400);
    const socket = ScriptedSocket.last();
    socket.serverOpen();
    socket.reply('subscribe', { off: 2, epoch: 'e2', recovered: false, state: { v: 2 }, missed: [] });
    await settle();
    socket.serverSend(push('room:1', 3));
    assert.deepEqual(seen.states.map((s) => s.state), [{ v: 1 }, { v: 2 }]);
    assert.deepEqual(seen.pushes.map((p) => p.off), [3]);
    assert.deepEqual(client.position('room:1'), { off: 3, epoch: 'e2' });
  });

  test('backoff grows while connections fail and resets after a stable one', () => {
    const client = makeClient();
    const statuses = [];
    client.onStatus((s) => statuses.push(s));
    client.connect();
    for (const expected of [300, 600, 1200, 2400, 2400]) {
      ScriptedSocket.last().serverClose(1006);
      assert.deepEqual(clock.pendingDelays(), [expected]);
      clock.advance(expected);
    }
    ScriptedSocket.last().serverOpen();
    clock.advance(5000);
    ScriptedSocket.last().serverClose(1001);
    assert.deepEqual(clock.pendingDelays().sort((a, b) => a - b).slice(0, 1), [300]);
    assert.ok(statuses.some((s) => s.state === 'waiting' && s.delayMs === 300 && s.code === 1001));
  });

  test('service restart (1012) reconnects at once', () => {
    openClient();
    ScriptedSocket.last().serverClose(1012, 'restart');
    assert.deepEqual(clock.pendingDelays().filter((d) => d < 60_000), [0]);
    clock.advance(0);
    assert.equal(ScriptedSocket.created.length, 2);
  });

  test('too slow (4008) backs off and says so', () => {
    const client = openClient();
    const statuses = [];
    client.onStatus((s) => statuses.push(s));
    ScriptedSocket.last().serverClose(4008, 'slow');
    const waiting = statuses.find((s) => s.state === 'waiting');
    assert.equal(waiting.slow, true);
    assert.ok(waiting.delayMs > 0);
  });

  test('an unauthorized close stops reconnecting', async () => {
    const client = openClient();
    const statuses = [];
    client.onStatus((s) => statuses.push(s.state));
    const queued = client.request('ping');
    ScriptedSocket.last().serverClose(4001, 'token expired');
    await assert.rejects(queued, { code: 'disconnected' });
    clock.advance(60_000);
    assert.equal(ScriptedSocket.created.length, 1);
    assert.equal(statuses.at(-1), 'failed');
  });

  test('a ping without an answer abandons the socket and reconnects', async () => {
    openClient({ pingIntervalMs: 2000 });
    const first = ScriptedSocket.last();
    clock.advance(2000);
    assert.equal(first.sentOps('ping').length, 1);
    clock.advance(1000); // the ping's timeout
    await settle();
    assert.equal(first.closedWith.code, 4000);
    clock.advance(400);
    assert.equal(ScriptedSocket.created.length, 2);
  });

  test('an answered ping keeps the socket and schedules the next one', async () => {
    openClient({ pingIntervalMs: 2000 });
    const socket = ScriptedSocket.last();
    clock.advance(2000);
    socket.reply('ping', { t: 1 });
    await settle();
    clock.advance(2000);
    assert.equal(socket.sentOps('ping').length, 2);
    assert.equal(socket.closedWith, null);
  });

  test('an unanswered subscribe replaces the socket instead of subscribing twice', async () => {
    const client = openClient();
    client.subscribe('room:1', {});
    const first = ScriptedSocket.last();
    clock.advance(1000);
    await settle();
    assert.equal(first.closedWith.code, 4000);
    assert.equal(first.sentOps('subscribe').length, 1);
    clock.advance(400);
    ScriptedSocket.last().serverOpen();
    assert.equal(ScriptedSocket.last().sentOps('subscribe').length, 1);
  });

  test('a subscribe refused as unavailable is retried on the same socket', async () => {
    const client = openClient();
    const seen = { errors: [] };
    client.subscribe('room:1', { onError: (e) => seen.errors.push(e) });
    const socket = ScriptedSocket.last();
    socket.serverSend({ id: socket.sentOps('subscribe')[0].id, error: { code: 'unavailable' } });
    await settle();
    clock.advance(400);
    assert.equal(socket.sentOps('subscribe').length, 2);
    assert.deepEqual(seen.errors, []);
  });

  test('events from a replaced socket are ignored', async () => {
    const client = openClient();
    const seen = await subscribed(client, 'room:1', { off: 0, epoch: 'e', recovered: false, state: {} });
    const old = ScriptedSocket.last();
    const { onmessage } = old;
    old.serverClose(1006);
    clock.advance(400);
    const fresh = ScriptedSocket.last();
    fresh.serverOpen();
    fresh.reply('subscribe', { off: 0, epoch: 'e', recovered: true, state: {}, missed: [] });
    await settle();
    onmessage({ data: JSON.stringify(push('room:1', 1)) });
    assert.equal(seen.pushes.length, 0);
    fresh.serverSend(push('room:1', 1));
    assert.equal(seen.pushes.length, 1);
  });
});
