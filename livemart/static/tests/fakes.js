/**
 * Test doubles for the browser pieces the protocol client is given: a manual
 * clock with timers and a WebSocket whose peer is the test itself.
 */

export class ManualClock {
  constructor() {
    this.time = 0;
    this.nextId = 1;
    this.timers = new Map();
    this.now = () => this.time;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.time + Math.max(0, ms), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Move time forward, firing due timers in order (including ones they schedule). */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }

  /** Delays of the timers currently pending, relative to now. */
  pendingDelays() {
    return [...this.timers.values()].map((timer) => timer.at - this.time);
  }
}

/** A WebSocket stand-in: the test opens it, feeds it frames and closes it. */
export class ScriptedSocket {
  static created = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.closedWith = null;
    ScriptedSocket.created.push(this);
  }

  static reset() {
    ScriptedSocket.created = [];
  }

  static last() {
    return ScriptedSocket.created[ScriptedSocket.created.length - 1];
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code = 1000, reason = '') {
    this.closedWith = { code, reason };
  }

  /** Frames sent with the given op, oldest first. */
  sentOps(op) {
    return this.sent.filter((frame) => frame.op === op);
  }

  serverOpen() {
    this.onopen?.({});
  }

  serverSend(value) {
    this.onmessage?.({ data: JSON.stringify(value) });
  }

  serverSendRaw(data) {
    this.onmessage?.({ data });
  }

  serverClose(code, reason = '') {
    this.onclose?.({ code, reason });
  }

  /** Answer the most recent command with this op. */
  reply(op, ok) {
    const frames = this.sentOps(op);
    if (frames.length === 0) throw new Error(`no ${op} was sent`);
    this.serverSend({ id: frames[frames.length - 1].id, ok });
  }
}

/** Let promise callbacks run. */
export function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}
