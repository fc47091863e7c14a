//! The OAuth token endpoint client: one POST through [`crate::client`], run on the
//! refresh thread's own small runtime so no worker ever waits on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;
use serde_json::Value;

use super::file::NewTokens;
use crate::client::{Origin, Pool, RequestHead};
use crate::config::UpstreamUrl;

/// Claude's public OAuth client id (the one Claude Code uses).
pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// Token responses are small; anything larger is not one.
const MAX_RESPONSE: usize = 256 * 1024;
/// Lifetime assumed when a response carries no `expires_in`.
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// Where and how token requests go.
pub struct TokenEndpoint {
    pub url: UpstreamUrl,
    pub tls: Option<Arc<ClientConfig>>,
    /// Bound on one whole request: connect, send, response.
    pub timeout: Duration,
    origin: Arc<Origin>,
}

/// What an authorization-code exchange sends besides the client id.
pub struct CodeGrant<'a> {
    pub code: &'a str,
    pub state: &'a str,
    pub verifier: &'a str,
    pub redirect_uri: &'a str,
}

/// Why a refresh did not produce tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The endpoint said `invalid_grant`: this refresh token is dead for good.
    InvalidGrant,
    /// Anything that may go away: timeout, connection failure, 5xx, a malformed reply.
    /// The text names what happened and never contains a token.
    Transient(String),
}

impl TokenEndpoint {
    /// Checks the URL and builds TLS settings for https (`tls` is the shared client config).
    pub fn new(
        url: &str,
        tls: impl FnOnce() -> Result<Arc<ClientConfig>, String>,
        timeout: Duration,
    ) -> Result<TokenEndpoint, String> {
        let url = crate::config::parse_upstream_url(url.trim())
            .map_err(|why| format!("invalid OAUTH_TOKEN_URL {url:?}: expected {why}"))?;
        let tls = if url.tls { Some(tls()?) } else { None };
        let mut origin = Origin::new(tls.clone(), &url.host, url.port, &url.authority)?;
        origin.connect_timeout = timeout;
        Ok(TokenEndpoint {
            url,
            tls,
            timeout,
            origin: Arc::new(origin),
        })
    }

    /// Trades a refresh token for new tokens.
    pub fn refresh(&self, refresh_token: &str) -> Result<NewTokens, RefreshError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
        })
        .to_string();
        let (status, body) = self
            .post(body.as_bytes())
            .map_err(RefreshError::Transient)?;
        interpret(status, &body, now_ms())
    }

    /// Trades an authorization code (from `nexus login`'s browser step) and the PKCE
    /// verifier that goes with it for tokens. `invalid_grant` means the code expired, was
    /// used already, or does not match the verifier.
    pub fn exchange_code(&self, grant: &CodeGrant<'_>) -> Result<NewTokens, RefreshError> {
        let body = serde_json::json!({
            "grant_type": "authorization_code",
            "code": grant.code,
            "state": grant.state,
            "client_id": CLIENT_ID,
            "redirect_uri": grant.redirect_uri,
            "code_verifier": grant.verifier,
        })
        .to_string();
        let (status, body) = self
            .post(body.as_bytes())
            .map_err(RefreshError::Transient)?;
        interpret(status, &body, now_ms())
    }

    /// POSTs `body` as JSON; returns the status and the decoded response body. Runs a
    /// runtime of its own (the legacy driver: a ring per refresh is not worth it) on the
    /// calling thread, which is a refresh thread or the `nexus login` command, never a worker.
    fn post(&self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| format!("cannot start the token request's runtime: {e}"))?;
        runtime.block_on(async {
            match monoio::time::timeout(self.timeout, self.exchange(body)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no response within {}s", self.timeout.as_secs())),
            }
        })
    }

    async fn exchange(&self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        // A fresh pool holds no kept-alive connection, so the client never sends this
        // twice: a refresh token must not be spent on a request that may have arrived.
        let pool = Pool::new(Arc::clone(&self.origin));
        let path = match self.url.base_path.as_str() {
            "" => "/",
            path => path,
        };
        let head = RequestHead::post(path)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("connection", "close");
        let failed = |e| format!("token endpoint {}: {e}", self.origin.display);
        let (response, reader) = pool.send(&head, body).await.map_err(failed)?;
        let body = reader.read_to_end(MAX_RESPONSE).await.map_err(failed)?;
        Ok((response.status, body))
    }
}

/// Turns the endpoint's answer into tokens or a [`RefreshError`].
fn interpret(status: u16, body: &[u8], now_ms: u64) -> Result<NewTokens, RefreshError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let code = json.as_ref().and_then(error_code);
        if code.as_deref() == Some("invalid_grant") && (400..500).contains(&status) {
            return Err(RefreshError::InvalidGrant);
        }
        return Err(RefreshError::Transient(match code {
            Some(code) => format!("token endpoint answered {status} ({code})"),
            None => format!("token endpoint answered {status}"),
        }));
    }
    let json = json.ok_or_else(|| {
        RefreshError::Transient("token endpoint answered 200 without a JSON body".into())
    })?;
    let text = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let access_token = text("access_token").ok_or_else(|| {
        RefreshError::Transient("token endpoint answered 200 without an access_token".into())
    })?;
    // It goes into every upstream head from now on: refused here, it is never stored,
    // persisted or sent, and the current token stays in use while it is valid.
    super::header_token::check(&access_token).map_err(|problem| {
        RefreshError::Transient(format!(
            "token endpoint answered 200 with an access_token that {problem}; not used"
        ))
    })?;
    let expires_in = json
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EXPIRES_IN);
    Ok(NewTokens {
        access_token,
        refresh_token: text("refresh_token"),
        expires_at: now_ms.saturating_add(expires_in.saturating_mul(1000)),
        scope: text("scope"),
    })
}

/// The OAuth `error` code (`{"error":"invalid_grant"}` or `{"error":{"type":…}}`), only if
/// it looks like a code: an endpoint's free text is never repeated into a log.
fn error_code(json: &Value) -> Option<String> {
    let error = json.get("error")?;
    let code = error
        .as_str()
        .or_else(|| error.get("type").and_then(Value::as_str))?;
    (code.len() <= 40 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| code.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_answer_becomes_tokens() {
        let body = br#"{"token_type":"Bearer","access_token":"at-new","refresh_token":"rt-new","expires_in":28800,"scope":"user:inference user:profile"}"#;
        let tokens = interpret(200, body, 1_000).unwrap();
        assert_eq!(tokens.access_token, "at-new");
        assert_eq!(tokens.refresh_token.as_deref(), Some("rt-new"));
        assert_eq!(tokens.expires_at, 1_000 + 28_800_000);
        assert_eq!(tokens.scope.as_deref(), Some("user:inference user:profile"));
        let tokens = interpret(200, br#"{"access_token":"a","expires_in":60}"#, 0).unwrap();
        assert_eq!(tokens.refresh_token, None, "not rotated: the old one stays");
    }

    #[test]
    fn invalid_grant_is_final_and_everything_else_is_transient() {
        let dead = br#"{"error":"invalid_grant","error_description":"Invalid 'refresh_token' sk-ant-ort01-secret"}"#;
        assert_eq!(interpret(400, dead, 0), Err(RefreshError::InvalidGrant));
        assert_eq!(
            interpret(400, br#"{"error":{"type":"invalid_grant"}}"#, 0),
            Err(RefreshError::InvalidGrant)
        );
        for (status, body) in [
            (500, &b"{\"error\":\"invalid_grant\"}"[..]),
            (503, b"oops"),
            (429, b"{\"error\":\"rate_limited\"}"),
            (200, b"not json"),
            (200, b"{\"refresh_token\":\"x\"}"),
        ] {
            match interpret(status, body, 0) {
                Err(RefreshError::Transient(why)) => assert!(!why.contains("secret"), "{why}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        let injected =
            br#"{"access_token":"sk-ant-oat01-secret\r\nx-injected: 1","expires_in":60}"#;
        match interpret(200, injected, 0) {
            Err(RefreshError::Transient(why)) => {
                assert!(why.contains("line break"), "{why}");
                assert!(
                    !why.contains("secret") && !why.contains("injected"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        match interpret(400, br#"{"error":"Bad token sk-ant-ort01-secret"}"#, 0) {
            Err(RefreshError::Transient(why)) => assert!(!why.contains("secret"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
