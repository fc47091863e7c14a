//! `<domain>.credentials.json`: what it may hold, a parser whose errors name the field
//! (never a value), and the edit a token refresh makes to it.

use std::fmt;

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

/// Everything nexus uses from one credential file. Other fields stay in the file untouched.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialFile {
    pub credential: Credential,
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
            .field("credential", &self.credential)
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
    let credential = match kind {
        "api_key" => {
            let key =
                non_empty_str(obj.get("api_key")).ok_or("missing string field \"api_key\"")?;
            header_safe(&key, "api_key")?;
            Credential::ApiKey { api_key: key }
        }
        "oauth" => Credential::OAuth(parse_oauth(obj)?),
        _ => return Err("field \"type\" must be \"api_key\" or \"oauth\"".into()),
    };
    Ok(CredentialFile {
        credential,
        client_keys: parse_client_keys(obj.get("client_api_keys"))?,
        slack: parse_slack(obj.get("slack"))?,
    })
}

fn parse_oauth(obj: &Map<String, Value>) -> Result<OAuthTokens, String> {
    let oauth = obj
        .get("oauth")
        .and_then(Value::as_object)
        .ok_or("missing object field \"oauth\"")?;
    let access_token = non_empty_str(oauth.get("accessToken"))
        .ok_or("missing string field \"oauth.accessToken\"")?;
    header_safe(&access_token, "oauth.accessToken")?;
    let expires_at = match oauth.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("field \"oauth.expiresAt\" is not a number of milliseconds")?,
        ),
    };
    let refresh_token = match oauth.get("refreshToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => non_empty_str(oauth.get("refreshToken")),
        Some(_) => return Err("field \"oauth.refreshToken\" is not a string".into()),
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

/// Writes refreshed tokens into a credential document, leaving every other field as it was.
pub fn apply_tokens(doc: &mut Value, tokens: &NewTokens) -> Result<(), String> {
    let oauth = doc
        .as_object_mut()
        .and_then(|obj| obj.get_mut("oauth"))
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
            c.credential,
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
            c.credential,
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
        ];
        for text in examples {
            parse_credential(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
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
