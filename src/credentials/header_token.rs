//! The rule for a secret nexus writes into the upstream head (an API key, an OAuth access
//! token): visible ASCII only, bytes 0x21 `!` to 0x7E `~`.
//!
//! Keys and tokens are printable ASCII (`sk-ant-…`). RFC 9110 would let a header value
//! also hold spaces, tabs and bytes from 0x80, but none of those belongs in a token, and
//! refusing them means no CR, LF, NUL or other control byte can ever split, truncate or
//! extend the head, whichever code writes it. Checked where a secret enters nexus (a
//! credential file, a token endpoint's answer, `CLAUDE_API_KEY`), never per request.

use std::fmt;

/// Why a value may not go into a header. Shown in messages; never shows the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenProblem {
    /// Bytes 0x80 and up.
    NonAscii,
    /// A space, or a tab.
    Whitespace,
    /// A control byte other than those below (0x01–0x1F except tab, CR, LF; 0x7F).
    Control,
    /// A NUL byte.
    Nul,
    /// CR or LF: would end the header line.
    LineBreak,
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenProblem::NonAscii => "contains a non-ASCII character",
            TokenProblem::Whitespace => "contains a space or tab",
            TokenProblem::Control => "contains a control character",
            TokenProblem::Nul => "contains a NUL byte",
            TokenProblem::LineBreak => "contains a line break (CR or LF)",
        })
    }
}

/// Checks `value` against the rule; the error names the worst problem found.
pub fn check(value: &str) -> Result<(), TokenProblem> {
    let worst = value
        .bytes()
        .filter(|b| !b.is_ascii_graphic())
        .map(|b| match b {
            b'\r' | b'\n' => TokenProblem::LineBreak,
            0 => TokenProblem::Nul,
            b' ' | b'\t' => TokenProblem::Whitespace,
            0x80.. => TokenProblem::NonAscii,
            _ => TokenProblem::Control,
        })
        .max();
    match worst {
        None => Ok(()),
        Some(problem) => Err(problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_ascii_passes() {
        assert_eq!(check("sk-ant-api03-AZaz09_-.~+/="), Ok(()));
        assert_eq!(check("!~"), Ok(()));
        for (value, problem) in [
            ("sk-ant-oat01-a\r\nx-injected: 1", TokenProblem::LineBreak),
            ("a\rb", TokenProblem::LineBreak),
            ("a\nb", TokenProblem::LineBreak),
            ("a\0b", TokenProblem::Nul),
            ("a\u{1}b", TokenProblem::Control),
            ("a\u{7f}b", TokenProblem::Control),
            ("a\u{1b}[31m", TokenProblem::Control),
            ("a b", TokenProblem::Whitespace),
            ("a\tb", TokenProblem::Whitespace),
            ("clé", TokenProblem::NonAscii),
            // The worst one is named.
            ("é \0\n", TokenProblem::LineBreak),
            ("é \0", TokenProblem::Nul),
        ] {
            assert_eq!(check(value), Err(problem), "{value:?}");
        }
    }

    #[test]
    fn messages_never_show_the_value() {
        let err = check("secret\r\nx-injected: 1").unwrap_err().to_string();
        assert!(
            !err.contains("secret") && !err.contains("injected"),
            "{err}"
        );
    }
}
