// status.js -- the status page: every few seconds reads /health (models,
// upstreams), /status (operator view; needs an ops key when [auth] is on) and
// /metrics (counters), and draws tokens/s and requests/s over the last five
// minutes from the counters' differences. ?every=N sets the refresh (seconds).

import { ApiError, apiUrl, authHeaders, bindKeyField, el, errorFromResponse, fmt, fmtBytes, plainWords } from './api.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const EVERY_MS = Math.max(0.5, Number(params.get('every')) || 3) * 1000;
const WINDOW_MS = 5 * 60 * 1000;
const OWN_ROUTES = new Set(['/health', '/status', '/metrics']);   // this page's own polls, left out of requests/s
const COLORS = { tps: '#2563eb', rps: '#ea580c' };

const samples = [];   // {t, tokens, requests}: counter totals at time t (ms)
const rates = [];     // {t, tps, rps}: between two samples

// A JSON answer whatever its status (/health is 503 with its body while a model loads).
async function fetchJson(path) {
  const resp = await fetch(apiUrl(path), { headers: authHeaders({ Accept: 'application/json' }) });
  if (resp.ok || (resp.status === 503 && path === '/health')) {
    try {
      return { status: resp.status, body: await resp.json() };
    } catch {
      /* 503 without the health body: an error like any other */
    }
  }
  return { status: resp.status, error: await errorFromResponse(resp, path) };
}

async function fetchMetrics() {
  const resp = await fetch(apiUrl('/metrics'), { headers: authHeaders() });
  if (!resp.ok) return { status: resp.status, error: await errorFromResponse(resp, '/metrics') };
  return { status: resp.status, series: parseMetrics(await resp.text()) };
}

// Prometheus text format: [{name, labels: {k: v}, value}]; comments skipped.
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sum(series, name, keep = () => true) {
  return series.filter((s) => s.name === name && keep(s.labels)).reduce((a, s) => a + s.value, 0);
}

function stateCell(st) {
  return el('td', { class: `st-${String(st).replace(/\W/g, '_')}` }, st);
}

function num(v) {
  return el('td', { class: 'num' }, v === undefined || v === null ? '–' : typeof v === 'number' ? fmt(v, 1) : v);
}

function renderSummary(health, status) {
  const h = health || {};
  const s = status || {};
  const items = [
    ['state', h.status || (status ? 'ok' : '–')],
    ['version', h.version || s.version],
    ['uptime', h.uptime_seconds !== undefined ? `${fmt(h.uptime_seconds, 0)} s` : s.uptime_seconds !== undefined ? `${fmt(s.uptime_seconds, 0)} s` : '–'],
    ['threads busy', s.threads ? `${s.threads.busy} of ${s.threads.total}` : h.threads ? `${h.threads.busy} of ${h.threads.total}` : '–'],
    ['requests answered', s.requests_answered ?? h.requests],
    ['connections', s.accepted_connections ?? h.connections],
  ];
  if (s.pid) items.push(['pid', s.pid]);
  if (h.cuda) items.push(['CUDA', h.cuda.devices ? `${h.cuda.devices} device(s)${h.cuda.device ? `, ${h.cuda.device}` : ''}` : h.cuda.built ? 'built, no device' : 'not built']);
  $('summary').replaceChildren(...items.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v ?? '–'))));
}

function renderModels(health, status) {
  const hm = (health && health.local_models) || {};
  const sm = (status && status.models) || {};
  const names = [...new Set([...Object.keys(hm), ...Object.keys(sm)])].sort();
  const rows = names.map((name) => {
    const m = { ...(sm[name] || {}), ...(hm[name] || {}) };
    const kv = m.kv_blocks_total ? `${m.kv_blocks_used ?? 0} / ${m.kv_blocks_total}` : m.kv_blocks_used;
    const tr = el('tr', { dataset: { model: name } }, el('th', { scope: 'row' }, name), stateCell(m.state || '–'),
      el('td', {}, m.backend || '–'), el('td', {}, m.device || '–'), el('td', {}, m.dtype || '–'),
      num(m.memory_bytes !== undefined ? fmtBytes(m.memory_bytes) : undefined), num(m.running), num(m.queued), num(kv),
      num(m.requests), num(m.cancelled), num(m.rejected));
    if (m.error) tr.title = m.error;
    return tr;
  });
  $('models').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 12 }, 'no local models'))]));
}

function renderUpstreams(health, status) {
  const hu = (health && health.upstreams) || {};
  const su = (status && status.upstreams) || {};
  const rows = [];
  for (const name of [...new Set([...Object.keys(hu), ...Object.keys(su)])].sort()) {
    const u = { ...(su[name] || {}), ...(hu[name] || {}) };
    const reps = u.replicas || [];
    if (!reps.length) {
      rows.push(el('tr', {}, el('th', { scope: 'row' }, name), el('td', {}, u.type || '–'), el('td', {}, '–'),
        stateCell(u.available ? 'up' : 'down'), el('td', {}, `${u.replicas_up ?? '?'} up, ${u.replicas_down ?? '?'} down`),
        num(undefined), num(undefined), num(u.in_flight), el('td', {}, '')));
      continue;
    }
    reps.forEach((r, i) => {
      // The server has no circuit object of its own: a replica that fails its
      // checks is taken out of rotation (open) until a check passes (closed).
      const circuit = r.circuit || (r.up ? 'closed' : 'open');
      rows.push(el('tr', {}, el('th', { scope: 'row' }, i ? '' : name), el('td', {}, i ? '' : u.type || '–'), el('td', {}, `#${i}`),
        stateCell(r.up ? 'up' : 'down'), stateCell(circuit),
        num(r.latency_ms !== undefined ? `${fmt(r.latency_ms, 1)} ms` : undefined), num(r.failures),
        num(i ? undefined : u.in_flight), el('td', {}, r.last_error || '')));
    });
  }
  $('upstreams').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 9 }, 'no upstreams configured'))]));
}

function renderErrors(series) {
  const by = new Map();
  for (const s of series) {
    if (s.name !== 'llmcgi_requests_total' || !(Number(s.labels.status) >= 400)) continue;
    const e = by.get(s.labels.status) || { n: 0, routes: new Map() };
    e.n += s.value;
    e.routes.set(s.labels.route, (e.routes.get(s.labels.route) || 0) + s.value);
    by.set(s.labels.status, e);
  }
  const rows = [...by.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([st, e]) =>
    el('tr', {}, el('th', { scope: 'row' }, st), num(e.n),
      el('td', {}, [...e.routes.entries()].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${fmt(n, 0)}`).join(', '))));
  $('errors').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 3 }, 'none'))]));
}

function addSample(series) {
  const t = performance.now();
  const tokens = sum(series, 'llmcgi_generation_tokens_total');
  const requests = sum(series, 'llmcgi_requests_total', (l) => !OWN_ROUTES.has(l.route));
  const prev = samples[samples.length - 1];
  samples.push({ t, tokens, requests });
  if (prev && t > prev.t && tokens >= prev.tokens && requests >= prev.requests) {
    const dt = (t - prev.t) / 1000;
    rates.push({ t, tps: (tokens - prev.tokens) / dt, rps: (requests - prev.requests) / dt });
  }
  while (samples.length > 2 && t - samples[0].t > WINDOW_MS) samples.shift();
  while (rates.length && t - rates[0].t > WINDOW_MS) rates.shift();
  const last = rates[rates.length - 1];
  $('now-tps').textContent = last ? fmt(last.tps, 1) : '–';
  $('now-rps').textContent = last ? fmt(last.rps, 2) : '–';
}

// Two lines on one canvas, each scaled to its own peak (labelled on the left
// for tokens/s, on the right for requests/s); the x axis is the last 5 minutes.
function drawChart() {
  const c = $('chart');
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, c.clientWidth);
  const h = c.clientHeight || 180;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.fillStyle = '#ffffff';
  g.fillRect(0, 0, w, h);
  const pad = { l: 44, r: 44, t: 10, b: 22 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  const now = performance.now();
  const maxT = Math.max(1, ...rates.map((r) => r.tps));
  const maxR = Math.max(0.1, ...rates.map((r) => r.rps));
  g.strokeStyle = '#e5e7eb';
  g.lineWidth = 1;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#6b7280';
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ph * i) / 4;
    g.beginPath();
    g.moveTo(pad.l, y);
    g.lineTo(pad.l + pw, y);
    g.stroke();
  }
  for (let m = 0; m <= 5; m++) {
    const x = pad.l + pw - (pw * m) / 5;
    g.fillText(m ? `-${m} min` : 'now', x - (m ? 18 : 10), h - 6);
  }
  g.fillStyle = COLORS.tps;
  g.fillText(fmt(maxT, 0), 4, pad.t + 10);
  g.fillStyle = COLORS.rps;
  g.fillText(fmt(maxR, 1), pad.l + pw + 6, pad.t + 10);
  const line = (key, max, color) => {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    rates.forEach((r, i) => {
      const x = pad.l + pw - (pw * (now - r.t)) / WINDOW_MS;
      const y = pad.t + ph - (ph * r[key]) / max;
      if (i) g.lineTo(x, y);
      else g.moveTo(x, y);
    });
    g.stroke();
  };
  if (rates.length) {
    line('rps', maxR, COLORS.rps);
    line('tps', maxT, COLORS.tps);
  } else {
    g.fillStyle = '#6b7280';
    g.fillText('collecting…', pad.l + pw / 2 - 30, pad.t + ph / 2);
  }
  c.dataset.points = String(rates.length);
  c.dataset.maxTps = String(Math.max(0, ...rates.map((r) => r.tps)));
}

function showError(msgs) {
  $('error').textContent = msgs.join(' ');
  $('error').hidden = !msgs.length;
}

async function refresh() {
  const [health, status, metrics] = await Promise.all(
    [fetchJson('/health'), fetchJson('/status'), fetchMetrics()].map((p) => p.catch((e) => ({ status: 0, error: e }))));
  const errors = [];
  if (health.error) errors.push(`/health: ${plainWords(health.error)}`);
  if (status.error) {
    if (status.status === 401 || status.status === 403)
      errors.push(`/status needs an ops key (${status.status}); the rest comes from /health and /metrics.`);
    else errors.push(`/status: ${plainWords(status.error)}`);
  }
  if (metrics.error) errors.push(`/metrics: ${plainWords(metrics.error)}`);
  showError(errors);
  renderSummary(health.body, status.body);
  renderModels(health.body, status.body);
  renderUpstreams(health.body, status.body);
  if (metrics.series) {
    renderErrors(metrics.series);
    addSample(metrics.series);
  }
  drawChart();
  $('updated').textContent = `updated ${new Date().toLocaleTimeString()}, every ${EVERY_MS / 1000} s`;
}

let timer = 0;
async function loop() {
  clearTimeout(timer);
  try {
    await refresh();
  } catch (e) {
    showError([e instanceof ApiError ? plainWords(e) : `refresh failed: ${e.message}`]);
  }
  timer = setTimeout(loop, EVERY_MS);
}

bindKeyField($('key'), loop);
window.addEventListener('resize', drawChart);
loop();
