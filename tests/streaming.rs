//! Streaming (SSE) pass-through: events leave nexus as they arrive, untouched.

mod common;

use common::fixtures::stream_events;
use common::scenarios;
use common::*;

#[test]
fn sse_events_are_relayed_one_at_a_time_as_the_upstream_sends_them() {
    scenarios::sse_event_by_event(Upstream::Plain);
}

#[test]
fn the_first_half_of_an_event_is_forwarded_before_the_second_half_exists() {
    // Design: response bytes go to the client as they arrive, not at event boundaries.
    let first = "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {\"type\":\"content_bl";
    let second = "ock_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let gate = Gate::new();
    let reply = MockReply::new(200)
        .header("Content-Type", "text/event-stream")
        .gated(vec![first.into(), second.into()], gate.clone());
    let rig = Rig::plain(move |_| reply.clone());
    let mut client = rig.nexus.client();
    client
        .send(&messages_request(stream_request_body()))
        .unwrap();
    let head = client.read_head().expect("response head");
    let mut body = client.body_stream("POST", &head).unwrap();

    let early = body.read_at_least(first.len()).unwrap_or_else(|e| {
        panic!(
            "the bytes sent so far did not come through nexus ({e}); is it holding partial events?"
        )
    });
    assert_eq!(String::from_utf8_lossy(&early), first);
    gate.open_one();
    let rest = body.read_to_end().expect("rest of the stream");
    assert_eq!(String::from_utf8_lossy(&rest), second);
}

#[test]
fn an_error_event_after_a_200_status_reaches_the_client() {
    let events = vec![
        stream_events()[0].clone(),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_string(),
    ];
    let expected = events.concat();
    let rig = Rig::plain(move |_| MockReply::sse(events.clone()));
    let mut client = rig.nexus.client();
    client
        .send(&messages_request(stream_request_body()))
        .unwrap();
    let head = client.read_head().expect("response head");

    let body = client
        .body_stream("POST", &head)
        .unwrap()
        .read_to_end()
        .expect("whole stream");

    assert_eq!(head.status, 200);
    assert_eq!(String::from_utf8_lossy(&body), expected);
}

#[test]
fn the_client_connection_serves_another_request_after_a_stream() {
    let rig = Rig::plain(|req| {
        if req.json()["stream"] == true {
            MockReply::sse(stream_events())
        } else {
            MockReply::json(200, r#"{"input_tokens":7}"#)
        }
    });
    let mut client = rig.nexus.client();
    client
        .send(&messages_request(stream_request_body()))
        .unwrap();
    let head = client.read_head().expect("stream head");
    let streamed = client
        .body_stream("POST", &head)
        .unwrap()
        .read_to_end()
        .expect("whole stream");

    let after = client.request(&messages_request(
        r#"{"model":"claude-sonnet-4-5","messages":[]}"#,
    ));

    assert_eq!(String::from_utf8_lossy(&streamed), stream_events().concat());
    assert_eq!(
        (after.status, after.text().as_str()),
        (200, r#"{"input_tokens":7}"#)
    );
    assert_eq!(rig.mock.requests().len(), 2);
}
