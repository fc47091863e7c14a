//! With DEBUG=true, real-looking secrets in headers, credential files and token endpoint
//! answers never appear in full in what nexus prints or answers: at most their last 10
//! characters.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::*;
use serde_json::json;

const ENV_KEY: &str = "sk-ant-api03-EnvKeyQ7fZk2LmNpR8sTuVwXyZ0aB1cD2eF3gH4iJ5kL6m";
const FILE_KEY: &str = "sk-ant-api03-FileKeyX9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE9dC8bA7z";
const GUARD_KEY: &str = "nexus-ck-GuardKeyP4oI3uY2tR1eW0qA9sD8fG7hJ6kL5";
const CLIENT_OWN_KEY: &str = "sk-ant-api03-ClientOwnM1nB2vC3xZ4lK5jH6gF7dS8aP9oI0uY1tR";
const CLIENT_BEARER: &str = "sk-ant-oat01-ClientBearerQ2wE3rT4yU5iO6pA7sD8fG9hJ0kL1zX";
const OLD_ACCESS: &str = "sk-ant-oat01-OldAccessZ8xC7vB6nM5lK4jH3gF2dS1aQ0wE9rT8y";
const OLD_REFRESH: &str = "sk-ant-ort01-OldRefreshU7iO6pA5sD4fG3hJ2kL1zX0cV9bN8mQ";
const NEW_ACCESS: &str = "sk-ant-oat01-NewAccessW1eR2tY3uI4oP5aS6dF7gH8jK9lZ0xC1v";
const NEW_REFRESH: &str = "sk-ant-ort01-NewRefreshB2nM3qW4eR5tY6uI7oP8aS9dF0gH1jK";
const DEAD_ACCESS: &str = "sk-ant-oat01-DeadAccessL3kJ4hG5fD6sA7pO8iU9yT0rE1wQ2zX";
const DEAD_REFRESH: &str = "sk-ant-ort01-DeadRefreshV4cX5zL6kJ7hG8fD9sA0pO1iU2yT3rE";
const BROKEN_SECRET: &str = "sk-ant-api03-BrokenFileN5bV6cX7zL8kJ9hG0fD1sA2pO3iU4y";

const SECRETS: [&str; 12] = [
    ENV_KEY,
    FILE_KEY,
    GUARD_KEY,
    CLIENT_OWN_KEY,
    CLIENT_BEARER,
    OLD_ACCESS,
    OLD_REFRESH,
    NEW_ACCESS,
    NEW_REFRESH,
    DEAD_ACCESS,
    DEAD_REFRESH,
    BROKEN_SECRET,
];

/// Fails if `text` holds 11 or more consecutive characters of any secret's distinctive
/// part (after the `sk-ant-xxx01-` prefix every key shares).
fn assert_masked(text: &str, what: &str) {
    for secret in SECRETS {
        let body = secret
            .split_once("01-")
            .or(secret.split_once("03-"))
            .map_or(secret, |(_, b)| b);
        let body = body.strip_prefix("nexus-ck-").unwrap_or(body);
        for start in 0..=body.len() - 11 {
            let window = &body[start..start + 11];
            assert!(
                !text.contains(window),
                "{what} shows more than 10 characters of {}…: {window:?}\n{text}",
                &secret[..16]
            );
        }
    }
}

fn post(host: &str) -> Request {
    Request::post("/v1/messages")
        .host(host)
        .header("anthropic-version", "2023-06-01")
        .json(r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[]}"#)
}

#[test]
fn debug_logs_and_error_bodies_never_show_a_whole_secret() {
    let endpoint = TokenEndpoint::start(|_, request| {
        let refresh = request.json()["refresh_token"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if refresh == DEAD_REFRESH {
            invalid_grant_reply(&refresh) // echoes the token in its description
        } else {
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600)
        }
    });
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.env("DEBUG", "true")
                .api_key(ENV_KEY)
                .env("OAUTH_TOKEN_URL", endpoint.url())
                .credential(
                    "file.example.com",
                    &json!({"type":"api_key","api_key":FILE_KEY}).to_string(),
                )
                .credential(
                    "guarded.example.com",
                    &json!({"type":"api_key","api_key":FILE_KEY,"client_api_keys":[GUARD_KEY]})
                        .to_string(),
                )
                .credential(
                    "oauth.example.com",
                    &oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 1000).to_string(),
                )
                .credential(
                    "dead.example.com",
                    &oauth_file_expiring(DEAD_ACCESS, DEAD_REFRESH, now_ms() - 1000).to_string(),
                )
                .credential(
                    "broken.example.com",
                    &json!({"type":"api_key","apikey":BROKEN_SECRET}).to_string(),
                )
        },
    );

    let mut bodies = String::new();
    let mut send = |request: Request, status: u16| {
        let response = rig.nexus.request(&request);
        assert_eq!(response.status, status, "{}", response.text());
        bodies.push_str(&response.text());
        bodies.push('\n');
    };
    send(post("file.example.com"), 200);
    send(
        post("file.example.com").header("x-api-key", CLIENT_OWN_KEY),
        200,
    );
    send(
        post("guarded.example.com").header("x-api-key", GUARD_KEY),
        200,
    );
    send(
        post("guarded.example.com").header("x-api-key", CLIENT_OWN_KEY),
        401,
    );
    send(post("guarded.example.com"), 401);
    send(
        post("other.example.com").header("x-api-key", CLIENT_OWN_KEY),
        200,
    );
    send(
        post("other.example.com").header("Authorization", &format!("Bearer {CLIENT_BEARER}")),
        200,
    );
    send(post("other.example.com"), 200);
    send(post("oauth.example.com"), 200);
    send(post("dead.example.com"), 401);
    send(post("broken.example.com"), 500);
    wait_for(Duration::from_secs(10), "both refresh attempts", || {
        (endpoint.calls() == 2).then_some(())
    });

    // The secrets really were in play.
    let upstream: Vec<String> = rig
        .mock
        .requests()
        .iter()
        .flat_map(|r| credential_headers(&r.headers))
        .map(|(_, v)| v)
        .collect();
    for used in [ENV_KEY, FILE_KEY, CLIENT_OWN_KEY, NEW_ACCESS] {
        assert!(
            upstream.iter().any(|v| v.contains(used)),
            "{used} went upstream"
        );
    }
    let logs = rig.nexus.logs();
    assert!(logs.contains("DEBUG"), "debug logging is on:\n{logs}");
    assert!(
        logs.contains(&format!("****{}", &FILE_KEY[FILE_KEY.len() - 10..])),
        "masked values are shown:\n{logs}"
    );
    assert_masked(&logs, "the log");
    assert_masked(&bodies, "a response body");
    let health = rig.nexus.request(&Request::get("/")).text();
    assert_masked(&health, "GET /");
}
