/**
 * The viewer page, `#/room/<id>`: the stream over WHEP, live comments, likes,
 * the viewer count, the pinned product with live stock and a countdown, purchase
 * toasts and the buy button. Everything live comes from the `room:<id>` channel.
 */

import { BuyControl } from './buy-control.js';
import { CommentList } from './comment-list.js';
import { h, replace, say } from './dom.js';
import { errorText } from './errors.js';
import { formatCount, formatCountdown, formatMoney, parseTime } from './format.js';
import { applyPush, currentOffer, remainingOf, roomFromState } from './room-model.js';
import { StreamOffline, startPlayback } from './webrtc.js';

/** Likes are sent in batches: one command per this many ms at most. */
const LIKE_FLUSH_MS = 300;
/** The server accepts at most this many likes in one command. */
const MAX_LIKES_PER_COMMAND = 50;

export function mount(ctx, view, { roomId }) {
  const ch = `room:${roomId}`;
  const live = ctx.live();
  const signedIn = ctx.session.token !== null;
  let room = null;
  let roomInfo = null;
  let media = null;
  let startingVideo = false;
  let unmounted = false;
  let pendingLikes = 0;
  let shownLikes = 0;
  let likeTimer = null;

  // -- markup ---------------------------------------------------------------

  const video = h('video', { id: 'room-video', autoplay: true, muted: true, playsInline: true, 'aria-label': 'Live video' });
  const streamStatus = h('span', { id: 'stream-status', class: 'badge', dataset: { state: 'connecting' }, text: 'Connecting' });
  const viewerCount = h('span', { id: 'viewer-count', dataset: { value: '0' }, text: '0' });
  const unmute = h('button', { id: 'unmute-button', type: 'button', class: 'overlay-button', text: 'Unmute', hidden: true, on: { click: onUnmute } });
  const offline = h('p', { id: 'stream-offline', class: 'stage-message', hidden: true });
  const title = h('h1', { id: 'room-title', text: 'Loading room…' });
  const hostLink = h('a', { id: 'host-link', href: `#/host/${encodeURIComponent(roomId)}`, text: 'Open host console', hidden: true });
  const roomNotice = h('p', { id: 'room-notice', class: 'notice', role: 'alert', hidden: true });

  const pinnedImage = h('img', { id: 'pinned-image', alt: '', hidden: true, loading: 'lazy' });
  const pinnedTitle = h('h2', { id: 'pinned-title' });
  const pinnedPrice = h('span', { id: 'pinned-price', class: 'price' });
  const listPrice = h('s', { id: 'pinned-list-price', class: 'list-price' });
  const pinnedStock = h('span', { id: 'pinned-stock', dataset: { value: '' } });
  const countdown = h('span', { id: 'sale-countdown', class: 'countdown' });
  const quantity = h('input', { id: 'buy-quantity', type: 'number', min: '1', value: '1', inputMode: 'numeric', class: 'quantity' });
  const buy = new BuyControl({
    api: ctx.api,
    signedIn,
    source: 'room',
    idPrefix: 'buy',
    quantityInput: quantity,
    onOrder: (text) => ctx.toast(text, 'success'),
    onSignIn: () => ctx.signIn(),
  });
  const pinnedCard = h(
    'article',
    { id: 'pinned-card', class: 'product-card', hidden: true, 'aria-labelledby': 'pinned-title' },
    pinnedImage,
    h(
      'div',
      { class: 'product-body' },
      pinnedTitle,
      h('p', { class: 'prices' }, pinnedPrice, ' ', listPrice),
      h('p', { class: 'stock-line' }, pinnedStock, ' ', countdown),
      h('div', { class: 'buy-row' }, h('label', { for: 'buy-quantity', class: 'sr-only', text: 'Quantity' }), quantity, buy.root),
    ),
  );

  const commentList = h('ol', { id: 'comment-list', class: 'comment-list', role: 'log', 'aria-label': 'Live comments' });
  const comments = new CommentList(commentList);
  const commentInput = h('input', {
    id: 'comment-input',
    type: 'text',
    maxLength: 200,
    autocomplete: 'off',
    placeholder: signedIn ? 'Say something…' : 'Sign in to comment',
    disabled: !signedIn,
  });
  const commentSend = h('button', { id: 'comment-send', type: 'submit', text: 'Send', disabled: !signedIn });
  const commentError = h('p', { id: 'comment-error', class: 'inline-message', role: 'alert', hidden: true });
  const commentForm = h(
    'form',
    { id: 'comment-form', class: 'composer', on: { submit: onComment } },
    h('label', { for: 'comment-input', class: 'sr-only', text: 'Comment' }),
    commentInput,
    commentSend,
  );
  const likeTotal = h('span', { id: 'like-total', dataset: { value: '0' }, text: '0' });
  const likeButton = h(
    'button',
    { id: 'like-button', type: 'button', class: 'like', 'aria-label': 'Like', on: { click: onLike } },
    h('span', { 'aria-hidden': 'true', text: '♥' }),
    ' ',
    likeTotal,
  );

  replace(
    view,
    h(
      'section',
      { class: 'room', 'aria-labelledby': 'room-title' },
      h(
        'div',
        { class: 'stage' },
        video,
        h('div', { class: 'stage-top' }, streamStatus, h('span', { class: 'badge' }, viewerCount, ' watching'), unmute),
        offline,
      ),
      h(
        'div',
        { class: 'room-side' },
        h('header', { class: 'room-header' }, title, hostLink),
        roomNotice,
        pinnedCard,
        commentList,
        commentError,
        h('div', { class: 'room-actions' }, commentForm, likeButton),
      ),
    ),
  );

  // -- live channel ---------------------------------------------------------

  live.subscribe(ch, {
    onState(state) {
      room = roomFromState({ ...roomInfo, ...state });
      renderAll();
    },
    onPush(push) {
      if (!room) return;
      const change = applyPush(room, push);
      if (change) renderChange(change);
    },
    onError(error) {
      title.textContent = error.code === 'not_found' ? 'No such room' : 'Room unavailable';
      say(roomNotice, errorText(error));
      stopVideo();
      setStream('offline', error.code === 'not_found' ? 'This room does not exist.' : 'You cannot watch this room.');
    },
  });

  ctx.api.get(`/api/rooms/${encodeURIComponent(roomId)}`).then(
    (info) => {
      if (unmounted || !info) return;
      roomInfo = info;
      if (!room) title.textContent = info.title ?? title.textContent;
      hostLink.hidden = !(ctx.session.userId && String(info.host_id) === ctx.session.userId);
    },
    (error) => {
      if (error.code === 'not_found') title.textContent = 'No such room';
    },
  );

  function renderAll() {
    title.textContent = room.title || roomInfo?.title || `Room ${roomId}`;
    document.title = `${title.textContent} · livemart`;
    setCount(viewerCount, room.viewers);
    shownLikes = Math.max(room.likes, 0);
    setCount(likeTotal, shownLikes + pendingLikes);
    comments.reset(room.comments);
    renderOffer();
    if (room.status === 'ended') showEnded();
    else if (room.stream === 'offline') setStream('offline');
    else startVideo();
  }

  function renderChange(change) {
    switch (change.kind) {
      case 'comment':
        comments.add(change.comment, change.dropped);
        break;
      case 'comment.deleted':
        comments.remove(change.off);
        break;
      case 'likes':
        // Totals are aggregated server-side; never show a number going backwards.
        shownLikes = Math.max(shownLikes, room.likes);
        setCount(likeTotal, shownLikes + pendingLikes);
        break;
      case 'viewers':
        setCount(viewerCount, room.viewers);
        break;
      case 'offer':
        renderOffer();
        break;
      case 'purchase':
        ctx.toast(change.text, 'purchase');
        break;
      case 'stream':
        if (room.stream === 'live') startVideo();
        else {
          stopVideo();
          setStream('offline');
        }
        break;
      case 'ended':
        showEnded();
        break;
    }
  }

  // -- product card ---------------------------------------------------------

  function renderOffer() {
    const offer = room ? currentOffer(room) : null;
    pinnedCard.hidden = offer === null;
    if (!offer) {
      buy.setSale(null, '');
      return;
    }
    const { product, sale } = offer;
    pinnedTitle.textContent = product.title ?? 'Product';
    if (product.image_url) {
      pinnedImage.src = product.image_url;
      pinnedImage.hidden = false;
    } else {
      pinnedImage.removeAttribute('src');
      pinnedImage.hidden = true;
    }
    const currency = product.currency ?? sale?.currency;
    const listCents = product.price_cents;
    const priceCents = sale?.price_cents ?? listCents;
    pinnedPrice.textContent = formatMoney(priceCents, currency);
    listPrice.textContent = sale && listCents && listCents !== priceCents ? formatMoney(listCents, currency) : '';
    const left = sale ? remainingOf(sale) : null;
    pinnedStock.dataset.value = left === null ? '' : String(left);
    pinnedStock.textContent = left === null ? '' : left === 0 ? 'Sold out' : `${left} left`;
    quantity.max = sale?.per_user_limit ? String(sale.per_user_limit) : '';
    quantity.hidden = !sale;
    buy.setSale(sale, product.title);
    tick();
  }

  /** Once a second: the sale countdown and whether the sale can be bought now. */
  function tick() {
    const sale = room ? currentOffer(room)?.sale : null;
    const now = Date.now();
    const startsAt = parseTime(sale?.starts_at);
    const endsAt = parseTime(sale?.ends_at);
    if (startsAt !== null && startsAt > now) countdown.textContent = `starts in ${formatCountdown(startsAt - now)}`;
    else if (endsAt !== null) countdown.textContent = endsAt > now ? `ends in ${formatCountdown(endsAt - now)}` : 'ended';
    else countdown.textContent = '';
    buy.refresh(now);
  }
  const ticker = setInterval(tick, 1000);

  // -- comments and likes -----------------------------------------------------

  async function onComment(event) {
    event.preventDefault();
    const text = commentInput.value.trim();
    if (!text) return;
    commentSend.disabled = true;
    try {
      await live.request('comment', { room: roomId, text });
      commentInput.value = '';
      say(commentError, '');
    } catch (error) {
      say(commentError, errorText(error));
    } finally {
      commentSend.disabled = !signedIn;
      commentInput.focus();
    }
  }

  function onLike() {
    if (!signedIn) {
      ctx.signIn();
      return;
    }
    pendingLikes += 1;
    setCount(likeTotal, shownLikes + pendingLikes);
    likeButton.classList.remove('pop');
    void likeButton.offsetWidth; // restart the animation
    likeButton.classList.add('pop');
    if (likeTimer === null) likeTimer = setTimeout(flushLikes, LIKE_FLUSH_MS);
  }

  function flushLikes() {
    likeTimer = null;
    const count = Math.min(pendingLikes, MAX_LIKES_PER_COMMAND);
    if (count === 0) return;
    pendingLikes -= count;
    shownLikes += count;
    live.request('like', { room: roomId, count }).catch((error) => {
      shownLikes -= count;
      setCount(likeTotal, shownLikes + pendingLikes);
      say(commentError, errorText(error));
    });
    if (pendingLikes > 0) likeTimer = setTimeout(flushLikes, LIKE_FLUSH_MS);
  }

  // -- video ----------------------------------------------------------------

  async function startVideo() {
    if (media || startingVideo || unmounted) return;
    if (typeof RTCPeerConnection === 'undefined') {
      setStream('offline', 'This browser cannot play live video.');
      return;
    }
    startingVideo = true;
    setStream('connecting');
    try {
      const session = await startPlayback(new URL(`whep/${encodeURIComponent(roomId)}`, document.baseURI).toString(), ctx.session.token, {
        onTrack(stream) {
          video.srcObject = stream;
          video.play().catch(() => {});
          unmute.hidden = !video.muted;
        },
        onState(state) {
          if (state === 'connected') setStream('live');
          else if (state === 'failed') {
            stopVideo();
            setStream('offline', 'The video connection failed.');
          }
        },
      });
      if (unmounted) session.stop();
      else media = session;
    } catch (error) {
      if (error instanceof StreamOffline) setStream('offline');
      else setStream('offline', `Video unavailable: ${error.message}`);
    } finally {
      startingVideo = false;
    }
  }

  function stopVideo({ keepalive = false } = {}) {
    if (media) {
      media.stop({ keepalive });
      media = null;
    }
    video.srcObject = null;
  }

  function setStream(state, message) {
    streamStatus.dataset.state = state;
    streamStatus.textContent = { live: 'Live', offline: 'Offline', connecting: 'Connecting', ended: 'Ended' }[state];
    offline.hidden = state === 'live' || state === 'connecting';
    offline.textContent = message ?? (state === 'ended' ? 'This live has ended.' : 'The host is offline right now.');
  }

  function showEnded() {
    stopVideo();
    setStream('ended');
    commentInput.disabled = true;
    commentSend.disabled = true;
    likeButton.disabled = true;
    buy.setSale(null, '');
    pinnedCard.hidden = true;
  }

  function onUnmute() {
    video.muted = false;
    unmute.hidden = true;
    video.play().catch(() => {});
  }

  const onPageHide = () => stopVideo({ keepalive: true });
  window.addEventListener('pagehide', onPageHide);

  return () => {
    unmounted = true;
    clearInterval(ticker);
    if (likeTimer !== null) {
      clearTimeout(likeTimer);
      flushLikes();
    }
    window.removeEventListener('pagehide', onPageHide);
    live.unsubscribe(ch);
    stopVideo();
  };
}

function setCount(node, value) {
  node.dataset.value = String(value);
  node.textContent = formatCount(value);
}
