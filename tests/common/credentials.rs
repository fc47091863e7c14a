//! Credential file contents in the format nexus reads from `CREDENTIALS_DIR`.

/// An expiry far in the future (2100-01-01), so nexus never tries a refresh.
pub const FAR_FUTURE_MS: u64 = 4_102_444_800_000;

/// `{"type":"api_key",...}`.
pub fn api_key_file(key: &str) -> String {
    serde_json::json!({ "type": "api_key", "api_key": key }).to_string()
}

/// `{"type":"oauth",...}` with a token that does not expire during the test.
pub fn oauth_file(access_token: &str, refresh_token: &str) -> String {
    serde_json::json!({
        "type": "oauth",
        "oauth": {
            "accessToken": access_token,
            "refreshToken": refresh_token,
            "expiresAt": FAR_FUTURE_MS,
            "scopes": [],
            "isMax": false
        }
    })
    .to_string()
}

/// Scans of `CREDENTIALS_DIR` finished.
pub const SCANS: &str = "nexus_credential_scans_total";
/// Passes of the OAuth refresh scheduler finished.
pub const REFRESH_CHECKS: &str = "nexus_oauth_refresh_checks_total";
/// OAuth refresh jobs started.
pub const REFRESH_ATTEMPTS: &str = "nexus_oauth_refresh_attempts_total";
/// Requests waiting for an OAuth refresh now.
pub const REFRESH_WAITING: &str = "nexus_oauth_refresh_waiting_requests";

/// The value of an unlabelled figure in nexus's `/metrics`.
pub fn metric(nexus: &super::Nexus, name: &str) -> i64 {
    let response = nexus.request(&super::Request::get("/metrics"));
    assert_eq!(response.status, 200, "/metrics: {}", response.text());
    let text = response.text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Waits until the counter `name` has grown by `runs` from now. Waiting for two more
/// scans (or scheduler passes) guarantees one whole pass started after this call: what
/// a test needs before asserting that the pass did nothing.
pub fn wait_for_runs(nexus: &super::Nexus, name: &str, runs: i64) {
    let target = metric(nexus, name) + runs;
    super::oauth::wait_for(
        std::time::Duration::from_secs(60),
        &format!("{name} to reach {target}"),
        || (metric(nexus, name) >= target).then_some(()),
    );
}
