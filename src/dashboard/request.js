// A request's page (#request/<id>): its row from /api/requests/<id> — fields, tokens,
// cost — and, when nexus keeps bodies, its conversation as conversation.js rebuilds it:
// the system prompt and the tools offered collapsed, every message with its role, text,
// tool calls and tool results, then the answer. Made to stay readable for a long Claude
// Code session: long texts are cut with a button to show the rest, long tool results
// start collapsed, and one button opens or closes them all.
"use strict";
(function () {
  const { fmt, usd, $, el, getJson, ledgerEnabled, addView } = window.nexusPage;
  const { readRequest, readResponse, resultText } = window.nexusConversation;
  // Characters of a text shown before "show all"; tool results longer than COLLAPSE
  // characters start closed.
  const LONG = 1500;
  const COLLAPSE = 300;
  let latest = 0;

  // Text in a <pre>, its first LONG characters until asked for the rest.
  function longText(text, cls) {
    const pre = el("pre", { class: "text" + (cls ? " " + cls : "") });
    if (text.length <= LONG) {
      pre.textContent = text;
      return pre;
    }
    pre.textContent = text.slice(0, LONG) + " …";
    const more = el("button", { class: "more" }, "show all " + fmt.format(text.length) + " characters");
    more.addEventListener("click", () => { pre.textContent = text; more.remove(); });
    return el("div", {}, pre, more);
  }

  // A collapsible part: `summary` always shown, `body()` built when first opened.
  function fold(summary, open, body, attrs) {
    const details = el("details", attrs || {}, el("summary", {}, ...summary));
    if (open) details.open = true;
    let built = false;
    const build = () => { if (!built && details.open) { built = true; details.append(body()); } };
    details.addEventListener("toggle", build);
    build();
    return details;
  }

  const json = (v) => typeof v === "string" ? v : JSON.stringify(v, null, 2);
  const firstLine = (text) => {
    const line = text.split("\n").find((l) => l.trim()) || "";
    return line.length > 120 ? line.slice(0, 120) + " …" : line;
  };

  // One content block, by type; `names` maps tool_use ids to tool names for results.
  function block(b, names) {
    const type = String(b.type || "block");
    const attrs = { class: "block " + type.replace(/[^a-z_]/g, ""), "data-type": type };
    switch (type) {
      case "text":
        return el("div", attrs, longText(String(b.text || "")));
      case "tool_use":
      case "server_tool_use":
        if (b.id) names.set(b.id, b.name);
        return el("div", Object.assign(attrs, { "data-name": String(b.name || "") }),
          el("div", { class: "head" }, el("b", {}, type), " ", el("code", {}, String(b.name || "?")),
            el("span", { class: "muted" }, " " + (b.id || "") + (b.inputIncomplete ? " · input cut off" : ""))),
          longText(json(b.input === undefined ? {} : b.input), "input"));
      case "tool_result": {
        const text = resultText(b);
        const name = names.get(b.tool_use_id);
        const summary = [el("b", {}, "tool_result"), " ",
          el("code", {}, name ? String(name) : String(b.tool_use_id || "?")),
          el("span", { class: "muted" }, " · " + fmt.format(text.length) + " characters" +
            (b.is_error ? " · error" : "") + " · " + firstLine(text))];
        return fold(summary, text.length <= COLLAPSE, () => longText(text), Object.assign(attrs,
          { "data-tool-use-id": String(b.tool_use_id || ""), class: attrs.class + (b.is_error ? " error" : "") }));
      }
      case "thinking":
      case "redacted_thinking": {
        const text = String(b.thinking || (type === "redacted_thinking" ? "(redacted)" : ""));
        return fold([el("b", {}, type), el("span", { class: "muted" }, " · " + fmt.format(text.length) + " characters")],
          false, () => longText(text), attrs);
      }
      case "image":
      case "document":
        return el("div", attrs, el("span", { class: "muted" },
          "[" + type + (b.source && b.source.media_type ? " " + b.source.media_type : "") + "]"));
      default:
        return fold([el("b", {}, type)], false, () => longText(json(b)), attrs);
    }
  }

  function message(m, index, names, extra) {
    const head = el("div", { class: "head" }, el("b", {}, m.role), el("span", { class: "muted" }, " #" + (index + 1)));
    if (extra) head.append(el("span", { class: "muted" }, " · " + extra));
    return el("div", { class: "msg " + (m.role === "user" ? "user" : "assistant"), "data-role": m.role, "data-index": String(index) },
      head, ...m.content.map((b) => block(b, names)));
  }

  function conversation(row) {
    const out = [];
    const request = readRequest(row.requestBody);
    const answer = readResponse(row.responseBody);
    const names = new Map();
    if (request.problem) out.push(el("p", { class: "problem" }, request.problem));
    const systemText = (request.system || []).map((b) => b.type === "text" ? b.text : json(b)).join("\n\n");
    if (systemText) {
      out.push(fold([el("b", {}, "System prompt"), el("span", { class: "muted" }, " · " + fmt.format(systemText.length) + " characters")],
        false, () => longText(systemText), { id: "r-system", class: "system" }));
    }
    if (request.tools && request.tools.length) {
      const toolNames = request.tools.map((t) => String(t.name || t.type || "?"));
      out.push(fold([el("b", {}, request.tools.length + " tools offered"), el("span", { class: "muted" }, " · " + firstLine(toolNames.join(", ")))],
        false, () => el("ul", { class: "tools" }, ...request.tools.map((t, i) =>
          el("li", {}, el("code", {}, toolNames[i]), " ", String(t.description || "").slice(0, 300)))), { class: "system" }));
    }
    request.messages.forEach((m, i) => out.push(message(m, i, names)));
    if (answer.problem) out.push(el("p", { class: "problem" }, answer.problem));
    else {
      const state = [answer.stopReason ? "stop: " + answer.stopReason : "",
        answer.complete ? "" : "incomplete: the response ended early"].filter(Boolean).join(" · ");
      const node = message(answer, request.messages.length, names, "answer" + (state ? " · " + state : ""));
      node.classList.add("answer");
      if (answer.error) {
        node.append(el("p", { class: "problem" }, "error: " + String(answer.error.type || "") + " " + String(answer.error.message || json(answer.error))));
      }
      out.push(node);
    }
    $("#r-conversation-note").textContent = request.messages.length + " messages in the request, then the answer";
    return out;
  }

  // The row's fields, as a definition list.
  function fields(row) {
    const ms = (v) => v === null || v === undefined ? "–" : fmt.format(v) + " ms";
    const pairs = [
      ["Time", row.timestamp], ["Domain", row.domain], ["Client", row.client], ["Credential", row.credential],
      ["Request", row.method + " " + row.path], ["Model", row.model], ["Streamed", row.stream ? "yes" : "no"],
      ["Status", String(row.status)], ["Duration", ms(row.durationMs)], ["Time to first byte", ms(row.timeToFirstByteMs)],
      ["Class", row.requestClass], ["Session", row.sessionId],
      ["Bytes in / out", (row.bytesIn === null ? "–" : fmt.format(row.bytesIn)) + " / " + fmt.format(row.bytesOut)],
      ["Error", row.error],
    ];
    return pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "–" : String(v))]);
  }

  function render(row) {
    $("#r-id").textContent = row.id;
    $("#r-fields").replaceChildren(...fields(row));
    for (const card of document.querySelectorAll("#r-tokens .card")) {
      const k = card.dataset.k, v = row[k];
      card.dataset.v = String(v);
      card.querySelector(".value").textContent = k === "costUsd" ? (v === null ? "–" : usd(v)) : fmt.format(v || 0);
    }
    const kept = "requestBody" in row || "responseBody" in row;
    $("#r-no-bodies").hidden = kept;
    $("#r-conversation").replaceChildren(...(kept ? conversation(row) : []));
    $("#r-raw").replaceChildren(...(kept ? [
      fold([el("b", {}, "Request body"), el("span", { class: "muted" }, " · " + fmt.format((row.requestBody || "").length) + " characters")],
        false, () => longText(row.requestBody || "")),
      fold([el("b", {}, "Response body"), el("span", { class: "muted" }, " · " + fmt.format((row.responseBody || "").length) + " characters")],
        false, () => longText(row.responseBody || "")),
    ] : []));
  }

  function showError(text) {
    $("#r-error").hidden = !text;
    $("#r-error").textContent = text || "";
  }

  async function show(id) {
    const seq = ++latest;
    $("#r-body").hidden = true;
    showError("");
    try {
      if (!(await ledgerEnabled())) {
        showError("The ledger is off (NEXUS_DB=off): nexus keeps no requests to show.");
        return;
      }
      const row = await getJson("/api/requests/" + encodeURIComponent(id));
      if (seq !== latest) return;
      render(row);
      $("#r-body").hidden = false;
      document.body.dataset.requestShown = row.id;
    } catch (e) {
      if (seq === latest) showError((e.status === 404 ? "No request " + id + " in the ledger" : "Cannot read the ledger: " + e.message));
    }
  }

  // Opens or closes every collapsible part of the conversation at once.
  function wire() {
    $("#r-expand").addEventListener("click", () => {
      const all = document.querySelectorAll("#r-conversation details");
      const open = [...all].some((d) => !d.open);
      for (const d of all) d.open = open;
      $("#r-expand").textContent = open ? "collapse all" : "expand all";
    });
  }

  document.addEventListener("DOMContentLoaded", wire);
  addView("request", { show });
})();
