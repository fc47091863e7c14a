//! The patterns a client's `domains` and `models` lists hold: `*` stands for any run of
//! characters (`claude-sonnet-*`, `*.example.com`, `*`), anything else for itself.

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        Pattern(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches the whole pattern (ASCII case-insensitively: domains and
    /// model ids are lower case, a file need not be).
    pub fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), text.as_bytes());
        // Greedy with backtracking to the last `*`: linear for patterns of one star,
        // quadratic at worst.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
                pi += 1;
                ti += 1;
            } else if let Some((star_pi, star_ti)) = star {
                pi = star_pi + 1;
                ti = star_ti + 1;
                star = Some((star_pi, star_ti + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

/// Whether `text` is allowed by `list`: an empty list allows everything.
pub fn allowed(list: &[Pattern], text: &str) -> bool {
    list.is_empty() || list.iter().any(|p| p.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run() {
        let m = |p: &str, t: &str| Pattern::new(p).matches(t);
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("claude-sonnet-*", "claude-sonnet-4-5-20250929"));
        assert!(!m("claude-sonnet-*", "claude-opus-4-1"));
        assert!(m("*.example.com", "team-a.example.com"));
        assert!(!m("*.example.com", "example.com"));
        assert!(m("claude-*-4-5", "claude-haiku-4-5"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(
            m("Claude-Sonnet-*", "claude-sonnet-4-5"),
            "case-insensitive"
        );
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
        assert!(!m("exactly", "exact"));
    }

    #[test]
    fn an_empty_list_allows_all() {
        assert!(allowed(&[], "x"));
        let list = [Pattern::new("a*"), Pattern::new("b")];
        assert!(allowed(&list, "apple") && allowed(&list, "b"));
        assert!(!allowed(&list, "banana"));
    }
}
