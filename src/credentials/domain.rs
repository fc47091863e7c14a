//! The request's domain, from its Host header. It names a credential file, so only a
//! strictly valid host name ever gets near the filesystem.

use std::rc::Rc;

/// A validated domain: lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    /// False for IP literals like `[::1]`: they are tracked but never name a file.
    pub may_have_file: bool,
}

/// The last Host value a connection sent and the domain it names: a kept-alive client
/// sends the same one every time, so each request after the first costs a compare, not
/// a validation and an allocation.
#[derive(Debug, Default)]
pub struct HostCache {
    host: String,
    domain: Option<Rc<Option<Domain>>>,
}

impl HostCache {
    /// [`domain_from_host`] of `host`, remembered for the next request.
    pub fn domain(&mut self, host: &str) -> Rc<Option<Domain>> {
        match &self.domain {
            Some(domain) if self.host == host => Rc::clone(domain),
            _ => {
                let domain = Rc::new(domain_from_host(host));
                self.host.clear();
                self.host.push_str(host);
                self.domain = Some(Rc::clone(&domain));
                domain
            }
        }
    }
}

/// Turns a Host header value into a [`Domain`]; `None` when it is not a valid host.
pub fn domain_from_host(host: &str) -> Option<Domain> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !valid_port_suffix(after) || ip.parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        return Some(Domain {
            name: format!("[{}]", ip.to_ascii_lowercase()),
            may_have_file: false,
        });
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5) {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    is_hostname(&name).then_some(Domain {
        name,
        may_have_file: true,
    })
}

fn valid_port_suffix(after: &str) -> bool {
    match after.strip_prefix(':') {
        None => after.is_empty(),
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_answers_as_domain_from_host_does() {
        let mut cache = HostCache::default();
        for host in [
            "a.example",
            "a.example",
            "B.example:1",
            "../x",
            "a.example",
            "[::1]",
        ] {
            assert_eq!(*cache.domain(host), domain_from_host(host), "{host}");
        }
    }

    #[test]
    fn valid_hosts() {
        let d = domain_from_host("Claude-1.Example.COM:3000").unwrap();
        assert_eq!(
            d,
            Domain {
                name: "claude-1.example.com".into(),
                may_have_file: true
            }
        );
        assert_eq!(domain_from_host("localhost").unwrap().name, "localhost");
        assert_eq!(
            domain_from_host("127.0.0.1:3000").unwrap().name,
            "127.0.0.1"
        );
        assert_eq!(
            domain_from_host("example.com.").unwrap().name,
            "example.com"
        );
        let v6 = domain_from_host("[::1]:3000").unwrap();
        assert_eq!(
            v6,
            Domain {
                name: "[::1]".into(),
                may_have_file: false
            }
        );
    }

    #[test]
    fn hostile_hosts_are_refused() {
        for host in [
            "",
            "..",
            "../../etc/passwd",
            "../evil",
            "a/b",
            "a\\b",
            "a..b",
            ".a",
            "-a.com",
            "a-.com",
            "a b",
            "a:",
            "a:x",
            "a:123456",
            "[::1",
            "[zz]",
            "a%2f",
            "a\0b",
            "ä.com",
            "x.credentials.json/",
        ] {
            assert_eq!(domain_from_host(host), None, "{host:?}");
        }
        assert_eq!(domain_from_host(&"a".repeat(64)), None);
    }
}
