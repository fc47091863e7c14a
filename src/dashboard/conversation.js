// A stored request's conversation, rebuilt from its bodies as the ledger kept them: the
// request's JSON (system prompt, tools offered, messages) and the answer — from the JSON
// body, or from the SSE as relayed (text deltas and input_json_delta fragments joined
// back into blocks). Pure: text in, plain objects out; request.js draws them.
//
// Bodies are cut at 1 MiB and a stream may have broken off, so every step tolerates a
// truncated or malformed input and says what it could not read instead of failing.
"use strict";
window.nexusConversation = (function () {
  // The request body: {system, tools, messages} or {problem} when it is not JSON.
  function readRequest(text) {
    if (!text) return { problem: "no request body was kept", messages: [] };
    let body;
    try { body = JSON.parse(text); } catch (e) {
      return { problem: "the request body is not readable JSON (stored bodies are cut at 1 MiB)", messages: [] };
    }
    if (!body || typeof body !== "object") return { problem: "the request body is not an object", messages: [] };
    const messages = (Array.isArray(body.messages) ? body.messages : []).map((m) => ({
      role: String(m && m.role || "?"),
      content: blocksOf(m && m.content),
    }));
    return { system: blocksOf(body.system), tools: Array.isArray(body.tools) ? body.tools : [], messages };
  }

  // Content as blocks: a bare string is one text block.
  function blocksOf(content) {
    if (content === undefined || content === null) return [];
    if (typeof content === "string") return [{ type: "text", text: content }];
    if (Array.isArray(content)) return content.filter((b) => b && typeof b === "object");
    return [content];
  }

  // The answer: {role, content, stopReason, usage, complete, error} from either form.
  function readResponse(text) {
    if (!text) return { problem: "no response body was kept", content: [] };
    const trimmed = text.replace(/^\s+/, "");
    if (trimmed.startsWith("event:") || trimmed.startsWith("data:")) return fromEvents(events(text));
    let body;
    try { body = JSON.parse(text); } catch (e) {
      return { problem: "the response body is neither JSON nor an event stream (cut at 1 MiB?)", content: [] };
    }
    if (body && body.type === "error") return { error: body.error || body, content: [], complete: true };
    return {
      role: body.role || "assistant", content: blocksOf(body.content), stopReason: body.stop_reason,
      usage: body.usage, model: body.model, complete: true,
    };
  }

  // SSE text → the JSON of each event's data, in order (comments and blank data skipped;
  // an event cut in the middle is dropped).
  function events(text) {
    const out = [];
    for (const raw of text.split(/\r?\n\r?\n/)) {
      const data = raw.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      try { out.push(JSON.parse(data)); } catch (e) { /* cut off: the last one, at most */ }
    }
    return out;
  }

  // Replays the stream's events into the message they describe.
  function fromEvents(list) {
    const answer = { role: "assistant", content: [], complete: false };
    const partialJson = new Map();   // block index -> the input_json_delta text so far
    for (const ev of list) {
      switch (ev.type) {
        case "message_start": {
          const m = ev.message || {};
          answer.role = m.role || "assistant";
          answer.model = m.model;
          answer.usage = m.usage;
          for (const b of blocksOf(m.content)) answer.content.push(b);
          break;
        }
        case "content_block_start":
          answer.content[ev.index] = Object.assign({}, ev.content_block);
          break;
        case "content_block_delta": {
          const block = answer.content[ev.index] || (answer.content[ev.index] = { type: "text", text: "" });
          const d = ev.delta || {};
          if (d.type === "text_delta") block.text = (block.text || "") + d.text;
          else if (d.type === "thinking_delta") block.thinking = (block.thinking || "") + d.thinking;
          else if (d.type === "input_json_delta") {
            partialJson.set(ev.index, (partialJson.get(ev.index) || "") + (d.partial_json || ""));
          }
          break;
        }
        case "content_block_stop":
          finishInput(answer.content[ev.index], partialJson.get(ev.index));
          partialJson.delete(ev.index);
          break;
        case "message_delta":
          if (ev.delta && ev.delta.stop_reason) answer.stopReason = ev.delta.stop_reason;
          if (ev.usage) answer.usage = Object.assign({}, answer.usage, ev.usage);
          break;
        case "message_stop":
          answer.complete = true;
          break;
        case "error":
          answer.error = ev.error || ev;
          break;
      }
    }
    // Blocks the stream never closed keep what arrived.
    for (const [index, json] of partialJson) finishInput(answer.content[index], json);
    answer.content = answer.content.filter(Boolean);
    return answer;
  }

  // A tool call's input from its joined fragments (the raw text when it does not parse,
  // as when the stream broke off mid-call).
  function finishInput(block, json) {
    if (!block || json === undefined || json === "") return;
    try { block.input = JSON.parse(json); } catch (e) { block.input = json; block.inputIncomplete = true; }
  }

  // A tool result's content as plain text, for showing and for measuring.
  function resultText(block) {
    return blocksOf(block.content).map((b) =>
      b.type === "text" ? b.text : "[" + (b.type || "block") + (b.source && b.source.media_type ? " " + b.source.media_type : "") + "]"
    ).join("\n");
  }

  return { readRequest, readResponse, resultText, events };
})();
