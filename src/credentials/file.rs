//! `<domain>.credentials.json`: what it may hold, and a parser whose errors name the field.

use serde_json::Value;

/// A domain's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `{"type":"api_key","api_key":…}` — sent upstream as `x-api-key`.
    ApiKey { api_key: String },
    /// `{"type":"oauth","oauth":{…}}` — sent as a bearer token with the OAuth beta flag.
    OAuth(OAuthTokens),
}

/// The `oauth` block of a credential file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: Option<u64>,
}

/// Parses a credential file's text. The error names the field at fault, never a value.
pub fn parse_credential(text: &str) -> Result<Credential, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let obj = json.as_object().ok_or("not a JSON object")?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("missing string field \"type\"")?;
    match kind {
        "api_key" => {
            let key =
                non_empty_str(obj.get("api_key")).ok_or("missing string field \"api_key\"")?;
            Ok(Credential::ApiKey { api_key: key })
        }
        "oauth" => {
            let oauth = obj
                .get("oauth")
                .and_then(Value::as_object)
                .ok_or("missing object field \"oauth\"")?;
            let access_token = non_empty_str(oauth.get("accessToken"))
                .ok_or("missing string field \"oauth.accessToken\"")?;
            let expires_at = match oauth.get("expiresAt") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or("field \"oauth.expiresAt\" is not a number of milliseconds")?,
                ),
            };
            Ok(Credential::OAuth(OAuthTokens {
                access_token,
                refresh_token: non_empty_str(oauth.get("refreshToken")),
                expires_at,
            }))
        }
        _ => Err("field \"type\" must be \"api_key\" or \"oauth\"".into()),
    }
}

fn non_empty_str(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let c = parse_credential(
            r#"{"type":"api_key","api_key":"sk-ant-api03-x","slack":{"enabled":true}}"#,
        );
        assert_eq!(
            c.unwrap(),
            Credential::ApiKey {
                api_key: "sk-ant-api03-x".into()
            }
        );
        let c = parse_credential(
            r#"{"type":"oauth","oauth":{"accessToken":"at","refreshToken":"rt","expiresAt":1705123456789,"scopes":[],"isMax":false}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Credential::OAuth(OAuthTokens {
                access_token: "at".into(),
                refresh_token: Some("rt".into()),
                expires_at: Some(1705123456789)
            })
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
            (r#"{"type":"password"}"#, "\"type\""),
        ];
        for (text, field) in cases {
            let err = parse_credential(text).unwrap_err();
            assert!(err.contains(field), "{text}: {err}");
            assert!(!err.contains("sk-secret"), "{err}");
        }
    }
}
