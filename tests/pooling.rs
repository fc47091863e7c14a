//! Upstream connection reuse, stale pooled connections, and request body limits.

mod common;

use std::time::Duration;

use common::*;

/// The largest buffered request body nexus accepts (32 MiB).
const BODY_LIMIT: usize = 32 * 1024 * 1024;

#[test]
fn two_hundred_sequential_requests_use_at_most_two_upstream_connections() {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, r#"{"ok":true}"#),
        |n| n.workers(1),
    );
    let mut client = rig.nexus.client();

    for i in 0..200 {
        let response = client.request(&messages_request(format!("{{\"n\":{i}}}")));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
    }

    assert_eq!(rig.mock.requests().len(), 200);
    assert!(
        rig.mock.connections() <= 2,
        "200 keep-alive requests opened {} upstream connections",
        rig.mock.connections()
    );
}

#[test]
fn upstream_closing_idle_connections_causes_no_errors_and_no_duplicate_posts() {
    let mock = MockUpstream::builder()
        .idle_close(Duration::from_secs(1))
        .start(|_| MockReply::json(200, "{}"));
    let rig = Rig::around(mock, |n| n.workers(1));
    let mut client = rig.nexus.client();
    let bodies: Vec<String> = (0..4)
        .map(|i| format!("{{\"unique\":\"post-{i}-{}\"}}", std::process::id()))
        .collect();

    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            // The pooled connection is closed by now: the mock says so after closing it.
            rig.mock.wait_for_idle_closes(i);
        }
        let response = client.request(&messages_request(body.as_str()));
        assert_eq!(
            response.status,
            200,
            "request {i} after an idle gap: {}",
            response.text()
        );
    }

    let seen = rig.mock.requests();
    for body in &bodies {
        let copies = seen.iter().filter(|r| r.body == body.as_bytes()).count();
        assert_eq!(copies, 1, "body {body} reached the upstream {copies} times");
    }
    assert!(
        rig.mock.connections() >= bodies.len(),
        "the mock should have closed every idle connection"
    );
}

#[test]
fn oversize_content_length_is_413_before_any_upstream_connection() {
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));

    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let mut client = rig.nexus.client();
        // Only the head: nexus must answer from the declared length alone.
        let head = Request::post(path)
            .header("x-api-key", CLIENT_KEY)
            .header("Content-Length", "40000000")
            .body("");
        let response = client.request(&head);
        assert_anthropic_error(&response, 413, "request_too_large");
    }

    assert_no_upstream_contact(&rig.mock);
}

#[test]
fn a_body_of_exactly_the_limit_is_forwarded() {
    // "Up to 32 MiB" read as inclusive.
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));
    let body = vec![b'x'; BODY_LIMIT];

    let response = rig.nexus.request(
        &Request::post("/v1/messages/count_tokens")
            .header("x-api-key", CLIENT_KEY)
            .body(body.clone()),
    );

    assert_eq!(response.status, 200, "body: {}", response.text());
    assert_bytes_eq(
        &rig.mock.single_request().body,
        &body,
        "32 MiB body at the upstream",
    );
}
