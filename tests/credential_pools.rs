//! Credential pools (issue 20): one domain served by several credentials. The mock
//! upstream answers per credential (by the `x-api-key` or bearer token it receives), so
//! each test decides which member is rate-limited, overloaded or refused, and checks what
//! the client got, which members the upstream saw, and what `/token-stats` says.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::credentials::{metric, REFRESH_WAITING};
use common::fixtures::{stream_events, MESSAGE_TEXT_JSON, STREAM_TEXT_TOOL_USE_SSE};
use common::oauth::*;
use common::*;
use serde_json::{json, Value};

const DOMAIN: &str = "pool.example.com";
const KEY_A: &str = "sk-ant-api03-member-a-0123456789";
const KEY_B: &str = "sk-ant-api03-member-b-0123456789";
const KEY_C: &str = "sk-ant-api03-member-c-0123456789";

fn key_member(id: &str, key: &str) -> Value {
    json!({"id": id, "type": "api_key", "api_key": key})
}

fn pool_file(members: &[Value]) -> String {
    json!({"type": "pool", "credentials": members}).to_string()
}

fn pool_of(members: &[(&str, &str)]) -> String {
    let members: Vec<Value> = members
        .iter()
        .map(|(id, key)| key_member(id, key))
        .collect();
    pool_file(&members)
}

/// The credential a recorded request carried: its `x-api-key`, else its bearer token.
fn credential_of(request: &Recorded) -> String {
    match request.headers.get("x-api-key") {
        Some(key) => key.to_string(),
        None => bearer_of(request),
    }
}

fn sent_with(rig: &Rig, key: &str) -> usize {
    rig.mock
        .requests()
        .iter()
        .filter(|r| credential_of(r) == key)
        .count()
}

/// A Messages request of a new conversation `session` (header), streamed or not.
fn messages(session: &str, stream: bool) -> Request {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": format!("hello from {session}")}]
    });
    Request::post("/v1/messages")
        .host(DOMAIN)
        .header("anthropic-version", "2023-06-01")
        .header("x-claude-code-session-id", session)
        .json(body.to_string())
}

/// A reply that serves a request well: the SSE fixture for a streamed one, else JSON.
fn success(request: &Recorded) -> MockReply {
    if request.json()["stream"] == true {
        MockReply::sse(stream_events())
    } else {
        MockReply::json(200, MESSAGE_TEXT_JSON)
    }
}

fn rate_limited(retry_after: &str) -> MockReply {
    MockReply::json(
        429,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    )
    .header("retry-after", retry_after)
}

fn overloaded() -> MockReply {
    MockReply::json(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
}

/// The figures `/token-stats` shows for member `id` of the pool.
fn member_stats(nexus: &Nexus, id: &str) -> Value {
    let stats = nexus.request(&Request::get("/token-stats")).json();
    stats["stats"][DOMAIN]["credentials"][id].clone()
}

/// Asserts a response carries exactly what [`success`] sends for its kind.
fn assert_served(response: &Response, stream: bool) {
    assert_eq!(response.status, 200, "{}", response.text());
    let expected = match stream {
        true => STREAM_TEXT_TOOL_USE_SSE.as_bytes(),
        false => MESSAGE_TEXT_JSON.as_bytes(),
    };
    assert_bytes_eq(&response.body, expected, "response body");
}

#[test]
fn a_rate_limited_member_rests_until_its_retry_after_while_the_other_serves_every_request() {
    let rig = Rig::start(
        Upstream::Plain,
        |request| match credential_of(request).as_str() {
            KEY_A => rate_limited("60"),
            _ => success(request),
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    for i in 0..8 {
        let stream = i % 2 == 0;
        let response = rig.nexus.request(&messages(&format!("s-{i}"), stream));
        assert_served(&response, stream);
    }
    assert!(sent_with(&rig, KEY_A) <= 1, "A tried at most once");
    assert_eq!(sent_with(&rig, KEY_B), 8);
    // The first new conversation goes to the first member (ties go in turn): A was tried.
    assert_eq!(sent_with(&rig, KEY_A), 1);
    let a = member_stats(&rig.nexus, "a");
    assert_eq!(a["state"], "cooling", "{a}");
    let until = a["cooldownUntil"].as_u64().expect("cooldownUntil");
    let expected = now_ms() + 60_000;
    assert!(
        until.abs_diff(expected) < 15_000,
        "{until} vs about {expected}"
    );
    assert_eq!(
        (a["requestCount"].clone(), a["failoverCount"].clone()),
        (json!(1), json!(1))
    );
    let b = member_stats(&rig.nexus, "b");
    assert_eq!(b["state"], "ready");
    assert_eq!(b["requestCount"], 8);
    assert_eq!(b["cooldownUntil"], Value::Null);
    let metrics = rig.nexus.request(&Request::get("/metrics")).text();
    for line in [
        format!("nexus_credential_failovers_total{{domain=\"{DOMAIN}\",credential=\"a\",reason=\"rate_limit\"}} 1"),
        format!("nexus_credential_cooling{{domain=\"{DOMAIN}\",credential=\"a\"}} 1"),
        format!("nexus_credential_requests_total{{domain=\"{DOMAIN}\",credential=\"b\"}} 8"),
    ] {
        assert!(metrics.contains(&line), "no {line} in /metrics");
    }
    // The ledger names the member that served each request.
    let rows = wait_for(Duration::from_secs(10), "8 ledger rows", || {
        let answer = rig
            .nexus
            .request(&Request::get(&format!("/api/requests?domain={DOMAIN}")));
        let rows = answer.json()["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (rows.len() == 8).then_some(rows)
    });
    assert!(rows.iter().all(|row| row["credential"] == "b"), "{rows:?}");
    // Log lines are written by a logger thread: wait for them, within a bound.
    for line in ["member a cools down for 60s after 429", "credential=b"] {
        wait_for(Duration::from_secs(10), line, || {
            rig.nexus.logs().contains(line).then_some(())
        });
    }
}

#[test]
fn a_rested_member_returns_to_service_by_itself_when_its_retry_after_ends() {
    let a_calls = Arc::new(AtomicUsize::new(0));
    let rig = Rig::start(
        Upstream::Plain,
        {
            let a_calls = Arc::clone(&a_calls);
            move |request| match credential_of(request).as_str() {
                KEY_A if a_calls.fetch_add(1, Ordering::SeqCst) == 0 => rate_limited("2"),
                _ => success(request),
            }
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    assert_served(&rig.nexus.request(&messages("first", false)), false);
    assert_eq!(member_stats(&rig.nexus, "a")["state"], "cooling");
    wait_for(Duration::from_secs(15), "member a back in service", || {
        (member_stats(&rig.nexus, "a")["state"] == "ready").then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "the log line of its return",
        || {
            rig.nexus
                .logs()
                .contains("member a returns to service")
                .then_some(())
        },
    );
    // New conversations go to each member in turn again: within a few, one is A's.
    for i in 0..4 {
        assert_served(
            &rig.nexus
                .request(&messages(&format!("after-{i}"), i % 2 == 0)),
            i % 2 == 0,
        );
    }
    assert!(sent_with(&rig, KEY_A) >= 2, "A serves again after its rest");
}

#[test]
fn an_overloaded_member_is_passed_over_and_the_client_never_sees_the_529() {
    let rig = Rig::start(
        Upstream::Plain,
        |request| match credential_of(request).as_str() {
            KEY_A => overloaded(),
            _ => success(request),
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    for i in 0..6 {
        let response = rig.nexus.request(&messages(&format!("s-{i}"), true));
        assert_served(&response, true);
    }
    assert_eq!(sent_with(&rig, KEY_B), 6);
    assert!(sent_with(&rig, KEY_A) >= 1);
    let a = member_stats(&rig.nexus, "a");
    assert_eq!(a["failoverCount"], a["requestCount"], "{a}");
    let metrics = rig.nexus.request(&Request::get("/metrics")).text();
    let series = format!(
        "nexus_credential_failovers_total{{domain=\"{DOMAIN}\",credential=\"a\",reason=\"overloaded\"}} "
    );
    assert!(metrics.contains(&series), "{metrics}");
    // Every request the upstream saw carried the byte-identical body the client sent.
    let seen = rig.mock.requests();
    for pair in seen.windows(2) {
        if credential_of(&pair[0]) == KEY_A {
            assert_eq!(pair[0].body, pair[1].body, "the re-sent body");
            assert_eq!(credential_of(&pair[1]), KEY_B);
        }
    }
}

#[test]
fn a_conversation_stays_on_one_member_and_new_ones_spread() {
    let rig = Rig::start(Upstream::Plain, success, |n| {
        n.credential(
            DOMAIN,
            &pool_of(&[("a", KEY_A), ("b", KEY_B), ("c", KEY_C)]),
        )
    });
    let by_user_id = |user: &str| {
        let body = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 64,
            "metadata": {"user_id": user},
            "messages": [{"role": "user", "content": "hi"}]
        });
        Request::post("/v1/messages")
            .host(DOMAIN)
            .header("anthropic-version", "2023-06-01")
            .json(body.to_string())
    };
    for round in 0..3 {
        for s in 0..6 {
            let stream = (round + s) % 2 == 0;
            assert_served(
                &rig.nexus.request(&messages(&format!("conv-{s}"), stream)),
                stream,
            );
            if s < 2 {
                let response = rig.nexus.request(&by_user_id(&format!("user-{s}")));
                assert_served(&response, false);
            }
        }
    }
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in rig.mock.requests() {
        let conversation = match request.headers.get("x-claude-code-session-id") {
            Some(session) => session.to_string(),
            None => request.json()["metadata"]["user_id"]
                .as_str()
                .unwrap()
                .to_string(),
        };
        members
            .entry(conversation)
            .or_default()
            .insert(credential_of(&request));
    }
    assert_eq!(members.len(), 8, "{members:?}");
    for (conversation, used) in &members {
        assert_eq!(
            used.len(),
            1,
            "{conversation} moved between members: {used:?}"
        );
    }
    let used: BTreeSet<_> = members.values().flatten().collect();
    assert!(
        used.len() >= 2,
        "every conversation on one member: {used:?}"
    );
}

#[test]
fn new_conversations_go_to_the_member_with_the_most_headroom() {
    let reset = (now_ms() / 1000 + 3 * 3600).to_string();
    let rig = Rig::start(
        Upstream::Plain,
        move |request| {
            let used = match credential_of(request).as_str() {
                KEY_A => "0.97",
                _ => "0.20",
            };
            success(request)
                .header("anthropic-ratelimit-unified-status", "allowed")
                .header("anthropic-ratelimit-unified-5h-utilization", used)
                .header("anthropic-ratelimit-unified-5h-reset", &reset)
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    // Until both have been heard from, ties go in turn: the first two requests meet both.
    for i in 0..2 {
        assert_served(
            &rig.nexus.request(&messages(&format!("learn-{i}"), false)),
            false,
        );
    }
    assert_eq!((sent_with(&rig, KEY_A), sent_with(&rig, KEY_B)), (1, 1));
    for i in 0..8 {
        let stream = i % 2 == 1;
        assert_served(
            &rig.nexus.request(&messages(&format!("new-{i}"), stream)),
            stream,
        );
    }
    assert_eq!(
        sent_with(&rig, KEY_A),
        1,
        "A (97 % used) only when no other is usable"
    );
    assert_eq!(sent_with(&rig, KEY_B), 9);
}

#[test]
fn an_exhausted_pool_relays_the_last_429_then_answers_429_itself_until_a_member_frees() {
    let rig = Rig::start(
        Upstream::Plain,
        |request| {
            let mark = match credential_of(request).as_str() {
                KEY_A => "a",
                _ => "b",
            };
            rate_limited("30")
                .header("x-upstream-mark", mark)
                .header("anthropic-ratelimit-requests-remaining", "0")
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    let response = rig.nexus.request(&messages("s-1", false));
    assert_eq!(response.status, 429);
    assert_eq!(
        response.header("x-upstream-mark"),
        Some("b"),
        "the upstream's own answer"
    );
    assert_eq!(response.header("retry-after"), Some("30"));
    assert_eq!(
        response.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_bytes_eq(
        &response.body,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        "the upstream's body",
    );
    let seen = rig.mock.requests();
    let keys: Vec<String> = seen.iter().map(credential_of).collect();
    assert_eq!(keys, [KEY_A, KEY_B], "each member once");

    // Both rest now: nexus answers at once, naming the domain and when to come back.
    let response = rig.nexus.request(&messages("s-2", true));
    assert_anthropic_error(&response, 429, "rate_limit_error");
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "retry-after {retry_after}");
    let message = response.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(DOMAIN), "{message}");
    assert_eq!(
        rig.mock.requests().len(),
        2,
        "no member tried while resting"
    );
}

#[test]
fn nothing_is_sent_again_once_the_response_started_nor_for_any_other_status() {
    // A stream that breaks after its first event, from whichever member gets it.
    let mut events = stream_events();
    events.truncate(2);
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut broken = head.as_bytes().to_vec();
    broken.extend_from_slice(format!("{:x}\r\n{}\r\n", events[0].len(), events[0]).as_bytes());
    let rig = Rig::start(
        Upstream::Plain,
        move |request| match request.headers.get("x-claude-code-session-id") {
            Some("broken") => MockReply::raw(broken.clone()),
            _ => MockReply::json(
                500,
                r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
            ),
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    let response = rig.nexus.request(&messages("broken", true));
    assert_eq!(response.status, 200);
    assert!(
        response.text().starts_with(&events[0]),
        "{}",
        response.text()
    );
    assert!(
        response.text().contains("event: error"),
        "{}",
        response.text()
    );
    assert_eq!(
        rig.mock.requests().len(),
        1,
        "never re-sent once the response started"
    );

    let response = rig.nexus.request(&messages("five-hundred", false));
    assert_eq!(response.status, 500);
    assert_eq!(
        rig.mock.requests().len(),
        2,
        "a 500 is relayed, not sent on"
    );
    for id in ["a", "b"] {
        assert_eq!(member_stats(&rig.nexus, id)["state"], "ready");
    }
}

#[test]
fn an_expired_oauth_member_is_refreshed_once_for_50_requests_and_a_refused_key_is_disabled() {
    const CLIENTS: usize = 50;
    const BAD_KEY: &str = "sk-ant-api03-revoked-key-0123456789";
    let release = Latch::new();
    let endpoint = {
        let release = release.clone();
        TokenEndpoint::start(move |_, _| {
            release.wait(Duration::from_secs(30));
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600)
        })
    };
    let oauth = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 60_000);
    let mut max = json!({"id": "max-1", "type": "oauth", "oauth": oauth["oauth"].clone()});
    max["note"] = json!("kept");
    let original = json!({
        "type": "pool",
        "credentials": [max, key_member("bad-key", BAD_KEY)],
        "slack": oauth["slack"].clone(),
        "team": {"name": "nexus-tests"}
    });
    let url = endpoint.url();
    let file = original.to_string();
    let rig = Rig::start(
        Upstream::Plain,
        |request| match credential_of(request).as_str() {
            NEW_ACCESS => success(request),
            _ => MockReply::json(
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            ),
        },
        move |n| n.env("OAUTH_TOKEN_URL", url).credential(DOMAIN, &file),
    );
    wait_for(Duration::from_secs(10), "the refresh request", || {
        (endpoint.calls() == 1).then_some(())
    });
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut client = rig.nexus.client();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                client
                    .request(&messages(&format!("c-{i}"), i % 2 == 0))
                    .status
            })
        })
        .collect();
    start.wait();
    // Every request, whether it tried the refused key first or not, waits for the one
    // refresh of max-1.
    wait_for(Duration::from_secs(60), "every request waiting", || {
        (metric(&rig.nexus, REFRESH_WAITING) == CLIENTS as i64).then_some(())
    });
    release.open();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(endpoint.calls(), 1, "one refresh for the whole crowd");
    assert_eq!(
        sent_with(&rig, OLD_ACCESS),
        0,
        "the expired token never went upstream"
    );
    assert_eq!(sent_with(&rig, NEW_ACCESS), CLIENTS);

    let path = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    let saved = read_credential(&path);
    let mut expected = original.clone();
    let oauth = &mut expected["credentials"][0]["oauth"];
    oauth["accessToken"] = json!(NEW_ACCESS);
    oauth["refreshToken"] = json!(NEW_REFRESH);
    oauth["expiresAt"] = saved["credentials"][0]["oauth"]["expiresAt"].clone();
    oauth["scopes"] = json!(["user:inference", "user:profile", "org:create_api_key"]);
    assert_eq!(saved, expected, "every other member and field kept");

    let bad = member_stats(&rig.nexus, "bad-key");
    assert_eq!(bad["state"], "disabled", "{bad}");
    let tried = sent_with(&rig, BAD_KEY);
    for i in 0..5 {
        assert_served(
            &rig.nexus.request(&messages(&format!("later-{i}"), false)),
            false,
        );
    }
    assert_eq!(
        sent_with(&rig, BAD_KEY),
        tried,
        "a disabled member is not used"
    );
    wait_for(
        Duration::from_secs(10),
        "the log line of its disabling",
        || {
            rig.nexus
                .logs()
                .contains("member bad-key disabled")
                .then_some(())
        },
    );
}

#[test]
fn members_added_removed_and_changed_take_effect_and_unchanged_ones_keep_their_state() {
    let rig = Rig::start(
        Upstream::Plain,
        |request| match credential_of(request).as_str() {
            KEY_A => rate_limited("600"),
            _ => success(request),
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    assert_served(&rig.nexus.request(&messages("s-0", false)), false);
    assert_eq!(member_stats(&rig.nexus, "a")["state"], "cooling");
    let path = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    std::fs::write(&path, pool_of(&[("a", KEY_A), ("c", KEY_C)])).unwrap();
    wait_for(Duration::from_secs(2) * 3, "member c", || {
        let stats = rig.nexus.request(&Request::get("/token-stats")).json();
        let members = stats["stats"][DOMAIN]["credentials"].clone();
        (members.get("c").is_some() && members.get("b").is_none()).then_some(())
    });
    assert_eq!(
        member_stats(&rig.nexus, "a")["state"],
        "cooling",
        "a's secret is unchanged"
    );
    assert_served(&rig.nexus.request(&messages("s-1", false)), false);
    assert_eq!(
        rig.mock.requests().last().map(credential_of).as_deref(),
        Some(KEY_C)
    );
    // A new secret for a: a new credential, ready at once.
    std::fs::write(
        &path,
        pool_of(&[("a", "sk-ant-api03-member-a-renewed-000"), ("c", KEY_C)]),
    )
    .unwrap();
    wait_for(Duration::from_secs(2) * 3, "a renewed", || {
        (member_stats(&rig.nexus, "a")["state"] == "ready").then_some(())
    });
}

/// A pool of an OAuth member (valid for long) and an API key, as the refusal tests use.
fn oauth_and_key_pool() -> String {
    let oauth = json!({
        "accessToken": OLD_ACCESS,
        "refreshToken": OLD_REFRESH,
        "expiresAt": common::credentials::FAR_FUTURE_MS
    });
    pool_file(&[
        json!({"id": "max-1", "type": "oauth", "oauth": oauth}),
        key_member("b", KEY_B),
    ])
}

fn refused() -> MockReply {
    MockReply::json(
        401,
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid token"}}"#,
    )
}

#[test]
fn a_refused_oauth_member_is_refreshed_once_and_tried_again_with_its_new_token() {
    let endpoint = TokenEndpoint::start(|_, _| token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600));
    let url = endpoint.url();
    let rig = Rig::start(
        Upstream::Plain,
        |request| match credential_of(request).as_str() {
            OLD_ACCESS => refused(),
            _ => success(request),
        },
        move |n| {
            n.env("OAUTH_TOKEN_URL", url)
                .credential(DOMAIN, &oauth_and_key_pool())
        },
    );
    // The first new conversation goes to the first member: max-1.
    assert_served(&rig.nexus.request(&messages("s-0", true)), true);
    let keys: Vec<String> = rig.mock.requests().iter().map(credential_of).collect();
    assert_eq!(
        keys,
        [OLD_ACCESS, NEW_ACCESS],
        "refreshed, then the same member again"
    );
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(member_stats(&rig.nexus, "max-1")["state"], "ready");
    let path = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    let saved = read_credential(&path);
    assert_eq!(saved["credentials"][0]["oauth"]["accessToken"], NEW_ACCESS);
    assert_eq!(saved["credentials"][1], key_member("b", KEY_B));
}

#[test]
fn an_oauth_member_still_refused_after_its_refresh_is_disabled_and_the_next_serves() {
    let endpoint = TokenEndpoint::start(|_, _| token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600));
    let url = endpoint.url();
    let rig = Rig::start(
        Upstream::Plain,
        |request| match credential_of(request).as_str() {
            KEY_B => success(request),
            _ => refused(),
        },
        move |n| {
            n.env("OAUTH_TOKEN_URL", url)
                .credential(DOMAIN, &oauth_and_key_pool())
        },
    );
    assert_served(&rig.nexus.request(&messages("s-0", false)), false);
    let keys: Vec<String> = rig.mock.requests().iter().map(credential_of).collect();
    assert_eq!(keys, [OLD_ACCESS, NEW_ACCESS, KEY_B]);
    assert_eq!(endpoint.calls(), 1, "refreshed once");
    assert_eq!(member_stats(&rig.nexus, "max-1")["state"], "disabled");
    assert_served(&rig.nexus.request(&messages("s-1", false)), false);
    assert_eq!(
        rig.mock.requests().len(),
        4,
        "a disabled member is not tried"
    );
    assert_eq!(endpoint.calls(), 1);
}

#[test]
fn requests_without_a_body_fail_over_and_a_streamed_body_is_never_sent_twice() {
    let rig = Rig::start(
        Upstream::Plain,
        |request| match (credential_of(request).as_str(), request.path()) {
            (KEY_A, _) => rate_limited("60"),
            (_, "/v1/models") => MockReply::json(200, r#"{"data":[]}"#),
            _ => MockReply::json(200, r#"{"id":"file_1"}"#),
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    // No body: the same request goes to b.
    let response = rig.nexus.request(&Request::get("/v1/models").host(DOMAIN));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), r#"{"data":[]}"#);
    let keys: Vec<String> = rig.mock.requests().iter().map(credential_of).collect();
    assert_eq!(keys, [KEY_A, KEY_B]);

    // A body that streams through (not a Messages one) cannot be sent again: a's 429 is
    // the answer. a rests now, so make it the only member left by a fresh pool.
    let path = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    std::fs::write(&path, pool_of(&[("a2", KEY_A), ("b", KEY_B)])).unwrap();
    wait_for(Duration::from_secs(6), "member a2", || {
        (member_stats(&rig.nexus, "a2")["state"] == "ready").then_some(())
    });
    let upload = || {
        Request::post("/v1/files")
            .host(DOMAIN)
            .header("content-type", "application/octet-stream")
            .body(vec![b'x'; 4096])
    };
    // New requests without a conversation key go to each member in turn: one of two
    // uploads starts with a2.
    let statuses: Vec<u16> = (0..2)
        .map(|_| rig.nexus.request(&upload()).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let uploads: Vec<String> = rig
        .mock
        .requests()
        .iter()
        .filter(|r| r.path() == "/v1/files")
        .map(credential_of)
        .collect();
    assert_eq!(uploads.len(), 2, "each upload sent once: {uploads:?}");
}

#[test]
fn a_stream_whose_first_event_is_overloaded_error_goes_to_the_next_member() {
    let overloaded_event = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let rig = Rig::start(
        Upstream::Plain,
        move |request| match credential_of(request).as_str() {
            KEY_A => MockReply::sse(vec![overloaded_event.to_string()]),
            _ => success(request),
        },
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    for i in 0..3 {
        let response = rig.nexus.request(&messages(&format!("s-{i}"), true));
        assert_served(&response, true);
    }
    assert_eq!(sent_with(&rig, KEY_A), 1);
    assert_eq!(sent_with(&rig, KEY_B), 3);
    assert_eq!(member_stats(&rig.nexus, "a")["state"], "cooling");
}

#[test]
fn a_pooled_stream_still_goes_out_event_by_event() {
    let events = stream_events();
    let gate = Gate::new();
    let reply = MockReply::sse_gated(events.clone(), gate.clone());
    let rig = Rig::start(
        Upstream::Plain,
        move |_| reply.clone(),
        |n| n.credential(DOMAIN, &pool_of(&[("a", KEY_A), ("b", KEY_B)])),
    );
    let mut client = rig.nexus.client();
    client.send(&messages("s-1", true)).expect("sending");
    let head = client
        .read_head()
        .expect("the head, with the first event read ahead");
    assert_eq!(head.status, 200);
    let mut sse = SseReader::new(client.body_stream("POST", &head).expect("framing"));
    for (i, expected) in events.iter().enumerate() {
        if i > 0 {
            gate.open_one();
        }
        let event = sse
            .next_event()
            .unwrap_or_else(|e| panic!("event {i} did not come through ({e})"))
            .unwrap_or_else(|| panic!("the stream ended after {i} events"));
        assert_eq!(&event.raw, expected, "event {i}");
    }
    assert_eq!(rig.mock.requests().len(), 1);
}
