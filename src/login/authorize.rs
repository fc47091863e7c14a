//! The authorize URL `nexus login` prints: where the user's browser logs in and consents.

use super::pkce::Pkce;
use crate::credentials::token_client::CLIENT_ID;

/// The settings the URL is built from (`OAUTH_AUTHORIZE_URL`, `OAUTH_REDIRECT_URI`,
/// `OAUTH_SCOPES`).
pub struct AuthorizeTarget<'a> {
    pub authorize_url: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a str,
}

/// The full URL: client id, redirect URI, scopes, S256 challenge and state. `code=true`
/// asks the callback page to show the code (as `code#state`) for pasting, rather than
/// hand it to a local listener.
pub fn authorize_url(target: &AuthorizeTarget<'_>, pkce: &Pkce) -> String {
    let params = [
        ("code", "true"),
        ("client_id", CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", target.redirect_uri),
        ("scope", target.scopes),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
        ("state", &pkce.state),
    ];
    let mut url = target.authorize_url.to_string();
    let mut separator = if url.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        url.push(separator);
        url.push_str(name);
        url.push('=');
        url.push_str(&percent_encode(value));
        separator = '&';
    }
    url
}

/// Everything but RFC 3986's unreserved characters percent-encoded (a space as `%20`).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_every_parameter_encoded() {
        let pkce = Pkce {
            verifier: "v".into(),
            challenge: "E9Mel-cM_x".into(),
            state: "st-ate_1".into(),
        };
        let target = AuthorizeTarget {
            authorize_url: "https://claude.ai/oauth/authorize",
            redirect_uri: "https://platform.claude.com/oauth/code/callback",
            scopes: "org:create_api_key user:profile user:inference",
        };
        assert_eq!(
            authorize_url(&target, &pkce),
            "https://claude.ai/oauth/authorize?code=true\
             &client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e&response_type=code\
             &redirect_uri=https%3A%2F%2Fplatform.claude.com%2Foauth%2Fcode%2Fcallback\
             &scope=org%3Acreate_api_key%20user%3Aprofile%20user%3Ainference\
             &code_challenge=E9Mel-cM_x&code_challenge_method=S256&state=st-ate_1"
        );
        assert!(!authorize_url(&target, &pkce).contains("v&"), "no verifier");
        let target = AuthorizeTarget {
            authorize_url: "http://127.0.0.1:9/authorize?tenant=x",
            ..target
        };
        assert!(authorize_url(&target, &pkce)
            .starts_with("http://127.0.0.1:9/authorize?tenant=x&code=true&"));
    }
}
