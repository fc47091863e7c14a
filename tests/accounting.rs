//! Usage accounting through the real binary: many concurrent streaming and non-streaming
//! requests over several domains and workers; `/token-stats` must add up exactly, and
//! `/metrics` (read with the official Prometheus Python parser) must say the same.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const DOMAINS: [&str; 3] = ["alpha.example.com", "beta.example.com", "gamma.example.com"];
const CLIENT_THREADS: usize = 20;
const REQUESTS_PER_THREAD: usize = 50;

/// What request `n` asks for and what the mock answers it with.
struct Plan {
    domain: &'static str,
    stream: bool,
    /// System prompts: 0 → neither, 1 → query evaluation, 2+ → inference.
    system_prompts: usize,
    /// input, output, cache creation, cache read.
    usage: [u64; 4],
    tool_calls: u64,
}

fn plan(n: u64) -> Plan {
    Plan {
        domain: DOMAINS[(n % 3) as usize],
        stream: n.is_multiple_of(2),
        system_prompts: (n % 4) as usize,
        usage: [100 + n, 1 + n * 7 % 97, n % 5 * 13, n % 7 * 1000],
        tool_calls: n % 3,
    }
}

/// A Messages request body for plan `n`, with decoys nested where a naive scan would
/// find `system`, `stream` and `model` keys.
fn request_body(n: u64, p: &Plan) -> String {
    let decoy_tool = json!({
        "name": "decoy",
        "description": "nested keys must not count",
        "input_schema": {"type": "object", "properties": {
            "system": {"type": "string"}, "stream": {"type": "boolean"}, "model": {"type": "string"}
        }}
    });
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "metadata": {"user_id": n.to_string()},
        "tools": [decoy_tool],
        "messages": [{"role": "user", "content": format!("request {n}: \"system\": \"x\", \"stream\": true")}],
    });
    if p.stream {
        body["stream"] = json!(true);
    }
    // Spread the prompts over `system` (string or array) and role:"system" messages.
    match p.system_prompts {
        0 => {}
        1 => body["system"] = json!("You are terse."),
        k => {
            body["system"] =
                json!([{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]);
            for _ in 1..k {
                body["messages"]
                    .as_array_mut()
                    .unwrap()
                    .insert(0, json!({"role": "system", "content": "more"}));
            }
        }
    }
    body.to_string()
}

fn sse_event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn reply(request: &Recorded) -> MockReply {
    let n: u64 = request.json()["metadata"]["user_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let p = plan(n);
    let [input, output, cache_creation, cache_read] = p.usage;
    let tool_block = |i: u64| json!({"type": "tool_use", "id": format!("toolu_{n}_{i}"), "name": "Read", "input": {}});
    if !p.stream {
        let mut content = vec![json!({"type": "text", "text": "done"})];
        content.extend((0..p.tool_calls).map(tool_block));
        let body = json!({
            "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": content, "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": cache_creation,
                      "cache_read_input_tokens": cache_read, "output_tokens": output},
        });
        return MockReply::json(200, body.to_string());
    }
    let mut events = vec![sse_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": cache_creation,
                      "cache_read_input_tokens": cache_read, "output_tokens": 1}}}),
    )];
    events.push(sse_event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    events.push(sse_event("ping", json!({"type": "ping"})));
    events.push(sse_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "done"}})));
    events.push(sse_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    for i in 0..p.tool_calls {
        let index = i + 1;
        events.push(sse_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": tool_block(i)}),
        ));
        events.push(sse_event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"a\"}"}})));
        events.push(sse_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    // Cumulative figures: an early partial output count, then the final one.
    events.push(sse_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output / 2}})));
    events.push(sse_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}})));
    events.push(sse_event("message_stop", json!({"type": "message_stop"})));
    MockReply::sse(events)
}

/// Per-domain figures as `/token-stats` names them.
fn expected_stats(total: u64) -> BTreeMap<&'static str, BTreeMap<&'static str, u64>> {
    let mut all: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for n in 0..total {
        let p = plan(n);
        let d = all.entry(p.domain).or_default();
        let mut add = |k: &'static str, v: u64| *d.entry(k).or_default() += v;
        add("requestCount", 1);
        add("inputTokens", p.usage[0]);
        add("outputTokens", p.usage[1]);
        add("cacheCreationInputTokens", p.usage[2]);
        add("cacheReadInputTokens", p.usage[3]);
        add("toolCallCount", p.tool_calls);
        add("queryEvaluationCount", (p.system_prompts == 1) as u64);
        add("inferenceCount", (p.system_prompts > 1) as u64);
        add("errorCount", 0);
    }
    all
}

fn token_stats(nexus: &Nexus) -> Value {
    let response = nexus.request(&Request::get("/token-stats"));
    assert_eq!(response.status, 200);
    response.json()
}

/// Polls until `/token-stats` has `total` requests (a request is recorded when its
/// response ends, which may be a moment after the client has read it).
fn wait_for_recorded(nexus: &Nexus, total: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = token_stats(nexus);
        let recorded: u64 = stats["stats"]
            .as_object()
            .unwrap()
            .values()
            .map(|d| d["requestCount"].as_u64().unwrap_or(0))
            .sum();
        if recorded >= total || Instant::now() > deadline {
            return stats;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn token_stats_add_up_exactly_under_concurrent_mixed_load() {
    let rig = Rig::start(Upstream::Plain, reply, |n| n.workers(2));
    let total = (CLIENT_THREADS * REQUESTS_PER_THREAD) as u64;

    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let nexus_client = rig.nexus.client();
            thread::spawn(move || {
                let mut client = nexus_client;
                for k in 0..REQUESTS_PER_THREAD {
                    let n = (t * REQUESTS_PER_THREAD + k) as u64;
                    let p = plan(n);
                    let request = messages_request(request_body(n, &p)).host(p.domain);
                    let response = client.request(&request);
                    assert_eq!(response.status, 200, "request {n}: {}", response.text());
                    if p.stream {
                        assert!(
                            response.text().contains("message_stop"),
                            "request {n} stream cut short"
                        );
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }

    let stats = wait_for_recorded(&rig.nexus, total);
    for (domain, fields) in expected_stats(total) {
        let got = &stats["stats"][domain];
        for (field, want) in fields {
            assert_eq!(got[field].as_u64(), Some(want), "{domain} {field}: {got}");
        }
        assert!(got["lastUpdated"].as_u64().unwrap() > 1_700_000_000_000);
    }

    metrics_agree_with_token_stats(&rig.nexus);
}

/// `/metrics` parsed by prometheus_client's own parser; every per-domain figure equals
/// the `/token-stats` one.
fn metrics_agree_with_token_stats(nexus: &Nexus) {
    let stats = token_stats(nexus);
    let metrics = nexus.request(&Request::get("/metrics"));
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .headers
        .get("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let samples = common::metrics::parse_with_prometheus_client(&metrics.text());

    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|s| {
                s["name"] == name
                    && labels.iter().all(|(k, v)| s["labels"][*k] == *v)
                    && s["labels"].as_object().unwrap().len() == labels.len()
            })
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    for (domain, d) in stats["stats"].as_object().unwrap() {
        let want = |field: &str| d[field].as_u64().unwrap() as f64;
        let dom = domain.as_str();
        assert_eq!(
            sample(
                "nexus_requests_total",
                &[("domain", dom), ("endpoint", "messages")]
            ),
            want("requestCount")
        );
        assert_eq!(
            sample("nexus_tokens_total", &[("domain", dom), ("kind", "input")]),
            want("inputTokens")
        );
        assert_eq!(
            sample("nexus_tokens_total", &[("domain", dom), ("kind", "output")]),
            want("outputTokens")
        );
        assert_eq!(
            sample(
                "nexus_tokens_total",
                &[("domain", dom), ("kind", "cache_creation")]
            ),
            want("cacheCreationInputTokens")
        );
        assert_eq!(
            sample(
                "nexus_tokens_total",
                &[("domain", dom), ("kind", "cache_read")]
            ),
            want("cacheReadInputTokens")
        );
        assert_eq!(
            sample("nexus_tool_calls_total", &[("domain", dom)]),
            want("toolCallCount")
        );
        assert_eq!(
            sample("nexus_query_evaluations_total", &[("domain", dom)]),
            want("queryEvaluationCount")
        );
        assert_eq!(
            sample("nexus_inferences_total", &[("domain", dom)]),
            want("inferenceCount")
        );
        assert_eq!(
            sample("nexus_errors_total", &[("domain", dom)]),
            want("errorCount")
        );
    }
    let requests: u64 = stats["stats"]
        .as_object()
        .unwrap()
        .values()
        .map(|d| d["requestCount"].as_u64().unwrap())
        .sum();
    assert!(sample("nexus_request_duration_seconds_count", &[]) >= requests as f64);
}

#[test]
fn non_json_bodies_are_forwarded_and_counted_unclassified() {
    let rig = Rig::plain(|_| {
        MockReply::json(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad json"}}"#,
        )
    });
    let response = rig
        .nexus
        .request(&messages_request("this is { not json").host("odd.example.com"));
    assert_eq!(response.status, 400);
    assert_eq!(rig.mock.single_request().body, b"this is { not json");
    let stats = wait_for_recorded(&rig.nexus, 1);
    let d = &stats["stats"]["odd.example.com"];
    assert_eq!(d["requestCount"], 1);
    assert_eq!(d["queryEvaluationCount"], 0);
    assert_eq!(d["inferenceCount"], 0);
    assert_eq!(d["errorCount"], 1);
}

#[test]
fn large_claude_code_like_body_is_classified() {
    let rig = Rig::plain(|_| {
        MockReply::json(
            200,
            r#"{"type":"message","content":[],"usage":{"input_tokens":5,"output_tokens":1}}"#,
        )
    });
    // ~2 MB: a system array of 3 cached blocks, 24 tools, a role:"system" message, and
    // a long conversation.
    let tools: Vec<Value> = (0..24)
        .map(|i| json!({"name": format!("tool{i}"), "input_schema": {"type": "object", "properties": {"system": {"type": "string"}}}}))
        .collect();
    let mut messages = vec![json!({"role": "system", "content": "extra system prompt"})];
    for i in 0..400 {
        messages.push(
            json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": "x".repeat(5000)}),
        );
    }
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": false,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Tools.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Context.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": tools,
        "messages": messages,
    })
    .to_string();
    assert!(body.len() > 2_000_000);
    let response = rig
        .nexus
        .request(&messages_request(body.clone()).host("cc.example.com"));
    assert_eq!(response.status, 200);
    assert_eq!(rig.mock.single_request().body.len(), body.len());
    let stats = wait_for_recorded(&rig.nexus, 1);
    let d = &stats["stats"]["cc.example.com"];
    assert_eq!(
        d["inferenceCount"], 1,
        "3 system blocks + 1 system message: {d}"
    );
    assert_eq!(d["inputTokens"], 5);
}

/// An upstream that compresses whenever the request allows it: nexus asks for identity on
/// metered requests, so the client gets bytes it can read and the usage is still exact.
#[test]
fn compressing_upstream_still_counts_exactly() {
    use std::io::Write;
    let rig = Rig::plain(|request| {
        let body = json!({"type": "message", "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 321, "output_tokens": 45, "cache_read_input_tokens": 6}})
        .to_string();
        let accepts_gzip = request
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.contains("gzip"));
        if !accepts_gzip {
            return MockReply::json(200, body);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body.as_bytes()).unwrap();
        MockReply::json(200, gz.finish().unwrap()).header("Content-Encoding", "gzip")
    });
    let request = messages_request(r#"{"model":"claude-sonnet-4-5","messages":[]}"#)
        .host("gz.example.com")
        .header("Accept-Encoding", "gzip, br");
    let response = rig.nexus.request(&request);
    assert_eq!(response.status, 200);
    assert_eq!(
        rig.mock.single_request().headers.get("accept-encoding"),
        Some("identity")
    );
    assert_eq!(
        response.json()["usage"]["input_tokens"],
        321,
        "the client can read what it got"
    );

    let stats = wait_for_recorded(&rig.nexus, 1);
    let d = &stats["stats"]["gz.example.com"];
    assert_eq!(
        (d["inputTokens"].as_u64(), d["outputTokens"].as_u64()),
        (Some(321), Some(45))
    );
    assert_eq!(d["cacheReadInputTokens"], 6);
}
