/**
 * HTTP API calls: JSON in and out, the bearer token attached, and every failure
 * turned into an ApiError carrying a contract error code, so pages handle HTTP
 * and WebSocket errors with the same messages.
 */

/** Codes for responses that carry no `{error: {code}}` body (e.g. from a proxy). */
const CODE_BY_STATUS = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  410: 'expired',
  413: 'too_large',
  429: 'rate_limited',
  503: 'unavailable',
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * @param {object} options
 * @param {string} options.base URL the API paths are resolved against
 * @param {() => (string|null)} options.getToken the current access token
 * @param {typeof fetch} [options.fetch]
 */
export function createApi({ base, getToken, fetch: fetchImpl = globalThis.fetch.bind(globalThis) }) {
  async function call(method, path, { body, headers = {} } = {}) {
    const init = { method, headers: { Accept: 'application/json', ...headers } };
    const token = getToken();
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetchImpl(new URL(path.replace(/^\//, ''), base), init);
    } catch (error) {
      throw new ApiError(0, 'network', `network error: ${error.message}`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && typeof data.error === 'object' && data.error ? data.error : {};
      const code = error.code || CODE_BY_STATUS[response.status] || 'error';
      throw new ApiError(response.status, code, error.message || `${method} ${path}: ${response.status}`);
    }
    return data;
  }

  return {
    get: (path) => call('GET', path),
    post: (path, body = {}, headers = {}) => call('POST', path, { body, headers }),
    del: (path) => call('DELETE', path),
  };
}

/** The list inside a response that is either an array or an object holding one. */
export function listFrom(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const key of keys) {
    if (body && Array.isArray(body[key])) return body[key];
  }
  return [];
}
