//! `Authorization: Basic` (RFC 7617): the one way a browser can present a key on a page
//! load. After a `401` with `WWW-Authenticate: Basic`, it asks its user once, then sends
//! the same header with every request to the origin, the page's own `fetch`es included.

/// The challenge that makes a browser ask for the key (any user name, the key as password).
pub const CHALLENGE: &str = "Basic realm=\"nexus admin\", charset=\"UTF-8\"";

/// The password of a `Basic` authorization (what follows the first `:` of the decoded
/// `user:password`); `None` for another scheme, bad base64, or no `:`.
pub fn password(authorization: &str) -> Option<String> {
    let (scheme, encoded) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(decode(encoded.trim())?).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    Some(password.to_string())
}

/// Standard base64 with optional padding; `None` on any byte outside the alphabet.
fn decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = text.trim_end_matches('=').as_bytes();
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for group in body.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= digit(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_after_the_first_colon() {
        // "admin:nx-key" and ":a:b"
        assert_eq!(
            password("Basic YWRtaW46bngta2V5").as_deref(),
            Some("nx-key")
        );
        assert_eq!(password("basic   OmE6Yg==").as_deref(), Some("a:b"));
        // "user:" – an empty password is still one.
        assert_eq!(password("Basic dXNlcjo=").as_deref(), Some(""));
    }

    #[test]
    fn anything_else_is_no_password() {
        for header in [
            "Bearer YWRtaW46bngta2V5",
            "Basic",
            "Basic !!!!",
            "Basic YWRtaW4",   // "admin": no colon
            "Basic YWRtaW46b", // a lone sextet at the end
            "Basic /w==",      // 0xFF: not UTF-8
            "",
        ] {
            assert_eq!(password(header), None, "{header:?}");
        }
    }
}
