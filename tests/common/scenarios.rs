//! End-to-end checks that run the same way over a plain and a TLS upstream.

use super::assertions::{assert_bytes_eq, assert_has_request_id, assert_same_end_to_end_headers};
use super::client::Request;
use super::fixtures::{messages_request_body, stream_events, MESSAGE_TEXT_JSON};
use super::http::{split_sizes, Headers};
use super::mock::{Gate, MockReply};
use super::nexus::NexusBuilder;
use super::rig::{Rig, Upstream};
use super::sse::SseReader;

/// The API key test clients present themselves.
pub const CLIENT_KEY: &str = "sk-ant-api03-client-key";

/// `POST /v1/messages` as an SDK sends it: API key, version, JSON body.
pub fn messages_request(body: impl Into<Vec<u8>>) -> Request {
    Request::post("/v1/messages")
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

/// A small streaming Messages request body.
pub fn stream_request_body() -> Vec<u8> {
    br#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"stream please"}]}"#.to_vec()
}

/// Response headers the mock sends in the round-trip checks: Anthropic's own, a repeated
/// one, and odd name case.
pub fn origin_response_headers() -> Headers {
    Headers::from_pairs(&[
        ("Content-Type", "application/json"),
        ("request-id", "req_011CNexusRoundTrip"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:00Z"),
        ("X-Mixed-CASE-Header", "Keep  This, Exactly ;"),
        ("Set-Cookie", "a=1; Path=/"),
        ("Set-Cookie", "b=2; Path=/"),
        ("Cache-Control", "no-store"),
    ])
}

/// Status, body and end-to-end headers arrive as the mock sent them; the request body and
/// the rewritten Host arrive at the mock.
pub fn non_streaming_round_trip(upstream: Upstream) {
    let sent = origin_response_headers();
    let reply = MockReply::new(200).headers(&sent).body(MESSAGE_TEXT_JSON);
    let rig = Rig::start(upstream, move |_| reply.clone(), |nexus| nexus);
    let body = messages_request_body("round-trip", 256 * 1024);

    let response = rig.nexus.request(&messages_request(body.clone()));

    assert_eq!(response.status, 200, "body: {}", response.text());
    assert_bytes_eq(
        &response.body,
        MESSAGE_TEXT_JSON.as_bytes(),
        "response body",
    );
    assert_same_end_to_end_headers(&sent, &response.headers);
    assert_has_request_id(&response);
    let seen = rig.mock.single_request();
    assert_bytes_eq(&seen.body, &body, "request body at the upstream");
    assert_eq!(
        seen.headers.get_all("host"),
        vec![rig.mock.authority().as_str()],
        "Host must name the upstream"
    );
}

/// A chunked request body reaches the mock as exactly the decoded bytes.
pub fn chunked_request_body(upstream: Upstream) {
    let rig = Rig::start(
        upstream,
        |_| MockReply::json(200, MESSAGE_TEXT_JSON),
        |nexus| nexus,
    );
    let body = messages_request_body("chunked", 150 * 1024);
    let chunks = split_sizes(&body, &[1, 7, 4096, 333, 65536]);
    assert!(chunks.len() > 5, "the body must span several chunks");
    let request = Request::post("/v1/messages")
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("Content-Type", "application/json")
        .chunked_body(chunks);

    let response = rig.nexus.request(&request);

    assert_eq!(response.status, 200, "body: {}", response.text());
    assert_bytes_eq(
        &rig.mock.single_request().body,
        &body,
        "decoded request body at the upstream",
    );
}

/// Each SSE event is released by the mock only after the previous one came out of nexus,
/// so a proxy that buffers the stream stalls here and the test fails on a 10 s read timeout.
pub fn sse_event_by_event(upstream: Upstream) {
    sse_event_by_event_via(upstream, |nexus| nexus);
}

/// [`sse_event_by_event`] through a nexus `configure` adjusts (e.g. serving HTTPS).
pub fn sse_event_by_event_via(
    upstream: Upstream,
    configure: impl FnOnce(NexusBuilder) -> NexusBuilder,
) {
    let mut events = stream_events();
    // Event types the proxy does not know must pass through too.
    events.insert(
        3,
        "event: nexus_test_future_event\ndata: {\"type\":\"nexus_test_future_event\"}\n\n".into(),
    );
    let gate = Gate::new();
    let reply = MockReply::sse_gated(events.clone(), gate.clone());
    let rig = Rig::start(upstream, move |_| reply.clone(), configure);
    let mut client = rig.nexus.client();
    client
        .send(&messages_request(stream_request_body()))
        .expect("sending the request");

    let head = client.read_head().unwrap_or_else(|e| {
        panic!("no response head through nexus ({e}); is it waiting for the whole stream?")
    });
    assert_eq!(head.status, 200);
    let content_type = head.headers.get("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("text/event-stream"),
        "content-type {content_type:?}"
    );
    let mut sse = SseReader::new(client.body_stream("POST", &head).expect("body framing"));
    for (i, expected) in events.iter().enumerate() {
        if i > 0 {
            gate.open_one();
        }
        let event = sse
            .next_event()
            .unwrap_or_else(|e| {
                panic!("event {i} did not come through nexus ({e}); is nexus buffering the stream?")
            })
            .unwrap_or_else(|| panic!("stream ended after {i} of {} events", events.len()));
        assert_eq!(&event.raw, expected, "event {i}");
    }
    assert_eq!(
        sse.next_event().expect("end of stream"),
        None,
        "nothing may follow message_stop"
    );
}
