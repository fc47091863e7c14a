//! `nexus --check-health`, the container health check: exit 0 when the nexus on the
//! configured port answers `GET /` with 200, 1 otherwise, within about 2 s; and `GET /`
//! itself saying `degraded` (503) when the upstream cannot be reached.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `nexus --check-health` with `args` and `env` only, in an empty directory.
fn check(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let dir = TempDir::new("check-health");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nexus"));
    command
        .arg("--check-health")
        .args(args)
        .env_clear()
        .current_dir(dir.path())
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let out = command.output().expect("running nexus --check-health");
    (out, started.elapsed())
}

#[test]
fn healthy_nexus_exits_0() {
    let nexus = Nexus::builder().upstream("http://127.0.0.1:9").start();
    let port = nexus.addr().port().to_string();

    let (out, _) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));

    // The port from the environment (as in the Docker image), and from a .env file.
    let (out, _) = check(&[], &[("PORT", &port)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let env_file = TempDir::new("check-health-env");
    let file = env_file.write("nexus.env", format!("PORT={port}\n").as_bytes());
    let (out, _) = check(&["-e", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn healthy_https_nexus_exits_0_when_the_check_speaks_tls_too() {
    let nexus = Nexus::builder()
        .upstream("http://127.0.0.1:9")
        .https()
        .start();
    let port = nexus.addr().port().to_string();
    let certs = nexus.tls().unwrap();
    let (cert, key) = (
        certs.cert_file.to_str().unwrap(),
        certs.key_file.to_str().unwrap(),
    );

    let (out, _) = check(
        &["-p", &port],
        &[("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
    // Without the TLS settings the check speaks plain HTTP and gets the port's 400.
    let (out, _) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("400"),
        "{out:?}"
    );
}

#[test]
fn nothing_listening_exits_1() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (out, _) = check(&["-p", &port.to_string()], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
}

#[test]
fn a_non_200_answer_exits_1() {
    let mock = MockUpstream::start(|_| MockReply::json(503, "{}"));
    let port = mock.addr().port().to_string();
    let (out, _) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{out:?}"
    );
}

#[test]
fn a_silent_listener_times_out_within_about_2s() {
    // Accepted by the kernel, never answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (out, took) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // About 2 s by design; the rest is room for a loaded machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "gave up early: {took:?}"
    );
    drop(listener);
}

#[test]
fn a_bad_configuration_is_unhealthy_not_a_crash() {
    let (out, _) = check(&["-p", "not-a-port"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// An address on which nothing listens (bound once, then released).
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Waits until nexus's log contains `needle`, at most 20 s (a slow machine, not a bound).
fn wait_for_log(nexus: &Nexus, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = nexus.logs();
        if logs.contains(needle) || Instant::now() >= deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unresolvable_upstream_is_degraded_and_the_check_fails() {
    let nexus = Nexus::builder()
        .upstream("http://nexus-test-unresolvable.invalid:9")
        .env("NEXUS_LOG", "debug")
        .start();
    let port = nexus.addr().port().to_string();

    let health = nexus.request(&Request::get("/"));
    assert_eq!(health.status, 503, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "degraded", "{body:#}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("nexus-test-unresolvable.invalid"),
        "the reason names the host: {body:#}"
    );
    assert_eq!(nexus.request(&Request::new("HEAD", "/")).status, 503);

    let (out, _) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{out:?}"
    );

    // The resolver retries every second; the streak is warned about once, however many
    // retries (each one a debug line) come after it.
    let logs = wait_for_log(&nexus, "(attempt 3 of this failure streak)");
    assert!(
        logs.contains("(attempt 3 of this failure streak)"),
        "{logs}"
    );
    let warnings = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot resolve nexus-test-unresolvable"))
        .count();
    assert_eq!(warnings, 1, "{logs}");
}

#[test]
fn an_upstream_whose_connects_all_fail_is_degraded() {
    let nexus = Nexus::builder().upstream(&closed_port_url()).start();
    assert_eq!(
        nexus.request(&Request::get("/")).status,
        200,
        "no evidence yet"
    );

    let response = nexus.request(&messages_request("{}"));
    assert_eq!(response.status, 502);

    let health = nexus.request(&Request::get("/"));
    assert_eq!(health.status, 503, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "degraded", "{body:#}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("connect"),
        "{body:#}"
    );
    let port = nexus.addr().port().to_string();
    let (out, _) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn a_reachable_upstream_is_ok_and_the_check_passes() {
    let mock = MockUpstream::start(|_| MockReply::json(200, "{}"));
    let nexus = Nexus::builder().upstream(&mock.url()).start();

    let response = nexus.request(&messages_request("{}"));
    assert_eq!(response.status, 200, "{}", response.text());

    let health = nexus.request(&Request::get("/"));
    assert_eq!(health.status, 200, "{}", health.text());
    let body = health.json();
    assert_eq!(body["status"], "ok", "{body:#}");
    assert!(body.get("reason").is_none(), "{body:#}");
    let port = nexus.addr().port().to_string();
    let (out, _) = check(&["-p", &port], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
