/**
 * The host's sales figures as label/value rows. The stats endpoint's exact keys
 * are the server's to choose (peak/unique viewers, comments, likes, holds,
 * orders, units, GMV, conversion, orders by source), so rows are built from
 * whatever arrives, known keys first, with units guessed from the key names.
 */

import { formatMoney, formatPercent } from './format.js';

const FIRST = [
  'viewers',
  'peak_viewers',
  'unique_viewers',
  'comments',
  'likes',
  'holds',
  'orders',
  'units',
  'gmv_cents',
  'gmv',
  'conversion',
];

const WORDS = { gmv: 'GMV', ws: 'WebSocket', http: 'HTTP', id: 'ID' };

/** `peak_viewers` -> `Peak viewers`, `conversion.all` -> `Conversion (all)`. */
export function labelFor(path) {
  const [head, ...rest] = path.map((part) =>
    part
      .replace(/_cents$/, '')
      .split('_')
      .map((word) => WORDS[word] ?? word)
      .join(' '),
  );
  const first = head.charAt(0).toUpperCase() + head.slice(1);
  return rest.length ? `${first} (${rest.join(', ')})` : first;
}

function valueText(path, value, currency) {
  const inCents = path.some((part) => part.endsWith('_cents') || part.startsWith('gmv'));
  if (inCents) {
    // `gmv_by_currency: {EUR: 1234}` names the currency in the key.
    const byCurrency = path.length > 1 && path[path.length - 2].endsWith('by_currency');
    return formatMoney(value, byCurrency ? path[path.length - 1] : currency);
  }
  const isRatio = path.some((part) => part.includes('conversion') || part.endsWith('rate'));
  if (isRatio && value >= 0 && value <= 1) return formatPercent(value);
  return value.toLocaleString();
}

/**
 * @param {object} stats the body of GET /api/rooms/{id}/stats
 * @returns {{key: string, label: string, value: string}[]}
 */
export function statRows(stats) {
  if (!stats || typeof stats !== 'object') return [];
  const currency = typeof stats.currency === 'string' ? stats.currency : undefined;
  const rows = [];
  const walk = (path, value) => {
    if (typeof value === 'number' && Number.isFinite(value)) {
      rows.push({ key: path.join('.'), label: labelFor(path), value: valueText(path, value, currency) });
    } else if (value && typeof value === 'object' && !Array.isArray(value) && path.length < 3) {
      for (const [key, inner] of Object.entries(value)) walk([...path, key], inner);
    }
  };
  const keys = Object.keys(stats);
  const ordered = [...FIRST.filter((k) => keys.includes(k)), ...keys.filter((k) => !FIRST.includes(k))];
  for (const key of ordered) {
    if (key !== 'currency' && key !== 'room_id') walk([key], stats[key]);
  }
  return rows;
}
