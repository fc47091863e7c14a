//! Which credential reaches the upstream, and how the request headers are rewritten.

mod common;

use common::credentials::{api_key_file, oauth_file};
use common::nexus::NexusBuilder;
use common::*;

const FILE_KEY: &str = "sk-ant-api03-from-domain-file";
const ENV_KEY: &str = "sk-ant-api03-from-env";
const BEARER_KEY: &str = "sk-ant-api03-from-bearer";
const OAUTH_TOKEN: &str = "sk-ant-oat01-access-token";
const OAUTH_FLAG: &str = "oauth-2025-04-20";

/// Sends `request` through a nexus set up by `configure` and returns what the mock received.
fn upstream_view(
    configure: impl FnOnce(NexusBuilder) -> NexusBuilder,
    request: Request,
) -> Recorded {
    let rig = Rig::start(Upstream::Plain, |_| MockReply::json(200, "{}"), configure);
    let response = rig.nexus.request(&request);
    assert_eq!(response.status, 200, "body: {}", response.text());
    rig.mock.single_request()
}

/// The upstream's credential headers as `(lowercase name, value)`.
fn credentials_of(seen: &Recorded) -> Vec<(String, String)> {
    credential_headers(&seen.headers)
}

fn x_api_key(value: &str) -> Vec<(String, String)> {
    vec![("x-api-key".into(), value.into())]
}

/// The comma-separated flags of every `anthropic-beta` line, trimmed.
fn beta_flags(seen: &Recorded) -> Vec<String> {
    seen.headers
        .get_all("anthropic-beta")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|f| f.trim().to_string())
        .collect()
}

fn bare_messages_request() -> Request {
    Request::post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .json("{}")
}

#[test]
fn domain_file_beats_client_headers_and_env_key() {
    let seen = upstream_view(
        |n| {
            n.api_key(ENV_KEY)
                .credential("team.example.com", &api_key_file(FILE_KEY))
        },
        // Domain lookup lowercases the Host and strips its port.
        messages_request("{}")
            .host("Team.Example.COM:8443")
            .header("Authorization", &format!("Bearer {BEARER_KEY}")),
    );
    assert_eq!(credentials_of(&seen), x_api_key(FILE_KEY));
}

#[test]
fn client_x_api_key_beats_env_key() {
    let seen = upstream_view(|n| n.api_key(ENV_KEY), messages_request("{}"));
    assert_eq!(credentials_of(&seen), x_api_key(CLIENT_KEY));
}

#[test]
fn client_bearer_api_key_goes_upstream_as_x_api_key() {
    let seen = upstream_view(
        |n| n.api_key(ENV_KEY),
        bare_messages_request().header("Authorization", &format!("Bearer {BEARER_KEY}")),
    );
    assert_eq!(credentials_of(&seen), x_api_key(BEARER_KEY));
}

#[test]
fn client_x_api_key_beats_client_authorization_and_only_one_is_sent() {
    let seen = upstream_view(
        |n| n,
        messages_request("{}").header("Authorization", &format!("Bearer {BEARER_KEY}")),
    );
    assert_eq!(credentials_of(&seen), x_api_key(CLIENT_KEY));
}

#[test]
fn env_key_is_used_when_the_client_sends_none() {
    let seen = upstream_view(|n| n.api_key(ENV_KEY), bare_messages_request());
    assert_eq!(credentials_of(&seen), x_api_key(ENV_KEY));
}

#[test]
fn no_credential_anywhere_is_401_and_never_reaches_the_upstream() {
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));

    let response = rig.nexus.request(&bare_messages_request());

    assert_anthropic_error(&response, 401, "authentication_error");
    assert_no_upstream_contact(&rig.mock);
}

#[test]
fn oauth_domain_file_sends_bearer_and_merges_beta_flags_into_one_header() {
    let seen = upstream_view(
        |n| {
            n.api_key(ENV_KEY).credential(
                "claude-3.example.com",
                &oauth_file(OAUTH_TOKEN, "sk-ant-ort01-refresh"),
            )
        },
        messages_request("{}")
            .host("claude-3.example.com")
            .header("anthropic-beta", "prompt-caching-2024-07-31"),
    );
    assert_eq!(
        credentials_of(&seen),
        vec![("authorization".to_string(), format!("Bearer {OAUTH_TOKEN}"))]
    );
    assert_eq!(
        seen.headers.count("anthropic-beta"),
        1,
        "one merged header: {:?}",
        seen.headers
    );
    let mut flags = beta_flags(&seen);
    flags.sort();
    assert_eq!(flags, [OAUTH_FLAG, "prompt-caching-2024-07-31"]);
}

#[test]
fn oauth_without_client_beta_sends_only_the_oauth_flag() {
    let seen = upstream_view(
        |n| {
            n.credential(
                "claude-3.example.com",
                &oauth_file(OAUTH_TOKEN, "sk-ant-ort01-refresh"),
            )
        },
        bare_messages_request().host("claude-3.example.com"),
    );
    assert_eq!(
        credentials_of(&seen),
        vec![("authorization".to_string(), format!("Bearer {OAUTH_TOKEN}"))]
    );
    assert_eq!(beta_flags(&seen), [OAUTH_FLAG]);
}

#[test]
fn oauth_merge_keeps_every_client_flag_once_across_header_lines() {
    // Several anthropic-beta lines are one list (RFC 9110 §5.3); a flag the client already
    // sent is not repeated.
    let seen = upstream_view(
        |n| {
            n.credential(
                "claude-3.example.com",
                &oauth_file(OAUTH_TOKEN, "sk-ant-ort01-refresh"),
            )
        },
        bare_messages_request()
            .host("claude-3.example.com")
            .header("anthropic-beta", "interleaved-thinking-2025-05-14")
            .header(
                "anthropic-beta",
                "oauth-2025-04-20, fine-grained-tool-streaming-2025-05-14",
            ),
    );
    assert_eq!(
        seen.headers.count("anthropic-beta"),
        1,
        "one merged header: {:?}",
        seen.headers
    );
    let mut flags = beta_flags(&seen);
    flags.sort();
    assert_eq!(
        flags,
        [
            "fine-grained-tool-streaming-2025-05-14",
            "interleaved-thinking-2025-05-14",
            OAUTH_FLAG
        ]
    );
}

#[test]
fn hop_by_hop_request_headers_are_dropped_and_end_to_end_ones_kept() {
    let seen = upstream_view(
        |n| n,
        messages_request("{}")
            .header("Connection", "keep-alive, X-Drop-Me")
            .header("X-Drop-Me", "1")
            .header("Keep-Alive", "timeout=5")
            .header("TE", "trailers")
            .header("Upgrade", "foo")
            .header("Proxy-Connection", "x")
            .header("X-Custom-Thing", "Value  With, Commas; and CASE")
            .header("anthropic-beta", "prompt-caching-2024-07-31"),
    );
    for name in [
        "connection",
        "x-drop-me",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
    ] {
        assert!(
            !seen.headers.contains(name),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers.get_all("anthropic-version"), ["2023-06-01"]);
    assert_eq!(
        seen.headers.get_all("x-custom-thing"),
        ["Value  With, Commas; and CASE"]
    );
    assert_eq!(
        seen.headers.get_all("anthropic-beta"),
        ["prompt-caching-2024-07-31"]
    );
    assert_eq!(seen.headers.get_all("content-type"), ["application/json"]);
}

#[test]
fn host_is_rewritten_to_the_upstream_authority() {
    let rig = Rig::plain(|_| MockReply::json(200, "{}"));

    let response = rig
        .nexus
        .request(&messages_request("{}").host("claude-1.example.com"));

    assert_eq!(response.status, 200);
    let seen = rig.mock.single_request();
    assert_eq!(seen.headers.get_all("host"), [rig.mock.authority()]);
}

#[test]
fn host_values_that_are_not_hostnames_never_read_a_file_and_fall_through() {
    let root = TempDir::new("traversal");
    let creds = root.subdir("creds");
    // A sentinel one level above CREDENTIALS_DIR: where `../evil` would land.
    root.write(
        "evil.credentials.json",
        api_key_file("sk-ant-api03-EVIL").as_bytes(),
    );
    let mock = MockUpstream::start(|_| MockReply::json(200, "{}"));
    let rig = Rig::around(mock, |n| n.credentials_dir(&creds).api_key(ENV_KEY));
    let long_host = "a".repeat(300);

    let hosts = [
        "../evil",
        "../../etc/passwd",
        "a/b",
        "..",
        "../evil:8080",
        "evil/../../evil",
        "%2e%2e/evil",
        "",
        long_host.as_str(),
        "évil.example.com",
    ];
    for host in hosts {
        let response = rig.nexus.request(&bare_messages_request().host(host));
        assert_eq!(response.status, 200, "Host {host:?}: {}", response.text());
    }

    let seen = rig.mock.requests();
    assert_eq!(seen.len(), hosts.len());
    for request in &seen {
        // The next rule in line: no client key was sent, so CLAUDE_API_KEY.
        assert_eq!(request.headers.get_all("x-api-key"), [ENV_KEY]);
    }
    assert!(
        !seen.iter().any(|r| r.headers.mention("EVIL")),
        "the traversal file was used"
    );
}
