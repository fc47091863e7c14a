//! OAuth test helpers: credential files with a chosen expiry, a mock token endpoint (the
//! scriptable mock upstream answering `POST /v1/oauth/token`), and polling with deadlines.

/// Tokens the OAuth tests start with and get from the mock token endpoint.
pub const OLD_ACCESS: &str = "sk-ant-oat01-old-access-token-0123456789abcdef";
pub const OLD_REFRESH: &str = "sk-ant-ort01-old-refresh-token-0123456789abcdef";
pub const NEW_ACCESS: &str = "sk-ant-oat01-new-access-token-fedcba9876543210";
pub const NEW_REFRESH: &str = "sk-ant-ort01-new-refresh-token-fedcba9876543210";

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::mock::{MockReply, MockUpstream, Recorded};

/// The client id nexus must send (Claude's public OAuth client).
pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// The token endpoint's path in these tests.
pub const TOKEN_PATH: &str = "/v1/oauth/token";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An OAuth credential file expiring at `expires_at` (ms), with extra top-level fields a
/// refresh must keep (`slack`, an unknown `team` block) and the usual `scopes`/`isMax`.
pub fn oauth_file_expiring(access: &str, refresh: &str, expires_at: u64) -> Value {
    json!({
        "type": "oauth",
        "oauth": {
            "accessToken": access,
            "refreshToken": refresh,
            "expiresAt": expires_at,
            "scopes": ["user:inference", "user:profile"],
            "isMax": true,
            "subscriptionType": "max"
        },
        "slack": {
            "webhook_url": "https://hooks.slack.com/services/T0/B0/XXXX",
            "channel": "#claude",
            "enabled": false
        },
        "team": {"name": "nexus-tests", "seats": 3, "tags": ["a", "b"]}
    })
}

/// A successful token endpoint answer.
pub fn token_reply(access: &str, refresh: Option<&str>, expires_in: u64) -> MockReply {
    let mut body = json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": expires_in,
        "scope": "user:inference user:profile org:create_api_key"
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    MockReply::json(200, body.to_string())
}

/// The endpoint's answer to a dead refresh token (its description repeats the token, as
/// some servers do: nexus must not).
pub fn invalid_grant_reply(refresh: &str) -> MockReply {
    MockReply::json(
        400,
        json!({
            "error": "invalid_grant",
            "error_description": format!("Invalid refresh token {refresh}")
        })
        .to_string(),
    )
}

/// A mock token endpoint: every POST answered by `reply` (given the 0-based call number).
pub struct TokenEndpoint {
    pub mock: MockUpstream,
    calls: Arc<AtomicUsize>,
}

impl TokenEndpoint {
    /// Starts a plain-HTTP token endpoint on 127.0.0.1.
    pub fn start(reply: impl Fn(usize, &Recorded) -> MockReply + Send + Sync + 'static) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let mock = MockUpstream::start(move |request| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            reply(n, request)
        });
        TokenEndpoint { mock, calls }
    }

    /// `OAUTH_TOKEN_URL` for nexus.
    pub fn url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.mock.url())
    }

    /// Token requests received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every token request, checked for the shape nexus must send; returns the refresh
    /// tokens they carried.
    pub fn refresh_tokens_sent(&self) -> Vec<String> {
        self.mock
            .requests()
            .iter()
            .map(|r| {
                assert_eq!(r.method, "POST");
                assert_eq!(r.path(), TOKEN_PATH);
                let body = r.json();
                assert_eq!(body["grant_type"], "refresh_token", "{body}");
                assert_eq!(body["client_id"], CLIENT_ID, "{body}");
                body["refresh_token"].as_str().unwrap_or("").to_string()
            })
            .collect()
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The credential file as JSON (panics if it does not parse).
pub fn read_credential(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text:?}", path.display()))
}

/// Writes `json` to `path` the way an operator should: temp file, then rename.
pub fn write_credential(path: &Path, json: &Value) {
    let temp = path.with_extension("json.writing");
    std::fs::write(&temp, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// `doc` with the oauth block's tokens and expiry replaced: what a refresh must produce.
pub fn with_tokens(doc: &Value, access: &str, refresh: &str, expires_at: &Value) -> Value {
    let mut expected = doc.clone();
    expected["oauth"]["accessToken"] = json!(access);
    expected["oauth"]["refreshToken"] = json!(refresh);
    expected["oauth"]["expiresAt"] = expires_at.clone();
    expected
}

/// The bearer token a recorded upstream request carried.
pub fn bearer_of(request: &Recorded) -> String {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

/// A one-shot gate a mock handler can block on until the test opens it (bounded wait).
#[derive(Clone, Default)]
pub struct Latch {
    state: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Latch {
    /// A closed latch.
    pub fn new() -> Latch {
        Latch::default()
    }

    /// Opens it for every waiter, now and later.
    pub fn open(&self) {
        let (lock, cond) = &*self.state;
        *lock.lock().unwrap() = true;
        cond.notify_all();
    }

    /// Blocks until opened or `limit` passed; true if opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let (lock, cond) = &*self.state;
        let guard = lock.lock().unwrap();
        let (guard, _) = cond
            .wait_timeout_while(guard, limit, |open| !*open)
            .unwrap();
        *guard
    }
}
