/**
 * The host console. `#/host` creates or reopens a room; `#/host/<id>` runs it:
 * going live from the browser camera over WHIP (or the settings for OBS),
 * products, pinning, flash sales, moderation of live comments, and the sales
 * figures polled from the stats endpoint.
 */

import { CommentList } from './comment-list.js';
import { field, h, replace, say } from './dom.js';
import { errorText } from './errors.js';
import { formatCount, formatMoney } from './format.js';
import { applyPush, remainingOf, roomFromState } from './room-model.js';
import { statRows } from './stats.js';
import { startPublishing } from './webrtc.js';

const STATS_EVERY_MS = 5000;
const MUTE_SECONDS = 300;

// -- what the browser remembers for the host (there is no list API) ------------

function remembered(kind, userId) {
  try {
    const value = JSON.parse(localStorage.getItem(`livemart.${kind}.${userId}`) ?? '[]');
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}

function remember(kind, userId, item) {
  const items = [item, ...remembered(kind, userId).filter((other) => String(other.id) !== String(item.id))];
  try {
    localStorage.setItem(`livemart.${kind}.${userId}`, JSON.stringify(items.slice(0, 50)));
  } catch {
    // Storage full or refused: the list is a convenience only.
  }
}

function signInNeeded(ctx, view) {
  replace(
    view,
    h(
      'section',
      { class: 'panel narrow' },
      h('h1', { text: 'Host console' }),
      h('p', { text: 'Hosting needs an access token. Ask the operator to run `livemart token --user ID --name NAME`.' }),
      h('button', { type: 'button', text: 'Sign in', on: { click: () => ctx.signIn() } }),
    ),
  );
  return () => {};
}

// -- #/host ------------------------------------------------------------------------

export function mountHome(ctx, view) {
  document.title = 'Host console · livemart';
  if (!ctx.session.token) return signInNeeded(ctx, view);
  const userId = ctx.session.userId;
  const titleInput = h('input', { id: 'room-title-input', type: 'text', required: true, maxLength: 120, autocomplete: 'off' });
  const createError = h('p', { id: 'create-room-error', class: 'inline-message', role: 'alert', hidden: true });
  const createForm = h(
    'form',
    { id: 'create-room-form', class: 'stack', on: { submit: onCreate } },
    field('Room title', titleInput),
    h('button', { id: 'create-room-button', type: 'submit', text: 'Create room' }),
    createError,
  );
  const openInput = h('input', { id: 'host-room-id-input', type: 'text', required: true, autocomplete: 'off' });
  const openForm = h(
    'form',
    { class: 'stack', on: { submit: onOpen } },
    field('Room id', openInput),
    h('button', { type: 'submit', class: 'secondary', text: 'Open' }),
  );
  const rooms = remembered('rooms', userId);
  const roomList = h(
    'ul',
    { id: 'hosted-rooms', class: 'plain-list' },
    rooms.map((room) => h('li', {}, h('a', { href: `#/host/${encodeURIComponent(room.id)}`, text: room.title || `Room ${room.id}` }))),
  );

  replace(
    view,
    h(
      'section',
      { class: 'panel narrow', 'aria-labelledby': 'host-heading' },
      h('h1', { id: 'host-heading', text: 'Host console' }),
      h('h2', { text: 'New live room' }),
      createForm,
      rooms.length ? h('h2', { text: 'Your rooms' }) : null,
      rooms.length ? roomList : null,
      h('h2', { text: 'Open a room by id' }),
      openForm,
    ),
  );

  async function onCreate(event) {
    event.preventDefault();
    const title = titleInput.value.trim();
    if (!title) return;
    try {
      const room = await ctx.api.post('/api/rooms', { title });
      remember('rooms', userId, { id: room.id, title: room.title ?? title });
      ctx.go(`#/host/${encodeURIComponent(room.id)}`);
    } catch (error) {
      say(createError, errorText(error));
    }
  }

  function onOpen(event) {
    event.preventDefault();
    const id = openInput.value.trim();
    if (id) ctx.go(`#/host/${encodeURIComponent(id)}`);
  }

  return () => {};
}

// -- #/host/<id> -----------------------------------------------------------------

export function mountRoom(ctx, view, { roomId }) {
  if (!ctx.session.token) return signInNeeded(ctx, view);
  const userId = ctx.session.userId;
  const live = ctx.live();
  const ch = `room:${roomId}`;
  let room = null;
  let unmounted = false;
  let camera = null;
  let publishing = null;
  let statsTimer = null;
  /** What the product list was last drawn from: redrawing it closes open sale forms. */
  let drawnProducts = null;

  // -- header ---------------------------------------------------------------
  const title = h('h1', { id: 'host-room-title', text: `Room ${roomId}` });
  const roomStatus = h('span', { id: 'host-room-status', class: 'badge', text: '…' });
  const headerMessage = h('p', { id: 'host-message', class: 'inline-message', role: 'alert', hidden: true });
  const endButton = h('button', { id: 'end-room-button', type: 'button', class: 'danger', text: 'End room', on: { click: onEnd } });
  const header = h(
    'header',
    { class: 'panel host-header' },
    h('div', { class: 'row wrap' }, title, roomStatus),
    h(
      'p',
      { class: 'row wrap' },
      h('a', { id: 'viewer-link', href: `#/room/${encodeURIComponent(roomId)}`, text: 'Open viewer page' }),
      endButton,
    ),
    headerMessage,
  );

  // -- going live -----------------------------------------------------------
  const whipUrl = new URL(`whip/${encodeURIComponent(roomId)}`, document.baseURI).toString();
  const preview = h('video', { id: 'host-preview', autoplay: true, muted: true, playsInline: true, 'aria-label': 'Camera preview' });
  const goLive = h('button', { id: 'go-live-button', type: 'button', text: 'Go live with camera', on: { click: onGoLive } });
  const stopLive = h('button', { id: 'stop-live-button', type: 'button', class: 'secondary', text: 'Stop', hidden: true, on: { click: onStopLive } });
  const publishStatus = h('p', { id: 'publish-status', class: 'inline-message', role: 'status', hidden: true });
  const obsUrl = h('input', { id: 'obs-url', type: 'text', readOnly: true, value: whipUrl });
  const obsToken = h('input', { id: 'obs-token', type: 'password', readOnly: true, value: ctx.session.token });
  const showToken = h('button', {
    id: 'obs-token-toggle',
    type: 'button',
    class: 'secondary',
    text: 'Show',
    'aria-controls': 'obs-token',
    on: {
      click: () => {
        const hidden = obsToken.type === 'password';
        obsToken.type = hidden ? 'text' : 'password';
        showToken.textContent = hidden ? 'Hide' : 'Show';
      },
    },
  });
  const obs = h(
    'details',
    { id: 'obs-settings', class: 'obs' },
    h('summary', { text: 'Stream from OBS instead' }),
    h('p', { text: 'In OBS: Settings → Stream → Service "WHIP". Paste the server URL and the bearer token below.' }),
    field('Server (WHIP URL)', obsUrl),
    h('div', { class: 'row' }, copyButton(obsUrl, 'Copy URL')),
    field('Bearer token', obsToken, 'This is your access token: treat it like a password.'),
    h('div', { class: 'row' }, showToken, copyButton(obsToken, 'Copy token')),
  );
  const livePanel = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'live-heading' },
    h('h2', { id: 'live-heading', text: 'Go live' }),
    h('div', { class: 'preview-frame' }, preview),
    h('div', { class: 'row' }, goLive, stopLive),
    publishStatus,
    obs,
  );

  // -- figures ----------------------------------------------------------------
  const viewersNow = h('span', { id: 'stat-viewers-now', dataset: { value: '0' }, text: '0' });
  const likesNow = h('span', { id: 'stat-likes-now', dataset: { value: '0' }, text: '0' });
  const statsList = h('dl', { id: 'stats', class: 'stats' });
  const statsUpdated = h('p', { id: 'stats-updated', class: 'hint' });
  const statsPanel = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'stats-heading' },
    h('h2', { id: 'stats-heading', text: 'Sales figures' }),
    h('p', { class: 'big-figures' }, h('span', {}, viewersNow, ' watching now'), h('span', {}, likesNow, ' likes')),
    statsList,
    statsUpdated,
  );

  // -- products and sales -------------------------------------------------------
  const productTitle = h('input', { id: 'product-title-input', type: 'text', required: true, maxLength: 120 });
  const productPrice = h('input', { id: 'product-price-input', type: 'number', required: true, min: '0', step: '0.01', inputMode: 'decimal' });
  const productCurrency = h('input', { id: 'product-currency-input', type: 'text', required: true, value: 'USD', maxLength: 3, pattern: '[A-Za-z]{3}' });
  const productImage = h('input', { id: 'product-image-input', type: 'url' });
  const productError = h('p', { id: 'product-error', class: 'inline-message', role: 'alert', hidden: true });
  const productForm = h(
    'form',
    { id: 'product-form', class: 'stack', on: { submit: onCreateProduct } },
    field('Product name', productTitle),
    h('div', { class: 'row' }, field('Price', productPrice), field('Currency', productCurrency)),
    field('Image URL (optional)', productImage),
    h('button', { id: 'create-product-button', type: 'submit', text: 'Add product' }),
    productError,
  );
  const productList = h('ul', { id: 'product-list', class: 'plain-list products' });
  const saleList = h('ul', { id: 'sale-list', class: 'plain-list' });
  const productsPanel = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'products-heading' },
    h('h2', { id: 'products-heading', text: 'Products' }),
    productList,
    h('h3', { text: 'Running sales' }),
    saleList,
    h('h3', { text: 'Add a product' }),
    productForm,
  );

  // -- moderation -------------------------------------------------------------
  const moderationStatus = h('p', { id: 'moderation-status', class: 'inline-message', role: 'status', hidden: true });
  const commentList = h('ol', { id: 'host-comment-list', class: 'comment-list moderated', role: 'log', 'aria-label': 'Live comments' });
  const comments = new CommentList(commentList, moderationButtons);
  const slowMode = h('input', { id: 'slow-mode-input', type: 'number', min: '0', max: '3600', value: '0', inputMode: 'numeric' });
  const slowModeForm = h(
    'form',
    { id: 'slow-mode-form', class: 'row', on: { submit: onSlowMode } },
    field('Slow mode: seconds between comments per viewer (0 = off)', slowMode),
    h('button', { id: 'slow-mode-button', type: 'submit', class: 'secondary', text: 'Set' }),
  );
  const moderationPanel = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'moderation-heading' },
    h('h2', { id: 'moderation-heading', text: 'Comments' }),
    commentList,
    moderationStatus,
    slowModeForm,
  );

  replace(view, h('div', { class: 'host-grid' }, header, livePanel, statsPanel, productsPanel, moderationPanel));
  renderProducts();

  // -- data -------------------------------------------------------------------

  ctx.api.get(`/api/rooms/${encodeURIComponent(roomId)}`).then(
    (info) => {
      if (unmounted || !info) return;
      title.textContent = info.title ?? title.textContent;
      document.title = `Host: ${title.textContent} · livemart`;
      roomStatus.textContent = info.status ?? '';
      remember('rooms', userId, { id: info.id ?? roomId, title: info.title });
      if (info.host_id !== undefined && String(info.host_id) !== userId) {
        say(headerMessage, 'You are not the host of this room: the controls below will be refused.', 'warning');
      }
    },
    (error) => say(headerMessage, errorText(error)),
  );

  live.subscribe(ch, {
    onState(state) {
      room = roomFromState(state);
      if (typeof state.slow_mode === 'number') slowMode.value = String(state.slow_mode);
      if (room.title) title.textContent = room.title;
      roomStatus.textContent = room.status;
      setNumber(viewersNow, room.viewers);
      setNumber(likesNow, room.likes);
      comments.reset(room.comments);
      renderProducts();
    },
    onPush(push) {
      if (!room) return;
      const change = applyPush(room, push);
      if (!change) return;
      if (change.kind === 'comment') comments.add(change.comment, change.dropped);
      else if (change.kind === 'comment.deleted') comments.remove(change.off);
      else if (change.kind === 'viewers') setNumber(viewersNow, room.viewers);
      else if (change.kind === 'likes') setNumber(likesNow, room.likes);
      else if (change.kind === 'offer') renderProducts();
      else if (change.kind === 'purchase') ctx.toast(change.text, 'purchase');
      else if (change.kind === 'ended') roomStatus.textContent = 'ended';
    },
    onError(error) {
      say(headerMessage, errorText(error));
    },
  });

  async function pollStats() {
    statsTimer = null;
    if (unmounted) return;
    if (!document.hidden) {
      try {
        const stats = await ctx.api.get(`/api/rooms/${encodeURIComponent(roomId)}/stats`);
        replace(statsList, statRows(stats).map((row) => h('div', { class: 'stat', dataset: { key: row.key } }, h('dt', { text: row.label }), h('dd', { text: row.value }))));
        statsUpdated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      } catch (error) {
        statsUpdated.textContent = `Figures unavailable: ${errorText(error)}`;
      }
    }
    if (!unmounted) statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
  }
  pollStats();

  // -- products -----------------------------------------------------------------

  function renderProducts() {
    const products = remembered('products', userId);
    const pinnedId = room?.pinned ? String(room.pinned.id) : null;
    // Stock and sale events come many times a second during a sale: they redraw only
    // the sale list, so a form being filled in and a "Sale started" message stay put.
    const drawing = JSON.stringify([pinnedId, products.map((product) => product.id)]);
    if (drawing !== drawnProducts) {
      drawnProducts = drawing;
      replace(
        productList,
        products.length ? products.map((product) => productItem(product, String(product.id) === pinnedId)) : h('li', { class: 'hint', text: 'No products yet.' }),
      );
    }
    const sales = room ? [...room.sales.values()] : [];
    replace(
      saleList,
      sales.length
        ? sales.map((sale) => {
            const left = remainingOf(sale);
            const name = products.find((p) => String(p.id) === String(sale.product_id))?.title ?? `Product ${sale.product_id}`;
            return h('li', { class: 'sale-item', dataset: { saleId: String(sale.id) } }, `${name}: `, h('strong', { class: 'sale-remaining', text: left === null ? '?' : String(left) }), ' left');
          })
        : h('li', { class: 'hint', text: 'No sale running.' }),
    );
  }

  function productItem(product, pinned) {
    const message = h('p', { class: 'inline-message', role: 'alert', hidden: true });
    const pinButton = h('button', {
      type: 'button',
      class: pinned ? 'secondary unpin-button' : 'pin-button',
      text: pinned ? 'Unpin' : 'Pin',
      'aria-pressed': pinned ? 'true' : 'false',
      on: { click: () => togglePin(product, pinned, message) },
    });
    const saleForm = saleFormFor(product, message);
    return h(
      'li',
      { class: 'product-item', dataset: { productId: String(product.id) } },
      h('div', { class: 'row wrap' }, h('strong', { text: product.title }), h('span', { text: formatMoney(product.price_cents, product.currency) }), pinned ? h('span', { class: 'badge', text: 'pinned' }) : null),
      h('div', { class: 'row wrap' }, pinButton),
      saleForm,
      message,
    );
  }

  function saleFormFor(product, message) {
    const n = (name, value, props = {}) => h('input', { type: 'number', name, value: String(value), required: true, min: '1', inputMode: 'numeric', ...props });
    const inputs = {
      stock: n('stock', 100),
      price: n('price', ((product.price_cents ?? 0) / 100).toFixed(2), { min: '0', step: '0.01', inputMode: 'decimal' }),
      limit: n('per_user_limit', 2),
      hold: n('hold_seconds', 120, { min: '10' }),
      minutes: n('minutes', 10),
    };
    const labelled = (label, input) => h('label', { class: 'mini-field' }, h('span', { text: label }), input);
    return h(
      'details',
      { class: 'sale-form' },
      h('summary', { text: 'Start a flash sale' }),
      h(
        'form',
        { class: 'grid-form', on: { submit: (event) => startSale(event, product, inputs, message) } },
        labelled('Stock', inputs.stock),
        labelled(`Sale price (${product.currency ?? ''})`, inputs.price),
        labelled('Per buyer', inputs.limit),
        labelled('Hold (s)', inputs.hold),
        labelled('Runs (min)', inputs.minutes),
        h('button', { type: 'submit', class: 'start-sale-button', text: 'Start sale' }),
      ),
    );
  }

  async function onCreateProduct(event) {
    event.preventDefault();
    const price = Math.round(Number.parseFloat(productPrice.value) * 100);
    if (!Number.isFinite(price) || price < 0) {
      say(productError, 'Enter a price such as 19.99.');
      return;
    }
    const body = {
      title: productTitle.value.trim(),
      price_cents: price,
      currency: productCurrency.value.trim().toUpperCase(),
    };
    if (productImage.value.trim()) body.image_url = productImage.value.trim();
    try {
      const product = await ctx.api.post('/api/products', body);
      remember('products', userId, { ...body, ...product });
      productForm.reset();
      productCurrency.value = body.currency;
      say(productError, '');
      renderProducts();
    } catch (error) {
      say(productError, errorText(error));
    }
  }

  async function togglePin(product, pinned, message) {
    try {
      await live.request(pinned ? 'unpin' : 'pin', { room: roomId, product_id: product.id });
      say(message, '');
    } catch (error) {
      say(message, errorText(error));
    }
  }

  async function startSale(event, product, inputs, message) {
    event.preventDefault();
    const minutes = Number.parseInt(inputs.minutes.value, 10);
    const body = {
      product_id: product.id,
      stock: Number.parseInt(inputs.stock.value, 10),
      price_cents: Math.round(Number.parseFloat(inputs.price.value) * 100),
      per_user_limit: Number.parseInt(inputs.limit.value, 10),
      hold_seconds: Number.parseInt(inputs.hold.value, 10),
      room_id: roomId,
      ends_at: new Date(Date.now() + minutes * 60_000).toISOString(),
    };
    if (Object.values(body).some((value) => typeof value === 'number' && !Number.isFinite(value))) {
      say(message, 'Fill in every number.');
      return;
    }
    try {
      const sale = await ctx.api.post('/api/flash-sales', body);
      say(message, `Sale ${sale.id} started.`, 'success');
    } catch (error) {
      say(message, errorText(error));
    }
  }

  // -- moderation ---------------------------------------------------------------

  function moderationButtons(comment) {
    if (comment.userId === null) return null;
    const act = (action, label, extra = {}) =>
      h('button', {
        type: 'button',
        class: `small ${action.replace('_', '-')}`,
        text: label,
        'aria-label': `${label}: ${comment.name}`,
        on: { click: () => moderate(action, comment, extra) },
      });
    return h(
      'span',
      { class: 'moderation' },
      comment.off === null ? null : act('delete_comment', 'Delete', { off: comment.off }),
      act('mute', 'Mute 5 min', { seconds: MUTE_SECONDS }),
      act('ban', 'Ban'),
    );
  }

  async function moderate(action, comment, extra) {
    try {
      await live.request('moderate', { room: roomId, user_id: comment.userId, action, ...extra });
      const done = { delete_comment: 'Comment deleted', mute: `${comment.name} muted for 5 minutes`, ban: `${comment.name} banned` }[action];
      say(moderationStatus, done, 'success');
    } catch (error) {
      say(moderationStatus, errorText(error));
    }
  }

  async function onSlowMode(event) {
    event.preventDefault();
    const seconds = Number.parseInt(slowMode.value, 10);
    if (!Number.isInteger(seconds) || seconds < 0) {
      say(moderationStatus, 'Enter a number of seconds, 0 to turn slow mode off.');
      return;
    }
    try {
      await live.request('moderate', { room: roomId, action: 'slow_mode', seconds });
      say(moderationStatus, seconds ? `Slow mode: one comment per ${seconds} s` : 'Slow mode off', 'success');
    } catch (error) {
      say(moderationStatus, errorText(error));
    }
  }

  // -- publishing ---------------------------------------------------------------

  async function onGoLive() {
    if (!navigator.mediaDevices?.getUserMedia) {
      say(publishStatus, 'The camera needs a secure page (https, or http://localhost). Use OBS instead.');
      return;
    }
    goLive.disabled = true;
    say(publishStatus, 'Asking for the camera…', 'info');
    try {
      camera = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
        audio: true,
      });
      preview.srcObject = camera;
      say(publishStatus, 'Connecting…', 'info');
      publishing = await startPublishing(whipUrl, ctx.session.token, camera, {
        onState(state) {
          if (state === 'connected') say(publishStatus, 'You are live.', 'success');
          else if (state === 'failed') {
            say(publishStatus, 'The connection to the server failed.');
            onStopLive();
          }
        },
      });
      if (unmounted) onStopLive();
      stopLive.hidden = false;
    } catch (error) {
      say(publishStatus, publishError(error));
      onStopLive();
    }
  }

  function onStopLive() {
    publishing?.stop();
    publishing = null;
    for (const track of camera?.getTracks() ?? []) track.stop();
    camera = null;
    preview.srcObject = null;
    goLive.disabled = false;
    stopLive.hidden = true;
  }

  async function onEnd() {
    if (!window.confirm('End this room for every viewer?')) return;
    try {
      await ctx.api.post(`/api/rooms/${encodeURIComponent(roomId)}/end`);
      onStopLive();
      roomStatus.textContent = 'ended';
    } catch (error) {
      say(headerMessage, errorText(error));
    }
  }

  const onPageHide = () => publishing?.stop({ keepalive: true });
  window.addEventListener('pagehide', onPageHide);

  return () => {
    unmounted = true;
    if (statsTimer !== null) clearTimeout(statsTimer);
    window.removeEventListener('pagehide', onPageHide);
    live.unsubscribe(ch);
    onStopLive();
  };
}

function publishError(error) {
  if (error.name === 'NotAllowedError') return 'Camera permission was refused.';
  if (error.name === 'NotFoundError') return 'No camera was found.';
  if (error.status === 401 || error.status === 403) return 'Only the host may publish to this room.';
  if (error.status === 409) return 'Someone is already publishing to this room.';
  return `Could not go live: ${error.message}`;
}

function copyButton(input, label) {
  return h('button', {
    type: 'button',
    class: 'secondary',
    text: label,
    on: {
      click: async (event) => {
        const button = event.currentTarget;
        try {
          await navigator.clipboard.writeText(input.value);
          button.textContent = 'Copied';
        } catch {
          input.select();
          button.textContent = 'Press Ctrl+C';
        }
        setTimeout(() => {
          button.textContent = label;
        }, 1500);
      },
    },
  });
}

function setNumber(node, value) {
  node.dataset.value = String(value);
  node.textContent = formatCount(value);
}
