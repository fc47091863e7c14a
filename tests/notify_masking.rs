//! `DEBUG=true` prints the seed's request/response trace, and no secret sent in a header or
//! a body shows whole in anything nexus prints or posts (log, telemetry, Slack): at most its
//! last 10 characters.

mod common;
mod notify_support;

use std::time::Duration;

use common::*;
use notify_support::*;
use serde_json::json;

const CLIENT_SECRET: &str = "sk-ant-api03-ClientKeyM4sK7qW2eR9tY1uI8oP3aS6dF0gH5jK";
const BEARER_SECRET: &str = "sk-ant-oat01-BearerTokZ3xC8vB1nM6lK9jH2gF5dS0aQ7wE4rT";
const FILE_SECRET: &str = "sk-ant-api03-FileKeyP0oI9uY8tR7eW6qA5sD4fG3hJ2kL1zXc";
const HEADER_SECRET: &str = "sk-ant-api03-HeaderValN2bV5cX8zL1kJ4hG7fD0sA3pO6iU9y";
const BODY_SECRET: &str = "sk-ant-api03-InBodyTxtQ1aZ2wS3xE4dC5rF6vT7gB8yH9nU0j";
const FIELD_SECRET: &str = "plain-Field-Secret-Mq8Wn4Xv2Lp6Zr9T";
const RESPONSE_TOKEN: &str = "resp-Access-Token-Hb7Kd3Nf5Qs1Vx8Y";
const RESPONSE_KEY: &str = "sk-ant-api03-RespBodyG4hJ6kL8zX0cV2bN4mQ6wE8rT0yU2iO";
const RESPONSE_HEADER: &str = "sk-ant-api03-RespHeadW9eR7tY5uI3oP1aS9dF7gH5jK3lZ1x";

const SECRETS: [&str; 9] = [
    CLIENT_SECRET,
    BEARER_SECRET,
    FILE_SECRET,
    HEADER_SECRET,
    BODY_SECRET,
    FIELD_SECRET,
    RESPONSE_TOKEN,
    RESPONSE_KEY,
    RESPONSE_HEADER,
];

fn tail(secret: &str) -> String {
    format!("****{}", &secret[secret.len() - 10..])
}

#[test]
fn debug_trace_is_printed_and_no_output_shows_a_whole_secret() {
    let telemetry = sink();
    let slack = sink();
    let upstream_body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": format!("Your key {RESPONSE_KEY} works.")}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 5},
        "access_token": RESPONSE_TOKEN,
    })
    .to_string();
    let file = json!({"type": "api_key", "api_key": FILE_SECRET}).to_string();
    let rig = Rig::start(
        Upstream::Plain,
        move |_| MockReply::json(200, upstream_body.clone()).header("x-echo", RESPONSE_HEADER),
        |n| {
            n.env("DEBUG", "true")
                .env("TELEMETRY_ENDPOINT", hook_url(&telemetry, "/t"))
                .env("SLACK_WEBHOOK_URL", hook_url(&slack, "/services/X"))
                .credential("file.example.com", &file)
        },
    );
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "metadata": {"api_key": FIELD_SECRET, "user_id": "u1"},
        "messages": [{"role": "user", "content": format!("my key is {BODY_SECRET}, keep it safe")}],
    })
    .to_string();
    let requests = [
        Request::post("/v1/messages")
            .header("x-api-key", CLIENT_SECRET)
            .header("x-custom-forwarded", HEADER_SECRET),
        Request::post("/v1/messages").header("Authorization", &format!("Bearer {BEARER_SECRET}")),
        Request::post("/v1/messages").host("file.example.com"),
    ];
    let count = requests.len();
    for request in requests {
        let response = rig.nexus.request(&request.json(body.clone()));
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let telemetry_posts: Vec<String> = telemetry
        .wait_for_requests(count)
        .iter()
        .map(|r| r.body_text())
        .collect();
    let slack_posts: Vec<String> = slack
        .wait_for_requests(1)
        .iter()
        .map(|r| r.body_text())
        .collect();

    // The secrets really went through: upstream saw them whole.
    let seen = rig.mock.requests();
    let upstream_text: String = seen
        .iter()
        .map(|r| format!("{:?} {}", r.headers, r.body_text()))
        .collect();
    for secret in [
        CLIENT_SECRET,
        BEARER_SECRET,
        FILE_SECRET,
        HEADER_SECRET,
        BODY_SECRET,
        FIELD_SECRET,
    ] {
        assert!(upstream_text.contains(secret), "{secret} went upstream");
    }

    // Each request's access-log line comes after its whole trace (one worker writes
    // both): once every request has one, every trace is in the log.
    let logs = common::oauth::wait_for(Duration::from_secs(10), "every access-log line", || {
        let logs = rig.nexus.logs();
        (logs.matches("POST /v1/messages 200").count() >= count).then_some(logs)
    });
    for part in [
        "=== Incoming Request ===",
        "Authentication type: API key",
        "Authentication type: OAuth",
        "Forwarding headers: {",
        "=== Response ===",
        "request body:",
        "response body:",
        "\"x-custom-forwarded\": \"",
        "\"api_key\":\"****\"",
        "\"access_token\":\"****\"",
    ] {
        assert!(logs.contains(part), "the trace lacks {part:?}:\n{logs}");
    }
    // The trace shows the last 10 characters of header credentials, and no more.
    for secret in [CLIENT_SECRET, BEARER_SECRET, FILE_SECRET, HEADER_SECRET] {
        assert!(
            logs.contains(&tail(secret)),
            "{} not shown masked:\n{logs}",
            tail(secret)
        );
    }
    assert_masked(&logs, &SECRETS, "the log");
    for post in telemetry_posts.iter().chain(slack_posts.iter()) {
        assert_masked(post, &SECRETS, "a webhook post");
    }
    assert!(
        telemetry_posts
            .iter()
            .any(|p| p.contains(&tail(CLIENT_SECRET))),
        "telemetry's apiKey is the masked key: {telemetry_posts:?}"
    );
}
