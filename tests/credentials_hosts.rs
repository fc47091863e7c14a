//! Host values that are not host names never name a file, inside CREDENTIALS_DIR or
//! outside it: they fall through to the next credential rule.

mod common;

use common::credentials::{
    api_key_file, metric, wait_for_runs, REFRESH_ATTEMPTS, REFRESH_CHECKS, SCANS,
};
use common::oauth::{now_ms, oauth_file_expiring, token_reply, TokenEndpoint};
use common::*;

const ENV_KEY: &str = "sk-ant-api03-from-env";
const SENTINEL: &str = "SENTINEL";

#[test]
fn hostile_host_values_never_reach_a_file_and_fall_through_to_the_next_rule() {
    let root = TempDir::new("hosts");
    let creds = root.subdir("creds");
    // Sentinels where a path trick would land: one level above CREDENTIALS_DIR, in a
    // subdirectory, and under names only a decoder would produce.
    for name in ["x", "evil", "", "."] {
        root.write(
            &format!("{name}.credentials.json"),
            api_key_file(&format!("sk-ant-api03-{SENTINEL}-above-{name}")).as_bytes(),
        );
    }
    root.write(
        "oauth.credentials.json",
        oauth_file_expiring(
            "sk-ant-oat01-SENTINEL",
            "sk-ant-ort01-SENTINEL",
            now_ms() - 1,
        )
        .to_string()
        .as_bytes(),
    );
    root.write(
        "creds/a/b.credentials.json",
        api_key_file("sk-ant-api03-SENTINEL-subdir").as_bytes(),
    );
    for name in ["%2e%2e", "..", "%2e%2e%2fx", "a%2fb"] {
        root.write(
            &format!("creds/{name}.credentials.json"),
            api_key_file(&format!("sk-ant-api03-{SENTINEL}-inside-{name}")).as_bytes(),
        );
    }
    // A refresh of the OAuth sentinel would show up here.
    let endpoint = TokenEndpoint::start(|_, _| token_reply("sk-ant-oat01-SENTINEL-new", None, 60));
    let mock = MockUpstream::start(|_| MockReply::json(200, "{}"));
    let rig = Rig::around(mock, |n| {
        n.credentials_dir(&creds)
            .api_key(ENV_KEY)
            .env("OAUTH_TOKEN_URL", endpoint.url())
    });

    let long_host = "a".repeat(300);
    let long_labels = format!("{}.example.com", "b".repeat(64));
    let hosts = [
        "../x",
        "../x:443",
        "..",
        ".",
        "a/b",
        "a\\b",
        "%2e%2e",
        "%2e%2e%2fx",
        "a%2fb",
        "../oauth",
        "../../etc/passwd",
        "",
        " ",
        long_host.as_str(),
        long_labels.as_str(),
        "évil.example.com",
        "例え.jp",
        "x.credentials.json/../x",
    ];
    for host in hosts {
        // No client key: CLAUDE_API_KEY is next in line.
        let request = Request::post("/v1/messages")
            .host(host)
            .header("anthropic-version", "2023-06-01")
            .json("{}");
        let response = rig.nexus.request(&request);
        assert_eq!(response.status, 200, "Host {host:?}: {}", response.text());
        let seen = rig.mock.requests().pop().unwrap();
        assert_eq!(
            seen.headers.get_all("x-api-key"),
            [ENV_KEY],
            "Host {host:?}"
        );

        // With the client's own key: that key is next in line.
        let response = rig.nexus.request(&messages_request("{}").host(host));
        assert_eq!(response.status, 200, "Host {host:?}: {}", response.text());
        let seen = rig.mock.requests().pop().unwrap();
        assert_eq!(
            seen.headers.get_all("x-api-key"),
            [CLIENT_KEY],
            "Host {host:?}"
        );
    }
    assert!(
        !rig.mock
            .requests()
            .iter()
            .any(|r| r.headers.mention(SENTINEL)),
        "a sentinel credential reached the upstream"
    );
    // Whole passes of the scanner and of the refresh scheduler, were they to look.
    wait_for_runs(&rig.nexus, SCANS, 2);
    wait_for_runs(&rig.nexus, REFRESH_CHECKS, 2);
    assert_eq!(
        metric(&rig.nexus, REFRESH_ATTEMPTS),
        0,
        "a refresh was started"
    );
    assert_eq!(
        endpoint.calls(),
        0,
        "a file outside CREDENTIALS_DIR was refreshed"
    );
    let health = rig.nexus.request(&Request::get("/")).json();
    assert_eq!(
        health["config"]["domainCredentials"], 0,
        "no sentinel counts as a domain: {health}"
    );
}
