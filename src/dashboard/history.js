// The history view (#history): what the ledger kept, over a range of UTC days (the last
// 30 by default) — tokens or cost per day split by model, domain or client, the range's
// totals, and the requests themselves, filtered, newest first. Everything comes from the
// ledger's JSON API: one /api/usage query (group=day, split=…) feeds the chart and the
// tables, one /api/requests query the list.
"use strict";
(function () {
  const { fmt, usd, $, el, getJson, ledgerEnabled, addView } = window.nexusPage;
  const KINDS = ["inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"];
  const FIELDS = ["requestCount", ...KINDS, "costUsd"];
  const DAY = 86400000;
  const SVG = "http://www.w3.org/2000/svg";
  // Series colours; splits past the palette share the last, grey one as "other".
  const PALETTE = ["#d97757", "#4e9af1", "#3fb950", "#d29922", "#a371f7", "#39c5cf", "#f778ba", "#8b93a7"];

  const day = (ms) => new Date(ms).toISOString().slice(0, 10);
  const tokensOf = (line) => KINDS.reduce((sum, k) => sum + (line[k] || 0), 0);
  const costText = (v) => v === null || v === undefined ? "–" : usd(v);
  const splitName = (key) => key === "" ? "(none)" : key;

  // Latest query of each kind: an answer to an older one is dropped, not drawn.
  const latest = { usage: 0, requests: 0 };

  // The chosen range as the API wants it, [from, to), and its days in order.
  function range() {
    const today = day(Date.now());
    if (!$("#h-to").value) $("#h-to").value = today;
    if (!$("#h-from").value) $("#h-from").value = day(Date.parse(today) - 29 * DAY);
    let from = Date.parse($("#h-from").value), to = Date.parse($("#h-to").value);
    if (!(from <= to)) [from, to] = [to, from];
    const days = [];
    for (let t = from; t <= to; t += DAY) days.push(day(t));
    return { from: day(from) + "T00:00:00Z", to: day(to + DAY) + "T00:00:00Z", days };
  }

  function showError(where, e) {
    const box = $(where);
    box.hidden = !e;
    box.textContent = e ? "Cannot read the ledger: " + e.message : "";
  }

  // Adds up usage lines field by field; the cost stays null while no line is priced.
  function sum(lines) {
    const total = { costUsd: null };
    for (const k of FIELDS) if (k !== "costUsd") total[k] = 0;
    for (const line of lines) {
      for (const k of FIELDS) {
        if (k === "costUsd") {
          if (line.costUsd !== null && line.costUsd !== undefined) total.costUsd = (total.costUsd || 0) + line.costUsd;
        } else total[k] += line[k] || 0;
      }
    }
    return total;
  }

  function cells(total) {
    return FIELDS.map((k) => el("td", { "data-k": k, "data-v": String(total[k]) },
      k === "costUsd" ? costText(total[k]) : fmt.format(total[k])));
  }

  function renderTotals(lines) {
    const total = sum(lines);
    for (const card of document.querySelectorAll("#h-totals .card")) {
      const k = card.dataset.k;
      card.dataset.v = String(total[k]);
      card.querySelector(".value").textContent = k === "costUsd" ? costText(total[k]) : fmt.format(total[k]);
    }
  }

  // Splits ordered by tokens over the range, largest first, each with its colour.
  function splitOrder(lines) {
    const bySplit = new Map();
    for (const line of lines) bySplit.set(line.split, (bySplit.get(line.split) || 0) + tokensOf(line));
    const names = [...bySplit.keys()].sort((a, b) => bySplit.get(b) - bySplit.get(a) || a.localeCompare(b));
    const colour = new Map(names.map((n, i) => [n, PALETTE[Math.min(i, PALETTE.length - 1)]]));
    return { names, colour };
  }

  // Stacked bars, one per day of the range, in tokens or dollars.
  function renderChart(days, lines, order) {
    const metric = $("#h-metric").value;
    const value = (line) => metric === "cost" ? (line.costUsd || 0) : tokensOf(line);
    const perDay = new Map(days.map((d) => [d, []]));
    for (const line of lines) if (perDay.has(line.key)) perDay.get(line.key).push(line);
    const heights = days.map((d) => perDay.get(d).reduce((s, l) => s + value(l), 0));
    const max = Math.max(...heights, 0) || 1;
    const [w, h] = [600, 160];
    const slot = w / days.length;
    const svg = $("#h-chart");
    svg.replaceChildren();
    days.forEach((d, i) => {
      let y = h;
      const stack = perDay.get(d).sort((a, b) => order.names.indexOf(a.split) - order.names.indexOf(b.split));
      for (const line of stack) {
        const bar = value(line) / max * (h - 4);
        if (bar <= 0) continue;
        y -= bar;
        const rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", (i * slot + slot * 0.12).toFixed(2));
        rect.setAttribute("width", (slot * 0.76).toFixed(2));
        rect.setAttribute("y", y.toFixed(2));
        rect.setAttribute("height", bar.toFixed(2));
        rect.setAttribute("fill", order.colour.get(line.split));
        const title = document.createElementNS(SVG, "title");
        title.textContent = d + " · " + splitName(line.split) + " · " +
          (metric === "cost" ? costText(line.costUsd) : fmt.format(value(line)) + " tokens");
        rect.append(title);
        svg.append(rect);
      }
    });
    $("#h-axis-first").textContent = days[0];
    $("#h-axis-last").textContent = days[days.length - 1];
    $("#h-chart-note").textContent = (metric === "cost" ? "cost" : "all token kinds") + " per UTC day · " +
      days[0] + " to " + days[days.length - 1] + " · highest " +
      (metric === "cost" ? usd(Math.max(...heights, 0)) : fmt.format(Math.max(...heights, 0)));
    const legend = order.names.slice(0, PALETTE.length - 1).map((n) =>
      el("span", {}, el("i", { style: "background:" + order.colour.get(n) }), splitName(n)));
    if (order.names.length >= PALETTE.length) {
      legend.push(el("span", {}, el("i", { style: "background:" + PALETTE[PALETTE.length - 1] }), "other"));
    }
    $("#h-legend").replaceChildren(...legend);
  }

  // One row per day that saw requests, newest first: the figures a person compares.
  function renderDays(days, lines) {
    const rows = [...days].reverse().flatMap((d) => {
      const of = lines.filter((l) => l.key === d);
      if (!of.length) return [];
      return [el("tr", { "data-day": d }, el("td", { class: "left" }, d), ...cells(sum(of)))];
    });
    $("#h-days").replaceChildren(...rows);
    $("#h-days-empty").hidden = rows.length > 0;
  }

  // One row per split over the whole range; a click filters the request list by it.
  function renderSplits(lines, order) {
    const split = $("#h-split").value;
    const all = tokensOf(sum(lines)) || 1;
    const rows = order.names.map((n) => {
      const total = sum(lines.filter((l) => l.split === n));
      const share = Math.round(tokensOf(total) * 1000 / all) / 10;
      const row = el("tr", { "data-split": n, title: n === "" ? "" : "show only these requests below" },
        el("td", { class: "left" }, el("i", { class: "swatch", style: "background:" + order.colour.get(n) }), splitName(n)),
        ...cells(total), el("td", {}, share + "%"));
      if (n !== "" && $("#f-" + split)) {
        row.classList.add("pick");
        row.addEventListener("click", () => { $("#f-" + split).value = n; loadRequests(); });
      }
      return row;
    });
    $("#h-split-name").textContent = split;
    $("#h-splits").replaceChildren(...rows);
  }

  // Offers what the range has seen as choices for the list's filters.
  function remember(kind, values) {
    const list = $("#f-" + kind + "-seen");
    if (!list) return;
    const have = new Set([...list.options].map((o) => o.value));
    for (const v of values) {
      if (v && !have.has(v)) { list.append(el("option", { value: v })); have.add(v); }
    }
  }

  async function loadUsage() {
    const seq = ++latest.usage;
    const { from, to, days } = range();
    const split = $("#h-split").value;
    try {
      const body = await getJson("/api/usage?group=day&split=" + split +
        "&from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to));
      if (seq !== latest.usage) return;
      const lines = body.usage;
      const order = splitOrder(lines);
      renderTotals(lines);
      renderChart(days, lines, order);
      renderDays(days, lines);
      renderSplits(lines, order);
      remember(split, order.names);
      showError("#h-error", null);
      document.body.dataset.historyLoads = String(Number(document.body.dataset.historyLoads || 0) + 1);
    } catch (e) {
      if (seq === latest.usage) showError("#h-error", e);
    }
  }

  const iso = (ts) => ts.replace("T", " ").replace(/\.\d+Z$/, "Z");

  function requestRow(r) {
    const link = el("a", { href: "#request/" + encodeURIComponent(r.id), title: r.id }, iso(r.timestamp));
    const num = (k) => el("td", { "data-k": k, "data-v": String(r[k]) }, fmt.format(r[k] || 0));
    return el("tr", { "data-id": r.id },
      el("td", { class: "left" }, link),
      el("td", { class: "left" }, r.domain),
      el("td", { class: "left" }, r.client === null ? "–" : r.client),
      el("td", { class: "left" }, r.model === null ? "–" : r.model),
      el("td", { class: r.status >= 400 ? "bad" : "", "data-k": "status" }, String(r.status)),
      el("td", {}, r.stream ? "stream" : "json"),
      el("td", {}, fmt.format(r.durationMs) + " ms"),
      num("inputTokens"), num("outputTokens"), num("cacheCreationInputTokens"),
      num("cacheReadInputTokens"), num("toolCallCount"),
      el("td", { "data-k": "costUsd" }, costText(r.costUsd)));
  }

  async function loadRequests() {
    const seq = ++latest.requests;
    const { from, to } = range();
    const q = new URLSearchParams({ limit: $("#f-limit").value, from, to });
    for (const k of ["domain", "model", "client", "status"]) {
      const v = $("#f-" + k).value.trim();
      if (v) q.set(k, v);
    }
    try {
      const body = await getJson("/api/requests?" + q);
      if (seq !== latest.requests) return;
      const rows = body.requests;
      $("#h-requests").replaceChildren(...rows.map(requestRow));
      for (const k of ["domain", "model", "client"]) remember(k, rows.map((r) => r[k]));
      $("#h-requests-note").textContent = rows.length + (rows.length >= Number(q.get("limit"))
        ? " newest shown (raise the limit or narrow the filters for older ones)" : " in the range");
      showError("#h-requests-error", null);
    } catch (e) {
      if (seq === latest.requests) showError("#h-requests-error", e);
    }
  }

  let wired = false;
  function wire() {
    if (wired) return;
    wired = true;
    for (const id of ["#h-from", "#h-to", "#h-split"]) {
      $(id).addEventListener("change", () => { loadUsage(); if (id !== "#h-split") loadRequests(); });
    }
    $("#h-metric").addEventListener("change", loadUsage);
    for (const k of ["domain", "model", "client", "status", "limit"]) {
      $("#f-" + k).addEventListener("change", loadRequests);
    }
    $("#f-clear").addEventListener("click", () => {
      for (const k of ["domain", "model", "client", "status"]) $("#f-" + k).value = "";
      loadRequests();
    });
    $("#h-refresh").addEventListener("click", () => { loadUsage(); loadRequests(); });
  }

  addView("history", {
    async show() {
      wire();
      let on;
      try {
        on = await ledgerEnabled();
      } catch (e) {
        showError("#h-error", e);
        return;
      }
      $("#h-off").hidden = on;
      $("#h-body").hidden = !on;
      if (on) { loadUsage(); loadRequests(); }
    },
  });
})();
