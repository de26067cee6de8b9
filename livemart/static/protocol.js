/**
 * Client for the livemart WebSocket protocol (subprotocol `livemart.json`).
 *
 * It owns request ids, reply promises with timeouts, push dispatch, keep-alive
 * pings and reconnection with per-channel recovery. It never touches the DOM:
 * the WebSocket constructor, timers, clock and randomness are injected, so the
 * same code runs in the browser and under `node --test` against a scripted socket.
 */

export const SUBPROTOCOL = 'livemart.json';

/** Close codes with a meaning for the client (see docs/web-client.md). */
export const CloseCode = Object.freeze({
  POLICY_VIOLATION: 1008,
  SERVICE_RESTART: 1012,
  UNAUTHORIZED: 4001,
  FORBIDDEN: 4003,
  SLOW: 4008,
});

/** After these the same request would fail again, so the client stops and says why. */
const FINAL_CLOSE_CODES = new Set([
  CloseCode.POLICY_VIOLATION,
  CloseCode.UNAUTHORIZED,
  CloseCode.FORBIDDEN,
]);

/** Failures where the server never answered or asked to be retried later. */
export const TRANSIENT_CODES = new Set(['timeout', 'disconnected', 'unavailable', 'network']);

export class ProtocolError extends Error {
  /**
   * @param {string} code contract error code, or a client-side one
   *   (`timeout`, `disconnected`, `closed`)
   * @param {string} [message]
   */
  constructor(code, message) {
    super(message || code);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

/**
 * Split one text frame into messages: a frame holds one object or an array of them.
 * @param {string} text
 * @returns {object[]}
 */
export function decodeFrame(text) {
  const value = JSON.parse(text);
  const items = Array.isArray(value) ? value : [value];
  return items.filter((item) => item !== null && typeof item === 'object' && !Array.isArray(item));
}

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential with "equal
 * jitter", so a crowd that lost the same server does not return in one wave.
 */
export function backoffDelay(attempt, { initialMs, maxMs }, random) {
  const cap = Math.min(maxMs, initialMs * 2 ** attempt);
  return Math.round(cap / 2 + (random() * cap) / 2);
}

/**
 * Events the server keeps in no history: aggregated totals and membership news.
 * They take no offset of their own and carry the channel's last one, so an offset
 * that is not new does not make them duplicates (and applying one twice is harmless).
 */
export const EPHEMERAL_EVENTS = new Set(['likes', 'viewers', 'member.join', 'member.leave']);

/** Whether a push repeats one already delivered on its channel. */
export function isDuplicate(push, lastOff) {
  if (typeof push.off !== 'number' || lastOff === null) return false;
  if (EPHEMERAL_EVENTS.has(push.ev)) return false;
  return push.off <= lastOff;
}

/**
 * One logical connection that survives socket losses.
 *
 * Channels are subscribed once with `subscribe(ch, handlers)`; after every
 * reconnect the client resubscribes with `since: {off, epoch}`. When the server
 * recovers the gap, missed pushes arrive through `onPush` as if they had never
 * been lost; when it cannot, `onState` is called again with a fresh snapshot.
 */
export class LiveClient {
  /**
   * @param {object} options
   * @param {string} options.url full ws:// or wss:// URL, token included
   * @param {Function} [options.WebSocket] constructor (defaults to the global)
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {() => number} [options.now] wall clock in ms
   * @param {() => number} [options.random] uniform in [0, 1)
   * @param {number} [options.requestTimeoutMs] how long a reply may take
   * @param {number} [options.pingIntervalMs] idle time between keep-alive pings
   * @param {number} [options.initialBackoffMs] first reconnect delay ceiling
   * @param {number} [options.maxBackoffMs] largest reconnect delay ceiling
   * @param {number} [options.stableAfterMs] an open socket this old resets the backoff
   */
  constructor({
    url,
    WebSocket: Socket = globalThis.WebSocket,
    timers = globalThis,
    now = Date.now,
    random = Math.random,
    requestTimeoutMs = 10_000,
    pingIntervalMs = 25_000,
    initialBackoffMs = 500,
    maxBackoffMs = 20_000,
    stableAfterMs = 5_000,
  }) {
    this.url = url;
    this.Socket = Socket;
    this.timers = timers;
    this.now = now;
    this.random = random;
    this.requestTimeoutMs = requestTimeoutMs;
    this.pingIntervalMs = pingIntervalMs;
    this.backoff = { initialMs: initialBackoffMs, maxMs: maxBackoffMs };
    this.stableAfterMs = stableAfterMs;

    /** The current socket, or null between connections. */
    this.socket = null;
    /** True once the current socket has opened. */
    this.socketOpen = false;
    /** When the current socket opened, to tell a stable connection from a flapping one. */
    this.openedAt = 0;
    /** Set by close(): no more reconnects, every request fails. */
    this.stopped = false;
    /** True after connect() until close(). */
    this.started = false;
    /** Consecutive failed connections, drives the backoff. */
    this.attempt = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.nextId = 1;
    /** Request id -> {frame, resolve, reject, timer, sent}. */
    this.pending = new Map();
    /** Ids of requests made while no socket was open, sent in order on open. */
    this.outbox = [];
    /** Channel name -> subscription record (see subscribe). */
    this.channels = new Map();
    /** Channel name -> settled once the server answered our unsubscribe. */
    this.leaving = new Map();
    this.statusListeners = new Set();
    /** Last status reported, for late listeners. */
    this.status = { state: 'idle' };
  }

  get isOpen() {
    return this.socket !== null && this.socketOpen;
  }

  /** Start connecting; reconnects by itself until close(). */
  connect() {
    if (this.stopped || this.started) return;
    this.started = true;
    this.openSocket();
  }

  /** Stop for good: close the socket, fail outstanding requests, forget channels. */
  close() {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimer('reconnectTimer');
    this.clearTimer('pingTimer');
    const socket = this.socket;
    this.socket = null;
    this.socketOpen = false;
    if (socket) {
      detach(socket);
      socket.close(1000, 'client closed');
    }
    this.failPending(() => true, 'closed', 'the connection was closed');
    this.channels.clear();
    this.setStatus({ state: 'closed' });
  }

  /**
   * Listen to connection status changes; returns a function that stops listening.
   * Statuses: `connecting`, `open`, `waiting` (with `delayMs`, `code`, `slow`),
   * `failed` (with `code`: the server refused us for good), `closed`.
   */
  onStatus(listener) {
    this.statusListeners.add(listener);
    listener(this.status);
    return () => this.statusListeners.delete(listener);
  }

  /**
   * Send one command and wait for its reply.
   * Commands made while disconnected are queued and sent once a socket opens;
   * the timeout runs from the call. A command whose socket closes before the
   * reply fails with `disconnected`: its outcome is unknown, so only retry ops
   * that are idempotent (keys, client_msg_id).
   * @returns {Promise<object>} the reply's `ok` body
   */
  request(op, args = {}, { timeoutMs = this.requestTimeoutMs } = {}) {
    if (this.stopped) {
      return Promise.reject(new ProtocolError('closed', 'the connection was closed'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const entry = { frame: { ...args, id, op }, resolve, reject, sent: false, timer: null };
      entry.timer = this.timers.setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError('timeout', `no reply to ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, entry);
      if (this.isOpen) this.transmit(entry);
      else this.outbox.push(id);
    });
  }

  /**
   * Subscribe to a channel for as long as the client lives or until unsubscribe().
   * @param {string} ch `room:<id>` or `group:<id>`
   * @param {object} handlers
   * @param {(state: object, reply: object) => void} [handlers.onState] a snapshot to
   *   render from scratch: after the first subscribe and after a failed recovery
   * @param {(push: object) => void} [handlers.onPush] each new push, in order, once
   * @param {(error: ProtocolError) => void} [handlers.onError] the server refused the
   *   subscription (e.g. forbidden, not_found) or ended it (an `unsubscribe` push
   *   after a ban or a kick); either way it is dropped
   */
  subscribe(ch, handlers) {
    if (this.channels.has(ch)) throw new Error(`already subscribed to ${ch}`);
    const channel = { ch, handlers, off: null, epoch: null, phase: 'idle', buffer: [], token: 0 };
    this.channels.set(ch, channel);
    if (this.isOpen) this.sendSubscribe(channel);
  }

  unsubscribe(ch) {
    if (!this.channels.delete(ch) || !this.isOpen) return;
    const done = this.request('unsubscribe', { ch })
      .catch(() => {})
      .finally(() => {
        if (this.leaving.get(ch) === done) this.leaving.delete(ch);
      });
    this.leaving.set(ch, done);
  }

  /** Last delivered offset and epoch of a channel, or null when not subscribed. */
  position(ch) {
    const channel = this.channels.get(ch);
    return channel ? { off: channel.off, epoch: channel.epoch } : null;
  }

  // -- socket lifecycle -----------------------------------------------------

  openSocket() {
    this.reconnectTimer = null;
    this.setStatus({ state: 'connecting' });
    let socket;
    try {
      socket = new this.Socket(this.url, [SUBPROTOCOL]);
    } catch (error) {
      console.warn('livemart: cannot open WebSocket', error);
      this.scheduleReconnect(null, '');
      return;
    }
    this.socket = socket;
    this.socketOpen = false;
    socket.onopen = () => this.handleOpen(socket);
    socket.onmessage = (event) => this.handleMessage(socket, event);
    socket.onclose = (event) => this.handleClose(socket, event.code, event.reason);
    // An error event is always followed by a close event, which does the work.
    socket.onerror = () => {};
  }

  handleOpen(socket) {
    if (socket !== this.socket) return;
    this.socketOpen = true;
    this.openedAt = this.now();
    this.setStatus({ state: 'open' });
    const queued = this.outbox;
    this.outbox = [];
    for (const id of queued) {
      const entry = this.pending.get(id);
      if (entry) this.transmit(entry);
    }
    for (const channel of this.channels.values()) this.sendSubscribe(channel);
    this.schedulePing();
  }

  handleMessage(socket, event) {
    if (socket !== this.socket || typeof event.data !== 'string') return;
    let messages;
    try {
      messages = decodeFrame(event.data);
    } catch (error) {
      console.warn('livemart: undecodable frame', error);
      return;
    }
    for (const message of messages) {
      if (typeof message.ch === 'string' && typeof message.ev === 'string') {
        this.routePush(message);
      } else if (typeof message.id === 'number') {
        this.settle(message);
      }
    }
  }

  /**
   * The socket is gone (closed by the server, the network, or a failed ping).
   * `code` is null when the client itself gave up on the socket.
   */
  handleClose(socket, code, reason) {
    if (socket !== this.socket) return;
    const wasStable = this.socketOpen && this.now() - this.openedAt >= this.stableAfterMs;
    this.socket = null;
    this.socketOpen = false;
    this.clearTimer('pingTimer');
    this.failPending((entry) => entry.sent, 'disconnected', 'the connection dropped');
    for (const channel of this.channels.values()) channel.phase = 'idle';
    if (this.stopped) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this.stopped = true;
      this.clearTimer('reconnectTimer');
      this.failPending(() => true, 'closed', 'the server refused the connection');
      this.setStatus({ state: 'failed', code, reason });
      return;
    }
    if (wasStable) this.attempt = 0;
    this.scheduleReconnect(code, reason);
  }

  scheduleReconnect(code, reason) {
    let delayMs;
    if (code === CloseCode.SERVICE_RESTART) {
      // A draining server asks us to move to another process right away.
      delayMs = 0;
      this.attempt = 0;
    } else {
      delayMs = backoffDelay(this.attempt, this.backoff, this.random);
      this.attempt += 1;
    }
    this.setStatus({ state: 'waiting', delayMs, code, reason, slow: code === CloseCode.SLOW });
    this.reconnectTimer = this.timers.setTimeout(() => this.openSocket(), delayMs);
  }

  /** Give up on a socket that stopped answering and reconnect without waiting for TCP. */
  abandon(socket, reason) {
    if (socket === null || socket !== this.socket) return;
    detach(socket);
    try {
      socket.close(4000, reason);
    } catch (error) {
      console.warn('livemart: close failed', error);
    }
    this.handleClose(socket, null, reason);
  }

  schedulePing() {
    this.clearTimer('pingTimer');
    const socket = this.socket;
    this.pingTimer = this.timers.setTimeout(() => {
      this.pingTimer = null;
      this.request('ping').then(
        () => {
          if (socket === this.socket) this.schedulePing();
        },
        (error) => {
          if (error.code === 'timeout') this.abandon(socket, 'ping timeout');
          else if (socket === this.socket) this.schedulePing(); // an error reply is still a reply
        },
      );
    }, this.pingIntervalMs);
  }

  // -- requests -------------------------------------------------------------

  transmit(entry) {
    entry.sent = true;
    this.socket.send(JSON.stringify(entry.frame));
  }

  settle(reply) {
    const entry = this.pending.get(reply.id);
    if (!entry) return; // late reply to a request that already timed out
    this.pending.delete(reply.id);
    this.timers.clearTimeout(entry.timer);
    if (reply.error) {
      entry.reject(new ProtocolError(String(reply.error.code || 'error'), reply.error.message));
    } else {
      entry.resolve(reply.ok ?? {});
    }
  }

  failPending(predicate, code, message) {
    for (const [id, entry] of this.pending) {
      if (!predicate(entry)) continue;
      this.pending.delete(id);
      this.timers.clearTimeout(entry.timer);
      entry.reject(new ProtocolError(code, message));
    }
    this.outbox = this.outbox.filter((id) => this.pending.has(id));
  }

  // -- channels -------------------------------------------------------------

  sendSubscribe(channel) {
    channel.phase = 'subscribing';
    channel.buffer = [];
    const leaving = this.leaving.get(channel.ch);
    if (leaving) {
      // The server may run commands concurrently: a subscribe that overtook our
      // unsubscribe of the same channel would be refused as a duplicate.
      leaving.then(() => {
        if (this.channels.get(channel.ch) === channel && this.isOpen) this.sendSubscribe(channel);
      });
      return;
    }
    channel.token += 1;
    const token = channel.token;
    const args = { ch: channel.ch };
    if (channel.off !== null && channel.epoch !== null) {
      args.since = { off: channel.off, epoch: channel.epoch };
    }
    const current = () => this.channels.get(channel.ch) === channel && channel.token === token;
    this.request('subscribe', args).then(
      (reply) => {
        if (current()) this.handleSubscribed(channel, reply);
      },
      (error) => {
        if (current()) this.handleSubscribeError(channel, error);
      },
    );
  }

  handleSubscribed(channel, reply) {
    const resuming = channel.off !== null;
    if (resuming && reply.recovered === true) {
      for (const push of Array.isArray(reply.missed) ? reply.missed : []) {
        this.deliver(channel, { ...push, ch: channel.ch });
      }
    } else {
      // First subscribe, or the gap could not be recovered: start over from the snapshot.
      channel.off = typeof reply.off === 'number' ? reply.off : null;
      this.call(channel, 'onState', reply.state ?? {}, reply);
    }
    if (reply.epoch !== undefined) channel.epoch = reply.epoch;
    if (typeof reply.off === 'number' && (channel.off === null || reply.off > channel.off)) {
      channel.off = reply.off;
    }
    channel.phase = 'active';
    const early = channel.buffer;
    channel.buffer = [];
    for (const push of early) this.deliver(channel, push);
  }

  handleSubscribeError(channel, error) {
    if (!TRANSIENT_CODES.has(error.code)) {
      this.channels.delete(channel.ch);
      this.call(channel, 'onError', error);
      return;
    }
    if (error.code === 'timeout') {
      // The outcome is unknown (a second subscribe would be refused as a duplicate):
      // a socket this slow to answer is replaced, and every channel starts clean.
      this.abandon(this.socket, 'subscribe timeout');
    } else if (error.code === 'unavailable' && this.isOpen) {
      this.timers.setTimeout(() => {
        if (this.channels.get(channel.ch) === channel && this.isOpen) this.sendSubscribe(channel);
      }, this.backoff.initialMs);
    }
    // `disconnected`: every channel is subscribed again when the next socket opens.
  }

  routePush(push) {
    const channel = this.channels.get(push.ch);
    if (!channel) return;
    if (push.ev === 'unsubscribe') {
      // The server removed us (ban, kick from a group): do not come back on reconnect.
      const data = push.data ?? {};
      this.channels.delete(push.ch);
      this.call(channel, 'onError', new ProtocolError(String(data.code || 'forbidden'), data.reason));
      return;
    }
    // Pushes that overtake the subscribe reply wait until its snapshot is applied.
    if (channel.phase === 'active') this.deliver(channel, push);
    else channel.buffer.push(push);
  }

  deliver(channel, push) {
    if (isDuplicate(push, channel.off)) return;
    if (typeof push.off === 'number' && (channel.off === null || push.off > channel.off)) {
      channel.off = push.off;
    }
    this.call(channel, 'onPush', push);
  }

  /** Run a page handler; a bug in one page must not stop the stream for the others. */
  call(channel, name, ...args) {
    const handler = channel.handlers[name];
    if (!handler) return;
    try {
      handler(...args);
    } catch (error) {
      console.error(`livemart: ${name} handler for ${channel.ch} failed`, error);
    }
  }

  // -- helpers --------------------------------------------------------------

  setStatus(status) {
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }

  clearTimer(name) {
    if (this[name] !== null) {
      this.timers.clearTimeout(this[name]);
      this[name] = null;
    }
  }
}

function detach(socket) {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onclose = null;
  socket.onerror = null;
}

/** The WebSocket URL for this page, with the access token when there is one. */
export function socketUrl(pageUrl, token) {
  const url = new URL('ws', pageUrl);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  if (token) url.searchParams.set('token', token);
  return url.toString();
}
