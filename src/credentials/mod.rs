//! Which credential a request goes upstream with, and how it is written.
//!
//! Priority (as in the seed): the domain's credential file → the request's own
//! `x-api-key`, else its `Authorization` → `CLAUDE_API_KEY`. Exactly one credential
//! header reaches the upstream. A domain's file holds a pool of one or more members; which
//! member a request gets is `pool`'s choice, and what a response says about it `verdict`'s. A credential nexus hands out (a domain file, or
//! `CLAUDE_API_KEY`) may be guarded by client keys (`client_api_keys` in the file,
//! `CLIENT_API_KEYS`); a client key is checked and dropped, never forwarded.

pub mod affinity;
pub mod client_keys;
pub mod counters;
pub mod domain;
pub mod file;
pub mod header_token;
pub mod headroom;
pub mod mask;
pub mod member_state;
pub mod oauth;
pub mod persist;
pub mod pool;
pub mod refresh_board;
pub mod refresh_errors;
pub mod store;
pub mod token_client;
pub mod verdict;
pub mod wait;

use std::fmt;
use std::sync::Arc;

pub use domain::domain_from_host;
pub use file::{Credential, CredentialFile, Member};
pub use mask::mask;
pub use oauth::OAuthRefresher;
pub use store::{CredentialStore, DomainEntry, Entry, LocalView, PoolFigures, RefreshState};
pub use wait::{ready_member, refresh_refused};

use crate::config::Config;

/// The beta flag the API requires alongside an OAuth access token.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// A credential as it goes upstream.
#[derive(Clone, PartialEq, Eq)]
pub enum UpstreamAuth<'a> {
    /// `x-api-key: <key>`.
    ApiKey(&'a str),
    /// `Authorization: Bearer <token>` plus the OAuth beta flag.
    OAuthBearer(&'a str),
    /// The client's own `Authorization` value, passed on as it is.
    ClientAuthorization(&'a str),
}

/// Masked: safe in any log line.
impl fmt::Display for UpstreamAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAuth::ApiKey(key) => write!(f, "x-api-key {}", mask(key)),
            UpstreamAuth::OAuthBearer(token) => write!(f, "OAuth bearer {}", mask(token)),
            UpstreamAuth::ClientAuthorization(value) => {
                write!(f, "client authorization {}", mask(value))
            }
        }
    }
}

impl fmt::Debug for UpstreamAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The credential headers a client sent: all of its request that credentials look at.
///
/// The caller fills it from whatever parsed the request, so this module never depends on
/// how requests are parsed. Absent and empty headers are both `None` or `Some("")`; the
/// rules below treat them alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCredentials<'a> {
    /// The `x-api-key` header.
    pub x_api_key: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
}

/// Why an OAuth credential must be renewed by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renew {
    /// The token endpoint answered `invalid_grant`.
    InvalidGrant,
    /// The file has no refresh token.
    NoRefreshToken,
}

/// Why no credential could be chosen. Messages name domains and fields, never secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// Nothing configured and nothing sent.
    Missing,
    /// The domain's file exists but is unusable (the message names the field).
    InvalidFile(String),
    /// The credential is guarded and the request did not present a valid client key.
    ClientKey { presented: bool },
    /// The domain's OAuth token has expired and cannot be refreshed (401).
    Renew(String, Renew),
    /// The domain's OAuth token has expired and the refresh failed for now (503).
    RefreshFailed(String),
}

impl CredentialError {
    /// The HTTP status nexus answers with.
    pub fn status(&self) -> u16 {
        match self {
            CredentialError::Missing
            | CredentialError::ClientKey { .. }
            | CredentialError::Renew(..) => 401,
            CredentialError::InvalidFile(_) => 500,
            CredentialError::RefreshFailed(_) => 503,
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::Missing => f.write_str("no API credential"),
            // Short on purpose: the file and field were logged once when it was loaded; the
            // client's error body (ProxyError::reply) carries the full reason.
            CredentialError::InvalidFile(_) => {
                f.write_str("the domain's credential file is unusable (reported when loaded)")
            }
            CredentialError::ClientKey { presented: false } => f.write_str(
                "this proxy requires a client key: send it as x-api-key or Authorization: Bearer",
            ),
            CredentialError::ClientKey { presented: true } => {
                f.write_str("the client key presented is not valid for this proxy")
            }
            CredentialError::Renew(domain, Renew::InvalidGrant) => write!(
                f,
                "the OAuth credential for {domain} has expired and its refresh token was \
                 refused (invalid_grant); the domain's credential must be renewed"
            ),
            CredentialError::Renew(domain, Renew::NoRefreshToken) => write!(
                f,
                "the OAuth credential for {domain} has expired and has no refresh token; \
                 the domain's credential must be renewed"
            ),
            CredentialError::RefreshFailed(domain) => write!(
                f,
                "the OAuth token for {domain} has expired and refreshing it failed; \
                 nexus retries the refresh in the background, try again shortly"
            ),
        }
    }
}

/// The keys that open nexus's own credentials where a file has no list of its own:
/// `CLIENT_API_KEYS`, and the named clients' keys (`CLIENTS_FILE`), which work as
/// `CLIENT_API_KEYS` keys that have a name.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalKeys<'a> {
    pub keys: &'a [String],
    /// Named clients exist: the guard is on even without `CLIENT_API_KEYS`.
    pub named_clients: bool,
    /// The request presented a named client's key.
    pub named_key: bool,
}

impl GlobalKeys<'_> {
    fn guarded(&self) -> bool {
        !self.keys.is_empty() || self.named_clients
    }

    fn accepted(&self, client: ClientCredentials<'_>) -> bool {
        self.named_key || client_keys::accepted(self.keys, client)
    }
}

/// Checks the client key a guarded credential needs: the file's own keys if it has any,
/// else the global ones; no keys at all means unguarded.
pub fn check_guard(
    file_keys: Option<&[String]>,
    global: GlobalKeys<'_>,
    client: ClientCredentials<'_>,
) -> Result<(), CredentialError> {
    let open = match file_keys {
        Some(keys) => client_keys::accepted(keys, client),
        None => !global.guarded() || global.accepted(client),
    };
    match open {
        true => Ok(()),
        false => Err(CredentialError::ClientKey {
            presented: client_keys::any_presented(client),
        }),
    }
}

/// Where a request's credential comes from.
#[derive(Debug, PartialEq)]
pub enum Source<'a> {
    /// The domain's file: one of its pool's members, chosen once the body is read.
    Pool(Arc<DomainEntry>),
    /// The client's own credential, or `CLAUDE_API_KEY`.
    Direct(UpstreamAuth<'a>),
}

/// How a pool member's credential goes upstream.
pub fn member_auth(member: &Member) -> UpstreamAuth<'_> {
    match &member.credential {
        Credential::ApiKey { api_key } => UpstreamAuth::ApiKey(api_key),
        Credential::OAuth(tokens) => UpstreamAuth::OAuthBearer(&tokens.access_token),
    }
}

/// Applies the priority rule and the client key guard. The domain's entry is handed on,
/// not copied: a request holds its own reference to it while its members are tried.
pub fn choose<'a>(
    domain_entry: Option<Entry>,
    client: ClientCredentials<'a>,
    default_key: Option<&'a str>,
    global_keys: GlobalKeys<'_>,
) -> Result<Source<'a>, CredentialError> {
    match domain_entry {
        Some(Ok(entry)) => {
            check_guard(entry.file.client_keys.as_deref(), global_keys, client)?;
            Ok(Source::Pool(entry))
        }
        Some(Err(why)) => Err(CredentialError::InvalidFile(why.to_string())),
        None => client_or_default(client, default_key, global_keys).map(Source::Direct),
    }
}

/// Rules 2 and 3, for a domain without a file.
fn client_or_default<'a>(
    client: ClientCredentials<'a>,
    default_key: Option<&'a str>,
    global_keys: GlobalKeys<'_>,
) -> Result<UpstreamAuth<'a>, CredentialError> {
    if global_keys.named_key {
        // A named client's key is nexus's to check, never the upstream's to see.
        return default_key
            .map(default_auth)
            .ok_or(CredentialError::Missing);
    }
    if global_keys.guarded() {
        if global_keys.accepted(client) {
            // A client key opened the door; CLAUDE_API_KEY goes in its place.
            return default_key
                .map(default_auth)
                .ok_or(CredentialError::Missing);
        }
        if default_key.is_some() {
            return Err(CredentialError::ClientKey {
                presented: client_keys::any_presented(client),
            });
        }
        // Nothing of nexus's own to hand out: the client's own key goes through, as in
        // the seed.
    }
    if let Some(key) = client.x_api_key.filter(|k| !k.is_empty()) {
        return Ok(UpstreamAuth::ApiKey(key));
    }
    if let Some(auth) = client.authorization.filter(|a| !a.is_empty()) {
        return Ok(match bearer_token(auth) {
            // An API key sent as a bearer token: the API only takes keys as x-api-key.
            Some(token) if token.starts_with("sk-ant-api") => UpstreamAuth::ApiKey(token),
            Some(token) => UpstreamAuth::OAuthBearer(token),
            None => UpstreamAuth::ClientAuthorization(auth),
        });
    }
    default_key
        .map(default_auth)
        .ok_or(CredentialError::Missing)
}

fn default_auth(key: &str) -> UpstreamAuth<'_> {
    if key.starts_with("sk-ant-oat") {
        UpstreamAuth::OAuthBearer(key)
    } else {
        UpstreamAuth::ApiKey(key)
    }
}

fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The start-up warning for a proxy that hands credentials to anyone who can reach it:
/// listening beyond loopback, with `CLAUDE_API_KEY` or a domain file and no client keys.
pub fn exposure_warning(config: &Config, store: &CredentialStore) -> Option<String> {
    if is_loopback(&config.host) {
        return None;
    }
    let guarded = !config.client_api_keys.is_empty();
    let open_default = config.claude_api_key.is_some() && !guarded;
    let open_files = store.unguarded(guarded);
    if !open_default && open_files == 0 {
        return None;
    }
    let what = match (open_default, open_files) {
        (true, 0) => "CLAUDE_API_KEY".to_string(),
        (true, n) => format!("CLAUDE_API_KEY and {n} domain credential file(s)"),
        (false, n) => format!("{n} domain credential file(s)"),
    };
    Some(format!(
        "listening on {} (not loopback) with {what} and no client keys: anyone who can reach \
         port {} can spend that credential. Set CLIENT_API_KEYS (or client_api_keys in the \
         files), or listen on 127.0.0.1",
        config.host, config.port
    ))
}

/// Whether `host` (a listen address) is loopback: nothing beyond this machine reaches it.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Appends the credential header and the (possibly merged) `anthropic-beta` header.
pub fn write_auth_headers(out: &mut Vec<u8>, auth: &UpstreamAuth<'_>, client_beta: Option<&str>) {
    let oauth = match auth {
        UpstreamAuth::ApiKey(key) => {
            push(out, "x-api-key", key);
            false
        }
        UpstreamAuth::OAuthBearer(token) => {
            // Every token nexus holds was checked when it came in (header_token); a
            // client's own bearer token came out of a parsed head. Neither can hold CR or
            // LF, but the head's framing does not rest on that alone.
            let value = [b"Bearer ".as_slice(), token.as_bytes()];
            push_parts(out, b"authorization", &value);
            true
        }
        UpstreamAuth::ClientAuthorization(value) => {
            push(out, "authorization", value);
            false
        }
    };
    let client_beta = client_beta.map(str::trim).filter(|b| !b.is_empty());
    match (client_beta, oauth) {
        (Some(beta), true) if !beta.split(',').any(|f| f.trim() == OAUTH_BETA) => {
            let value = [beta.as_bytes(), b",", OAUTH_BETA.as_bytes()];
            push_parts(out, b"anthropic-beta", &value);
        }
        (Some(beta), _) => push(out, "anthropic-beta", beta),
        (None, true) => push(out, "anthropic-beta", OAUTH_BETA),
        (None, false) => {}
    }
}

fn push(out: &mut Vec<u8>, name: &str, value: &str) {
    crate::http::headers::push_header(out, name.as_bytes(), value.as_bytes());
}

/// `name: <parts concatenated>\r\n`, with CR, LF and NUL turned into spaces.
fn push_parts(out: &mut Vec<u8>, name: &[u8], parts: &[&[u8]]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for part in parts.iter() {
        if part.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            out.extend(part.iter().map(|&b| match b {
                b'\r' | b'\n' | 0 => b' ',
                b => b,
            }));
        } else {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn head<'a>(
        x_api_key: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> ClientCredentials<'a> {
        ClientCredentials {
            x_api_key,
            authorization,
        }
    }

    fn file_entry(key: &str, client_keys: Option<&[&str]>) -> Entry {
        let file = CredentialFile {
            members: vec![Member {
                id: Arc::from(file::DEFAULT_MEMBER),
                credential: Credential::ApiKey {
                    api_key: key.into(),
                },
            }],
            pool: false,
            client_keys: client_keys.map(|keys| keys.iter().map(|k| k.to_string()).collect()),
            slack: None,
        };
        Ok(Arc::new(DomainEntry::new(
            file,
            None,
            store::Replacing::Reload,
        )))
    }

    #[test]
    fn a_named_clients_key_opens_the_guard_and_is_never_forwarded() {
        let none = ClientCredentials::default();
        let named = ClientCredentials {
            x_api_key: Some("nx-alice"),
            authorization: None,
        };
        let with_named = |named_key| GlobalKeys {
            keys: &[],
            named_clients: true,
            named_key,
        };
        // Named clients guard nexus's own key like CLIENT_API_KEYS does...
        assert!(matches!(
            super::choose(None, none, Some("sk-ant-default"), with_named(false)),
            Err(CredentialError::ClientKey { presented: false })
        ));
        // ...a named key opens it, and CLAUDE_API_KEY goes in its place...
        assert_eq!(
            super::choose(None, named, Some("sk-ant-default"), with_named(true)).unwrap(),
            Source::Direct(UpstreamAuth::ApiKey("sk-ant-default"))
        );
        // ...and with nothing of nexus's own to send, the named key is not sent instead.
        assert!(matches!(
            super::choose(None, named, None, with_named(true)),
            Err(CredentialError::Missing)
        ));
    }

    /// [`choose`], with a domain file's one member as it goes upstream.
    fn choose<'a>(
        entry: Option<&'a Entry>,
        client: ClientCredentials<'a>,
        default_key: Option<&'a str>,
        global_keys: &[String],
    ) -> Result<UpstreamAuth<'a>, CredentialError> {
        let global = GlobalKeys {
            keys: global_keys,
            ..GlobalKeys::default()
        };
        let source = super::choose(entry.cloned(), client, default_key, global)?;
        Ok(match (source, entry) {
            (Source::Pool(_), Some(Ok(entry))) => member_auth(&entry.file.members[0]),
            (Source::Direct(auth), _) => auth,
            (Source::Pool(_), _) => unreachable!("a pool comes from a domain file"),
        })
    }

    #[test]
    fn priority_is_file_then_client_then_default() {
        let file = file_entry("file", None);
        let h = head(Some("client"), Some("Bearer sk-ant-api03-bearer"));
        assert_eq!(
            choose(Some(&file), h, Some("env"), &[]),
            Ok(UpstreamAuth::ApiKey("file"))
        );
        assert_eq!(
            choose(None, h, Some("env"), &[]),
            Ok(UpstreamAuth::ApiKey("client"))
        );
        let h = head(None, Some("Bearer sk-ant-api03-bearer"));
        assert_eq!(
            choose(None, h, Some("env"), &[]),
            Ok(UpstreamAuth::ApiKey("sk-ant-api03-bearer"))
        );
        let h = head(None, Some("Bearer sk-ant-oat01-token"));
        assert_eq!(
            choose(None, h, None, &[]),
            Ok(UpstreamAuth::OAuthBearer("sk-ant-oat01-token"))
        );
        let h = head(None, None);
        assert_eq!(
            choose(None, h, Some("env"), &[]),
            Ok(UpstreamAuth::ApiKey("env"))
        );
        assert_eq!(choose(None, h, None, &[]), Err(CredentialError::Missing));
        let broken: store::Entry = Err(Arc::from("bad field"));
        assert!(matches!(
            choose(Some(&broken), h, Some("env"), &[]),
            Err(CredentialError::InvalidFile(_))
        ));
    }

    #[test]
    fn client_keys_guard_files_and_the_default_key() {
        let global = vec!["global-key".to_string()];
        let own = file_entry("file", Some(&["team-key"]));
        let plain = file_entry("file", None);
        let missing = head(None, None);
        let wrong = head(Some("nope"), None);
        let team = head(Some("team-key"), None);
        let team_bearer = head(None, Some("Bearer team-key"));
        let global_key = head(Some("global-key"), None);

        // A file's own list.
        assert_eq!(
            choose(Some(&own), team, None, &global),
            Ok(UpstreamAuth::ApiKey("file"))
        );
        assert_eq!(
            choose(Some(&own), team_bearer, None, &[]),
            Ok(UpstreamAuth::ApiKey("file"))
        );
        assert_eq!(
            choose(Some(&own), global_key, None, &global),
            Err(CredentialError::ClientKey { presented: true }),
            "a file's own list replaces CLIENT_API_KEYS"
        );
        assert_eq!(
            choose(Some(&own), missing, None, &[]),
            Err(CredentialError::ClientKey { presented: false })
        );
        // CLIENT_API_KEYS for a file without a list, and for CLAUDE_API_KEY.
        assert_eq!(
            choose(Some(&plain), global_key, None, &global),
            Ok(UpstreamAuth::ApiKey("file"))
        );
        assert!(choose(Some(&plain), wrong, None, &global).is_err());
        assert_eq!(
            choose(None, global_key, Some("env"), &global),
            Ok(UpstreamAuth::ApiKey("env"))
        );
        assert_eq!(
            choose(None, wrong, Some("env"), &global),
            Err(CredentialError::ClientKey { presented: true })
        );
        assert_eq!(
            choose(None, missing, Some("env"), &global),
            Err(CredentialError::ClientKey { presented: false })
        );
        // Nothing of nexus's own to guard: the client's own key passes, a client key never.
        assert_eq!(
            choose(None, wrong, None, &global),
            Ok(UpstreamAuth::ApiKey("nope"))
        );
        assert_eq!(
            choose(None, global_key, None, &global),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn upstream_auth_shows_only_masked_values() {
        let token = "sk-ant-oat01-abcdefghijklmnopqrstuvwxyz";
        let shown = format!(
            "{} {:?}",
            UpstreamAuth::OAuthBearer(token),
            UpstreamAuth::ApiKey(token)
        );
        assert!(!shown.contains("sk-ant-oat01-abc"), "{shown}");
        assert!(shown.contains("qrstuvwxyz"), "{shown}");
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.1", "example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn oauth_beta_is_merged_once() {
        let mut out = Vec::new();
        write_auth_headers(
            &mut out,
            &UpstreamAuth::OAuthBearer("t"),
            Some("prompt-caching-2024-07-31"),
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "authorization: Bearer t\r\nanthropic-beta: prompt-caching-2024-07-31,oauth-2025-04-20\r\n"
        );
        out.clear();
        write_auth_headers(
            &mut out,
            &UpstreamAuth::OAuthBearer("t"),
            Some("a, oauth-2025-04-20"),
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "authorization: Bearer t\r\nanthropic-beta: a, oauth-2025-04-20\r\n"
        );
        out.clear();
        write_auth_headers(&mut out, &UpstreamAuth::ApiKey("k"), None);
        assert_eq!(String::from_utf8_lossy(&out), "x-api-key: k\r\n");
    }

    #[test]
    fn no_credential_value_can_add_a_header_line() {
        for auth in [
            UpstreamAuth::OAuthBearer("t\r\nx-injected: 1\0"),
            UpstreamAuth::ApiKey("k\r\nx-injected: 1"),
            UpstreamAuth::ClientAuthorization("Basic a\nx-injected: 1"),
        ] {
            let mut out = Vec::new();
            write_auth_headers(&mut out, &auth, Some("b\r\nx-injected: 2"));
            let text = String::from_utf8_lossy(&out);
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert_eq!(lines.len(), 3, "{text:?}");
            assert!(
                lines.iter().all(|l| !l.starts_with("x-injected")),
                "{text:?}"
            );
            assert!(!text.contains('\0'), "{text:?}");
        }
    }
}
