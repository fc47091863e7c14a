//! `nexus --check-health`, the container health check: exit 0 when the nexus on the
//! configured port answers `GET /` with 200, 1 otherwise, within about 2 s.

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
