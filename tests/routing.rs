//! Which requests nexus forwards, answers itself, or refuses.

mod common;

use common::*;

#[test]
fn v1_requests_reach_the_upstream_with_method_path_and_query_intact() {
    let rig = Rig::plain(|req| MockReply::json(200, format!("{{\"target\":{:?}}}", req.target)));
    let requests = [
        Request::post("/v1/messages?beta=true").json("{}"),
        Request::post("/v1/messages/count_tokens").json("{}"),
        Request::get("/v1/models?limit=5"),
        Request::get("/v1/models?after_id=claude%2Fa&limit=5&x=%E2%9C%93"),
        Request::new(
            "DELETE",
            "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        ),
        Request::post("/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/cancel").json(""),
    ];
    let mut client = rig.nexus.client();

    for request in &requests {
        let response = client.request(&request.clone().header("x-api-key", CLIENT_KEY));
        assert_eq!(
            response.status,
            200,
            "{} {}: {}",
            request.method,
            request.target,
            response.text()
        );
        assert_eq!(response.json()["target"], request.target.as_str());
    }

    let seen: Vec<(String, String)> = rig
        .mock
        .requests()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    let sent: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.target.clone()))
        .collect();
    assert_eq!(seen, sent);
}

#[test]
fn health_answers_get_and_head_without_secrets_or_upstream() {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| n.api_key("sk-ant-api03-SECRET-health"),
    );
    let mut client = rig.nexus.client();

    let get = client.request(&Request::get("/"));
    let head = client.request(&Request::new("HEAD", "/"));
    // If HEAD had carried body bytes, this response would not parse.
    let again = client.request(&Request::get("/"));

    assert_eq!(get.status, 200);
    assert!(get.json().is_object(), "health body: {}", get.text());
    assert_has_request_id(&get);
    assert!(
        !get.text().contains("SECRET"),
        "health leaks the API key: {}",
        get.text()
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_has_request_id(&head);
    assert_eq!(again.status, 200);
    assert_no_upstream_contact(&rig.mock);
}

#[test]
fn unknown_paths_are_404_in_the_anthropic_shape() {
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));
    let mut client = rig.nexus.client();

    for target in ["/nope", "/v2/messages", "/messages"] {
        let response = client.request(&Request::get(target).header("x-api-key", CLIENT_KEY));
        assert_anthropic_error(&response, 404, "not_found_error");
    }
    assert_no_upstream_contact(&rig.mock);
}

#[test]
fn wrong_method_on_a_known_path_is_405() {
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));
    let mut client = rig.nexus.client();

    for method in ["DELETE", "POST", "PUT"] {
        let response = client.request(&Request::new(method, "/").body(""));
        assert_anthropic_error(&response, 405, "invalid_request_error");
    }
    assert_no_upstream_contact(&rig.mock);
}

#[test]
fn an_error_answer_to_head_has_no_body_and_keeps_the_connection_in_step() {
    use std::io::{Read, Write};
    // No credential anywhere: HEAD /v1/models is answered 401 by nexus itself.
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));
    let mut s = std::net::TcpStream::connect(rig.nexus.addr()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"HEAD /v1/models HTTP/1.1\r\nHost: a.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut both = String::new();
    s.read_to_string(&mut both).unwrap();
    let (first, rest) = both.split_once("\r\n\r\n").expect("a first response head");
    assert!(first.starts_with("HTTP/1.1 401 "), "{first}");
    assert!(
        first.to_ascii_lowercase().contains("content-length: "),
        "{first}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200 "),
        "a body followed the HEAD answer: {rest:?}"
    );
}
