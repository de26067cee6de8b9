/**
 * A live room as the viewer sees it, kept from the subscribe snapshot and the
 * room's pushes. Pure data: the page asks what changed and renders only that.
 */

/** Comments kept in memory and on screen; older ones scroll away for good. */
export const MAX_COMMENTS = 150;

/**
 * A room from a subscribe snapshot. Field names follow the contract's list
 * (title, status, viewers, likes, pinned, active sales, last comments) and accept
 * the plain variants a server might use for them.
 */
export function roomFromState(state) {
  const room = {
    title: typeof state.title === 'string' ? state.title : '',
    status: typeof state.status === 'string' ? state.status : 'unknown',
    hostId: state.host_id === undefined || state.host_id === null ? null : String(state.host_id),
    viewers: numberFrom(state.viewers, 'count'),
    likes: numberFrom(state.likes, 'total'),
    pinned: null,
    sales: new Map(),
    comments: [],
    // Rooms report the stream in `status` (live | offline | ended); `stream` is accepted too.
    stream: streamFrom(state.stream ?? state.status),
  };
  const sales = state.sales ?? state.active_sales ?? [];
  for (const sale of Array.isArray(sales) ? sales : Object.values(sales)) addSale(room, sale);
  pin(room, state.pinned);
  const comments = state.comments ?? state.last_comments ?? [];
  if (Array.isArray(comments)) {
    room.comments = comments.filter(isObject).map((c) => commentFrom(c, c.off)).slice(-MAX_COMMENTS);
  }
  return room;
}

/**
 * Apply one push and say what changed:
 * `{kind: 'comment', comment, dropped}`, `{kind: 'comment.deleted', off}`, `{kind: 'likes'}`,
 * `{kind: 'viewers'}`, `{kind: 'offer'}`, `{kind: 'purchase', text}`, `{kind: 'stream'}`,
 * `{kind: 'ended'}`, or null for an event this client does not know.
 */
export function applyPush(room, push) {
  const data = isObject(push.data) ? push.data : {};
  switch (push.ev) {
    case 'comment': {
      const comment = commentFrom(data, push.off);
      room.comments.push(comment);
      const dropped = room.comments.length > MAX_COMMENTS ? room.comments.shift() : null;
      return { kind: 'comment', comment, dropped };
    }
    case 'comment.deleted':
      room.comments = room.comments.filter((c) => c.off !== data.off);
      return { kind: 'comment.deleted', off: data.off };
    case 'likes':
      room.likes = numberFrom(data.total);
      return { kind: 'likes' };
    case 'viewers':
      room.viewers = numberFrom(data.count);
      return { kind: 'viewers' };
    case 'pin':
      pin(room, data.product);
      return { kind: 'offer' };
    case 'unpin':
      room.pinned = null;
      return { kind: 'offer' };
    case 'sale.start':
      addSale(room, data.sale);
      return { kind: 'offer' };
    case 'stock': {
      const sale = room.sales.get(String(data.sale_id));
      if (!sale || typeof data.remaining !== 'number') return null;
      sale.remaining = data.remaining;
      return { kind: 'offer' };
    }
    case 'sale.end':
      room.sales.delete(String(data.sale_id));
      return { kind: 'offer' };
    case 'purchase': {
      const who = typeof data.name === 'string' && data.name ? data.name : 'Someone';
      const what = typeof data.product_title === 'string' && data.product_title ? data.product_title : 'an item';
      return { kind: 'purchase', text: `${who} just bought ${what}` };
    }
    case 'stream':
      room.stream = streamFrom(data.status);
      return { kind: 'stream' };
    case 'room.end':
      room.status = 'ended';
      room.stream = 'offline';
      return { kind: 'ended' };
    default:
      return null;
  }
}

/**
 * What the product card shows: the pinned product with its running sale, or,
 * with nothing pinned, the first running sale. Null when there is neither.
 */
export function currentOffer(room) {
  const sales = [...room.sales.values()];
  if (room.pinned) {
    const sale = sales.find((s) => String(s.product_id) === String(room.pinned.id)) ?? null;
    return { product: room.pinned, sale };
  }
  const sale = sales[0];
  if (!sale) return null;
  return { product: productFrom(sale.product) ?? { id: sale.product_id, title: sale.title ?? 'Flash sale' }, sale };
}

/** Units left in a sale: `remaining` as pushed, else the starting stock. */
export function remainingOf(sale) {
  if (typeof sale.remaining === 'number') return sale.remaining;
  return typeof sale.stock === 'number' ? sale.stock : null;
}

/** Pin a product; a pinned product may carry its running sale, which joins the sales. */
function pin(room, product) {
  room.pinned = productFrom(product);
  const sale = room.pinned?.sale;
  if (isObject(sale) && !room.sales.has(String(sale.id))) addSale(room, sale);
}

function addSale(room, sale) {
  if (isObject(sale) && sale.id !== undefined) room.sales.set(String(sale.id), { ...sale });
}

function commentFrom(data, off) {
  return {
    off: typeof off === 'number' ? off : null,
    id: data.id ?? null,
    userId: data.user_id === undefined || data.user_id === null ? null : String(data.user_id),
    name: typeof data.name === 'string' && data.name ? data.name : 'guest',
    text: typeof data.text === 'string' ? data.text : '',
    ts: data.ts ?? null,
  };
}

function productFrom(value) {
  return isObject(value) && value.id !== undefined ? { ...value } : null;
}

function streamFrom(value) {
  const status = isObject(value) ? value.status : value;
  return status === 'live' || status === 'offline' ? status : 'unknown';
}

function numberFrom(value, key) {
  if (typeof value === 'number') return value;
  if (key && isObject(value) && typeof value[key] === 'number') return value[key];
  return 0;
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
