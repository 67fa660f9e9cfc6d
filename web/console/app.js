// Relais console: a small developer console for the hub's REST API and
// WebSocket protocol (docs/protocol.md). Plain ES2020, no dependencies.
'use strict';

const $ = (id) => document.getElementById(id);
const LOG_MAX = 500;
const CHANNEL_RE = /^[a-z][a-z0-9_-]*(:[A-Za-z0-9_.:=-]+)?$/;

// Close codes of docs/protocol.md section 7: [name, meaning, policy].
// Policies: no (stay closed), signin (sign in again), refresh (new token,
// then reconnect), now (at once with jitter), backoff (exponential back-off).
// Unknown codes (1001, 1005, 1011, ...) reconnect with back-off.
const CLOSE_CODES = {
  1000: ['normal', 'the client closed', 'no'],
  1006: ['dropped', 'the connection dropped without a close frame (treated like 4007)', 'now'],
  1009: ['message too big', 'a message above the size limit', 'backoff'],
  4000: ['protocol error', 'first frame not connect, or unsupported protocol version', 'no'],
  4001: ['authentication failed', 'missing, forged, wrongly signed or unknown token; no connect in time', 'signin'],
  4002: ['token expired', 'the access token expired', 'refresh'],
  4003: ['session revoked', 'logout, logout-all, user disabled, role or password change, refresh-token reuse', 'signin'],
  4004: ['slow consumer', 'the client read too slowly; its outbound queue filled up', 'backoff'],
  4005: ['rate limited', 'command flood', 'backoff'],
  4006: ['idle timeout', 'nothing received within the idle timeout', 'backoff'],
  4007: ['server shutting down', 'graceful shutdown; another node answers', 'now'],
  4008: ['write timeout', 'the socket accepted no data within the write timeout', 'backoff'],
};
const S = {
  access: null, refresh: null, accessExp: 0, me: null,
  ws: null, wsState: 'signed-out', nextId: 1,
  pending: new Map(), // command id -> command frame
  subs: new Map(),    // channel -> {channel, epoch, offset, state, recovered}
  attempt: 0, reconnectTimer: 0, refreshTimer: 0, pingTimer: 0, pongTimer: 0,
  refreshing: null, renderQueued: false, opening: false,
};

// ---------- helpers ----------

function h(tag, props = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  el.append(...kids.filter((k) => k != null));
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}
const errText = (e) => (e.code ? `${e.code}: ${e.message}` : String(e.message || e));

function showError(id, e) { $(id).textContent = e ? (typeof e === 'string' ? e : errText(e)) : ''; }

function fieldError(input, errId, msg) {
  input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  showError(errId, msg);
  if (msg) input.focus();
  return !msg;
}

function channelProblem(name) {
  if (!name) return 'Enter a channel name.';
  if (name.length > 200) return 'A channel name has at most 200 characters.';
  if (!CHANNEL_RE.test(name)) return 'Use namespace or namespace:key (namespace [a-z][a-z0-9_-]*, key of A-Z a-z 0-9 _ . : = -).';
  return '';
}

const clock = (d = new Date()) => d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0');
const dateOf = (t) => new Date(t < 1e12 ? t * 1000 : t).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });

// ---------- frame log ----------

const SECRET_FIELDS = ['token', 'access_token', 'refresh_token', 'password', 'key'];
const DIRS = { out: ['→', 'sent'], in: ['←', 'received'], rest: ['⇄', 'REST'], info: ['•', 'info'], err: ['!', 'error'] };

// Masks secrets in the top level of a frame or body (never inside `data`).
function redact(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return v;
  const o = { ...v };
  for (const k of SECRET_FIELDS) if (typeof o[k] === 'string') o[k] = '••••••••';
  return o;
}

function log(dir, what, note = '') {
  const el = $('log');
  const isErr = dir === 'err' || (what && what.type === 'error');
  const body = h('span', { class: 'body' });
  if (note) body.append(h('span', { class: 'note' }, note), ' ');
  if (typeof what === 'string') body.append(what);
  else if (what !== undefined && what !== null) {
    const text = JSON.stringify(redact(what));
    if (text.length <= 240) body.append(h('code', {}, text));
    else body.append(h('details', {}, h('summary', {}, h('code', {}, text.slice(0, 160) + '…')),
      h('pre', {}, JSON.stringify(redact(what), null, 2))));
  }
  const [sym, label] = DIRS[isErr ? 'err' : dir];
  el.append(h('li', { class: `entry ${dir}${isErr ? ' error' : ''}` },
    h('time', {}, clock()), h('span', { class: `dir ${isErr ? 'err' : dir}`, title: label },
      sym, h('span', { class: 'visually-hidden' }, ` ${label}: `)), body));
  while (el.childElementCount > LOG_MAX) el.firstElementChild.remove();
  $('log-count').textContent = `${el.childElementCount} entr${el.childElementCount === 1 ? 'y' : 'ies'}`;
  if ($('log-follow').checked) el.scrollTop = el.scrollHeight;
}

// ---------- REST ----------

async function api(method, path, body, { auth = true, retry = true } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth) {
    await ensureFreshToken();
    if (!S.access) throw new ApiError(0, 'signed_out', 'not signed in');
    headers.Authorization = `Bearer ${S.access}`;
  }
  log('rest', body, `${method} ${path}`);
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    const err = new ApiError(0, 'network_error', `the hub did not answer (${e.message})`);
    log('err', errText(err), `${method} ${path}`);
    throw err;
  }
  const data = (res.headers.get('content-type') || '').includes('json') ? await res.json().catch(() => null) : null;
  if (res.ok) {
    log('rest', data, `${res.status} ${method} ${path}`);
    return data;
  }
  const err = new ApiError(res.status, data?.error?.code || `http_${res.status}`, data?.error?.message || res.statusText || 'request failed');
  log('err', data || errText(err), `${res.status} ${method} ${path}`);
  if (auth && res.status === 401) {
    if (err.code === 'token_expired' && retry && S.refresh) {
      await refreshTokens();
      return api(method, path, body, { auth, retry: false });
    }
    endSession(`Signed out: ${errText(err)}`);
  }
  throw err;
}

// ---------- session and tokens ----------

function setTokens(pair) {
  S.access = pair.access_token;
  S.refresh = pair.refresh_token;
  S.accessExp = Date.now() + pair.expires_in * 1000;
  clearTimeout(S.refreshTimer);
  const left = S.accessExp - Date.now();
  // Refresh at 80 % of the lifetime, and at least 30 s before expiry.
  const delay = Math.max(1000, Math.min(left * 0.8, left - 30000));
  S.refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), delay);
  $('token-exp').textContent = `${new Date(S.accessExp).toLocaleTimeString()} (auto-refresh at ${new Date(Date.now() + delay).toLocaleTimeString()})`;
}

function refreshTokens() {
  if (!S.refreshing) S.refreshing = doRefresh().finally(() => { S.refreshing = null; });
  return S.refreshing;
}

async function doRefresh() {
  const rt = S.refresh;
  if (!rt) throw new ApiError(0, 'signed_out', 'not signed in');
  try {
    const pair = await api('POST', '/api/v1/auth/refresh', { refresh_token: rt }, { auth: false });
    if (S.refresh !== rt) return; // signed out meanwhile
    setTokens(pair);
    showError('session-error', '');
    if (S.wsState === 'connected') send({ type: 'refresh', token: S.access });
  } catch (e) {
    if (e.status === 401 || e.status === 422) endSession(`Token refresh refused (${errText(e)}): sign in again.`);
    else if (S.refresh === rt) {
      showError('session-error', `Token refresh failed (${errText(e)}); retrying in 10 s.`);
      clearTimeout(S.refreshTimer);
      S.refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), 10000);
    }
    throw e;
  }
}

async function ensureFreshToken() {
  if (S.refresh && S.accessExp - Date.now() < 15000) await refreshTokens();
}

async function signIn(ev) {
  ev.preventDefault();
  const tenant = $('tenant'), email = $('email'), password = $('password');
  for (const i of [tenant, email, password]) i.setAttribute('aria-invalid', 'false');
  if (!tenant.value.trim()) return fieldError(tenant, 'signin-error', 'Enter the tenant (slug), for example "default".');
  if (!email.value.trim() || !email.validity.valid) return fieldError(email, 'signin-error', 'Enter a valid email address.');
  if (!password.value) return fieldError(password, 'signin-error', 'Enter the password.');
  showError('signin-error', '');
  const button = ev.submitter || ev.target.querySelector('button');
  button.disabled = true;
  try {
    const pair = await api('POST', '/api/v1/auth/login',
      { tenant: tenant.value.trim(), email: email.value.trim(), password: password.value }, { auth: false });
    setTokens(pair);
    password.value = '';
    S.me = await api('GET', '/api/v1/me');
    showSignedIn();
    $('sub-channel').focus();
    connect();
  } catch (e) {
    if (!S.me) endSession('');
    showError('signin-error', e);
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  const hadToken = Boolean(S.access);
  closeSocket('sign out');
  if (hadToken) await api('POST', '/api/v1/auth/logout').catch(() => {});
  endSession('');
  log('info', 'Signed out.');
  $('email').focus();
}

// Forgets the session locally (tokens, subscriptions, admin data).
function endSession(message) {
  closeSocket('session ended');
  clearTimeout(S.refreshTimer);
  Object.assign(S, { access: null, refresh: null, accessExp: 0, me: null, attempt: 0 });
  S.subs.clear();
  renderSubs();
  $('keys-list').replaceChildren();
  $('new-key').hidden = true;
  $('new-key-value').value = '';
  for (const id of ['session-panel', 'channels-panel', 'publish-panel', 'keys-panel', 'whoami']) $(id).hidden = true;
  $('signin-panel').hidden = false;
  setState('signed-out', 'Signed out');
  showError('signin-error', message);
}

function showSignedIn() {
  const me = S.me;
  $('me-email').textContent = me.email;
  $('me-roles').textContent = (me.roles || []).join(', ') || 'no role';
  $('me-id').textContent = me.id;
  $('signin-panel').hidden = true;
  for (const id of ['session-panel', 'channels-panel', 'publish-panel', 'whoami']) $(id).hidden = false;
  const admin = (me.permissions || []).includes('manage_tenant');
  $('keys-panel').hidden = !admin;
  const names = ['broadcast', `user:${me.id}`, ...(me.roles || []).map((r) => `role:${r}`)];
  $('suggestion-chips').replaceChildren(...names.map((n) =>
    h('button', { type: 'button', class: 'chip', title: `Subscribe to ${n}`, onclick: () => subscribe(n) }, n)));
  $('channel-suggestions').replaceChildren(...names.map((n) => h('option', { value: n })));
  showError('session-error', '');
  if (admin) loadKeys();
}

// ---------- WebSocket ----------

function setState(state, text) {
  S.wsState = state;
  const badge = $('conn-state');
  badge.dataset.state = state;
  badge.textContent = text;
  $('ws-connect').disabled = Boolean(S.ws) || S.opening || !S.access;
  $('ws-disconnect').disabled = !S.ws && !S.reconnectTimer;
  $('ws-ping').disabled = state !== 'connected';
}

const wsUrl = () => `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;

async function connect() {
  if (!S.access || S.ws || S.opening) return;
  clearTimeout(S.reconnectTimer);
  S.reconnectTimer = 0;
  showError('session-error', '');
  S.opening = true;
  setState('connecting', 'Connecting…');
  try {
    await ensureFreshToken();
  } catch {
    S.opening = false;
    if (S.access) scheduleReconnect(backoff());
    return;
  } finally {
    S.opening = false;
  }
  if (!S.access || S.ws) return;
  const ws = new WebSocket(wsUrl());
  S.ws = ws;
  setState('connecting', 'Connecting…');
  log('info', `Opening ${wsUrl()}`);
  ws.onopen = () => {
    setState('authenticating', 'Authenticating…');
    send({ type: 'connect', token: S.access, protocol: 1 });
  };
  ws.onmessage = (ev) => onFrame(ev.data);
  ws.onclose = (ev) => onClosed(ev.code, ev.reason);
}

// Sends a command with a fresh id; returns the id, or 0 when not open.
function send(frame) {
  const ws = S.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return 0;
  const cmd = { id: S.nextId++, ...frame };
  S.pending.set(cmd.id, cmd);
  ws.send(JSON.stringify(cmd));
  log('out', cmd);
  return cmd.id;
}

function requireConnected(errId) {
  if (S.wsState === 'connected') return true;
  showError(errId, 'Not connected: connect the WebSocket first.');
  return false;
}

function teardown() {
  clearInterval(S.pingTimer);
  clearTimeout(S.pongTimer);
  S.ws = null;
  S.pending.clear();
  $('ws-client').textContent = '—';
  for (const sub of S.subs.values()) sub.state = 'inactive';
  renderSubs();
}

// Closes on purpose: no reconnection.
function closeSocket(why) {
  clearTimeout(S.reconnectTimer);
  S.reconnectTimer = 0;
  const ws = S.ws;
  if (ws) {
    ws.onmessage = null;
    ws.onclose = null;
    ws.close(1000, why);
    log('info', `Closed the WebSocket (1000, ${why}).`);
    teardown();
  }
  if (S.access) setState('disconnected', 'Disconnected');
}

function closeText(code, reason) {
  const [name, meaning] = CLOSE_CODES[code] || ['unknown', 'not in the protocol table'];
  return `Closed ${code} (${name}): ${meaning}${reason ? ` [reason: ${reason}]` : ''}`;
}

function onClosed(code, reason) {
  teardown();
  const [name, , policy = 'backoff'] = CLOSE_CODES[code] || [];
  const text = closeText(code, reason);
  if (!S.access) return log('err', text);
  if (policy === 'signin') {
    log('err', `${text}; sign in again.`);
    return endSession(`Connection closed ${code} (${name}): sign in again.`);
  }
  if (policy === 'no') {
    log(code === 1000 ? 'info' : 'err', `${text}; not reconnecting.`);
    setState('closed', `Closed ${code}`);
    return showError('session-error', `Closed ${code} (${name}): not reconnecting.`);
  }
  if (policy === 'refresh') {
    log('err', `${text}; refreshing the token, then reconnecting.`);
    setState('reconnecting', 'Refreshing token…');
    refreshTokens().then(() => scheduleReconnect(Math.random() * 500),
      () => { if (S.access) scheduleReconnect(backoff()); });
    return;
  }
  const delay = policy === 'now' && S.attempt === 0 ? Math.random() * 500 : backoff();
  log('err', `${text}; reconnecting in ${(delay / 1000).toFixed(1)} s.`);
  scheduleReconnect(delay);
}

// 0.5 s doubling to 30 s, times a random factor between 0.5 and 1.5.
const backoff = () => Math.min(30000, 500 * 2 ** S.attempt) * (0.5 + Math.random());

function scheduleReconnect(delay) {
  S.attempt += 1;
  clearTimeout(S.reconnectTimer);
  S.reconnectTimer = setTimeout(() => { S.reconnectTimer = 0; connect(); }, delay);
  setState('reconnecting', `Reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${S.attempt})`);
}

// Browsers cannot see WebSocket pings: send `ping` commands and expect an answer.
function startHeartbeat(seconds) {
  const every = Math.max(5, seconds || 25) * 1000;
  clearInterval(S.pingTimer);
  S.pingTimer = setInterval(() => {
    if (!send({ type: 'ping' })) return;
    clearTimeout(S.pongTimer);
    S.pongTimer = setTimeout(() => {
      const ws = S.ws;
      if (!ws) return;
      ws.onclose = null;
      ws.onmessage = null;
      ws.close();
      log('err', 'No answer to ping within 10 s: connection considered dead.');
      onClosed(1006, 'no pong');
    }, 10000);
  }, every);
}

function onFrame(text) {
  clearTimeout(S.pongTimer); // any frame shows the connection is alive
  let f;
  try { f = JSON.parse(text); } catch { return log('err', `Unparsable frame: ${String(text).slice(0, 200)}`); }
  const cmd = f.id != null ? S.pending.get(f.id) : undefined;
  if (cmd) S.pending.delete(f.id);
  if (f.type === 'pub') return onPub(f);
  log('in', f);
  switch (f.type) {
    case 'connected':
      S.attempt = 0;
      $('ws-client').textContent = f.client;
      setState('connected', 'Connected');
      startHeartbeat(f.ping_interval);
      for (const sub of S.subs.values()) sendSubscribe(sub);
      break;
    case 'subscribed': onSubscribed(f); break;
    case 'unsubscribed': onUnsubscribed(f); break;
    case 'refreshed': log('info', `Token refreshed on the connection; expires ${new Date(f.expires_at * 1000).toLocaleTimeString()}.`); break;
    case 'published': showError('pub-error', ''); break;
    case 'error': onErrorFrame(f, cmd); break;
    default: break;
  }
}

// ---------- channels ----------

function subscribe(name) {
  const input = $('sub-channel');
  const problem = channelProblem(name);
  if (problem) return fieldError(input, 'sub-error', problem);
  input.setAttribute('aria-invalid', 'false');
  if (S.subs.has(name)) return showError('sub-error', `Already subscribed to ${name}.`);
  showError('sub-error', S.wsState === 'connected' ? '' : 'Not connected: the subscription is sent on connect.');
  const sub = { channel: name, epoch: null, offset: 0, state: 'pending', recovered: null };
  S.subs.set(name, sub);
  sendSubscribe(sub);
  renderSubs();
  input.value = '';
}

function sendSubscribe(sub) {
  const frame = { type: 'subscribe', channel: sub.channel };
  if (sub.epoch != null) frame.recover = { epoch: sub.epoch, offset: sub.offset };
  sub.state = frame.recover ? 'recovering' : 'pending';
  if (!send(frame)) sub.state = 'inactive'; // sent on the next `connected`
  queueRender();
}

function onSubscribed(f) {
  const sub = S.subs.get(f.channel);
  if (!sub) return;
  sub.state = 'active';
  sub.recovered = f.recovered ?? null;
  if (f.recovered === true) {
    // Missed publications follow as `pub` frames: keep our position so
    // they are not mistaken for duplicates.
    log('info', `${f.channel}: recovered from ${sub.epoch}:${sub.offset}; missed publications follow.`);
  } else {
    if (f.recovered === false) log('err', `${f.channel}: NOT recovered (epoch changed or history window passed); nothing replayed. Refetch state, e.g. with History.`);
    sub.epoch = f.epoch;
    sub.offset = f.offset;
  }
  queueRender();
}

function onUnsubscribed(f) {
  const sub = S.subs.get(f.channel);
  if (!sub) return;
  if (f.reason) { // server-initiated: resubscribe from our last position
    log('err', `${f.channel}: unsubscribed by the server (${f.reason}); resubscribing with recover.`);
    sendSubscribe(sub);
  } else S.subs.delete(f.channel);
  queueRender();
}

function onPub(f) {
  const sub = S.subs.get(f.channel);
  if (sub && sub.epoch === f.epoch && f.offset <= sub.offset) return log('in', f, 'duplicate, ignored');
  log('in', f);
  if (sub) { sub.epoch = f.epoch; sub.offset = f.offset; queueRender(); }
}

function onErrorFrame(f, cmd) {
  const msg = `${f.code}: ${f.message}`;
  if (!cmd) return;
  const ch = cmd.channel;
  if (cmd.type === 'subscribe') {
    if (f.code !== 'already_subscribed') S.subs.delete(ch);
    showError('sub-error', `${ch}: ${msg}`);
    queueRender();
  } else if (cmd.type === 'unsubscribe') {
    if (f.code === 'not_subscribed') { S.subs.delete(ch); queueRender(); }
    showError('sub-error', `${ch}: ${msg}`);
  } else if (cmd.type === 'publish') showError('pub-error', msg);
  else if (cmd.type === 'presence' || cmd.type === 'history') showError('sub-error', `${cmd.type} ${ch}: ${msg}`);
  else if (cmd.type === 'refresh' || cmd.type === 'connect') showError('session-error', msg);
}

function unsubscribe(name) {
  if (S.wsState === 'connected') send({ type: 'unsubscribe', channel: name });
  else { S.subs.delete(name); renderSubs(); }
}

function queueRender() {
  if (S.renderQueued) return;
  S.renderQueued = true;
  requestAnimationFrame(() => { S.renderQueued = false; renderSubs(); });
}

const SUB_STATE = { pending: 'subscribing…', recovering: 'recovering…', inactive: 'disconnected' };

function renderSubs() {
  const rows = [...S.subs.values()].map((s) => {
    let state = SUB_STATE[s.state] || 'live';
    if (s.state === 'active' && s.recovered === true) state = 'live · recovered';
    if (s.state === 'active' && s.recovered === false) state = 'live · not recovered';
    const action = (label, fn, cls = 'secondary') =>
      h('button', { type: 'button', class: `small ${cls}`, 'aria-label': `${label} ${s.channel}`, onclick: fn }, label);
    const cmd = (type) => () => requireConnected('sub-error') && send({ type, channel: s.channel });
    return h('li', { class: 'item' },
      h('div', { class: 'item-main' },
        h('div', { class: 'item-title' }, h('span', { class: 'mono name' }, s.channel),
          h('span', { class: `state ${s.recovered === false ? 'bad' : s.state === 'active' ? 'ok' : ''}` }, state)),
        h('div', { class: 'item-meta' }, 'epoch ', h('code', {}, s.epoch ?? '—'), ' · offset ',
          h('code', {}, s.epoch == null ? '—' : String(s.offset)))),
      h('div', { class: 'item-actions' }, action('Presence', cmd('presence')), action('History', cmd('history')),
        action('Unsubscribe', () => unsubscribe(s.channel), 'danger')));
  });
  $('subs-list').replaceChildren(...rows);
  $('subs-empty').hidden = rows.length > 0;
}

// ---------- publish ----------

function readPublish() {
  const chInput = $('pub-channel'), dataInput = $('pub-data');
  chInput.setAttribute('aria-invalid', 'false');
  dataInput.setAttribute('aria-invalid', 'false');
  const channel = chInput.value.trim();
  const problem = channelProblem(channel);
  if (problem) return fieldError(chInput, 'pub-error', problem) && null;
  try {
    return { channel, data: JSON.parse(dataInput.value) };
  } catch (e) {
    return fieldError(dataInput, 'pub-error', `Data is not valid JSON: ${e.message}`) && null;
  }
}

function publishWs(ev) {
  ev?.preventDefault();
  const p = readPublish();
  if (!p || !requireConnected('pub-error')) return;
  showError('pub-error', '');
  send({ type: 'publish', ...p });
}

async function publishRest() {
  const p = readPublish();
  if (!p) return;
  showError('pub-error', '');
  try { await api('POST', '/api/v1/publish', p); } catch (e) { showError('pub-error', e); }
}

// ---------- API keys ----------

async function loadKeys() {
  try {
    const keys = [];
    let cursor = null;
    do {
      const page = await api('GET', `/api/v1/admin/api-keys?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      keys.push(...(page?.items || []));
      cursor = page?.next_cursor;
    } while (cursor);
    const rows = keys.map((k) => h('li', { class: `item${k.revoked ? ' revoked' : ''}` },
      h('div', { class: 'item-main' },
        h('div', { class: 'item-title' }, h('span', { class: 'name' }, k.name),
          h('span', { class: 'state' }, (k.scopes || []).join(', '))),
        h('div', { class: 'item-meta' }, h('code', {}, `${k.prefix}…`), ' · created ', k.created_at ? dateOf(k.created_at) : '—')),
      h('div', { class: 'item-actions' }, k.revoked ? h('span', { class: 'tag' }, 'revoked')
        : h('button', { type: 'button', class: 'small danger', 'aria-label': `Revoke key ${k.name}`, onclick: () => revokeKey(k) }, 'Revoke'))));
    $('keys-list').replaceChildren(...rows);
    $('keys-empty').hidden = rows.length > 0;
  } catch (e) {
    showError('key-error', e);
  }
}

async function createKey(ev) {
  ev.preventDefault();
  const name = $('key-name');
  const scopes = [...document.querySelectorAll('input[name=scope]:checked')].map((c) => c.value);
  if (!name.value.trim()) return fieldError(name, 'key-error', 'Enter a name for the key.');
  name.setAttribute('aria-invalid', 'false');
  if (!scopes.length) return showError('key-error', 'Choose at least one scope.');
  showError('key-error', '');
  try {
    const created = await api('POST', '/api/v1/admin/api-keys', { name: name.value.trim(), scopes });
    name.value = '';
    $('new-key-value').value = created.key;
    $('new-key-status').textContent = '';
    $('new-key').hidden = false;
    $('new-key-copy').focus();
    loadKeys();
  } catch (e) {
    showError('key-error', e);
  }
}

async function revokeKey(k) {
  if (!confirm(`Revoke the API key "${k.name}" (${k.prefix}…)? Apps using it stop working.`)) return;
  try { await api('DELETE', `/api/v1/admin/api-keys/${encodeURIComponent(k.id)}`); } catch (e) { showError('key-error', e); }
  loadKeys();
}

async function copyKey() {
  const input = $('new-key-value');
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    if (!document.execCommand('copy')) return ($('new-key-status').textContent = 'Copy failed: select the key and copy it by hand.');
  }
  $('new-key-status').textContent = 'Copied to the clipboard.';
}

// ---------- wiring ----------

function init() {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('ws-connect').addEventListener('click', () => { S.attempt = 0; connect(); });
  $('ws-disconnect').addEventListener('click', () => closeSocket('disconnect'));
  $('ws-ping').addEventListener('click', () => send({ type: 'ping' }));
  $('token-refresh').addEventListener('click', () => refreshTokens().catch(() => {}));
  $('subscribe-form').addEventListener('submit', (ev) => { ev.preventDefault(); subscribe($('sub-channel').value.trim()); });
  $('publish-form').addEventListener('submit', publishWs);
  $('pub-rest').addEventListener('click', publishRest);
  $('pub-data').addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) publishWs(ev); });
  $('key-form').addEventListener('submit', createKey);
  $('keys-reload').addEventListener('click', loadKeys);
  $('new-key-copy').addEventListener('click', copyKey);
  $('new-key-hide').addEventListener('click', () => { $('new-key').hidden = true; $('new-key-value').value = ''; });
  $('log-clear').addEventListener('click', () => { $('log').replaceChildren(); $('log-count').textContent = '0 entries'; });
  renderSubs();
  setState('signed-out', 'Signed out');
  log('info', 'Welcome to the Relais console. Sign in to open a WebSocket to this hub.');
}

init();
