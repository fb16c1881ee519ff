// The API as the page uses it: same origin, same credentials as the page itself.
import { settings } from './util.js';

export const API = settings.api || '/torc-service/v1';

export class ApiError extends Error {
  constructor(status, error, detail) {
    super(`${status} ${error}: ${Array.isArray(detail) ? detail.join('; ') : detail}`);
    this.status = status;
    this.detail = detail;
  }
}

async function call(method, path, params, body) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, v);
  }
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(url, init);
  const text = await resp.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch { value = text; }
  if (!resp.ok) {
    throw new ApiError(resp.status, value?.error || resp.statusText, value?.detail || text);
  }
  return value;
}

export const getJson = (path, params) => call('GET', path, params);
export const postJson = (path, body = {}) => call('POST', path, null, body);
