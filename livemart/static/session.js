/**
 * Who is using the page. There is no login API: the operator mints a token with
 * `livemart token`, and the user brings it once as `?token=` or pastes it. The
 * claims are read only to show a name and spot expiry; the server decides rights.
 */

const STORAGE_KEY = 'livemart.token';

/**
 * The JWT payload, or null when the text is not a token.
 * @param {string} token
 */
export function decodeToken(token) {
  const parts = typeof token === 'string' ? token.trim().split('.') : [];
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== 'object' || claims.sub === undefined) return null;
    return claims;
  } catch {
    return null;
  }
}

/** A session from a token: `{token, userId, name, expiresAt}` or a guest. */
export function sessionFrom(token, nowMs = Date.now()) {
  const claims = token ? decodeToken(token) : null;
  if (!claims) return { token: null, userId: null, name: null, expired: false };
  const expiresAt = typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  return {
    token: token.trim(),
    userId: String(claims.sub),
    name: typeof claims.name === 'string' && claims.name ? claims.name : String(claims.sub),
    expiresAt,
    expired: expiresAt !== null && expiresAt <= nowMs,
  };
}

/**
 * Take `?token=` from the address once (then drop it from the address bar and
 * history, so it is not shared with a copied link), else use the stored token.
 */
export function loadToken(win) {
  const url = new URL(win.location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl !== null) {
    url.searchParams.delete('token');
    win.history.replaceState(win.history.state, '', url.toString());
    if (decodeToken(fromUrl)) saveToken(win.localStorage, fromUrl);
  }
  return readStorage(win.localStorage);
}

export function saveToken(storage, token) {
  try {
    storage.setItem(STORAGE_KEY, token.trim());
  } catch {
    // Private mode may refuse storage; the token then lasts for this page only.
  }
}

export function clearToken(storage) {
  try {
    storage.removeItem(STORAGE_KEY);
  } catch {
    // Nothing stored, nothing to clear.
  }
}

function readStorage(storage) {
  try {
    return storage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}
