//! Upstream failures become Anthropic-shaped 502/504 answers and harm nobody else.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

/// An address on which nothing listens (bound once, then released).
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[test]
fn upstream_refusing_connections_is_502_and_nexus_keeps_serving() {
    let mut nexus = Nexus::builder().upstream(&closed_port_url()).start();
    let started = Instant::now();

    let response = nexus.request(&messages_request("{}"));

    assert_anthropic_error(&response, 502, "api_error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refused connection took {:?}",
        started.elapsed()
    );
    // Still serving; `GET /` now tells the truth about the upstream (check_health.rs).
    let health = nexus.request(&Request::get("/"));
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "degraded");
    nexus.assert_alive();
}

#[test]
fn upstream_that_never_answers_is_504_after_upstream_timeout_secs() {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::never(),
        |n| n.env("UPSTREAM_TIMEOUT_SECS", "1"),
    );
    let started = Instant::now();

    let response = rig.nexus.request(&messages_request("{}"));

    let waited = started.elapsed();
    assert_anthropic_error(&response, 504, "timeout_error");
    assert!(
        waited >= Duration::from_millis(900),
        "504 after only {waited:?}: the 1 s timeout was not waited out"
    );
    assert!(
        waited < Duration::from_secs(8),
        "504 took {waited:?} with UPSTREAM_TIMEOUT_SECS=1"
    );
    assert_eq!(
        rig.mock.requests().len(),
        1,
        "a timed-out request must not be retried"
    );
}

#[test]
fn a_hanging_upstream_request_does_not_block_others_on_the_same_worker() {
    let rig = Rig::start(
        Upstream::Plain,
        |req| match req.path() {
            "/v1/messages" => MockReply::never(),
            _ => MockReply::json(200, r#"{"data":[]}"#),
        },
        // Long enough that the hung request is surely still pending while the other runs.
        |n| n.workers(1).env("UPSTREAM_TIMEOUT_SECS", "5"),
    );
    let mut hung = rig.nexus.client();
    hung.send(&messages_request("{}")).unwrap();
    rig.mock.wait_for_holding(1);

    let other = rig
        .nexus
        .request(&Request::get("/v1/models").header("x-api-key", CLIENT_KEY));

    assert_eq!(
        (other.status, other.text().as_str()),
        (200, r#"{"data":[]}"#)
    );
    // Order, not a stopwatch: one worker, so had the hung request blocked it, the other
    // would have been served only after the hung one's 504 was written.
    assert!(
        !hung.response_ready(),
        "the other request was served only after the hung one was answered"
    );
    let late = hung
        .try_read_response("POST")
        .expect("the hung request's eventual answer");
    assert_anthropic_error(&late, 504, "timeout_error");
}

#[test]
fn a_malformed_upstream_response_is_502() {
    let rig = Rig::plain(|_| MockReply::raw("SSH-2.0-OpenSSH_9.2\r\n\r\n"));

    let response = rig.nexus.request(&messages_request("{}"));

    assert_anthropic_error(&response, 502, "api_error");
}

#[test]
fn an_upstream_closing_without_answering_is_502() {
    let rig = Rig::plain(|_| MockReply::raw(""));

    let response = rig.nexus.request(&messages_request("{}"));

    assert_anthropic_error(&response, 502, "api_error");
}
