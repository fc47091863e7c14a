//! Shared by the `notify_*` tests: webhook sinks (mock endpoints that record every POST),
//! a mock upstream that answers by the request's tag, and small readers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::oauth::wait_for;
use crate::common::*;

/// The last 10 characters of [`CLIENT_KEY`], as telemetry shows it.
pub const MASKED_CLIENT_KEY: &str = "****client-key";

/// A webhook endpoint that answers every POST with 200 and records it.
pub fn sink() -> MockUpstream {
    MockUpstream::start(|_| MockReply::json(200, "ok"))
}

/// The sink's URL with a webhook-like path.
pub fn hook_url(sink: &MockUpstream, path: &str) -> String {
    format!("{}{path}", sink.url())
}

/// Waits for `n` POSTs on `sink` and returns their JSON bodies by the request id they
/// carry (telemetry's `requestId`, or the `_request <id>_` line of a Slack text).
pub fn posts_by_id(sink: &MockUpstream, n: usize) -> HashMap<String, Value> {
    let posts = sink.wait_for_requests(n);
    posts
        .iter()
        .map(|p| {
            assert_eq!(p.method, "POST", "{p:?}");
            let body = p.json();
            let id = request_id_of(&body).unwrap_or_else(|| panic!("no request id in {body}"));
            (id, body)
        })
        .collect()
}

/// Waits (up to 10 s) for the POST on `sink` that carries request id `id`, and returns
/// its JSON body.
pub fn post_for(sink: &MockUpstream, id: &str) -> Value {
    wait_for(Duration::from_secs(10), &format!("a post for {id}"), || {
        sink.requests()
            .iter()
            .map(Recorded::json)
            .find(|body| request_id_of(body).as_deref() == Some(id))
    })
}

/// The request id a telemetry event or Slack payload carries.
pub fn request_id_of(body: &Value) -> Option<String> {
    if let Some(id) = body["requestId"].as_str() {
        return Some(id.to_string());
    }
    slack_context(body).map(|(id, _client)| id)
}

/// A Slack text's last line, `_request <id>_` or `_request <id> · client <name>_`: the
/// request id and the named client's name.
pub fn slack_context(body: &Value) -> Option<(String, Option<String>)> {
    let last = body["text"].as_str()?.lines().last()?;
    let context = last.strip_prefix("_request ")?.strip_suffix('_')?;
    Some(match context.split_once(" · client ") {
        Some((id, client)) => (id.to_string(), Some(client.to_string())),
        None => (context.to_string(), None),
    })
}

/// A Slack text without its request-id line.
pub fn slack_text(body: &Value) -> String {
    let text = body["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {body}"));
    let (message, _id) = text.rsplit_once('\n').unwrap_or((text, ""));
    message.to_string()
}

/// The response's `x-nexus-request-id`.
pub fn id_of(response: &Response) -> String {
    response
        .header("x-nexus-request-id")
        .unwrap_or_else(|| panic!("no x-nexus-request-id in {:?}", response.headers))
        .to_string()
}

/// A Messages request body tagged (in `metadata.user_id`) for [`upstream_reply`].
pub fn tagged_body(tag: &str, stream: bool, system: Option<&str>, user_text: &str) -> String {
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "metadata": {"user_id": tag},
        "messages": [{"role": "user", "content": user_text}],
    });
    if stream {
        body["stream"] = json!(true);
    }
    if let Some(system) = system {
        body["system"] = json!(system);
    }
    body.to_string()
}

/// The upstream: a Messages request answers by its tag — `stream` with the SSE fixture,
/// `limit` with a 429, anything else with the JSON fixture; other paths with small JSON.
pub fn upstream_reply(request: &Recorded) -> MockReply {
    match (request.method.as_str(), request.path()) {
        ("POST", "/v1/messages") => {}
        ("POST", "/v1/messages/count_tokens") => {
            return MockReply::json(200, r#"{"input_tokens":9}"#)
        }
        _ => return MockReply::json(200, r#"{"data":[],"has_more":false}"#),
    }
    match request.json()["metadata"]["user_id"].as_str().unwrap_or("") {
        "stream" => MockReply::sse(fixtures::stream_events()),
        "limit" => MockReply::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        ),
        _ => MockReply::json(200, fixtures::MESSAGE_TEXT_JSON),
    }
}

/// Parses `/metrics` for `nexus_notify_dropped_total{sink="…"}`.
pub fn dropped(nexus: &Nexus, sink: &str) -> u64 {
    let metrics = nexus.request(&Request::get("/metrics")).text();
    let prefix = format!("nexus_notify_dropped_total{{sink=\"{sink}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{metrics}"))
}

/// Waits (up to 10 s) until nexus's log holds a line containing every one of `needles`.
pub fn wait_for_log_line(nexus: &Nexus, needles: &[&str]) -> String {
    wait_for(Duration::from_secs(10), "a log line", || {
        nexus
            .logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
}

/// Asserts that no 11-character run of any secret's distinctive part (after its
/// `sk-ant-xxx01-` prefix) shows in `text`.
pub fn assert_masked(text: &str, secrets: &[&str], what: &str) {
    for secret in secrets {
        let body = secret
            .split_once("01-")
            .or(secret.split_once("03-"))
            .map_or(*secret, |(_, b)| b);
        for start in 0..=body.len().saturating_sub(11) {
            let window = &body[start..(start + 11).min(body.len())];
            assert!(
                !text.contains(window),
                "{what} shows more than 10 characters of a secret ({window:?}):\n{text}"
            );
        }
    }
}

/// The named client of [`with_named_client`] and its key.
pub const NAMED_CLIENT: &str = "alice";
pub const NAMED_CLIENT_KEY: &str = "nx-alice-0123456789abcdefghij";

/// nexus with one named client ([`NAMED_CLIENT`]) in a clients file, [`CLIENT_KEY`] as an
/// unnamed client key beside it (both swapped for nexus's own key), and `configure`'s
/// settings. The file lives as long as the rig.
pub fn with_named_client(
    configure: impl FnOnce(nexus::NexusBuilder) -> nexus::NexusBuilder,
) -> (Rig, ClientsFile) {
    let clients = ClientsFile::new(json!([{"name": NAMED_CLIENT, "key": NAMED_CLIENT_KEY}]));
    let path = clients.path.clone();
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        configure(
            n.api_key("sk-ant-api03-nexus-own-key-000000")
                .env("CLIENT_API_KEYS", CLIENT_KEY)
                .env("CLIENTS_FILE", path),
        )
    });
    (rig, clients)
}

/// Sends a Messages request (`body`, tagged for [`upstream_reply`]) presenting `key`;
/// it must answer 200. Returns its request id.
pub fn send_with_key(client: &mut Client, key: &str, body: String) -> String {
    let response = client.request(
        &Request::post("/v1/messages")
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    id_of(&response)
}
