//! `http(s)://host[:port][/path][?query]` URLs, for the upstream and for webhooks.

use std::fmt;

/// A parsed http or https URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `true` for https.
    pub tls: bool,
    /// Host name (lower-cased) or IP literal without brackets: for DNS and SNI.
    pub host: String,
    pub port: u16,
    /// The `Host` header value: `host`, or `host:port` for a non-default port.
    pub authority: String,
    /// Path and query as written (may be empty); the fragment is dropped.
    pub target: String,
}

/// Where the upstream lives, parsed once from `UPSTREAM_URL`.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    /// `true` for https.
    pub tls: bool,
    /// Host name or IP literal (without brackets), used for DNS and SNI.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Value of the `Host` header sent upstream (`host` or `host:port`).
    pub authority: String,
    /// Path prefix prepended to every forwarded path (empty or `/something`, no trailing `/`).
    pub base_path: String,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

/// Parses a URL; the error says what was expected and never echoes the URL (a Slack
/// webhook URL is itself a secret).
pub fn parse_http_url(url: &str) -> Result<HttpUrl, &'static str> {
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
    Ok(HttpUrl {
        tls,
        host: host.to_ascii_lowercase(),
        port,
        authority,
        target: target.to_string(),
    })
}

/// Parses `http(s)://host[:port][/base]`; anything else is refused with the reason.
pub fn parse_upstream_url(url: &str) -> Result<UpstreamUrl, &'static str> {
    if url.contains(['?', '#']) {
        return Err("a URL without query or fragment");
    }
    let url = parse_http_url(url)?;
    Ok(UpstreamUrl {
        tls: url.tls,
        host: url.host,
        port: url.port,
        authority: url.authority,
        base_path: url.target.trim_end_matches('/').to_string(),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}
