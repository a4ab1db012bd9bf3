// api.js -- what the playground and the status page share: where the API is,
// the API key kept in this browser, requests that carry it, the server's JSON
// errors in plain words, and a reader for server-sent events.
//
// The pages live at <site>/playground/; the API is the site itself, so the
// base is the folder above (this also holds when llmcgi is served under a
// prefix, e.g. /llm/playground/ calls /llm/v1/...).

export const API_BASE = new URL('../', document.baseURI);

const KEY_STORE = 'llmcgi.apiKey';

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ''), API_BASE).href;
}

// The key is kept in localStorage (so both pages and later visits see it);
// a browser that refuses storage just forgets it.
export function getKey() {
  try {
    return localStorage.getItem(KEY_STORE) || '';
  } catch {
    return '';
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
  } catch {
    /* storage refused: the key still works for this page */
  }
}

export function authHeaders(extra = {}) {
  const key = getKey().trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// Binds a #key input to the stored key; onChange runs after each change.
export function bindKeyField(input, onChange) {
  input.value = getKey();
  let timer = 0;
  input.addEventListener('input', () => {
    setKey(input.value.trim());
    clearTimeout(timer);
    timer = setTimeout(() => onChange && onChange(), 400);
  });
}

// An answer that was not 2xx, or an error event inside a stream.
export class ApiError extends Error {
  constructor(status, message, { retryAfter = null, type = null, path = '' } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.retryAfter = retryAfter;
    this.type = type;
    this.path = path;
  }
}

// The message out of either error shape: OpenAI's {"error":{"message",...}}
// under /v1/, TGI's {"error","error_type"} elsewhere; else the text itself.
export function errorMessage(body, fallback) {
  if (body && typeof body === 'object') {
    const e = body.error;
    if (e && typeof e === 'object' && typeof e.message === 'string') return [e.message, e.type || e.code || null];
    if (typeof e === 'string') return [e, body.error_type || null];
    if (typeof body.message === 'string') return [body.message, null];
  }
  return [fallback, null];
}

export async function errorFromResponse(resp, path) {
  let text = '';
  try {
    text = await resp.text();
  } catch {
    /* the body broke off: the status still says what happened */
  }
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: a proxy's page, shown shortened */
  }
  const short = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
  const [message, type] = errorMessage(body, short || resp.statusText || 'no details');
  const ra = resp.headers.get('Retry-After');
  const retryAfter = ra !== null && /^\d+$/.test(ra.trim()) ? Number(ra.trim()) : ra;
  return new ApiError(resp.status, message, { retryAfter, type, path });
}

function retryText(s) {
  if (s === null || s === undefined || s === '') return '';
  if (typeof s === 'number') return s === 1 ? ' Try again in 1 second.' : ` Try again in ${s} seconds.`;
  return ` Try again after ${s}.`;
}

// One sentence a person can act on, then the server's own message.
export function plainWords(err) {
  if (!(err instanceof ApiError)) {
    if (err && err.name === 'TypeError')
      return `The server could not be reached (${err.message}). Is llmcgi running behind this web server?`;
    return `Something went wrong: ${err && err.message ? err.message : err}`;
  }
  const m = err.message;
  switch (err.status) {
    case 401:
      return `The server wants a valid API key (401 Unauthorized): ${m}. Enter your key in the API key field.`;
    case 403:
      return `This API key may not do that (403 Forbidden): ${m}.`;
    case 404:
      return `Not found (404): ${m}.`;
    case 408:
      return `The request took too long to arrive (408): ${m}.`;
    case 413:
      return `The request is too large for the server (413): ${m}.`;
    case 429:
      return `Too many requests (429): ${m}.${retryText(err.retryAfter)}`;
    case 502:
    case 504:
      return `The server behind this one did not answer properly (${err.status}): ${m}.${retryText(err.retryAfter)}`;
    case 503:
      return `The service or model is unavailable right now (503): ${m}.${retryText(err.retryAfter)}`;
    case 0:
      return `The answer broke off: ${m}.`;
    default:
      if (err.status >= 400 && err.status < 500) return `The server refused the request (${err.status}): ${m}.`;
      return `The server failed (${err.status}): ${m}.`;
  }
}

export async function getJson(path, { signal, allowError = false } = {}) {
  const resp = await fetch(apiUrl(path), { headers: authHeaders({ Accept: 'application/json' }), signal });
  if (!resp.ok) {
    const err = await errorFromResponse(resp, path);
    if (allowError) return { error: err, status: resp.status };
    throw err;
  }
  return resp.json();
}

export async function getText(path, { signal } = {}) {
  const resp = await fetch(apiUrl(path), { headers: authHeaders(), signal });
  if (!resp.ok) throw await errorFromResponse(resp, path);
  return resp.text();
}

// Server-sent events from a fetch body: yields each event's data (its data:
// lines joined with \n); comments (": keep-alive") and other fields are
// skipped. Ends at the body's end; an abort rejects the pending read.
// onRead(n), when given, is told how many network reads came in so far.
export async function* sseData(body, onRead) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let reads = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (onRead) onRead(++reads);
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = block
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''));
        if (data.length) yield data.join('\n');
      }
    }
  } finally {
    reader.releaseLock();
  }
}

export function fmt(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtBytes(b) {
  if (typeof b !== 'number') return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return `${fmt(b, i ? 1 : 0)} ${units[i]}`;
}

// Makes an element: el('td', {class: 'x'}, 'text', child, ...). Text is text, never HTML.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
