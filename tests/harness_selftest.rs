//! Checks the test harness itself: client ↔ mock over plain TCP and TLS, body framings,
//! the SSE gate, idle close, the small parsers, and (the one test that starts nexus) that
//! the no-upstream-contact check does catch a contact.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::http::{self, Framing, Headers};
use common::nexus::parse_listen_addr;
use common::process::ChildGuard;
use common::sse::split_events;
use common::tls::{client_config_from_pem, read_pem_certs, TlsSetup};
use common::{Client, Gate, MockReply, MockUpstream, Request, SseReader};

#[test]
fn mock_records_requests_and_replies_with_headers_in_order_on_one_connection() {
    let mock = MockUpstream::start(|req| {
        MockReply::json(201, format!("{{\"echo\":\"{}\"}}", req.target))
            .header("X-First", "1")
            .header("x-SECOND", "two words")
            .header("X-First", "again")
    });
    let mut client = Client::connect(mock.addr());
    let first = client.request(
        &Request::post("/v1/messages?beta=true")
            .header("X-Case", "MiXeD")
            .body("hello"),
    );
    let second = client.request(&Request::get("/v1/models?limit=5"));

    assert_eq!(first.status, 201);
    assert_eq!(first.text(), r#"{"echo":"/v1/messages?beta=true"}"#);
    let names: Vec<&str> = first.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Content-Type",
            "X-First",
            "x-SECOND",
            "X-First",
            "Content-Length"
        ]
    );
    assert_eq!(first.headers.get_all("x-first"), ["1", "again"]);
    assert_eq!(second.text(), r#"{"echo":"/v1/models?limit=5"}"#);
    let seen = mock.wait_for_requests(2);
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].path(),
            seen[0].body.as_slice()
        ),
        ("POST", "/v1/messages", &b"hello"[..])
    );
    assert_eq!(
        seen[0].headers.0[1],
        ("X-Case".to_string(), "MiXeD".to_string()),
        "order and case kept"
    );
    assert_eq!(
        seen[0].headers.get("host"),
        Some(mock.addr().to_string().as_str())
    );
    assert_eq!(
        (seen[1].conn, seen[1].seq, seen[1].method.as_str()),
        (0, 1, "GET")
    );
    assert_eq!(
        mock.connections(),
        1,
        "keep-alive must reuse the connection"
    );
}

#[test]
fn chunked_request_is_decoded_and_every_response_framing_is_read() {
    let mock = MockUpstream::start(|req| match req.path() {
        "/chunked" => {
            MockReply::new(200).chunked(vec![b"ab".to_vec(), b"c".repeat(5000), b"\n".to_vec()])
        }
        "/close" => MockReply::new(200).until_close("until the end"),
        _ => MockReply::new(204),
    });
    let body = b"0123456789".repeat(1000);
    let mut client = Client::connect(mock.addr());
    let response = client
        .request(&Request::post("/upload").chunked_body(http::split_sizes(&body, &[1, 999, 7])));
    assert_eq!(response.status, 204);
    let chunked = client.request(&Request::get("/chunked"));
    assert_eq!(
        chunked.body,
        [b"ab".to_vec(), b"c".repeat(5000), b"\n".to_vec()].concat()
    );
    let close = client.request(&Request::get("/close"));
    assert_eq!(close.text(), "until the end");
    assert!(
        client.closed_by_peer(),
        "a close-delimited reply ends the connection"
    );

    let upload = &mock.requests()[0];
    assert!(upload.chunked);
    assert_eq!(upload.body, body);
}

#[test]
fn sse_gate_holds_each_event_until_the_test_opens_it() {
    let events = vec![
        "event: a\ndata: 1\n\n".to_string(),
        "event: b\ndata: {\"x\":2}\n\n".into(),
        "data: 3\n\n".into(),
    ];
    let gate = Gate::new();
    let reply = MockReply::sse_gated(events.clone(), gate.clone());
    let mock = MockUpstream::start(move |_| reply.clone());
    let mut client = Client::connect(mock.addr());
    client
        .send(&Request::post("/v1/messages").body("{}"))
        .unwrap();
    let head = client.read_head().unwrap();
    assert_eq!(
        head.headers.get("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let mut sse = SseReader::new(client_body(&mut client, &head));

    let first = sse.next_event().unwrap().unwrap();
    assert_eq!((first.name(), first.data().as_str()), (Some("a"), "1"));
    drop(sse);
    // The mock is parked at the gate: had it written event b first, b would be here now.
    gate.wait_until_held();
    assert!(!client.response_ready(), "event b must wait for the gate");
    let mut sse = SseReader::new(client_body(&mut client, &head));
    gate.open_one();
    assert_eq!(sse.next_event().unwrap().unwrap().data(), "{\"x\":2}");
    gate.open_one();
    assert_eq!(sse.next_event().unwrap().unwrap().raw, events[2]);
    assert_eq!(sse.next_event().unwrap(), None);
}

fn client_body<'a>(
    client: &'a mut Client,
    head: &common::client::ResponseHead,
) -> common::client::BodyStream<'a> {
    client.body_stream("POST", head).unwrap()
}

#[test]
fn tls_mock_is_trusted_through_the_written_ca_file_only() {
    let trusted = TlsSetup::trusted();
    assert_eq!(
        read_pem_certs(trusted.ca_file()).len(),
        1,
        "the trust file holds the CA"
    );
    let mock = MockUpstream::builder()
        .tls(trusted.server_config())
        .start(|_| MockReply::json(200, "{\"tls\":true}"));
    assert!(mock.url().starts_with("https://localhost:"));
    let mut client = Client::connect_tls(mock.addr(), client_config_from_pem(trusted.ca_file()))
        .expect("TLS handshake");
    assert_eq!(
        client.request(&Request::get("/v1/models")).text(),
        "{\"tls\":true}"
    );
    assert_eq!(client.request(&Request::get("/v1/models")).status, 200);
    assert_eq!(mock.connections(), 1);

    let self_signed = TlsSetup::self_signed();
    let direct = MockUpstream::builder()
        .tls(self_signed.server_config())
        .start(|_| MockReply::new(204));
    let mut client =
        Client::connect_tls(direct.addr(), client_config_from_pem(self_signed.ca_file()))
            .expect("a self-signed certificate trusted as its own root");
    assert_eq!(client.request(&Request::get("/")).status, 204);

    let untrusted = TlsSetup::untrusted();
    let stranger = MockUpstream::builder()
        .tls(untrusted.server_config())
        .start(|_| MockReply::new(200));
    let refused = Client::connect_tls(stranger.addr(), client_config_from_pem(untrusted.ca_file()));
    let error = refused
        .err()
        .expect("a certificate from another CA must be rejected");
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
}

#[test]
fn idle_close_ends_a_quiet_connection_and_default_keeps_it() {
    let closing = MockUpstream::builder()
        .idle_close(Duration::from_secs(1))
        .start(|_| MockReply::new(200));
    let keeping = MockUpstream::start(|_| MockReply::new(200));
    let mut a = Client::connect(closing.addr());
    let mut b = Client::connect(keeping.addr());
    assert_eq!(a.request(&Request::get("/")).status, 200);
    assert_eq!(b.request(&Request::get("/")).status, 200);
    let idle_since = Instant::now();
    assert!(
        a.closed_by_peer(),
        "idle_close(1s) must close the connection"
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed after only {:?} idle",
        idle_since.elapsed()
    );
    closing.wait_for_idle_closes(1);
    // b has been idle at least as long as a was when it was closed.
    assert_eq!(
        b.request(&Request::get("/")).status,
        200,
        "without idle_close the connection stays usable"
    );
    assert_eq!(keeping.idle_closes(), 0);
}

#[test]
fn random_idle_close_closes_after_each_reply_within_its_bound() {
    let seed = common::rng::test_seed("random_idle_close");
    let mock = MockUpstream::builder()
        .idle_close_random(Duration::from_millis(300), seed)
        .start(|_| MockReply::new(200));
    for n in 1..=3 {
        let mut client = Client::connect(mock.addr());
        assert_eq!(client.request(&Request::get("/")).status, 200);
        let idle_since = Instant::now();
        assert!(client.closed_by_peer(), "connection {n} was kept open");
        mock.wait_for_idle_closes(n);
        // The bound is 300 ms; the rest is room for a loaded machine.
        assert!(
            idle_since.elapsed() < Duration::from_secs(5),
            "connection {n} closed after {:?}",
            idle_since.elapsed()
        );
    }
    // Draws are a function of (seed, connection, idle period), whatever the thread order.
    assert_eq!(
        common::rng::hash3(seed, 1, 2),
        common::rng::hash3(seed, 1, 2)
    );
    assert_ne!(
        common::rng::hash3(seed, 1, 2),
        common::rng::hash3(seed, 2, 1)
    );
}

#[test]
fn delay_never_and_raw_replies() {
    let mock = MockUpstream::start(|req| match req.path() {
        "/slow" => MockReply::new(200).delay(Duration::from_millis(300)),
        "/never" => MockReply::never(),
        _ => MockReply::raw("this is not http\r\n\r\n"),
    });
    let started = Instant::now();
    assert_eq!(
        Client::connect(mock.addr())
            .request(&Request::get("/slow"))
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let mut waiting = Client::connect(mock.addr());
    waiting.send(&Request::get("/never")).unwrap();
    // Parked in the never-reply: anything it had written would be readable by now.
    mock.wait_for_holding(1);
    assert!(!waiting.response_ready(), "a never-reply answered");

    let error = Client::connect(mock.addr())
        .try_request(&Request::get("/raw"))
        .expect_err("garbage is not a response");
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error:?}");
    assert_eq!(mock.wait_for_requests(3).len(), 3);
    assert_eq!(mock.connections(), 3);
}

#[test]
fn parsers_and_helpers() {
    let line = "nexus 0.1.0 listening on 127.0.0.1:40123, 2 workers, driver io_uring, upstream http://127.0.0.1:5000";
    assert_eq!(
        parse_listen_addr(line),
        Some("127.0.0.1:40123".parse().unwrap())
    );
    assert_eq!(
        parse_listen_addr("listening on 127.0.0.1:9"),
        Some("127.0.0.1:9".parse().unwrap())
    );
    assert_eq!(parse_listen_addr("starting up"), None);

    let events = split_events("event: a\ndata: 1\n\ndata: x\ndata: y\n\n");
    assert_eq!(events, ["event: a\ndata: 1\n\n", "data: x\ndata: y\n\n"]);

    let chunked = Headers::from_pairs(&[
        ("Transfer-Encoding", "gzip, chunked"),
        ("Content-Length", "5"),
    ]);
    assert_eq!(Framing::of_request(&chunked).unwrap(), Framing::Chunked);
    let conflicting = Headers::from_pairs(&[("Content-Length", "5"), ("content-length", "6")]);
    assert!(conflicting.content_length().is_err());
    assert_eq!(
        Framing::of_response(
            "HEAD",
            200,
            &Headers::from_pairs(&[("Content-Length", "9")])
        )
        .unwrap(),
        Framing::Empty
    );
    assert_eq!(
        Framing::of_response("GET", 200, &Headers::default()).unwrap(),
        Framing::UntilClose
    );
    let wire = Request::post("/x")
        .host("h")
        .header("Content-Length", "40000000")
        .body("")
        .to_bytes("ignored");
    assert_eq!(
        wire,
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 40000000\r\n\r\n"
    );
}

#[test]
fn metrics_values_and_the_seeded_generator() {
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\na_total_x 9\n\
                b{sink=\"slack\"} 2\nb{sink=\"telemetry\"} 5\n";
    assert_eq!(common::metrics::value(text, "a_total"), Some(3.0));
    assert_eq!(
        common::metrics::value(text, "b{sink=\"telemetry\"}"),
        Some(5.0)
    );
    assert_eq!(common::metrics::value(text, "b"), None);
    assert_eq!(common::metrics::value(text, "a"), None);

    let draws = |seed| {
        let mut rng = common::rng::Rng::new(seed);
        (0..5).map(|_| rng.up_to(300)).collect::<Vec<_>>()
    };
    assert_eq!(draws(7), draws(7));
    assert_ne!(draws(7), draws(8));
    assert!(draws(7).iter().all(|&d| d <= 300));
}

#[test]
#[should_panic(expected = "nexus opened 1 and reused 0 upstream connections")]
fn the_no_contact_check_catches_a_forwarded_request() {
    let rig = common::Rig::plain(|_| MockReply::json(200, "{}"));
    let response = rig.nexus.request(&common::messages_request("{}"));
    assert_eq!(response.status, 200);
    common::assert_no_upstream_contact(&rig.mock);
}

#[test]
fn child_guard_kills_and_reaps_on_drop() {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawning sleep");
    let pid = child.id();
    let mut guard = ChildGuard::new(child);
    assert!(guard.exited().is_none());
    drop(guard);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} still exists after drop"
    );
}
