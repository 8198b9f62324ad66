// localgpt's web page: chat over POST /v1/chat/completions (stream: true), files via /v1/files.
// No framework and no build step; the stream format is documented in the README ("Server").
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 190, NODE_H = 50, GAP_X = 46, GAP_Y = 14;
const $ = (id) => document.getElementById(id);

const state = { history: [], pending: [], busy: false };

function apiKey() { return $("api-key").value.trim(); }

function headers(extra = {}) {
  const h = { ...extra };
  if (apiKey()) h.Authorization = "Bearer " + apiKey();
  return h;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function scrollDown() { const log = $("log"); log.scrollTop = log.scrollHeight; }

// --- health ---
async function pollHealth() {
  const badge = $("health");
  try {
    const reply = await fetch("/health");
    const body = await reply.json();
    badge.dataset.state = body.status;
    badge.textContent = body.status === "ok" ? "ready" : body.status + (body.reason ? ": " + body.reason : "");
    badge.title = body.reason || "";
  } catch (err) {
    badge.dataset.state = "down";
    badge.textContent = "server unreachable";
  }
  setTimeout(pollHealth, badge.dataset.state === "ok" ? 10000 : 1500);
}

// --- attachments ---
function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.pending.forEach((file, i) => {
    const chip = el("span", { class: "chip" }, file.name + " ");
    const remove = el("button", { type: "button", title: "remove" }, "×");
    remove.addEventListener("click", () => { state.pending.splice(i, 1); renderAttachments(); });
    chip.append(remove);
    box.append(chip);
  });
}

async function uploadAll(files) {
  const ids = [];
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    const reply = await fetch("/v1/files", { method: "POST", body: form, headers: headers() });
    const body = await reply.json();
    if (!reply.ok) throw new Error(`${file.name}: ${body.error ? body.error.message : reply.statusText}`);
    ids.push(body.id);
  }
  return ids;
}

// --- the plan graph: columns by dependency depth, laid out here ---
function layout(tasks) {
  const depth = {};
  const byId = Object.fromEntries(tasks.map((t) => [t.id, t]));
  const depthOf = (t) => {
    if (depth[t.id] !== undefined) return depth[t.id];
    depth[t.id] = 0;  // guards against a cycle (the server never sends one)
    const deps = (t.dep || []).filter((d) => d in byId);
    depth[t.id] = deps.length ? 1 + Math.max(...deps.map((d) => depthOf(byId[d]))) : 0;
    return depth[t.id];
  };
  const columns = [];
  for (const t of tasks) (columns[depthOf(t)] ||= []).push(t);
  const pos = {};
  columns.forEach((col, c) => col.forEach((t, r) => {
    pos[t.id] = { x: 4 + c * (NODE_W + GAP_X), y: 4 + r * (NODE_H + GAP_Y) };
  }));
  const rows = Math.max(...columns.map((col) => col.length));
  return { pos, width: columns.length * (NODE_W + GAP_X) - GAP_X + 8, height: rows * (NODE_H + GAP_Y) - GAP_Y + 8 };
}

function drawPlan(turn, tasks, steps) {
  const { pos, width, height } = layout(tasks);
  const graph = svg("svg", { class: "plan-graph", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": `plan of ${tasks.length} task(s)` });
  const defs = svg("defs");
  const marker = svg("marker", { id: `arrow-${turn.n}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a93a6" }));
  defs.append(marker);
  graph.append(defs);
  for (const t of tasks) {
    for (const d of t.dep || []) {
      if (!(d in pos)) continue;
      const a = pos[d], b = pos[t.id];
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 2, y2 = b.y + NODE_H / 2, mid = (x1 + x2) / 2;
      graph.append(svg("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        "marker-end": `url(#arrow-${turn.n})` }));
    }
  }
  for (const t of tasks) {
    const g = svg("g", { class: "node", "data-id": t.id, "data-status": "pending",
      transform: `translate(${pos[t.id].x},${pos[t.id].y})` });
    g.append(svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }));
    g.append(svg("text", { x: 10, y: 20 }, `#${t.id} ${t.task}`));
    g.append(svg("text", { x: 10, y: 38, class: "model" }, "waiting for a model"));
    g.append(svg("title", {}, JSON.stringify(t.args)));
    graph.append(g);
  }
  const parts = [graph];
  if (steps && steps.length) {  // the planner's decomposition, in plain words, above its graph
    const list = el("ol", { class: "plan-steps" });
    for (const step of steps) list.append(el("li", {}, step));
    parts.unshift(list);
  }
  turn.graph.replaceChildren(...parts);
}

function node(turn, id) { return turn.graph.querySelector(`.node[data-id="${id}"]`); }

function setNode(turn, id, status, line) {
  const n = node(turn, id);
  if (!n) return;
  if (status) n.dataset.status = status;
  if (line !== undefined) n.querySelector("text.model").textContent = line.length > 30 ? line.slice(0, 29) + "…" : line;
  if (status) n.querySelector("title").textContent = `${status}: ${line || ""}`;
}

// --- produced files ---
async function showFile(turn, file) {
  if (turn.shown.has(file.id)) return;
  turn.shown.add(file.id);
  const reply = await fetch(file.url, { headers: headers() });  // fetched, so a bearer key works too
  if (!reply.ok) return;
  const url = URL.createObjectURL(await reply.blob());
  let media;
  if (file.kind === "image") media = el("img", { src: url, alt: `image from task ${file.task}` });
  else if (file.kind === "audio") media = el("audio", { src: url, controls: "" });
  else if (file.kind === "video") media = el("video", { src: url, controls: "" });
  else media = el("a", { href: url, download: file.id }, file.id);
  media.dataset.fileId = file.id;
  const fig = el("figure");
  fig.append(media, el("figcaption", {}, `task ${file.task}: ${file.id}`));
  turn.outputs.append(fig);
  scrollDown();
}

// --- one turn ---
function newTurn(text, names) {
  const user = el("div", { class: "msg user" }, text);
  if (names.length) user.append(el("div", { class: "files-in" }, "attached: " + names.join(", ")));
  const box = el("div", { class: "msg assistant" });
  const turn = { n: Date.now(), box, graph: el("div", { class: "plan" }), answer: el("div", { class: "answer" }),
    outputs: el("div", { class: "outputs" }), shown: new Set(), text: "" };
  box.append(turn.graph, turn.answer, turn.outputs);
  $("log").append(user, box);
  scrollDown();
  return turn;
}

function showError(turn, message) {
  turn.box.append(el("div", { class: "error" }, message));
}

function onChunk(turn, chunk) {
  const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta || {} : {};
  if (delta.content) {
    turn.text += delta.content;
    turn.answer.textContent = turn.text;
    scrollDown();
  }
  const ev = chunk.localgpt;
  if (!ev) return;
  const d = ev.data || {};
  if (ev.type === "plan") drawPlan(turn, d.tasks, d.steps);
  else if (ev.type === "select") setNode(turn, d.task_id, null, d.model);
  else if (ev.type === "task_start") setNode(turn, d.id, "running", `running on ${d.model}`);
  else if (ev.type === "task_done") setNode(turn, d.id, "done", `done in ${(d.seconds || 0).toFixed(1)} s (${d.model})`);
  else if (ev.type === "task_failed") setNode(turn, d.id, d.status || "failed", d.error || "failed");
  else if (ev.type === "done") for (const f of d.files || []) showFile(turn, f);
  else if (ev.type === "error") showError(turn, `${d.type}: ${d.message}${d.hint ? " — " + d.hint : ""}`);
}

async function readStream(reply, turn) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        onChunk(turn, JSON.parse(payload));
      }
    }
  }
}

async function send(text) {
  const files = state.pending.splice(0);
  renderAttachments();
  const turn = newTurn(text, files.map((f) => f.name));
  state.busy = true;
  $("send").disabled = true;
  try {
    const ids = await uploadAll(files);
    const content = ids.length ? `${text}\n(attached: ${ids.join(", ")})` : text;
    const messages = [...state.history, { role: "user", content }];
    const reply = await fetch("/v1/chat/completions", { method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model: "localgpt", stream: true, messages, files: ids }) });
    if (!reply.ok) {
      const body = await reply.json().catch(() => ({}));
      const err = body.error || {};
      const retry = reply.headers.get("Retry-After");
      throw new Error(`${reply.status} ${err.type || ""}: ${err.message || reply.statusText}` +
        (retry ? ` (retry in ${retry} s)` : ""));
    }
    await readStream(reply, turn);
    state.history.push({ role: "user", content }, { role: "assistant", content: turn.text });
  } catch (err) {
    showError(turn, err.message);
  } finally {
    state.busy = false;
    $("send").disabled = false;
    turn.box.dataset.finished = "true";
  }
}

// --- wiring ---
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.busy) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("attach").addEventListener("change", (event) => {
  state.pending.push(...event.target.files);
  event.target.value = "";
  renderAttachments();
});
$("api-key").value = localStorage.getItem("localgpt-api-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("localgpt-api-key", apiKey()));
$("new-chat").addEventListener("click", () => {
  state.history = [];
  $("log").replaceChildren();
});
pollHealth();
