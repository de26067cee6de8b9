/**
 * Start-up and navigation: the session, the shared API and WebSocket clients,
 * the header, and hash routes to the pages. Each page's mount returns its
 * cleanup, which runs before the next page mounts.
 */

import { createApi } from './api.js';
import { Toaster, h, replace } from './dom.js';
import * as groups from './groups.js';
import * as home from './home.js';
import * as host from './host.js';
import { LiveClient, socketUrl } from './protocol.js';
import * as room from './room.js';
import { clearToken, loadToken, saveToken, sessionFrom } from './session.js';

const ROUTES = [
  [/^#?\/?$/, (ctx, view) => home.mountHome(ctx, view)],
  [/^#\/signin$/, (ctx, view) => home.mountSignIn(ctx, view)],
  [/^#\/room\/([^/]+)$/, (ctx, view, [id]) => room.mount(ctx, view, { roomId: id })],
  [/^#\/host$/, (ctx, view) => host.mountHome(ctx, view)],
  [/^#\/host\/([^/]+)$/, (ctx, view, [id]) => host.mountRoom(ctx, view, { roomId: id })],
  [/^#\/groups$/, (ctx, view) => groups.mountList(ctx, view)],
  [/^#\/groups\/([^/]+)$/, (ctx, view, [id]) => groups.mountChat(ctx, view, { groupId: id })],
];

const view = document.getElementById('view');
const connStatus = document.getElementById('conn-status');
const sessionBox = document.getElementById('session');
const toaster = new Toaster(document.getElementById('toast'));

let session = startSession(loadToken(window));
let live = null;
let cleanup = null;
/** Where to go back to after signing in. */
let returnTo = '#/';

const ctx = {
  get session() {
    return session;
  },
  api: createApi({ base: document.baseURI, getToken: () => session.token }),
  /** The page's one WebSocket connection, opened on first use. */
  live() {
    if (live === null) {
      live = new LiveClient({ url: socketUrl(document.baseURI, session.token) });
      live.onStatus(showConnection);
      live.connect();
    }
    return live;
  },
  toast: (text, kind) => toaster.show(text, kind),
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  reload: () => route(),
  signIn() {
    if (location.hash !== '#/signin') returnTo = location.hash || '#/';
    ctx.go('#/signin');
  },
  signInWith(token) {
    saveToken(localStorage, token);
    changeSession(startSession(token));
    const target = returnTo;
    returnTo = '#/';
    ctx.go(target === '#/signin' ? '#/' : target);
  },
  signOut() {
    clearToken(localStorage);
    changeSession(startSession(null));
    route();
  },
};

function startSession(token) {
  const next = sessionFrom(token);
  if (next.expired) {
    clearToken(localStorage);
    toaster.show('Your access token has expired. Paste a new one to sign in.', 'error');
    return sessionFrom(null);
  }
  return next;
}

/** A new identity needs a new socket: the token travels in the WebSocket URL. */
function changeSession(next) {
  session = next;
  if (live !== null) {
    live.close();
    live = null;
  }
  renderSession();
}

function renderSession() {
  if (session.token) {
    replace(
      sessionBox,
      h('span', { id: 'session-name', class: 'session-name', text: session.name }),
      h('button', { id: 'sign-out-button', type: 'button', class: 'link', text: 'Sign out', on: { click: () => ctx.signOut() } }),
    );
  } else {
    replace(sessionBox, h('a', { id: 'sign-in-link', href: '#/signin', text: 'Sign in', on: { click: (event) => { event.preventDefault(); ctx.signIn(); } } }));
  }
}

function showConnection(status) {
  const seconds = (ms) => Math.max(1, Math.round(ms / 1000));
  let text = '';
  if (status.state === 'connecting') text = 'Connecting…';
  else if (status.state === 'open') text = 'Online';
  else if (status.state === 'waiting' && status.slow) text = `Connection too slow; reconnecting in ${seconds(status.delayMs)} s`;
  else if (status.state === 'waiting' && status.delayMs === 0) text = 'Server restarting; reconnecting…';
  else if (status.state === 'waiting') text = `Offline; reconnecting in ${seconds(status.delayMs)} s`;
  else if (status.state === 'failed' && status.code === 4001) text = 'The server refused your token. Sign in again.';
  else if (status.state === 'failed') text = 'The server closed the connection. Reload to try again.';
  connStatus.textContent = text;
  connStatus.dataset.state = status.state;
}

function route() {
  if (cleanup !== null) {
    try {
      cleanup();
    } catch (error) {
      console.error('livemart: page cleanup failed', error);
    }
    cleanup = null;
  }
  const hash = location.hash;
  for (const [pattern, mount] of ROUTES) {
    const match = pattern.exec(hash);
    if (!match) continue;
    const params = match.slice(1).map(decodePart);
    cleanup = mount(ctx, view, params);
    markCurrentNav(hash);
    view.focus({ preventScroll: true });
    return;
  }
  document.title = 'Not found · livemart';
  replace(view, h('section', { class: 'panel narrow' }, h('h1', { text: 'Page not found' }), h('p', {}, h('a', { href: '#/', text: 'Back to the start' }))));
}

/** A path segment from the address bar; a malformed escape is kept as typed. */
function decodePart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function markCurrentNav(hash) {
  for (const link of document.querySelectorAll('nav a')) {
    const section = link.getAttribute('href');
    const current = section === '#/' ? hash === '' || hash === '#/' || hash.startsWith('#/room/') : hash.startsWith(section);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

window.addEventListener('hashchange', route);
renderSession();
route();
