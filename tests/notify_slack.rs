//! Slack through the real binary: what a payload carries, which settings a domain's
//! messages use, and which requests send none. The many text cases are golden unit tests
//! beside the formatter (src/notify/slack.rs, src/notify/tools.rs); these show the real
//! payloads arrive.
//!
//! "Sends nothing" is checked by order, not by waiting: a worker delivers its Slack
//! messages one at a time in the order they were queued (src/notify/outbox.rs), and a
//! request's messages are queued before its connection reads the next request. So the
//! request that must send nothing goes first on a connection, one that must send goes after
//! it on the same connection, and once the second one's post has arrived the first one's
//! would have arrived before it.

mod common;
mod notify_support;

use common::*;
use notify_support::*;
use serde_json::json;

/// The tool line of the SSE fixture's `get_weather` call.
const WEATHER_LINE: &str = r#"🔧 get_weather - {"location": "Paris, FR", "unit": "celsius"}"#;

#[test]
fn a_payload_carries_text_channel_username_icon_and_the_request_id() {
    let slack = sink();
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.env(
            "SLACK_WEBHOOK_URL",
            hook_url(&slack, "/services/T000/B000/XXXX"),
        )
        .env("SLACK_CHANNEL", "#nexus-test")
        .env("SLACK_USERNAME", "Nexus Test Bot")
        .env("SLACK_ICON_EMOJI", ":satellite:")
    });
    let ask = |text: &str| {
        // Counted before the request: its post may land before the response is read.
        let posted = slack.requests().len();
        let response = rig
            .nexus
            .request(&messages_request(tagged_body("stream", true, None, text)));
        assert_eq!(response.status, 200);
        let id = id_of(&response);
        let posts = slack.wait_for_requests(posted + 1);
        let post = posts.last().unwrap();
        assert_eq!(post.target, "/services/T000/B000/XXXX");
        (id, post.json())
    };

    let (first_id, first) = ask("What is the weather in Paris?");
    let (second_id, second) = ask("What is the weather in Paris?");
    let (third_id, third) = ask("And in Lyon?");

    assert_eq!(first["channel"], "#nexus-test");
    assert_eq!(first["username"], "Nexus Test Bot");
    assert_eq!(first["icon_emoji"], ":satellite:");
    assert_eq!(
        first["text"],
        format!(
            "👤 User: What is the weather in Paris?\n\n🤖 Claude: Streamed through nexus, event by event.\n{WEATHER_LINE}\n_request {first_id}_"
        )
    );
    // The same user message again: only Claude's part.
    assert_eq!(
        second["text"],
        format!("🤖 Claude: Streamed through nexus, event by event.\n{WEATHER_LINE}\n_request {second_id}_")
    );
    assert_eq!(
        slack_text(&third),
        format!("👤 User: And in Lyon?\n\n🤖 Claude: Streamed through nexus, event by event.\n{WEATHER_LINE}")
    );
    assert_eq!(request_id_of(&third).as_deref(), Some(third_id.as_str()));
}

#[test]
fn a_domains_own_settings_beat_the_global_ones_and_enabled_false_sends_nothing() {
    let global = sink();
    let team = sink();
    let team_file = json!({
        "type": "api_key",
        "api_key": "sk-ant-api03-team-key-0000000000",
        "slack": {
            "webhook_url": hook_url(&team, "/services/TEAM"),
            "channel": "#team",
            "username": "Team Monitor",
            "icon_emoji": ":lock:",
            "enabled": true
        }
    });
    let quiet_file = json!({
        "type": "api_key",
        "api_key": "sk-ant-api03-quiet-key-000000000",
        "slack": {"enabled": false}
    });
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.env("SLACK_WEBHOOK_URL", hook_url(&global, "/services/GLOBAL"))
            .env("SLACK_CHANNEL", "#global")
            .credential("team.example.com", &team_file.to_string())
            .credential("quiet.example.com", &quiet_file.to_string())
    });
    // One connection: one worker, one outbox, requests queued in this order.
    let mut client = rig.nexus.client();
    let mut send = |host: &str| {
        let response = client.request(
            &Request::post("/v1/messages")
                .host(host)
                .header("anthropic-version", "2023-06-01")
                .header("x-api-key", CLIENT_KEY)
                .json(tagged_body(
                    "json",
                    false,
                    None,
                    &format!("hello from {host}"),
                )),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        id_of(&response)
    };

    let quiet_id = send("quiet.example.com");
    let team_id = send("team.example.com");
    let other_id = send("other.example.com");

    let to_team = &post_for(&team, &team_id);
    assert_eq!(to_team["channel"], "#team");
    assert_eq!(to_team["username"], "Team Monitor");
    assert_eq!(to_team["icon_emoji"], ":lock:");
    assert_eq!(
        slack_text(to_team),
        "👤 User: hello from team.example.com\n\n🤖 Claude: Nexus relayed this reply intact: ünïcödé ✓."
    );
    let to_global = &post_for(&global, &other_id);
    assert_eq!(to_global["channel"], "#global");
    assert_eq!(
        to_global["username"], "Claude Nexus Proxy",
        "the seed's default"
    );
    assert_eq!(
        to_global["icon_emoji"], ":robot_face:",
        "the seed's default"
    );

    // The quiet request was queued first; both later posts are in, so its would be too.
    assert_eq!(team.requests().len(), 1);
    assert_eq!(global.requests().len(), 1);
    for post in team.requests().iter().chain(global.requests().iter()) {
        assert!(
            !post.body_text().contains(&quiet_id),
            "enabled:false sent {post:?}"
        );
    }
    assert_eq!(
        dropped(&rig.nexus, "slack"),
        0,
        "a dropped event would make the order prove nothing"
    );
}

#[test]
fn an_upstream_error_is_sent_as_an_error_and_a_query_evaluation_sends_nothing() {
    let slack = sink();
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.env("SLACK_WEBHOOK_URL", hook_url(&slack, "/services/X"))
    });
    // One connection: one worker, one outbox, requests queued in this order.
    let mut client = rig.nexus.client();
    let mut send = |tag: &str, system: Option<&str>, status: u16| {
        let response = client.request(&messages_request(tagged_body(tag, false, system, "please")));
        assert_eq!(response.status, status, "{}", response.text());
        id_of(&response)
    };

    let evaluation_id = send("json", Some("Answer yes or no."), 200);
    let error_id = send("limit", None, 429);

    assert_eq!(
        slack_text(&post_for(&slack, &error_id)),
        "👤 User: please\n\n❌ Error: rate_limit_error (HTTP 429)"
    );
    // The evaluation was queued before the error, whose post is in: its own would be too.
    assert_eq!(
        slack.requests().len(),
        1,
        "the query evaluation {evaluation_id} must send nothing: {:?}",
        slack.requests()
    );
    assert_eq!(dropped(&rig.nexus, "slack"), 0);
}

#[test]
fn the_context_line_names_the_named_client_and_never_shows_its_key() {
    let slack = sink();
    let (rig, _clients) =
        with_named_client(|n| n.env("SLACK_WEBHOOK_URL", hook_url(&slack, "/services/X")));
    let mut client = rig.nexus.client();
    let mut send = |key: &str, text: &str| {
        send_with_key(&mut client, key, tagged_body("stream", true, None, text))
    };
    let named = send(NAMED_CLIENT_KEY, "from alice");
    let unnamed = send(CLIENT_KEY, "from someone");

    let to_named = post_for(&slack, &named);
    assert_eq!(
        slack_context(&to_named),
        Some((named.clone(), Some(NAMED_CLIENT.to_string()))),
        "{to_named:#}"
    );
    assert!(
        slack_text(&to_named).starts_with("👤 User: from alice\n"),
        "{to_named:#}"
    );
    let to_unnamed = post_for(&slack, &unnamed);
    assert_eq!(
        slack_context(&to_unnamed),
        Some((unnamed.clone(), None)),
        "an unnamed key: no client, {to_unnamed:#}"
    );
    for post in slack.requests() {
        assert_masked(&post.body_text(), &[NAMED_CLIENT_KEY], "a Slack message");
    }
}
