//! Named clients with budgets (issue 21): who a request is, what it may use, and limits in
//! dollars, tokens and concurrency, enforced before anything reaches the upstream, kept
//! across a restart through the ledger, and reloaded as the clients file changes.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::fixtures::{stream_events, MESSAGE_TEXT_JSON};
use common::nexus::NexusBuilder;
use common::*;
use serde_json::{json, Value};

/// The fixture's usage at Sonnet 4.5's prices: 57 input, 11 cache-write, 1024
/// cache-read and 19 output tokens.
const FIXTURE_COST_USD: f64 = 0.000_804_45;
const FIXTURE_TOKENS: u64 = 57 + 11 + 1024 + 19;

fn rig(clients: &ClientsFile, configure: impl FnOnce(NexusBuilder) -> NexusBuilder) -> Rig {
    let path = clients.path.clone();
    Rig::start(
        Upstream::Plain,
        |req| {
            if req.json()["stream"] == true {
                MockReply::sse(stream_events())
            } else {
                MockReply::json(200, MESSAGE_TEXT_JSON)
            }
        },
        move |nexus| {
            configure(
                nexus
                    .api_key("sk-ant-api03-nexus-own")
                    .env("CLIENTS_FILE", path),
            )
        },
    )
}

fn messages(key: &str, model: &str) -> Request {
    Request::post("/v1/messages")
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(
            json!({"model": model, "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        )
}

fn error_type(response: &Response) -> String {
    let body: Value = serde_json::from_str(&response.text()).expect("a JSON error");
    body["error"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn get_json(nexus: &Nexus, target: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = Request::get(target);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = nexus.request(&request);
    let body = serde_json::from_str(&response.text()).unwrap_or(Value::Null);
    (response.status, body)
}

/// Waits (bounded) until `check` holds.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn seconds_to_utc_midnight() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    86_400 - now % 86_400
}

#[test]
fn a_spent_daily_dollar_budget_refuses_until_midnight_and_still_does_after_a_restart() {
    let clients = ClientsFile::new(json!([
        {"name": "alice", "key": "nx-alice", "budget": {"usd": {"day": 0.0005}}},
        {"name": "bob", "key": "nx-bob"}
    ]));
    let state = TempDir::new("ledger");
    let db = format!("sqlite:{}", state.path().join("nexus.db").display());
    let mut rig = rig(&clients, |n| n.env("NEXUS_DB", db.clone()));

    let first = rig
        .nexus
        .request(&messages("nx-alice", "claude-sonnet-4-5"));
    assert_eq!(first.status, 200, "{}", first.text());
    // Spend counts once the request has ended, just after its last byte went out.
    wait_for("alice's first request to be counted", || {
        get_json(&rig.nexus, "/api/me", Some("nx-alice")).1["requestCount"] == 1
    });
    let refused = rig
        .nexus
        .request(&messages("nx-alice", "claude-sonnet-4-5"));
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(error_type(&refused), "rate_limit_error");
    let text = refused.text();
    assert!(
        text.contains("client alice") && text.contains("the day (UTC)"),
        "{text}"
    );
    let retry: u64 = refused.headers.get("retry-after").unwrap().parse().unwrap();
    let midnight = seconds_to_utc_midnight();
    assert!(
        retry <= midnight && retry + 5 >= midnight,
        "retry-after {retry}, midnight in {midnight}"
    );
    assert_eq!(
        rig.mock.requests().len(),
        1,
        "nothing upstream for the refused request"
    );
    // Another client is unaffected, and its key never reaches the upstream.
    assert_eq!(
        rig.nexus
            .request(&messages("nx-bob", "claude-sonnet-4-5"))
            .status,
        200
    );
    let last = rig.mock.requests().last().unwrap().clone();
    assert_eq!(
        last.headers.get("x-api-key"),
        Some("sk-ant-api03-nexus-own")
    );

    // /api/clients (no admin key set: open) and /api/me show the spend.
    let (status, all) = get_json(&rig.nexus, "/api/clients", None);
    assert_eq!(status, 200);
    let alice = &all["clients"][0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["requestCount"], 1);
    assert_eq!(alice["costUsd"].as_f64(), Some(FIXTURE_COST_USD));
    assert!(alice.get("key").is_none() && !all.to_string().contains("nx-alice"));
    let (status, me) = get_json(&rig.nexus, "/api/me", Some("nx-bob"));
    assert_eq!((status, me["name"].as_str()), (200, Some("bob")));
    assert_eq!(get_json(&rig.nexus, "/api/me", Some("nx-nobody")).0, 401);
    assert_eq!(
        rig.nexus
            .metric("nexus_client_requests_total{client=\"alice\"}"),
        1.0
    );
    assert_eq!(
        rig.nexus
            .metric("nexus_client_tokens_total{client=\"alice\"}"),
        FIXTURE_TOKENS as f64
    );
    assert!(
        rig.nexus
            .metric("nexus_client_budget_used_ratio{client=\"alice\",kind=\"usd\",window=\"day\"}")
            >= 1.0
    );
    assert_eq!(
        rig.nexus.metric("nexus_client_in_flight{client=\"bob\"}"),
        0.0
    );
    let metrics = rig.nexus.request(&Request::get("/metrics")).text();
    assert!(!common::metrics::parse_with_prometheus_client(&metrics).is_empty());
    let (_, stats) = get_json(&rig.nexus, "/token-stats", None);
    assert_eq!(stats["clients"]["alice"]["inputTokens"], 57);
    assert_eq!(stats["clients"]["alice"]["budgets"][0]["window"], "day");

    // The ledger row names the client.
    wait_for("alice's row in the ledger", || {
        let (_, rows) = get_json(&rig.nexus, "/api/requests?client=alice", None);
        rows["requests"].as_array().is_some_and(|r| !r.is_empty())
    });

    // After a restart on the same ledger, what alice spent is read back: still refused.
    rig.nexus.terminate(Duration::from_secs(15));
    let path = clients.path.clone();
    let nexus = Nexus::builder()
        .upstream(&rig.mock.url())
        .api_key("sk-ant-api03-nexus-own")
        .env("CLIENTS_FILE", path)
        .env("NEXUS_DB", db)
        .start();
    wait_for("alice's spend read back from the ledger", || {
        let (_, me) = get_json(&nexus, "/api/me", Some("nx-alice"));
        me["budgets"][0]["spent"].as_f64().unwrap_or(0.0) > 0.0
    });
    let refused = nexus.request(&messages("nx-alice", "claude-sonnet-4-5"));
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(
        nexus
            .request(&messages("nx-bob", "claude-sonnet-4-5"))
            .status,
        200
    );
}

#[test]
fn max_concurrent_one_lets_one_stream_through_at_a_time() {
    let clients = ClientsFile::new(json!([
        {"name": "solo", "key": "nx-solo", "maxConcurrent": 1}
    ]));
    let gate = Gate::new();
    let events = stream_events();
    let reply = MockReply::sse_gated(events.clone(), gate.clone());
    let path = clients.path.clone();
    let rig = Rig::start(
        Upstream::Plain,
        move |_| reply.clone(),
        move |n| {
            n.api_key("sk-ant-api03-nexus-own")
                .env("CLIENTS_FILE", path)
        },
    );
    let host = format!("localhost:{}", rig.nexus.addr().port());
    let stream = |key: &str| {
        Request::post("/v1/messages")
            .header("x-api-key", key)
            .json(r#"{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[]}"#)
    };
    // The first stream is held open by the gate after its first event.
    let mut first = rig.nexus.client();
    first.send_raw(&stream("nx-solo").to_bytes(&host)).unwrap();
    let head = first.read_head().expect("the first stream's head");
    assert_eq!(head.status, 200);
    gate.wait_until_held();
    // The second, while the first is in flight: 429, nothing upstream.
    let second = rig.nexus.request(&stream("nx-solo"));
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(
        second.text().contains("maxConcurrent 1"),
        "{}",
        second.text()
    );
    assert_eq!(rig.mock.requests().len(), 1);
    // The first ends; the next passes.
    let mut sse = SseReader::new(first.body_stream("POST", &head).unwrap());
    for i in 0..events.len() {
        if i > 0 {
            gate.open_one();
        }
        sse.next_event().expect("event").expect("not the end yet");
    }
    assert_eq!(sse.next_event().expect("end of stream"), None);
    drop(sse);
    wait_for("the first stream to leave flight", || {
        let (_, me) = get_json(&rig.nexus, "/api/me", Some("nx-solo"));
        me["inFlight"] == 0
    });
    // The third stream's events pass the gate at once.
    for _ in 1..events.len() {
        gate.open_one();
    }
    let third = rig.nexus.request(&stream("nx-solo"));
    assert_eq!(third.status, 200, "{}", third.text());
}

#[test]
fn lists_refuse_with_403_a_hashed_key_works_and_a_wrong_key_is_401() {
    // sha256("nx-hashed")
    let sha = hex_sha256("nx-hashed");
    let clients = ClientsFile::new(json!([
        {"name": "limited", "key": "nx-limited", "models": ["claude-haiku-*"],
         "domains": ["allowed.example.com"]},
        {"name": "hashed", "keySha256": sha}
    ]));
    let rig = rig(&clients, |n| n);
    let on = |request: Request, host: &str| rig.nexus.request(&request.host(host));

    let model = on(
        messages("nx-limited", "claude-sonnet-4-5"),
        "allowed.example.com",
    );
    assert_eq!(model.status, 403, "{}", model.text());
    assert_eq!(error_type(&model), "permission_error");
    assert!(
        model.text().contains("model claude-sonnet-4-5"),
        "{}",
        model.text()
    );
    let domain = on(
        messages("nx-limited", "claude-haiku-4-5"),
        "other.example.com",
    );
    assert_eq!(domain.status, 403, "{}", domain.text());
    assert!(
        domain.text().contains("domain other.example.com"),
        "{}",
        domain.text()
    );
    assert_eq!(rig.mock.requests().len(), 0, "nothing upstream");

    let ok = on(
        messages("nx-limited", "claude-haiku-4-5"),
        "allowed.example.com",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let hashed = on(
        messages("nx-hashed", "claude-sonnet-4-5"),
        "any.example.com",
    );
    assert_eq!(hashed.status, 200, "{}", hashed.text());
    let wrong = on(messages("nx-wrong", "claude-sonnet-4-5"), "any.example.com");
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(error_type(&wrong), "authentication_error");
    let none = rig.nexus.request(
        &Request::post("/v1/messages").json(r#"{"model":"claude-sonnet-4-5","messages":[]}"#),
    );
    assert_eq!(none.status, 401, "named clients guard nexus's own key");
    assert_eq!(rig.mock.requests().len(), 2);
    // The access log names the client.
    wait_for("an access line naming the client", || {
        rig.nexus.logs().contains(" client=hashed")
    });
}

#[test]
fn clients_added_changed_and_removed_take_effect_within_two_seconds() {
    let clients = ClientsFile::new(json!([{"name": "a", "key": "nx-a"}]));
    let rig = rig(&clients, |n| n);
    let status = |key: &str| {
        rig.nexus
            .request(&messages(key, "claude-sonnet-4-5"))
            .status
    };
    assert_eq!(status("nx-a"), 200);
    assert_eq!(status("nx-b"), 401);

    let within_two_seconds = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !check() {
            assert!(Instant::now() < deadline, "{what} took over 2 s");
            thread::sleep(Duration::from_millis(20));
        }
    };
    // Added: b; changed: a gets a token budget it has already spent.
    clients.write(json!([
        {"name": "a", "key": "nx-a", "budget": {"tokens": {"5h": FIXTURE_TOKENS}}},
        {"name": "b", "key": "nx-b"}
    ]));
    within_two_seconds("adding b", &|| status("nx-b") == 200);
    within_two_seconds("a's new budget", &|| status("nx-a") == 429);
    // Removed: a's key no longer opens anything.
    clients.write(json!([{"name": "b", "key": "nx-b"}]));
    within_two_seconds("removing a", &|| status("nx-a") == 401);
    // A broken file keeps the clients before it.
    std::fs::write(&clients.path, "{\"clients\": [").unwrap();
    wait_for("the broken file's warning", || {
        rig.nexus.logs().contains("cannot be used")
    });
    assert_eq!(status("nx-b"), 200);
    assert!(Path::new(&clients.path).exists());
}

fn hex_sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
