//! OAuth refresh against a mock token endpoint: single flight, persistence with every
//! field kept, refresh ahead of expiry, TLS, and the two failure paths (invalid_grant,
//! timeout).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::credentials::{
    metric, wait_for_runs, REFRESH_ATTEMPTS, REFRESH_CHECKS, REFRESH_WAITING,
};
use common::nexus::NexusBuilder;
use common::oauth::*;
use common::tls::TlsSetup;
use common::*;
use serde_json::json;

const DOMAIN: &str = "claude-oauth.example.com";

fn request() -> Request {
    Request::post("/v1/messages")
        .host(DOMAIN)
        .header("anthropic-version", "2023-06-01")
        .json(r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[]}"#)
}

fn with_oauth(
    endpoint: &TokenEndpoint,
    file: &serde_json::Value,
) -> impl FnOnce(NexusBuilder) -> NexusBuilder {
    let url = endpoint.url();
    let file = file.to_string();
    move |n| n.env("OAUTH_TOKEN_URL", url).credential(DOMAIN, &file)
}

fn credential_path(rig: &Rig) -> std::path::PathBuf {
    rig.nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"))
}

/// No secret of this test appears in `text`.
fn assert_no_token_text(text: &str, what: &str) {
    for secret in [OLD_ACCESS, OLD_REFRESH, NEW_ACCESS, NEW_REFRESH] {
        assert!(!text.contains(secret), "{what} contains a token: {text}");
        // Not even the masked-away part.
        assert!(
            !text.contains(&secret[..30]),
            "{what} contains a token prefix: {text}"
        );
    }
}

#[test]
fn expired_token_is_refreshed_once_for_200_concurrent_requests() {
    const CLIENTS: usize = 200;
    let release = Latch::new();
    let endpoint = {
        let release = release.clone();
        TokenEndpoint::start(move |_, _| {
            release.wait(Duration::from_secs(20));
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600)
        })
    };
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 60_000);
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        with_oauth(&endpoint, &original),
    );

    // The background refresh is in flight (held at the endpoint); now the crowd arrives.
    wait_for(Duration::from_secs(10), "the refresh request", || {
        (endpoint.calls() == 1).then_some(())
    });
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = rig.nexus.client();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                client.request(&request()).status
            })
        })
        .collect();
    start.wait();
    // The whole crowd has reached nexus and waits there for the refresh.
    wait_for(Duration::from_secs(60), "every request waiting", || {
        (metric(&rig.nexus, REFRESH_WAITING) == CLIENTS as i64).then_some(())
    });
    assert_eq!(
        rig.mock.requests().len(),
        0,
        "nobody went ahead with the old token"
    );
    release.open();

    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(
        endpoint.calls(),
        1,
        "exactly one POST to the token endpoint"
    );
    assert_eq!(endpoint.refresh_tokens_sent(), [OLD_REFRESH]);
    let seen = rig.mock.wait_for_requests(CLIENTS);
    assert_eq!(seen.len(), CLIENTS);
    for request in &seen {
        assert_eq!(bearer_of(request), NEW_ACCESS);
        assert_eq!(
            request.headers.get_all("anthropic-beta"),
            ["oauth-2025-04-20"]
        );
    }

    // On disk: the new tokens, a new expiry, new scopes, and every other field as before.
    let path = credential_path(&rig);
    let saved = read_credential(&path);
    let expires_at = saved["oauth"]["expiresAt"].as_u64().expect("expiresAt");
    let expected_expiry = now_ms() + 3_600_000;
    assert!(
        expires_at.abs_diff(expected_expiry) < 120_000,
        "expiresAt {expires_at} vs about {expected_expiry}"
    );
    let mut expected = with_tokens(&original, NEW_ACCESS, NEW_REFRESH, &json!(expires_at));
    expected["oauth"]["scopes"] = json!(["user:inference", "user:profile", "org:create_api_key"]);
    assert_eq!(saved, expected);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_no_token_text(&rig.nexus.logs(), "the log");
}

#[test]
fn a_token_near_expiry_is_refreshed_in_the_background_without_making_requests_wait() {
    // The refresh is held at the endpoint until the test lets it go.
    let release = Latch::new();
    let endpoint = {
        let release = release.clone();
        TokenEndpoint::start(move |_, _| {
            release.wait(Duration::from_secs(120));
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600)
        })
    };
    // Four minutes left: inside the five-minute refresh-ahead window, far from expiry.
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() + 4 * 60_000);
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        with_oauth(&endpoint, &original),
    );
    wait_for(Duration::from_secs(10), "the refresh request", || {
        (endpoint.calls() == 1).then_some(())
    });

    // While the refresh is held, a request goes with the old token: it is answered before
    // the refresh ends. One that waited for the refresh would come back only after the
    // wait limit (2 × NEXUS_OAUTH_TIMEOUT_SECS + 2 s = 62 s): far above the bound below.
    let since = Instant::now();
    let response = rig.nexus.request(&request());
    assert_eq!(response.status, 200);
    assert!(
        since.elapsed() < Duration::from_secs(20),
        "the request waited {:?} for a refresh it did not need",
        since.elapsed()
    );
    assert_eq!(bearer_of(&rig.mock.single_request()), OLD_ACCESS);
    assert_eq!(
        read_credential(&credential_path(&rig))["oauth"]["accessToken"],
        OLD_ACCESS,
        "the refresh is still held"
    );
    release.open();

    wait_for(Duration::from_secs(10), "the new token upstream", || {
        assert_eq!(rig.nexus.request(&request()).status, 200);
        let last = rig.mock.requests().pop().unwrap();
        (bearer_of(&last) == NEW_ACCESS).then_some(())
    });
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(
        read_credential(&credential_path(&rig))["oauth"]["accessToken"],
        NEW_ACCESS
    );
}

#[test]
fn a_tls_token_endpoint_is_trusted_through_upstream_ca_file_and_an_unrotated_refresh_token_is_kept()
{
    let tls = TlsSetup::trusted();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let endpoint = {
        let calls = Arc::clone(&calls);
        MockUpstream::builder()
            .tls(tls.server_config())
            .start(move |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                token_reply(NEW_ACCESS, None, 7200)
            })
    };
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 1000);
    let url = format!("{}{TOKEN_PATH}", endpoint.url());
    assert!(url.starts_with("https://localhost:"), "{url}");
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.env("OAUTH_TOKEN_URL", &url)
                .ca_file(tls.ca_file())
                .credential(DOMAIN, &original.to_string())
        },
    );

    let response = rig.nexus.request(&request());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(bearer_of(&rig.mock.single_request()), NEW_ACCESS);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let saved = read_credential(&credential_path(&rig));
    assert_eq!(saved["oauth"]["accessToken"], NEW_ACCESS);
    assert_eq!(
        saved["oauth"]["refreshToken"], OLD_REFRESH,
        "not rotated: kept"
    );
    let token_request = endpoint.single_request();
    assert_eq!(token_request.json()["refresh_token"], OLD_REFRESH);
    assert_eq!(
        token_request.headers.get("host"),
        Some(endpoint.authority().as_str())
    );
}

#[test]
fn invalid_grant_serves_the_old_token_until_expiry_then_401_and_never_retries_until_the_file_changes(
) {
    let endpoint = TokenEndpoint::start(|_, request| {
        let refresh = request.json()["refresh_token"]
            .as_str()
            .unwrap_or("")
            .to_string();
        invalid_grant_reply(&refresh)
    });
    let expires_at = now_ms() + 8000;
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, expires_at);
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        with_oauth(&endpoint, &original),
    );
    wait_for(Duration::from_secs(10), "the refresh attempt", || {
        (endpoint.calls() == 1).then_some(())
    });
    // `nexus credentials` (another process) shows the refused refresh, and no secret.
    let listing = wait_for(
        Duration::from_secs(10),
        "the error in `nexus credentials`",
        || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
                .arg("credentials")
                .env_clear()
                .env("CREDENTIALS_DIR", rig.nexus.credentials_dir())
                .output()
                .expect("running nexus credentials");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("last refresh failed").then_some(text)
        },
    );
    assert!(listing.contains("(invalid_grant)"), "{listing}");
    assert_no_token_text(&listing, "nexus credentials");

    // Still valid: requests succeed with the old token.
    let mut served = 0;
    while now_ms() + 2000 < expires_at {
        let response = rig.nexus.request(&request());
        assert_eq!(response.status, 200, "{}", response.text());
        served += 1;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(served > 0, "the machine was too slow to try before expiry");
    let seen = rig.mock.requests();
    assert!(seen.iter().all(|r| bearer_of(r) == OLD_ACCESS));

    // Expired: 401 authentication_error saying the credential must be renewed.
    let response = wait_for(Duration::from_secs(10), "a 401 after expiry", || {
        let response = rig.nexus.request(&request());
        (response.status == 401).then_some(response)
    });
    assert_anthropic_error(&response, 401, "authentication_error");
    let message = response.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("renew"), "{message}");
    assert!(message.contains(DOMAIN), "{message}");
    assert_no_token_text(&response.text(), "the 401 body");
    let upstream_before = rig.mock.requests().len();

    // More requests, and whole scheduler passes where it would try again if it wrongly
    // would (each waiting request also wakes it).
    for _ in 0..10 {
        assert_eq!(rig.nexus.request(&request()).status, 401);
    }
    wait_for_runs(&rig.nexus, REFRESH_CHECKS, 3);
    assert_eq!(
        metric(&rig.nexus, REFRESH_ATTEMPTS),
        1,
        "exactly one refresh started after invalid_grant"
    );
    assert_eq!(
        endpoint.calls(),
        1,
        "exactly one attempt after invalid_grant"
    );
    assert_eq!(
        rig.mock.requests().len(),
        upstream_before,
        "no expired token went upstream"
    );

    // The file changes (a renewed refresh token, still expired): one new attempt.
    let renewed = oauth_file_expiring(OLD_ACCESS, NEW_REFRESH, now_ms() - 1000);
    write_credential(&credential_path(&rig), &renewed);
    wait_for(
        Duration::from_secs(10),
        "an attempt with the renewed token",
        || (endpoint.calls() == 2).then_some(()),
    );
    assert_eq!(endpoint.refresh_tokens_sent(), [OLD_REFRESH, NEW_REFRESH]);

    let reports = || {
        let logs = rig.nexus.logs();
        let n = logs
            .lines()
            .filter(|l| l.contains("credentials:") && l.contains("invalid_grant"))
            .count();
        (n, logs)
    };
    wait_for(Duration::from_secs(10), "the second report", || {
        (reports().0 >= 2).then_some(())
    });
    let (n, logs) = reports();
    assert_eq!(n, 2, "one report per refused refresh token:\n{logs}");
    assert_no_token_text(&logs, "the log");
}

#[test]
fn a_token_endpoint_that_times_out_serves_the_old_token_until_expiry_then_503() {
    let endpoint = TokenEndpoint::start(|_, _| MockReply::never());
    let expires_at = now_ms() + 8000;
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, expires_at);
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| with_oauth(&endpoint, &original)(n).env("NEXUS_OAUTH_TIMEOUT_SECS", "1"),
    );

    // Still valid: requests succeed with the old token (the first may wait for the first
    // attempt to time out).
    let mut served = 0;
    while now_ms() + 2500 < expires_at {
        let response = rig.nexus.request(&request());
        assert_eq!(response.status, 200, "{}", response.text());
        served += 1;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(served > 0, "the machine was too slow to try before expiry");
    assert!(rig
        .mock
        .requests()
        .iter()
        .all(|r| bearer_of(r) == OLD_ACCESS));

    // Expired: 503 api_error saying the refresh failed and will be retried.
    let response = wait_for(Duration::from_secs(15), "a 503 after expiry", || {
        let response = rig.nexus.request(&request());
        assert_ne!(response.status, 401, "{}", response.text());
        (response.status == 503).then_some(response)
    });
    assert_anthropic_error(&response, 503, "api_error");
    let message = response.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("refresh"), "{message}");
    assert!(message.contains("retr"), "{message}");
    assert_no_token_text(&response.text(), "the 503 body");

    // Retried with backoff, logged once for the whole streak.
    wait_for(Duration::from_secs(10), "a retry", || {
        (endpoint.calls() >= 2).then_some(())
    });
    let logs = rig.nexus.logs();
    assert_no_token_text(&logs, "the log");
    let reports = logs
        .lines()
        .filter(|l| l.contains("credentials:") && l.contains("OAuth refresh failed"))
        .count();
    assert_eq!(reports, 1, "one report per failure streak:\n{logs}");
    // The file is untouched.
    assert_eq!(read_credential(&credential_path(&rig)), original);
}
