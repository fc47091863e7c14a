//! Whether a request's Host names the server its connection's SNI named: a client that
//! reaches one domain's TLS session must not have its requests served as another's
//! (RFC 9110 §15.5.20: 421 Misdirected Request).

/// Host (any `:port` and a trailing dot dropped, case ignored) equals the SNI name.
pub fn host_matches(host: &str, sni: &str) -> bool {
    let host = host.trim();
    // A bracketed IPv6 literal never matches: SNI carries DNS names only.
    if host.starts_with('[') {
        return false;
    }
    let name = host.split_once(':').map_or(host, |(name, _)| name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let sni = sni.strip_suffix('.').unwrap_or(sni);
    name.eq_ignore_ascii_case(sni)
}

#[cfg(test)]
mod tests {
    use super::host_matches;

    #[test]
    fn the_port_case_and_a_trailing_dot_do_not_matter() {
        assert!(host_matches("a.example.com", "a.example.com"));
        assert!(host_matches("A.Example.com:8443", "a.example.com"));
        assert!(host_matches("a.example.com.", "a.example.com"));
        assert!(host_matches(" a.example.com ", "a.example.com."));
    }

    #[test]
    fn another_name_or_an_address_does_not_match() {
        assert!(!host_matches("b.example.com", "a.example.com"));
        assert!(!host_matches("a.example.com.evil", "a.example.com"));
        assert!(!host_matches("example.com", "a.example.com"));
        assert!(!host_matches("[::1]:443", "localhost"));
        assert!(!host_matches("127.0.0.1", "localhost"));
        assert!(!host_matches("", "localhost"));
    }
}
