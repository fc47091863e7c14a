//! Webhook URLs: `http(s)://host[:port][/path][?query]`, parsed once into what a POST needs.

use std::fmt;

use crate::client::Server;

/// Where a webhook lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `true` for https.
    pub tls: bool,
    /// Host name or IP literal (without brackets), for DNS and SNI.
    pub host: String,
    pub port: u16,
    /// The `Host` header value.
    pub authority: String,
    /// The request target: path and query, at least `/`.
    pub target: String,
}

impl Endpoint {
    /// Parses a webhook URL; the error says what was expected (never echoes the URL,
    /// which for Slack is itself a secret).
    pub fn parse(url: &str) -> Result<Endpoint, &'static str> {
        let url = crate::http::url::parse_http_url(url)?;
        let target = match url.target.as_str() {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        Ok(Endpoint {
            tls: url.tls,
            host: url.host,
            port: url.port,
            authority: url.authority,
            target,
        })
    }

    /// The server a POST goes to (connections to it are pooled).
    pub fn server(&self) -> Server<'_> {
        Server {
            tls: self.tls,
            host: &self.host,
            port: self.port,
            authority: &self.authority,
        }
    }
}

/// Shows scheme and authority only: a Slack webhook's path is its secret.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let e = Endpoint::parse("https://hooks.slack.com/services/T0/B0/XXXX").unwrap();
        assert_eq!(
            (
                e.tls,
                e.host.as_str(),
                e.port,
                e.authority.as_str(),
                e.target.as_str()
            ),
            (
                true,
                "hooks.slack.com",
                443,
                "hooks.slack.com",
                "/services/T0/B0/XXXX"
            )
        );
        assert_eq!(
            e.to_string(),
            "https://hooks.slack.com",
            "the path stays private"
        );
        let e = Endpoint::parse("http://127.0.0.1:8080?key=v").unwrap();
        assert_eq!(
            (e.port, e.authority.as_str(), e.target.as_str()),
            (8080, "127.0.0.1:8080", "/?key=v")
        );
        let e = Endpoint::parse("HTTP://[::1]:9000/t#frag").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority.as_str(), e.target.as_str()),
            ("::1", "[::1]:9000", "/t")
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://u:p@host/x",
            "http://host:0/",
            "http://host:x/",
            "http://host/a b",
            "hooks.slack.com/x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
