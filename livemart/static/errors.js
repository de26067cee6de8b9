/**
 * What to tell a person about an error code. One table for HTTP and WebSocket
 * errors, so the same failure reads the same everywhere.
 */

const TEXT = {
  unauthorized: 'Please sign in with your access token first.',
  forbidden: 'You are not allowed to do that.',
  not_found: 'That no longer exists.',
  bad_request: 'The server did not accept that request.',
  too_large: 'That is too long.',
  rate_limited: 'You are going too fast. Wait a moment and try again.',
  muted: 'The host has muted you in this room for now.',
  banned: 'You have been banned from this room.',
  sold_out: 'Sold out: every unit has been taken.',
  limit_exceeded: 'You have reached the per-customer limit for this sale.',
  not_started: 'This sale has not started yet.',
  ended: 'This sale has ended.',
  not_member: 'This is for group members only.',
  expired: 'Your hold expired before payment, so the item went back on sale.',
  conflict: 'That clashes with the current state. Refresh and try again.',
  unavailable: 'The service is busy or restarting. Try again in a moment.',
  timeout: 'No answer from the server. Check your connection and try again.',
  disconnected: 'The connection dropped before the server answered.',
  network: 'Cannot reach the server. Check your connection.',
  closed: 'The connection is closed. Reload the page.',
};

/** A sentence for an error object with a `code` (ApiError, ProtocolError) or anything else. */
export function errorText(error) {
  const code = error && typeof error.code === 'string' ? error.code : null;
  if (code && TEXT[code]) return TEXT[code];
  if (error && typeof error.message === 'string' && error.message) return error.message;
  return 'Something went wrong.';
}
