// The wasmpipe console: a single page over the JSON API of `wasmpipe serve`.
//
// Plain browser JavaScript, no framework and no build step: the server embeds
// this file as it is. Every piece of server data is put into the page with
// textContent (never innerHTML), because events are user data. Every request
// carries the token from session storage as `Authorization: Bearer`, since the
// page itself is served without one.
'use strict';

// ---------------------------------------------------------------------------
// DOM helpers

/** Builds an element: `h('a', {href: '#/', class: 'x'}, 'text', child)`. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** Appends strings (as text) and nodes, skipping null and flattening arrays. */
function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An SVG element (charts). */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return append(el, children);
}

function $(sel, root = document) {
  return root.querySelector(sel);
}

function clear(el) {
  el.replaceChildren();
  return el;
}

// ---------------------------------------------------------------------------
// Formatting

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** An API time (RFC 3339, UTC) in local time, to the millisecond. */
function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/**
 * A time element showing local time (only the time of day with `short`),
 * with the API's own text as its title.
 */
function timeNode(iso, short = false) {
  const text = fmtTime(iso);
  return h('time', {datetime: iso || '', title: iso || ''}, short && iso ? text.slice(11, 19) : text);
}

function fmtNum(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** A rate per second, with as many decimals as a small rate needs. */
function fmtRate(r) {
  if (r === null || r === undefined || Number.isNaN(r)) return '—';
  if (r >= 100) return fmtNum(Math.round(r));
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(r === 0 ? 0 : 2);
}

/**
 * A JSON value as coloured text, built from spans (so that no part of it is
 * ever parsed as HTML). `indent` > 0 pretty-prints.
 */
function jsonNode(value, indent = 0) {
  const out = h('code', {class: 'json'});
  const put = (cls, text) => out.append(cls ? h('span', {class: cls}, text) : text);
  const walk = (v, depth) => {
    const nl = indent ? '\n' + ' '.repeat(indent * (depth + 1)) : '';
    const end = indent ? '\n' + ' '.repeat(indent * depth) : '';
    if (v === null) put('j-null', 'null');
    else if (typeof v === 'string') put('j-str', JSON.stringify(v));
    else if (typeof v === 'number') put('j-num', String(v));
    else if (typeof v === 'boolean') put('j-bool', String(v));
    else if (Array.isArray(v)) {
      if (v.length === 0) return put(null, '[]');
      put(null, '[');
      v.forEach((x, i) => {
        put(null, (i ? ',' : '') + (nl || ''));
        walk(x, depth + 1);
      });
      put(null, end + ']');
    } else {
      const keys = Object.keys(v);
      if (keys.length === 0) return put(null, '{}');
      put(null, '{');
      keys.forEach((k, i) => {
        put(null, (i ? ',' : '') + (nl || (i ? ' ' : '')));
        put('j-key', JSON.stringify(k));
        put(null, indent ? ': ' : ':');
        walk(v[k], depth + 1);
      });
      put(null, end + '}');
    }
  };
  walk(value, 0);
  return out;
}

function badge(text, kind) {
  return h('span', {class: `badge badge-${kind || text}`}, text);
}

function jobLink(id) {
  return h('a', {href: `#/jobs/${id}`, class: 'job-link'}, `job ${id}`);
}

/** Version chips: `{"enrich": "1a2b…"}` → `enrich 1a2b…` each. */
function versionChips(versions) {
  return Object.entries(versions || {}).map(([stage, v]) =>
    h('span', {class: 'chip', title: `stage ${stage}, version ${v}`}, h('b', {}, stage), ' ', v));
}

// ---------------------------------------------------------------------------
// The API

const TOKEN_KEY = 'wasmpipe.token';

function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** A refusal of the API (or no answer at all: status 0). */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The `{"error": ...}` of a refusal, with the log id of an internal error. */
async function errorMessage(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string') {
      return body.id ? `${body.error} (logged on the server as ${body.id})` : body.error;
    }
  } catch {
    // Not JSON: a proxy in between, say. Fall through to the status.
  }
  return `the server answered ${res.status} ${res.statusText}`.trim();
}

/**
 * Calls the API. Resolves to the parsed JSON (or text, or the raw Response
 * with `raw`); rejects with an ApiError. A 401 also brings up the login form,
 * since the token is missing or wrong whatever the view was doing.
 */
async function api(path, {method = 'GET', body, headers = {}, raw = false, signal} = {}) {
  const hdrs = {...headers};
  const token = getToken();
  if (token) hdrs.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {method, headers: hdrs, body, signal, cache: 'no-store'});
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'cannot reach the server; check that `wasmpipe serve` is running, then try again');
  }
  if (!res.ok) {
    const message = await errorMessage(res);
    if (res.status === 401) requireLogin(message);
    throw new ApiError(res.status, message);
  }
  if (raw) return res;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/** What a failed call means to the person looking, and what to do next. */
function describeError(e, doing) {
  if (e.status === 403) {
    // The server names the permission the token lacks.
    const perm = /lacks the `read`/.test(e.message) ? 'read' : 'write';
    return `This token cannot ${perm}: ${e.message}. Sign in with a token that has the \`${perm}\` permission to ${doing}.`;
  }
  if (e.status === 0) return e.message;
  return `Cannot ${doing}: ${e.message} (HTTP ${e.status}).`;
}

/** An error box; a 401 shows none, because the login form says it. */
function errorBox(e, doing, id) {
  if (e.status === 401) return null;
  const box = h('div', {class: 'error-box', role: 'alert', id, 'data-status': e.status},
    describeError(e, doing));
  if (e.status === 403) {
    box.append(' ', h('button', {type: 'button', class: 'link', onclick: () => signOut()}, 'Use another token'));
  }
  return box;
}

// ---------------------------------------------------------------------------
// Signing in

const session = {
  signedIn: false,
  windows: false, // whether GET /v1/windows answers 200
  writes: null, // a promise: whether the token may write (see canWrite)
};

/** Shows the login form with the server's reason, and stops what runs. */
function requireLogin(message) {
  session.signedIn = false;
  session.writes = null;
  stopView();
  metrics.stop();
  overBudget.show([]);
  // What the last token could see goes, not just out of sight.
  clear($('#view')).hidden = true;
  $('#login').hidden = false;
  $('#nav').classList.add('disabled');
  const err = $('#login-error');
  // A first visit without a token is expected, not an error: say it calmly.
  err.classList.toggle('hint', !getToken());
  err.textContent = getToken()
    ? `The server refused this token: ${message}. Check it against the manifest's [[serve.token]] entries.`
    : `This server needs a token (it answered: ${message}).`;
  err.hidden = false;
  updateTokenState();
  $('#login-token').focus();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  session.signedIn = false;
  session.writes = null;
  stopView();
  metrics.stop();
  overBudget.show([]);
  // What the last token could see goes, not just out of sight.
  clear($('#view')).hidden = true;
  $('#login').hidden = false;
  $('#login-error').hidden = true;
  $('#login-token').value = '';
  updateTokenState();
  $('#login-token').focus();
}

function updateTokenState() {
  const token = getToken();
  $('#logout').hidden = !token;
  $('#token-state').textContent = !session.signedIn ? '' : token ? 'signed in with a token' : 'open server (no tokens configured)';
}

/**
 * Checks that the API answers with the current token (or without one), then
 * shows the view the URL names. A 401 here brings up the login form.
 */
async function signIn() {
  try {
    await api('/v1/jobs?limit=1');
  } catch (e) {
    if (e.status !== 401) showFatal(e);
    return;
  }
  session.signedIn = true;
  session.writes = null;
  $('#login').hidden = true;
  $('#view').hidden = false;
  $('#nav').classList.remove('disabled');
  updateTokenState();
  await probeWindows();
  metrics.start();
  route();
}

/** The server cannot be reached at all: say so, and offer to try again. */
function showFatal(e) {
  $('#login').hidden = true;
  const view = clear($('#view'));
  view.hidden = false;
  if (e.status === 403) {
    view.append(errorBox(e, 'use the console', 'fatal-error'));
    return;
  }
  view.append(h('div', {class: 'error-box', role: 'alert', id: 'fatal-error'}, describeError(e, 'load the console'), ' ',
    h('button', {type: 'button', class: 'link', onclick: () => signIn()}, 'Try again')));
}

/** Shows the Windows view only when the pipeline has windows (200, not 404). */
async function probeWindows() {
  try {
    await api('/v1/windows?limit=1');
    session.windows = true;
  } catch (e) {
    session.windows = false;
    if (e.status !== 404 && e.status !== 401) console.warn('GET /v1/windows:', e.message);
  }
  $('#nav-windows').hidden = !session.windows;
}

function setupLogin() {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('#login-token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('#login-error').hidden = true;
    signIn();
  });
  $('#logout').addEventListener('click', () => signOut());
}

// ---------------------------------------------------------------------------
// The header: pipeline name and readiness (GET /readyz needs no token)

const ready = {stages: [], pipeline: ''};

async function loadReady() {
  const status = $('#ready-status');
  try {
    const res = await fetch('/readyz', {cache: 'no-store'});
    const body = await res.json();
    if (res.ok) {
      ready.pipeline = body.pipeline;
      ready.stages = body.stages || [];
      $('#pipeline-name').textContent = body.pipeline;
      status.replaceChildren(badge('ready', 'done'));
      status.title = 'GET /readyz answers 200: batches are accepted';
    } else {
      status.replaceChildren(badge('not ready', 'abandoned'));
      status.title = body.error || `GET /readyz answered ${res.status}`;
    }
  } catch {
    status.replaceChildren(badge('unreachable', 'abandoned'));
    status.title = 'the server does not answer GET /readyz';
  }
}

// ---------------------------------------------------------------------------
// Metrics: GET /metrics every 2 s, kept for 10 minutes, rates computed here

const METRIC_POLL_MS = 2000;
const METRIC_KEEP_MS = 10 * 60 * 1000;
const CHART_SPAN_MS = 5 * 60 * 1000;

/** Prometheus text → [{name, labels, value}]. Only what the server writes. */
function parsePrometheus(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({name: m[1], labels, value: Number(m[3])});
  }
  return out;
}

/** The sum of a metric over its label sets (one per pipeline here). */
function metricSum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

const metrics = {
  history: [], // {t, received, stored, dead, backlog, chunks, stages: {name: {in, out, failed}}}
  timer: null,
  // Bumped by stop(): a poll still in flight then schedules no next one, so
  // that a stop and a start never leave two loops running.
  generation: 0,
  error: null,
  listener: null, // the overview's re-render, while it is shown

  start() {
    if (this.timer) return;
    const generation = this.generation;
    const tick = async () => {
      await this.poll();
      if (this.generation === generation) this.timer = setTimeout(tick, METRIC_POLL_MS);
    };
    this.timer = setTimeout(tick, 0);
  },

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.generation++;
  },

  async poll() {
    try {
      const all = parsePrometheus(await api('/metrics'));
      overBudget.fromMetrics(all);
      const stages = {};
      for (const s of all) {
        const stage = s.labels.stage;
        if (!stage || !s.name.startsWith('wasmpipe_stage_') || !s.name.endsWith('_total')) continue;
        const key = {wasmpipe_stage_events_in_total: 'in', wasmpipe_stage_events_out_total: 'out',
          wasmpipe_stage_failures_total: 'failed'}[s.name];
        if (key) (stages[stage] ||= {})[key] = s.value;
      }
      const t = Date.now();
      this.history.push({
        t,
        received: metricSum(all, 'wasmpipe_events_received_total'),
        stored: metricSum(all, 'wasmpipe_events_stored_total'),
        dead: metricSum(all, 'wasmpipe_dead_letters_total'),
        backlog: metricSum(all, 'wasmpipe_queue_events'),
        chunks: metricSum(all, 'wasmpipe_queue_chunks'),
        jobsDone: metricSum(all, 'wasmpipe_jobs_done_total'),
        refused: metricSum(all, 'wasmpipe_batches_refused_total'),
        stages,
      });
      while (this.history.length && this.history[0].t < t - METRIC_KEEP_MS) this.history.shift();
      this.error = null;
    } catch (e) {
      if (e.status === 401) return;
      this.error = e;
    }
    if (this.listener) this.listener();
  },

  /**
   * Per-second rates of a counter between consecutive samples, as [t, rate]
   * points. A counter that went down (the server restarted) leaves a gap.
   */
  rates(key) {
    const pts = [];
    for (let i = 1; i < this.history.length; i++) {
      const a = this.history[i - 1];
      const b = this.history[i];
      const dv = b[key] - a[key];
      pts.push([b.t, dv < 0 ? null : dv / ((b.t - a.t) / 1000)]);
    }
    return pts;
  },

  gauge(key) {
    return this.history.map((s) => [s.t, s[key]]);
  },

  latest() {
    return this.history[this.history.length - 1];
  },
};

/** 1, 2 or 5 times a power of ten, at least `v`: a readable axis maximum. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * A line chart of [t, value] points, drawn as SVG at the width its
 * container has now (the overview redraws it at every sample). By default
 * it spans the last CHART_SPAN_MS; `from`/`to` (ms) and `labels` (the two
 * ends' captions) set another span, `fmt` the axis numbers.
 */
function drawChart(container, points, {color = 'var(--accent)', from, to, labels = ['5 min ago', 'now'], fmt = fmtRate} = {}) {
  const width = Math.max(container.clientWidth, 200);
  const height = 120;
  const top = 14;
  const bottom = height - 18;
  const end = to ?? Date.now();
  const x0 = from ?? end - CHART_SPAN_MS;
  const span = Math.max(end - x0, 1);
  const shown = points.filter(([t]) => t >= x0);
  const max = niceMax(Math.max(0, ...shown.map(([, v]) => v ?? 0)));
  const x = (t) => ((t - x0) / span) * width;
  const y = (v) => bottom - (v / max) * (bottom - top);
  const chart = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img'});
  // Grid: the maximum, half of it, and zero.
  for (const v of [max, max / 2, 0]) {
    chart.append(svg('line', {x1: 0, x2: width, y1: y(v), y2: y(v), class: 'grid'}));
    chart.append(svg('text', {x: 4, y: y(v) - 3, class: 'axis'}, fmt(v)));
  }
  chart.append(svg('text', {x: 4, y: height - 3, class: 'axis'}, labels[0]));
  chart.append(svg('text', {x: width - 4, y: height - 3, class: 'axis', 'text-anchor': 'end'}, labels[1]));
  // One path per run of known values, so that a gap stays a gap.
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const line = run.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('');
      const area = `${line}L${x(run[run.length - 1][0]).toFixed(1)},${bottom}L${x(run[0][0]).toFixed(1)},${bottom}Z`;
      chart.append(svg('path', {d: area, class: 'area', fill: color}));
      chart.append(svg('path', {d: line, class: 'line', stroke: color}));
    }
    run = [];
  };
  for (const p of shown) {
    if (p[1] === null) flush();
    else run.push(p);
  }
  flush();
  if (shown.length < 2) {
    chart.append(svg('text', {x: width / 2, y: height / 2, class: 'axis', 'text-anchor': 'middle'}, 'collecting samples…'));
  }
  container.replaceChildren(chart);
}

// ---------------------------------------------------------------------------
// The router: #/..., each view renders into #view and returns its cleanup

let stopCurrent = null;

function stopView() {
  if (stopCurrent) stopCurrent();
  stopCurrent = null;
  metrics.listener = null;
}

/** `#/events?job=3` → {path: ['events'], query: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, q] = raw.split('?');
  return {path: path.split('/').filter(Boolean), query: new URLSearchParams(q || '')};
}

const notice = {forHash: null};

/** A message above the view that stays while the URL is `forHash`. */
function showNotice(children, forHash) {
  const el = $('#notice');
  append(clear(el), children);
  el.hidden = false;
  notice.forHash = forHash;
}

function route() {
  if (!session.signedIn) return;
  stopView();
  if (location.hash !== notice.forHash) $('#notice').hidden = true;
  // The over-budget banner links to the Deployments view from the others.
  if (overBudget.shown.length) overBudget.show(overBudget.shown);
  const {path, query} = parseHash();
  const view = clear($('#view'));
  let name = path[0] || 'overview';
  let cleanup;
  if (name === 'jobs' && path[1]) {
    cleanup = jobView(view, path[1]);
  } else if (name === 'jobs') {
    cleanup = jobsView(view);
  } else if (name === 'events') {
    cleanup = eventsView(view, query);
  } else if (name === 'sql') {
    cleanup = sqlView(view, query);
  } else if (name === 'tail') {
    cleanup = tailView(view, query);
  } else if (name === 'windows') {
    cleanup = windowsView(view, query);
  } else if (name === 'deployments') {
    cleanup = deploymentsView(view);
  } else if (name === 'overview') {
    cleanup = overviewView(view);
  } else {
    name = '';
    view.append(h('div', {class: 'error-box'}, `No view \`${path.join('/')}\`. `,
      h('a', {href: '#/'}, 'Go to the overview'), '.'));
  }
  stopCurrent = cleanup || null;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.route === name);
  }
}

/** Repeats `fn` every `ms` while the view lives; returns the stop function. */
function every(ms, fn) {
  const id = setInterval(fn, ms);
  return () => clearInterval(id);
}

function pageHeader(title, ...extra) {
  return h('div', {class: 'page-header'}, h('h1', {}, title), h('div', {class: 'page-actions'}, extra));
}

// ---------------------------------------------------------------------------
// Overview

function overviewView(view) {
  const tiles = h('div', {class: 'tiles'});
  const charts = h('div', {class: 'charts'});
  const chartBoxes = {};
  const specs = [
    ['received', 'Events in', 'events/s accepted', 'var(--accent)'],
    ['stored', 'Events out', 'events/s stored', 'var(--ok)'],
    ['dead', 'Dead letters', 'dead letters/s', 'var(--bad)'],
    ['backlog', 'Backlog', 'events waiting', 'var(--warn)'],
  ];
  for (const [key, title, unit, color] of specs) {
    const box = h('div', {class: 'chart-box', id: `chart-${key}`});
    chartBoxes[key] = {box, color};
    charts.append(h('div', {class: 'card'}, h('div', {class: 'card-title'}, title, h('span', {class: 'muted'}, ` · ${unit}`)), box));
  }
  const stages = h('div', {class: 'card'});
  const recent = h('div', {class: 'card'});
  const status = h('p', {class: 'muted small', id: 'metrics-status'});
  const title = pageHeader('Pipeline');
  view.append(
    title,
    tiles, charts, status,
    h('div', {class: 'two-col'}, stages, recent));

  const render = () => {
    $('h1', title).textContent = ready.pipeline ? `Pipeline ${ready.pipeline}` : 'Pipeline';
    const last = metrics.latest();
    const rate = (key) => {
      const r = metrics.rates(key).filter(([, v]) => v !== null);
      return r.length ? r[r.length - 1][1] : null;
    };
    const inRate = rate('received');
    const deadRate = rate('dead');
    const share = inRate > 0 && deadRate !== null ? ` · ${((deadRate / inRate) * 100).toFixed(1)}% of input` : '';
    clear(tiles).append(
      tile('Events in', `${fmtRate(inRate)}/s`, `${fmtNum(last?.received)} accepted in all`, 'tile-in'),
      tile('Events out', `${fmtRate(rate('stored'))}/s`, `${fmtNum(last?.stored)} stored in all`, 'tile-out'),
      tile('Dead letters', `${fmtRate(deadRate)}/s`, `${fmtNum(last?.dead)} in all${share}`, 'tile-dead'),
      tile('Backlog', fmtNum(last?.backlog), `events waiting, ${fmtNum(last?.chunks)} chunks`, 'tile-backlog'));
    for (const [key, {box, color}] of Object.entries(chartBoxes)) {
      drawChart(box, key === 'backlog' ? metrics.gauge(key) : metrics.rates(key), {color});
    }
    status.textContent = metrics.error
      ? `GET /metrics failed: ${metrics.error.message}; the charts resume when it answers again.`
      : `GET /metrics every ${METRIC_POLL_MS / 1000} s; rates are computed in this page from the counters.`;
    renderStages(stages, last);
  };
  metrics.listener = render;
  render();
  loadReady().then(render);
  const loadRecent = () => renderRecentJobs(recent);
  loadRecent();
  const stop = every(5000, loadRecent);
  return () => {
    stop();
    metrics.listener = null;
  };
}

function tile(label, value, sub, id) {
  return h('div', {class: 'tile', id},
    h('div', {class: 'tile-label'}, label),
    h('div', {class: 'tile-value'}, value),
    h('div', {class: 'tile-sub'}, sub));
}

function renderStages(card, last) {
  const rows = ready.stages.map((s) => {
    const m = last?.stages?.[s.name] || {};
    return h('tr', {'data-test': 'stage-row'},
      h('td', {}, h('b', {}, s.name)), h('td', {}, h('code', {}, s.version)),
      h('td', {class: 'num'}, fmtNum(m.in)), h('td', {class: 'num'}, fmtNum(m.out)),
      h('td', {class: 'num'}, fmtNum(m.failed)));
  });
  clear(card).append(
    h('div', {class: 'card-title'}, 'Stages', h('span', {class: 'muted'}, ' · current versions (GET /readyz)')),
    h('table', {class: 'table', id: 'stages-table'},
      h('thead', {}, h('tr', {}, h('th', {}, 'Stage'), h('th', {}, 'Version'),
        h('th', {class: 'num'}, 'In'), h('th', {class: 'num'}, 'Out'), h('th', {class: 'num'}, 'Failed'))),
      h('tbody', {}, rows)));
}

async function renderRecentJobs(card) {
  try {
    const page = await api('/v1/jobs?limit=8');
    clear(card).append(
      h('div', {class: 'card-title'}, 'Recent jobs', h('a', {href: '#/jobs', class: 'card-link'}, 'All jobs →')),
      jobsTable(page.jobs, 'recent-jobs', true));
  } catch (e) {
    clear(card).append(errorBox(e, 'list the jobs'));
  }
}

// ---------------------------------------------------------------------------
// Jobs

function statusBadge(status) {
  return badge(status, status);
}

/**
 * A table of jobs, each row linking to its page. `compact` (the overview's)
 * leaves out chunks and timings.
 */
function jobsTable(jobs, id, compact = false) {
  const columns = [
    ['Job', '', (j) => h('a', {href: `#/jobs/${j.id}`}, `#${j.id}`)],
    ['Kind', 'nowrap', (j) => [j.kind, j.origin ? h('span', {class: 'muted'}, ' of ', h('a', {href: `#/jobs/${j.origin}`}, `#${j.origin}`)) : null]],
    ['Status', '', (j) => statusBadge(j.status)],
    ['In', 'num', (j) => fmtNum(j.events_in)],
    ['Out', 'num', (j) => fmtNum(j.events_out)],
    ['Dead', 'num', (j) => fmtNum(j.dead_letters)],
    ['Chunks', 'num', (j) => `${fmtNum(j.chunks_done)}/${fmtNum(j.chunks)}`, true],
    ['Received', '', (j) => compact ? timeNode(j.timings.received_at, true) : timeNode(j.timings.received_at)],
    ['Queued', 'num', (j) => fmtMs(j.timings.queued_ms), true],
    ['Processing', 'num', (j) => fmtMs(j.timings.processing_ms), true],
  ].filter((c) => !(compact && c[3]));
  const rows = jobs.map((j) => h('tr', {'data-test': 'job-row', 'data-job': j.id, class: 'clickable',
    onclick: (ev) => {
      if (!ev.target.closest('a')) location.hash = `#/jobs/${j.id}`;
    }},
  columns.map(([title, cls, cell]) =>
    h('td', {class: title === 'Dead' && j.dead_letters ? `${cls} bad` : cls}, cell(j)))));
  const empty = jobs.length ? null : h('tr', {}, h('td', {colspan: columns.length, class: 'empty'},
    'No jobs yet: post a batch to /v1/pipelines/{name}/jobs (docs/api.md).'));
  return h('table', {class: 'table', id},
    h('thead', {}, h('tr', {}, columns.map(([title, cls]) => h('th', {class: cls}, title)))),
    h('tbody', {}, rows, empty));
}

function jobsView(view) {
  const body = h('div', {class: 'card flush'});
  const more = h('button', {type: 'button', id: 'jobs-more', hidden: true}, 'Load more');
  const refresh = h('button', {type: 'button', id: 'jobs-refresh'}, 'Refresh');
  view.append(pageHeader('Jobs', refresh), body, h('div', {class: 'pager'}, more));
  let jobs = [];
  let cursor = null;

  const load = async (append) => {
    try {
      const q = append && cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
      const page = await api(`/v1/jobs?limit=50${q}`);
      jobs = append ? jobs.concat(page.jobs) : page.jobs;
      cursor = page.next_cursor;
      clear(body).append(jobsTable(jobs, 'jobs-table'));
      more.hidden = !cursor;
    } catch (e) {
      clear(body).append(errorBox(e, 'list the jobs'));
    }
  };
  more.addEventListener('click', () => load(true));
  refresh.addEventListener('click', () => load(false));
  load(false);
  // Keep the first page fresh while nobody has paged further down.
  return every(5000, () => {
    if (jobs.length <= 50) load(false);
  });
}

// ---------------------------------------------------------------------------
// One job

function jobView(view, id) {
  const header = h('div', {class: 'page-header'});
  const actionMsg = h('div', {id: 'action-message'});
  const tiles = h('div', {class: 'tiles'});
  const dead = h('div', {class: 'card flush', id: 'dead-letters-card'});
  const side = h('div', {class: 'side'});
  const diff = h('div', {class: 'card', id: 'diff-card'});
  view.append(header, actionMsg, tiles,
    h('div', {class: 'job-grid'}, h('div', {class: 'main-col'}, dead, diff), side));

  let job = null;
  let timer = null;
  let stopped = false;

  const load = async () => {
    try {
      const first = job === null;
      const wasDone = job?.status === 'done';
      job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      renderJobHeader(header, job, actionMsg);
      renderJobTiles(tiles, job);
      renderJobSide(side, job);
      if (first) renderDiffForm(diff, job);
      // Dead letters are final once the job is done; load them then, or now
      // to show what is there so far.
      if (first || (!wasDone && job.status === 'done')) loadDeadLetters(dead, job);
      if (job.status !== 'done' && job.status !== 'abandoned' && !stopped) timer = setTimeout(load, 1000);
    } catch (e) {
      clear(view).append(errorBox(e, `show job ${id}`, 'job-error'));
    }
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function renderJobHeader(header, job, actionMsg) {
  const retry = h('button', {type: 'button', id: 'retry-dead', class: 'primary',
    disabled: !job.dead_letters, title: job.dead_letters ? 'Run the dead letters not yet retried through the current stages, as a new job' : 'This job has no dead letters'},
  'Retry dead letters');
  const replay = h('button', {type: 'button', id: 'replay', title: 'Run the whole input again through the current stages, as a new job'}, 'Replay');
  retry.addEventListener('click', () => startJob(job, 'dead-letters/retry', 'retry its dead letters', retry, actionMsg));
  replay.addEventListener('click', () => startJob(job, 'replay', 'replay this job', replay, actionMsg));
  const origin = job.origin
    ? h('span', {class: 'muted', id: 'job-origin', 'data-origin': job.origin}, `${job.kind} of `, jobLink(job.origin))
    : h('span', {class: 'muted'}, job.kind);
  clear(header).append(
    h('h1', {}, 'Job ', h('span', {id: 'job-id'}, String(job.id))),
    h('span', {id: 'job-status'}, statusBadge(job.status)),
    origin,
    h('div', {class: 'page-actions'}, retry, replay));
}

/** POSTs a retry or replay; on 202 goes to the new job, else says why not. */
async function startJob(job, what, doing, button, actionMsg) {
  button.disabled = true;
  clear(actionMsg);
  try {
    const r = await api(`/v1/jobs/${job.id}/${what}`, {method: 'POST'});
    const target = `#/jobs/${r.job}`;
    const verb = what === 'replay' ? `replays the ${fmtNum(r.accepted)} events` : `retries the ${fmtNum(r.accepted)} dead letters`;
    showNotice([h('span', {id: 'action-notice'}, h('a', {href: target}, `Job ${r.job}`), ` ${verb} of `, jobLink(job.id), '.')], target);
    location.hash = target;
  } catch (e) {
    button.disabled = false;
    actionMsg.append(errorBox(e, doing, 'action-error'));
  }
}

function renderJobTiles(tiles, job) {
  clear(tiles).append(
    tile('Events in', fmtNum(job.events_in), `${fmtNum(job.chunks_done)} of ${fmtNum(job.chunks)} chunks done`),
    tile('Events out', fmtNum(job.events_out), 'stored'),
    tile('Dead letters', fmtNum(job.dead_letters), job.retries ? `${fmtNum(job.retries)} timeout retries` : 'no timeout retries', 'job-dead-tile'),
    tile('Processing', fmtMs(job.timings.processing_ms), `queued ${fmtMs(job.timings.queued_ms)}`));
}

/** A two-column table of label → value. */
function kvTable(pairs, id) {
  return h('table', {class: 'kv', id}, h('tbody', {}, pairs.map(([k, v]) =>
    h('tr', {}, h('th', {}, k), h('td', {}, v === null || v === undefined ? h('span', {class: 'muted'}, '—') : v)))));
}

function renderJobSide(side, job) {
  const t = job.timings;
  const versions = job.stage_versions.length
    ? job.stage_versions.map((set, i) => h('div', {class: 'version-set', 'data-test': 'version-set'},
      job.stage_versions.length > 1 ? h('div', {class: 'muted small'}, `set ${i + 1}`) : null,
      kvTable(Object.entries(set).map(([stage, v]) => [stage, h('code', {}, v)]))))
    : h('p', {class: 'muted'}, 'No chunk has run yet.');
  const ctx = job.context && typeof job.context === 'object'
    ? kvTable(Object.entries(job.context).map(([k, v]) => [k, v === null ? null : typeof v === 'string' ? v : jsonNode(v)]), 'job-context')
    : jsonNode(job.context);
  clear(side).append(
    h('div', {class: 'card'}, h('div', {class: 'card-title'}, 'Result'),
      job.result === null
        ? h('p', {class: 'muted small', id: 'job-result'}, job.status === 'done'
          ? 'None: the pipeline does not end in a reduce (or its reduce is windowed; see Windows).'
          : 'Not yet: the job is not done.')
        : h('pre', {class: 'json-block', id: 'job-result'}, jsonNode(job.result, 2))),
    h('div', {class: 'card'}, h('div', {class: 'card-title'}, 'Stage versions'), versions),
    h('div', {class: 'card'}, h('div', {class: 'card-title'}, 'Timings'), kvTable([
      ['received', timeNode(t.received_at)],
      ['started', t.started_at ? timeNode(t.started_at) : null],
      ['finished', t.finished_at ? timeNode(t.finished_at) : null],
      ['queued', fmtMs(t.queued_ms)],
      ['processing', fmtMs(t.processing_ms)],
    ], 'job-timings')),
    h('div', {class: 'card'}, h('div', {class: 'card-title'}, 'Context'), ctx));
}

/**
 * The job's dead letters, 100 at a time. A list rather than a table: the
 * event that failed is the widest thing on the page and gets a full line.
 */
async function loadDeadLetters(card, job) {
  const rows = h('div', {class: 'dead-list', id: 'dead-letters'});
  const more = h('button', {type: 'button', id: 'dead-more', hidden: true}, 'Load more');
  const count = h('span', {id: 'dead-count', 'data-count': job.dead_letters}, fmtNum(job.dead_letters));
  clear(card).append(
    h('div', {class: 'card-title pad'}, 'Dead letters ', h('span', {class: 'pill'}, count),
      h('span', {class: 'muted'}, ' · the events a stage failed, and why')),
    rows,
    h('div', {class: 'pager'}, more));
  let cursor = null;
  const load = async () => {
    try {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
      const page = await api(`/v1/dead-letters?job=${job.id}&limit=100${q}`);
      for (const d of page.dead_letters) rows.append(deadRow(d));
      if (!rows.children.length) {
        rows.append(h('p', {class: 'empty'}, 'No dead letters: every event went through.'));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (e) {
      card.append(errorBox(e, 'list the dead letters'));
    }
  };
  more.addEventListener('click', load);
  await load();
}

function deadRow(d) {
  const stage = d.stage === null ? 'the source' : d.stage;
  return h('div', {class: 'dead-row', 'data-test': 'dead-letter-row', 'data-index': d.index},
    h('span', {class: 'dead-index', title: 'the event\'s index in the job'}, `#${d.index}`),
    h('div', {},
      h('div', {class: 'dead-head'},
        h('span', {class: 'chip', title: 'the stage that failed it'}, h('b', {}, stage)),
        h('span', {class: 'reason', 'data-test': 'dead-reason'}, d.error),
        h('span', {class: 'dead-meta'},
          d.attempts === 1 ? '1 attempt' : `${d.attempts} attempts`, ' · ',
          d.retried_by ? ['retried by ', jobLink(d.retried_by)] : 'not retried')),
      h('div', {class: 'json-inline'}, jsonNode(d.event))));
}

// ---------------------------------------------------------------------------
// Diff a new version of a stage against a job (POST /v1/jobs/{id}/diff)

function renderDiffForm(card, job) {
  const stages = [...new Set(job.stage_versions.flatMap((s) => Object.keys(s)))];
  const select = h('select', {id: 'diff-stage', required: true},
    stages.map((s) => h('option', {value: s}, s)));
  const file = h('input', {type: 'file', id: 'diff-file', accept: '.wasm,application/wasm', required: true});
  const run = h('button', {type: 'submit', id: 'diff-run', class: 'primary'}, 'Run diff');
  const result = h('div', {id: 'diff-result'});
  const form = h('form', {id: 'diff-form', class: 'diff-form'},
    h('label', {}, 'Stage ', select), h('label', {}, 'New module ', file), run);
  clear(card).append(
    h('div', {class: 'card-title'}, 'Diff a new version'),
    h('p', {class: 'muted small'}, 'Runs this job\'s input through the stages with one of them replaced by the module you pick, and shows what would change. Nothing is stored.'),
    stages.length ? form : h('p', {class: 'muted'}, 'Available once a chunk of the job has run.'),
    result);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) return;
    run.disabled = true;
    clear(result).append(h('p', {class: 'muted', id: 'diff-running'}, `Running ${fmtNum(job.events_in)} events through the new \`${select.value}\`…`));
    try {
      const body = await api(`/v1/jobs/${job.id}/diff?stage=${encodeURIComponent(select.value)}`,
        {method: 'POST', body: f, headers: {'Content-Type': 'application/wasm'}});
      renderDiff(clear(result), body);
    } catch (e) {
      clear(result).append(errorBox(e, 'diff the new version', 'diff-error'));
    } finally {
      run.disabled = false;
    }
  });
}

function renderDiff(out, d) {
  const changedVersions = Object.keys(d.after || {}).filter((s) => d.before?.[s] !== d.after[s]);
  out.append(
    h('p', {class: 'diff-summary', id: 'diff-summary'}, d.summary),
    h('div', {class: 'tiles small'},
      tile('Events', fmtNum(d.events), 'run again'),
      tile('Changed', fmtNum(d.changed), 'events whose outputs differ'),
      tile('New dead letters', fmtNum(d.new_dead_letters), 'fail with the new version'),
      tile('Fixed', fmtNum(d.fixed_dead_letters), 'dead letters that now pass')),
    h('p', {class: 'small'}, changedVersions.map((s) =>
      h('span', {class: 'chip'}, h('b', {}, s), ' ', d.before?.[s] || '—', ' → ', d.after[s]))));
  if (d.result) {
    out.append(h('div', {class: 'diff-block', id: 'diff-job-result'},
      h('div', {class: 'card-title'}, 'Result ', d.result.changed ? badge('changed', 'abandoned') : badge('unchanged', 'done')),
      sideBySide(prettyLines([d.result.before]), prettyLines([d.result.after]))));
  }
  const list = h('div', {class: 'diff-changes', id: 'diff-changes'});
  for (const c of d.changes || []) list.append(diffChange(c));
  if (!(d.changes || []).length) list.append(h('p', {class: 'muted'}, 'No event changes.'));
  out.append(list);
  if (d.truncated) {
    out.append(h('p', {class: 'muted small', id: 'diff-truncated'}, `Only the first ${fmtNum(d.changes.length)} changes are listed; the counts above cover all events.`));
  }
}

const CHANGE_WORDS = {
  different: 'outputs differ',
  added: 'now produces output',
  removed: 'no longer produces output',
  dead: 'now fails',
  fixed: 'no longer fails',
};

function diffChange(c) {
  const badgeKind = {different: 'running', added: 'done', removed: 'queued', dead: 'abandoned', fixed: 'done'}[c.change] || 'queued';
  const before = prettyLines(c.before || [], c.before_error);
  const after = prettyLines(c.after || [], c.after_error);
  return h('div', {class: 'diff-block', 'data-test': 'diff-change', 'data-change': c.change},
    h('div', {class: 'diff-head'}, h('b', {}, `event #${c.index}`), ' ', badge(c.change, badgeKind), ' ',
      h('span', {class: 'muted'}, CHANGE_WORDS[c.change] || '')),
    sideBySide(before, after));
}

const ERROR_MARK = '✗ ';

/** JSON outputs (and a stage error) as lines of text to compare. */
function prettyLines(values, error) {
  const lines = [];
  for (const v of values) lines.push(...JSON.stringify(v, null, 2).split('\n'));
  if (error) lines.push(`${ERROR_MARK}dead at ${error.stage ?? 'source'}: ${error.error}`);
  return lines;
}

/**
 * Line diff by longest common subsequence. Outputs are small (one event's),
 * but the table is quadratic, so past 250,000 cells every line counts as
 * changed instead.
 */
function lineDiff(a, b) {
  if (a.length * b.length > 250000) {
    return [...a.map((t) => ({op: 'del', a: t})), ...b.map((t) => ({op: 'ins', b: t}))];
  }
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const ops = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) ops.push({op: 'same', a: a[i++], b: b[j++]});
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) ops.push({op: 'ins', b: b[j++]});
    else ops.push({op: 'del', a: a[i++]});
  }
  return ops;
}

/** Before and after side by side, changed lines paired up and highlighted. */
function sideBySide(a, b) {
  const rows = [];
  let dels = [];
  let inss = [];
  const flush = () => {
    for (let k = 0; k < Math.max(dels.length, inss.length); k++) rows.push([dels[k] ?? null, inss[k] ?? null, false]);
    dels = [];
    inss = [];
  };
  for (const op of lineDiff(a, b)) {
    if (op.op === 'same') {
      flush();
      rows.push([op.a, op.b, true]);
    } else if (op.op === 'del') {
      dels.push(op.a);
    } else {
      inss.push(op.b);
    }
  }
  flush();
  // A stage error reads as an error on either side, not as an insertion.
  const cell = (text, same, cls) => h('td', {
    class: text === null ? 'gap' : text.startsWith(ERROR_MARK) ? `${cls} err` : same ? '' : cls,
  }, text ?? '');
  return h('table', {class: 'side-by-side'},
    h('thead', {}, h('tr', {}, h('th', {}, 'before'), h('th', {}, 'after'))),
    h('tbody', {}, rows.length
      ? rows.map(([x, y, same]) => h('tr', {}, cell(x, same, 'del'), cell(y, same, 'ins')))
      : h('tr', {}, h('td', {class: 'gap'}, '(no output)'), h('td', {class: 'gap'}, '(no output)'))));
}

// ---------------------------------------------------------------------------
// Events: a query view (search, time range, histogram, fields, newest first)
//
// The state is the hash, `#/events?q=...&since=...&until=...` (plus `job`,
// `pipeline` and `field.<path>` filters), so that a reload or a link shows
// the same thing. The server parses the search; the page only sends `q`.

const EVENTS_PAGE = 50;
const QUICK_RANGES = [
  ['15m', 'Last 15 minutes'],
  ['1h', 'Last hour'],
  ['1d', 'Last day'],
  ['all', 'All time'],
];
const TIME_UNITS = {s: 1000, m: 60000, h: 3600000, d: 86400000};
/** The hash filters passed to the API as they are, besides q, since and until. */
const isPassedFilter = (k) => k === 'job' || k === 'pipeline' || k.startsWith('field.');

/**
 * A time of the hash (`now`, `now-15m`, ms since the epoch or RFC 3339) in
 * ms since the epoch, `now` being the given instant; NaN when unreadable.
 */
function resolveTime(v, now) {
  if (v === 'now') return now;
  const rel = /^now-(\d+)([smhd])$/.exec(v);
  if (rel) return now - Number(rel[1]) * TIME_UNITS[rel[2]];
  if (/^\d+$/.test(v)) return Number(v);
  return Date.parse(v);
}

/** A time (ms or text the API reads) as a datetime-local input value. */
function toLocalInput(v) {
  if (v === null || v === undefined || v === '') return '';
  const d = new Date(typeof v === 'number' || /^\d+$/.test(v) ? Number(v) : v);
  if (Number.isNaN(d.getTime())) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fromLocalInput(v) {
  if (!v) return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** A bucket width in words: `30 s`, `5 min`, `1.5 h`, `1 d`. */
function fmtInterval(ms) {
  for (const [unit, size] of [['d', 86400000], ['h', 3600000], ['min', 60000], ['s', 1000]]) {
    if (ms >= size) return `${Number((ms / size).toFixed(1))} ${unit}`;
  }
  return `${ms} ms`;
}

/** Goes to the events view with these parameters (again, if it is there). */
function goEvents(params) {
  const s = params.toString();
  const next = `#/events${s ? '?' + s : ''}`;
  if (location.hash === next) route();
  else location.hash = next;
}

// The colour of an event's row: from its `level`, `severity` or
// `severity_text`, as words (any case) or OpenTelemetry severity numbers.
const LEVEL_WORDS = {
  fatal: 'error', panic: 'error', emerg: 'error', emergency: 'error', alert: 'error', crit: 'error',
  critical: 'error', error: 'error', err: 'error', severe: 'error',
  warn: 'warn', warning: 'warn',
  info: 'info', information: 'info', informational: 'info', notice: 'info',
  debug: 'debug', trace: 'debug', verbose: 'debug', fine: 'debug',
};

function eventLevel(ev) {
  if (!ev || typeof ev !== 'object' || Array.isArray(ev)) return null;
  for (const key of ['level', 'severity', 'severity_text']) {
    const v = ev[key];
    if (typeof v === 'string') {
      // `ERROR2`, `Warning`, ` info `: OpenTelemetry's suffixes and any case.
      const level = LEVEL_WORDS[v.trim().toLowerCase().replace(/\d+$/, '')];
      if (level) return level;
    } else if (typeof v === 'number' && v >= 1 && v <= 24) {
      return v >= 17 ? 'error' : v >= 13 ? 'warn' : v >= 9 ? 'info' : 'debug';
    }
  }
  return null;
}

/**
 * The search term that matches `field` equal to `value`: `service:auth`,
 * quoted when the value is empty or has spaces; null when no term can say
 * it (a search cannot quote a `"`).
 */
function fieldTerm(field, value) {
  const v = String(value);
  if (v.includes('"')) return null;
  return v && !/\s/.test(v) ? `${field}:${v}` : `${field}:"${v}"`;
}

/**
 * Top-level field names a search term (and a `field.` filter) can name:
 * one with a `.` would be read as a path into an object.
 */
const SEARCHABLE_FIELD = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;

/** `q` with `term` added (all terms must match), unless it is there already. */
function addTerm(q, term) {
  const now = q.trim();
  if (!now) return term;
  if (` ${now} `.includes(` ${term} `)) return now;
  return `${now} ${term}`;
}

/**
 * The top-level fields of the loaded events, most common first, each with
 * its five most common (scalar) values and their counts.
 */
function fieldStats(events) {
  const fields = new Map();
  for (const e of events) {
    const ev = e.event;
    if (!ev || typeof ev !== 'object' || Array.isArray(ev)) continue;
    for (const [name, v] of Object.entries(ev)) {
      if (name === '_versions') continue;
      let f = fields.get(name);
      if (!f) fields.set(name, f = {name, present: 0, values: new Map()});
      f.present++;
      if (v === null || typeof v === 'object') continue;
      const key = `${typeof v}:${v}`;
      const slot = f.values.get(key);
      if (slot) slot.count++;
      else f.values.set(key, {value: v, count: 1});
    }
  }
  return [...fields.values()]
    // Among fields as common, those with fewer distinct values (a level, a
    // service) tell more at a glance than an id or a timestamp.
    .sort((a, b) => b.present - a.present || a.values.size - b.values.size || a.name.localeCompare(b.name))
    .map((f) => ({
      name: f.name,
      present: f.present,
      distinct: f.values.size,
      top: [...f.values.values()].sort((a, b) => b.count - a.count).slice(0, 5),
    }));
}

function eventsView(view, query) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const now = Date.now();
  const q = query.get('q') || '';
  const sinceText = query.get('since') || '';
  const untilText = query.get('until') || '';
  const since = sinceText ? resolveTime(sinceText, now) : null;
  const until = untilText ? resolveTime(untilText, now) : null;
  // The quick range shown, if one is: `since=now-1h&until=now` is `1h`.
  const quick = !sinceText && !untilText ? 'all'
    : QUICK_RANGES.map(([key]) => key).find((key) => sinceText === `now-${key}` && untilText === 'now') || null;

  /** The hash's parameters with some changed (a null value removes one). */
  const withParams = (changes) => {
    const next = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === '') next.delete(k);
      else next.set(k, v);
    }
    return next;
  };

  // The search bar: words, the time range, the hash's other filters.
  const input = h('input', {id: 'events-q', 'data-test': 'events-q', type: 'search', class: 'search-input',
    placeholder: 'Search: words, "a phrase", prefix*, field:value (all must match)', value: q,
    autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Search'});
  const searchBtn = h('button', {type: 'submit', class: 'primary', id: 'events-search'}, 'Search');
  const ranges = h('div', {class: 'ranges', role: 'group', 'aria-label': 'Time range'},
    QUICK_RANGES.map(([key, label]) => h('button', {
      type: 'button', class: key === quick ? 'range active' : 'range', 'data-range': key,
      'data-test': `range-${key}`, 'aria-pressed': key === quick ? 'true' : 'false',
      onclick: () => goEvents(withParams(key === 'all' ? {since: null, until: null} : {since: `now-${key}`, until: 'now'})),
    }, label)));
  const sinceInput = h('input', {id: 'events-since', type: 'datetime-local', step: 1,
    value: since !== null && !Number.isNaN(since) ? toLocalInput(since) : ''});
  const untilInput = h('input', {id: 'events-until', type: 'datetime-local', step: 1,
    value: until !== null && !Number.isNaN(until) ? toLocalInput(until) : ''});
  const custom = h('div', {class: quick ? 'custom-range' : 'custom-range active', id: 'events-custom'},
    h('label', {}, 'From', sinceInput), h('label', {}, 'To', untilInput),
    h('button', {type: 'button', id: 'events-apply-range', onclick: () =>
      goEvents(withParams({since: fromLocalInput(sinceInput.value), until: fromLocalInput(untilInput.value)}))}, 'Apply'));
  const filters = [];
  for (const [k, v] of query) {
    if (!isPassedFilter(k)) continue;
    const label = k.startsWith('field.') ? [h('b', {}, k.slice(6)), ' = ', v] : [h('b', {}, k), ' ', v];
    filters.push(h('span', {class: 'filter-chip', 'data-test': 'events-filter', 'data-key': k}, label,
      h('button', {type: 'button', class: 'ghost', title: 'Remove this filter', onclick: () => {
        const next = new URLSearchParams();
        for (const [k2, v2] of query) if (!(k2 === k && v2 === v)) next.append(k2, v2);
        goEvents(next);
      }}, '×')));
  }
  const form = h('form', {class: 'card search-bar', id: 'events-form', role: 'search'},
    h('div', {class: 'search-row'}, input, searchBtn),
    h('div', {class: 'range-row'}, ranges, custom),
    filters.length ? h('div', {class: 'filter-row'}, h('span', {class: 'muted small'}, 'Filters:'), filters) : null);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    goEvents(withParams({q: input.value.trim()}));
  });

  const errors = h('div', {id: 'events-errors'});
  const total = h('span', {class: 'total', id: 'events-total', 'data-test': 'events-total'}, '…');
  const rangeText = h('span', {class: 'muted', id: 'events-range-text'});
  const histBox = h('div', {class: 'hist-box', id: 'events-histogram', 'data-test': 'events-histogram'});
  const histCard = h('div', {class: 'card'},
    h('div', {class: 'card-title'}, total, h('span', {class: 'total-label'}, ' matches'), rangeText,
      h('span', {class: 'muted small hint-right'}, 'click a bar to zoom in')),
    histBox);
  const panel = h('aside', {class: 'card field-panel', id: 'events-fields', 'data-test': 'events-fields'},
    h('div', {class: 'card-title'}, 'Fields'), h('p', {class: 'muted small'}, 'Loading…'));
  const info = h('p', {class: 'muted small', id: 'events-info'});
  const list = h('div', {class: 'event-list', id: 'events-list'});
  const more = h('button', {type: 'button', id: 'events-more', 'data-test': 'events-more', hidden: true}, 'Load more');
  view.append(
    pageHeader('Events', h('button', {type: 'button', id: 'events-refresh', onclick: () => route()}, 'Refresh')),
    form, errors, histCard,
    h('div', {class: 'discover'}, panel, h('div', {class: 'discover-main'}, info, list, h('div', {class: 'pager'}, more))));

  const fail = (e) => {
    if (e.name === 'AbortError') return;
    // The histogram and the list are refused for the same reason: say it once.
    if (!errors.childElementCount) {
      const box = errorBox(e, 'search the events', 'events-error');
      if (box) errors.append(box);
    }
  };

  if ((since !== null && Number.isNaN(since)) || (until !== null && Number.isNaN(until))) {
    const bad = since !== null && Number.isNaN(since) ? `since=${sinceText}` : `until=${untilText}`;
    errors.append(h('div', {class: 'error-box', role: 'alert', id: 'events-error'},
      `Cannot read the time range \`${bad}\`: use a time like 2026-01-02T03:04:05Z, milliseconds since 1970, or now-15m. `,
      h('button', {type: 'button', class: 'link', onclick: () => goEvents(withParams({since: null, until: null}))}, 'Show all time')));
    total.textContent = '—';
    clear(panel);
    return () => ctrl.abort();
  }

  // What the API is asked, the same for the histogram and the list.
  const params = new URLSearchParams();
  if (q) params.set('q', q);
  if (since !== null) params.set('since', String(since));
  if (until !== null) params.set('until', String(until));
  for (const [k, v] of query) if (isPassedFilter(k)) params.append(k, v);

  let matches = null; // the histogram's total
  const loaded = [];
  let cursor = null;
  let showAllFields = false;

  const updateInfo = () => {
    if (!loaded.length) {
      info.textContent = matches === 0 || (matches === null && cursor === null) ? 'No stored event matches.' : '';
      return;
    }
    const of = matches === null ? '' : ` of ${fmtNum(matches)}`;
    info.textContent = `Showing ${fmtNum(loaded.length)}${of} matches, newest first${cursor ? '; more below' : ''}.`;
  };

  const renderFields = () => {
    const stats = fieldStats(loaded);
    clear(panel).append(h('div', {class: 'card-title'}, 'Fields',
      h('span', {class: 'muted'}, ` · top values in the ${fmtNum(loaded.length)} loaded`)));
    if (!stats.length) {
      panel.append(h('p', {class: 'muted small'}, loaded.length ? 'The loaded events have no fields.' : 'No events loaded.'));
      return;
    }
    const shown = showAllFields ? stats : stats.slice(0, 12);
    for (const f of shown) {
      const clickable = SEARCHABLE_FIELD.test(f.name);
      panel.append(h('div', {class: 'field', 'data-test': 'field', 'data-field': f.name},
        h('div', {class: 'field-name'}, h('b', {}, f.name),
          h('span', {class: 'muted'}, ` ${fmtNum(f.present)}/${fmtNum(loaded.length)}`)),
        f.top.length ? f.top.map(({value, count}) => {
          const bar = h('span', {class: 'value-bar'});
          bar.style.width = `${Math.max(2, Math.round((count / loaded.length) * 100))}%`;
          const text = typeof value === 'string' ? value : String(value);
          const term = fieldTerm(f.name, value);
          return h('button', {type: 'button', class: 'field-value', 'data-test': 'field-value',
            'data-field': f.name, 'data-value': text, disabled: !clickable,
            title: !clickable ? text : term ? `Search ${term}` : `Filter ${f.name} = ${text}`,
            onclick: () => {
              if (term) {
                goEvents(withParams({q: addTerm(q, term)}));
                return;
              }
              // A value with a quote in it: the same exact match as a filter.
              const next = new URLSearchParams(query);
              if (!next.getAll(`field.${f.name}`).includes(text)) next.append(`field.${f.name}`, text);
              goEvents(next);
            }},
          bar, h('span', {class: 'value-text'}, text === '' ? '(empty)' : text),
          h('span', {class: 'value-count'}, fmtNum(count)));
        }) : h('div', {class: 'muted small'}, 'objects or arrays only')));
    }
    if (stats.length > shown.length) {
      panel.append(h('button', {type: 'button', class: 'link', id: 'events-all-fields', onclick: () => {
        showAllFields = true;
        renderFields();
      }}, `Show all ${fmtNum(stats.length)} fields`));
    }
  };

  const loadPage = async () => {
    more.disabled = true;
    try {
      const p = new URLSearchParams(params);
      p.set('order', 'desc');
      p.set('limit', String(EVENTS_PAGE));
      if (cursor) p.set('cursor', cursor);
      const page = await api(`/v1/events?${p}`, {signal});
      for (const e of page.events) list.append(eventRow(e));
      loaded.push(...page.events);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      updateInfo();
      renderFields();
    } catch (e) {
      fail(e);
      if (e.name !== 'AbortError') clear(panel);
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener('click', loadPage);

  const loadHistogram = async () => {
    try {
      const p = new URLSearchParams(params);
      const buckets = Math.min(120, Math.max(10, Math.floor(histBox.clientWidth / 12)));
      p.set('buckets', String(buckets));
      const hist = await api(`/v1/events/histogram?${p}`, {signal});
      matches = hist.total;
      total.textContent = fmtNum(hist.total);
      total.dataset.total = String(hist.total);
      const from = hist.since_ms ?? hist.buckets?.[0]?.start_ms;
      const to = hist.until_ms ?? (hist.buckets?.length ? hist.buckets[hist.buckets.length - 1].start_ms + hist.interval_ms : null);
      rangeText.textContent = from !== undefined && from !== null && to !== null
        ? ` · ${fmtTime(new Date(from).toISOString())} to ${fmtTime(new Date(to).toISOString())}` +
          (hist.interval_ms ? `, ${fmtInterval(hist.interval_ms)} a bar` : '')
        : '';
      drawHistogram(histBox, hist, (start, end) =>
        goEvents(withParams({since: new Date(start).toISOString(), until: new Date(end).toISOString()})));
      updateInfo();
    } catch (e) {
      fail(e);
      if (e.name !== 'AbortError') {
        total.textContent = '—';
        clear(histBox);
      }
    }
  };

  loadHistogram();
  loadPage();
  return () => ctrl.abort();
}

/**
 * The histogram's buckets as bars; a click on one (anywhere in its column)
 * calls `onZoom(start_ms, end_ms)`.
 */
function drawHistogram(container, hist, onZoom) {
  const buckets = hist.buckets || [];
  if (!buckets.length) {
    container.replaceChildren(h('p', {class: 'muted empty', id: 'events-histogram-empty'}, 'No matches in this time range.'));
    return;
  }
  const width = Math.max(container.clientWidth, 200);
  const height = 130;
  const top = 12;
  const bottom = height - 18;
  const max = niceMax(Math.max(...buckets.map((b) => b.count)));
  const step = width / buckets.length;
  const gap = step > 6 ? 1 : 0;
  const y = (v) => bottom - (v / max) * (bottom - top);
  const chart = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart hist', role: 'img'});
  for (const v of [max, max / 2, 0]) {
    chart.append(svg('line', {x1: 0, x2: width, y1: y(v), y2: y(v), class: 'grid'}));
  }
  buckets.forEach((b, i) => {
    const x = i * step;
    const end = b.start_ms + hist.interval_ms;
    const label = `${fmtTime(b.start)}: ${fmtNum(b.count)} ${b.count === 1 ? 'match' : 'matches'}`;
    const bar = svg('g', {class: 'bucket'},
      svg('title', {}, label),
      svg('rect', {class: 'bar', x: (x + gap).toFixed(1), y: y(b.count).toFixed(1),
        width: Math.max(step - 2 * gap, 0.5).toFixed(1), height: (bottom - y(b.count)).toFixed(1)}),
      // The column's full height takes the click, so that low bars are easy to hit.
      svg('rect', {class: 'hit', x: x.toFixed(1), y: top, width: step.toFixed(1), height: bottom - top,
        'data-test': 'histogram-bar', 'data-start': b.start_ms, 'data-end': end, 'data-count': b.count}));
    bar.addEventListener('click', () => onZoom(b.start_ms, end));
    chart.append(bar);
  });
  for (const v of [max, max / 2]) {
    chart.append(svg('text', {x: 4, y: y(v) + 11, class: 'axis'}, fmtNum(v)));
  }
  const last = buckets[buckets.length - 1].start_ms + hist.interval_ms;
  chart.append(svg('text', {x: 2, y: height - 3, class: 'axis'}, fmtTime(buckets[0].start)));
  chart.append(svg('text', {x: width - 2, y: height - 3, class: 'axis', 'text-anchor': 'end'},
    fmtTime(new Date(last).toISOString())));
  container.replaceChildren(chart);
}

function eventRow(e) {
  const ev = e.event;
  const versions = ev && typeof ev === 'object' ? ev._versions : null;
  const level = eventLevel(ev);
  const time = timeNode(e.time || e.received_at);
  time.title = `${e.time ? `event time ${e.time}; ` : ''}arrived ${e.received_at}`;
  return h('div', {class: level ? `event level-${level}` : 'event', 'data-test': 'event-row', 'data-id': e.id,
    'data-level': level},
  h('div', {class: 'event-meta'},
    time,
    level ? h('span', {class: 'level-tag'}, level) : null,
    h('span', {class: 'muted'}, `event ${e.id}`), jobLink(e.job), h('span', {}, `index ${e.index}`),
    versionChips(versions)),
  jsonNode(ev));
}

// ---------------------------------------------------------------------------
// SQL: POST /v1/query, read-only views over the store

const SQL_LIMIT = 1000;
const SQL_EXAMPLES = [
  ['Count events', 'SELECT count(*) AS n FROM events'],
  ['Events per minute', 'SELECT time / 60000 * 60000 AS minute, count(*) AS events\nFROM events\nGROUP BY 1\nORDER BY 1'],
  ['Levels', "SELECT data->>'level' AS level, count(*) AS n\nFROM events\nGROUP BY 1\nORDER BY n DESC"],
  ['Dead letters by stage', 'SELECT stage, error, count(*) AS n\nFROM dead_letters\nGROUP BY 1, 2\nORDER BY n DESC\nLIMIT 20'],
];

/** Epoch milliseconds between 2000 and 2100, or RFC 3339 text: a time. */
function asTime(v) {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 946684800000 && v < 4102444800000 ? v : null;
  if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(v)) {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t;
  }
  return null;
}

/**
 * A chart of a result whose first column is a time and another a number:
 * [[t, value]] sorted by time and that column's index, or null.
 */
function sqlSeries(columns, rows) {
  if (columns.length < 2 || rows.length < 2) return null;
  if (!rows.every((r) => asTime(r[0]) !== null)) return null;
  const col = columns.findIndex((_, i) => i > 0 &&
    rows.every((r) => r[i] === null || (typeof r[i] === 'number' && r[i] >= 0)) &&
    rows.some((r) => typeof r[i] === 'number'));
  if (col < 0) return null;
  const points = rows.map((r) => [asTime(r[0]), r[col]]).sort((a, b) => a[0] - b[0]);
  return {col, points};
}

function sqlCell(v) {
  if (v === null || v === undefined) return h('td', {class: 'null'}, 'NULL');
  if (typeof v === 'number') {
    const t = asTime(v);
    return h('td', {class: 'num', title: t === null ? null : fmtTime(new Date(t).toISOString())}, String(v));
  }
  if (typeof v === 'boolean') return h('td', {}, String(v));
  if (typeof v === 'object') return h('td', {class: 'event-cell'}, jsonNode(v));
  if (/^[[{]/.test(v)) {
    try {
      const j = JSON.parse(v);
      if (j && typeof j === 'object') return h('td', {class: 'event-cell'}, jsonNode(j));
    } catch {
      // Text that only starts like JSON: shown as it is.
    }
  }
  return h('td', {}, v);
}

/** What a refused query means; the server's own message follows it. */
function sqlErrorBox(e) {
  if (e.status === 401) return null;
  const title = e.status === 400 ? 'The query cannot run'
    : e.status === 403 ? (/lacks the `read`/.test(e.message) ? 'This token cannot read' : 'Refused: the console runs read-only queries')
      : e.status === 422 ? 'The query went past a limit'
        : e.status === 0 ? 'No answer' : 'The query failed';
  return h('div', {class: 'error-box sql-error', role: 'alert', id: 'sql-error', 'data-test': 'sql-error',
    'data-status': e.status},
  h('div', {class: 'sql-error-title'}, e.status ? `${title} (HTTP ${e.status})` : title),
  h('pre', {class: 'sql-error-message'}, e.message));
}

function sqlView(view, query) {
  const ctrl = new AbortController();
  const text = h('textarea', {id: 'sql-text', 'data-test': 'sql-input', class: 'sql-text', rows: 6,
    spellcheck: 'false', autocomplete: 'off', 'aria-label': 'SQL',
    placeholder: 'SELECT data->>\'service\' AS service, count(*) AS n FROM events GROUP BY 1'});
  text.value = query.get('sql') || '';
  const runBtn = h('button', {type: 'submit', class: 'primary', id: 'sql-run', 'data-test': 'sql-run'}, 'Run');
  const examples = h('div', {class: 'examples'}, h('span', {class: 'muted small'}, 'Examples:'),
    SQL_EXAMPLES.map(([label, sql]) => h('button', {type: 'button', class: 'example', 'data-test': 'sql-example',
      title: sql, onclick: () => {
        text.value = sql;
        run();
      }}, label)));
  const form = h('form', {class: 'card sql-form', id: 'sql-form'},
    text,
    h('div', {class: 'sql-actions'}, runBtn, h('span', {class: 'muted small'}, 'Ctrl+Enter runs. Views: ',
      h('code', {}, 'events(id, job, pipeline, idx, received_at, time, data)'), ', ',
      h('code', {}, 'dead_letters'), ', ', h('code', {}, 'jobs'), ', ', h('code', {}, 'windows'),
      '; times are ms since 1970, ', h('code', {}, 'data->>\'field\''), ' reads an event field.')),
    examples);
  const result = h('div', {id: 'sql-result'});
  view.append(pageHeader('SQL'), form, result);

  let running = false;
  const run = async () => {
    const sql = text.value.trim();
    if (!sql || running) return;
    running = true;
    runBtn.disabled = true;
    // The query goes into the address (without a new history entry), so
    // that a reload or a link runs it again.
    history.replaceState(null, '', `#/sql?${new URLSearchParams({sql})}`);
    clear(result).append(h('p', {class: 'muted', id: 'sql-running'}, 'Running…'));
    try {
      const r = await api('/v1/query', {method: 'POST', signal: ctrl.signal,
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({sql, limit: SQL_LIMIT})});
      renderSqlResult(clear(result), r);
    } catch (e) {
      if (e.name === 'AbortError') return;
      clear(result);
      const box = sqlErrorBox(e);
      if (box) result.append(box);
    } finally {
      running = false;
      runBtn.disabled = false;
    }
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    run();
  });
  text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      run();
    }
  });
  if (text.value) run();
  else text.focus();
  return () => ctrl.abort();
}

function renderSqlResult(out, r) {
  const columns = r.columns || [];
  const rows = r.rows || [];
  out.append(h('p', {class: 'sql-meta', id: 'sql-meta', 'data-test': 'sql-meta'},
    h('b', {id: 'sql-count', 'data-count': rows.length}, `${fmtNum(rows.length)} ${rows.length === 1 ? 'row' : 'rows'}`),
    h('span', {class: 'muted'}, ` · ${fmtNum(r.elapsed_ms)} ms`)));
  const series = sqlSeries(columns, rows);
  let chartBox = null;
  if (series) {
    chartBox = h('div', {class: 'chart-box', id: 'sql-chart', 'data-test': 'sql-chart'});
    out.append(h('div', {class: 'card'},
      h('div', {class: 'card-title'}, columns[series.col], h('span', {class: 'muted'}, ` by ${columns[0]}`)),
      chartBox));
  }
  out.append(h('div', {class: 'card flush'}, h('table', {class: 'table sql-table', id: 'sql-table', 'data-test': 'sql-table'},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.length
      ? rows.map((row) => h('tr', {'data-test': 'sql-row'}, row.map(sqlCell)))
      : h('tr', {}, h('td', {colspan: Math.max(columns.length, 1), class: 'empty'}, 'No rows.'))))));
  if (chartBox) {
    // Drawn once in the page, at the width it has there.
    const {points} = series;
    const from = points[0][0];
    const to = points[points.length - 1][0];
    drawChart(chartBox, points, {
      from, to, fmt: fmtNum,
      labels: [fmtTime(new Date(from).toISOString()), fmtTime(new Date(to).toISOString())],
    });
  }
}

// ---------------------------------------------------------------------------
// Live tail: GET /v1/stream read with fetch (EventSource cannot send a token)

const TAIL_MAX_ROWS = 500; // rows kept on screen: the oldest go first
const TAIL_MAX_PENDING = 5000; // rows kept while paused, beyond which only the count grows

/**
 * Parses one server-sent event block (the lines between blank lines):
 * `event:`, `id:`, `data:` (joined with newlines), `:` comments ignored.
 */
function parseSseBlock(block) {
  const frame = {type: 'message', id: null, data: null};
  const data = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') frame.type = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) frame.id = value;
  }
  if (data.length) frame.data = data.join('\n');
  return frame.data === null && frame.id === null ? null : frame;
}

/** Reads an event stream body, calling `onFrame` for each block. */
async function readSse(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    // Lines may end in \r\n or \r too; a \r at the very end may be the
    // first half of a \r\n, so it waits for the next piece.
    buf = (buf + value).replace(/\r\n|\r(?!$)/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = parseSseBlock(buf.slice(0, end));
      buf = buf.slice(end + 2);
      if (frame) onFrame(frame);
    }
  }
}

/**
 * Follows the stream, reconnecting with `Last-Event-ID` (the last `id:`
 * seen) when it drops, so that nothing stored in between is missed.
 * Returns the function that stops it.
 */
function followStream(params, {onMessage, onStatus}) {
  let lastId = null;
  let stopped = false;
  let ctrl = null;
  let timer = null;
  let delay = 1000;

  const connect = async () => {
    ctrl = new AbortController();
    onStatus('connecting', lastId ? 'reconnecting…' : 'connecting…');
    try {
      const headers = lastId ? {'Last-Event-ID': lastId} : {};
      const res = await api(`/v1/stream?${params}`, {headers, signal: ctrl.signal, raw: true});
      onStatus('live', 'live');
      delay = 1000;
      await readSse(res.body, (f) => {
        if (f.id !== null) lastId = f.id;
        if (f.data !== null) onMessage(f);
      });
      if (stopped) return;
      onStatus('down', 'the stream ended (the server stopped?)');
    } catch (e) {
      if (stopped || e.name === 'AbortError' || e.status === 401) return;
      if (e.status >= 400 && e.status < 500 && e.status !== 429) {
        // A bad filter or a missing permission: retrying changes nothing.
        onStatus('down', describeError(e, 'follow the stream'));
        return;
      }
      onStatus('down', e.message);
    }
    const secs = delay / 1000;
    onStatus('down', `disconnected; reconnecting in ${secs} s`);
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, 15000);
  };
  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (ctrl) ctrl.abort();
  };
}

function tailView(view, query) {
  const kinds = h('select', {id: 'tail-kinds'},
    [['all', 'events and dead letters'], ['events', 'events only'], ['dead_letters', 'dead letters only']]
      .map(([v, t]) => h('option', {value: v, selected: (query.get('kinds') || 'all') === v}, t)));
  const job = h('input', {id: 'tail-job', type: 'number', min: 1, placeholder: 'any', value: query.get('job') || ''});
  const apply = h('button', {type: 'submit'}, 'Apply');
  const pause = h('button', {type: 'button', id: 'tail-pause', class: 'primary'}, 'Pause');
  const clearBtn = h('button', {type: 'button', id: 'tail-clear'}, 'Clear');
  const status = h('span', {id: 'tail-status', class: 'tail-status', 'data-state': 'connecting'}, 'connecting…');
  const counts = h('span', {id: 'tail-count', class: 'muted'}, '0 shown');
  const pending = h('span', {id: 'tail-pending', class: 'pill warn', hidden: true});
  const rows = h('div', {id: 'tail-rows', class: 'tail-rows'});
  const empty = h('p', {class: 'muted empty', id: 'tail-empty'}, 'Waiting for new events and dead letters…');
  const form = h('form', {class: 'card filters tail-controls'},
    h('label', {}, 'Show', kinds), h('label', {}, 'Job', job), apply,
    h('span', {class: 'spacer'}), status, counts, pending, pause, clearBtn);
  view.append(pageHeader('Live tail'), form, h('div', {class: 'card flush'}, empty, rows));

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (kinds.value !== 'all') q.set('kinds', kinds.value);
    if (job.value) q.set('job', job.value);
    location.hash = `#/tail${q.toString() ? '?' + q : ''}`;
  });

  let paused = false;
  let held = []; // rows that arrived while paused, oldest first
  let heldCount = 0;

  const updateCounts = () => {
    counts.textContent = `${fmtNum(rows.children.length)} shown`;
    pending.hidden = heldCount === 0;
    pending.textContent = `${fmtNum(heldCount)} new while paused`;
    empty.hidden = rows.children.length > 0;
  };
  const show = (row) => {
    rows.prepend(row);
    while (rows.children.length > TAIL_MAX_ROWS) rows.lastChild.remove();
  };
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.classList.toggle('paused', paused);
    if (!paused) {
      for (const row of held) show(row);
      held = [];
      heldCount = 0;
    }
    updateCounts();
  });
  clearBtn.addEventListener('click', () => {
    clear(rows);
    held = [];
    heldCount = 0;
    updateCounts();
  });

  const params = new URLSearchParams();
  for (const k of ['kinds', 'job']) if (query.get(k)) params.set(k, query.get(k));
  for (const [k, v] of query) if (k.startsWith('field.')) params.append(k, v);
  const stop = followStream(params, {
    onStatus: (state, text) => {
      status.dataset.state = state;
      status.textContent = text;
    },
    onMessage: (f) => {
      let row;
      try {
        row = tailRow(f.type, JSON.parse(f.data));
      } catch {
        return; // not JSON: not one of ours
      }
      if (paused) {
        heldCount++;
        held.push(row);
        if (held.length > TAIL_MAX_PENDING) held.shift();
      } else {
        show(row);
      }
      updateCounts();
    },
  });
  updateCounts();
  return stop;
}

function tailRow(type, m) {
  const dead = type === 'dead_letter';
  return h('div', {class: dead ? 'tail-row dead' : 'tail-row', 'data-test': 'tail-row', 'data-kind': type},
    h('div', {class: 'event-meta'},
      dead ? badge('dead letter', 'abandoned') : badge('event', 'done'),
      timeNode(m.received_at), jobLink(m.job), h('span', {}, `index ${m.index}`),
      dead ? h('span', {class: 'reason'}, h('code', {}, m.stage ?? 'source'), ': ', m.error) : null,
      dead ? null : versionChips(m.event && typeof m.event === 'object' ? m.event._versions : null)),
    jsonNode(m.event));
}

// ---------------------------------------------------------------------------
// Windows (only when GET /v1/windows answers 200)

function windowsView(view, query) {
  if (!session.windows) {
    view.append(pageHeader('Windows'), h('p', {class: 'muted', id: 'windows-none'},
      'This pipeline has no windowed reduce, so there are no windows to show; its results are the jobs\'.'));
    return null;
  }
  const key = h('input', {id: 'windows-key', placeholder: 'any key', value: query.get('key') || ''});
  const form = h('form', {class: 'card filters'}, h('label', {}, 'Key', key),
    h('button', {type: 'submit', class: 'primary'}, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = key.value ? `#/windows?key=${encodeURIComponent(key.value)}` : '#/windows';
  });
  const rows = h('tbody', {});
  const more = h('button', {type: 'button', id: 'windows-more', hidden: true}, 'Load more');
  const info = h('p', {class: 'muted small'}, 'Closed windows, in the order they closed.');
  view.append(pageHeader('Windows'), form, info,
    h('div', {class: 'card flush'}, h('table', {class: 'table', id: 'windows-table'},
      h('thead', {}, h('tr', {}, ['Key', 'Start', 'End', 'Value', 'Closed'].map((t) => h('th', {}, t)))),
      rows)),
    h('div', {class: 'pager'}, more));
  let cursor = null;
  const load = async () => {
    try {
      const q = new URLSearchParams({limit: '100'});
      if (query.get('key')) q.set('key', query.get('key'));
      if (cursor) q.set('cursor', cursor);
      const page = await api(`/v1/windows?${q}`);
      for (const w of page.windows) {
        rows.append(h('tr', {'data-test': 'window-row'},
          h('td', {}, w.key ?? h('span', {class: 'muted'}, '—')),
          h('td', {}, timeNode(w.window.start)), h('td', {}, timeNode(w.window.end)),
          h('td', {class: 'event-cell'}, jsonNode(w.value)), h('td', {}, timeNode(w.closed_at))));
      }
      if (!rows.children.length) rows.append(h('tr', {}, h('td', {colspan: 5, class: 'empty'}, 'No window has closed yet.')));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (e) {
      view.append(errorBox(e, 'list the windows'));
    }
  };
  more.addEventListener('click', load);
  load();
  return null;
}

// ---------------------------------------------------------------------------
// Deployments: a candidate version of a stage beside the live one, as a
// shadow (every chunk run again, compared, stored nowhere) or a canary (a
// share of the chunks), promoted or aborted from here (GET /v1/deployments)

const DEPLOY_POLL_MS = 2000;
const DEPLOY_BUCKETS = 30; // the dead-letter-rate chart's points per side

/**
 * A time given in ms since 1970 (as the deployments API gives them), to
 * the second, with the API's own number as its title.
 */
function msTimeNode(ms) {
  if (ms === null || ms === undefined) return h('span', {class: 'muted'}, '—');
  const iso = new Date(ms).toISOString();
  return h('time', {datetime: iso, title: `${iso} (${ms})`}, fmtTime(iso).slice(0, 19));
}

/** `dead` of `events` in percent, or — with no events. */
function fmtShare(dead, events) {
  return events ? `${((dead / events) * 100).toFixed(2)} %` : '—';
}

/**
 * Whether the token may write (promote, abort, deploy), as
 * `GET /v1/whoami` says. Asked once per sign-in.
 */
function canWrite() {
  if (session.writes === null) {
    session.writes = api('/v1/whoami').then((me) => me.write === true, () => {
      // No answer, or no valid token: ask again next time.
      session.writes = null;
      return false;
    });
  }
  return session.writes;
}

/**
 * The banner, above every view, of live versions over their error budget.
 * The metrics' `wasmpipe_stage_over_budget` gauge says whether there are
 * any; GET /v1/deployments says why (at most every 10 s from here; the
 * Deployments view passes on what it loads anyway).
 */
const overBudget = {
  shown: [],
  fetchedAt: 0,

  fromMetrics(samples) {
    const flagged = samples.some((s) => s.name === 'wasmpipe_stage_over_budget' && s.value > 0);
    if (!flagged) {
      if (this.shown.length) this.show([]);
      return;
    }
    if (Date.now() - this.fetchedAt < 10000) return;
    this.fetchedAt = Date.now();
    api('/v1/deployments').then((d) => this.show(d.over_budget || []), () => {});
  },

  show(list) {
    this.shown = list;
    const el = $('#over-budget');
    clear(el).hidden = !list.length;
    if (!list.length) return;
    el.append(h('div', {class: 'banner-title'}, list.length === 1
      ? 'A live version is over its error budget'
      : `${list.length} live versions are over their error budgets`));
    for (const o of list) {
      el.append(h('div', {class: 'banner-item', 'data-test': 'over-budget-item', 'data-stage': o.stage,
        'data-version': o.version},
        h('span', {class: 'banner-reason'}, o.reason, '.'),
        o.pause_intake ? [' ', h('b', {class: 'paused-intake'}, 'Intake is paused: new batches are refused until another version of the stage is live.')] : null));
    }
    if (parseHash().path[0] !== 'deployments') {
      el.append(h('a', {href: '#/deployments', class: 'banner-link'}, 'Deployments →'));
    }
  },
};

const DEPLOY_STATE_KINDS = {active: 'running', promoted: 'done', aborted: 'queued', rolled_back: 'abandoned', dropped: 'abandoned'};

function deployStateBadge(state) {
  const el = badge(state.replace('_', ' '), DEPLOY_STATE_KINDS[state] || 'queued');
  el.dataset.state = state;
  return el;
}

function deployModeBadge(d) {
  return badge(d.mode === 'canary' ? `canary ${d.percent} %` : 'shadow', d.mode === 'canary' ? 'canary' : 'shadow');
}

function deploymentsView(view) {
  const ctrl = new AbortController();
  const status = h('span', {class: 'muted small', id: 'deploy-status'});
  const refresh = h('button', {type: 'button', id: 'deploy-refresh'}, 'Refresh');
  const errors = h('div', {id: 'deploy-errors'});
  const message = h('div', {id: 'deploy-message', 'data-test': 'deploy-message'});
  const live = h('div', {class: 'card', id: 'deploy-live', 'data-test': 'deploy-live'});
  const form = h('div', {class: 'card', id: 'deploy-new', hidden: true});
  const active = h('div', {class: 'card', id: 'deploy-active', 'data-test': 'deploy-active'},
    h('div', {class: 'card-title'}, 'Active deployment'), h('p', {class: 'muted'}, 'Loading…'));
  const history = h('div', {class: 'card flush', id: 'deploy-history-card'});
  view.append(pageHeader('Deployments', status, refresh), errors, message,
    active, h('div', {class: 'two-col'}, live, form), history);

  let writer = false;
  let stopped = false;
  let loading = false;
  let again = false;
  // The active deployment's parts, built when it first shows and then
  // updated in place, so that its buttons stay where they are.
  let shown = null;

  const act = async (d, what) => {
    const question = what === 'promote'
      ? `Promote deployment ${d.id}? Version ${d.short_version} of stage \`${d.stage}\` becomes the live version ` +
        `in every process of the pipeline, in place of ${d.short_base}.`
      : `Abort deployment ${d.id}? The candidate ${d.short_version} of stage \`${d.stage}\` is dropped; ` +
        `every chunk runs on ${d.short_base} again.`;
    if (!window.confirm(question)) return;
    for (const b of active.querySelectorAll('.deploy-actions button')) b.disabled = true;
    clear(message);
    try {
      const r = await api(`/v1/deployments/${d.id}/${what}`, {method: 'POST'});
      const said = what === 'promote'
        ? [`Deployment ${r.id} was promoted by ${r.ended_by}: version `, h('code', {}, r.short_version),
          ' is the live version of stage ', h('code', {}, r.stage), '.']
        : [`Deployment ${r.id} was aborted by ${r.ended_by}: stage `, h('code', {}, r.stage), ' runs ',
          h('code', {}, r.short_base), ' on every chunk again.'];
      message.append(h('div', {class: 'notice', role: 'status', id: 'deploy-action-notice', 'data-state': r.state},
        said, h('div', {class: 'muted small'}, r.summary)));
      // The header's and the overview's stage versions.
      if (what === 'promote') loadReady();
    } catch (e) {
      if (e.name === 'AbortError') return;
      const box = errorBox(e, `${what} deployment ${d.id}`, 'deploy-action-error');
      if (box) message.append(box);
      for (const b of active.querySelectorAll('.deploy-actions button')) b.disabled = false;
    }
    load();
  };

  const renderActive = (d) => {
    if (!d) {
      shown = null;
      clear(active).append(h('div', {class: 'card-title'}, 'Active deployment'),
        h('p', {class: 'muted', id: 'deploy-none', 'data-test': 'deploy-none'},
          'No deployment is active: every chunk runs on the live versions.'));
      return;
    }
    if (!shown || shown.id !== d.id) {
      const actions = h('div', {class: 'page-actions deploy-actions'});
      if (writer) {
        actions.append(
          h('button', {type: 'button', class: 'primary', id: 'deploy-promote', 'data-test': 'deploy-promote',
            title: 'Make the candidate the live version', onclick: () => act(d, 'promote')}, 'Promote'),
          h('button', {type: 'button', class: 'danger', id: 'deploy-abort', 'data-test': 'deploy-abort',
            title: 'Drop the candidate', onclick: () => act(d, 'abort')}, 'Abort'));
      }
      shown = {
        id: d.id,
        summary: h('p', {class: 'deploy-summary', id: 'deploy-summary', 'data-test': 'deploy-summary'}),
        counts: h('div', {id: 'deploy-counts-box'}),
        shadow: h('div', {id: 'deploy-shadow', 'data-test': 'deploy-shadow'}),
        chart: h('div', {class: 'chart-box deploy-chart', id: 'deploy-chart', 'data-test': 'deploy-chart'}),
        examples: h('div', {id: 'deploy-examples', 'data-test': 'deploy-examples'}),
        examplesKey: null,
      };
      clear(active).append(
        h('div', {class: 'deploy-head'},
          h('div', {},
            h('div', {class: 'deploy-title'}, 'Deployment ', h('span', {id: 'deploy-id', 'data-id': d.id}, `#${d.id}`), ' ',
              h('span', {id: 'deploy-mode', 'data-mode': d.mode, 'data-percent': d.percent}, deployModeBadge(d)),
              ' of stage ', h('code', {id: 'deploy-stage'}, d.stage)),
            h('div', {class: 'deploy-versions'},
              'candidate ', h('code', {class: 'cand', id: 'deploy-candidate', title: d.version}, d.short_version),
              ' vs live ', h('code', {id: 'deploy-base', title: d.base}, d.short_base),
              h('span', {class: 'muted'}, ' · deployed by ', h('b', {id: 'deploy-created-by'}, d.created_by),
                ' at ', msTimeNode(d.created_at)))),
          actions),
        shown.summary,
        shown.counts,
        shown.shadow,
        h('div', {class: 'deploy-chart-card'},
          h('div', {class: 'card-title'}, 'Dead-letter rate',
            h('span', {class: 'muted'}, ' · per stretch of time, of the events the stage was given'),
            h('span', {class: 'legend'}, h('span', {class: 'swatch live'}), 'live ',
              h('span', {class: 'swatch candidate'}), 'candidate')),
          shown.chart),
        shown.examples);
    }
    const t = d.tally || {};
    shown.summary.textContent = d.summary;
    const sides = [['live', `live ${d.short_base}`, t.live || {}], ['candidate', `candidate ${d.short_version}`, t.candidate || {}]];
    const row = (label, key, value, text) => h('tr', {},
      h('th', {}, label),
      sides.map(([side, , s]) => h('td', {class: 'num', id: `deploy-${side}-${key}`, 'data-test': `${side}-${key}`,
        'data-value': value(s)}, text(s))));
    clear(shown.counts).append(h('table', {class: 'table deploy-counts', id: 'deploy-counts'},
      h('thead', {}, h('tr', {}, h('th', {}, ''), sides.map(([side, label]) => h('th', {class: `num side-${side}`}, label)))),
      h('tbody', {},
        row('Chunks', 'chunks', (s) => s.chunks ?? 0, (s) => fmtNum(s.chunks ?? 0)),
        row('Events', 'events', (s) => s.events ?? 0, (s) => fmtNum(s.events ?? 0)),
        row('Dead letters', 'dead', (s) => s.dead_letters ?? 0, (s) => fmtNum(s.dead_letters ?? 0)),
        row('Dead-letter rate', 'rate', (s) => (s.events ? s.dead_letters / s.events : ''), (s) => fmtShare(s.dead_letters, s.events)),
        row('Time in the stage', 'busy', (s) => s.busy_ms ?? 0, (s) => fmtMs(Math.round(s.busy_ms ?? 0))))));
    const sh = t.shadow;
    clear(shown.shadow);
    if (sh) {
      const count = (label, n, sub, id) => {
        const el = tile(label, fmtNum(n), sub, id);
        el.dataset.count = n;
        el.dataset.test = id;
        return el;
      };
      shown.shadow.append(h('div', {class: 'tiles small deploy-tiles'},
        count('Changed', sh.changed, `of ${fmtNum(sh.events)} events in ${fmtNum(sh.chunks)} chunks compared`, 'deploy-changed'),
        count('New dead letters', sh.new_dead_letters, 'fail with the candidate only', 'deploy-new-dead'),
        count('Fixed', sh.fixed_dead_letters, 'dead letters the candidate passes', 'deploy-fixed'),
        count('Skipped', sh.skipped, sh.failed ? `chunks not compared; ${fmtNum(sh.failed)} the candidate could not run`
          : 'chunks not compared (the shadow was behind)', 'deploy-skipped')));
      if (sh.result) {
        shown.shadow.append(h('div', {class: 'diff-block', id: 'deploy-result'},
          h('div', {class: 'diff-head'}, h('b', {}, 'Result of the compared chunks'), ' ',
            sh.result.changed ? badge('changed', 'abandoned') : badge('unchanged', 'done')),
          sideBySide(prettyLines([sh.result.live]), prettyLines([sh.result.candidate]))));
      }
    }
    drawRateChart(shown.chart, t.series || []);
    const examples = sh ? sh.examples || [] : null;
    const key = JSON.stringify(examples);
    if (key !== shown.examplesKey) {
      shown.examplesKey = key;
      clear(shown.examples);
      if (examples === null) {
        shown.examples.append(h('p', {class: 'muted small'},
          'A canary is not compared event by event: its chunks are served by the candidate and stored like any other.'));
      } else {
        shown.examples.append(h('div', {class: 'card-title'}, 'Changed events',
          h('span', {class: 'muted'}, examples.length
            ? ` · the first ${fmtNum(examples.length)} of ${fmtNum(sh.changed)}, live output before, candidate's after`
            : '')));
        if (!examples.length) {
          shown.examples.append(h('p', {class: 'muted', id: 'deploy-no-examples'},
            sh.chunks ? 'No event changed so far.' : 'No chunk has been compared yet.'));
        }
        if (examples.length) shown.examples.append(deployExamples(examples));
      }
    }
  };

  const renderLive = (d) => {
    const stages = Object.entries(d.live || {});
    clear(live).append(h('div', {class: 'card-title'}, 'Live versions', h('span', {class: 'muted'}, ' · what every chunk runs on')),
      h('table', {class: 'table', id: 'deploy-live-table'},
        h('thead', {}, h('tr', {}, h('th', {}, 'Stage'), h('th', {}, 'Version'), h('th', {}, ''))),
        h('tbody', {}, stages.map(([stage, version]) => {
          const over = (d.over_budget || []).find((o) => o.stage === stage);
          const beside = d.active && d.active.stage === stage ? d.active : null;
          return h('tr', {'data-test': 'live-version', 'data-stage': stage, 'data-version': version},
            h('td', {}, h('b', {}, stage)), h('td', {}, h('code', {}, version)),
            h('td', {}, over ? badge('over budget', 'abandoned') : null, ' ',
              beside ? ['with ', deployModeBadge(beside), ' ', h('code', {}, beside.short_version)] : null));
        }))));
  };

  const renderHistory = (rows) => {
    const columns = [
      ['Id', '', (r) => `#${r.id}`],
      ['Stage', '', (r) => h('code', {}, r.stage)],
      ['Mode', '', (r) => r.mode],
      ['Percent', 'num', (r) => (r.mode === 'canary' ? `${r.percent} %` : '—')],
      ['Version', '', (r) => h('code', {title: `${r.version}, deployed beside ${r.base}`}, r.version.slice(0, 12))],
      ['State', '', (r) => deployStateBadge(r.state)],
      ['Deployed by', '', (r) => [h('span', {'data-test': 'deploy-by'}, r.created_by),
        h('div', {class: 'muted small'}, msTimeNode(r.created_at))]],
      ['Ended by', '', (r) => r.ended_by === null || r.ended_by === undefined ? h('span', {class: 'muted'}, '—')
        : [h('span', {'data-test': 'deploy-ended-by'}, r.ended_by), h('div', {class: 'muted small'}, msTimeNode(r.ended_at))]],
      ['Reason', 'deploy-reason', (r) => r.reason ?? ''],
    ];
    clear(history).append(
      h('div', {class: 'card-title pad'}, 'History', h('span', {class: 'muted'}, ' · newest first')),
      h('table', {class: 'table', id: 'deploy-history', 'data-test': 'deploy-history'},
        h('thead', {}, h('tr', {}, columns.map(([title, cls]) => h('th', {class: cls === 'num' ? 'num' : ''}, title)))),
        h('tbody', {}, rows.length
          ? rows.map((r) => h('tr', {'data-test': 'deploy-row', 'data-id': r.id, 'data-state': r.state},
            columns.map(([, cls, cell]) => h('td', {class: cls, 'data-test': cls.startsWith('deploy-') ? cls : null}, cell(r)))))
          : h('tr', {}, h('td', {colspan: columns.length, class: 'empty'},
            'No deployments yet: deploy a candidate with the form above, `wasmpipe deploy`, or POST /v1/deployments.')))));
  };

  let formParts = null;
  const renderForm = (d) => {
    if (!writer) return;
    if (!formParts) {
      const stage = h('select', {id: 'deploy-stage-select', required: true},
        Object.keys(d.live || {}).map((s) => h('option', {value: s}, s)));
      const mode = h('select', {id: 'deploy-mode-select'},
        h('option', {value: 'shadow'}, 'shadow: every chunk, compared, stored nowhere'),
        h('option', {value: 'canary'}, 'canary: a share of the chunks, stored'));
      const percent = h('input', {id: 'deploy-percent', type: 'number', min: 1, max: 100, value: 10, disabled: true, required: true});
      const file = h('input', {type: 'file', id: 'deploy-file', accept: '.wasm,application/wasm', required: true});
      const submit = h('button', {type: 'submit', class: 'primary', id: 'deploy-submit'}, 'Deploy');
      const note = h('p', {class: 'muted small', id: 'deploy-form-note'});
      mode.addEventListener('change', () => {
        percent.disabled = mode.value !== 'canary';
      });
      const el = h('form', {id: 'deploy-form', class: 'deploy-form'},
        h('label', {}, 'Stage', stage), h('label', {}, 'Mode', mode), h('label', {}, 'Percent', percent),
        h('label', {class: 'wide'}, 'Candidate module', file), h('div', {}, submit), note);
      el.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const f = file.files[0];
        if (!f) return;
        const q = new URLSearchParams({stage: stage.value, mode: mode.value});
        if (mode.value === 'canary') q.set('percent', percent.value);
        submit.disabled = true;
        clear(message).append(h('p', {class: 'muted', id: 'deploy-sending'}, `Deploying ${f.name} as a ${mode.value}…`));
        try {
          const r = await api(`/v1/deployments?${q}`, {method: 'POST', body: f, headers: {'Content-Type': 'application/wasm'}});
          clear(message).append(h('div', {class: 'notice', role: 'status', id: 'deploy-action-notice', 'data-state': r.state},
            `Deployment ${r.id}: version `, h('code', {}, r.short_version), ' of stage ', h('code', {}, r.stage),
            ` runs as a ${r.mode === 'canary' ? `canary on ${r.percent} % of the chunks` : 'shadow'} beside `,
            h('code', {}, r.short_base), '.'));
          file.value = '';
        } catch (e) {
          clear(message);
          if (e.name === 'AbortError') return;
          const box = errorBox(e, 'deploy the candidate', 'deploy-action-error');
          if (box) message.append(box);
        }
        submit.disabled = false;
        load();
      });
      clear(form).append(h('div', {class: 'card-title'}, 'Deploy a candidate'), el);
      form.hidden = false;
      formParts = {submit, note};
    }
    formParts.submit.disabled = !!d.active;
    formParts.note.textContent = d.active
      ? `Deployment ${d.active.id} is active: promote or abort it before deploying another.`
      : 'The module must be a version of the stage: the same kind, run with the stage\'s params and limits.';
  };

  const load = async () => {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const d = await api('/v1/deployments', {signal: ctrl.signal});
      if (stopped) return;
      clear(errors);
      overBudget.show(d.over_budget || []);
      renderLive(d);
      renderForm(d);
      renderActive(d.active);
      renderHistory(d.deployments || []);
      status.textContent = `updated at ${fmtTime(new Date().toISOString()).slice(11, 19)}; every ${DEPLOY_POLL_MS / 1000} s`;
    } catch (e) {
      if (e.name === 'AbortError' || stopped) return;
      clear(errors);
      const box = errorBox(e, 'list the deployments', 'deploy-error');
      if (box) errors.append(box);
    } finally {
      loading = false;
      if (again && !stopped) {
        again = false;
        load();
      }
    }
  };
  refresh.addEventListener('click', load);

  // The first load waits for the permission check, so that the buttons
  // are there (or not) from the start.
  let checked = false;
  canWrite().then((w) => {
    writer = w;
    checked = true;
    if (!stopped) load();
  });
  const stop = every(DEPLOY_POLL_MS, () => {
    if (checked) load();
  });
  return () => {
    stopped = true;
    stop();
    ctrl.abort();
  };
}

/**
 * A shadow's changed events, one row each: the live version's outputs (or
 * its error) before, the candidate's after. Events are mostly one line of
 * JSON, so a row says more at a glance than a side-by-side diff.
 */
function deployExamples(examples) {
  const side = (outputs, error) => h('td', {class: 'event-cell'},
    (outputs || []).map((v) => h('div', {}, jsonNode(v))),
    error ? h('div', {class: 'example-error'}, `${ERROR_MARK}dead at ${error.stage ?? 'source'}: ${error.error}`) : null,
    !(outputs || []).length && !error ? h('span', {class: 'muted'}, '(no output)') : null);
  const kinds = {different: 'running', added: 'done', removed: 'queued', dead: 'abandoned', fixed: 'done'};
  return h('table', {class: 'table deploy-examples-table', id: 'deploy-examples-table'},
    h('thead', {}, h('tr', {}, ['Event', 'Change', 'Live (before)', 'Candidate (after)'].map((t) => h('th', {}, t)))),
    h('tbody', {}, examples.map((c) => h('tr', {'data-test': 'deploy-example', 'data-change': c.change,
      'data-job': c.job, 'data-index': c.index},
    h('td', {class: 'nowrap'}, jobLink(c.job), h('span', {class: 'muted'}, ` #${c.index}`)),
    h('td', {title: CHANGE_WORDS[c.change] || ''}, badge(c.change, kinds[c.change] || 'queued')),
    side(c.before, c.before_error),
    side(c.after, c.after_error)))));
}

/**
 * The dead-letter rate of the live version and of the candidate over time:
 * the per-chunk points bucketed by time into DEPLOY_BUCKETS stretches,
 * each side's rate in a stretch being its dead letters over its events
 * there (a stretch where a side ran nothing has no point).
 */
function drawRateChart(container, series) {
  if (!series.length) {
    container.replaceChildren(h('p', {class: 'muted empty', id: 'deploy-chart-empty'},
      'No chunk of the stage has run since the deployment started.'));
    return;
  }
  const width = Math.max(container.clientWidth, 200);
  const height = 140;
  const top = 14;
  const bottom = height - 18;
  const left = 44;
  const right = 8;
  const from = Math.min(...series.map((p) => p.at));
  const to = Math.max(from + 1, ...series.map((p) => p.at));
  const size = (to - from) / DEPLOY_BUCKETS;
  const sides = {live: [], candidate: []};
  for (const side of Object.keys(sides)) {
    for (let i = 0; i < DEPLOY_BUCKETS; i++) sides[side].push({events: 0, dead: 0});
  }
  for (const p of series) {
    const buckets = sides[p.side];
    if (!buckets) continue;
    const i = Math.min(DEPLOY_BUCKETS - 1, Math.floor((p.at - from) / size));
    buckets[i].events += p.events;
    buckets[i].dead += p.dead_letters;
  }
  const rates = {};
  let peak = 0;
  for (const [side, buckets] of Object.entries(sides)) {
    rates[side] = buckets.map((b, i) => (b.events ? {i, rate: b.dead / b.events, ...b} : null)).filter(Boolean);
    for (const r of rates[side]) peak = Math.max(peak, r.rate);
  }
  const max = niceMax(peak * 100) / 100;
  const x = (i) => left + ((i + 0.5) / DEPLOY_BUCKETS) * (width - left - right);
  const y = (v) => bottom - (v / max) * (bottom - top);
  const pct = (v) => `${Number((v * 100).toFixed(2))} %`;
  const chart = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart rate-chart', role: 'img',
    'aria-label': 'dead-letter rate over time, live and candidate'});
  for (const v of [max, max / 2, 0]) {
    chart.append(svg('line', {x1: left, x2: width - right, y1: y(v), y2: y(v), class: 'grid'}));
    chart.append(svg('text', {x: left - 4, y: y(v) + 3, class: 'axis', 'text-anchor': 'end'}, pct(v)));
  }
  chart.append(svg('text', {x: left, y: height - 3, class: 'axis'}, fmtTime(new Date(from).toISOString()).slice(11, 19)));
  chart.append(svg('text', {x: width - right, y: height - 3, class: 'axis', 'text-anchor': 'end'},
    fmtTime(new Date(to).toISOString()).slice(11, 19)));
  for (const [side, points] of Object.entries(rates)) {
    if (points.length > 1) {
      const d = points.map((p, k) => `${k ? 'L' : 'M'}${x(p.i).toFixed(1)},${y(p.rate).toFixed(1)}`).join('');
      chart.append(svg('path', {d, class: `line rate-${side}`}));
    }
    for (const p of points) {
      const start = from + p.i * size;
      chart.append(svg('circle', {cx: x(p.i).toFixed(1), cy: y(p.rate).toFixed(1), r: 2.6, class: `dot rate-${side}`,
        'data-test': 'chart-point', 'data-side': side, 'data-rate': p.rate, 'data-events': p.events, 'data-dead': p.dead},
      svg('title', {}, `${side}, from ${fmtTime(new Date(start).toISOString()).slice(11, 19)}: ` +
        `${fmtNum(p.dead)} dead letters of ${fmtNum(p.events)} events (${pct(p.rate)})`)));
    }
  }
  container.replaceChildren(chart);
}

// ---------------------------------------------------------------------------
// Start

function boot() {
  setupLogin();
  window.addEventListener('hashchange', route);
  loadReady();
  setInterval(loadReady, 10000);
  signIn();
}

document.addEventListener('DOMContentLoaded', boot);
