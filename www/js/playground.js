// playground.js -- the playground page: pick a model from /v1/models, send a
// chat or completion request with stream: true, show the tokens as they come
// (shaded by probability when logprobs are on), Stop (aborting the request,
// which the server counts as cancelled), and the answer's figures.
//
// For tests and debugging, window.playgroundHooks.onChunk(n, text), when
// set, is called after each streamed chunk is shown; #output's data-chunks
// counts the chunks of the current answer and data-reads the network reads
// they came in (more than one: the answer was streamed, not sent at the end).

import { ApiError, apiUrl, authHeaders, bindKeyField, el, errorFromResponse, fmt, getJson, plainWords, sseData } from './api.js';

const $ = (id) => document.getElementById(id);
const ui = {
  model: $('model'), modelNote: $('model-note'), prompt: $('prompt'), send: $('send'), stop: $('stop'),
  output: $('output'), stats: $('stats'), error: $('error'), key: $('key'), system: $('system'),
  systemBox: $('system-box'), clear: $('clear'), form: $('ask'), cancelNote: $('cancel-note'), tip: $('tip'),
  logprobs: $('logprobs'), topLogprobs: $('top_logprobs'), stopSeqs: $('stop_seqs'),
};
const MODEL_STORE = 'llmcgi.model';

const state = {
  models: new Map(),      // id -> the /v1/models entry
  history: [],            // chat messages so far: {role, content}
  controller: null,       // the running request's AbortController
};

function mode() {
  return $('mode-completion').checked ? 'completion' : 'chat';
}

function showError(text, err) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
  if (err instanceof ApiError && err.status === 401) ui.key.closest('details').open = true;   // where to put one
}

// ---------------------------------------------------------------- models

function modelLabel(m) {
  const where = m.upstream ? `upstream ${m.upstream}` : 'local';
  const st = m.state || (m.available === false ? 'unavailable' : m.available ? 'available' : '');
  return st ? `${m.id} (${where}, ${st})` : `${m.id} (${where})`;
}

async function loadModels() {
  let list;
  try {
    list = await getJson('/v1/models');
  } catch (err) {
    ui.model.replaceChildren(el('option', { value: '' }, 'no models'));
    showError(plainWords(err), err);
    return;
  }
  showError('');
  const previous = ui.model.value || safeGet(MODEL_STORE);
  state.models = new Map((list.data || []).map((m) => [m.id, m]));
  ui.model.replaceChildren(...[...state.models.values()].map((m) => el('option', { value: m.id }, modelLabel(m))));
  if (!state.models.size) ui.model.append(el('option', { value: '' }, 'no models served'));
  if (previous && state.models.has(previous)) ui.model.value = previous;
  describeModel();
}

function describeModel() {
  const m = state.models.get(ui.model.value);
  if (!m) {
    ui.modelNote.textContent = '';
    return;
  }
  const parts = [m.upstream ? `served by upstream “${m.upstream}”` : 'runs on this server'];
  if (m.state && m.state !== 'ready') parts.push(m.state === 'not_loaded' ? 'loads on first use' : `state: ${m.state}`);
  if (m.available === false) parts.push('not available now');
  ui.modelNote.textContent = parts.join(' · ');
}

function safeGet(k) {
  try {
    return localStorage.getItem(k);
  } catch {
    return null;
  }
}

function safeSet(k, v) {
  try {
    localStorage.setItem(k, v);
  } catch {
    /* not kept: fine */
  }
}

// ---------------------------------------------------------------- the request

function numberField(id, integer) {
  const v = $(id).value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) return undefined;
  return integer ? Math.trunc(n) : n;
}

function buildBody(text) {
  const body = { model: ui.model.value, stream: true, stream_options: { include_usage: true } };
  const params = {
    temperature: numberField('temperature'), top_p: numberField('top_p'), top_k: numberField('top_k', true),
    max_tokens: numberField('max_tokens', true), repetition_penalty: numberField('repetition_penalty'),
    seed: numberField('seed', true),
  };
  for (const [k, v] of Object.entries(params)) if (v !== undefined) body[k] = v;
  const stops = ui.stopSeqs.value.split('\n').filter((s) => s !== '').map((s) => s.replace(/\\n/g, '\n'));
  if (stops.length) body.stop = stops;
  const top = Math.max(1, Math.min(5, numberField('top_logprobs', true) || 3));
  if (mode() === 'chat') {
    const messages = [];
    if (ui.system.value.trim()) messages.push({ role: 'system', content: ui.system.value });
    messages.push(...state.history, { role: 'user', content: text });
    body.messages = messages;
    if (ui.logprobs.checked) {
      body.logprobs = true;
      body.top_logprobs = top;
    }
  } else {
    body.prompt = text;
    if (ui.logprobs.checked) body.logprobs = top;
  }
  return body;
}

// One chunk's text and its tokens' [{token, p, top: [[token, p], ...]}], either dialect.
function readChoice(choice, isChat) {
  const text = isChat ? (choice.delta && choice.delta.content) || '' : choice.text || '';
  const tokens = [];
  const lp = choice.logprobs;
  if (lp && isChat && Array.isArray(lp.content)) {
    for (const t of lp.content)
      tokens.push({ token: t.token, p: Math.exp(t.logprob),
        top: (t.top_logprobs || []).map((a) => [a.token, Math.exp(a.logprob)]) });
  } else if (lp && !isChat && Array.isArray(lp.tokens)) {
    lp.tokens.forEach((tok, i) => {
      const alts = (lp.top_logprobs && lp.top_logprobs[i]) || {};
      tokens.push({ token: tok, p: Math.exp(lp.token_logprobs[i]),
        top: Object.entries(alts).map(([a, l]) => [a, Math.exp(l)]).sort((a, b) => b[1] - a[1]) });
    });
  }
  return { text, tokens, finish: choice.finish_reason || null };
}

function tokenSpan(text, tokens) {
  if (!tokens.length) return document.createTextNode(text);
  const p = tokens.reduce((acc, t) => acc * t.p, 1);
  const span = el('span', { class: 'tok', tabindex: 0 }, text);
  // darker red for a less likely token; a certain one stays unshaded
  span.style.backgroundColor = `rgba(220, 38, 38, ${(0.55 * (1 - p)).toFixed(3)})`;
  span.tokens = tokens;
  span.dataset.p = p.toFixed(4);
  span.setAttribute('aria-label', `${text} (${(p * 100).toFixed(1)}%)`);
  return span;
}

function showTip(span) {
  const lines = [];
  for (const t of span.tokens) {
    lines.push(el('div', { class: 'tip-head' }, `${JSON.stringify(t.token)} ${(t.p * 100).toFixed(1)}%`));
    for (const [alt, p] of t.top) {
      const row = el('div', { class: alt === t.token ? 'tip-alt chosen' : 'tip-alt' },
        el('span', {}, JSON.stringify(alt)), el('span', {}, `${(p * 100).toFixed(1)}%`));
      lines.push(row);
    }
  }
  ui.tip.replaceChildren(...lines);
  ui.tip.hidden = false;
  const r = span.getBoundingClientRect();
  const w = ui.tip.offsetWidth;
  ui.tip.style.left = `${Math.max(4, Math.min(window.scrollX + r.left, window.scrollX + document.documentElement.clientWidth - w - 4))}px`;
  ui.tip.style.top = `${window.scrollY + r.bottom + 4}px`;
}

function hideTip() {
  ui.tip.hidden = true;
}

async function healthOf(model) {
  try {
    const h = await getJson('/health', { allowError: true });
    return (h && h.local_models && h.local_models[model]) || null;
  } catch {
    return null;
  }
}

// After Stop: the server notices the closed connection and cancels the
// generation; /health's per-model "cancelled" count shows that it did.
async function confirmCancel(model, before, local) {
  if (!before) {
    ui.cancelNote.textContent = local ? 'Stopped. (/health could not be read, so the server\'s cancel count is not shown.)'
      : 'Stopped. (The server\'s cancel count is shown for local models only.)';
    return;
  }
  ui.cancelNote.textContent = 'Stopped; waiting for the server to cancel the generation…';
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const now = await healthOf(model);
    if (now && now.cancelled > before.cancelled) {
      ui.cancelNote.textContent = `Stopped: the server cancelled the generation and freed its slot ` +
        `(cancelled on ${model}: ${before.cancelled} → ${now.cancelled}; running now ${now.running}, queued ${now.queued}).`;
      ui.cancelNote.dataset.cancelled = String(now.cancelled);
      return;
    }
  }
  ui.cancelNote.textContent = 'Stopped. The server did not count a cancellation (the answer may have been complete already).';
}

function setRunning(running) {
  ui.send.disabled = running;
  ui.stop.disabled = !running;
  ui.output.setAttribute('aria-busy', running ? 'true' : 'false');
}

function renderStats(s) {
  const items = [
    ['time to first token', s.ttft === null ? '–' : `${fmt(s.ttft, 0)} ms`, 'ttft'],
    ['tokens/s', s.tps === null ? '–' : fmt(s.tps, 1), 'tps'],
    ['prompt tokens', s.promptTokens ?? '–', 'prompt_tokens'],
    ['completion tokens', s.completionTokens ?? '–', 'completion_tokens'],
    ['finish reason', s.finish || '–', 'finish_reason'],
  ];
  ui.stats.replaceChildren(...items.map(([k, v, id]) => el('div', {}, el('dt', {}, k), el('dd', { dataset: { stat: id } }, v))));
}

async function send() {
  const text = ui.prompt.value;
  if (state.controller || !ui.model.value) {
    if (!ui.model.value) showError('Pick a model first (none is served, or the model list could not be read).');
    return;
  }
  if (!text.trim() && mode() === 'chat') return;
  showError('');
  ui.cancelNote.textContent = '';
  delete ui.cancelNote.dataset.cancelled;
  const isChat = mode() === 'chat';
  const model = ui.model.value;
  const body = buildBody(text);
  const local = !(state.models.get(model) || {}).upstream;
  const before = local ? healthOf(model) : Promise.resolve(null);

  // the answer's place in #output
  if (!isChat || !state.history.length) ui.output.replaceChildren();
  let answer;
  if (isChat) {
    ui.output.append(el('div', { class: 'msg user' }, el('span', { class: 'who' }, 'you'), text));
    answer = el('div', { class: 'msg assistant' }, el('span', { class: 'who' }, model));
  } else {
    answer = el('div', { class: 'msg completion' }, el('span', { class: 'prompt-echo' }, text));
  }
  ui.output.append(answer);
  ui.output.dataset.chunks = '0';
  ui.output.dataset.reads = '0';
  ui.prompt.value = '';

  const controller = new AbortController();
  state.controller = controller;
  setRunning(true);
  const t0 = performance.now();
  let tFirst = null;
  let tEnd = null;
  let chunks = 0;
  let contentChunks = 0;
  let finish = null;
  let usage = null;
  let generated = '';
  let stopped = false;
  try {
    const resp = await fetch(apiUrl(isChat ? '/v1/chat/completions' : '/v1/completions'), {
      method: 'POST', headers: authHeaders({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!resp.ok) throw await errorFromResponse(resp, '/v1/...');
    for await (const data of sseData(resp.body, (n) => { ui.output.dataset.reads = String(n); })) {
      if (data === '[DONE]') break;
      let ev;
      try {
        ev = JSON.parse(data);
      } catch {
        continue;
      }
      if (ev.error) {
        throw new ApiError(0, ev.error.message || String(ev.error), { type: ev.error.type || ev.error_type });
      }
      if (ev.usage) usage = ev.usage;
      const choice = (ev.choices || [])[0];
      if (!choice) continue;
      const c = readChoice(choice, isChat);
      if (c.finish) finish = c.finish;
      if (c.text) {
        if (tFirst === null) tFirst = performance.now();
        generated += c.text;
        answer.append(tokenSpan(c.text, c.tokens));
        contentChunks++;
      }
      chunks++;
      ui.output.dataset.chunks = String(chunks);
      ui.output.scrollTop = ui.output.scrollHeight;
      const hook = window.playgroundHooks && window.playgroundHooks.onChunk;
      if (hook) hook(chunks, c.text);
    }
    tEnd = performance.now();
  } catch (err) {
    tEnd = performance.now();
    if (err.name === 'AbortError') {
      stopped = true;
      finish = 'stopped';
      answer.append(el('span', { class: 'stopped' }, ' [stopped]'));
    } else {
      showError(plainWords(err), err);
    }
  } finally {
    state.controller = null;
    setRunning(false);
  }
  if (generated) {
    if (isChat) state.history.push({ role: 'user', content: text }, { role: 'assistant', content: generated });
  } else if (!stopped) {
    ui.prompt.value = text;   // nothing came back: the prompt stays, to try again
    if (isChat) answer.previousElementSibling.remove();
    answer.remove();
  }
  const completionTokens = usage ? usage.completion_tokens : contentChunks || null;
  const decode = tFirst !== null && tEnd > tFirst ? (tEnd - tFirst) / 1000 : 0;
  renderStats({
    ttft: tFirst === null ? null : tFirst - t0,
    tps: completionTokens > 1 && decode > 0 ? (completionTokens - 1) / decode : null,
    promptTokens: usage ? usage.prompt_tokens : null,
    completionTokens: usage ? completionTokens : contentChunks ? `≈${contentChunks}` : null,
    finish,
  });
  if (stopped) confirmCancel(model, await before, local);
}

// ---------------------------------------------------------------- wiring

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener('click', () => {
  if (state.controller) state.controller.abort();
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && state.controller) state.controller.abort();
  if (e.key === 'Escape') hideTip();
});
ui.clear.addEventListener('click', () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  ui.output.replaceChildren();
  ui.output.dataset.chunks = '0';
  showError('');
  ui.cancelNote.textContent = '';
  ui.prompt.focus();
});
for (const r of document.querySelectorAll('input[name=mode]')) {
  r.addEventListener('change', () => {
    ui.systemBox.hidden = mode() !== 'chat';
    state.history = [];
    ui.output.replaceChildren();
  });
}
ui.model.addEventListener('change', () => {
  safeSet(MODEL_STORE, ui.model.value);
  describeModel();
});
ui.output.addEventListener('mouseover', (e) => {
  const t = e.target.closest('.tok');
  if (t) showTip(t);
});
ui.output.addEventListener('mouseout', (e) => {
  if (e.target.closest('.tok')) hideTip();
});
ui.output.addEventListener('focusin', (e) => {
  const t = e.target.closest('.tok');
  if (t) showTip(t);
});
ui.output.addEventListener('focusout', hideTip);
bindKeyField(ui.key, loadModels);

loadModels();
