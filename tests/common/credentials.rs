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
