//! The dashboard's history view and a request's page, in headless Chromium against the
//! real binary: requests go through nexus to a mock upstream, the ledger keeps them, and
//! the test reads what the page shows — then holds it against the ledger's own JSON API.
//!
//! - `#history`: a day's figures and the range's totals equal `/api/usage`; the split by
//!   domain equals `group=domain`; the request list equals `/api/requests` and follows its
//!   filters; with `NEXUS_DB=off` the view says so.
//! - `#request/<id>` (admin key on, entered as the browser's Basic credentials): a
//!   streamed request kept with `NEXUS_STORE_BODIES=true` shows its messages — user text,
//!   a tool call, tool results (the long one collapsed until expanded), the answer rebuilt
//!   from the SSE — and stored markup stays text.
//!
//! Every wait is on a condition in the page, bounded by [`PAGE_WAIT`]. Needs Debian's
//! `chromium`: run tests/install-deps.sh. Without it the tests fail.

mod browser;
mod common;

use std::time::Duration;

use browser::{grouped, require_chromium, Browser};
use common::ledger::*;
use common::*;
use serde_json::{json, Value};

/// Bound on every wait for the page (generous: a slow shared machine).
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// The usage fields the page shows, as the API names them.
const FIELDS: [&str; 5] = [
    "requestCount",
    "inputTokens",
    "outputTokens",
    "cacheCreationInputTokens",
    "cacheReadInputTokens",
];

/// What the history view shows, read out of its DOM: the range, the totals, a row per
/// day and per split, and the request list.
const READ_HISTORY: &str = r#"(() => {
  // The page may still be parsing: read it only once every element read below is there.
  const need = ['#h-from', '#h-to', '#h-split-name', '#h-off', '#h-error', '#h-requests-error'];
  if (!document.body || need.some((s) => !document.querySelector(s))) return {loading: location.href};
  const cells = (tr) => {
    const r = {};
    for (const td of tr.querySelectorAll('td[data-k]')) r[td.dataset.k] = {v: td.dataset.v, text: td.textContent};
    return r;
  };
  const rows = (sel, key) => {
    const out = {};
    for (const tr of document.querySelectorAll(sel)) out[tr.dataset[key]] = cells(tr);
    return out;
  };
  const totals = {};
  for (const c of document.querySelectorAll('#h-totals .card'))
    totals[c.dataset.k] = {v: c.dataset.v, text: c.querySelector('.value')?.textContent};
  return {
    loads: Number(document.body.dataset.historyLoads || 0),
    view: document.body.dataset.view,
    from: document.querySelector('#h-from').value,
    to: document.querySelector('#h-to').value,
    splitName: document.querySelector('#h-split-name').textContent,
    totals,
    days: rows('#h-days tr', 'day'),
    splits: rows('#h-splits tr', 'split'),
    requests: [...document.querySelectorAll('#h-requests tr')].map((tr) => tr.dataset.id),
    bars: document.querySelectorAll('#h-chart rect').length,
    off: !document.querySelector('#h-off').hidden,
    error: document.querySelector('#h-error').textContent + document.querySelector('#h-requests-error').textContent,
  };
})()"#;

/// Sets a control of the page and fires its change event, as a person choosing would.
fn choose(browser: &mut Browser, id: &str, value: &str) {
    browser.eval(&format!(
        "(() => {{ const e = document.querySelector({id:?}); e.value = {value:?}; \
         e.dispatchEvent(new Event('change')); }})()",
        id = format!("#{id}"),
    ));
}

/// A number the page shows equals the API's: in its data and as the text a person reads.
fn same_number(cell: &Value, api: &Value, what: &str) {
    let want = api
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: API gave {api}"));
    assert_eq!(cell["v"], want.to_string(), "{what}: {cell}");
    assert_eq!(cell["text"], grouped(want), "{what}: {cell}");
}

/// A cost the page shows equals the API's (both from the same double).
fn same_cost(cell: &Value, api: &Value, what: &str) {
    let want = api
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: API gave {api}"));
    let shown: f64 = cell["v"].as_str().unwrap().parse().unwrap();
    assert!((shown - want).abs() < 1e-12, "{what}: {cell} vs {api}");
    assert!(
        cell["text"].as_str().unwrap().starts_with('$'),
        "{what}: {cell}"
    );
}

/// How many bars the chart must draw: a (day, split) pair with tokens, per the API.
fn bars(nexus: &Nexus, range: &str, split: &str) -> Value {
    let (_, usage) = api(
        nexus,
        &format!("/api/usage?group=day&split={split}&{range}"),
        None,
    );
    let used = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| FIELDS[1..].iter().any(|k| l[k].as_u64() > Some(0)))
        .count();
    assert!(used > 0, "{usage}");
    json!(used)
}

/// Days are UTC in both: the day after `day` (YYYY-MM-DD).
fn next_day(day: &str) -> String {
    let t = humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).unwrap();
    humantime::format_rfc3339(t + Duration::from_secs(86_400)).to_string()[..10].to_string()
}

#[test]
fn history_view_shows_what_the_ledger_api_says() {
    let version = require_chromium();
    let mock = mock();
    let dir = TempDir::new("dashboard-history");
    let nexus = Nexus::builder()
        .upstream(&mock.url())
        .env(
            "NEXUS_DB",
            format!("sqlite:{}", dir.path().join("ledger.db").display()),
        )
        .start();
    let mut sent = traffic(&nexus, "one");
    sent.extend(traffic(&nexus, "two"));
    wait_for_rows(&nexus, sent.len() as u64, Duration::from_secs(10));

    let mut browser = Browser::launch(1280, 900);
    browser.goto(&format!("{}/dashboard#history", nexus.url()));
    let (ok, page) = browser.eval_until(READ_HISTORY, PAGE_WAIT, |p| {
        p["loads"].as_u64() >= Some(1) && p["requests"].as_array().is_some_and(|r| !r.is_empty())
    });
    assert!(ok, "{version}: the history view never loaded\n{page:#}");
    assert_eq!(page["view"], "history");
    assert_eq!(page["error"], "", "{page:#}");

    // The day of the requests (today, unless the test ran across midnight UTC): its row
    // equals /api/usage for that day.
    let (_, newest) = api(&nexus, "/api/requests?limit=1", None);
    let day = newest["requests"][0]["timestamp"].as_str().unwrap()[..10].to_string();
    let (_, usage) = api(
        &nexus,
        &format!("/api/usage?group=day&from={day}&to={}", next_day(&day)),
        None,
    );
    let line = &usage["usage"][0];
    assert_eq!(line["key"], day, "{usage}");
    let row = &page["days"][&day];
    for k in FIELDS {
        same_number(&row[k], &line[k], &format!("{day} {k}"));
    }
    same_cost(&row["costUsd"], &line["costUsd"], &format!("{day} cost"));

    // The range's totals equal /api/usage over the range the page shows (the last 30
    // days), which holds every request sent.
    let (from, to) = (page["from"].as_str().unwrap(), page["to"].as_str().unwrap());
    let range = format!("from={from}&to={}", next_day(to));
    let (_, whole) = api(&nexus, &format!("/api/usage?group=day&{range}"), None);
    let lines = whole["usage"].as_array().unwrap();
    for k in FIELDS {
        let total: u64 = lines.iter().map(|l| l[k].as_u64().unwrap()).sum();
        same_number(&page["totals"][k], &json!(total), &format!("total {k}"));
    }
    same_number(
        &page["totals"]["requestCount"],
        &json!(sent.len()),
        "requests",
    );
    let cost: f64 = lines.iter().map(|l| l["costUsd"].as_f64().unwrap()).sum();
    same_cost(&page["totals"]["costUsd"], &json!(cost), "total cost");
    // A bar for each day and model that used tokens.
    assert_eq!(page["bars"], bars(&nexus, &range, "model"), "{page:#}");

    // Split by domain: a row per domain equal to group=domain over the range.
    choose(&mut browser, "h-split", "domain");
    let (ok, page) = browser.eval_until(READ_HISTORY, PAGE_WAIT, |p| {
        p["splitName"] == "domain" && p["splits"].get(DOMAIN_A).is_some()
    });
    assert!(ok, "the split by domain never showed\n{page:#}");
    let (_, by_domain) = api(&nexus, &format!("/api/usage?group=domain&{range}"), None);
    for line in by_domain["usage"].as_array().unwrap() {
        let domain = line["key"].as_str().unwrap();
        for k in FIELDS {
            same_number(
                &page["splits"][domain][k],
                &line[k],
                &format!("{domain} {k}"),
            );
        }
    }
    assert_eq!(page["bars"], bars(&nexus, &range, "domain"), "{page:#}");

    // The request list: /api/requests over the range, newest first, then filtered.
    let ids = |list: &Value| -> Vec<Value> {
        list["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    let (_, listed) = api(&nexus, &format!("/api/requests?{range}"), None);
    assert_eq!(page["requests"], json!(ids(&listed)), "{page:#}");
    // Newest first: the last request sent, unless another began in the same millisecond
    // (a row's time is its id's, in ms).
    let rows = listed["requests"].as_array().unwrap();
    let last = sent.last().unwrap().id.as_str();
    let last_row = rows
        .iter()
        .find(|r| r["id"] == last)
        .expect("the last request listed");
    assert_eq!(rows[0]["timestamp"], last_row["timestamp"], "{listed:#}");
    choose(&mut browser, "f-status", "429");
    let (_, errors) = api(&nexus, &format!("/api/requests?{range}&status=429"), None);
    assert_eq!(errors["requests"].as_array().unwrap().len(), 2, "{errors}");
    let (ok, page) = browser.eval_until(READ_HISTORY, PAGE_WAIT, |p| {
        p["requests"] == json!(ids(&errors))
    });
    assert!(ok, "the status filter: {errors}\n{page:#}");
    choose(&mut browser, "f-domain", DOMAIN_B);
    let (ok, page) = browser.eval_until(READ_HISTORY, PAGE_WAIT, |p| p["requests"] == json!([]));
    assert!(ok, "no 429 on {DOMAIN_B}\n{page:#}");
    choose(&mut browser, "f-status", "");
    let (_, on_b) = api(
        &nexus,
        &format!("/api/requests?{range}&domain={DOMAIN_B}"),
        None,
    );
    let (ok, page) = browser.eval_until(READ_HISTORY, PAGE_WAIT, |p| {
        p["requests"] == json!(ids(&on_b))
    });
    assert!(ok, "the domain filter: {on_b}\n{page:#}");
    assert_eq!(page["requests"].as_array().unwrap().len(), 4);
    save_screenshot(&mut browser, "dashboard-history.png");

    // Nothing but nexus itself was asked for anything (data: URLs are the browser's own
    // icons, such as the date inputs' calendar).
    let origin = format!("{}/", nexus.url());
    for u in browser.requested_urls() {
        assert!(
            u.starts_with(&origin) || u.starts_with("data:"),
            "the page fetched {u}"
        );
    }
}

#[test]
fn history_view_says_when_the_ledger_is_off() {
    require_chromium();
    let nexus = Nexus::builder()
        .upstream("http://127.0.0.1:9")
        .env("NEXUS_DB", "off")
        .start();
    let mut browser = Browser::launch(1024, 700);
    browser.goto(&format!("{}/dashboard#history", nexus.url()));
    let (ok, page) = browser.eval_until(READ_HISTORY, PAGE_WAIT, |p| p["off"] == true);
    assert!(ok, "no word that the ledger is off\n{page:#}");
    let text = browser.eval("document.querySelector('#h-off').innerText");
    assert!(text.as_str().unwrap().contains("NEXUS_DB=off"), "{text}");
    assert_eq!(page["error"], "", "{page:#}");
}

const ADMIN_KEY: &str = "nx-admin-history-0123456789";
/// Stored markup: must show as text, never become elements.
const MARKUP: &str = r#"<img src=x onerror="document.body.dataset.pwned='1'"> <b>not bold</b>"#;

fn sse(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The answer, streamed: text in several deltas, then a tool call whose input arrives as
/// input_json_delta fragments.
fn streamed_answer() -> Vec<String> {
    let delta = |index: u64, delta: Value| {
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    vec![
        sse(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_h", "type": "message",
            "role": "assistant", "model": MODEL, "content": [], "stop_reason": null,
            "usage": {"input_tokens": 4321, "output_tokens": 1, "cache_read_input_tokens": 1000}}}),
        ),
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        delta(0, json!({"type": "text_delta", "text": "The entry point "})),
        delta(
            0,
            json!({"type": "text_delta", "text": "is in src/main.rs; "}),
        ),
        delta(0, json!({"type": "text_delta", "text": "reading it now."})),
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "toolu_3", "name": "Read", "input": {}}}),
        ),
        delta(1, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"file_"}),
        ),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "path\": \"/repo/src/ma"}),
        ),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "in.rs\"}"}),
        ),
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        sse(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 57}}),
        ),
        sse("message_stop", json!({"type": "message_stop"})),
    ]
}

/// A Claude Code–like request: a system prompt, tools, and a session so far with a tool
/// call, a short and a long tool result.
fn session_request() -> (Value, String) {
    let long: String = (1..=200)
        .map(|i| format!("src/module_{i:03}.rs:{i}: fn handler_{i}() {{ /* … */ }}\n"))
        .collect();
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code, a coding assistant. Be precise."}],
        "tools": [{"name": "Bash", "description": "Runs a command", "input_schema": {"type": "object"}},
                  {"name": "Grep", "description": "Searches files", "input_schema": {"type": "object"}},
                  {"name": "Read", "description": "Reads a file", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": format!("Where is the entry point? {MARKUP}")},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me list the files."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Cargo.toml\nsrc\n"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {"pattern": "fn "}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": long}]},
                {"type": "text", "text": "Now find main."}]},
        ],
    });
    (body, long)
}

/// The conversation as the page shows it.
const READ_CONVERSATION: &str = r#"(() => {
  if (!document.body || !document.querySelector('#r-conversation')) return {loading: location.href};
  const block = (b) => ({type: b.dataset.type, name: b.dataset.name || null,
    open: b.tagName === 'DETAILS' ? b.open : null, text: b.innerText});
  return {
    shown: document.body.dataset.requestShown || null,
    error: document.querySelector('#r-error').textContent,
    messages: [...document.querySelectorAll('#r-conversation .msg')].map((m) => ({
      role: m.dataset.role, answer: m.classList.contains('answer'),
      head: m.querySelector('.head').innerText,
      blocks: [...m.querySelectorAll('[data-type]')].map(block)})),
    system: (() => { const s = document.querySelector('#r-system');
      return s && {open: s.open, summary: s.querySelector('summary').innerText}; })(),
    tokens: Object.fromEntries([...document.querySelectorAll('#r-tokens .card')].map((c) =>
      [c.dataset.k, {v: c.dataset.v, text: c.querySelector('.value').textContent}])),
    id: document.querySelector('#r-id').textContent,
    fields: document.querySelector('#r-fields').innerText,
    elements: [...document.querySelectorAll('#r-conversation img, #r-conversation b')]
      .filter((e) => e.tagName === 'IMG' || e.textContent === 'not bold').length,
    pwned: document.body.dataset.pwned || null,
  };
})()"#;

#[test]
fn a_requests_page_shows_its_conversation() {
    require_chromium();
    let mock = MockUpstream::start(|_| MockReply::sse(streamed_answer()));
    let dir = TempDir::new("dashboard-request");
    let nexus = Nexus::builder()
        .upstream(&mock.url())
        .env(
            "NEXUS_DB",
            format!("sqlite:{}", dir.path().join("ledger.db").display()),
        )
        .env("NEXUS_STORE_BODIES", "true")
        .env("NEXUS_ADMIN_KEY", ADMIN_KEY)
        .start();
    let (body, long) = session_request();
    let response = nexus.request(&messages_request(body.to_string()));
    assert_eq!(response.status, 200, "{}", response.text());
    let id = response.header("x-nexus-request-id").unwrap().to_string();
    let (status, row) = wait_for_row(&nexus, &id);
    assert_eq!(status, 200, "{row}");

    // The admin key as a person gives it to a browser: the Basic credentials of the URL,
    // which the browser then sends with the page, its scripts and its fetches.
    let mut browser = Browser::launch(1280, 1000);
    let url = nexus
        .url()
        .replace("http://", &format!("http://admin:{ADMIN_KEY}@"));
    browser.goto(&format!("{url}/dashboard#request/{id}"));
    let (ok, page) = browser.eval_until(READ_CONVERSATION, PAGE_WAIT, |p| p["shown"] == id);
    assert!(
        ok,
        "the request's page never showed\n{page:#}\n{}",
        nexus.logs()
    );
    assert_eq!(page["error"], "");

    // Its fields and tokens, as the API has them.
    for k in ["inputTokens", "outputTokens", "cacheReadInputTokens"] {
        same_number(&page["tokens"][k], &row[k], k);
    }
    same_cost(&page["tokens"]["costUsd"], &row["costUsd"], "cost");
    assert_eq!(page["id"], id);
    let fields = page["fields"].as_str().unwrap();
    assert!(
        fields.contains("POST /v1/messages") && fields.contains(MODEL),
        "{fields}"
    );

    // The system prompt, collapsed; then the five messages of the request and the answer.
    assert_eq!(page["system"]["open"], false, "{page:#}");
    let messages = page["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ],
        "{page:#}"
    );
    let blocks = |i: usize| messages[i]["blocks"].as_array().unwrap();

    // User text, with its markup as text.
    assert_eq!(blocks(0)[0]["type"], "text");
    assert!(
        blocks(0)[0]["text"].as_str().unwrap().contains(MARKUP),
        "{page:#}"
    );
    assert_eq!(page["elements"], 0, "stored markup became elements");
    assert_eq!(page["pwned"], Value::Null);

    // A tool call: its name and input.
    let call = &blocks(1)[1];
    assert_eq!(
        (&call["type"], &call["name"]),
        (&json!("tool_use"), &json!("Bash"))
    );
    assert!(
        call["text"]
            .as_str()
            .unwrap()
            .contains(r#""command": "ls -la""#),
        "{call}"
    );

    // A short tool result, open, under its tool's name.
    let result = &blocks(2)[0];
    assert_eq!(
        (&result["type"], &result["open"]),
        (&json!("tool_result"), &json!(true))
    );
    assert!(
        result["text"].as_str().unwrap().contains("Bash"),
        "{result}"
    );
    assert!(
        result["text"].as_str().unwrap().contains("Cargo.toml"),
        "{result}"
    );

    // A long one, collapsed: its summary says how long, and nothing of its end is shown.
    let long_result = &blocks(4)[0];
    assert_eq!(long_result["open"], false, "{long_result}");
    assert!(long_result["text"].as_str().unwrap().contains(&format!(
        "{} characters",
        grouped(long.chars().count() as u64)
    )));
    assert_eq!(blocks(4)[1]["text"], "Now find main.");

    // The answer, rebuilt from the SSE: the text deltas and the tool input's fragments.
    let answer = &messages[5];
    assert_eq!(answer["answer"], true);
    assert!(
        answer["head"].as_str().unwrap().contains("stop: tool_use"),
        "{answer}"
    );
    let answer_blocks = answer["blocks"].as_array().unwrap();
    assert_eq!(
        answer_blocks[0]["text"],
        "The entry point is in src/main.rs; reading it now."
    );
    assert_eq!(answer_blocks[1]["name"], "Read");
    assert!(
        answer_blocks[1]["text"]
            .as_str()
            .unwrap()
            .contains(r#""file_path": "/repo/src/main.rs""#),
        "{answer}"
    );

    browser.eval("document.querySelector('#r-conversation').scrollIntoView()");
    save_screenshot(&mut browser, "dashboard-request.png");

    // Expanding: every collapsed part opens; the long result shows its start and, on
    // request, all of it.
    browser.eval("document.querySelector('#r-expand').click()");
    let last_line = long.lines().last().unwrap().to_string();
    let (ok, text) = browser.eval_until(
        "(() => { const d = document.querySelector('#r-conversation details[data-tool-use-id=toolu_2]'); \
         return d.open ? d.innerText : ''; })()",
        PAGE_WAIT,
        |t| t.as_str().is_some_and(|t| t.contains("src/module_001.rs") && t.contains("show all")),
    );
    assert!(ok, "the long result did not open: {text}");
    assert!(
        !text.as_str().unwrap().contains(&last_line),
        "cut before its end"
    );
    browser.eval(
        "document.querySelector('#r-conversation details[data-tool-use-id=toolu_2] button.more').click()",
    );
    let (ok, text) = browser.eval_until(
        "document.querySelector('#r-conversation details[data-tool-use-id=toolu_2]').innerText",
        PAGE_WAIT,
        |t| t.as_str().is_some_and(|t| t.contains(&last_line)),
    );
    assert!(ok, "show all did not show the rest: {text}");

    // The live view's polls carry the key the same way.
    let (ok, status) = browser.eval_until(
        "document.querySelector('#status').className",
        PAGE_WAIT,
        |s| s == "ok",
    );
    assert!(ok, "the live view could not read /token-stats: {status}");
}

/// `GET /api/requests/<id>` with the admin key, once the row is written.
fn wait_for_row(nexus: &Nexus, id: &str) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = api_with_key(nexus, &format!("/api/requests/{id}"));
        if found.0 != 404 || std::time::Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn api_with_key(nexus: &Nexus, path: &str) -> (u16, Value) {
    api(nexus, path, Some(ADMIN_KEY))
}

/// A PNG of the page in target/ for a person to look at.
fn save_screenshot(browser: &mut Browser, name: &str) {
    let png = browser.screenshot_png();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());
}
