//! Telemetry through the real binary: one POST per forwarded request, with the seed's
//! fields and nexus's own, figures equal to what the mock upstream reported; delivered over
//! kept-alive connections, https included.

mod common;
mod notify_support;

use std::thread;

use common::oauth::wait_for;
use common::tls::TlsSetup;
use common::*;
use notify_support::*;
use serde_json::{json, Value};

/// One kind of request, and the telemetry event it must produce.
struct Case {
    request: Request,
    method: &'static str,
    path: &'static str,
    status: u16,
    /// input, output, cache creation, cache read.
    tokens: [u64; 4],
    model: Value,
    request_type: Value,
    tool_calls: u64,
    stream: bool,
    error: Option<&'static str>,
    api_key: Value,
}

fn cases(domain: &str) -> Vec<Case> {
    let messages = |body: String| messages_request(body).host(domain);
    vec![
        Case {
            request: messages(tagged_body("stream", true, None, "hi")),
            method: "POST",
            path: "/v1/messages",
            status: 200,
            tokens: [21, 64, 3, 512],
            model: json!("claude-sonnet-4-5"),
            request_type: json!("none"),
            tool_calls: 1,
            stream: true,
            error: None,
            api_key: json!(MASKED_CLIENT_KEY),
        },
        Case {
            request: messages(tagged_body("json", false, Some("be brief"), "hi")),
            method: "POST",
            path: "/v1/messages",
            status: 200,
            tokens: [57, 19, 11, 1024],
            model: json!("claude-sonnet-4-5"),
            request_type: json!("query_evaluation"),
            tool_calls: 0,
            stream: false,
            error: None,
            api_key: json!(MASKED_CLIENT_KEY),
        },
        Case {
            request: messages(tagged_body("limit", false, None, "hi")),
            method: "POST",
            path: "/v1/messages",
            status: 429,
            tokens: [0; 4],
            // The response carried no model: the request's is reported.
            model: json!("claude-sonnet-4-5"),
            request_type: json!("none"),
            tool_calls: 0,
            stream: false,
            error: Some("rate_limit_error"),
            api_key: json!(MASKED_CLIENT_KEY),
        },
        Case {
            request: Request::post("/v1/messages/count_tokens?beta=true")
                .host(domain)
                .header("x-api-key", CLIENT_KEY)
                .json(tagged_body("count", false, None, "hi")),
            method: "POST",
            path: "/v1/messages/count_tokens",
            status: 200,
            tokens: [0; 4],
            model: Value::Null,
            request_type: Value::Null,
            tool_calls: 0,
            stream: false,
            error: None,
            api_key: json!(MASKED_CLIENT_KEY),
        },
        Case {
            request: Request::get("/v1/models")
                .host(domain)
                .header("x-api-key", CLIENT_KEY),
            method: "GET",
            path: "/v1/models",
            status: 200,
            tokens: [0; 4],
            model: Value::Null,
            request_type: Value::Null,
            tool_calls: 0,
            stream: false,
            error: None,
            api_key: json!(MASKED_CLIENT_KEY),
        },
        Case {
            request: Request::new("DELETE", "/v1/files/file_011")
                .host(domain)
                .header("x-api-key", CLIENT_KEY),
            method: "DELETE",
            path: "/v1/files/file_011",
            status: 200,
            tokens: [0; 4],
            model: Value::Null,
            request_type: Value::Null,
            tool_calls: 0,
            stream: false,
            error: None,
            api_key: json!(MASKED_CLIENT_KEY),
        },
        Case {
            // No credential anywhere: nexus answers 401 itself.
            request: Request::post("/v1/messages")
                .host(domain)
                .json(tagged_body("json", false, None, "hi")),
            method: "POST",
            path: "/v1/messages",
            status: 401,
            tokens: [0; 4],
            model: Value::Null,
            request_type: Value::Null,
            tool_calls: 0,
            stream: false,
            error: Some("no credential"),
            api_key: Value::Null,
        },
    ]
}

#[test]
fn every_request_posts_one_event_with_the_figures_the_upstream_reported() {
    let telemetry = sink();
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.env(
            "TELEMETRY_ENDPOINT",
            hook_url(&telemetry, "/ingest?source=nexus"),
        )
    });
    let domains = ["alpha.example.com", "beta.example.com", "gamma.example.com"];

    // One client thread per domain, each on its own keep-alive connection.
    let sent: Vec<(String, &'static str, Case)> = thread::scope(|s| {
        let handles: Vec<_> = domains
            .iter()
            .map(|&domain| {
                let nexus = &rig.nexus;
                s.spawn(move || {
                    let mut client = nexus.client();
                    cases(domain)
                        .into_iter()
                        .map(|case| {
                            let response = client.request(&case.request);
                            assert_eq!(response.status, case.status, "{}", response.text());
                            (id_of(&response), domain, case)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    let events = posts_by_id(&telemetry, sent.len());
    assert_eq!(
        events.len(),
        sent.len(),
        "one event per request, no duplicates"
    );
    for post in telemetry.requests() {
        assert_eq!(post.target, "/ingest?source=nexus");
        assert!(post
            .headers
            .get("content-type")
            .unwrap_or("")
            .starts_with("application/json"));
    }
    for (id, domain, case) in &sent {
        let e = events
            .get(id)
            .unwrap_or_else(|| panic!("no telemetry event for {id}: {events:#?}"));
        let what = format!("{} {} on {domain}: {e}", case.method, case.path);
        assert_eq!(e["requestId"], json!(id), "{what}");
        assert_eq!(e["method"], case.method, "{what}");
        assert_eq!(e["path"], case.path, "{what}");
        assert_eq!(e["domain"], *domain, "{what}");
        assert_eq!(e["status"], case.status, "{what}");
        assert_eq!(e["apiKey"], case.api_key, "{what}");
        assert_eq!(e["model"], case.model, "{what}");
        let [input, output, creation, read] = case.tokens;
        assert_eq!(e["inputTokens"], input, "{what}");
        assert_eq!(e["outputTokens"], output, "{what}");
        assert_eq!(e["cacheCreationInputTokens"], creation, "{what}");
        assert_eq!(e["cacheReadInputTokens"], read, "{what}");
        assert_eq!(e["requestType"], case.request_type, "{what}");
        assert_eq!(e["toolCallCount"], case.tool_calls, "{what}");
        assert_eq!(e["stream"], case.stream, "{what}");
        match case.error {
            Some(error) => assert_eq!(e["error"], error, "{what}"),
            None => assert!(e.get("error").is_none(), "{what}"),
        }
        assert!(
            e["duration"].as_u64().is_some_and(|ms| ms < 10_000),
            "{what}"
        );
        let ts = e["timestamp"].as_str().unwrap_or("");
        assert!(
            ts.len() == 24 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "ISO 8601 UTC timestamp: {what}"
        );
    }
}

#[test]
fn events_go_over_https_on_one_kept_alive_connection() {
    let tls = TlsSetup::trusted();
    let telemetry = MockUpstream::builder()
        .tls(tls.server_config())
        .start(|_| MockReply::json(200, "{}"));
    // Same roots as the upstream: UPSTREAM_CA_FILE is what makes the test CA trusted.
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.env("TELEMETRY_ENDPOINT", format!("{}/t", telemetry.url()))
            .ca_file(tls.ca_file())
            .workers(1)
    });
    let mut client = rig.nexus.client();
    const N: usize = 8;
    for i in 0..N {
        let response = client.request(&messages_request(tagged_body("json", false, None, "hi")));
        assert_eq!(response.status, 200);
        // One event at a time, so one connection can carry them all.
        wait_for(std::time::Duration::from_secs(10), "the event", || {
            (telemetry.requests().len() == i + 1).then_some(())
        });
    }
    assert_eq!(telemetry.requests().len(), N);
    assert_eq!(
        telemetry.connections(),
        1,
        "every event after the first reuses the kept-alive connection"
    );
    assert!(telemetry.requests().iter().all(|r| r.conn == 0));
}

#[test]
fn an_event_names_the_named_client_and_never_shows_its_key() {
    let telemetry = sink();
    let (rig, _clients) =
        with_named_client(|n| n.env("TELEMETRY_ENDPOINT", hook_url(&telemetry, "/t")));
    let mut client = rig.nexus.client();
    let named = send_with_key(
        &mut client,
        NAMED_CLIENT_KEY,
        tagged_body("stream", true, None, "hi"),
    );
    let unnamed = send_with_key(
        &mut client,
        CLIENT_KEY,
        tagged_body("json", false, None, "hi"),
    );

    let events = posts_by_id(&telemetry, 2);
    assert_eq!(
        events[&named]["client"], NAMED_CLIENT,
        "{:#}",
        events[&named]
    );
    assert_eq!(
        events[&unnamed]["client"],
        Value::Null,
        "an unnamed key: no client, {:#}",
        events[&unnamed]
    );
    for post in telemetry.requests() {
        assert_masked(&post.body_text(), &[NAMED_CLIENT_KEY], "a telemetry event");
    }
}
