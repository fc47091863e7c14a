// The live view's client table: one row per named client (CLIENTS_FILE) from
// /token-stats' `clients` section — requests, tokens, cost, requests in flight against
// maxConcurrent, and a bar per budget (kind and window) with its spend, its limit and when
// it resets. A budget at or over its limit is marked `over`: nexus refuses that client's
// requests until it resets. The panel is hidden while nexus has no named clients.
"use strict";
window.nexusClients = (function () {
  const { fmt, usd, until, $, el, numberCell } = window.nexusPage;
  const KINDS = ["inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"];
  // Share of a budget spent from which its bar turns amber.
  const WARN_AT = 0.8;

  const amount = (kind, v) => kind === "usd" ? usd(v) : fmt.format(v);

  function inFlightCell(c) {
    const max = c.maxConcurrent ?? null;
    const full = max !== null && c.inFlight >= max;
    const td = el("td", { "data-k": "inFlight", "data-v": String(c.inFlight),
      "data-max": max === null ? "" : String(max), class: full ? "bad" : undefined },
    fmt.format(c.inFlight) + (max === null ? "" : " / " + fmt.format(max)));
    if (max === null) td.append(el("small", { class: "sub" }, "no limit"));
    return td;
  }

  function budgetsCell(budgets) {
    const td = el("td", { class: "left rl-cell" });
    if (!budgets.length) {
      td.append(el("span", { class: "muted none" }, "no budget"));
      return td;
    }
    const grid = el("div", { class: "rl budgets" });
    for (const b of budgets) {
      const used = b.limit > 0 ? b.spent / b.limit : 1;
      const over = b.spent >= b.limit;
      const bar = el("div", { class: "bar" + (over ? " bad" : used >= WARN_AT ? " warn" : "") },
        el("b", { style: "width:" + (Math.min(1, used) * 100).toFixed(1) + "%" }));
      const figures = el("span", {
        class: over ? "budget over" : "budget", "data-budget": b.kind + "/" + b.window,
        "data-spent": String(b.spent), "data-limit": String(b.limit), "data-resets": b.resetsAt || "",
      }, amount(b.kind, b.spent) + " / " + amount(b.kind, b.limit));
      if (b.resetsAt) figures.append(el("span", { class: "muted" }, " · " + until(b.resetsAt)));
      grid.append(el("span", { class: "name" }, (b.kind === "usd" ? "USD " : "tokens ") + b.window), bar, figures);
    }
    td.append(grid);
    return td;
  }

  // Fills the table from /token-stats' `clients` (absent without named clients).
  function render(clients) {
    const names = Object.keys(clients || {}).sort((a, b) =>
      (clients[b].requestCount || 0) - (clients[a].requestCount || 0) || a.localeCompare(b));
    $("#clients-panel").hidden = names.length === 0;
    $("#clients").replaceChildren(...names.map((name) => {
      const c = clients[name];
      const tokens = KINDS.reduce((sum, k) => sum + (c[k] || 0), 0);
      const budgets = c.budgets || [];
      const over = budgets.some((b) => b.spent >= b.limit);
      return el("tr", { "data-client": name, class: over ? "over" : undefined },
        el("td", { class: "domain" }, name, over ? el("small", { class: "problem" }, "over budget") : null),
        numberCell("requestCount", c.requestCount || 0),
        numberCell("tokens", tokens,
          fmt.format(c.inputTokens || 0) + " in · " + fmt.format(c.outputTokens || 0) + " out"),
        el("td", { "data-k": "costUsd", "data-v": String(c.costUsd || 0) }, usd(c.costUsd || 0)),
        inFlightCell(c),
        budgetsCell(budgets));
    }));
  }

  return { render };
})();
