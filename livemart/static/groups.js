/**
 * Merchant group chats. `#/groups` lists my groups with live unread counts and
 * creates or joins groups; `#/groups/<id>` is one conversation: durable history
 * by `seq`, live `message` pushes merged without duplicates, retry-safe sending
 * with `client_msg_id`, the read cursor, and room and sale cards.
 */

import { listFrom } from './api.js';
import { BuyControl } from './buy-control.js';
import { field, h, replace, say } from './dom.js';
import { errorText } from './errors.js';
import { formatClock, formatCount, formatMoney } from './format.js';
import { MessageLog } from './group-log.js';
import { newKey } from './keys.js';
import { TRANSIENT_CODES } from './protocol.js';
import { remainingOf } from './room-model.js';

/** Messages shown when a conversation opens, and per "load earlier". */
const PAGE = 50;
/** Largest page the client asks the history endpoint for. */
const FETCH_LIMIT = 100;
/** Past this many missed messages, show the newest page instead of catching up. */
const RESYNC_AFTER = 500;
const SEND_ATTEMPTS = 3;
const READ_DELAY_MS = 800;
/** Group channels the list page follows for live unread counts. */
const LIST_SUBSCRIPTIONS = 50;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function signInNeeded(ctx, view) {
  replace(
    view,
    h(
      'section',
      { class: 'panel narrow' },
      h('h1', { text: 'Groups' }),
      h('p', { text: 'Group chats are for signed-in members.' }),
      h('button', { type: 'button', text: 'Sign in', on: { click: () => ctx.signIn() } }),
    ),
  );
  return () => {};
}

/** The id a card's `ref` points at: the ref itself, or its id field. */
function refId(ref) {
  if (ref && typeof ref === 'object') return ref.id ?? ref.room_id ?? ref.sale_id ?? null;
  return ref ?? null;
}

// -- #/groups --------------------------------------------------------------------

export function mountList(ctx, view) {
  document.title = 'Groups · livemart';
  if (!ctx.session.token) return signInNeeded(ctx, view);
  const live = ctx.live();
  const me = ctx.session.userId;
  const followed = [];
  let unmounted = false;

  const list = h('ul', { id: 'group-list', class: 'plain-list group-list', 'aria-busy': 'true' });
  const listMessage = h('p', { id: 'group-list-message', class: 'inline-message', role: 'alert', hidden: true });
  const nameInput = h('input', { id: 'group-name-input', type: 'text', required: true, maxLength: 80, autocomplete: 'off' });
  const codeInput = h('input', { id: 'join-code-input', type: 'text', required: true, autocomplete: 'off' });
  const formMessage = h('p', { id: 'group-form-message', class: 'inline-message', role: 'alert', hidden: true });

  replace(
    view,
    h(
      'section',
      { class: 'panel narrow', 'aria-labelledby': 'groups-heading' },
      h('h1', { id: 'groups-heading', text: 'My groups' }),
      list,
      listMessage,
      h('h2', { text: 'New group' }),
      h(
        'form',
        { class: 'stack', on: { submit: onCreate } },
        field('Group name', nameInput),
        h('button', { id: 'create-group-button', type: 'submit', text: 'Create group' }),
      ),
      h('h2', { text: 'Join with an invite code' }),
      h(
        'form',
        { class: 'stack', on: { submit: onJoin } },
        field('Invite code', codeInput),
        h('button', { id: 'join-group-button', type: 'submit', class: 'secondary', text: 'Join' }),
      ),
      formMessage,
    ),
  );

  ctx.api.get('/api/me/groups').then(
    (body) => {
      if (unmounted) return;
      const groups = listFrom(body, 'groups', 'items');
      list.removeAttribute('aria-busy');
      if (!groups.length) {
        replace(list, h('li', { class: 'hint', text: 'No groups yet: create one or join with a code.' }));
        return;
      }
      replace(list, groups.map(groupItem));
    },
    (error) => {
      list.removeAttribute('aria-busy');
      say(listMessage, errorText(error));
    },
  );

  function groupItem(group, index) {
    let unread = Number(group.unread) || 0;
    const badge = h('span', { class: 'unread', 'aria-label': 'unread messages' });
    const show = () => {
      badge.dataset.value = String(unread);
      badge.textContent = formatCount(unread);
      badge.hidden = unread === 0;
    };
    show();
    const ch = `group:${group.id}`;
    if (index < LIST_SUBSCRIPTIONS && !followed.includes(ch)) {
      followed.push(ch);
      live.subscribe(ch, {
        onState(state) {
          if (typeof state.unread === 'number') unread = state.unread;
          show();
        },
        onPush(push) {
          if (push.ev === 'message' && String(push.data?.user_id) !== me) {
            unread += 1;
            show();
          }
        },
      });
    }
    return h(
      'li',
      { class: 'group-item', dataset: { groupId: String(group.id) } },
      h('a', { href: `#/groups/${encodeURIComponent(group.id)}` }, h('span', { class: 'group-name', text: group.name ?? `Group ${group.id}` }), badge),
    );
  }

  async function onCreate(event) {
    event.preventDefault();
    try {
      const group = await ctx.api.post('/api/groups', { name: nameInput.value.trim() });
      ctx.go(`#/groups/${encodeURIComponent(group.id)}`);
    } catch (error) {
      say(formMessage, errorText(error));
    }
  }

  async function onJoin(event) {
    event.preventDefault();
    try {
      const joined = await ctx.api.post('/api/groups/join', { code: codeInput.value.trim() });
      const id = joined?.id ?? joined?.group?.id ?? joined?.group_id;
      if (id !== undefined) ctx.go(`#/groups/${encodeURIComponent(id)}`);
      else ctx.reload();
    } catch (error) {
      say(formMessage, errorText(error));
    }
  }

  return () => {
    unmounted = true;
    for (const ch of followed) live.unsubscribe(ch);
  };
}

// -- #/groups/<id> ---------------------------------------------------------------

export function mountChat(ctx, view, { groupId }) {
  if (!ctx.session.token) return signInNeeded(ctx, view);
  const live = ctx.live();
  const me = ctx.session.userId;
  const ch = `group:${groupId}`;
  const log = new MessageLog();
  /** client_msg_id -> {body, node}: sends without a seq yet. */
  const pending = new Map();
  /** Room and sale lookups shared by every card on the page. */
  const lookups = new Map();
  let loaded = false;
  let filling = null;
  let lastRead = 0;
  let readTimer = null;
  let unmounted = false;

  const title = h('h1', { id: 'group-title', text: `Group ${groupId}` });
  const members = h('span', { id: 'group-members', class: 'hint' });
  const inviteCode = h('output', { id: 'invite-code', class: 'invite-code', hidden: true });
  const headerMessage = h('p', { id: 'group-message', class: 'inline-message', role: 'alert', hidden: true });
  const loadEarlier = h('button', { id: 'load-earlier', type: 'button', class: 'secondary small', text: 'Load earlier messages', hidden: true, on: { click: onLoadEarlier } });
  const messageList = h('ol', { id: 'message-list', class: 'message-list', role: 'log', 'aria-label': 'Messages', 'aria-busy': 'true' });
  const input = h('textarea', { id: 'message-input', rows: 1, maxLength: 2000, required: true, placeholder: 'Message' });
  const sendError = h('p', { id: 'send-error', class: 'inline-message', role: 'alert', hidden: true });
  const shareRoom = h('input', { id: 'share-room-input', type: 'text', autocomplete: 'off' });
  const shareSale = h('input', { id: 'share-sale-input', type: 'text', autocomplete: 'off' });

  replace(
    view,
    h(
      'section',
      { class: 'chat', 'aria-labelledby': 'group-title' },
      h(
        'header',
        { class: 'chat-header' },
        h('a', { href: '#/groups', class: 'back', 'aria-label': 'All groups', text: '‹' }),
        h('div', { class: 'chat-title' }, title, members),
        h('button', { id: 'invite-button', type: 'button', class: 'secondary small', text: 'Invite', on: { click: onInvite } }),
        h('button', { id: 'leave-group-button', type: 'button', class: 'danger small', text: 'Leave', on: { click: onLeave } }),
      ),
      inviteCode,
      headerMessage,
      h('div', { class: 'message-scroll' }, loadEarlier, messageList),
      h(
        'form',
        { id: 'message-form', class: 'composer', on: { submit: onSend } },
        h('label', { for: 'message-input', class: 'sr-only', text: 'Message' }),
        input,
        h('button', { id: 'send-button', type: 'submit', text: 'Send' }),
      ),
      sendError,
      h(
        'details',
        { class: 'share' },
        h('summary', { text: 'Share a live room or a flash sale' }),
        h('form', { class: 'row', on: { submit: (e) => onShare(e, 'room_card', shareRoom) } }, field('Room id', shareRoom), h('button', { id: 'share-room-button', type: 'submit', class: 'secondary', text: 'Share room' })),
        h('form', { class: 'row', on: { submit: (e) => onShare(e, 'sale_card', shareSale) } }, field('Sale id', shareSale), h('button', { id: 'share-sale-button', type: 'submit', class: 'secondary', text: 'Share sale' })),
      ),
    ),
  );
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      input.form.requestSubmit();
    }
  });

  // -- channel and history ------------------------------------------------------

  live.subscribe(ch, {
    onState(state, reply) {
      title.textContent = state.name ?? title.textContent;
      document.title = `${title.textContent} · livemart`;
      showMembers(state.members ?? state.member_count ?? state.members_count);
      const head = typeof reply.off === 'number' ? reply.off : Number(state.last_seq) || 0;
      if (!loaded || head - log.contiguous > RESYNC_AFTER) openAt(head);
      else fill(log.contiguous, head);
    },
    onPush(push) {
      const data = push.data ?? {};
      if (push.ev === 'message' || push.ev === 'announcement') {
        const message = {
          ...data,
          seq: Number.isInteger(data.seq) ? data.seq : push.off,
          kind: data.kind ?? (push.ev === 'announcement' ? 'announcement' : 'text'),
        };
        if (loaded) {
          const after = log.gapBelow(message.seq);
          if (after !== null) fill(after, message.seq - 1);
        }
        addMessage(message);
      } else if (push.ev === 'member.join') {
        systemLine(`${data.name ?? 'Someone'} joined`);
        bumpMembers(1);
      } else if (push.ev === 'member.leave') {
        systemLine(String(data.user_id) === me ? 'You left this group' : 'A member left');
        bumpMembers(-1);
      }
    },
    onError(error) {
      say(headerMessage, errorText(error));
      messageList.removeAttribute('aria-busy');
    },
  });

  /** Show the newest page ending at `head` (first open, or a gap too long to replay). */
  async function openAt(head) {
    loaded = false;
    log.reset(Math.max(0, head - PAGE));
    replace(messageList, [...pending.values()].map((p) => p.node));
    await fill(log.contiguous, head);
    loaded = true;
    messageList.removeAttribute('aria-busy');
    loadEarlier.hidden = head <= PAGE;
    scrollToEnd();
    scheduleRead();
  }

  /** Fetch history after `after` up to `upto`, one fill at a time. */
  function fill(after, upto) {
    const run = async () => {
      if (filling) await filling;
      let cursor = Math.max(after, log.contiguous);
      for (let round = 0; cursor < upto && round < RESYNC_AFTER / FETCH_LIMIT + 1 && !unmounted; round++) {
        const body = await fetchPage(cursor, FETCH_LIMIT);
        if (body === null) return; // failed; the next push or reconnect tries again
        for (const message of body) addMessage(message);
        const last = body.length ? body[body.length - 1].seq : upto;
        log.settledUpTo(Math.min(last, upto));
        if (body.length < FETCH_LIMIT) break;
        cursor = last;
      }
      log.settledUpTo(upto);
    };
    const done = run().finally(() => {
      if (filling === done) filling = null;
    });
    filling = done;
    return done;
  }

  async function fetchPage(after, limit) {
    try {
      const body = await ctx.api.get(`/api/groups/${encodeURIComponent(groupId)}/messages?after=${after}&limit=${limit}`);
      return listFrom(body, 'messages', 'items').filter((m) => Number.isInteger(m.seq));
    } catch (error) {
      say(headerMessage, `History: ${errorText(error)}`);
      return null;
    }
  }

  async function onLoadEarlier() {
    const lowest = log.lowest;
    if (lowest === null || lowest <= 1) {
      loadEarlier.hidden = true;
      return;
    }
    const after = Math.max(0, lowest - 1 - PAGE);
    const firstVisible = messageList.firstElementChild;
    const body = await fetchPage(after, lowest - 1 - after);
    if (body === null) return;
    for (const message of body) addMessage(message);
    firstVisible?.scrollIntoView({ block: 'start' });
    loadEarlier.hidden = after === 0;
  }

  // -- rendering -------------------------------------------------------------------

  function addMessage(message) {
    if (!log.add(message)) return;
    const successor = log.successorOf(message.seq);
    const before = successor === null ? firstPendingNode() : messageList.querySelector(`li[data-seq="${successor}"]`);
    const nearBottom = isNearBottom();
    messageList.insertBefore(messageItem(message), before);
    if (nearBottom && successor === null) scrollToEnd();
    scheduleRead();
  }

  function messageItem(message) {
    if (message.kind === 'recall') {
      // A tombstone: it takes a seq but shows only as the change to the message it names.
      markRecalled(message.ref?.seq);
      return h('li', { class: 'message recall', dataset: { seq: String(message.seq) }, hidden: true });
    }
    if (message.kind === 'announcement') {
      return h('li', { class: 'message announcement', dataset: { seq: String(message.seq) }, text: message.text ?? '' });
    }
    const mine = String(message.user_id) === me;
    return h(
      'li',
      { class: `message${mine ? ' mine' : ''}`, dataset: { seq: String(message.seq) } },
      h('span', { class: 'message-name', text: mine ? 'You' : message.name ?? 'member' }),
      messageBody(message),
      h('time', { class: 'message-time', text: formatClock(message.ts) }),
    );
  }

  function messageBody(message) {
    if (message.recalled) return recalledBody();
    const id = refId(message.ref);
    if (message.kind === 'room_card' && id !== null) return roomCard(id, message.text, message.ref);
    if (message.kind === 'sale_card' && id !== null) return saleCard(id, message.text);
    return h('p', { class: 'message-text', text: message.text ?? '' });
  }

  function recalledBody() {
    return h('p', { class: 'message-text recalled', text: 'Message recalled' });
  }

  function markRecalled(seq) {
    const target = log.bySeq.get(seq);
    if (target) target.recalled = true;
    const node = messageList.querySelector(`li[data-seq="${seq}"]`);
    node?.querySelector('.message-text, .card')?.replaceWith(recalledBody());
  }

  function lookup(path) {
    if (!lookups.has(path)) lookups.set(path, ctx.api.get(path));
    return lookups.get(path);
  }

  function roomCard(roomId, text, ref) {
    // The server may add the room's status and title to the ref; a lookup refreshes them.
    const known = ref && typeof ref === 'object' ? ref : {};
    const status = h('span', { class: 'badge', text: known.status ?? '…', dataset: { state: known.status ?? '' } });
    const name = h('strong', { text: known.title ?? (text || `Room ${roomId}`) });
    const card = h(
      'a',
      { class: 'card room-card', href: `#/room/${encodeURIComponent(roomId)}`, dataset: { roomId: String(roomId) } },
      status,
      ' ',
      name,
      h('span', { class: 'card-action', text: 'Watch ›' }),
    );
    lookup(`/api/rooms/${encodeURIComponent(roomId)}`).then(
      (room) => {
        name.textContent = room.title ?? name.textContent;
        status.textContent = room.status === 'live' ? `live · ${formatCount(room.viewers ?? 0)}` : room.status ?? '';
        status.dataset.state = room.status ?? '';
      },
      (error) => {
        status.textContent = error.code === 'not_found' ? 'gone' : '?';
      },
    );
    return card;
  }

  function saleCard(saleId, text) {
    const name = h('strong', { text: text || `Flash sale ${saleId}` });
    const price = h('span', { class: 'price' });
    const stock = h('span', { class: 'sale-remaining' });
    const path = `/api/flash-sales/${encodeURIComponent(saleId)}`;
    const buy = new BuyControl({
      api: ctx.api,
      signedIn: true,
      source: 'group',
      onOrder: (done) => {
        ctx.toast(done, 'success');
        lookups.delete(path);
        load();
      },
      onSignIn: () => ctx.signIn(),
    });
    const load = () =>
      lookup(path).then(
        (sale) => {
          const title = sale.product?.title ?? sale.title ?? sale.product_title;
          if (title) name.textContent = title;
          price.textContent = formatMoney(sale.price_cents, sale.currency ?? sale.product?.currency);
          const left = remainingOf(sale);
          stock.textContent = left === null ? '' : left === 0 ? 'sold out' : `${left} left`;
          buy.setSale(sale, name.textContent);
        },
        (error) => say(buy.status, errorText(error)),
      );
    load();
    return h('div', { class: 'card sale-card', dataset: { saleId: String(saleId) } }, name, h('p', {}, price, ' · ', stock), buy.root);
  }

  function systemLine(text) {
    messageList.insertBefore(h('li', { class: 'message system', text }), firstPendingNode());
  }

  function showMembers(count) {
    if (typeof count !== 'number') return;
    members.dataset.value = String(count);
    members.textContent = `${count} member${count === 1 ? '' : 's'}`;
  }

  function bumpMembers(delta) {
    const count = Number(members.dataset.value);
    if (members.dataset.value !== undefined && Number.isFinite(count)) showMembers(Math.max(0, count + delta));
  }

  function firstPendingNode() {
    return messageList.querySelector('li.pending');
  }

  function isNearBottom() {
    const scroller = messageList.parentElement;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function scrollToEnd() {
    const scroller = messageList.parentElement;
    scroller.scrollTop = scroller.scrollHeight;
  }

  // -- sending ----------------------------------------------------------------------

  function onSend(event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    send({ text });
  }

  async function onShare(event, kind, field) {
    event.preventDefault();
    const id = field.value.trim();
    if (!id) return;
    const path = kind === 'room_card' ? `/api/rooms/${encodeURIComponent(id)}` : `/api/flash-sales/${encodeURIComponent(id)}`;
    try {
      const target = await lookup(path);
      const label = target.title ?? target.product?.title ?? target.product_title;
      const text = kind === 'room_card' ? `Live room: ${label ?? id}` : `Flash sale: ${label ?? id}`;
      field.value = '';
      send({ text, kind, ref: String(id) });
    } catch (error) {
      lookups.delete(path);
      say(sendError, errorText(error));
    }
  }

  /** Show the message at once as pending, then deliver it (retries reuse its id). */
  function send(body) {
    const clientMsgId = newKey();
    const retry = h('button', { type: 'button', class: 'small secondary', text: 'Retry', hidden: true, on: { click: () => deliver(clientMsgId) } });
    const state = h('span', { class: 'pending-state', text: 'sending…' });
    const node = h(
      'li',
      { class: 'message mine pending', dataset: { clientMsgId } },
      h('span', { class: 'message-name', text: 'You' }),
      h('p', { class: 'message-text', text: body.text }),
      state,
      retry,
    );
    pending.set(clientMsgId, { body, node, state, retry });
    messageList.append(node);
    scrollToEnd();
    deliver(clientMsgId);
  }

  async function deliver(clientMsgId) {
    const entry = pending.get(clientMsgId);
    if (!entry) return;
    entry.retry.hidden = true;
    entry.state.textContent = 'sending…';
    entry.node.dataset.state = 'sending';
    const args = { group: groupId, text: entry.body.text, client_msg_id: clientMsgId };
    if (entry.body.kind) Object.assign(args, { kind: entry.body.kind, ref: entry.body.ref });
    for (let attempt = 1; attempt <= SEND_ATTEMPTS; attempt++) {
      try {
        const { seq } = await live.request('group.send', args);
        pending.delete(clientMsgId);
        entry.node.remove();
        if (Number.isInteger(seq)) {
          const message = { seq, user_id: me, name: ctx.session.name, text: entry.body.text, kind: entry.body.kind ?? 'text', ref: entry.body.ref ?? null, ts: Date.now() };
          if (loaded) {
            const after = log.gapBelow(seq);
            if (after !== null) fill(after, seq - 1);
          }
          addMessage(message);
        }
        say(sendError, '');
        return;
      } catch (error) {
        if (!TRANSIENT_CODES.has(error.code)) {
          failed(entry, errorText(error));
          return;
        }
        if (attempt < SEND_ATTEMPTS) await pause(1000 * attempt);
      }
    }
    failed(entry, 'Not sent.');
  }

  function failed(entry, text) {
    if (unmounted) return;
    entry.state.textContent = text;
    entry.node.dataset.state = 'failed';
    entry.retry.hidden = false;
  }

  // -- read cursor, invites, leaving --------------------------------------------------

  function scheduleRead() {
    if (readTimer !== null || unmounted) return;
    readTimer = setTimeout(markRead, READ_DELAY_MS);
  }

  function markRead() {
    readTimer = null;
    if (unmounted || !loaded || document.visibilityState !== 'visible') return;
    const seq = log.highest;
    if (seq <= lastRead) return;
    lastRead = seq;
    live.request('group.read', { group: groupId, seq }).catch(() => {
      lastRead = 0; // try again with the next message
    });
  }
  const onVisible = () => scheduleRead();
  document.addEventListener('visibilitychange', onVisible);

  async function onInvite() {
    try {
      const { code } = await ctx.api.post(`/api/groups/${encodeURIComponent(groupId)}/invites`);
      inviteCode.textContent = `Invite code: ${code}`;
      inviteCode.hidden = false;
    } catch (error) {
      say(headerMessage, errorText(error));
    }
  }

  async function onLeave() {
    if (!window.confirm('Leave this group?')) return;
    try {
      await ctx.api.del(`/api/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(me)}`);
      ctx.go('#/groups');
    } catch (error) {
      say(headerMessage, errorText(error));
    }
  }

  return () => {
    // Leaving the conversation counts as having seen what was on screen.
    if (readTimer !== null) {
      clearTimeout(readTimer);
      markRead();
    }
    unmounted = true;
    document.removeEventListener('visibilitychange', onVisible);
    live.unsubscribe(ch);
  };
}
