/** Turning server values into text: money, counts, times and countdowns. */

/**
 * @param {number} cents
 * @param {string} [currency] ISO 4217 code; without one only the amount is shown
 */
export function formatMoney(cents, currency) {
  if (typeof cents !== 'number' || !Number.isFinite(cents)) return '';
  const amount = cents / 100;
  if (currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(amount);
    } catch {
      // An unknown currency code: fall through to the plain amount with the code.
    }
  }
  return `${amount.toFixed(2)}${currency ? ` ${currency}` : ''}`;
}

/** Compact counts for badges: 999, 1.2k, 35k, 1.4M. */
export function formatCount(n) {
  const value = Number(n) || 0;
  if (value < 1000) return String(value);
  if (value < 1_000_000) return `${trim(value / 1000)}k`;
  return `${trim(value / 1_000_000)}M`;
}

function trim(x) {
  return x < 10 ? x.toFixed(1).replace(/\.0$/, '') : String(Math.floor(x));
}

/**
 * Milliseconds since the epoch from a server time: an ISO 8601 string, or a number
 * of seconds (below 1e12) or milliseconds. Null when absent or unreadable.
 */
export function parseTime(value) {
  if (typeof value === 'number' && Number.isFinite(value)) {
    return value < 1e12 ? value * 1000 : value;
  }
  if (typeof value === 'string' && value) {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? null : ms;
  }
  return null;
}

/** `m:ss` below an hour, `h:mm:ss` above; never negative. */
export function formatCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** Clock time for a message timestamp. */
export function formatClock(value) {
  const ms = parseTime(value);
  if (ms === null) return '';
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** A ratio 0..1 as a percentage with one decimal. */
export function formatPercent(ratio) {
  return `${(Number(ratio) * 100).toFixed(1)}%`;
}
