//! `<domain>.credentials.json`: what it may hold (one credential, or a pool of them), a
//! parser whose errors name the field (never a value), and the edit a token refresh makes
//! to it.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::header_token;
use super::mask::mask;

/// A domain's credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `{"type":"api_key","api_key":…}` — sent upstream as `x-api-key`.
    ApiKey { api_key: String },
    /// `{"type":"oauth","oauth":{…}}` — sent as a bearer token with the OAuth beta flag.
    OAuth(OAuthTokens),
}

/// The `oauth` block of a credential file.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: Option<u64>,
}

/// A per-domain Slack override (the `slack` block); unset fields fall back to `SLACK_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackOverride {
    pub webhook_url: Option<String>,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub enabled: Option<bool>,
}

/// The member id of a single-credential file: a pool of one.
pub const DEFAULT_MEMBER: &str = "default";
/// Most members a pool may have: a request's tried members fit in one `u64`.
pub const MAX_MEMBERS: usize = 64;

/// One credential of a domain's pool, named by its id (never a secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Member {
    /// Shared, so a request can name its member in every record without a copy.
    pub id: Arc<str>,
    pub credential: Credential,
}

/// Everything nexus uses from one credential file. Other fields stay in the file untouched.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialFile {
    /// At least one; a single-credential file is one member named [`DEFAULT_MEMBER`].
    pub members: Vec<Member>,
    /// Written as `{"type":"pool","credentials":[…]}`: a refresh edits the member's entry.
    pub pool: bool,
    /// `client_api_keys`: a client must present one of these to use this file. `None`
    /// (absent or empty) means `CLIENT_API_KEYS` applies instead.
    pub client_keys: Option<Vec<String>>,
    pub slack: Option<SlackOverride>,
}

// Secrets never reach a log through `{:?}`: Debug shows masked values only.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey { api_key } => write!(f, "ApiKey({})", mask(api_key)),
            Credential::OAuth(tokens) => write!(f, "OAuth({tokens:?})"),
        }
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.id, self.credential)
    }
}

impl CredentialFile {
    /// Where the member named `id` is, if there is one.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| &*m.id == id)
    }
}

impl fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("access_token", &mask(&self.access_token))
            .field("refresh_token", &self.refresh_token.as_deref().map(mask))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for CredentialFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialFile")
            .field("members", &self.members)
            .field(
                "client_keys",
                &self.client_keys.as_ref().map(|keys| keys.len()),
            )
            .field("slack", &self.slack.is_some())
            .finish()
    }
}

/// Parses a credential file's text. The error names the field at fault, never a value.
pub fn parse_credential(text: &str) -> Result<CredentialFile, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    parse_value(&json)
}

/// [`parse_credential`] for an already parsed document.
pub fn parse_value(json: &Value) -> Result<CredentialFile, String> {
    let obj = json.as_object().ok_or("not a JSON object")?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("missing string field \"type\"")?;
    let (members, pool) = match kind {
        "pool" => (parse_members(obj)?, true),
        "api_key" | "oauth" => {
            let credential = parse_one(obj, kind, "")?;
            let id = Arc::from(DEFAULT_MEMBER);
            (vec![Member { id, credential }], false)
        }
        _ => return Err("field \"type\" must be \"api_key\", \"oauth\" or \"pool\"".into()),
    };
    Ok(CredentialFile {
        members,
        pool,
        client_keys: parse_client_keys(obj.get("client_api_keys"))?,
        slack: parse_slack(obj.get("slack"))?,
    })
}

/// One credential: the fields of `obj` (the file, or a pool member at `at`, e.g.
/// `credentials[1].`) for `kind`.
fn parse_one(obj: &Map<String, Value>, kind: &str, at: &str) -> Result<Credential, String> {
    Ok(match kind {
        "api_key" => {
            let key = non_empty_str(obj.get("api_key"))
                .ok_or_else(|| format!("missing string field \"{at}api_key\""))?;
            header_safe(&key, &format!("{at}api_key"))?;
            Credential::ApiKey { api_key: key }
        }
        "oauth" => Credential::OAuth(parse_oauth(obj, at)?),
        _ => {
            return Err(format!(
                "field \"{at}type\" must be \"api_key\" or \"oauth\""
            ))
        }
    })
}

/// The `credentials` list of a pool file: each member with a unique, valid id.
fn parse_members(obj: &Map<String, Value>) -> Result<Vec<Member>, String> {
    let list = obj
        .get("credentials")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or("a pool needs a non-empty array field \"credentials\"")?;
    if list.len() > MAX_MEMBERS {
        return Err(format!(
            "field \"credentials\" has {} members; a pool holds at most {MAX_MEMBERS}",
            list.len()
        ));
    }
    let mut members: Vec<Member> = Vec::with_capacity(list.len());
    for (i, member) in list.iter().enumerate() {
        let at = format!("credentials[{i}].");
        let member = member
            .as_object()
            .ok_or_else(|| format!("field \"credentials[{i}]\" is not an object"))?;
        let id = member
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing string field \"{at}id\""))?;
        if !valid_id(id) {
            return Err(format!(
                "field \"{at}id\" must be 1 to 64 of A-Z a-z 0-9 . _ -"
            ));
        }
        if members.iter().any(|m| &*m.id == id) {
            return Err(format!("field \"{at}id\" repeats the id {id:?}"));
        }
        let kind = member
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing string field \"{at}type\""))?;
        let credential = parse_one(member, kind, &at)?;
        members.push(Member {
            id: Arc::from(id),
            credential,
        });
    }
    Ok(members)
}

/// A member id: `[A-Za-z0-9._-]{1,64}`. It names the member in logs, metrics and label
/// values, so nothing that needs escaping gets in.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_oauth(obj: &Map<String, Value>, at: &str) -> Result<OAuthTokens, String> {
    let oauth = obj
        .get("oauth")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("missing object field \"{at}oauth\""))?;
    let access_token = non_empty_str(oauth.get("accessToken"))
        .ok_or_else(|| format!("missing string field \"{at}oauth.accessToken\""))?;
    header_safe(&access_token, &format!("{at}oauth.accessToken"))?;
    let expires_at = match oauth.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            format!("field \"{at}oauth.expiresAt\" is not a number of milliseconds")
        })?),
    };
    let refresh_token = match oauth.get("refreshToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => non_empty_str(oauth.get("refreshToken")),
        Some(_) => return Err(format!("field \"{at}oauth.refreshToken\" is not a string")),
    };
    Ok(OAuthTokens {
        access_token,
        refresh_token,
        expires_at,
    })
}

fn parse_client_keys(value: Option<&Value>) -> Result<Option<Vec<String>>, String> {
    const WHAT: &str = "field \"client_api_keys\" must be an array of non-empty strings";
    let list = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(WHAT.into()),
    };
    let keys = list
        .iter()
        .map(|v| non_empty_str(Some(v)).ok_or(WHAT))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!keys.is_empty()).then_some(keys))
}

fn parse_slack(value: Option<&Value>) -> Result<Option<SlackOverride>, String> {
    let slack = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(slack)) => slack,
        Some(_) => return Err("field \"slack\" is not an object".into()),
    };
    let text = |name: &str| -> Result<Option<String>, String> {
        match slack.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Some(_) => Err(format!("field \"slack.{name}\" is not a string")),
        }
    };
    let enabled = match slack.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("field \"slack.enabled\" is not true or false".into()),
    };
    Ok(Some(SlackOverride {
        webhook_url: text("webhook_url")?,
        channel: text("channel")?,
        username: text("username")?,
        icon_emoji: text("icon_emoji")?,
        enabled,
    }))
}

/// A value nexus will write into the upstream head must pass [`header_token::check`]; the
/// error names the field and the problem, never the value.
fn header_safe(value: &str, field: &str) -> Result<(), String> {
    header_token::check(value).map_err(|problem| {
        format!("field \"{field}\" {problem}: a key or token must be visible ASCII only")
    })
}

fn non_empty_str(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// What a token endpoint handed back.
#[derive(Clone, PartialEq, Eq)]
pub struct NewTokens {
    pub access_token: String,
    /// Absent when the endpoint does not rotate refresh tokens: the old one stays.
    pub refresh_token: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// Space-separated scopes, when the endpoint says.
    pub scope: Option<String>,
}

impl fmt::Debug for NewTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewTokens")
            .field("access_token", &mask(&self.access_token))
            .field("refresh_token", &self.refresh_token.as_deref().map(mask))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Writes refreshed tokens for member `id` into a credential document (the file's own
/// `oauth` block, or that member's in a pool), leaving every other field as it was.
pub fn apply_tokens(doc: &mut Value, id: &str, tokens: &NewTokens) -> Result<(), String> {
    let obj = doc.as_object_mut().ok_or("not a JSON object")?;
    let holder = if obj.get("type").and_then(Value::as_str) == Some("pool") {
        obj.get_mut("credentials")
            .and_then(Value::as_array_mut)
            .and_then(|list| {
                list.iter_mut()
                    .find(|m| m.get("id").and_then(Value::as_str) == Some(id))
            })
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("no member {id:?} in field \"credentials\""))?
    } else {
        obj
    };
    let oauth = holder
        .get_mut("oauth")
        .and_then(Value::as_object_mut)
        .ok_or("missing object field \"oauth\"")?;
    oauth.insert(
        "accessToken".into(),
        Value::String(tokens.access_token.clone()),
    );
    if let Some(refresh) = &tokens.refresh_token {
        oauth.insert("refreshToken".into(), Value::String(refresh.clone()));
    }
    oauth.insert("expiresAt".into(), Value::from(tokens.expires_at));
    if let Some(scope) = &tokens.scope {
        let scopes: Vec<Value> = scope
            .split_whitespace()
            .map(|s| Value::String(s.to_string()))
            .collect();
        oauth.insert("scopes".into(), Value::Array(scopes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let c = parse_credential(
            r#"{"type":"api_key","api_key":"sk-ant-api03-x","slack":{"enabled":true}}"#,
        )
        .unwrap();
        assert_eq!(
            c.members[0].credential,
            Credential::ApiKey {
                api_key: "sk-ant-api03-x".into()
            }
        );
        assert_eq!(c.slack.unwrap().enabled, Some(true));
        assert_eq!(c.client_keys, None);
        let c = parse_credential(
            r#"{"type":"oauth","oauth":{"accessToken":"at","refreshToken":"rt","expiresAt":1705123456789,"scopes":[],"isMax":false}}"#,
        )
        .unwrap();
        assert_eq!(
            c.members[0].credential,
            Credential::OAuth(OAuthTokens {
                access_token: "at".into(),
                refresh_token: Some("rt".into()),
                expires_at: Some(1705123456789)
            })
        );
    }

    #[test]
    fn client_keys_are_a_list_of_strings() {
        let c = parse_credential(
            r#"{"type":"api_key","api_key":"k","client_api_keys":["one"," two ",""]}"#,
        );
        assert!(c.unwrap_err().contains("client_api_keys"));
        let c =
            parse_credential(r#"{"type":"api_key","api_key":"k","client_api_keys":["one","two"]}"#)
                .unwrap();
        assert_eq!(c.client_keys, Some(vec!["one".into(), "two".into()]));
        let c =
            parse_credential(r#"{"type":"api_key","api_key":"k","client_api_keys":[]}"#).unwrap();
        assert_eq!(
            c.client_keys, None,
            "an empty list means: use CLIENT_API_KEYS"
        );
    }

    #[test]
    fn errors_name_the_field_not_the_secret() {
        let cases = [
            ("{", "JSON"),
            ("[]", "object"),
            (r#"{"api_key":"sk-secret"}"#, "\"type\""),
            (r#"{"type":"api_key","apikey":"sk-secret"}"#, "\"api_key\""),
            (
                r#"{"type":"oauth","oauth":{"refreshToken":"sk-secret"}}"#,
                "oauth.accessToken",
            ),
            (
                r#"{"type":"oauth","oauth":{"accessToken":"sk-secret","expiresAt":"soon"}}"#,
                "oauth.expiresAt",
            ),
            (
                r#"{"type":"oauth","oauth":{"accessToken":"a","refreshToken":["sk-secret"]}}"#,
                "oauth.refreshToken",
            ),
            (
                r#"{"type":"api_key","api_key":"k","client_api_keys":"sk-secret"}"#,
                "client_api_keys",
            ),
            (
                r#"{"type":"api_key","api_key":"k","slack":{"webhook_url":["sk-secret"]}}"#,
                "slack.webhook_url",
            ),
            (r#"{"type":"password"}"#, "\"type\""),
            (
                r#"{"type":"oauth","oauth":{"accessToken":"sk-secret\r\nx-injected: 1"}}"#,
                "\"oauth.accessToken\" contains a line break",
            ),
            (
                r#"{"type":"api_key","api_key":"sk-secret\u0000"}"#,
                "\"api_key\" contains a NUL byte",
            ),
            (
                r#"{"type":"api_key","api_key":"sk-secret key"}"#,
                "\"api_key\" contains a space",
            ),
        ];
        for (text, field) in cases {
            let err = parse_credential(text).unwrap_err();
            assert!(err.contains(field), "{text}: {err}");
            assert!(!err.contains("sk-secret"), "{err}");
            assert!(!err.contains("injected"), "{err}");
        }
    }

    #[test]
    fn applying_tokens_keeps_every_other_field() {
        let mut doc: Value = serde_json::from_str(
            r#"{"type":"oauth","team":{"name":"x"},"oauth":{"accessToken":"old","refreshToken":"r-old","expiresAt":1,"scopes":["a"],"isMax":true},"slack":{"enabled":false}}"#,
        )
        .unwrap();
        let before = doc.clone();
        apply_tokens(
            &mut doc,
            DEFAULT_MEMBER,
            &NewTokens {
                access_token: "new".into(),
                refresh_token: None,
                expires_at: 99,
                scope: Some("user:inference user:profile".into()),
            },
        )
        .unwrap();
        assert_eq!(doc["oauth"]["accessToken"], "new");
        assert_eq!(
            doc["oauth"]["refreshToken"], "r-old",
            "kept when not rotated"
        );
        assert_eq!(doc["oauth"]["expiresAt"], 99);
        assert_eq!(
            doc["oauth"]["scopes"],
            serde_json::json!(["user:inference", "user:profile"])
        );
        assert_eq!(doc["oauth"]["isMax"], true);
        assert_eq!(doc["team"], before["team"]);
        assert_eq!(doc["slack"], before["slack"]);
        assert_eq!(doc["type"], "oauth");
    }

    #[test]
    fn the_example_files_parse() {
        let examples = [
            include_str!("../../credentials/api-key.credentials.json.example"),
            include_str!("../../credentials/api-key-with-slack.credentials.json.example"),
            include_str!("../../credentials/api-key-with-client-keys.credentials.json.example"),
            include_str!("../../credentials/oauth.credentials.json.example"),
            include_str!("../../credentials/oauth-with-slack.credentials.json.example"),
            include_str!("../../credentials/pool.credentials.json.example"),
        ];
        for text in examples {
            parse_credential(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
    }

    #[test]
    fn a_single_credential_is_a_pool_of_one_named_default() {
        let c = parse_credential(r#"{"type":"api_key","api_key":"k"}"#).unwrap();
        assert!(!c.pool);
        assert_eq!(c.members.len(), 1);
        assert_eq!(&*c.members[0].id, DEFAULT_MEMBER);
    }

    #[test]
    fn parses_a_pool() {
        let c = parse_credential(
            r#"{"type":"pool","credentials":[
                {"id":"max-1","type":"oauth","oauth":{"accessToken":"at","expiresAt":5}},
                {"id":"key_2.b","type":"api_key","api_key":"sk-ant-api03-x"}],
              "client_api_keys":["ck"],"slack":{"enabled":false}}"#,
        )
        .unwrap();
        assert!(c.pool);
        let ids: Vec<_> = c.members.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["max-1", "key_2.b"]);
        assert_eq!(c.position("key_2.b"), Some(1));
        assert_eq!(
            c.members[1].credential,
            Credential::ApiKey {
                api_key: "sk-ant-api03-x".into()
            }
        );
        assert_eq!(c.client_keys, Some(vec!["ck".into()]));
        assert!(c.slack.is_some());
    }

    #[test]
    fn pool_errors_name_the_member_field() {
        let key = |id: &str| format!(r#"{{"id":"{id}","type":"api_key","api_key":"sk-secret"}}"#);
        let pool = |members: &[String]| {
            format!(r#"{{"type":"pool","credentials":[{}]}}"#, members.join(","))
        };
        let too_many: Vec<String> = (0..=MAX_MEMBERS).map(|i| key(&format!("k{i}"))).collect();
        let cases = [
            (r#"{"type":"pool"}"#.to_string(), "\"credentials\""),
            (
                r#"{"type":"pool","credentials":[]}"#.to_string(),
                "\"credentials\"",
            ),
            (pool(&["1".into()]), "credentials[0]"),
            (
                pool(&[r#"{"type":"api_key","api_key":"sk-secret"}"#.into()]),
                "credentials[0].id",
            ),
            (pool(&[key("a"), key("a")]), "credentials[1].id"),
            (pool(&[key("")]), "credentials[0].id"),
            (pool(&[key("a b")]), "credentials[0].id"),
            (pool(&[key("a/b")]), "credentials[0].id"),
            (pool(&[key(&"x".repeat(65))]), "credentials[0].id"),
            (
                pool(&[key("a"), r#"{"id":"b","type":"api_key"}"#.into()]),
                "credentials[1].api_key",
            ),
            (
                pool(&[r#"{"id":"b","type":"pool"}"#.into()]),
                "credentials[0].type",
            ),
            (
                pool(&[
                    r#"{"id":"b","type":"oauth","oauth":{"accessToken":"sk-secret\r\nx: 1"}}"#
                        .into(),
                ]),
                "credentials[0].oauth.accessToken",
            ),
            (pool(&too_many), "at most 64"),
        ];
        for (text, field) in cases {
            let err = parse_credential(&text).unwrap_err();
            assert!(err.contains(field), "{text}: {err}");
            assert!(!err.contains("sk-secret"), "{err}");
        }
        assert!(valid_id(&"x".repeat(64)));
    }

    #[test]
    fn applying_tokens_to_a_pool_member_keeps_every_other_member_and_field() {
        let mut doc: Value = serde_json::from_str(
            r#"{"type":"pool","note":1,"credentials":[
                {"id":"a","type":"oauth","oauth":{"accessToken":"a-old","refreshToken":"ra","expiresAt":1},"x":true},
                {"id":"b","type":"oauth","oauth":{"accessToken":"b-old","refreshToken":"rb","expiresAt":1}},
                {"id":"c","type":"api_key","api_key":"k"}]}"#,
        )
        .unwrap();
        let before = doc.clone();
        let new = NewTokens {
            access_token: "b-new".into(),
            refresh_token: Some("rb2".into()),
            expires_at: 9,
            scope: None,
        };
        apply_tokens(&mut doc, "b", &new).unwrap();
        assert_eq!(doc["credentials"][1]["oauth"]["accessToken"], "b-new");
        assert_eq!(doc["credentials"][1]["oauth"]["refreshToken"], "rb2");
        assert_eq!(doc["credentials"][1]["oauth"]["expiresAt"], 9);
        assert_eq!(doc["credentials"][0], before["credentials"][0]);
        assert_eq!(doc["credentials"][2], before["credentials"][2]);
        assert_eq!(doc["note"], 1);
        assert!(apply_tokens(&mut doc, "zz", &new)
            .unwrap_err()
            .contains("zz"));
    }

    #[test]
    fn debug_output_is_masked() {
        let c = parse_credential(
            r#"{"type":"oauth","oauth":{"accessToken":"sk-ant-oat01-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","refreshToken":"sk-ant-ort01-BBBBBBBBBBBBBBBBBBBBBBBBBBBBB"}}"#,
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-ant-oat01-AAAA"), "{shown}");
        assert!(!shown.contains("sk-ant-ort01-BBBB"), "{shown}");
    }
}
