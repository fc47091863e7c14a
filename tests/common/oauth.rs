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

/// The authorization server's side of `nexus login`: what its authorize step issued (a
/// code bound to the PKCE challenge and state the URL carried), checked when the code
/// comes back to the token endpoint. Codes are single-use, as on the real server.
#[derive(Clone, Default)]
pub struct IssuedCode {
    inner: Arc<std::sync::Mutex<Option<Issued>>>,
}

#[derive(Clone)]
struct Issued {
    code: String,
    challenge: String,
    state: String,
    redirect_uri: String,
    used: bool,
}

impl IssuedCode {
    /// Plays the browser step for `authorize_url`: issues `code` for its challenge and
    /// state. Returns the state (the callback page shows `code#state`).
    pub fn authorize(&self, authorize_url: &str, code: &str) -> String {
        let param = |name: &str| {
            query_param(authorize_url, name)
                .unwrap_or_else(|| panic!("no {name} in {authorize_url}"))
        };
        assert_eq!(param("client_id"), CLIENT_ID);
        assert_eq!(param("response_type"), "code");
        assert_eq!(param("code_challenge_method"), "S256");
        assert_eq!(param("code"), "true");
        let state = param("state");
        *self.inner.lock().unwrap() = Some(Issued {
            code: code.to_string(),
            challenge: param("code_challenge"),
            state: state.clone(),
            redirect_uri: param("redirect_uri"),
            used: false,
        });
        state
    }

    /// The token endpoint's answer to an authorization-code request: the tokens when
    /// code, verifier (SHA-256 of it = the challenge), state, client id and redirect URI
    /// all match; `invalid_grant` otherwise.
    pub fn exchange(&self, request: &Recorded, tokens: MockReply) -> MockReply {
        let body = request.json();
        let mut issued = self.inner.lock().unwrap();
        let refuse = |why: &str| {
            MockReply::json(
                400,
                json!({"error": "invalid_grant", "error_description": why}).to_string(),
            )
        };
        let Some(issued) = issued.as_mut() else {
            return refuse("no code issued");
        };
        let verifier = body["code_verifier"].as_str().unwrap_or("");
        let checks = [
            (body["grant_type"] == "authorization_code", "grant_type"),
            (body["client_id"] == CLIENT_ID, "client_id"),
            (body["code"] == issued.code.as_str(), "code"),
            (body["state"] == issued.state.as_str(), "state"),
            (
                body["redirect_uri"] == issued.redirect_uri.as_str(),
                "redirect_uri",
            ),
            (s256(verifier) == issued.challenge, "code_verifier"),
            (!issued.used, "used"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return refuse(what);
        }
        issued.used = true;
        tokens
    }
}

/// A query parameter of `url`, percent-decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// RFC 7636's S256: base64url (no padding) of the verifier's SHA-256.
pub fn s256(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    let mut bits = String::new();
    for byte in digest.as_ref() {
        bits.push_str(&format!("{byte:08b}"));
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    bits.as_bytes()
        .chunks(6)
        .map(|six| {
            let mut padded = String::from_utf8(six.to_vec()).unwrap();
            while padded.len() < 6 {
                padded.push('0');
            }
            ALPHABET[usize::from_str_radix(&padded, 2).unwrap()] as char
        })
        .collect()
}
