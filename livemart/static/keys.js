/**
 * Random keys for retry-safe requests (reservation Idempotency-Key, client_msg_id).
 * crypto.randomUUID needs a secure context; phones testing over plain http on a
 * LAN do not have one, while getRandomValues works everywhere.
 */
export function newKey() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
