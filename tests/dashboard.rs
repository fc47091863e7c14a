//! `GET /dashboard` in a real browser: headless Chromium loads the page from a nexus that
//! has counted known traffic (through a mock upstream), and the test reads the rendered DOM
//! until it shows those exact figures; more traffic while the page is open must show up in
//! the tokens-per-minute sparkline the page computes from successive polls. With named
//! clients, the client table's figures and budget bars must equal `/token-stats`. A
//! screenshot goes to target/ (and to docs/dashboard.png with NEXUS_UPDATE_SCREENSHOTS=1).
//!
//! Needs Debian's `chromium`: run tests/install-deps.sh. Without it the test fails.

mod browser;
mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use browser::{grouped, png_size, require_chromium, Browser};
use common::*;
use serde_json::{json, Value};

/// Poll interval the test gives the page (`?interval=`), to keep the test short.
const POLL_MS: u64 = 500;
/// Bound on every wait for the page to catch up.
const PAGE_WAIT: Duration = Duration::from_secs(30);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 760;

/// One request the test sends and the usage the mock answers it with.
#[derive(Clone, Copy)]
struct Call {
    domain: &'static str,
    stream: bool,
    /// 1 → query evaluation, 2 → inference.
    system_prompts: usize,
    /// input, output, cache creation, cache read.
    usage: [u64; 4],
    tools: u64,
    /// Which rate-limit headers the mock adds: "api", "unified" or "none".
    rate_limit: &'static str,
}

const RED: &str = "team-red.example.com";
const BLUE: &str = "team-blue.example.com";
const CI: &str = "ci.example.com";

fn call(n: u64, domain: &'static str) -> Call {
    let (rate_limit, system_prompts) = match domain {
        RED => ("api", 2),
        BLUE => ("unified", 1),
        _ => ("none", 0),
    };
    Call {
        domain,
        stream: n % 3 != 2,
        system_prompts,
        usage: [
            1_200 + 37 * n,
            180 + 11 * n,
            if n.is_multiple_of(4) { 2_048 } else { 0 },
            9_000 + 500 * n,
        ],
        tools: n % 3,
        rate_limit,
    }
}

fn iso_in(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(secs)).to_string()
}

fn epoch_in(secs: u64) -> String {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs)
        .to_string()
}

fn sse(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The mock upstream: usage and rate-limit headers from the `x-test-call` header.
fn reply(request: &Recorded) -> MockReply {
    let spec = request.headers.get("x-test-call").expect("x-test-call");
    let f: Vec<&str> = spec.split(',').collect();
    let num = |i: usize| f[i].parse::<u64>().unwrap();
    let (stream, input, output, cache_write, cache_read, tools) =
        (f[0] == "1", num(1), num(2), num(3), num(4), num(5));
    let usage = json!({"input_tokens": input, "output_tokens": output,
        "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read});
    let tool = |i: u64| json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": "Bash", "input": {}});
    let mut reply = if stream {
        let mut start_usage = usage.clone();
        start_usage["output_tokens"] = 1.into();
        let mut events = vec![
            sse(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": start_usage}}),
            ),
            sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            sse(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
            ),
            sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
        ];
        for i in 0..tools {
            events.push(sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": i + 1, "content_block": tool(i)}),
            ));
            events.push(sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i + 1}),
            ));
        }
        events.push(sse("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}})));
        events.push(sse("message_stop", json!({"type": "message_stop"})));
        MockReply::sse(events)
    } else {
        let mut content = vec![json!({"type": "text", "text": "ok"})];
        content.extend((0..tools).map(tool));
        MockReply::json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": content, "stop_reason": "end_turn", "stop_sequence": null, "usage": usage})
            .to_string(),
        )
    };
    match f[6] {
        "api" => {
            for (kind, limit, remaining) in [
                ("requests", "4000", "3990"),
                ("tokens", "400000", "312000"),
                ("input-tokens", "200000", "150000"),
                ("output-tokens", "80000", "6000"),
            ] {
                reply = reply
                    .header(&format!("anthropic-ratelimit-{kind}-limit"), limit)
                    .header(&format!("anthropic-ratelimit-{kind}-remaining"), remaining)
                    .header(&format!("anthropic-ratelimit-{kind}-reset"), &iso_in(45));
            }
        }
        "unified" => {
            reply = reply
                .header("anthropic-ratelimit-unified-status", "allowed_warning")
                .header("anthropic-ratelimit-unified-5h-utilization", "0.42")
                .header("anthropic-ratelimit-unified-5h-reset", &epoch_in(3 * 3600))
                .header("anthropic-ratelimit-unified-7d-utilization", "0.87")
                .header("anthropic-ratelimit-unified-7d-reset", &epoch_in(3 * 86400));
        }
        _ => {}
    }
    reply
}

fn send(nexus: &Nexus, c: &Call) {
    let response = nexus.request(&call_request(c, CLIENT_KEY));
    assert_eq!(response.status, 200, "{}", response.text());
}

/// The Messages request of `c`, presenting `key`.
fn call_request(c: &Call, key: &str) -> Request {
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]});
    if c.stream {
        body["stream"] = true.into();
    }
    match c.system_prompts {
        0 => {}
        1 => body["system"] = json!("You are terse."),
        k => body["system"] = json!(vec![json!({"type": "text", "text": "s"}); k]),
    }
    let [input, output, cache_write, cache_read] = c.usage;
    let spec = format!(
        "{},{input},{output},{cache_write},{cache_read},{},{}",
        c.stream as u8, c.tools, c.rate_limit
    );
    Request::post("/v1/messages")
        .host(c.domain)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("x-test-call", &spec)
        .json(body.to_string())
}

/// What `/token-stats` must say after `calls`, per domain.
fn expected(calls: &[Call]) -> BTreeMap<&'static str, BTreeMap<&'static str, u64>> {
    let mut all: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for c in calls {
        let d = all.entry(c.domain).or_default();
        let mut add = |k: &'static str, v: u64| *d.entry(k).or_default() += v;
        add("requestCount", 1);
        add("inputTokens", c.usage[0]);
        add("outputTokens", c.usage[1]);
        add("cacheCreationInputTokens", c.usage[2]);
        add("cacheReadInputTokens", c.usage[3]);
        add("toolCallCount", c.tools);
    }
    all
}

fn all_tokens(calls: &[Call]) -> u64 {
    calls.iter().map(|c| c.usage.iter().sum::<u64>()).sum()
}

fn wait_for_requests(nexus: &Nexus, total: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = nexus.request(&Request::get("/token-stats")).json();
        let seen: u64 = stats["stats"]
            .as_object()
            .unwrap()
            .values()
            .map(|d| d["requestCount"].as_u64().unwrap_or(0))
            .sum();
        if seen >= total {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "/token-stats shows {seen} of {total} requests: {stats}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the page shows, read out of its DOM.
const READ_PAGE: &str = r#"(() => {
  if (!document.querySelector('#spark')) return {loading: location.href};
  const rows = {};
  for (const tr of document.querySelectorAll('#domains tr[data-domain]')) {
    const r = {};
    for (const td of tr.querySelectorAll('td[data-k]'))
      r[td.dataset.k] = {v: Number(td.dataset.v), text: td.firstChild.textContent.trim()};
    r.rateLimit = {};
    for (const e of tr.querySelectorAll('[data-rl]'))
      r.rateLimit[e.dataset.rl] = {remaining: e.dataset.remaining, limit: e.dataset.limit,
        utilization: e.dataset.utilization, text: e.textContent};
    r.text = tr.innerText;
    rows[tr.dataset.domain] = r;
  }
  const totals = {};
  for (const c of document.querySelectorAll('#totals .card'))
    totals[c.dataset.k] = {v: Number(c.dataset.v), text: c.querySelector('.value').textContent};
  const spark = document.querySelector('#spark');
  return {
    polls: Number(document.body.dataset.polls || 0),
    clientsHidden: document.querySelector('#clients-panel').hidden,
    status: document.querySelector('#status').className,
    rows, totals,
    points: JSON.parse(spark.dataset.points),
    polyline: (spark.querySelector('polyline') || {getAttribute: () => ''}).getAttribute('points') || '',
    note: document.querySelector('#spark-note').textContent,
    text: document.body.innerText,
  };
})()"#;

/// The page's rows equal `want` exactly, in its data and in the text a person reads.
fn page_matches(page: &Value, want: &BTreeMap<&str, BTreeMap<&str, u64>>) -> bool {
    want.iter().all(|(domain, fields)| {
        fields.iter().all(|(k, v)| {
            let cell = &page["rows"][domain][k];
            cell["v"].as_u64() == Some(*v) && cell["text"] == grouped(*v)
        })
    })
}

fn polls(browser: &mut Browser) -> u64 {
    browser
        .eval("Number(document.body.dataset.polls || 0)")
        .as_u64()
        .unwrap()
}

/// Waits until the page has polled `n` more times.
fn wait_polls(browser: &mut Browser, n: u64) {
    let target = polls(browser) + n;
    let (ok, got) =
        browser.eval_until("Number(document.body.dataset.polls || 0)", PAGE_WAIT, |v| {
            v.as_u64().unwrap_or(0) >= target
        });
    assert!(
        ok,
        "the page stopped polling: {got} polls, expected {target}"
    );
}

#[test]
fn dashboard_renders_live_stats_in_headless_chromium() {
    let version = require_chromium();
    let rig = Rig::plain(reply);
    let nexus = &rig.nexus;

    // Known traffic before the page opens.
    let mut calls = Vec::new();
    let mut n = 0;
    for (domain, count) in [(RED, 5), (BLUE, 3), (CI, 2)] {
        for _ in 0..count {
            calls.push(call(n, domain));
            n += 1;
        }
    }
    for c in &calls {
        send(nexus, c);
    }
    let stats = wait_for_requests(nexus, calls.len() as u64);
    let want = expected(&calls);
    for (domain, fields) in &want {
        for (k, v) in fields {
            assert_eq!(
                stats["stats"][domain][k].as_u64(),
                Some(*v),
                "{domain} {k}: {stats}"
            );
        }
    }

    let started = Instant::now();
    let mut browser = Browser::launch(WIDTH, HEIGHT);
    let url = format!("{}/dashboard?interval={POLL_MS}", nexus.url());
    browser.goto(&url);
    let (ok, page) = browser.eval_until(READ_PAGE, PAGE_WAIT, |p| page_matches(p, &want));
    assert!(
        ok,
        "{version}: the dashboard never showed the /token-stats figures {want:?}\npage: {page:#}"
    );
    assert_eq!(page["status"], "ok", "{page:#}");
    assert_eq!(
        page["clientsHidden"], true,
        "no named clients, no client table"
    );

    // Totals, as cards.
    let total = |k: &str| want.values().map(|d| d[k]).sum::<u64>();
    for k in [
        "requestCount",
        "inputTokens",
        "outputTokens",
        "cacheCreationInputTokens",
        "cacheReadInputTokens",
        "toolCallCount",
    ] {
        assert_eq!(
            page["totals"][k]["v"].as_u64(),
            Some(total(k)),
            "total {k}: {page:#}"
        );
        assert_eq!(page["totals"][k]["text"], grouped(total(k)), "total {k}");
        assert!(page["text"].as_str().unwrap().contains(&grouped(total(k))));
    }

    // Cost: a card with the sum, a column per domain, both from /token-stats' costUsd.
    let cost = |d: &str| stats["stats"][d]["costUsd"].as_f64().unwrap();
    let cost_total: f64 = [RED, BLUE, CI].iter().map(|d| cost(d)).sum();
    assert!(cost_total > 0.0, "{stats}");
    assert!(
        (page["totals"]["costUsd"]["v"].as_f64().unwrap() - cost_total).abs() < 1e-9,
        "cost card: {page:#}"
    );
    assert!(page["totals"]["costUsd"]["text"]
        .as_str()
        .unwrap()
        .starts_with('$'));
    for d in [RED, BLUE, CI] {
        let cell = &page["rows"][d]["costUsd"];
        assert_eq!(cell["v"].as_f64(), Some(cost(d)), "{d}: {cell}");
        assert!(cell["text"].as_str().unwrap().starts_with('$'), "{cell}");
    }

    // Rate-limit headroom: the API's figures for one domain, the plan's for another.
    let red = &page["rows"][RED]["rateLimit"];
    assert_eq!(red["requests"]["remaining"], "3990", "{red:#}");
    assert_eq!(red["requests"]["limit"], "4000");
    assert!(red["requests"]["text"]
        .as_str()
        .unwrap()
        .starts_with("3,990 / 4,000"));
    assert_eq!(red["outputTokens"]["remaining"], "6000");
    assert!(
        red["tokens"]["text"]
            .as_str()
            .unwrap()
            .contains("resets in"),
        "{red:#}"
    );
    let blue = &page["rows"][BLUE]["rateLimit"];
    assert_eq!(blue["unified5h"]["utilization"], "0.42", "{blue:#}");
    assert!(blue["unified5h"]["text"]
        .as_str()
        .unwrap()
        .starts_with("58% left"));
    assert!(blue["unified7d"]["text"]
        .as_str()
        .unwrap()
        .starts_with("13% left"));
    assert_eq!(blue["unifiedStatus"]["text"], "allowed warning");
    assert!(page["rows"][CI]["text"]
        .as_str()
        .unwrap()
        .contains("no rate-limit headers seen"));

    // Live: traffic while the page is open, in rounds a poll apart, shows up in the
    // sparkline as per-interval deltas that add up to exactly what was sent.
    let mut live = Vec::new();
    for (round, size) in [3u64, 7, 2, 9, 5, 1, 6].into_iter().enumerate() {
        wait_polls(&mut browser, 1);
        for i in 0..size {
            let domain = if (round as u64 + i).is_multiple_of(3) {
                BLUE
            } else {
                RED
            };
            let c = call(n, domain);
            n += 1;
            send(nexus, &c);
            live.push(c);
        }
        wait_for_requests(nexus, (calls.len() + live.len()) as u64);
    }
    wait_polls(&mut browser, 2);
    calls.extend_from_slice(&live);
    let want = expected(&calls);
    let (ok, page) = browser.eval_until(READ_PAGE, PAGE_WAIT, |p| page_matches(p, &want));
    assert!(
        ok,
        "the page did not follow the new traffic: {want:?}\n{page:#}"
    );
    let points = page["points"].as_array().unwrap();
    let sent = all_tokens(&live);
    let seen: u64 = points.iter().map(|p| p["delta"].as_u64().unwrap()).sum();
    assert_eq!(
        seen, sent,
        "sparkline deltas must add up to the tokens sent while the page was open: {points:?}"
    );
    let busy = points
        .iter()
        .filter(|p| p["delta"].as_u64() > Some(0))
        .count();
    assert!(busy >= 5, "traffic in several intervals: {points:?}");
    let peak = points
        .iter()
        .map(|p| p["delta"].as_f64().unwrap() * 60_000.0 / p["dt"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        page["note"]
            .as_str()
            .unwrap()
            .contains(&format!("peak {}", grouped(peak.round() as u64))),
        "peak {peak} tokens/min: {}",
        page["note"]
    );
    let polyline = page["polyline"].as_str().unwrap();
    assert!(polyline.split(' ').count() >= points.len(), "{polyline}");

    // Nothing but nexus itself was asked for anything.
    let origin = format!("{}/", nexus.url());
    let urls = browser.requested_urls();
    assert!(urls.iter().any(|u| u.ends_with("/token-stats")), "{urls:?}");
    for u in &urls {
        assert!(
            u.starts_with(&origin),
            "the page fetched {u}; it must be self-contained"
        );
    }

    // A screenshot for the docs (and for a person to look at).
    let png = browser.screenshot_png();
    assert_eq!(png_size(&png), (WIDTH, HEIGHT));
    assert!(png.len() > 10_000, "a blank page? {} bytes", png.len());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).unwrap();
    if std::env::var_os("NEXUS_UPDATE_SCREENSHOTS").is_some() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dashboard.png");
        std::fs::write(docs, &png).unwrap();
    }
    eprintln!(
        "dashboard test: {} requests, {} polls, {:.1}s in the browser; screenshot {} ({} bytes)",
        calls.len(),
        page["polls"],
        started.elapsed().as_secs_f64(),
        out.display(),
        png.len()
    );
}

#[test]
fn dashboard_is_one_self_contained_page() {
    let nexus = Nexus::builder().upstream("http://127.0.0.1:9").start();
    let response = nexus.request(&Request::get("/dashboard"));
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = response.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = response.text();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("/token-stats"));
    // Its scripts are nexus's own, served beside it; nothing else is loaded.
    let scripts = [
        "page.js",
        "history.js",
        "conversation.js",
        "request.js",
        "clients.js",
    ];
    let mut own = html.clone();
    for name in scripts {
        let tag = format!("<script src=\"/dashboard/{name}\"></script>");
        assert!(own.contains(&tag), "{tag} missing");
        own = own.replace(&tag, "");
    }
    for external in ["<link", " src=", "@import", "url(", "https://", "//cdn"] {
        assert!(
            !own.contains(external),
            "the page references an external asset: {external}"
        );
    }
    for name in scripts {
        let script = nexus.request(&Request::get(&format!("/dashboard/{name}")));
        assert_eq!(script.status, 200, "{name}");
        assert_eq!(
            script.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        let text = script.text();
        assert!(text.contains("\"use strict\";"), "{name}");
        for external in [
            "import(",
            "importScripts",
            "https://",
            "//cdn",
            ".innerHTML",
            "eval(",
        ] {
            assert!(!text.contains(external), "{name} has {external}");
        }
    }
    let missing = nexus.request(&Request::get("/dashboard/other.js"));
    assert_anthropic_error(&missing, 404, "not_found_error");

    let mut client = nexus.client();
    let head = client.request(&Request::new("HEAD", "/dashboard"));
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(html.len().to_string().as_str())
    );
    let post = nexus.request(&Request::post("/dashboard").body("x"));
    assert_anthropic_error(&post, 405, "invalid_request_error");
}

#[test]
fn dashboard_shows_each_pool_member_and_its_state() {
    let version = require_chromium();
    const DOMAIN: &str = "pool.example.com";
    let pool = json!({"type": "pool", "credentials": [
        {"id": "a", "type": "api_key", "api_key": "sk-ant-api03-member-a"},
        {"id": "b", "type": "api_key", "api_key": "sk-ant-api03-member-b"}
    ]});
    let rig = Rig::start(
        Upstream::Plain,
        |request| match request.headers.get("x-api-key") {
            Some("sk-ant-api03-member-a") => MockReply::json(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            )
            .header("retry-after", "600"),
            _ => MockReply::json(200, common::fixtures::MESSAGE_TEXT_JSON),
        },
        |n| n.credential(DOMAIN, &pool.to_string()),
    );
    // The first new conversation goes to a, which rests; b serves it.
    let response = rig.nexus.request(
        &Request::post("/v1/messages")
            .host(DOMAIN)
            .header("anthropic-version", "2023-06-01")
            .json(r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[]}"#),
    );
    assert_eq!(response.status, 200, "{}", response.text());

    let mut browser = Browser::launch(WIDTH, HEIGHT);
    browser.goto(&format!("{}/dashboard?interval={POLL_MS}", rig.nexus.url()));
    let read = r#"Object.fromEntries([...document.querySelectorAll('[data-member]')]
        .map((e) => [e.dataset.member, e.dataset.state]))"#;
    let want = json!({"a": "cooling", "b": "ready"});
    let (ok, members) = browser.eval_until(read, PAGE_WAIT, |v| v == &want);
    assert!(
        ok,
        "{version}: the page shows members {members}, not {want}"
    );
}

/// The client table, read out of the page's DOM: per client its figures (`data-v`, and
/// `data-max` for in flight) and per budget its `data-*` figures, text and marking.
const READ_CLIENTS: &str = r#"(() => {
  const panel = document.querySelector('#clients-panel');
  if (!panel) return {loading: location.href};
  const rows = {};
  for (const tr of document.querySelectorAll('#clients tr[data-client]')) {
    const r = {over: tr.classList.contains('over'), cells: {}, budgets: {}};
    for (const td of tr.querySelectorAll('td[data-k]'))
      r.cells[td.dataset.k] = {v: Number(td.dataset.v), max: td.dataset.max,
        text: td.firstChild.textContent.trim()};
    for (const b of tr.querySelectorAll('[data-budget]'))
      r.budgets[b.dataset.budget] = {spent: Number(b.dataset.spent), limit: Number(b.dataset.limit),
        resets: b.dataset.resets, over: b.classList.contains('over'),
        barMarked: b.previousElementSibling.classList.contains('bad'),
        color: getComputedStyle(b).color, text: b.textContent};
    rows[tr.dataset.client] = r;
  }
  return {hidden: panel.hidden, rows};
})()"#;

#[test]
fn dashboard_shows_named_clients_with_budget_bars_marking_a_spent_one() {
    let version = require_chromium();
    const FRUGAL_KEY: &str = "nx-frugal-0123456789";
    const STEADY_KEY: &str = "nx-steady-0123456789";
    // frugal's budgets are smaller than one request; steady's are far from spent.
    let clients = ClientsFile::new(json!([
        {"name": "frugal", "key": FRUGAL_KEY,
         "budget": {"usd": {"day": 0.0001}, "tokens": {"5h": 100}}},
        {"name": "steady", "key": STEADY_KEY, "maxConcurrent": 4,
         "budget": {"usd": {"month": 60}, "tokens": {"week": 20_000_000}}}
    ]));
    let path = clients.path.clone();
    let rig = Rig::start(Upstream::Plain, reply, |n| {
        n.api_key("sk-ant-api03-nexus-own")
            .env("CLIENTS_FILE", path)
    });
    let nexus = &rig.nexus;
    let sent = [
        (FRUGAL_KEY, call(0, CI)),
        (STEADY_KEY, call(1, CI)),
        (STEADY_KEY, call(2, CI)),
    ];
    for (key, c) in &sent {
        let response = nexus.request(&call_request(c, key));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let stats = wait_for_requests(nexus, sent.len() as u64);
    let refused = nexus.request(&call_request(&call(3, CI), FRUGAL_KEY));
    assert_eq!(refused.status, 429, "frugal's budget is spent");
    let stats_clients = &stats["clients"];
    assert_eq!(stats_clients["frugal"]["requestCount"], 1, "{stats:#}");
    assert_eq!(stats_clients["steady"]["requestCount"], 2, "{stats:#}");

    let mut browser = Browser::launch(WIDTH, HEIGHT);
    browser.goto(&format!("{}/dashboard?interval={POLL_MS}", nexus.url()));
    let (ok, page) = browser.eval_until(READ_CLIENTS, PAGE_WAIT, |p| {
        ["frugal", "steady"].iter().all(|name| {
            p["rows"][name]["cells"]["requestCount"]["v"] == stats_clients[name]["requestCount"]
        })
    });
    assert!(
        ok,
        "{version}: the client table never showed /token-stats' clients {stats_clients:#}\npage: {page:#}"
    );
    assert_eq!(page["hidden"], false, "{page:#}");

    for name in ["frugal", "steady"] {
        let want = &stats_clients[name];
        let row = &page["rows"][name];
        let cells = &row["cells"];
        let tokens: u64 = [
            "inputTokens",
            "outputTokens",
            "cacheCreationInputTokens",
            "cacheReadInputTokens",
        ]
        .iter()
        .map(|k| want[k].as_u64().unwrap())
        .sum();
        assert_eq!(
            cells["tokens"]["v"].as_u64(),
            Some(tokens),
            "{name}: {row:#}"
        );
        assert_eq!(cells["tokens"]["text"], grouped(tokens), "{name}: {row:#}");
        assert_eq!(cells["costUsd"]["v"], want["costUsd"], "{name}: {row:#}");
        assert!(cells["costUsd"]["text"].as_str().unwrap().starts_with('$'));
        assert_eq!(cells["inFlight"]["v"], want["inFlight"], "{name}: {row:#}");
        let max = want["maxConcurrent"].as_u64().map(|m| m.to_string());
        assert_eq!(cells["inFlight"]["max"], max.clone().unwrap_or_default());
        if let Some(max) = max {
            assert_eq!(cells["inFlight"]["text"], format!("0 / {max}"), "{row:#}");
        }

        let budgets = want["budgets"].as_array().unwrap();
        assert_eq!(
            row["budgets"].as_object().unwrap().len(),
            budgets.len(),
            "{name}: a bar per budget, {row:#}"
        );
        for b in budgets {
            let id = format!(
                "{}/{}",
                b["kind"].as_str().unwrap(),
                b["window"].as_str().unwrap()
            );
            let bar = &row["budgets"][&id];
            let what = format!("{name} {id}: {bar:#}");
            assert_eq!(bar["spent"].as_f64(), b["spent"].as_f64(), "{what}");
            assert_eq!(bar["limit"].as_f64(), b["limit"].as_f64(), "{what}");
            assert_eq!(bar["resets"], b["resetsAt"], "{what}");
            let text = bar["text"].as_str().unwrap();
            if b["kind"] == "tokens" {
                let figures = format!(
                    "{} / {}",
                    grouped(b["spent"].as_u64().unwrap()),
                    grouped(b["limit"].as_u64().unwrap())
                );
                assert!(text.starts_with(&figures), "{what}");
            } else {
                assert!(text.starts_with('$') && text.contains(" / $"), "{what}");
            }
            assert!(text.contains("resets in"), "{what}");
            let spent = b["spent"].as_f64() >= b["limit"].as_f64();
            assert_eq!(spent, name == "frugal", "the test's budgets: {what}");
            assert_eq!(bar["over"], spent, "marked over exactly when spent: {what}");
            assert_eq!(bar["barMarked"], spent, "{what}");
            if spent {
                assert_eq!(bar["color"], "rgb(248, 81, 73)", "red: {what}");
            }
        }
        assert_eq!(row["over"], name == "frugal", "{name}: {row:#}");
    }
    // For a person to look at.
    browser.eval("document.querySelector('#clients-panel').scrollIntoView()");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-clients.png");
    std::fs::write(&out, browser.screenshot_png()).unwrap();
}
