//! A key or token that would add a header line (CR, LF, NUL, other bytes that are not
//! visible ASCII) never reaches the upstream head, wherever it comes from: a credential
//! file (the domain gets a clear error), the token endpoint's answer (a transient refresh
//! failure, nothing stored), or `CLAUDE_API_KEY` (start-up stops). nexus keeps serving.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::credentials::{api_key_file, FAR_FUTURE_MS};
use common::oauth::*;
use common::process::ChildGuard;
use common::*;
use serde_json::json;

const INJECTION: &str = "\r\nx-injected: 1";
const BAD: &str = "bad.example.com";
const GOOD: &str = "good.example.com";
const GOOD_KEY: &str = "sk-ant-api03-good-domain-key";

fn request(domain: &str) -> Request {
    Request::post("/v1/messages")
        .host(domain)
        .header("anthropic-version", "2023-06-01")
        .json("{}")
}

/// Nothing the upstream received carries the injected header, or any part of `secret`.
fn assert_nothing_injected(mock: &MockUpstream, secret: &str) {
    for seen in mock.requests() {
        assert_eq!(seen.headers.get("x-injected"), None, "{seen:#?}");
        assert!(!seen.headers.mention("injected"), "{seen:#?}");
        assert!(!seen.headers.mention(secret), "{seen:#?}");
    }
}

/// The good domain is served, with its own key.
fn assert_good_domain_served(rig: &Rig) {
    let response = rig.nexus.request(&request(GOOD));
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = rig.mock.requests().pop().unwrap();
    assert_eq!(seen.headers.get_all("x-api-key"), [GOOD_KEY]);
}

#[test]
fn a_credential_file_whose_token_would_add_a_header_is_an_invalid_file() {
    let token = format!("sk-ant-oat01-file-token{INJECTION}");
    let oauth = json!({
        "type": "oauth",
        "oauth": {"accessToken": token, "refreshToken": OLD_REFRESH, "expiresAt": FAR_FUTURE_MS}
    });
    let nul_key = api_key_file("sk-ant-api03-nul-key\0");
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.credential(BAD, &oauth.to_string())
                .credential("nul.example.com", &nul_key)
                .credential(GOOD, &api_key_file(GOOD_KEY))
        },
    );

    for (domain, field) in [(BAD, "oauth.accessToken"), ("nul.example.com", "api_key")] {
        for _ in 0..3 {
            let response = rig.nexus.request(&request(domain));
            assert_anthropic_error(&response, 500, "api_error");
            let message = response.json()["error"]["message"].to_string();
            assert!(message.contains(domain), "{message}");
            assert!(message.contains(field), "names the field: {message}");
            assert!(!message.contains("file-token"), "{message}");
            assert!(!message.contains("injected"), "{message}");
        }
        assert_good_domain_served(&rig);
    }
    assert_eq!(
        rig.mock.requests().len(),
        2,
        "only the good domain's requests"
    );
    assert_nothing_injected(&rig.mock, "file-token");

    // The log names the file and the field, once per file, and never the value.
    let logs = rig.nexus.logs();
    for (domain, field) in [(BAD, "oauth.accessToken"), ("nul.example.com", "api_key")] {
        let file = format!("{domain}.credentials.json");
        let reports = logs
            .lines()
            .filter(|l| l.contains("is unusable") && l.contains(&file) && l.contains(field))
            .count();
        assert_eq!(reports, 1, "{file}:\n{logs}");
    }
    assert!(
        !logs.contains("injected") && !logs.contains("file-token") && !logs.contains("nul-key"),
        "{logs}"
    );
    assert_good_domain_served(&rig);
}

#[test]
fn a_refreshed_token_that_would_add_a_header_is_a_transient_failure_and_never_stored() {
    const BAD_ANSWERS: usize = 2;
    let poisoned = format!("sk-ant-oat01-poisoned-refresh{INJECTION}");
    let endpoint = TokenEndpoint::start(move |n, _| {
        if n < BAD_ANSWERS {
            token_reply(&poisoned, Some(NEW_REFRESH), 3600)
        } else {
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600)
        }
    });
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 60_000);
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.env("OAUTH_TOKEN_URL", endpoint.url())
                .credential(BAD, &original.to_string())
                .credential(GOOD, &api_key_file(GOOD_KEY))
        },
    );
    let file = rig
        .nexus
        .credentials_dir()
        .join(format!("{BAD}.credentials.json"));

    // The token has expired and the refresh brought nothing usable: 503, retried later.
    let response = wait_for(Duration::from_secs(20), "a 503 for the bad domain", || {
        let response = rig.nexus.request(&request(BAD));
        assert_ne!(response.status, 200, "{}", response.text());
        (response.status == 503).then_some(response)
    });
    assert_anthropic_error(&response, 503, "api_error");
    assert!(!response.text().contains("injected"), "{}", response.text());
    assert_eq!(read_credential(&file), original, "nothing was persisted");
    assert_good_domain_served(&rig);

    // Retried with backoff until the endpoint answers with a good token; the poisoned
    // answers' rotated refresh token was discarded with them.
    wait_for(Duration::from_secs(30), "the good token upstream", || {
        let response = rig.nexus.request(&request(BAD));
        (response.status == 200).then(|| {
            let seen = rig.mock.requests().pop().unwrap();
            assert_eq!(bearer_of(&seen), NEW_ACCESS);
        })
    });
    let sent = endpoint.refresh_tokens_sent();
    assert_eq!(sent, vec![OLD_REFRESH; BAD_ANSWERS + 1]);
    assert_eq!(read_credential(&file)["oauth"]["accessToken"], NEW_ACCESS);
    assert_nothing_injected(&rig.mock, "poisoned");
    assert_good_domain_served(&rig);

    let logs = rig.nexus.logs();
    assert!(
        logs.contains("access_token that contains a line break"),
        "the refresh failure says why:\n{logs}"
    );
    assert!(
        !logs.contains("injected") && !logs.contains("poisoned"),
        "{logs}"
    );
}

#[test]
fn a_claude_api_key_that_would_add_a_header_stops_start_up_with_one_line() {
    let dir = TempDir::new("injected-env-key");
    let mut child = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_nexus"))
            .env_clear()
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("CLAUDE_API_KEY", format!("sk-ant-api03-env-key{INJECTION}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nexus"),
    );
    let status = child
        .wait_for_exit(Duration::from_secs(20))
        .expect("nexus refused to start");
    let mut stderr = String::new();
    child
        .child_mut()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{status:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr:?}");
    assert!(
        lines[0].contains("CLAUDE_API_KEY") && lines[0].contains("line break"),
        "{stderr:?}"
    );
    assert!(
        !stderr.contains("injected") && !stderr.contains("env-key"),
        "{stderr:?}"
    );
}
