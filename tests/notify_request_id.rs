//! One request, one id: in the response header, the telemetry event, the Slack payload and
//! the access-log line; the upstream's own `request-id` passes through untouched.

mod common;
mod notify_support;

use common::*;
use notify_support::*;

#[test]
fn the_same_id_is_in_the_header_telemetry_slack_and_the_log_line() {
    let telemetry = sink();
    let slack = sink();
    let rig = Rig::start(
        Upstream::Plain,
        |request| upstream_reply(request).header("request-id", "req_011CUpstreamOwnId"),
        |n| {
            n.env("TELEMETRY_ENDPOINT", hook_url(&telemetry, "/t"))
                .env("SLACK_WEBHOOK_URL", hook_url(&slack, "/services/X"))
                .env("NEXUS_LOG", "info")
        },
    );

    let response = rig.nexus.request(
        &messages_request(tagged_body("stream", true, None, "hi")).host("ids.example.com"),
    );

    assert_eq!(response.status, 200);
    let id = id_of(&response);
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(id.as_bytes()[14], b'7', "version 7 (time-ordered): {id}");
    assert_eq!(response.header("request-id"), Some("req_011CUpstreamOwnId"));
    let event = telemetry.wait_for_requests(1)[0].json();
    assert_eq!(event["requestId"], id.as_str());
    let payload = slack.wait_for_requests(1)[0].json();
    assert_eq!(request_id_of(&payload).as_deref(), Some(id.as_str()));
    let line = wait_for_log_line(&rig.nexus, &[&id, "POST /v1/messages"]);
    for part in [
        " INFO ",
        "ids.example.com POST /v1/messages 200 ",
        "tokens in=21 out=64 cache_read=512 cache_write=3",
    ] {
        assert!(
            line.contains(part),
            "access-log line {line:?} lacks {part:?}"
        );
    }
    // Timestamp first (ISO 8601 UTC), then level, then the worker.
    let fields: Vec<&str> = line
        .trim_start_matches("[stderr] ")
        .split_whitespace()
        .collect();
    assert!(
        fields[0].ends_with('Z') && fields[0].contains('T'),
        "{line}"
    );
    assert!(fields[2].starts_with('w'), "worker id: {line}");
}

#[test]
fn requests_nexus_answers_itself_get_an_access_log_line_too() {
    let rig = Rig::plain(upstream_reply);
    let response = rig.nexus.request(&Request::get("/metrics"));
    assert_eq!(response.status, 200);
    let id = id_of(&response);
    wait_for_log_line(&rig.nexus, &[&id, "GET /metrics 200"]);
}
