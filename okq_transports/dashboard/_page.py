"""The dashboard's one page: its HTML, its stylesheet and its script.

Owns: what the page shows and how it behaves: a section per server (reachable or not, the
round-trip time, a table of its queues, paged and filtered), a plot of the chosen queue's
depth and claims over the last minutes, peeks, and the write buttons when writes are on.
The script builds everything with ``textContent`` and DOM calls, never markup from data,
and the page allows no inline script (see `_web`): an event's contents are only ever text.
Must not know: HTTP, sampling.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Final

__all__ = ["SCRIPT", "STYLE", "render"]

_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="okq-token" content="{token}">
<meta name="okq-writes" content="{writes}">
<title>okq dashboard</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<header>
  <h1>okq dashboard</h1>
  <p id="updated" role="status" aria-live="polite">Connecting to {servers}&hellip;</p>
  <p id="offline" class="banner down" role="alert" hidden></p>
</header>
<main>
  <form class="controls" id="controls">
    <label for="match">Filter queues</label>
    <input id="match" type="search" autocomplete="off" spellcheck="false">
    <button id="prev" type="button">Previous page</button>
    <span id="pageinfo" aria-live="polite"></span>
    <button id="next" type="button">Next page</button>
  </form>
  <div id="servers" class="servers"></div>
  <section id="detail" hidden aria-labelledby="detail-title">
    <h2 id="detail-title">Queue</h2>
    <p id="detail-rates"></p>
    <svg id="plot" role="img" aria-labelledby="plot-label" viewBox="0 0 640 220"
         preserveAspectRatio="none"><title id="plot-label">Depth over time</title></svg>
    <p class="legend"><span class="key total"></span> total (events stored)
      <span class="key processing"></span> processing (claimed, not acknowledged)</p>
    <div class="actions">
      <button id="peek-next" type="button">Show next event</button>
      <button id="peek-last" type="button">Show last event</button>
      <button id="push" type="button" class="write">Push a test event</button>
      <button id="flush" type="button" class="write danger">Flush queue</button>
      <button id="close" type="button">Close</button>
    </div>
    <p id="action-result" role="status" aria-live="polite"></p>
    <pre id="event" tabindex="0" aria-label="Event contents"></pre>
  </section>
</main>
<script src="/app.js"></script>
</body>
</html>
"""

STYLE: Final = """
:root { color-scheme: light; --fg: #111; --bg: #fff; --muted: #4a4a4a; --line: #767676;
  --accent: #0b57d0; --down: #8b0000; --down-bg: #fdecea; --total: #0b57d0;
  --processing: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, sans-serif; color: var(--fg);
  background: var(--bg); }
header, main { padding: 0 1rem; max-width: 80rem; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: 1rem 0 0.25rem; }
h2 { font-size: 1.15rem; margin: 0.75rem 0 0.25rem; overflow-wrap: anywhere; }
#updated { color: var(--muted); margin: 0 0 0.5rem; }
.banner { padding: 0.5rem 0.75rem; border-radius: 4px; margin: 0.5rem 0; }
.down { color: var(--down); background: var(--down-bg); border: 1px solid var(--down); }
.up { color: #0d4f1c; }
.controls { display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: center;
  margin: 0.5rem 0 1rem; }
input, button { font: inherit; padding: 0.35rem 0.6rem; border: 1px solid var(--line);
  border-radius: 4px; background: #fff; color: var(--fg); }
button { cursor: pointer; }
button:focus-visible, input:focus-visible, pre:focus-visible, a:focus-visible {
  outline: 3px solid var(--accent); outline-offset: 2px; }
button.danger { color: var(--down); border-color: var(--down); }
.servers { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr));
  gap: 1rem; }
.server { border: 1px solid var(--line); border-radius: 6px; padding: 0 0.75rem 0.75rem;
  min-width: 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
caption { text-align: left; color: var(--muted); padding: 0.25rem 0; }
th, td { padding: 0.3rem 0.5rem; border-bottom: 1px solid #d0d0d0; text-align: right;
  white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; }
td:first-child button { border: none; padding: 0; color: var(--accent);
  text-decoration: underline; background: none; text-align: left; overflow-wrap: anywhere; }
#detail { border-top: 2px solid var(--line); margin-top: 1.5rem; padding-top: 0.5rem; }
#plot { width: 100%; height: 14rem; border: 1px solid var(--line); background: #fafafa; }
#plot .total { stroke: var(--total); stroke-width: 2; fill: none; }
#plot .processing { stroke: var(--processing); stroke-width: 2; fill: none;
  stroke-dasharray: 6 3; }
#plot text { font-size: 12px; fill: var(--muted); }
.legend { color: var(--muted); }
.key { display: inline-block; width: 1.5rem; height: 0; vertical-align: middle;
  border-top: 3px solid var(--total); margin-left: 0.5rem; }
.key.processing { border-top: 3px dashed var(--processing); }
.actions { display: flex; flex-wrap: wrap; gap: 0.5rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f4f4f4; padding: 0.75rem;
  border-radius: 4px; max-height: 24rem; overflow: auto; }
pre:empty { display: none; }
@media (max-width: 30rem) {
  body { font-size: 15px; }
  th, td { padding: 0.25rem; }
  /* waiting and change/s are in the queue's detail; the table keeps what fits */
  th:nth-child(4), td:nth-child(4), th:nth-child(6), td:nth-child(6) { display: none; }
  td:first-child button { overflow-wrap: break-word; word-break: normal; }
}
"""

SCRIPT: Final = r"""
"use strict";
(() => {
  const token = document.querySelector('meta[name="okq-token"]').content;
  const writes = document.querySelector('meta[name="okq-writes"]').content === "1";
  const state = { page: 0, match: "", plot: null, server: 0, name: "" };
  const $ = (id) => document.getElementById(id);
  let source = null;
  let lastView = null;

  for (const button of document.querySelectorAll(".write")) button.hidden = !writes;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function connect() {
    if (source) source.close();
    const query = new URLSearchParams({ page: state.page, match: state.match });
    if (state.plot) query.set("plot", state.plot);
    source = new EventSource("/events?" + query.toString());
    source.onmessage = (message) => {
      $("offline").hidden = true;
      render(JSON.parse(message.data));
    };
    source.onerror = () => {
      const banner = $("offline");
      banner.textContent = "The dashboard itself cannot be reached; retrying\u2026";
      banner.hidden = false;
    };
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function serverSection(index, server) {
    let section = document.getElementById("server-" + index);
    if (!section) {
      section = el("section", null, { id: "server-" + index, class: "server",
        "aria-labelledby": "server-title-" + index });
      section.append(el("h2", server.address, { id: "server-title-" + index }));
      section.append(el("p", null, { class: "state" }));
      const wrap = el("div", null, { class: "table-wrap" });
      const table = el("table");
      table.append(el("caption"));
      const head = el("thead");
      const row = el("tr");
      for (const title of ["Queue", "Total", "Processing", "Waiting", "Consumers", "Change/s"]) {
        row.append(el("th", title, { scope: "col" }));
      }
      head.append(row);
      table.append(head, el("tbody"));
      wrap.append(table);
      section.append(wrap);
      $("servers").append(section);
    }
    return section;
  }

  function render(view) {
    lastView = view;
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString() +
      (writes ? " \u2014 writes allowed" : " \u2014 read-only");
    let pages = 1;
    view.servers.forEach((server, index) => {
      pages = Math.max(pages, server.pages);
      const section = serverSection(index, server);
      const status = section.querySelector(".state");
      if (server.up === false) {
        status.className = "state banner down";
        status.setAttribute("role", "alert");
        status.textContent = "Unreachable since " + clock(server.down_since) + ": " + server.error;
      } else if (server.up === true) {
        status.className = "state up";
        status.setAttribute("role", "status");
        status.textContent = "Reachable \u2014 round trip " + server.rtt_ms.toFixed(2) + " ms, " +
          server.queue_count + " queue" + (server.queue_count === 1 ? "" : "s");
      } else {
        status.className = "state";
        status.textContent = "Waiting for the first sample\u2026";
      }
      section.querySelector("caption").textContent = server.matching + " of " +
        server.queue_count + " queues" + (state.match ? " matching the filter" : "") +
        (server.pages > 1 ? ", page " + (server.page + 1) + " of " + server.pages : "");
      const body = section.querySelector("tbody");
      updateRows(body, index, server.queues);
      if (index === state.server && state.plot && server.plot) drawPlot(server.plot);
    });
    $("pageinfo").textContent = "Page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page <= 0;
    $("next").disabled = state.page + 1 >= pages;
  }

  // Rows are kept and updated in place (keyed by queue), never rebuilt, so that a focused
  // button keeps its focus and a screen reader its place while the numbers change.
  function updateRows(body, index, queues) {
    const existing = new Map();
    for (const row of body.children) existing.set(row.dataset.key, row);
    const wanted = new Set(queues.map((queue) => queue.key));
    for (const [key, row] of existing) if (!wanted.has(key)) row.remove();
    queues.forEach((queue, position) => {
      let row = existing.get(queue.key);
      if (!row) {
        row = el("tr", null, { "data-key": queue.key });
        const cell = el("td");
        const pick = el("button", queue.name, { type: "button",
          "aria-label": "Show queue " + queue.name });
        pick.addEventListener("click", () => select(index, queue.key, queue.name));
        cell.append(pick);
        row.append(cell);
        for (const field of ["total", "processing", "waiting", "consumers", "rate"]) {
          row.append(el("td", null, { class: field }));
        }
      }
      for (const field of ["total", "processing", "waiting", "consumers", "rate"]) {
        const value = queue[field] === null ? "\u2013" : String(queue[field]);
        const target = row.querySelector("td." + field);
        if (target.textContent !== value) target.textContent = value;
      }
      if (body.children[position] !== row) body.insertBefore(row, body.children[position] || null);
    });
  }

  function drawPlot(series) {
    const svg = $("plot");
    const width = 640, height = 220, pad = 28;
    const label = $("plot-label");
    svg.replaceChildren(label);
    const times = series.t;
    const top = Math.max(1, ...series.total, ...series.processing);
    const span = Math.max(1, -(times[0] || 0));
    const x = (t) => pad + (width - 2 * pad) * (1 + t / span);
    const y = (v) => height - pad - (height - 2 * pad) * (v / top);
    const ns = "http://www.w3.org/2000/svg";
    const axis = document.createElementNS(ns, "path");
    axis.setAttribute("d", `M${pad} ${pad} V${height - pad} H${width - pad}`);
    axis.setAttribute("stroke", "#767676");
    axis.setAttribute("fill", "none");
    svg.append(axis);
    for (const [text, tx, ty] of [[String(top), 2, pad], ["0", 2, height - pad],
                                  ["-" + Math.round(span) + " s", pad, height - 6],
                                  ["now", width - pad - 20, height - 6]]) {
      const node = document.createElementNS(ns, "text");
      node.setAttribute("x", tx);
      node.setAttribute("y", ty);
      node.textContent = text;
      svg.append(node);
    }
    for (const name of ["total", "processing"]) {
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("class", name);
      line.setAttribute("points", times.map((t, i) => x(t) + "," + y(series[name][i])).join(" "));
      svg.append(line);
    }
    const last = series.total.length - 1;
    label.textContent = "Depth of " + series.name + " over the last " + Math.round(span) +
      " s: total " + (last >= 0 ? series.total[last] : 0) + ", processing " +
      (last >= 0 ? series.processing[last] : 0);
    const queue = lastView && lastView.servers[state.server].queues.find(
      (q) => q.key === state.plot);
    $("detail-rates").textContent = queue ? "Total changing by " +
      (queue.rate === null ? "\u2013" : queue.rate) + " events/s; " + queue.consumers +
      " consumer" + (queue.consumers === 1 ? "" : "s") : "";
  }

  function select(server, key, name) {
    Object.assign(state, { server, plot: key, name });
    $("detail").hidden = false;
    $("detail-title").textContent = "Queue " + name + " on " +
      (lastView ? lastView.servers[server].address : "");
    $("event").textContent = "";
    $("action-result").textContent = "";
    connect();
    $("peek-next").focus();
  }

  function showEvent(event) {
    if (event.error) { $("event").textContent = "Error: " + event.error; return; }
    if (!event.found) { $("event").textContent = "No event is waiting in this queue."; return; }
    const lines = ["id: " + event.id, "size: " + event.size + " bytes" +
      (event.truncated ? " (the first 4096 shown)" : "")];
    if (event.text !== undefined) {
      lines.push("", event.text);
    } else {
      lines.push("not UTF-8 text; hex:", event.hex, "", "base64:", event.base64);
    }
    $("event").textContent = lines.join("\n");
  }

  async function peek(end) {
    const query = new URLSearchParams({ server: state.server, queue: state.plot, end });
    const reply = await fetch("/api/peek?" + query.toString());
    showEvent(await reply.json());
  }

  async function write(action, body, question) {
    if (!window.confirm(question)) return;
    const reply = await fetch("/api/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-OKQ-Token": token },
      body: JSON.stringify(body),
    });
    const result = await reply.json();
    $("action-result").textContent = reply.ok ? (action === "flush" ? "Flushed." :
      "Pushed event " + result.pushed + ".") : "Refused: " + result.error;
  }

  $("peek-next").addEventListener("click", () => peek("next"));
  $("peek-last").addEventListener("click", () => peek("last"));
  $("push").addEventListener("click", () => write("push",
    { server: state.server, queue: state.plot, contents: "test event from the dashboard" },
    "Push a test event to " + state.name + "?"));
  $("flush").addEventListener("click", () => write("flush",
    { server: state.server, queue: state.plot },
    "Flush " + state.name + "? Every event in it is deleted."));
  $("close").addEventListener("click", () => {
    $("detail").hidden = true;
    state.plot = null;
    connect();
  });
  $("prev").addEventListener("click", () => { state.page -= 1; connect(); });
  $("next").addEventListener("click", () => { state.page += 1; connect(); });
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  let typing = null;
  $("match").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.match = $("match").value; state.page = 0; connect(); }, 250);
  });
  connect();
})();
"""


def render(*, token: str, writes: bool, servers: Sequence[str]) -> str:
    """The page's HTML (the only values put in it: the token, the writes flag and the server
    addresses, all escaped)."""
    return _HTML.format(
        token=html.escape(token),
        writes="1" if writes else "0",
        servers=html.escape(", ".join(servers)),
    )
