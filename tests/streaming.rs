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
fn events_are_forwarded_whole_and_a_partial_event_waits_for_its_end() {
    // Design (hardening issue): SSE leaves nexus on event boundaries, so a client never
    // holds half an event if the upstream dies; a complete event is never held back.
    let first_event = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
    let partial = "event: content_block_delta\ndata: {\"type\":\"content_bl";
    let second = "ock_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let gate = Gate::new();
    let reply = MockReply::new(200)
        .header("Content-Type", "text/event-stream")
        .gated(
            vec![format!("{first_event}{partial}").into(), second.into()],
            gate.clone(),
        );
    let rig = Rig::plain(move |_| reply.clone());
    let mut client = rig.nexus.client();
    client
        .send(&messages_request(stream_request_body()))
        .unwrap();
    let head = client.read_head().expect("response head");
    assert!(
        head.headers.is_chunked(),
        "an SSE stream is relayed chunked: {:?}",
        head.headers
    );
    let mut body = client.body_stream("POST", &head).unwrap();

    // Read wire chunk by wire chunk. Checked by boundaries, not by waiting for silence: a
    // partial event sent on its own would show as a chunk that does not end an event,
    // whenever it arrived.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut early = Vec::new();
    while early.len() < first_event.len() {
        let chunk = body
            .next_bytes()
            .expect("the complete first event did not come through nexus")
            .expect("the stream ended before its first event");
        early.extend_from_slice(&chunk);
        chunks.push(chunk);
    }
    assert_eq!(String::from_utf8_lossy(&early), first_event);
    gate.wait_until_held();
    gate.open_one();
    let mut rest = Vec::new();
    while let Some(chunk) = body.next_bytes().expect("rest of the stream") {
        rest.extend_from_slice(&chunk);
        chunks.push(chunk);
    }
    assert_eq!(String::from_utf8_lossy(&rest), format!("{partial}{second}"));
    for chunk in &chunks {
        assert!(
            chunk.ends_with(b"\n\n"),
            "a chunk ends inside an event (half an event was forwarded): {:?}",
            String::from_utf8_lossy(chunk)
        );
    }
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

/// Between the events of a trickling stream nexus lets go of the connection's buffers;
/// a request pipelined behind the stream (already read into them) must survive that,
/// and the connection must serve it, and another, once the stream has ended.
#[test]
fn a_request_pipelined_behind_a_trickling_stream_is_answered_after_it() {
    let events = stream_events();
    let gate = Gate::new();
    let stream_reply = MockReply::sse_gated(events.clone(), gate.clone());
    let rig = Rig::plain(move |req| {
        if req.json()["stream"] == true {
            stream_reply.clone()
        } else {
            MockReply::json(200, r#"{"input_tokens":7}"#)
        }
    });
    let host = format!("localhost:{}", rig.nexus.addr().port());
    let count_tokens =
        messages_request(r#"{"model":"claude-sonnet-4-5","messages":[]}"#).to_bytes(&host);
    let mut both = messages_request(stream_request_body()).to_bytes(&host);
    both.extend_from_slice(&count_tokens);
    let mut client = rig.nexus.client();
    client.send_raw(&both).unwrap();

    let head = client.read_head().expect("stream head");
    let mut sse = SseReader::new(client.body_stream("POST", &head).unwrap());
    for (i, expected) in events.iter().enumerate() {
        if i > 0 {
            gate.open_one();
        }
        let event = sse.next_event().expect("event").expect("not the end yet");
        assert_eq!(&event.raw, expected, "event {i}");
    }
    assert_eq!(sse.next_event().expect("end of stream"), None);
    drop(sse);

    let pipelined = client
        .try_read_response("POST")
        .expect("the pipelined response");
    let after = client.request(&messages_request(
        r#"{"model":"claude-sonnet-4-5","messages":[]}"#,
    ));
    for response in [pipelined, after] {
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, r#"{"input_tokens":7}"#)
        );
    }
    assert_eq!(rig.mock.requests().len(), 3);
}
