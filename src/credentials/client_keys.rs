//! Client keys: what a request must present before nexus attaches a credential of its own.
//!
//! A key comes as `x-api-key` or `Authorization: Bearer`; it is compared in constant time
//! against every configured key, and it is never forwarded (the caller writes only the
//! chosen credential upstream).

use super::ClientCredentials;

/// The keys the client presented: its `x-api-key` and its bearer token, when non-empty.
pub fn presented(client: ClientCredentials<'_>) -> [Option<&str>; 2] {
    let x_api_key = client.x_api_key.map(str::trim).filter(|k| !k.is_empty());
    let bearer = client.authorization.and_then(super::bearer_token);
    [x_api_key, bearer]
}

/// Whether the request presented one of `keys`. Every presented value is compared with
/// every key, without stopping at the first match, so timing says nothing about which
/// key (or how much of one) matched.
pub fn accepted(keys: &[String], client: ClientCredentials<'_>) -> bool {
    let mut found = false;
    for candidate in presented(client).into_iter().flatten() {
        for key in keys {
            found |= constant_time_eq(key.as_bytes(), candidate.as_bytes());
        }
    }
    found
}

/// Whether the request presented anything that could be a key.
pub fn any_presented(client: ClientCredentials<'_>) -> bool {
    presented(client).iter().any(Option::is_some)
}

/// Equality whose running time depends only on the lengths, not on where bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
