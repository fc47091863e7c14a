//! How a secret may appear in a log line or a response: its last 10 characters at most,
//! and nothing at all of a secret of 20 characters or fewer.

/// Characters of a long secret that may be shown.
const SHOWN: usize = 10;
/// Secrets this short are shown as nothing but the mask.
const HIDDEN_UP_TO: usize = 20;

/// `****` followed by the last 10 characters, or just `****` for short secrets.
pub fn mask(secret: &str) -> String {
    let chars = secret.chars().count();
    if chars <= HIDDEN_UP_TO {
        return "****".to_string();
    }
    let tail: String = secret.chars().skip(chars - SHOWN).collect();
    format!("****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_at_most_the_last_ten_characters() {
        assert_eq!(mask(""), "****");
        assert_eq!(
            mask("12345678901234567890"),
            "****",
            "20 characters: nothing"
        );
        assert_eq!(mask("sk-ant-api03-abcdefghij0123456789"), "****0123456789");
        // Multi-byte characters are counted as characters, never split.
        let secret = "é".repeat(25);
        assert_eq!(mask(&secret), format!("****{}", "é".repeat(10)));
    }
}
