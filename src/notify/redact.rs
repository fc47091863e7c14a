//! Masking for everything a side channel prints or posts: debug traces, Slack text.
//!
//! Three rules, applied to any text: `sk-ant-…` tokens anywhere show their last 10
//! characters at most ([`mask`]); the string values of JSON fields named like credentials
//! (`api_key`, `accessToken`, `password`, …) become `****`; credential headers
//! (`Authorization`, `x-api-key`, cookies) are masked whole. Counters such as
//! `input_tokens` are not credentials and stay readable. The JSON rule works on text cut
//! off anywhere (a truncated body), since it reads the text string by string.

use std::borrow::Cow;

use crate::credentials::mask;

const SK_ANT: &str = "sk-ant-";

/// Masks every secret `text` may hold (see the module docs).
pub fn redact(text: &str) -> Cow<'_, str> {
    let fields = redact_json_fields(text);
    match redact_tokens(&fields) {
        Cow::Borrowed(_) => fields,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// A header value as it may be shown: credential headers masked whole, any other value
/// with its `sk-ant-…` tokens masked.
pub fn redact_header<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    const WHOLE: [&str; 6] = [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "set-cookie",
    ];
    if WHOLE.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return Cow::Owned(mask(value));
    }
    redact_tokens(value)
}

/// Whether a JSON field of this name holds a credential. Compared without case, `_` or
/// `-`, so `api_key`, `apiKey` and `x-api-key` are one name.
pub fn is_credential_field(name: &str) -> bool {
    const NAMES: [&str; 20] = [
        "apikey",
        "xapikey",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "sessiontoken",
        "bearertoken",
        "oauthtoken",
        "token",
        "clientsecret",
        "secret",
        "secretkey",
        "privatekey",
        "password",
        "passwd",
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
    ];
    if name.len() > 32 {
        return false;
    }
    let mut folded = [0u8; 32];
    let mut len = 0;
    for b in name.bytes().filter(|b| *b != b'_' && *b != b'-') {
        folded[len] = b.to_ascii_lowercase();
        len += 1;
    }
    let folded = &folded[..len];
    NAMES.iter().any(|n| n.as_bytes() == folded)
}

/// Masks every `sk-ant-…` token: `****` and its last 10 characters at most.
fn redact_tokens(text: &str) -> Cow<'_, str> {
    if !text.contains(SK_ANT) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(SK_ANT) {
        out.push_str(&rest[..at]);
        let token_len = rest[at..]
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .unwrap_or(rest.len() - at);
        out.push_str(&mask(&rest[at..at + token_len]));
        rest = &rest[at + token_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// End of the JSON string whose opening quote is at `open`: the index of its closing
/// quote, or `None` if the text ends first.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Replaces the values of credential-named JSON fields with `"****"`.
fn redact_json_fields(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `text` already in `out`
    let mut i = 0;
    while let Some(rel) = bytes[i..].iter().position(|&b| b == b'"') {
        let open = i + rel;
        let Some(close) = string_end(bytes, open) else {
            break;
        };
        i = close + 1;
        // A key is a string followed by a colon.
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if bytes.get(j) != Some(&b':') {
            continue;
        }
        let name = &text[open + 1..close];
        if !is_credential_field(name) {
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let (start, end) = match bytes.get(j) {
            // A string value: everything up to its closing quote (or the end of the text).
            Some(b'"') => (j, string_end(bytes, j).map_or(bytes.len(), |e| e + 1)),
            // Objects and arrays are walked into: their own fields are judged by name.
            Some(b'{') | Some(b'[') | None => continue,
            // A bare scalar (number, literal): up to the next delimiter.
            Some(_) => {
                let len = bytes[j..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(bytes.len() - j);
                (j, j + len)
            }
        };
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..start]);
        out.push_str("\"****\"");
        copied = end;
        i = end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

    #[test]
    fn tokens_anywhere_show_their_last_ten_characters() {
        let text = format!("key={KEY}, again \"{KEY}\".");
        let shown = redact(&text);
        assert_eq!(
            shown, "key=****0123456789, again \"****0123456789\".",
            "{shown}"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn credential_fields_are_masked_and_counters_are_not() {
        let text = r#"{"api_key":"abc","nested":{"accessToken" : "xyz","refresh_token":"r"},"password":12345,"input_tokens":42,"client_secret":"s","usage":{"output_tokens":7},"token":null}"#;
        let shown = redact(text);
        assert_eq!(
            shown,
            r#"{"api_key":"****","nested":{"accessToken" : "****","refresh_token":"****"},"password":"****","input_tokens":42,"client_secret":"****","usage":{"output_tokens":7},"token":"****"}"#
        );
    }

    #[test]
    fn a_value_cut_off_by_truncation_is_still_masked() {
        let shown = redact(r#"{"model":"x","apiKey":"sk-ant-api03-partialsecretvalu"#);
        assert_eq!(shown, r#"{"model":"x","apiKey":"****""#);
        // A key whose name is cut off is not a key yet.
        assert_eq!(redact(r#"{"api_k"#), r#"{"api_k"#);
    }

    #[test]
    fn escaped_quotes_do_not_desynchronise_the_scan() {
        let text = r#"{"text":"say \"password\": \"hunter2\"","password":"hunter2"}"#;
        assert_eq!(
            redact(text),
            r#"{"text":"say \"password\": \"hunter2\"","password":"****"}"#
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            redact_header("Authorization", &format!("Bearer {KEY}")),
            "****0123456789"
        );
        assert_eq!(redact_header("X-Api-Key", "short"), "****");
        assert_eq!(
            redact_header("content-type", "application/json"),
            "application/json"
        );
        assert_eq!(
            redact_header("x-forwarded-key", KEY),
            "****0123456789",
            "sk-ant tokens are masked under any name"
        );
    }

    #[test]
    fn field_names_fold_case_and_separators() {
        for name in [
            "api_key",
            "apiKey",
            "X-API-KEY",
            "Refresh_Token",
            "PASSWORD",
        ] {
            assert!(is_credential_field(name), "{name}");
        }
        for name in ["input_tokens", "max_tokens", "tokens", "key", "model", ""] {
            assert!(!is_credential_field(name), "{name}");
        }
    }
}
