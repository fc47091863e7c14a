//! Non-streaming pass-through over a plain-HTTP upstream: what the upstream sends is what
//! the client gets, and what the client sends is what the upstream gets.

mod common;

use common::scenarios;
use common::*;

#[test]
fn response_status_headers_and_body_and_request_body_pass_through_unchanged() {
    scenarios::non_streaming_round_trip(Upstream::Plain);
}

#[test]
fn chunked_request_body_reaches_the_upstream_as_the_decoded_bytes() {
    scenarios::chunked_request_body(Upstream::Plain);
}

#[test]
fn chunked_and_close_delimited_upstream_bodies_reach_the_client_whole() {
    let pieces: Vec<Vec<u8>> = vec![
        b"{\"data\":[".to_vec(),
        b"{\"id\":\"claude-a\"},".repeat(3000),
        b"{\"id\":\"z\"}]}".to_vec(),
    ];
    let chunked_body = pieces.concat();
    let close_body = b"{\"id\":\"claude-sonnet-4-5\",\"type\":\"model\"}".repeat(100);
    let (chunks, until_close) = (pieces.clone(), close_body.clone());
    let rig = Rig::plain(move |req| match req.path() {
        "/v1/models" => MockReply::new(200)
            .header("Content-Type", "application/json")
            .chunked(chunks.clone()),
        _ => MockReply::new(200)
            .header("Content-Type", "application/json")
            .until_close(until_close.clone()),
    });
    let mut client = rig.nexus.client();

    let chunked = client.request(&Request::get("/v1/models").header("x-api-key", CLIENT_KEY));
    let closed = client
        .request(&Request::get("/v1/models/claude-sonnet-4-5").header("x-api-key", CLIENT_KEY));

    assert_eq!(chunked.status, 200);
    assert_bytes_eq(&chunked.body, &chunked_body, "chunked upstream body");
    assert_eq!(closed.status, 200);
    assert_bytes_eq(&closed.body, &close_body, "close-delimited upstream body");
}

#[test]
fn upstream_error_responses_pass_through_untouched() {
    let rate_limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let rate_headers = Headers::from_pairs(&[
        ("Content-Type", "application/json"),
        ("retry-after", "17"),
        ("request-id", "req_rate"),
    ]);
    let overload_headers = Headers::from_pairs(&[
        ("Content-Type", "application/json"),
        ("x-should-retry", "true"),
    ]);
    let (h429, h529) = (rate_headers.clone(), overload_headers.clone());
    let rig = Rig::plain(move |req| match req.path() {
        "/v1/messages" => MockReply::new(429).headers(&h429).body(rate_limited),
        _ => MockReply::new(529).headers(&h529).body(overloaded),
    });
    let mut client = rig.nexus.client();

    let first = client.request(&messages_request("{}"));
    let second = client.request(
        &Request::post("/v1/messages/count_tokens")
            .header("x-api-key", CLIENT_KEY)
            .json("{}"),
    );

    assert_eq!((first.status, first.text().as_str()), (429, rate_limited));
    assert_same_end_to_end_headers(&rate_headers, &first.headers);
    assert_eq!((second.status, second.text().as_str()), (529, overloaded));
    assert_same_end_to_end_headers(&overload_headers, &second.headers);
    assert_has_request_id(&second);
}

#[test]
fn hop_by_hop_response_headers_are_not_forwarded_to_the_client() {
    let rig = Rig::plain(|_| {
        MockReply::json(200, "{}")
            .header("Connection", "X-Hop-Resp")
            .header("X-Hop-Resp", "upstream-only")
            .header("Keep-Alive", "timeout=30, max=7")
            .header("Proxy-Connection", "keep-alive")
            .header("Upgrade", "h2c")
            .header("Trailer", "X-Checksum")
            .header("X-End-To-End", "stays")
    });

    let response = rig.nexus.request(&messages_request("{}"));

    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-end-to-end"), Some("stays"));
    for name in ["x-hop-resp", "proxy-connection", "upgrade", "trailer"] {
        assert!(
            !response.headers.contains(name),
            "{name} leaked to the client: {:?}",
            response.headers
        );
    }
    // nexus may send its own Connection/Keep-Alive, but not the upstream's.
    assert!(!response
        .headers
        .get_all("connection")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("x-hop-resp")));
    assert_ne!(response.header("keep-alive"), Some("timeout=30, max=7"));
}

#[test]
fn request_without_body_reaches_the_upstream_without_one() {
    let rig = Rig::plain(|_| MockReply::json(200, r#"{"data":[]}"#));

    let response = rig
        .nexus
        .request(&Request::get("/v1/models").header("x-api-key", CLIENT_KEY));

    assert_eq!(response.status, 200);
    let seen = rig.mock.single_request();
    assert!(
        seen.body.is_empty() && !seen.chunked,
        "a GET must not grow a body: {seen:?}"
    );
}
