//! Hostile clients and failing upstreams: slowloris, malformed framing, upstreams that die
//! mid-stream, clients that vanish or read slowly. Nothing may crash, leak or hang. Each
//! client-side case runs over plain TCP and again over TLS (`_over_tls`), where the same
//! guarantees must hold through the TLS layer; the TLS port's own hostile cases (garbage
//! and truncated handshakes) are at the end.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::nexus::NexusBuilder;
use common::*;

/// nexus as the plain tests start it.
fn plain(n: NexusBuilder) -> NexusBuilder {
    n
}

/// nexus serving HTTPS with generated certificates.
fn https(n: NexusBuilder) -> NexusBuilder {
    n.https()
}

/// nexus serving HTTPS with a certificate of its own for `domain` too (a TLS client must
/// name the domain its requests' Host names).
fn https_naming(domain: &str) -> impl FnOnce(NexusBuilder) -> NexusBuilder {
    let certs = common::tls::ListenerCerts::new();
    certs.add_domain(domain);
    move |n| n.https_with(certs)
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
const FIRST_EVENT: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":42,\"output_tokens\":1}}}\n\n";
const HALF_EVENT: &str = "event: content_block_delta\ndata: {\"type\":\"content_bl";
const LOST_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream connection lost\"}}\n\n";

fn chunk(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

/// An upstream that sends one whole event and half of the next, then drops the connection.
fn dying_stream() -> MockReply {
    MockReply::raw(format!(
        "{SSE_HEAD}{}{}",
        chunk(FIRST_EVENT),
        chunk(HALF_EVENT)
    ))
}

#[test]
fn upstream_dying_mid_stream_ends_with_whole_events_and_an_error_event() {
    upstream_dying_mid_stream(plain, Nexus::client);
}

#[test]
fn upstream_dying_mid_stream_ends_with_whole_events_and_an_error_event_over_tls() {
    upstream_dying_mid_stream(https_naming("dying.example.com"), |nexus| {
        nexus.client_as("dying.example.com")
    });
}

fn upstream_dying_mid_stream(
    configure: impl FnOnce(NexusBuilder) -> NexusBuilder,
    connect: impl Fn(&Nexus) -> Client,
) {
    let rig = Rig::start(Upstream::Plain, |_| dying_stream(), configure);
    let response = connect(&rig.nexus)
        .request(&messages_request(stream_request_body()).host("dying.example.com"));

    assert_eq!(response.status, 200);
    // The client sees the complete event, never the half one, then nexus's error event
    // and a properly terminated body (the client parsed the chunked framing to its end).
    assert_eq!(response.text(), format!("{FIRST_EVENT}{LOST_EVENT}"));

    let stats = poll_token_stats(&rig.nexus, |s| {
        s["stats"]["dying.example.com"]["requestCount"] == 1
    });
    let d = &stats["stats"]["dying.example.com"];
    assert_eq!(d["inputTokens"], 42, "recorded with what was seen: {d}");
    assert_eq!(d["errorCount"], 1);
}

#[test]
fn the_python_sdk_raises_instead_of_hanging_when_the_upstream_dies() {
    sdk_raises_when_the_upstream_dies(plain);
}

#[test]
fn the_python_sdk_raises_instead_of_hanging_when_the_upstream_dies_over_tls() {
    sdk_raises_when_the_upstream_dies(https);
}

fn sdk_raises_when_the_upstream_dies(configure: fn(NexusBuilder) -> NexusBuilder) {
    let rig = Rig::start(Upstream::Plain, |_| dying_stream(), configure);
    let script = r#"
import json, os, anthropic
client = anthropic.Anthropic(base_url=os.environ["NEXUS_BASE_URL"], api_key="sk-ant-api03-test", max_retries=0, timeout=20.0)
try:
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=32, messages=[{"role": "user", "content": "hi"}]) as stream:
        for _ in stream.text_stream:
            pass
    print(json.dumps({"raised": None}))
except anthropic.APIError as e:
    print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
"#;
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(script)
        .env("NEXUS_BASE_URL", rig.nexus.url());
    if let Some(certs) = rig.nexus.tls() {
        command.env("SSL_CERT_FILE", &certs.ca_file);
    }
    let output = run_bounded(&mut command, Duration::from_secs(60));
    let result: serde_json::Value = serde_json::from_str(output.trim())
        .unwrap_or_else(|_| panic!("SDK run printed {output:?} (run tests/install-deps.sh)"));
    assert_ne!(
        result["raised"],
        serde_json::Value::Null,
        "the SDK finished as if all was well"
    );
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("upstream connection lost"),
        "{result}"
    );
}

#[test]
fn slowloris_connections_get_408_while_a_normal_client_is_served() {
    slowloris(plain);
}

#[test]
fn slowloris_connections_get_408_while_a_normal_client_is_served_over_tls() {
    slowloris(https);
}

fn slowloris(configure: fn(NexusBuilder) -> NexusBuilder) {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| configure(n.workers(1).env("NEXUS_HEADER_TIMEOUT_SECS", "2")),
    );
    let mut slow: Vec<Client> = (0..500).map(|_| rig.nexus.client()).collect();
    for s in &mut slow {
        s.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
    }
    // A header byte per second per connection, while a normal client keeps asking.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        for s in &mut slow {
            let _ = s.send_raw(b"X"); // fails once nexus has given up on it: fine
        }
        let response = rig.nexus.request(&Request::get("/"));
        assert_eq!(response.status, 200, "a normal client was starved");
        thread::sleep(Duration::from_millis(1000));
    }
    for (i, s) in slow.iter_mut().enumerate() {
        let answer = s
            .read_all()
            .unwrap_or_else(|e| panic!("slow connection {i}: {e}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "slow connection {i} got {answer:?}"
        );
        assert!(answer.contains("invalid_request_error"));
    }
}

/// Requests whose framing a proxy must refuse (RFC 9112 §6.3, §5): each gets 400 and
/// the connection is closed, so nothing after it can be smuggled in as a second request.
#[test]
fn malformed_request_framing_is_400_and_closes_the_connection() {
    malformed_request_framing(plain, Nexus::client);
}

#[test]
fn malformed_request_framing_is_400_and_closes_the_connection_over_tls() {
    // The cases name a.example.com: the connection does too.
    malformed_request_framing(https_naming("a.example.com"), |nexus| {
        nexus.client_as("a.example.com")
    });
}

fn malformed_request_framing(
    configure: impl FnOnce(NexusBuilder) -> NexusBuilder,
    connect: impl Fn(&Nexus) -> Client,
) {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| configure(n.api_key("sk-ant-api03-env")),
    );
    let post = "POST /v1/messages HTTP/1.1\r\nHost: a.example.com\r\n";
    let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(5000));
    let cases: Vec<(&str, String)> = vec![
        ("CL and TE", format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("differing CL", format!("{post}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}x")),
        ("malformed CL", format!("{post}Content-Length: 2x\r\n\r\n{{}}")),
        ("negative CL", format!("{post}Content-Length: -2\r\n\r\n{{}}")),
        ("TE not chunked-last", format!("{post}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n")),
        ("TE gzip only", format!("{post}Transfer-Encoding: gzip\r\n\r\n")),
        ("bad chunk size", format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n")),
        ("chunk size overflow", format!("{post}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n")),
        ("chunk extension too long", format!("{post}Transfer-Encoding: chunked\r\n\r\n{long_ext}")),
        ("chunk data longer than its size", format!("{post}Transfer-Encoding: chunked\r\n\r\n1\r\nxyz\r\n0\r\n\r\n")),
        ("obs-fold", format!("{post}X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n")),
        ("space before colon", format!("{post}X-Space : a\r\nContent-Length: 0\r\n\r\n")),
        ("NUL in a value", format!("{post}X-Nul: a\0b\r\nContent-Length: 0\r\n\r\n")),
        ("CR in a value", format!("{post}X-Cr: a\rb\r\nContent-Length: 0\r\n\r\n")),
        ("two Host headers", "GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string()),
        ("no Host (HTTP/1.1)", "GET /v1/models HTTP/1.1\r\n\r\n".to_string()),
        ("absolute-form target", "GET http://evil/v1/models HTTP/1.1\r\nHost: a\r\n\r\n".to_string()),
        ("dot segments", "GET /v1/../admin HTTP/1.1\r\nHost: a\r\n\r\n".to_string()),
    ];
    for (name, raw) in &cases {
        let mut s = connect(&rig.nexus);
        s.send_raw(raw.as_bytes()).unwrap();
        // read_all returns only when nexus closes the connection.
        let answer = s
            .read_all()
            .unwrap_or_else(|e| panic!("{name}: connection left open ({e})"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{name}: {answer:?}");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "{name}: a second response: {answer:?}"
        );
        assert!(
            answer.contains("\"invalid_request_error\""),
            "{name}: {answer:?}"
        );
    }
    assert!(
        rig.mock
            .requests()
            .iter()
            .all(|r| !r.target.contains("smuggled")),
        "a smuggled request reached the upstream"
    );
}

/// Upstream responses whose framing cannot be trusted are 502; the quirks RFC 9112 lets a
/// proxy repair are relayed.
#[test]
fn untrustworthy_upstream_framing_is_502_and_tolerable_quirks_pass() {
    let cases: Vec<(&str, String, u16)> = vec![
        ("CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".into(), 502),
        ("differing CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".into(), 502),
        ("bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".into(), 502),
        ("space before colon", "HTTP/1.1 200 OK\r\nX-Space : a\r\nContent-Length: 2\r\n\r\n{}".into(), 200),
        ("close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}".into(), 200),
    ];
    for (name, raw, status) in cases {
        let rig = Rig::plain(move |_| MockReply::raw(raw.clone()));
        let response = rig.nexus.request(&messages_request("{}"));
        assert_eq!(response.status, status, "{name}: {}", response.text());
        if status == 502 {
            assert_anthropic_error(&response, 502, "api_error");
        } else {
            assert_eq!(response.text(), "{}", "{name}");
        }
    }
}

/// Clients that leave mid-stream: their upstream connections are closed (never pooled)
/// and nexus's descriptors and memory come back.
/// nexus in front of a mock streaming 201 events, 20 ms apart.
fn long_streams(configure: fn(NexusBuilder) -> NexusBuilder) -> Rig {
    let events: Vec<String> = std::iter::once(FIRST_EVENT.to_string())
        .chain((0..200).map(|i| {
            format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{i}\"}}}}\n\n")
        }))
        .collect();
    Rig::start(
        Upstream::Plain,
        move |_| MockReply::sse_paced(events.clone(), Duration::from_millis(20)),
        // The ledger's SQLite page cache (up to 2 MiB) fills as its file grows by ~250 KiB
        // per 1000 rows: bounded, but it would look like a leak in the blocks below. This
        // test is about the proxy path; the ledger's memory is bounded by its queue and
        // SQLite's cache (src/ledger/mod.rs).
        move |n| configure(n.workers(2).env("NEXUS_DB", "off")),
    )
}

/// 100 clients at once, each leaving after the first event of its stream.
fn abort_streams(nexus: &Nexus) {
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let mut client = nexus.client();
            thread::spawn(move || {
                client
                    .send(&messages_request(stream_request_body()))
                    .unwrap();
                let head = client.read_head().expect("head");
                let mut body = client.body_stream("POST", &head).unwrap();
                body.read_at_least(FIRST_EVENT.len()).expect("first event");
                // Dropping the client closes the socket mid-stream.
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// Waits (up to 15 s) until nexus holds no more descriptors than `baseline`: each stream
/// notices its client is gone at its next event (20 ms apart).
fn settle_fds(nexus: &mut Nexus, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while nexus.open_fds() > baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clients_aborting_mid_stream_leak_nothing() {
    let mut rig = long_streams(plain);
    let fds_before = rig.nexus.open_fds();
    let round = abort_streams;
    let settle = |nexus: &mut Nexus| settle_fds(nexus, fds_before);
    // Warm-up: the allocator and the runtime reach their working size over many streams
    // (measured: ~1000 in a release build, ~2000-3000 in a debug one).
    for _ in 0..20 {
        round(&rig.nexus);
        settle(&mut rig.nexus);
    }
    // Then three blocks of 1000 aborted streams. A leak grows RSS block after block; the
    // allocator's working set grows in steps, at times late (a block that happens to hold
    // more streams at once) and levels off. Measured in blocks of 1000: release, after 1000
    // streams, +232, +472, +116, -20, +4 KiB; debug, after 1000, +640, +292, +476 KiB, and
    // after 2000, +16, +120, +28, -52 KiB;
    // a single step of ~1 MiB was seen in a loaded CI run. So at least one block must leave
    // RSS where it found it (within 256 KiB): a leak of 0.3 KiB or more per stream fails
    // every block.
    let mut levels = vec![rig.nexus.rss_kib()];
    for _ in 0..3 {
        for _ in 0..10 {
            round(&rig.nexus);
            settle(&mut rig.nexus);
        }
        levels.push(rig.nexus.rss_kib());
    }
    let flat_block = levels
        .windows(2)
        .any(|pair| pair[1] as i64 - pair[0] as i64 <= 256);
    assert!(
        flat_block,
        "RSS grew in every block of 1000 aborted streams (KiB): {levels:?}"
    );
    assert_eq!(
        rig.nexus.open_fds(),
        fds_before,
        "descriptors leaked after 5000 aborted streams"
    );
    assert_eq!(
        rig.mock.connections(),
        rig.mock.requests().len(),
        "an upstream connection of an aborted stream was reused"
    );
    rig.nexus.assert_alive();
}

/// The same over TLS, shorter (1000 aborted streams): descriptors come back, and no
/// upstream connection of an aborted stream is reused.
#[test]
fn clients_aborting_mid_stream_over_tls_leak_no_descriptors() {
    let mut rig = long_streams(https);
    let fds_before = rig.nexus.open_fds();
    for _ in 0..10 {
        abort_streams(&rig.nexus);
        settle_fds(&mut rig.nexus, fds_before);
    }
    assert_eq!(
        rig.nexus.open_fds(),
        fds_before,
        "descriptors leaked after 1000 aborted TLS streams"
    );
    assert_eq!(rig.mock.connections(), rig.mock.requests().len());
    rig.nexus.assert_alive();
}

/// A client reading a large response slowly makes nexus read the upstream slowly too: the
/// bytes wait in the upstream's socket, not in nexus's memory.
#[test]
fn a_slow_reader_does_not_make_nexus_buffer_the_response() {
    slow_reader(plain);
}

#[test]
fn a_slow_reader_does_not_make_nexus_buffer_the_response_over_tls() {
    slow_reader(https);
}

fn slow_reader(configure: fn(NexusBuilder) -> NexusBuilder) {
    let body = vec![b'x'; 50 * 1024 * 1024];
    let mut rig = Rig::start(
        Upstream::Plain,
        move |_| MockReply::json(200, body.clone()),
        configure,
    );
    let rss_before = rig.nexus.rss_kib();
    let mut client = rig.nexus.client();
    client.send(&messages_request("{}")).unwrap();
    let head = client.read_head().expect("head");
    let mut body = client.body_stream("POST", &head).unwrap();
    // ~100 KB/s for 5 s.
    let mut peak = rss_before;
    for _ in 0..50 {
        body.read_at_least(10 * 1024).expect("body bytes");
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(rig.nexus.rss_kib());
    }
    assert!(
        peak < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {peak} KiB"
    );
}

fn poll_token_stats(
    nexus: &Nexus,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = nexus.request(&Request::get("/token-stats")).json();
        if ready(&stats) || Instant::now() > deadline {
            return stats;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command with a time bound; returns its stdout.
fn run_bounded(command: &mut Command, limit: Duration) -> String {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (run tests/install-deps.sh)");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not finish within {limit:?}: the SDK hung");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The TLS port's own hostile clients: ClientHellos cut short and abandoned, random bytes
/// (after a handshake record's first byte, or none), clients that reset mid-handshake. Each
/// is counted as a failure, promptly (no header timeout waited out), and the one worker
/// serves on.
#[test]
fn garbage_and_truncated_handshakes_are_counted_and_never_take_a_worker_down() {
    let mut nexus = Nexus::builder().https().workers(1).start();
    let seed = common::rng::test_seed("garbage_and_truncated_handshakes");
    let mut rng = common::rng::Rng::new(seed);
    let hello = common::tls::client_hello_to("localhost");
    let mut inputs: Vec<Vec<u8>> = (1..hello.len())
        .step_by(hello.len() / 24 + 1)
        .map(|cut| hello[..cut].to_vec())
        .collect();
    for i in 0..32 {
        let len = 1 + rng.up_to(3000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.up_to(255) as u8).collect();
        if i % 2 == 0 {
            bytes[0] = 0x16;
        } else if bytes[0].is_ascii_uppercase() {
            bytes[0] = 0; // (an uppercase first byte is plain HTTP, answered with a 400)
        }
        inputs.push(bytes);
    }
    let started = Instant::now();
    for (i, input) in inputs.iter().enumerate() {
        let mut s = TcpStream::connect(nexus.addr()).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = s.write_all(input);
        if i % 5 == 4 {
            // A reset rather than a FIN: close with unread bytes (the alert nexus sends).
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: SO_LINGER on the socket this test owns, from a local struct.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            continue;
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let failures = |nexus: &Nexus| -> f64 {
        ["closed", "protocol", "timeout", "plain_http"]
            .iter()
            .map(|r| {
                nexus.metric(&format!(
                    "nexus_tls_handshake_failures_total{{reason=\"{r}\"}}"
                ))
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while failures(&nexus) < inputs.len() as f64 {
        assert!(
            Instant::now() < deadline,
            "{} of {} hostile clients counted (seed {seed})",
            failures(&nexus),
            inputs.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        nexus.metric("nexus_tls_handshake_failures_total{reason=\"timeout\"}"),
        0.0,
        "a client that closed was left to time out (seed {seed})"
    );
    // Nothing here waited out the 30 s header timeout.
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(nexus.request(&Request::get("/token-stats")).status, 200);
    nexus.assert_alive();
}
