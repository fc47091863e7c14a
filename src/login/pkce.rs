//! PKCE (RFC 7636, S256) and the `state` value: random strings from the system CSPRNG,
//! and the challenge the authorize URL carries for the verifier the token request proves.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes behind the verifier and the state: 32 bytes make a 43-character
/// verifier, inside RFC 7636's 43..=128.
const RANDOM_BYTES: usize = 32;

/// One login's secrets: the verifier stays in this process, the challenge and the state
/// go into the authorize URL.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
    pub state: String,
}

impl Pkce {
    /// Fresh values from the operating system's CSPRNG.
    pub fn generate() -> Result<Pkce, String> {
        let verifier = random_token()?;
        Ok(Pkce {
            challenge: challenge_for(&verifier),
            verifier,
            state: random_token()?,
        })
    }
}

/// `BASE64URL(SHA256(verifier))`, no padding: the S256 method.
pub fn challenge_for(verifier: &str) -> String {
    base64url(digest(&SHA256, verifier.as_bytes()).as_ref())
}

fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    Ok(base64url(&bytes))
}

/// Base64url without padding (RFC 4648 §5): the alphabet PKCE and URLs want.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_without_padding() {
        let cases: [(&[u8], &str); 8] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff, 0xfe], "-__-"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64url(input), expected, "{input:?}");
        }
    }

    #[test]
    fn challenge_is_the_rfc_7636_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn generated_values_are_fresh_and_well_formed() {
        let a = Pkce::generate().unwrap();
        let b = Pkce::generate().unwrap();
        assert_eq!(a.verifier.len(), 43);
        assert_eq!(a.state.len(), 43);
        assert!(a
            .verifier
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a.verifier, b.verifier);
        assert_ne!(a.state, b.state);
        assert_ne!(a.verifier, a.state);
        assert_eq!(a.challenge, challenge_for(&a.verifier));
    }
}
