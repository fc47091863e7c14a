//! `nexus login --import FILE`: the OAuth credential from Claude Code's own credentials
//! file (`~/.claude/.credentials.json`), whose `claudeAiOauth` object holds `accessToken`,
//! `refreshToken`, `expiresAt` (ms), `scopes` and `subscriptionType`.

use serde_json::Value;

use super::save::LoggedIn;
use crate::credentials::header_token;

/// Reads the credential out of a Claude Code credentials file's text. Errors name the
/// field, never a value.
pub fn from_claude_code(text: &[u8]) -> Result<LoggedIn, String> {
    let json: Value = serde_json::from_slice(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let oauth = json.get("claudeAiOauth").and_then(Value::as_object).ok_or(
        "missing object field \"claudeAiOauth\" (is this Claude Code's .credentials.json?)",
    )?;
    let string = |name: &str| -> Result<Option<String>, String> {
        match oauth.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Some(_) => Err(format!("field \"claudeAiOauth.{name}\" is not a string")),
        }
    };
    let access_token =
        string("accessToken")?.ok_or("missing string field \"claudeAiOauth.accessToken\"")?;
    let refresh_token = string("refreshToken")?;
    for (value, field) in [
        (Some(&access_token), "accessToken"),
        (refresh_token.as_ref(), "refreshToken"),
    ] {
        if let Some(problem) = value.and_then(|v| header_token::check(v).err()) {
            return Err(format!(
                "field \"claudeAiOauth.{field}\" {problem}: a token must be visible ASCII only"
            ));
        }
    }
    let expires_at = match oauth.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("field \"claudeAiOauth.expiresAt\" is not a number of milliseconds")?,
        ),
    };
    let scopes = match oauth.get("scopes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("field \"claudeAiOauth.scopes\" is not a list of strings")?,
        Some(_) => return Err("field \"claudeAiOauth.scopes\" is not a list of strings".into()),
    };
    Ok(LoggedIn {
        access_token,
        refresh_token,
        expires_at,
        scopes,
        subscription_type: string("subscriptionType")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claude_codes_file() {
        let text = br#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-a","refreshToken":"sk-ant-ort01-r","expiresAt":1760000000000,"scopes":["user:inference","user:profile"],"subscriptionType":"max"},"mcpOAuth":{}}"#;
        let got = from_claude_code(text).unwrap();
        assert_eq!(got.access_token, "sk-ant-oat01-a");
        assert_eq!(got.refresh_token.as_deref(), Some("sk-ant-ort01-r"));
        assert_eq!(got.expires_at, Some(1_760_000_000_000));
        assert_eq!(got.scopes, ["user:inference", "user:profile"]);
        assert_eq!(got.subscription_type.as_deref(), Some("max"));
    }

    #[test]
    fn errors_name_the_field_never_the_token() {
        let cases: [(&[u8], &str); 6] = [
            (b"{", "JSON"),
            (br#"{"oauth":{"accessToken":"sk-secret"}}"#, "claudeAiOauth"),
            (
                br#"{"claudeAiOauth":{"refreshToken":"sk-secret"}}"#,
                "claudeAiOauth.accessToken",
            ),
            (
                br#"{"claudeAiOauth":{"accessToken":"sk-secret","expiresAt":"soon"}}"#,
                "claudeAiOauth.expiresAt",
            ),
            (
                br#"{"claudeAiOauth":{"accessToken":"sk-secret x"}}"#,
                "claudeAiOauth.accessToken\" contains a space",
            ),
            (
                br#"{"claudeAiOauth":{"accessToken":"a","scopes":"sk-secret"}}"#,
                "claudeAiOauth.scopes",
            ),
        ];
        for (text, field) in cases {
            let err = from_claude_code(text).unwrap_err();
            assert!(err.contains(field), "{err}");
            assert!(!err.contains("sk-secret"), "{err}");
        }
    }
}
