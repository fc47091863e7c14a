//! Which credential a request goes upstream with, and how it is written.
//!
//! Priority (as in the seed): the domain's credential file → the request's own
//! `x-api-key`, else its `Authorization` → `CLAUDE_API_KEY`. Exactly one credential
//! header reaches the upstream.

pub mod domain;
pub mod file;
pub mod store;

pub use domain::domain_from_host;
pub use file::Credential;
pub use store::{CredentialStore, LocalView};

use crate::http::request::RequestHead;

/// The beta flag the API requires alongside an OAuth access token.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// A credential as it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth<'a> {
    /// `x-api-key: <key>`.
    ApiKey(&'a str),
    /// `Authorization: Bearer <token>` plus the OAuth beta flag.
    OAuthBearer(&'a str),
    /// The client's own `Authorization` value, passed on as it is.
    ClientAuthorization(&'a str),
}

/// Why no credential could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// Nothing configured and nothing sent.
    Missing,
    /// The domain's file exists but is unusable (the message names the field).
    InvalidFile(String),
}

/// Applies the priority rule.
pub fn choose<'a>(
    domain_entry: Option<&'a store::Entry>,
    head: &'a RequestHead,
    default_key: Option<&'a str>,
) -> Result<UpstreamAuth<'a>, CredentialError> {
    match domain_entry {
        Some(Ok(credential)) => {
            return Ok(match &**credential {
                Credential::ApiKey { api_key } => UpstreamAuth::ApiKey(api_key),
                Credential::OAuth(tokens) => UpstreamAuth::OAuthBearer(&tokens.access_token),
            })
        }
        Some(Err(why)) => return Err(CredentialError::InvalidFile(why.to_string())),
        None => {}
    }
    if let Some(key) = head.x_api_key.as_deref().filter(|k| !k.is_empty()) {
        return Ok(UpstreamAuth::ApiKey(key));
    }
    if let Some(auth) = head.authorization.as_deref().filter(|a| !a.is_empty()) {
        return Ok(match bearer_token(auth) {
            // An API key sent as a bearer token: the API only takes keys as x-api-key.
            Some(token) if token.starts_with("sk-ant-api") => UpstreamAuth::ApiKey(token),
            Some(token) => UpstreamAuth::OAuthBearer(token),
            None => UpstreamAuth::ClientAuthorization(auth),
        });
    }
    match default_key {
        Some(key) if key.starts_with("sk-ant-oat") => Ok(UpstreamAuth::OAuthBearer(key)),
        Some(key) => Ok(UpstreamAuth::ApiKey(key)),
        None => Err(CredentialError::Missing),
    }
}

fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Appends the credential header and the (possibly merged) `anthropic-beta` header.
pub fn write_auth_headers(out: &mut Vec<u8>, auth: &UpstreamAuth<'_>, client_beta: Option<&str>) {
    let oauth = match auth {
        UpstreamAuth::ApiKey(key) => {
            push(out, "x-api-key", key);
            false
        }
        UpstreamAuth::OAuthBearer(token) => {
            out.extend_from_slice(b"authorization: Bearer ");
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(b"\r\n");
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
            out.extend_from_slice(b"anthropic-beta: ");
            out.extend_from_slice(beta.as_bytes());
            out.extend_from_slice(b",");
            out.extend_from_slice(OAUTH_BETA.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        (Some(beta), _) => push(out, "anthropic-beta", beta),
        (None, true) => push(out, "anthropic-beta", OAUTH_BETA),
        (None, false) => {}
    }
}

fn push(out: &mut Vec<u8>, name: &str, value: &str) {
    crate::http::headers::push_header(out, name.as_bytes(), value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{BodyFraming, Method};
    use std::sync::Arc;

    fn head(x_api_key: Option<&str>, authorization: Option<&str>) -> RequestHead {
        RequestHead {
            method: Method::Post,
            target: "/v1/messages".into(),
            http10: false,
            keep_alive: true,
            expect_continue: false,
            framing: BodyFraming::None,
            host: Some("a".into()),
            x_api_key: x_api_key.map(Into::into),
            authorization: authorization.map(Into::into),
            anthropic_beta: None,
            accept_encoding: None,
            head_len: 0,
        }
    }

    #[test]
    fn priority_is_file_then_client_then_default() {
        let file: store::Entry = Ok(Arc::new(Credential::ApiKey {
            api_key: "file".into(),
        }));
        let h = head(Some("client"), Some("Bearer sk-ant-api03-bearer"));
        assert_eq!(
            choose(Some(&file), &h, Some("env")),
            Ok(UpstreamAuth::ApiKey("file"))
        );
        assert_eq!(
            choose(None, &h, Some("env")),
            Ok(UpstreamAuth::ApiKey("client"))
        );
        let h = head(None, Some("Bearer sk-ant-api03-bearer"));
        assert_eq!(
            choose(None, &h, Some("env")),
            Ok(UpstreamAuth::ApiKey("sk-ant-api03-bearer"))
        );
        let h = head(None, Some("Bearer sk-ant-oat01-token"));
        assert_eq!(
            choose(None, &h, None),
            Ok(UpstreamAuth::OAuthBearer("sk-ant-oat01-token"))
        );
        let h = head(None, None);
        assert_eq!(
            choose(None, &h, Some("env")),
            Ok(UpstreamAuth::ApiKey("env"))
        );
        assert_eq!(choose(None, &h, None), Err(CredentialError::Missing));
        let broken: store::Entry = Err(Arc::from("bad field"));
        assert!(matches!(
            choose(Some(&broken), &h, Some("env")),
            Err(CredentialError::InvalidFile(_))
        ));
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
}
