// eselake pages: shared helpers. Data never goes through innerHTML: every value becomes a text node or an
// attribute set with setAttribute, so source names like <img onerror=...> stay plain text.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "onchange" || k === "onsubmit" || k === "oninput") node[k] = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

const MJD_UNIX = 40587;
function mjdToIso(mjd) {
  if (typeof mjd !== "number" || !isFinite(mjd)) return "";
  return new Date((mjd - MJD_UNIX) * 86400000).toISOString().slice(0, 19).replace("T", " ");
}

function fmt(v, key) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && !/(_mjd|^mjd)$/.test(key || "")) return String(v);
  if (/(_mjd|^mjd)$/.test(key || "")) return v.toFixed(3);
  if (/^(ra|dec)(_deg)?$/.test(key || "")) return v.toFixed(5);
  if (/fap/.test(key || "")) return v.toExponential(2);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return v.toPrecision(4).replace(/\.?0+$/, m => (m.startsWith(".") ? "" : m));
}

function sexagesimal(deg, hours) {
  if (typeof deg !== "number" || !isFinite(deg)) return "";
  let v = hours ? deg / 15 : Math.abs(deg);
  const sign = hours ? "" : (deg < 0 ? "-" : "+");
  const a = Math.floor(v), b = Math.floor((v - a) * 60), c = ((v - a) * 60 - b) * 60;
  const pad = (x, n) => String(x).padStart(n, "0");
  return `${sign}${pad(a, 2)}:${pad(b, 2)}:${c.toFixed(hours ? 2 : 1).padStart(hours ? 5 : 4, "0")}`;
}

function parseAngle(text, hours) {
  // degrees ("188.5") or sexagesimal ("12:34:56.7", "12 34 56.7"); RA in hours when sexagesimal
  const t = String(text).trim();
  if (!t) return null;
  if (/^[+-]?\d+(\.\d*)?$/.test(t)) return parseFloat(t);
  const m = t.match(/^([+-]?)(\d+)[:\sdh]+(\d+)[:\sm']+(\d+(?:\.\d*)?)\s*[s"]?$/);
  if (!m) return NaN;
  const v = parseInt(m[2], 10) + parseInt(m[3], 10) / 60 + parseFloat(m[4]) / 3600;
  const sgn = m[1] === "-" ? -1 : 1;
  return sgn * v * (hours ? 15 : 1);
}

function sourceHref(id) { return "/source?id=" + encodeURIComponent(id); }
function sourceLink(id) { return el("a", {href: sourceHref(id), class: "src"}, id); }
function apiSource(id) { return "/api/v1/sources/" + encodeURIComponent(id); }

async function api(path, options) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
                                       : res.statusText;
    throw new Error(`${res.status}: ${detail}`);
  }
  return body;
}

function showError(container, err) {
  clear(container).appendChild(el("p", {class: "error"}, String(err.message || err)));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q.toString();
}

// A table of rows; columns = [[key, label, render?]]; sortKey/sortDir shown; onSort(key) when a header is clicked.
function table(rows, columns, opts) {
  opts = opts || {};
  const head = el("tr", {}, columns.map(([k, label, , title]) => {
    const cls = k === opts.sortKey ? (opts.sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
    const th = el("th", {class: cls, "data-key": k, title: title || k}, label);
    if (opts.onSort) th.onclick = () => opts.onSort(k);
    else th.classList.add("nosort");
    return th;
  }));
  const body = el("tbody", {}, rows.map(r => {
    const tr = el("tr", {class: opts.rowClass || ""},
      columns.map(([k, , render]) => el("td", {class: typeof r[k] === "number" ? "num" : ""},
                                         render ? render(r[k], r) : fmt(r[k], k))));
    if (opts.onRow) { tr.onclick = (ev) => { if (ev.target.tagName !== "A" && ev.target.tagName !== "BUTTON") opts.onRow(r); };
                      tr.classList.add("clickable"); }
    if (opts.rowId) tr.dataset.id = opts.rowId(r);
    return tr;
  }));
  return el("table", {class: "data"}, el("thead", {}, head), body);
}

// Prev/next paging: total rows, page size, offset; onPage(newOffset)
function pager(total, limit, offset, onPage) {
  const last = Math.max(0, Math.floor((total - 1) / limit) * limit);
  return el("div", {class: "pager"},
    el("button", {type: "button", class: "prev", disabled: offset <= 0, onclick: () => onPage(Math.max(0, offset - limit))}, "‹ prev"),
    el("span", {class: "muted"}, total ? `${offset + 1}–${Math.min(total, offset + limit)} of ${total}` : "none"),
    el("button", {type: "button", class: "next", disabled: offset + limit >= total, onclick: () => onPage(Math.min(last, offset + limit))}, "next ›"));
}

function nav(active) {
  const links = [["/", "Candidates"], ["/search", "Search"], ["/eta-v", "η–V"], ["/images", "Images"],
                 ["/docs", "API"]];
  const bar = el("nav", {}, el("span", {class: "brand"}, "eselake"),
    links.map(([href, label]) => el("a", {href, class: href === active ? "active" : ""}, label)),
    el("span", {id: "mode", class: "muted"}));
  document.body.prepend(bar);
  api("/api/v1/health").then(h => {
    document.getElementById("mode").textContent = `${h.writable ? "writable" : "read-only"} · detection: ${h.detection}`;
    window.ESELAKE = h;
    document.dispatchEvent(new CustomEvent("eselake-health", {detail: h}));
  }).catch(() => {});
}

function health() {
  return window.ESELAKE ? Promise.resolve(window.ESELAKE) : api("/api/v1/health");
}

async function embedChart(target, spec) {
  const node = typeof target === "string" ? document.querySelector(target) : target;
  const result = await vegaEmbed(node, spec, {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}});
  node.dataset.rendered = "yes";
  return result.view;
}
