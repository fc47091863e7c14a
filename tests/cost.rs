//! Cost through the real binary: 1 000 concurrent mixed requests over 3 domains and 2
//! workers must add up, per domain, to exactly the sum of what each request cost (worked
//! out here from the published prices, independently of nexus's table code), in
//! `/token-stats` and in `/metrics`; and `NEXUS_PRICING_FILE` adds and replaces models,
//! or stops start-up naming the broken field.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ::nexus::cost::Usd;
use common::*;
use serde_json::{json, Value};

const DOMAINS: [&str; 3] = ["alpha.example.com", "beta.example.com", "gamma.example.com"];
const CLIENT_THREADS: usize = 20;
const REQUESTS_PER_THREAD: usize = 50;

/// Picodollars per token (= USD per million tokens × 10⁶): input, output, 5-minute cache
/// write, 1-hour cache write, cache read.
type Rates = [u128; 5];

struct Model {
    name: &'static str,
    base: Rates,
    long_context: Option<(u128, Rates)>,
}

const M: u128 = 1_000_000;
/// Published prices (platform.claude.com pricing page, 2026-12-07), written out here.
const MODELS: [Model; 5] = [
    Model {
        name: "claude-sonnet-4-5-20250929",
        base: [3 * M, 15 * M, 3_750_000, 6 * M, 300_000],
        long_context: Some((200_000, [6 * M, 22_500_000, 7_500_000, 12 * M, 600_000])),
    },
    Model {
        name: "claude-opus-4-1-20250805",
        base: [15 * M, 75 * M, 18_750_000, 30 * M, 1_500_000],
        long_context: None,
    },
    Model {
        name: "claude-haiku-4-5-20251001",
        base: [M, 5 * M, 1_250_000, 2 * M, 100_000],
        long_context: None,
    },
    Model {
        name: "claude-haiku-5-5",
        base: [100_000, 500_000, 125_000, 200_000, 10_000],
        long_context: Some((100_000, [500_000, 2_500_000, 625_000, M, 50_000])),
    },
    Model {
        name: "claude-nova-9-20270101",
        base: [0; 5],
        long_context: None,
    },
];
const UNKNOWN: usize = 4;
const PER_SEARCH: u128 = 10_000_000_000; // $10 per 1000

/// What request `n` asks for and what the mock answers it with.
struct Plan {
    domain: &'static str,
    stream: bool,
    model: usize,
    /// The response names its model (else nexus must price by the request's).
    response_names_model: bool,
    input: u64,
    output: u64,
    writes_5m: u64,
    writes_1h: u64,
    /// The response carries `usage.cache_creation` (else all writes are 5-minute).
    split: bool,
    reads: u64,
    searches: u64,
}

fn plan(n: u64) -> Plan {
    Plan {
        domain: DOMAINS[(n % 3) as usize],
        stream: n.is_multiple_of(2),
        model: (n / 3 % 5) as usize,
        response_names_model: n % 11 != 10,
        input: 100 + n,
        output: 1 + n * 7 % 97,
        writes_5m: n % 3 * 11,
        writes_1h: n % 5 * 13,
        split: n % 6 != 5,
        // Every tenth request is a long one: over both models' thresholds.
        reads: n % 7 * 1000 + if n % 10 == 9 { 200_000 } else { 0 },
        searches: if n.is_multiple_of(4) { n % 3 } else { 0 },
    }
}

/// What request `n` cost, in picodollars, or `None` when its model has no price.
fn expected_cost(p: &Plan) -> Option<u128> {
    if p.model == UNKNOWN {
        return None;
    }
    let model = &MODELS[p.model];
    let writes = u128::from(p.writes_5m + p.writes_1h);
    let prompt = u128::from(p.input + p.reads) + writes;
    let rates = match model.long_context {
        Some((above, rates)) if prompt > above => rates,
        _ => model.base,
    };
    let (w5, w1) = match p.split {
        true => (u128::from(p.writes_5m), u128::from(p.writes_1h)),
        false => (writes, 0),
    };
    Some(
        u128::from(p.input) * rates[0]
            + u128::from(p.output) * rates[1]
            + w5 * rates[2]
            + w1 * rates[3]
            + u128::from(p.reads) * rates[4]
            + u128::from(p.searches) * PER_SEARCH,
    )
}

fn request_body(n: u64, p: &Plan) -> String {
    json!({
        "model": MODELS[p.model].name.rsplit_once("-2").map_or(MODELS[p.model].name, |(m, _)| m),
        "max_tokens": 64,
        "stream": p.stream,
        "metadata": {"user_id": n.to_string()},
        "messages": [{"role": "user", "content": format!("request {n}")}],
    })
    .to_string()
}

fn usage_json(p: &Plan, output: u64) -> Value {
    let mut usage = json!({
        "input_tokens": p.input,
        "cache_creation_input_tokens": p.writes_5m + p.writes_1h,
        "cache_read_input_tokens": p.reads,
        "output_tokens": output,
    });
    if p.split {
        usage["cache_creation"] = json!({"ephemeral_5m_input_tokens": p.writes_5m,
                                         "ephemeral_1h_input_tokens": p.writes_1h});
    }
    if p.searches > 0 {
        usage["server_tool_use"] = json!({"web_search_requests": p.searches});
    }
    usage
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
    let model = match p.response_names_model {
        true => json!(MODELS[p.model].name),
        false => Value::Null,
    };
    if !p.stream {
        let mut body = json!({
            "id": format!("msg_{n}"), "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": usage_json(&p, p.output),
        });
        if p.response_names_model {
            body["model"] = model;
        }
        return MockReply::json(200, body.to_string());
    }
    let events = vec![
        sse_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "usage": usage_json(&p, 1)}}),
        ),
        sse_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "done"}}),
        ),
        sse_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        // Cumulative: a partial output count first, then the final one.
        sse_event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": null}, "usage": {"output_tokens": p.output / 2}}),
        ),
        sse_event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": p.output}}),
        ),
        sse_event("message_stop", json!({"type": "message_stop"})),
    ];
    MockReply::sse(events)
}

/// The raw text of `"costUsd"` in `domain`'s entry of a `/token-stats` body (read as
/// text: a JSON parser would round it through an f64).
fn raw_cost(body: &str, domain: &str) -> String {
    let entry = &body[body
        .find(&format!("\"{domain}\":{{"))
        .unwrap_or_else(|| panic!("no {domain} in {body}"))..];
    let at = entry.find("\"costUsd\":").expect("costUsd") + "\"costUsd\":".len();
    let end = entry[at..].find(['}', ',']).unwrap();
    entry[at..at + end].to_string()
}

fn wait_for_recorded(nexus: &Nexus, total: u64) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = nexus.request(&Request::get("/token-stats"));
        assert_eq!(response.status, 200);
        let text = response.text();
        let stats: Value = serde_json::from_str(&text).unwrap();
        let recorded: u64 = stats["stats"]
            .as_object()
            .unwrap()
            .values()
            .map(|d| d["requestCount"].as_u64().unwrap_or(0))
            .sum();
        if recorded >= total || Instant::now() > deadline {
            return (text, stats);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cost_per_domain_is_the_exact_sum_of_every_request_under_concurrent_load() {
    let rig = Rig::start(Upstream::Plain, reply, |n| n.workers(2));
    let total = (CLIENT_THREADS * REQUESTS_PER_THREAD) as u64;
    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let mut client = rig.nexus.client();
            thread::spawn(move || {
                for k in 0..REQUESTS_PER_THREAD {
                    let n = (t * REQUESTS_PER_THREAD + k) as u64;
                    let p = plan(n);
                    let request = messages_request(request_body(n, &p)).host(p.domain);
                    let response = client.request(&request);
                    assert_eq!(response.status, 200, "request {n}: {}", response.text());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }

    let mut want: BTreeMap<&str, (u128, u64)> = BTreeMap::new();
    for n in 0..total {
        let p = plan(n);
        let d = want.entry(p.domain).or_default();
        match expected_cost(&p) {
            Some(picos) => d.0 += picos,
            None => d.1 += 1,
        }
    }
    let (text, stats) = wait_for_recorded(&rig.nexus, total);
    let metrics = rig.nexus.request(&Request::get("/metrics")).text();
    for (domain, (picos, unpriced)) in want {
        let exact = Usd(picos).to_string();
        assert_eq!(raw_cost(&text, domain), exact, "{domain}: {text}");
        assert_eq!(
            stats["stats"][domain]["unpricedRequestCount"].as_u64(),
            Some(unpriced),
            "{domain}"
        );
        assert!(
            metrics.contains(&format!(
                "nexus_cost_usd_total{{domain=\"{domain}\"}} {exact}\n"
            )),
            "{domain} {exact}: {metrics}"
        );
        assert!(metrics.contains(&format!(
            "nexus_unpriced_requests_total{{domain=\"{domain}\"}} {unpriced}\n"
        )));
    }
}

const PRICE_FILE: &str = r#"{
  "date": "2027-01-01", "source": "our negotiated prices",
  "models": {
    "acme-coder-2": {"input": 2, "output": 8, "cacheWrite5m": 2.5, "cacheWrite1h": 4, "cacheRead": 0.2},
    "claude-haiku-4-5": {"input": 0.5, "output": 2.5, "cacheWrite5m": 0.625, "cacheWrite1h": 1, "cacheRead": 0.05}
  },
  "webSearchPerThousand": 5
}"#;

#[test]
fn a_pricing_file_adds_and_replaces_models() {
    let dir = TempDir::new("pricing");
    let file = dir.write("prices.json", PRICE_FILE.as_bytes());
    let rig = Rig::start(
        Upstream::Plain,
        |request| {
            let model = request.json()["model"].as_str().unwrap().to_string();
            MockReply::json(
                200,
                json!({"type": "message", "model": model, "content": [],
                    "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 10000,
                              "server_tool_use": {"web_search_requests": 1}}})
                .to_string(),
            )
        },
        |n| n.env("NEXUS_PRICING_FILE", &file),
    );
    for (domain, model) in [
        ("added.example", "acme-coder-2-20270101"),
        ("replaced.example", "claude-haiku-4-5-20251001"),
        ("builtin.example", "claude-opus-4-1"),
        ("unknown.example", "claude-nova-9"),
    ] {
        let body = json!({"model": model, "max_tokens": 8, "messages": []}).to_string();
        let response = rig.nexus.request(&messages_request(body).host(domain));
        assert_eq!(response.status, 200);
    }
    let (text, stats) = wait_for_recorded(&rig.nexus, 4);
    // 1000 × 2 + 100 × 8 + 10000 × 0.2 = 4800 µ$, plus a search at $5 per 1000.
    assert_eq!(raw_cost(&text, "added.example"), "0.0098");
    // 1000 × 0.5 + 100 × 2.5 + 10000 × 0.05 = 1250 µ$ (built in: 1000 + 500 + 1000).
    assert_eq!(raw_cost(&text, "replaced.example"), "0.00625");
    // Untouched built-in prices: 1000 × 15 + 100 × 75 + 10000 × 1.5 = 37500 µ$.
    assert_eq!(raw_cost(&text, "builtin.example"), "0.0425");
    assert_eq!(raw_cost(&text, "unknown.example"), "0");
    assert_eq!(stats["stats"]["unknown.example"]["unpricedRequestCount"], 1);
    assert_eq!(stats["stats"]["added.example"]["unpricedRequestCount"], 0);
}

#[test]
fn a_broken_pricing_file_stops_start_up_with_one_line_naming_it() {
    let dir = TempDir::new("pricing-broken");
    let broken = PRICE_FILE.replace("\"output\": 8", "\"output\": \"eight\"");
    let file = dir.write("prices.json", broken.as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["-p", "0", "-H", "127.0.0.1"])
        .env_clear()
        .env("NEXUS_PRICING_FILE", &file)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("running nexus");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("models.acme-coder-2.output"), "{stderr}");
    assert!(out.stdout.is_empty(), "never got to listening");
}
