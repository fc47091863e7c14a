//! The ledger's shared scenario: a mix of requests over two domains whose rows are known
//! field by field — a stream, a JSON answer, an upstream error, a stream the upstream
//! breaks off, and an error nexus answers itself — and how to read them back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::Request;
use super::mock::{MockReply, MockUpstream, Recorded};
use super::nexus::Nexus;
use super::scenarios::messages_request;

pub const DOMAIN_A: &str = "alpha.example.com";
pub const DOMAIN_B: &str = "beta.example.com";
pub const MODEL: &str = "claude-sonnet-4-5-20250929";

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The events of a streamed answer with usage `[input, output, cache write, cache read]`
/// and one tool call; `complete: false` leaves out everything after the first two.
fn stream_events(usage: [u64; 4], complete: bool) -> Vec<String> {
    let [input, output, cache_creation, cache_read] = usage;
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": MODEL, "content": [], "stop_reason": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": cache_creation,
                      "cache_read_input_tokens": cache_read, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    if !complete {
        return events;
    }
    events.extend([
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "The answer is 42."}}),
        ),
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}}),
        ),
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": output}}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ]);
    events
}

const STREAM_USAGE: [u64; 4] = [10, 20, 3, 400];

/// What usage `[input, output, cache write, cache read]` costs at Claude Sonnet 4.5's
/// prices ($3, $15, $3.75 and $0.30 per million tokens; no 1-hour writes, no long
/// context), in picodollars.
fn sonnet_picos([input, output, write, read]: [u64; 4]) -> u64 {
    input * 3_000_000 + output * 15_000_000 + write * 3_750_000 + read * 300_000
}

/// The ledger's `costUsd` for that many picodollars: the number nearest the exact amount.
fn usd(picos: u64) -> f64 {
    let (whole, fraction) = (picos / 1_000_000_000_000, picos % 1_000_000_000_000);
    format!("{whole}.{fraction:012}").parse().unwrap()
}
const JSON_USAGE: [u64; 4] = [5, 7, 0, 0];
// The stream breaks off after message_start, whose output count is 1.
const ABORT_USAGE: [u64; 4] = [8, 1, 0, 0];

fn json_answer() -> String {
    let [input, output, cache_creation, cache_read] = JSON_USAGE;
    json!({"id": "msg_2", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": "Bonjour."}], "stop_reason": "end_turn",
        "usage": {"input_tokens": input, "output_tokens": output,
                  "cache_creation_input_tokens": cache_creation, "cache_read_input_tokens": cache_read}})
    .to_string()
}

const ERROR_ANSWER: &str =
    r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;

/// The mock upstream of the scenario: the reply is chosen by the body's `metadata.user_id`
/// (its part before the first `/`).
pub fn mock() -> MockUpstream {
    MockUpstream::start(reply)
}

fn reply(request: &Recorded) -> MockReply {
    let tag = request.json()["metadata"]["user_id"]
        .as_str()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    match tag.as_str() {
        "stream" => MockReply::sse(stream_events(STREAM_USAGE, true)),
        "json" => MockReply::json(200, json_answer()),
        "error" => MockReply::json(429, ERROR_ANSWER),
        "abort" => {
            // A chunked stream that stops after two events: the upstream went away.
            let events: String = stream_events(ABORT_USAGE, false).concat();
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            MockReply::raw(format!("{head}{:x}\r\n{events}\r\n", events.len()))
        }
        other => panic!("the ledger mock has no reply for {other:?}"),
    }
}

/// One request of the scenario and the row it must leave.
pub struct Sent {
    pub id: String,
    /// Every field of its `/api/requests` object that can be known exactly.
    pub row: Value,
}

fn body(tag: &str, stream: bool, system: bool, run: &str) -> String {
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "metadata": {"user_id": format!("{tag}/{run}")},
        "messages": [{"role": "user", "content": format!("What is six times seven? ({tag})")}]});
    if stream {
        body["stream"] = json!(true);
    }
    if system {
        body["system"] = json!("Be brief.");
    }
    body.to_string()
}

fn tokens(usage: [u64; 4], tool_calls: u64) -> Value {
    json!({"inputTokens": usage[0], "outputTokens": usage[1],
        "cacheCreationInputTokens": usage[2], "cacheReadInputTokens": usage[3],
        "toolCallCount": tool_calls})
}

fn merge(mut a: Value, b: Value) -> Value {
    for (k, v) in b.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// Sends the scenario's five requests; `run` tells runs apart (it is part of each session).
pub fn traffic(nexus: &Nexus, run: &str) -> Vec<Sent> {
    let mut sent = Vec::new();
    let common = |domain: &str| {
        json!({"domain": domain, "client": null, "credential": "default", "method": "POST",
            "path": "/v1/messages"})
    };
    let mut send = |request: Request, status: u16, row: Value| {
        let response = nexus.request(&request);
        assert_eq!(response.status, status, "{}", response.text());
        let id = response
            .header("x-nexus-request-id")
            .expect("x-nexus-request-id")
            .to_string();
        let row = merge(row, json!({"id": id}));
        sent.push(Sent { id, row });
        response
    };

    let stream_body = body("stream", true, true, run);
    let session = format!("session-{run}");
    let events = stream_events(STREAM_USAGE, true).concat();
    let response = send(
        messages_request(stream_body.clone())
            .host(DOMAIN_A)
            .header("x-claude-code-session-id", &session),
        200,
        merge(
            merge(common(DOMAIN_A), tokens(STREAM_USAGE, 1)),
            json!({"model": MODEL, "stream": true, "status": 200, "sessionId": session,
                "costUsd": usd(sonnet_picos(STREAM_USAGE)),
                "requestClass": "query_evaluation", "bytesIn": stream_body.len(),
                "bytesOut": events.len(), "error": null}),
        ),
    );
    assert!(response.text().contains("The answer is 42."));

    let json_body = body("json", false, false, run);
    send(
        messages_request(json_body.clone()).host(DOMAIN_B),
        200,
        merge(
            merge(common(DOMAIN_B), tokens(JSON_USAGE, 0)),
            json!({"model": MODEL, "stream": false, "status": 200,
                "costUsd": usd(sonnet_picos(JSON_USAGE)),
                "sessionId": format!("json/{run}"), "requestClass": "none",
                "bytesIn": json_body.len(), "bytesOut": json_answer().len(), "error": null}),
        ),
    );

    let error_body = body("error", false, false, run);
    send(
        messages_request(error_body.clone()).host(DOMAIN_A),
        429,
        merge(
            merge(common(DOMAIN_A), tokens([0; 4], 0)),
            // A priced model with no tokens used costs nothing.
            json!({"model": "claude-sonnet-4-5", "stream": false, "status": 429, "costUsd": 0.0,
                "sessionId": format!("error/{run}"), "requestClass": "none",
                "bytesIn": error_body.len(), "bytesOut": ERROR_ANSWER.len(),
                "error": "rate_limit_error"}),
        ),
    );

    let abort_body = body("abort", true, false, run);
    let aborted_events = stream_events(ABORT_USAGE, false).concat();
    let response = send(
        messages_request(abort_body.clone()).host(DOMAIN_B),
        200,
        merge(
            merge(common(DOMAIN_B), tokens(ABORT_USAGE, 0)),
            json!({"model": MODEL, "stream": true, "status": 200,
                "costUsd": usd(sonnet_picos(ABORT_USAGE)),
                "sessionId": format!("abort/{run}"), "requestClass": "none",
                "bytesIn": abort_body.len(), "bytesOut": aborted_events.len(),
                "error": "the response ended early"}),
        ),
    );
    assert!(response.text().contains("upstream connection lost"));

    // Over the API's 32 MiB limit: nexus answers 413 itself, before any upstream contact.
    send(
        Request::post("/v1/messages")
            .host(DOMAIN_A)
            .header("x-api-key", super::scenarios::CLIENT_KEY)
            .header("content-length", "40000000")
            .body(Vec::new()),
        413,
        merge(
            merge(common(DOMAIN_A), tokens([0; 4], 0)),
            // No model and no tokens: nothing to price, and nothing billed.
            json!({"model": null, "stream": false, "status": 413, "sessionId": null, "costUsd": 0.0,
                "requestClass": null, "bytesIn": 40_000_000, "bytesOut": 0,
                "error": "request body over 33554432 bytes"}),
        ),
    );
    sent
}

/// What `/api/usage` must say, per domain, for `runs` runs of [`traffic`]:
/// `(domain, requests, [input, output, cache write, cache read])`.
pub fn expected_usage(runs: u64) -> Vec<(&'static str, u64, [u64; 4])> {
    let sum = |parts: &[[u64; 4]]| {
        let mut total = [0; 4];
        for p in parts {
            for i in 0..4 {
                total[i] += p[i] * runs;
            }
        }
        total
    };
    vec![
        (DOMAIN_A, 3 * runs, sum(&[STREAM_USAGE])),
        (DOMAIN_B, 2 * runs, sum(&[JSON_USAGE, ABORT_USAGE])),
    ]
}

/// `GET path` (with the admin key, when given) → (status, JSON).
pub fn api(nexus: &Nexus, path: &str, admin_key: Option<&str>) -> (u16, Value) {
    let mut request = Request::get(path);
    if let Some(key) = admin_key {
        request = request.header("authorization", &format!("Bearer {key}"));
    }
    let response = nexus.request(&request);
    (response.status, response.json())
}

/// Waits until `nexus_ledger_rows_total` reaches `rows`; returns how long it took.
pub fn wait_for_rows(nexus: &Nexus, rows: u64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let written = nexus.metric("nexus_ledger_rows_total") as u64;
        if written >= rows {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{written} of {rows} ledger rows written after {within:?}\n{}",
            nexus.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks every sent request's row in `/api/requests` field by field, the newest first.
pub fn assert_rows(nexus: &Nexus, sent: &[Sent], since_ms: u64) {
    let (status, listed) = api(nexus, "/api/requests?limit=1000", None);
    assert_eq!(status, 200, "{listed}");
    let rows = listed["requests"].as_array().unwrap();
    let stamps: Vec<&str> = rows
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(stamps, sorted, "newest first");
    for s in sent {
        let row = rows
            .iter()
            .find(|r| r["id"] == s.id.as_str())
            .unwrap_or_else(|| panic!("no row for {} in {listed}", s.id));
        for (key, want) in s.row.as_object().unwrap() {
            assert_eq!(&row[key], want, "{key} of {}: {row}", s.id);
        }
        let at = nexus_ms(row["timestamp"].as_str().unwrap());
        assert!(at >= since_ms.saturating_sub(1000), "timestamp {row}");
        assert!(row["durationMs"].as_u64().is_some(), "{row}");
        // The same object, alone.
        let (status, one) = api(nexus, &format!("/api/requests/{}", s.id), None);
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["status"], row["status"]);
        assert_eq!(one["id"], row["id"]);
    }
}

/// ms since the epoch of an ISO 8601 time the API wrote (`2026-01-02T03:04:05.678Z`).
pub fn nexus_ms(iso: &str) -> u64 {
    let t = humantime::parse_rfc3339(iso).unwrap_or_else(|e| panic!("{iso}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Checks `/api/usage?group=domain` (over all time) against [`expected_usage`].
pub fn assert_usage(nexus: &Nexus, runs: u64) {
    let (status, usage) = api(
        nexus,
        "/api/usage?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&group=domain",
        None,
    );
    assert_eq!(status, 200, "{usage}");
    let lines = usage["usage"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{usage}");
    for (domain, requests, [input, output, cache_creation, cache_read]) in expected_usage(runs) {
        let line = lines
            .iter()
            .find(|l| l["key"] == domain)
            .unwrap_or_else(|| panic!("no usage line for {domain}: {usage}"));
        let mut line = line.clone();
        let cost = line["costUsd"].take();
        assert_eq!(
            line,
            json!({"key": domain, "requestCount": requests, "inputTokens": input,
                "outputTokens": output, "cacheCreationInputTokens": cache_creation,
                "cacheReadInputTokens": cache_read, "costUsd": null}),
        );
        // Every request here is at Sonnet 4.5's prices, so the cost follows the tokens,
        // exactly: the database sums integer picodollars.
        let want = usd(sonnet_picos([input, output, cache_creation, cache_read]));
        assert_eq!(cost, json!(want), "costUsd of {domain}");
    }
}

/// `/api/usage?group=day&split=domain` splits today's line by domain with the same sums
/// as [`expected_usage`]; `/api/requests` with `from`/`to` keeps to the range.
pub fn assert_split_and_range(nexus: &Nexus, runs: u64, sent: &[Sent]) {
    let (status, usage) = api(nexus, "/api/usage?group=day&split=domain", None);
    assert_eq!(status, 200, "{usage}");
    let lines = usage["usage"].as_array().unwrap();
    let today = &now_iso()[..10];
    for (domain, requests, [input, output, cache_creation, cache_read]) in expected_usage(runs) {
        let line = lines
            .iter()
            .find(|l| l["split"] == domain)
            .unwrap_or_else(|| panic!("no line split for {domain}: {usage}"));
        assert_eq!(line["key"], today, "{usage}");
        for (field, want) in [
            ("requestCount", requests),
            ("inputTokens", input),
            ("outputTokens", output),
            ("cacheCreationInputTokens", cache_creation),
            ("cacheReadInputTokens", cache_read),
        ] {
            assert_eq!(line[field], want, "{field} of {domain}: {usage}");
        }
    }
    // The rows from the second of `sent` on: `from` is inclusive, `to` exclusive.
    let (_, listed) = api(nexus, "/api/requests?limit=1000", None);
    let rows = listed["requests"].as_array().unwrap();
    let stamp = |id: &str| {
        let row = rows.iter().find(|r| r["id"] == id).unwrap();
        row["timestamp"].as_str().unwrap().to_string()
    };
    let (first, second) = (stamp(&sent[0].id), stamp(&sent[1].id));
    let (_, from) = api(
        nexus,
        &format!("/api/requests?limit=1000&from={second}"),
        None,
    );
    let from: Vec<&Value> = from["requests"].as_array().unwrap().iter().collect();
    assert!(from
        .iter()
        .all(|r| r["timestamp"].as_str() >= Some(&second)));
    assert!(from.iter().any(|r| r["id"] == sent[1].id.as_str()));
    if first < second {
        assert!(!from.iter().any(|r| r["id"] == sent[0].id.as_str()));
    }
    let (_, to) = api(nexus, &format!("/api/requests?limit=1000&to={first}"), None);
    assert!(
        !to["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == sent[0].id.as_str()),
        "to is exclusive: {to}"
    );
    let (_, none) = api(nexus, "/api/requests?to=2000-01-01", None);
    assert_eq!(none["requests"], json!([]));
}

/// ms since the epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Now as the API writes times.
pub fn now_iso() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
