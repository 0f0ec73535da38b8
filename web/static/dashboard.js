"use strict";
// The dashboard: /api/stats once a second, /api/history every two (both cached by the server,
// so viewers cost Redis nothing more), the dead letters only when a queue's count changes, and
// the record of the message the prodcons form sent every half second until it is final.

const SERIES = [
  ["pushed", "#1f77b4"], ["handled", "#2ca02c"], ["published", "#9467bd"],
  ["received", "#17becf"], ["lost", "#d62728"],
];
const WINDOW_MS = 5 * 60 * 1000;
const deadSeen = {};  // queue -> dead count last rendered
const deadAsked = {};  // queue -> number of the newest request for its dead letters

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
const rate = (n) => (n === null || n === undefined ? "-" : Number(n).toFixed(n >= 100 ? 0 : 1));
function ago(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}
// A multi-line text (a traceback) as its first and last lines.
function brief(text) {
  const lines = text.split("\n").filter((l) => l.trim());
  return lines.length > 1 ? `${lines[0]} … ${lines[lines.length - 1].trim()}` : (lines[0] || "");
}
function cell(value, cls) {
  const td = document.createElement("td");
  if (value instanceof Node) td.append(value); else td.textContent = value;
  if (cls) td.className = cls;
  return td;
}
function fill(id, rows, empty) {
  const body = document.querySelector(`#${id} tbody`);
  const width = document.querySelectorAll(`#${id} thead th`).length;
  if (!rows.length) {
    const td = cell(empty, "empty"); td.colSpan = width;
    const tr = document.createElement("tr"); tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...rows.map(({cells, attrs}) => {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs || {})) tr.dataset[k] = v;
    tr.append(...cells.map((c) => (Array.isArray(c) ? cell(c[0], c[1]) : cell(c))));
    return tr;
  }));
}
const STATE_CLASS = {alive: "ok", listening: "ok", stopped: "warn", dead: "bad", deaf: "bad", silent: "bad"};
// What a live worker's handlers hold ("-": not alive, or a worker that does not say), flagged
// when it is stuck: its oldest message in hand past its time limit, or a handler abandoned.
function inHand(w) {
  if (w.slots === undefined) return ["-", ""];
  let text = `busy ${w.busy}/${w.slots}`;
  if (w.oldest_age_ms) text += `, oldest ${ago(w.oldest_age_ms)} (limit ${ago(w.oldest_limit_ms)})`;
  if (w.abandoned) text += `, ${w.abandoned} abandoned`;
  return w.overdue ? [`${text} · OVERDUE`, "bad"] : [text, w.busy ? "" : "muted"];
}

// A queue's depth, with each priority level's count when a level above 0 holds messages.
function depth(v) {
  const levels = Object.entries(v.priorities || {}).sort((a, b) => b[0] - a[0]);
  if (!levels.some(([p]) => p !== "0")) return fmt(v.depth);
  return `${fmt(v.depth)} (${levels.map(([p, n]) => `p${p} ${fmt(n)}`).join(" · ")})`;
}
// A schedule's next tick: ahead, or "due now" once it passed (the workers' next mover pass, at
// most BUS_MOVER_INTERVAL_S later, sends it and writes the tick after).
function nextTick(ms, now) {
  return ms !== null && ms !== undefined && ms < now ? "due now" : fromNow(ms, now);
}
// A time on Redis's clock as a distance from now: "in 4.2 s", "3.0 min ago".
function fromNow(ms, now) {
  if (ms === null || ms === undefined) return "-";
  return ms >= now ? `in ${ago(ms - now)}` : `${ago(now - ms)} ago`;
}

function render(s) {
  fill("queues", Object.entries(s.queues).map(([q, v]) => ({
    attrs: {queue: q},
    cells: [q, depth(v), v.scheduled ? `${fmt(v.scheduled)} (next in ${ago(Math.max(0, v.next_due_in_ms))})` : "0",
            fmt(v.waiting || 0),
            fmt(v.in_flight), v.slots === undefined ? "-" : `${fmt(v.busy)}/${fmt(v.slots)}`,
            [fmt(v.dead), v.dead ? "bad" : ""], rate(v.handled_per_s),
            ago(v.oldest_age_ms), fmt(v.pushed_total), fmt(v.handled_total),
            [fmt(v.workers_alive), v.workers_alive ? "ok" : "bad"],
            [fmt(v.balance.unaccounted), v.balance.unaccounted ? "bad" : "ok"]],
  })), "no queue");
  fill("schedules", Object.entries(s.queues).flatMap(([q, v]) =>
    Object.entries(v.schedules || {}).map(([name, x]) => ({
      attrs: {queue: q, schedule: name},
      cells: [q, name, x.spec, nextTick(x.next_ms, s.redis_ms), fromNow(x.last_tick_ms, s.redis_ms)],
    }))), "no schedule (BUS_SCHEDULE_FILE) has been fired");
  fill("workers", s.workers.map((w) => ({
    attrs: {name: w.name, queue: w.queue, state: w.state, overdue: String(Boolean(w.overdue))},
    cells: [w.queue, w.name, w.delivery || "-", [w.state, STATE_CLASS[w.state]],
            w.heartbeat_age_ms === null ? "none" : `${ago(w.heartbeat_age_ms)} ago (TTL ${ago(w.heartbeat_ttl_ms)})`,
            inHand(w), fmt(w.handled), rate(w.handled_per_s), fmt(w.retried), fmt(w.failed),
            [fmt(w.timed_out), w.timed_out ? "warn" : ""], fmt(w.reconnects)],
  })), "no worker has reported");
  fill("channels", Object.entries(s.channels).map(([c, v]) => ({
    attrs: {channel: c},
    cells: [c, [fmt(v.subscribers), v.subscribers ? "" : "warn"], fmt(v.published_total),
            [fmt(v.published_zero_total), v.published_zero_total ? "warn" : ""], fmt(v.received_total),
            [fmt(v.lost_total), v.lost_total ? "bad" : ""], fmt(v.duplicates_total)],
  })), "no channel");
  fill("subscribers", s.subscribers.map((x) => ({
    attrs: {name: x.name, state: x.state},
    cells: [x.name, [...x.channels, ...x.patterns].join(", "),
            [x.deaf ? `${x.state} for ${ago(x.deaf_for_ms)}` : x.state, STATE_CLASS[x.state]],
            fmt(x.received), rate(x.received_per_s), [fmt(x.lost), x.lost ? "bad" : ""], fmt(x.duplicates),
            fmt(x.reconnects)],
  })), "no subscriber has reported");
  fill("producers", s.producers.map((p) => ({
    cells: [p.role, p.name, fmt(p.pushed), fmt(p.published), fmt(p.published_zero), fmt(p.refused_full),
            fmt(p.rejected), fmt(p.unavailable), fmt(p.unconfirmed)],
  })), "no producer has reported");
  for (const mode of ["prodcons", "pubsub"]) {
    const l = s.latency_ms[mode];
    $(`lat-${mode}`).textContent = l.count
      ? `p50 ≤${l.p50 ?? "∞"} ms · p95 ≤${l.p95 ?? "∞"} ms · p99 ≤${l.p99 ?? "∞"} ms (${fmt(l.count)})`
      : "no message yet";
  }
  const r = s.rates;
  $("rates").textContent = r.pushed === null ? "-"
    : `${rate(r.pushed)} pushed/s · ${rate(r.handled)} handled/s · ${rate(r.published)} published/s`;
  for (const [q, v] of Object.entries(s.queues)) {
    if (deadSeen[q] !== v.dead) loadDead(q, v.dead);
  }
}

// With BUS_API_TOKEN set, the page has a token field in each form: typing in one fills the
// others, the tab keeps it (sessionStorage), and every POST carries it as a Bearer header.
const TOKEN_KEY = "redis-bus-api-token";
const tokenFields = [...document.querySelectorAll("input.api-token")];
for (const field of tokenFields) {
  field.value = sessionStorage.getItem(TOKEN_KEY) || "";
  field.addEventListener("input", () => {
    for (const other of tokenFields) if (other !== field) other.value = field.value;
    sessionStorage.setItem(TOKEN_KEY, field.value);
  });
}
function authorized(headers) {
  const token = tokenFields.length ? tokenFields[0].value.trim() : "";
  return token ? {...headers, authorization: `Bearer ${token}`} : headers;
}

async function getJSON(url, options) {
  const r = await fetch(url, {cache: "no-store", ...options});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${url}: ${r.status}`);
  return body;
}

async function refresh() {
  try {
    render(await getJSON("/api/stats"));
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("status").className = "muted";
  } catch (e) {
    $("status").textContent = `stats unavailable: ${e.message}`;
    $("status").className = "bad";
  }
}

async function loadDead(queue, count) {
  deadSeen[queue] = count;
  const ticket = (deadAsked[queue] = (deadAsked[queue] || 0) + 1);
  let box = document.querySelector(`.dead-queue[data-queue="${CSS.escape(queue)}"]`);
  if (!box) {
    box = document.createElement("div");
    box.className = "dead-queue"; box.dataset.queue = queue;
    $("dead").append(box);
  }
  let page = {total: 0, entries: []};
  if (count) {
    try { page = await getJSON(`/api/queues/${encodeURIComponent(queue)}/dead?count=10`); }
    catch (e) { box.textContent = `${queue}: dead letters unavailable: ${e.message}`; deadSeen[queue] = null; return; }
  }
  if (ticket !== deadAsked[queue]) return;  // a newer request answers
  if (!page.total) { box.replaceChildren(); box.textContent = `${queue}: no dead letters`; return; }
  const head = document.createElement("p");
  const button = document.createElement("button");
  button.id = `requeue-${queue}`; button.textContent = `Requeue all ${page.total}`;
  button.addEventListener("click", () => requeue(queue, button));
  head.append(`${queue}: ${fmt(page.total)} dead, newest first `, button);
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>when</th><th>reason</th><th>message</th></tr></thead><tbody></tbody>";
  table.tBodies[0].append(...page.entries.map((e) => {
    const tr = document.createElement("tr");
    const when = e.at ? new Date(e.at).toLocaleTimeString() : "-";
    const reason = cell(brief(e.reason || "-"));
    reason.title = e.reason || "";  // the whole reason (a traceback's end) on hover
    tr.append(cell(when), reason, cell(e.raw ?? e.raw_b64 ?? ""));
    return tr;
  }));
  box.replaceChildren(head, table);
}

async function requeue(queue, button) {
  button.disabled = true;
  try {
    const body = await getJSON(`/api/queues/${encodeURIComponent(queue)}/dead/requeue`,
                               {method: "POST", headers: authorized({})});
    $("result").textContent = `requeued ${body.requeued} from ${queue}` + (body.kept ? `, kept ${body.kept} unreadable` : "");
  } catch (e) {
    $("result").textContent = `requeue failed: ${e.message}`;
  }
  deadSeen[queue] = undefined;
  refresh();
}

function draw(points) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 48, right = width - 8, top = 8, bottom = height - 22;
  const end = points.length ? points[points.length - 1].t : Date.now();
  const shown = points.filter((p) => p.t >= end - WINDOW_MS);
  canvas.dataset.points = String(shown.length);
  let max = 1;
  for (const p of shown) for (const [name] of SERIES) max = Math.max(max, p[name]);
  const unit = 10 ** Math.floor(Math.log10(max / 4));
  const tick = [1, 2, 2.5, 5, 10].map((m) => m * unit).find((t) => 4 * t >= max);
  const ceiling = 4 * tick;
  const x = (t) => left + ((t - (end - WINDOW_MS)) / WINDOW_MS) * (right - left);
  const y = (v) => bottom - (v / ceiling) * (bottom - top);
  g.strokeStyle = "#ddd"; g.fillStyle = "#777"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = tick * i;
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(right, y(v)); g.stroke();
    g.fillText(v >= 1000 ? `${(v / 1000).toFixed(1)}k` : String(+v.toFixed(2)), 4, y(v) + 4);
  }
  for (let m = 0; m <= 5; m++) g.fillText(m === 5 ? "now" : `-${5 - m} min`, x(end - (5 - m) * 60000) - 14, height - 6);
  for (const [name, color] of SERIES) {
    g.strokeStyle = color; g.lineWidth = 1.6; g.beginPath();
    shown.forEach((p, i) => (i === 0 || p.gap ? g.moveTo(x(p.t), y(p[name])) : g.lineTo(x(p.t), y(p[name]))));
    g.stroke();
  }
  const last = shown[shown.length - 1];
  $("legend").replaceChildren(...SERIES.map(([name, color]) => {
    const span = document.createElement("span"), dot = document.createElement("i");
    dot.style.background = color;
    span.append(dot, `${name} ${last ? rate(last[name]) : "-"}/s`);
    return span;
  }));
}

async function refreshChart() {
  try { draw((await getJSON("/api/history")).points); }
  catch (e) { $("legend").textContent = `history unavailable: ${e.message}`; }
}

// The message the prodcons form sent last: its record, polled until it is handled or dead.
const TRACK_EVERY_MS = 500;
const TRACK_MISSING_MS = 5000;  // a record absent this long: untracked, unknown or expired
const TRACK_CAP_MS = 10 * 60 * 1000;  // stop watching a message that takes longer than this
const RESULT_CHARS = 300;  // of the result's JSON shown (all of it on hover)
const TRACK_CLASS = {handled: "ok", dead: "bad", retrying: "warn"};
let tracking = null;  // {id, queue, started, missingSince, timer}
let sends = 0;  // prodcons sends so far: only the newest one's message is tracked

function untrack() {
  if (tracking) clearTimeout(tracking.timer);
  tracking = null;
  const box = $("tracked");
  box.hidden = true;
  box.dataset.watching = "false";
}

function track(id, queue) {
  untrack();
  const t = {id, queue, started: Date.now(), missingSince: null, timer: null};
  tracking = t;
  const box = $("tracked");
  Object.assign(box.dataset, {id, queue, watching: "true"});
  $("tracked-id").textContent = `${id} on ${queue}`;
  showRecord({state: "sent"});
  box.hidden = false;
  pollTracked(t);
}

function stopTracking(t, note) {
  clearTimeout(t.timer);
  $("tracked").dataset.watching = "false";
  if (note) $("tracked-outcome").textContent = note;
}

function clip(text, n) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

function showRecord(rec) {
  const box = $("tracked");
  box.dataset.state = rec.state;
  box.dataset.final = String(Boolean(rec.final));
  const state = $("tracked-state");
  state.textContent = rec.state;
  state.className = `tracked-state ${TRACK_CLASS[rec.state] || ""}`;
  $("tracked-attempt").textContent = rec.attempt ?? "-";
  $("tracked-worker").textContent = rec.worker || "-";
  // The handler's last report; a handled message is done whether or not it reported.
  const reported = typeof rec.progress === "number";
  const fraction = rec.state === "handled" ? 1 : (reported ? rec.progress : null);
  const bar = $("tracked-progress");
  if (fraction === null) {
    // Not reported yet: a handler at work shows an indeterminate bar, a waiting message an empty one.
    if (rec.state === "in-flight") bar.removeAttribute("value"); else bar.value = 0;
    bar.dataset.fraction = "";
    $("tracked-percent").textContent = "";
  } else {
    bar.value = fraction;
    bar.dataset.fraction = String(fraction);
    $("tracked-percent").textContent = `${Math.floor(fraction * 100)}%`;
  }
  $("tracked-text").textContent = rec.progress_text || "";
  const outcome = $("tracked-outcome");
  outcome.title = "";
  if (rec.state === "handled") {
    const took = rec.handled_ms && rec.created_ms ? ` in ${ago(rec.handled_ms - rec.created_ms)}` : "";
    if (rec.result !== undefined) {
      const json = JSON.stringify(rec.result);
      outcome.textContent = `handled${took}, result ${clip(json, RESULT_CHARS)}`;
      outcome.title = json;
    } else {
      outcome.textContent = `handled${took}` + (rec.result_error ? `, ${rec.result_error}` : ", no result");
    }
  } else if (rec.state === "dead") {
    const why = rec.reason || rec.error || "no reason given";
    outcome.textContent = `dead: ${clip(brief(why), RESULT_CHARS)}`;
    outcome.title = why;  // the whole reason (a traceback's end) on hover
  } else if (rec.error) {
    outcome.textContent = `last error: ${clip(brief(rec.error), RESULT_CHARS)}`;
    outcome.title = rec.error;
  } else {
    outcome.textContent = "";
  }
}

async function pollTracked(t) {
  if (tracking !== t) return;
  const url = `/api/messages/${encodeURIComponent(t.id)}?queue=${encodeURIComponent(t.queue)}`;
  let status = 0, body = null;
  try {
    const r = await fetch(url, {cache: "no-store"});
    status = r.status;
    body = await r.json();
  } catch (e) {
    body = {error: e.message};
  }
  if (tracking !== t) return;  // a newer send replaced it while this request was out
  const now = Date.now();
  if (status === 200) {
    t.missingSince = null;
    showRecord(body);
    if (body.final) { stopTracking(t); return; }
  } else if (status === 404) {
    t.missingSince ??= now;
    if (now - t.missingSince >= TRACK_MISSING_MS) {
      stopTracking(t, "no record of this message: it was not tracked, or its record expired");
      return;
    }
  } else {
    $("tracked-outcome").textContent = `record unavailable: ${(body && body.error) || status}`;
  }
  if (now - t.started >= TRACK_CAP_MS) {
    stopTracking(t, `stopped watching after ${ago(TRACK_CAP_MS)}: GET ${url} has its record`);
    return;
  }
  t.timer = setTimeout(() => pollTracked(t), TRACK_EVERY_MS);
}

for (const form of document.querySelectorAll("form[data-mode]")) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    let payload = data.get("payload");
    try { payload = JSON.parse(payload); } catch (e) { /* not JSON: send it as text */ }
    const dest = form.dataset.mode === "prodcons" ? "queue" : "channel";
    const message = {payload, [dest]: data.get(dest)};
    const ticket = dest === "queue" ? ++sends : 0;
    if (ticket) { message.track = true; untrack(); }
    try {
      const r = await fetch(form.action, {method: "POST",
                                          headers: authorized({"content-type": "application/json"}),
                                          body: JSON.stringify(message)});
      const body = await r.json();
      $("result").textContent = r.ok
        ? `sent ${form.dataset.mode} id ${body.id} to ${body[dest]}` +
          (dest === "queue" ? ` (depth ${body.depth})`
                            : ` (${body.receivers} receiver${body.receivers === 1 ? "" : "s"})`)
        : `${r.status}: ${body.error}`;
      $("result").dataset.id = r.ok ? body.id : "";
      if (r.ok && body.tracked && ticket === sends) track(body.id, body.queue);
    } catch (e) {
      $("result").textContent = `send failed: ${e.message}`;
    }
    refresh();
  });
}
refresh();
refreshChart();
setInterval(refresh, 1000);
setInterval(refreshChart, 2000);
window.addEventListener("resize", refreshChart);
