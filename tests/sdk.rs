//! The official `anthropic` Python SDK talking to nexus, non-streaming and streaming.
//! Needs python3 with `anthropic` installed: run tests/install-deps.sh.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixtures::{
    stream_events, MESSAGE_TEXT, MESSAGE_TEXT_JSON, STREAM_TEXT, STREAM_TOOL_INPUT,
};
use common::nexus::NexusBuilder;
use common::process::{ChildGuard, OutputLog};
use common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_client.py");
const SDK_BOUND: Duration = Duration::from_secs(60);

/// Fails (never skips) when python3 or the SDK is missing.
fn require_python_sdk() {
    let probe = Command::new("python3")
        .args(["-c", "import anthropic"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Err(e) => panic!("python3 is not runnable ({e}); run tests/install-deps.sh"),
        Ok(out) if !out.status.success() => panic!(
            "the `anthropic` Python module is missing; run tests/install-deps.sh\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

/// Runs tests/sdk_client.py against `nexus` (bounded by 60 s) and parses its JSON line.
/// Over HTTPS the SDK trusts the test CA through SSL_CERT_FILE, as httpx reads it.
fn run_sdk_client(nexus: &Nexus) -> serde_json::Value {
    let mut command = Command::new("python3");
    command.arg(SCRIPT).env("NEXUS_BASE_URL", nexus.url());
    if let Some(certs) = nexus.tls() {
        command.env("SSL_CERT_FILE", &certs.ca_file);
    }
    // The SDK reads these; the test decides everything itself.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ANTHROPIC_") {
            command.env_remove(name);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawning python3");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut guard = ChildGuard::new(child);
    let log = OutputLog::default();
    let (_, out_thread) = log.drain("stdout", stdout);
    let (_, err_thread) = log.drain("stderr", stderr);
    let status = guard.wait_for_exit(SDK_BOUND).unwrap_or_else(|| {
        panic!(
            "sdk_client.py did not finish within {SDK_BOUND:?}\n{}",
            log.snapshot()
        )
    });
    let _ = (out_thread.join(), err_thread.join());
    assert!(
        status.success(),
        "sdk_client.py failed ({status})\n{}",
        log.snapshot()
    );
    let stdout = log.stream("stdout");
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("sdk_client.py printed nothing\n{}", log.snapshot()));
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("sdk_client.py printed no JSON line ({e}): {line}"))
}

fn usage(input: u64, output: u64, cache_creation: u64, cache_read: u64) -> serde_json::Value {
    serde_json::json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
    })
}

#[test]
fn anthropic_python_sdk_creates_and_streams_messages_through_nexus() {
    creates_and_streams(|nexus| nexus);
}

#[test]
fn anthropic_python_sdk_creates_and_streams_messages_over_https() {
    creates_and_streams(|nexus| nexus.https());
}

fn creates_and_streams(configure: impl FnOnce(NexusBuilder) -> NexusBuilder) {
    require_python_sdk();
    let rig = Rig::start(
        Upstream::Plain,
        |req| {
            if req.path() != "/v1/messages" {
                return MockReply::json(
                    404,
                    r#"{"type":"error","error":{"type":"not_found_error","message":"mock"}}"#,
                );
            }
            if req.json()["stream"] == true {
                MockReply::sse(stream_events()).header("request-id", "req_sdk_stream")
            } else {
                MockReply::json(200, MESSAGE_TEXT_JSON).header("request-id", "req_sdk_create")
            }
        },
        configure,
    );

    let result = run_sdk_client(&rig.nexus);

    let (created, streamed) = (&result["create"], &result["stream"]);
    assert_eq!(created["text"], MESSAGE_TEXT, "{result}");
    assert_eq!(created["stop_reason"], "end_turn");
    assert_eq!(created["usage"], usage(57, 19, 11, 1024), "{result}");
    assert_eq!(streamed["text_stream"], STREAM_TEXT, "{result}");
    assert_eq!(streamed["final_text"], STREAM_TEXT);
    let tool_input: serde_json::Value = serde_json::from_str(STREAM_TOOL_INPUT).unwrap();
    assert_eq!(
        streamed["tool_uses"],
        serde_json::json!([{ "name": "get_weather", "input": tool_input }]),
        "{result}"
    );
    assert_eq!(streamed["stop_reason"], "tool_use");
    // input and cache figures from message_start, output from the final message_delta.
    assert_eq!(streamed["usage"], usage(21, 64, 3, 512), "{result}");
    let seen = rig.mock.requests();
    assert_eq!(
        seen.len(),
        2,
        "one request per SDK call (max_retries=0): {seen:#?}"
    );
    assert!(seen
        .iter()
        .all(|r| r.headers.get_all("x-api-key") == ["sk-ant-api03-test"]));
    assert_eq!(seen[1].json()["stream"], true);
}
