/**
 * Buying from a flash sale: reserve (hold stock) then confirm (the payment
 * stand-in). The reservation is POSTed with an Idempotency-Key made once per
 * purchase, so retries after a lost answer return the same hold and never a
 * second one.
 */

import { TRANSIENT_CODES } from './protocol.js';
import { newKey } from './keys.js';

const RESERVE_ATTEMPTS = 3;
const RETRY_DELAY_MS = 700;

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Hold `quantity` units; retries transient failures with the same key.
 * @param {object} api from createApi
 * @param {string|number} saleId
 * @param {object} options `quantity`, `source` (`room` or `group`, for the host's
 *   "orders by source" figures)
 * @returns {Promise<object>} the reservation `{id, status: "held", expires_at, ...}`
 */
export async function reserve(api, saleId, { quantity = 1, source }) {
  const key = newKey();
  const body = source ? { quantity, source } : { quantity };
  for (let attempt = 1; ; attempt++) {
    try {
      return await api.post(`/api/flash-sales/${encodeURIComponent(saleId)}/reservations`, body, {
        'Idempotency-Key': key,
      });
    } catch (error) {
      if (!TRANSIENT_CODES.has(error.code) || attempt >= RESERVE_ATTEMPTS) throw error;
      await pause(RETRY_DELAY_MS * attempt);
    }
  }
}

/** Pay for a held reservation; the answer is `{order}`. */
export function confirm(api, reservationId) {
  return api.post(`/api/reservations/${encodeURIComponent(reservationId)}/confirm`);
}

/** Give a hold back so the stock returns to the sale. */
export function release(api, reservationId) {
  return api.del(`/api/reservations/${encodeURIComponent(reservationId)}`);
}
