//! Webhook URLs: `http(s)://host[:port][/path][?query]`, parsed once into what a POST needs.

use std::fmt;

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
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err("an http:// or https:// URL");
        };
        let rest = rest.split('#').next().unwrap_or("");
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err("a URL without user info");
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or("a closing ] in the IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "a numeric port")?,
                None if after.is_empty() => default_port,
                None => return Err("host[:port]"),
            };
            (ip.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "a numeric port")?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err("a host and a non-zero port");
        }
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("a URL without spaces or control characters");
        }
        let target = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(Endpoint {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            authority,
            target,
        })
    }

    /// Connections to the same origin are interchangeable: this names the origin.
    pub fn origin(&self) -> Origin<'_> {
        Origin {
            tls: self.tls,
            host: &self.host,
            port: self.port,
        }
    }
}

/// Scheme, host and port: what a pooled connection is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub tls: bool,
    pub host: &'a str,
    pub port: u16,
}

/// Shows scheme and authority only: a Slack webhook's path is its secret.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
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
