// What every view of /dashboard shares: building DOM from text, number and time formats, reading
// nexus's JSON, and choosing the view from the URL's fragment (#live, #history,
// #request/<id>) — fragments, so one page serves every view, the back button walks them,
// and a request's page is a link a person can share.
//
// Stored request and response bodies are untrusted: text only ever reaches the DOM as
// text (el() appends strings as text nodes; nothing here sets innerHTML).
"use strict";
window.nexusPage = (function () {
  const fmt = new Intl.NumberFormat("en-US");
  // Dollars to the cent, or to four places below a dollar; the API has every digit.
  const usd = (v) => "$" + v.toLocaleString("en-US",
    { minimumFractionDigits: 2, maximumFractionDigits: Math.abs(v) < 1 ? 4 : 2 });
  const $ = (sel) => document.querySelector(sel);
  // How long until an ISO time, for a person: "resets in 4m".
  const until = (iso) => {
    const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (!isFinite(s)) return "";
    if (s <= 0) return "reset due";
    return "resets in " + (s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m"
      : s < 172800 ? Math.round(s / 3600) + "h" : Math.round(s / 86400) + "d");
  };

  // An element with attributes and children; a string child becomes a text node.
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    for (const c of children) if (c !== undefined && c !== null) node.append(c);
    return node;
  };

  // A table cell with a count: data-k and data-v for the view to update (and a test to
  // read), the figure as text, and an optional line beneath it.
  function numberCell(key, value, sub) {
    const td = el("td", { "data-k": key, "data-v": String(value) }, fmt.format(value));
    if (sub) td.append(el("small", { class: "sub" }, sub));
    return td;
  }

  // GET a route of nexus itself: the response and its JSON (null when it is not JSON).
  // The admin key, when nexus has one, travels as the browser's Basic credentials (asked
  // for once, on the page's load), so nothing here handles it. URLs are built on
  // location.origin: a page opened as http://user:key@host/… must not put the
  // credentials into fetch URLs (fetch refuses them).
  async function fetchJson(path) {
    const res = await fetch(location.origin + path, { cache: "no-store", credentials: "same-origin" });
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON: the callers say so */ }
    return { res, body };
  }

  // The JSON of a route that answered 2xx; otherwise an Error with nexus's message.
  async function getJson(path) {
    const { res, body } = await fetchJson(path);
    if (!res.ok) {
      const why = body && body.error && body.error.message;
      const err = new Error((why || "HTTP " + res.status) +
        (res.status === 401 ? " (reload the page to enter the admin key)" : ""));
      err.status = res.status;
      throw err;
    }
    if (body === null) throw new Error("not JSON from " + path);
    return body;
  }

  // GET /: nexus's summary, also when it answers 503 "degraded" (the upstream is away;
  // the summary still holds).
  async function health() {
    const { res, body } = await fetchJson("/");
    if (!body || !body.config) throw new Error("HTTP " + res.status + " from /");
    return body;
  }

  // Whether nexus keeps a ledger at all, asked once.
  let ledgerOn = null;
  async function ledgerEnabled() {
    if (ledgerOn === null) ledgerOn = !!(await health()).config.ledger;
    return ledgerOn;
  }

  // Figure cards: an element with data-cards="key key …" gets a card per key, each
  // with data-k for the view to fill (and a test to read).
  const LABELS = {
    requestCount: "Requests", inputTokens: "Input tokens", outputTokens: "Output tokens",
    cacheCreationInputTokens: "Cache write", cacheReadInputTokens: "Cache read",
    toolCallCount: "Tool calls", costUsd: "Cost (USD)",
  };
  function buildCards() {
    for (const box of document.querySelectorAll("[data-cards]")) {
      box.replaceChildren(...box.dataset.cards.split(" ").map((k) =>
        el("div", { class: "card", "data-k": k }, el("div", { class: "label" }, LABELS[k]), el("div", { class: "value" }, "–"))));
    }
  }

  const views = {};   // name -> {show(arg)}

  // Shows the view the fragment names (the live one by default) and hides the others.
  function route() {
    let hash = location.hash.replace(/^#/, "");
    try { hash = decodeURIComponent(hash); } catch (e) { /* a stray %: keep it as typed */ }
    const [name, ...rest] = hash.split("/");
    const view = views[name] ? name : "live";
    for (const node of document.querySelectorAll("[data-view]")) {
      node.hidden = node.dataset.view !== view;
    }
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("current", a.dataset.nav === view);
    }
    document.body.dataset.view = view;
    if (views[view]) views[view].show(rest.join("/"));
  }

  // Registers a view; routes once the page has them all.
  function addView(name, view) { views[name] = view; }
  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => { buildCards(); route(); });

  return { fmt, usd, until, $, el, numberCell, getJson, health, ledgerEnabled, addView };
})();
