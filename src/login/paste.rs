//! What the user pastes back after the browser step: the callback page's `code#state`,
//! the bare code, or the whole callback URL.

/// The authorization code and, when the paste carried one, the state.
#[derive(Debug, PartialEq, Eq)]
pub struct Pasted {
    pub code: String,
    pub state: Option<String>,
}

/// Why a paste is no authorization code. Never repeats the paste (it is a secret).
#[derive(Debug, PartialEq, Eq)]
pub enum PasteError {
    Empty,
    Malformed(&'static str),
}

impl std::fmt::Display for PasteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasteError::Empty => f.write_str("no authorization code was pasted"),
            PasteError::Malformed(why) => {
                write!(f, "the pasted text is no authorization code: {why}")
            }
        }
    }
}

/// Reads one paste.
pub fn parse_paste(text: &str) -> Result<Pasted, PasteError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PasteError::Empty);
    }
    if let Some((_, query)) = text.split_once('?').filter(|_| text.contains("://")) {
        return from_query(query.split('#').next().unwrap_or(""));
    }
    let (code, state) = match text.split_once('#') {
        Some((code, state)) => (code, Some(state)),
        None => (text, None),
    };
    Ok(Pasted {
        code: token(code, "the code is empty or contains spaces")?,
        state: state
            .map(|s| {
                token(
                    s,
                    "the part after '#' (the state) is empty or contains spaces",
                )
            })
            .transpose()?,
    })
}

/// `code=…&state=…` of a callback URL.
fn from_query(query: &str) -> Result<Pasted, PasteError> {
    let mut code = None;
    let mut state = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("code", value)) => code = Some(percent_decode(value)?),
            Some(("state", value)) => state = Some(percent_decode(value)?),
            _ => {}
        }
    }
    let code = code.ok_or(PasteError::Malformed("the URL has no code parameter"))?;
    Ok(Pasted {
        code: token(&code, "the URL's code parameter is empty")?,
        state: state
            .map(|s| token(&s, "the URL's state parameter is empty"))
            .transpose()?,
    })
}

fn token(value: &str, why: &'static str) -> Result<String, PasteError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PasteError::Malformed(why));
    }
    Ok(value.to_string())
}

fn percent_decode(value: &str) -> Result<String, PasteError> {
    const BAD: PasteError = PasteError::Malformed("the URL has a broken %-escape");
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3).ok_or(BAD)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| BAD)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pasted(code: &str, state: Option<&str>) -> Pasted {
        Pasted {
            code: code.into(),
            state: state.map(Into::into),
        }
    }

    #[test]
    fn the_three_forms() {
        assert_eq!(
            parse_paste("abc123#st-1\n"),
            Ok(pasted("abc123", Some("st-1")))
        );
        assert_eq!(parse_paste("  abc123 \r\n"), Ok(pasted("abc123", None)));
        assert_eq!(
            parse_paste("https://platform.claude.com/oauth/code/callback?code=ab%2Bc&state=s1"),
            Ok(pasted("ab+c", Some("s1")))
        );
        assert_eq!(
            parse_paste("https://x/cb?state=s1&code=c#frag"),
            Ok(pasted("c", Some("s1")))
        );
    }

    #[test]
    fn malformed_pastes_are_refused_without_repeating_them() {
        assert_eq!(parse_paste(" \n"), Err(PasteError::Empty));
        for text in [
            "#state",
            "code#",
            "co de",
            "https://x/cb?state=s",
            "https://x/cb?code=%zz",
        ] {
            let err = parse_paste(text).unwrap_err();
            assert!(matches!(err, PasteError::Malformed(_)), "{text}");
            assert!(!err.to_string().contains(text), "{err}");
        }
    }
}
