//! HTTPS on the listening port (issue 22): curl and the test client over TLS, SSE event by
//! event, certificates chosen by SNI and reloaded, plain HTTP and stalled handshakes on
//! the TLS port, and a Host that is not the SNI name.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::fixtures::{stream_events, MESSAGE_TEXT_JSON};
use common::process::{ChildGuard, OutputLog};
use common::tls::{write_pair, ListenerCerts};
use common::*;

/// Runs curl (bounded by 30 s) and returns its stdout; panics with its stderr on failure.
fn curl(args: &[&str]) -> String {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (run tests/install-deps.sh)");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut guard = ChildGuard::new(child);
    let log = OutputLog::default();
    let (_, out) = log.drain("stdout", stdout);
    let (_, err) = log.drain("stderr", stderr);
    let status = guard
        .wait_for_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("curl did not finish\n{}", log.snapshot()));
    let _ = (out.join(), err.join());
    assert!(
        status.success(),
        "curl failed ({status})\n{}",
        log.snapshot()
    );
    log.stream("stdout")
}

/// curl's arguments to reach `nexus` over HTTPS as `localhost`, trusting its CA.
fn curl_https(nexus: &Nexus) -> Vec<String> {
    let port = nexus.addr().port();
    vec![
        "--cacert".into(),
        nexus.tls().unwrap().ca_file.display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
    ]
}

/// Polls `series` in /metrics until it reaches `at_least` (bounded by 20 s).
fn wait_for_metric(nexus: &Nexus, series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = nexus.metric(series);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {value}, expected {at_least}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTPS nexus in front of a mock answering `{}`.
fn https_rig() -> Rig {
    Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| n.https(),
    )
}

#[test]
fn curl_over_https_gets_a_message_and_a_whole_event_stream() {
    let rig = Rig::start(
        Upstream::Plain,
        |req| {
            if req.json()["stream"] == true {
                MockReply::sse(stream_events())
            } else {
                MockReply::json(200, MESSAGE_TEXT_JSON)
            }
        },
        |n| n.https(),
    );
    let url = format!("{}/v1/messages", rig.nexus.url());
    let mut args = curl_https(&rig.nexus);
    args.extend(
        [
            "-H",
            "x-api-key: sk-ant-api03-test",
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[]}"#,
            &url,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&args), MESSAGE_TEXT_JSON.trim_end().to_string() + "\n");

    let mut args = curl_https(&rig.nexus);
    args.extend(
        [
            "-N",
            "-H",
            "x-api-key: sk-ant-api03-test",
            "--data",
            r#"{"model":"claude-sonnet-4-5","max_tokens":8,"stream":true,"messages":[]}"#,
            &url,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&args), stream_events().concat());
    assert_eq!(rig.mock.requests().len(), 2);
}

#[test]
fn sse_is_relayed_one_event_at_a_time_over_tls() {
    scenarios::sse_event_by_event_via(Upstream::Plain, |n| n.https());
}

#[test]
fn sse_is_relayed_one_event_at_a_time_over_tls_at_both_ends() {
    scenarios::sse_event_by_event_via(Upstream::Tls, |n| n.https());
}

#[test]
fn keep_alive_and_pipelining_work_over_tls_with_alpn_http_1_1() {
    let rig = https_rig();
    let mut client = rig.nexus.client();
    let tls = client.tls().expect("a TLS connection");
    assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Three requests in one write, answered in order on the same connection.
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend(
            messages_request("{}").to_bytes(&format!("localhost:{}", rig.nexus.addr().port())),
        );
    }
    client.send_raw(&wire).unwrap();
    for i in 0..3 {
        let response = client
            .try_read_response("POST")
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(
            (response.status, response.text().as_str()),
            (200, "{}"),
            "response {i}"
        );
    }
    let again = client.request(&Request::get("/"));
    assert_eq!(again.status, 200);
    assert_eq!(
        rig.mock.connections(),
        1,
        "the upstream connection was kept too"
    );
}

#[test]
fn tls_1_2_clients_are_served_and_tls_1_3_sessions_resume() {
    let nexus = Nexus::builder().https().start();
    let certs = nexus.tls().unwrap();
    let base = certs.client_config();
    let mut roots = rustls::RootCertStore::empty();
    for cert in common::tls::read_pem_certs(&certs.ca_file) {
        roots.add(cert).unwrap();
    }
    let mut tls12 = rustls::ClientConfig::builder_with_provider(common::tls::ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls12.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut client = Client::connect_tls(nexus.addr(), std::sync::Arc::new(tls12)).unwrap();
    assert_eq!(
        client.tls().unwrap().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(client.request(&Request::get("/token-stats")).status, 200);

    // One client config (its session store) across connections: the second resumes.
    let mut resuming = (*base).clone();
    resuming.resumption = rustls::client::Resumption::in_memory_sessions(8);
    let resuming = std::sync::Arc::new(resuming);
    let kinds: Vec<_> = (0..3)
        .map(|_| {
            let mut client = Client::connect_tls(nexus.addr(), resuming.clone()).unwrap();
            // Tickets arrive after the handshake: a request lets the client read them.
            assert_eq!(client.request(&Request::get("/token-stats")).status, 200);
            client.tls().unwrap().handshake_kind()
        })
        .collect();
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert!(
        kinds[1..].contains(&Some(rustls::HandshakeKind::Resumed)),
        "no session was resumed: {kinds:?}"
    );
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_in_the_anthropic_shape() {
    let nexus = Nexus::builder().https().start();
    let mut plain = Client::connect(nexus.addr());
    let response = plain
        .try_request(&Request::get("/v1/models"))
        .expect("an answer, not a hang or a reset");
    assert_anthropic_error(&response, 400, "invalid_request_error");
    assert!(response.text().contains("HTTPS"), "{}", response.text());
    assert!(plain.closed_by_peer());
    assert_eq!(
        nexus.metric("nexus_tls_handshake_failures_total{reason=\"plain_http\"}"),
        1.0
    );
}

/// `series` read over `probe`, a kept-alive connection (so reading opens no descriptor).
fn metric_on(probe: &mut Client, series: &str) -> f64 {
    let text = probe.request(&Request::get("/metrics")).text();
    common::metrics::value(&text, series).unwrap_or_else(|| panic!("no {series}:\n{text}"))
}

#[test]
fn a_client_that_stops_mid_handshake_times_out_and_its_descriptor_is_freed() {
    let mut nexus = Nexus::builder()
        .https()
        .workers(1)
        .env("NEXUS_HEADER_TIMEOUT_SECS", "1")
        .start();
    // One connection, kept open throughout, that serves the test its readings: with it the
    // only client, the worker's descriptors are exactly the baseline's.
    let mut probe = nexus.client();
    let series = "nexus_tls_handshake_failures_total{reason=\"timeout\"}";
    assert_eq!(metric_on(&mut probe, series), 0.0);
    let baseline = nexus.open_fds();
    // Half a ClientHello, then silence; and a connection that never sends a byte.
    let mut stalled = TcpStream::connect(nexus.addr()).unwrap();
    stalled.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let mut silent = TcpStream::connect(nexus.addr()).unwrap();
    silent.set_read_timeout(Some(IO_TIMEOUT)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while metric_on(&mut probe, series) < 2.0 {
        assert!(Instant::now() < deadline, "the handshakes never timed out");
        thread::sleep(Duration::from_millis(50));
    }

    for (name, socket) in [("stalled", &mut stalled), ("silent", &mut silent)] {
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{name}: nexus sent {rest:?}");
    }
    // Counted after the socket was dropped; its close may still be on its way (io_uring).
    let deadline = Instant::now() + Duration::from_secs(10);
    while nexus.open_fds() != baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        nexus.open_fds(),
        baseline,
        "descriptors of timed-out handshakes"
    );
    assert_eq!(metric_on(&mut probe, "nexus_open_connections"), 1.0);
    assert_eq!(
        metric_on(
            &mut probe,
            "nexus_tls_handshake_failures_total{reason=\"protocol\"}"
        ),
        0.0
    );
    nexus.assert_alive();
}

#[test]
fn a_client_that_does_not_trust_the_certificate_is_counted_and_the_worker_lives_on() {
    let nexus = Nexus::builder().https().workers(1).start();
    let stranger = ListenerCerts::new();
    let refused = Client::connect_tls(nexus.addr(), stranger.client_config());
    assert!(
        refused.is_err(),
        "a certificate from another CA was accepted"
    );
    wait_for_metric(
        &nexus,
        "nexus_tls_handshake_failures_total{reason=\"protocol\"}",
        1.0,
    );
    assert_eq!(nexus.request(&Request::get("/token-stats")).status, 200);
}

#[test]
fn a_host_other_than_the_sni_name_is_421_misdirected() {
    let rig = https_rig();
    let mut client = rig.nexus.client();
    let response = client.request(&messages_request("{}").host("other.example.com"));
    assert_anthropic_error(&response, 421, "invalid_request_error");
    assert!(
        response.text().contains("other.example.com"),
        "{}",
        response.text()
    );
    assert!(
        rig.mock.requests().is_empty(),
        "a misdirected request went upstream"
    );
    // No Host at all (HTTP/1.0) disagrees with nothing.
    let mut old = rig.nexus.client();
    old.send_raw(b"GET /token-stats HTTP/1.0\r\n\r\n").unwrap();
    let answer = String::from_utf8_lossy(&old.read_all().unwrap()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // The SNI name with another port and case is the same host.
    let port = rig.nexus.addr().port();
    let ok = rig
        .nexus
        .request(&messages_request("{}").host(&format!("LocalHost:{port}")));
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn sni_picks_the_domains_own_certificate_else_the_default_one() {
    let certs = ListenerCerts::new();
    let own = certs.add_domain("a.example.com");
    let nexus = Nexus::builder().https_with(certs).start();
    let certs = nexus.tls().unwrap();

    let mut a = Client::connect_tls_as(nexus.addr(), certs.client_config(), "a.example.com")
        .expect("a.example.com's own certificate verifies as a.example.com");
    assert_eq!(a.peer_leaf(), Some(own.leaf_der.clone()));
    assert_eq!(a.request(&Request::get("/token-stats")).status, 200);

    let default = Client::connect_tls(nexus.addr(), certs.client_config()).unwrap();
    assert_eq!(default.peer_leaf(), Some(certs.default.leaf_der.clone()));
    // A name without a pair gets the default certificate, which does not name it.
    let other = Client::connect_tls_as(nexus.addr(), certs.client_config(), "b.example.com");
    assert!(
        other.is_err(),
        "b.example.com verified with a certificate not made for it"
    );
}

/// The leaf served to `name` now, on a fresh connection.
fn served_leaf(nexus: &Nexus, name: &str) -> Option<Vec<u8>> {
    let config = nexus.tls().unwrap().client_config();
    Client::connect_tls_as(nexus.addr(), config, name)
        .ok()
        .and_then(|c| c.peer_leaf())
}

/// Polls until `name` is served `leaf`; returns how long that took (bounded by 10 s).
fn wait_until_served(nexus: &Nexus, name: &str, leaf: &[u8]) -> Duration {
    let started = Instant::now();
    while served_leaf(nexus, name).as_deref() != Some(leaf) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} still gets the old certificate"
        );
        thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn a_changed_certificate_is_served_within_2_s_and_a_broken_one_keeps_the_old() {
    let nexus = Nexus::builder().https().start();
    let certs = nexus.tls().unwrap();

    // The default pair, replaced.
    let renewed = certs.ca.issue_pem(&common::tls::SERVER_NAMES);
    write_pair(&certs.cert_file, &certs.key_file, &renewed);
    let took = wait_until_served(&nexus, "localhost", &renewed.leaf_der);
    assert!(
        took < Duration::from_secs(2),
        "the new default pair took {took:?}"
    );

    // A pair added to TLS_CERTS_DIR.
    let added = certs.add_domain("new.example.com");
    let took = wait_until_served(&nexus, "new.example.com", &added.leaf_der);
    assert!(
        took < Duration::from_secs(2),
        "the added pair took {took:?}"
    );

    // A broken certificate: the old one is served, the reload counted as failed.
    let failed = "nexus_tls_certificate_reloads_total{result=\"failed\"}";
    let before = nexus.metric(failed);
    replace_file(&certs.cert_file, "-----BEGIN CERTIFICATE-----\nbroken\n");
    wait_for_metric(&nexus, failed, before + 1.0);
    assert_eq!(
        served_leaf(&nexus, "localhost"),
        Some(renewed.leaf_der.clone())
    );
    // Another change while it stays broken: served, and the old reason not said again.
    let other = certs.add_domain("other.example.com");
    wait_until_served(&nexus, "other.example.com", &other.leaf_der);
    assert_eq!(
        served_leaf(&nexus, "localhost"),
        Some(renewed.leaf_der.clone())
    );
    let said = format!("{}: ", certs.cert_file.display());
    assert_eq!(nexus.logs().matches(&said).count(), 1, "{}", nexus.logs());

    // The certificate restored, with a key that is not its own: refused too.
    replace_file(&certs.cert_file, &renewed.chain_pem);
    let stray = certs.ca.issue_pem(&common::tls::SERVER_NAMES);
    let before = nexus.metric(failed);
    replace_file(&certs.key_file, &stray.key_pem);
    wait_for_metric(&nexus, failed, before + 1.0);
    assert_eq!(
        served_leaf(&nexus, "localhost"),
        Some(renewed.leaf_der.clone())
    );
    let logs = nexus.logs();
    assert!(logs.contains("does not belong to"), "{logs}");
}

/// Replaces a file in one step (write beside it, rename over it), as deployment tools do.
fn replace_file(path: &std::path::Path, contents: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[test]
fn a_key_file_others_can_read_is_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let certs = ListenerCerts::new();
    std::fs::set_permissions(&certs.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let nexus = Nexus::builder().https_with(certs).start();
    let logs = nexus.logs();
    assert!(
        logs.contains("is readable by other users (mode 644)"),
        "{logs}"
    );
    assert!(logs.contains("chmod 600"), "{logs}");
}

/// Starts nexus with `env` (no database), expects it to refuse within 10 s with exit
/// status 2, and returns what it printed.
fn refused_start(env: &[(&str, &std::path::Path)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nexus"));
    command
        .args(["-p", "0", "-H", "127.0.0.1"])
        .env_clear()
        .env("NEXUS_DB", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawning nexus");
    let stderr = child.stderr.take().unwrap();
    let mut guard = ChildGuard::new(child);
    let log = OutputLog::default();
    let (_, drained) = log.drain("stderr", stderr);
    let status = guard
        .wait_for_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("nexus started anyway\n{}", log.snapshot()));
    let _ = drained.join();
    assert_eq!(status.code(), Some(2), "{}", log.snapshot());
    log.stream("stderr")
}

#[test]
fn start_up_refuses_a_certificate_without_its_key_and_a_bad_default_pair() {
    let certs = ListenerCerts::new();
    let stderr = refused_start(&[("TLS_CERT_FILE", &certs.cert_file)]);
    assert!(
        stderr.contains("TLS_CERT_FILE is set without TLS_KEY_FILE"),
        "{stderr}"
    );

    std::fs::write(&certs.key_file, "not a key").unwrap();
    let stderr = refused_start(&[
        ("TLS_CERT_FILE", &certs.cert_file),
        ("TLS_KEY_FILE", &certs.key_file),
    ]);
    assert!(
        stderr.contains(&certs.key_file.display().to_string()),
        "{stderr}"
    );
}

/// A TLS client that stops reading: its write times out (the TLS writer is cancelled mid
/// write), the connection is dropped without touching the TLS state again, and the worker
/// serves on.
#[test]
fn a_tls_client_that_stops_reading_is_dropped_and_the_worker_serves_on() {
    let body = vec![b'x'; 32 * 1024 * 1024];
    let mut rig = Rig::start(
        Upstream::Plain,
        move |_| MockReply::json(200, body.clone()),
        |n| {
            n.https()
                .workers(1)
                .env("NEXUS_CLIENT_WRITE_TIMEOUT_SECS", "1")
        },
    );
    let mut stuck = rig.nexus.client();
    stuck.send(&messages_request("{}")).unwrap();
    let head = stuck.read_head().expect("head");
    assert_eq!(head.status, 200);
    // Not another byte read: nexus's writes fill the socket buffers and wait.
    let mut probe = rig.nexus.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_on(&mut probe, "nexus_open_connections") > 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stuck client was never dropped"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe.request(&Request::get("/token-stats")).status, 200);
    rig.nexus.assert_alive();
    drop(stuck);
}

/// A TLS client whose head stalls gets its 408 (the read given up on does not stop the
/// answer being written) and a clean close_notify.
#[test]
fn a_stalled_head_over_tls_gets_its_408() {
    let nexus = Nexus::builder()
        .https()
        .workers(1)
        .env("NEXUS_HEADER_TIMEOUT_SECS", "1")
        .start();
    let mut client = nexus.client();
    client
        .send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // read_all returns at the close_notify (or fails on a bare close).
    let answer = client.read_all().expect("an answer and a clean close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(answer.contains("invalid_request_error"), "{answer:?}");
    assert_eq!(nexus.request(&Request::get("/token-stats")).status, 200);
}

/// SIGTERM while a stream is in flight over TLS: the stream is served to its end, new
/// connections are refused, and nexus exits 0.
#[test]
fn shutdown_lets_a_tls_stream_in_flight_finish() {
    let events = stream_events();
    let gate = Gate::new();
    let reply = MockReply::sse_gated(events.clone(), gate.clone());
    let mut rig = Rig::start(
        Upstream::Plain,
        move |_| reply.clone(),
        |n| n.https().env("NEXUS_DB", "off"),
    );
    let mut client = rig.nexus.client();
    client
        .send(&messages_request(stream_request_body()))
        .unwrap();
    let head = client.read_head().expect("head");
    assert_eq!(head.status, 200);
    let mut sse = SseReader::new(client.body_stream("POST", &head).unwrap());
    assert_eq!(sse.next_event().unwrap().unwrap().raw, events[0]);

    let pid = rig.nexus.pid();
    // SAFETY: signalling the child process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    // The listener closes once shutdown has begun.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(rig.nexus.addr()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "nexus still accepts after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for (i, expected) in events.iter().enumerate().skip(1) {
        gate.open_one();
        let event = sse
            .next_event()
            .unwrap()
            .unwrap_or_else(|| panic!("ended at {i}"));
        assert_eq!(&event.raw, expected, "event {i}");
    }
    assert_eq!(sse.next_event().unwrap(), None);
    drop(sse);
    drop(client);
    let status = rig
        .nexus
        .wait_for_exit(Duration::from_secs(20))
        .expect("nexus exits once its last stream ended");
    assert!(status.success(), "{status}");
}
