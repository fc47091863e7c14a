//! The API's rate-limit response headers: which figure a header name carries, and the
//! times they are written in. Read by the per-domain gauges (`stats`) and by the pool
//! member that got the response (`credentials`).

use std::time::UNIX_EPOCH;

/// The API's limit kinds, in header-name order (`anthropic-ratelimit-<kind>-limit`).
pub const KINDS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];
/// The subscription windows (`anthropic-ratelimit-unified-<window>-utilization`).
pub const WINDOWS: [&str; 2] = ["5h", "7d"];
/// The unified (subscription) status values, in order of severity.
pub const STATUSES: [&str; 3] = ["allowed", "allowed_warning", "rejected"];

/// Which figure a header carries; indices are into [`KINDS`] and [`WINDOWS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Limit(usize),
    Remaining(usize),
    Reset(usize),
    UnifiedStatus,
    UnifiedUtilization(usize),
    UnifiedReset(usize),
    /// `anthropic-ratelimit-unified-reset`: when the limit that binds now resets.
    UnifiedOverallReset,
    /// `anthropic-ratelimit-unified-representative-claim`: which window binds.
    UnifiedClaim,
}

/// What a header name means, if it is a rate-limit figure.
pub fn figure(name: &str) -> Option<Figure> {
    let rest = strip_prefix_ignore_case(name, "anthropic-ratelimit-")?;
    if let Some(unified) = strip_prefix_ignore_case(rest, "unified-") {
        if unified.eq_ignore_ascii_case("status") {
            return Some(Figure::UnifiedStatus);
        }
        if unified.eq_ignore_ascii_case("reset") {
            return Some(Figure::UnifiedOverallReset);
        }
        if unified.eq_ignore_ascii_case("representative-claim") {
            return Some(Figure::UnifiedClaim);
        }
        for (i, window) in WINDOWS.iter().enumerate() {
            let Some(what) =
                strip_prefix_ignore_case(unified, window).and_then(|r| r.strip_prefix('-'))
            else {
                continue;
            };
            if what.eq_ignore_ascii_case("utilization") {
                return Some(Figure::UnifiedUtilization(i));
            }
            if what.eq_ignore_ascii_case("reset") {
                return Some(Figure::UnifiedReset(i));
            }
        }
        return None;
    }
    for (i, kind) in KINDS.iter().enumerate() {
        let Some(what) = strip_prefix_ignore_case(rest, kind).and_then(|r| r.strip_prefix('-'))
        else {
            continue;
        };
        if what.eq_ignore_ascii_case("limit") {
            return Some(Figure::Limit(i));
        }
        if what.eq_ignore_ascii_case("remaining") {
            return Some(Figure::Remaining(i));
        }
        if what.eq_ignore_ascii_case("reset") {
            return Some(Figure::Reset(i));
        }
    }
    None
}

/// The window a representative claim names (`five_hour`, `seven_day`, `seven_day_opus`…).
pub fn claim_window(value: &str) -> Option<usize> {
    let value = value.trim();
    if value.starts_with("five_hour") {
        Some(0)
    } else if value.starts_with("seven_day") {
        Some(1)
    } else {
        None
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Seconds since the epoch from an RFC 3339 time (the API's `*-reset`) or plain seconds
/// (the unified `*-reset`).
pub fn parse_time(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    humantime::parse_rfc3339_weak(value)
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_times() {
        assert_eq!(
            figure("Anthropic-RateLimit-Input-Tokens-Remaining"),
            Some(Figure::Remaining(2))
        );
        assert_eq!(
            figure("anthropic-ratelimit-unified-7d-reset"),
            Some(Figure::UnifiedReset(1))
        );
        assert_eq!(
            figure("anthropic-ratelimit-unified-reset"),
            Some(Figure::UnifiedOverallReset)
        );
        assert_eq!(
            figure("anthropic-ratelimit-unified-representative-claim"),
            Some(Figure::UnifiedClaim)
        );
        assert_eq!(figure("anthropic-ratelimit-unified-1h-reset"), None);
        assert_eq!(figure("retry-after"), None);
        assert_eq!(claim_window("five_hour"), Some(0));
        assert_eq!(claim_window("seven_day_opus"), Some(1));
        assert_eq!(claim_window("other"), None);
        assert_eq!(parse_time("1795651200"), Some(1795651200));
        assert_eq!(parse_time("2026-11-26T00:00:00Z"), Some(1795651200));
        assert_eq!(parse_time("soon"), None);
    }
}
