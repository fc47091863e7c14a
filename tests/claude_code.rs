//! The official Claude Code CLI (`@anthropic-ai/claude-code` from npm) through nexus, in
//! non-interactive mode (`claude -p`), against a mock upstream that answers like the API.
//! The CLI must print the mock's text, and `/token-stats` must count the request under the
//! domain the CLI sent as `Host`.
//!
//! tests/install-deps.sh installs the CLI into target/claude-code (or
//! `$NEXUS_CLAUDE_CODE_DIR`); `$NEXUS_CLAUDE_BIN` points at another `claude`. A missing CLI
//! is a failure with that hint, never a skip.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{ChildGuard, OutputLog};
use common::*;
use serde_json::{json, Value};

/// The text the mock streams back.
const MOCK_TEXT: &str = "Hello from the mock";
/// Bound on one CLI run.
const CLI_BOUND: Duration = Duration::from_secs(120);
/// Usage the mock reports per Messages call: input, output, cache write, cache read.
const USAGE: [u64; 4] = [321, 7, 1_000, 2_000];

fn claude_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NEXUS_CLAUDE_BIN") {
        return bin.into();
    }
    let dir = std::env::var_os("NEXUS_CLAUDE_CODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/claude-code"));
    dir.join("node_modules/.bin/claude")
}

/// The CLI's version line; panics with the fix when it cannot run.
fn require_claude() -> String {
    let bin = claude_binary();
    match Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`{} --version` failed ({}); run tests/install-deps.sh to (re)install Claude Code\n{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "Claude Code is not installed at {} ({e}); run tests/install-deps.sh \
             (it installs @anthropic-ai/claude-code from npm there)",
            bin.display()
        ),
    }
}

fn sse(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn usage_json() -> Value {
    let [input, output, cache_write, cache_read] = USAGE;
    json!({"input_tokens": input, "output_tokens": output,
        "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read})
}

/// The API as far as a `claude -p` run needs it.
fn api(request: &Recorded) -> MockReply {
    let not_found = || {
        MockReply::json(
            404,
            json!({"type": "error", "error": {"type": "not_found_error",
                "message": format!("mock: no {} {}", request.method, request.path())}})
            .to_string(),
        )
    };
    match (request.method.as_str(), request.path()) {
        ("POST", "/v1/messages") => {
            let body = request.json();
            let model = body["model"].as_str().unwrap_or("claude-sonnet-4-5").to_string();
            if body["stream"] == true {
                let mut start = usage_json();
                start["output_tokens"] = 1.into();
                MockReply::sse(vec![
                    sse("message_start", json!({"type": "message_start", "message": {
                        "id": "msg_mock_1", "type": "message", "role": "assistant", "model": model,
                        "content": [], "stop_reason": null, "stop_sequence": null, "usage": start}})),
                    sse("content_block_start", json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})),
                    sse("ping", json!({"type": "ping"})),
                    sse("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": MOCK_TEXT}})),
                    sse("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                    sse("message_delta", json!({"type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                        "usage": {"output_tokens": USAGE[1]}})),
                    sse("message_stop", json!({"type": "message_stop"})),
                ])
                .header("request-id", "req_mock_stream")
            } else {
                MockReply::json(
                    200,
                    json!({"id": "msg_mock_2", "type": "message", "role": "assistant", "model": model,
                        "content": [{"type": "text", "text": MOCK_TEXT}], "stop_reason": "end_turn",
                        "stop_sequence": null, "usage": usage_json()})
                    .to_string(),
                )
            }
        }
        ("POST", "/v1/messages/count_tokens") => {
            MockReply::json(200, json!({"input_tokens": USAGE[0]}).to_string())
        }
        ("GET", "/v1/models") => MockReply::json(
            200,
            json!({"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                "created_at": "2025-09-29T00:00:00Z"}], "has_more": false,
                "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"})
            .to_string(),
        ),
        _ => not_found(),
    }
}

/// What one CLI run printed.
struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    log: String,
    took: Duration,
}

/// Runs `claude -p PROMPT` with exactly `env` (plus PATH) and a bound of [`CLI_BOUND`].
fn run_claude(prompt: &str, env: &[(&str, String)]) -> Run {
    let mut command = Command::new(claude_binary());
    command
        .args(["-p", prompt])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawning claude");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut guard = ChildGuard::new(child);
    let log = OutputLog::default();
    let (_, out_thread) = log.drain("stdout", stdout);
    let (_, err_thread) = log.drain("stderr", stderr);
    let status = guard.wait_for_exit(CLI_BOUND).unwrap_or_else(|| {
        panic!(
            "claude -p did not finish within {CLI_BOUND:?}\n{}",
            log.snapshot()
        )
    });
    let _ = (out_thread.join(), err_thread.join());
    Run {
        status,
        stdout: log.stream("stdout"),
        log: log.snapshot(),
        took: started.elapsed(),
    }
}

/// Every request the mock saw, one line each, for failure messages.
fn seen(mock: &MockUpstream) -> String {
    mock.requests()
        .iter()
        .map(|r| format!("{} {} ({} body bytes)\n", r.method, r.target, r.body.len()))
        .collect()
}

fn wait_for_domain(nexus: &Nexus, domain: &str, requests: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = nexus.request(&Request::get("/token-stats")).json();
        let d = &stats["stats"][domain];
        if d["requestCount"].as_u64() >= Some(requests) || Instant::now() > deadline {
            return d.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `/v1/messages` calls the mock answered.
fn message_calls(mock: &MockUpstream) -> Vec<Recorded> {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path() == "/v1/messages")
        .collect()
}

/// Checks the mock's requests and nexus's figures after a run that printed the mock's text.
fn assert_counted(rig: &Rig, run: &Run) -> Vec<Recorded> {
    let calls = message_calls(&rig.mock);
    assert!(
        !calls.is_empty(),
        "the CLI never reached the mock's /v1/messages; it saw:\n{}{}",
        seen(&rig.mock),
        run.log
    );
    for r in rig.mock.requests() {
        assert!(
            r.path().starts_with("/v1/"),
            "nexus forwarded a non-API request: {} {}",
            r.method,
            r.target
        );
    }
    let call = &calls[0];
    assert!(
        call.headers.contains("x-claude-code-session-id"),
        "not Claude Code? headers: {:?}",
        call.headers
    );
    // The CLI asks for gzip/br/zstd; nexus asks the upstream for identity on metered calls
    // so it can read the usage.
    assert_eq!(call.headers.get("accept-encoding"), Some("identity"));

    // The CLI sent `Host: 127.0.0.1:PORT`: the domain is 127.0.0.1.
    let n = calls.len() as u64;
    let d = wait_for_domain(&rig.nexus, "127.0.0.1", n);
    assert_eq!(d["requestCount"].as_u64(), Some(n), "{d}");
    assert_eq!(d["inputTokens"].as_u64(), Some(USAGE[0] * n), "{d}");
    assert_eq!(d["outputTokens"].as_u64(), Some(USAGE[1] * n), "{d}");
    assert_eq!(
        d["cacheCreationInputTokens"].as_u64(),
        Some(USAGE[2] * n),
        "{d}"
    );
    assert_eq!(
        d["cacheReadInputTokens"].as_u64(),
        Some(USAGE[3] * n),
        "{d}"
    );
    assert_eq!(d["errorCount"].as_u64(), Some(0), "{d}");
    calls
}

#[test]
fn claude_p_through_nexus_prints_the_mock_reply_and_is_counted() {
    let version = require_claude();
    let rig = Rig::plain(api);
    let home = TempDir::new("claude-home");

    let run = run_claude(
        "say hi",
        &[
            ("HOME", home.path().display().to_string()),
            ("ANTHROPIC_BASE_URL", rig.nexus.url()),
            ("ANTHROPIC_API_KEY", "sk-ant-api03-test".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ],
    );

    assert!(
        run.status.success() && run.stdout.contains(MOCK_TEXT),
        "{version}: claude -p exited {} without printing {MOCK_TEXT:?}\nmock saw:\n{}{}",
        run.status,
        seen(&rig.mock),
        run.log
    );
    let calls = assert_counted(&rig, &run);
    // No credential in nexus: the CLI's own key goes upstream, as the only credential.
    let call = &calls[0];
    assert_eq!(call.headers.get_all("x-api-key"), vec!["sk-ant-api03-test"]);
    assert!(!call.headers.contains("authorization"));
    let size = call.body.len();
    eprintln!(
        "{version}: `claude -p` took {:.1}s; {} Messages call(s), the first {} KB, target {}",
        run.took.as_secs_f64(),
        calls.len(),
        size / 1024,
        call.target
    );
}

/// The path a team would take: fetch setup.sh from nexus, run it, then plain `claude -p`
/// with no ANTHROPIC_* variables at all. nexus holds the API key and guards it with a
/// client key, which the script stored in Claude Code's settings.
#[test]
fn claude_code_set_up_by_the_shipped_script_uses_nexus_credential() {
    require_claude();
    const HELD_KEY: &str = "sk-ant-api03-held-by-nexus-0123456789";
    const CLIENT_KEY: &str = "team-client-key-42";
    let rig = Rig::start(Upstream::Plain, api, |nexus| {
        nexus
            .api_key(HELD_KEY)
            .env("CLIENT_API_KEYS", CLIENT_KEY)
            .env(
                "CLIENT_SETUP_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/client-setup"),
            )
    });
    let home = TempDir::new("claude-home-setup");

    let script = rig.nexus.request(&Request::get("/client-setup/setup.sh"));
    assert_eq!(script.status, 200);
    let mut sh = Command::new("sh")
        .args(["-s", "--", &rig.nexus.url(), CLIENT_KEY])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    std::io::Write::write_all(sh.stdin.as_mut().unwrap(), &script.body).unwrap();
    drop(sh.stdin.take());
    let out = sh.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = run_claude("say hi", &[("HOME", home.path().display().to_string())]);
    assert!(
        run.status.success() && run.stdout.contains(MOCK_TEXT),
        "claude -p (configured by setup.sh) exited {} without printing {MOCK_TEXT:?}\nmock saw:\n{}{}",
        run.status,
        seen(&rig.mock),
        run.log
    );
    let calls = assert_counted(&rig, &run);
    for call in &calls {
        assert_eq!(call.headers.get_all("x-api-key"), vec![HELD_KEY]);
        assert!(!call.headers.contains("authorization"));
        assert!(
            !call.headers.mention(CLIENT_KEY),
            "the client key must not be forwarded"
        );
    }
    // (A CLI without the client key gets nexus's 401 — and retries it with backoff for
    // minutes, so that case is covered with plain requests in credentials_client_keys.rs.)
}
