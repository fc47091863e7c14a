//! What an upstream response head says about the pool member whose credential it
//! answered: its headroom, whether the request goes on to another member, and until when
//! the member rests.

use super::headroom::Figures;
use super::member_state::FailoverReason;
use crate::http::ratelimit_headers::{claim_window, figure, parse_time, Figure, STATUSES};

/// A member rests this long after a 429 that names no reset.
pub const DEFAULT_REST_MS: u64 = 30_000;
/// After a 529 (overloaded): the API as a whole is busy, not the member; a short rest.
pub const OVERLOADED_REST_MS: u64 = 5_000;
/// The longest rest a response can impose (a subscription's week, and a margin).
const MAX_REST_MS: u64 = 8 * 24 * 3600 * 1000;

/// The statuses that send a request on to the next member.
pub fn failover_reason(status: u16) -> Option<FailoverReason> {
    match status {
        429 => Some(FailoverReason::RateLimited),
        529 => Some(FailoverReason::Overloaded),
        401 | 403 => Some(FailoverReason::Refused),
        _ => None,
    }
}

/// The figures of one response head, gathered header by header as it is parsed (no
/// allocation).
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponseNotes {
    retry_after_s: Option<u64>,
    figures: Figures,
    overall_reset: Option<u64>,
    claim: Option<usize>,
}

impl ResponseNotes {
    /// Takes one response header.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        // By name first: most headers are none of these, and are passed over unread —
        // most by their first letter (`anthropic-ratelimit-…`, `retry-after`).
        if !matches!(name.as_bytes().first(), Some(b'a' | b'A' | b'r' | b'R')) {
            return;
        }
        let retry_after = name.eq_ignore_ascii_case("retry-after");
        let which = if retry_after { None } else { figure(name) };
        if !retry_after && which.is_none() {
            return;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return;
        };
        let value = value.trim();
        let Some(which) = which else {
            self.retry_after_s = value.parse().ok();
            return;
        };
        let f = &mut self.figures;
        match which {
            Figure::Limit(k) => f.limit[k] = value.parse().ok(),
            Figure::Remaining(k) => f.remaining[k] = value.parse().ok(),
            Figure::Reset(k) => f.reset[k] = parse_time(value),
            Figure::UnifiedStatus => f.rejected = value.eq_ignore_ascii_case(STATUSES[2]),
            Figure::UnifiedUtilization(w) => {
                f.utilization[w] = value.parse::<f64>().ok().filter(|v| v.is_finite())
            }
            Figure::UnifiedReset(w) => f.window_reset[w] = parse_time(value),
            Figure::UnifiedOverallReset => self.overall_reset = parse_time(value),
            Figure::UnifiedClaim => self.claim = claim_window(value),
        }
    }

    /// The rate-limit figures, with the unified reset attached to a `rejected` status.
    pub fn figures(&self) -> Figures {
        Figures {
            rejected_until: self.unified_reset(),
            ..self.figures
        }
    }

    /// When the subscription limit that binds resets: the unified reset, else the reset of
    /// the window the representative claim names.
    fn unified_reset(&self) -> Option<u64> {
        self.overall_reset
            .or_else(|| self.claim.and_then(|w| self.figures.window_reset[w]))
    }

    /// Until when (ms since the epoch) the member rests after answering `reason`: the
    /// moment the response names (`retry-after`, the unified reset, or the reset of an
    /// exhausted API-key limit), else a default.
    pub fn rest_until_ms(&self, reason: FailoverReason, now_ms: u64) -> u64 {
        let named = match reason {
            FailoverReason::Overloaded => {
                let secs = self.retry_after_s.unwrap_or(OVERLOADED_REST_MS / 1000);
                return now_ms + (secs * 1000).clamp(1000, DEFAULT_REST_MS);
            }
            FailoverReason::RateLimited => self.named_reset_ms(now_ms),
            FailoverReason::Refused => None,
        };
        let until = named.unwrap_or(now_ms + DEFAULT_REST_MS);
        until.clamp(now_ms + 1000, now_ms + MAX_REST_MS)
    }

    fn named_reset_ms(&self, now_ms: u64) -> Option<u64> {
        if let Some(secs) = self.retry_after_s {
            return Some(now_ms + secs * 1000);
        }
        let future = |s: u64| (s * 1000 > now_ms).then_some(s * 1000);
        if let Some(at) = self.unified_reset().and_then(future) {
            return Some(at);
        }
        // The API-key limits that ran out; the last of them to reset frees the key.
        let f = &self.figures;
        (0..4)
            .filter(|&k| f.remaining[k] == Some(0))
            .filter_map(|k| f.reset[k].and_then(future))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(headers: &[(&str, &str)]) -> ResponseNotes {
        let mut n = ResponseNotes::default();
        for (name, value) in headers {
            n.header(name, value.as_bytes());
        }
        n
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn statuses_that_fail_over() {
        assert_eq!(failover_reason(429), Some(FailoverReason::RateLimited));
        assert_eq!(failover_reason(529), Some(FailoverReason::Overloaded));
        assert_eq!(failover_reason(401), Some(FailoverReason::Refused));
        assert_eq!(failover_reason(403), Some(FailoverReason::Refused));
        for status in [200, 400, 404, 413, 500, 502, 503, 504] {
            assert_eq!(failover_reason(status), None, "{status}");
        }
    }

    #[test]
    fn the_rest_ends_when_the_response_says() {
        let rl = FailoverReason::RateLimited;
        assert_eq!(
            notes(&[("Retry-After", "60")]).rest_until_ms(rl, NOW),
            NOW + 60_000
        );
        assert_eq!(notes(&[]).rest_until_ms(rl, NOW), NOW + DEFAULT_REST_MS);
        let unified = notes(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-5h-reset", "1800000600"),
        ]);
        assert_eq!(unified.rest_until_ms(rl, NOW), NOW + 600_000);
        assert_eq!(unified.figures().rejected_until, Some(1_800_000_600));
        let key = notes(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2027-01-15T08:00:20Z"),
            ("anthropic-ratelimit-tokens-remaining", "5"),
            ("anthropic-ratelimit-tokens-reset", "2027-01-15T09:00:00Z"),
        ]);
        assert_eq!(key.rest_until_ms(rl, NOW), NOW + 20_000);
        // A reset in the past names nothing; one a year away is capped.
        let past = notes(&[("anthropic-ratelimit-unified-reset", "1700000000")]);
        assert_eq!(past.rest_until_ms(rl, NOW), NOW + DEFAULT_REST_MS);
        let far = notes(&[("retry-after", "31536000")]);
        assert_eq!(far.rest_until_ms(rl, NOW), NOW + MAX_REST_MS);
        // Overloaded: short, whatever is said.
        let o = FailoverReason::Overloaded;
        assert_eq!(notes(&[]).rest_until_ms(o, NOW), NOW + OVERLOADED_REST_MS);
        assert_eq!(
            notes(&[("retry-after", "3600")]).rest_until_ms(o, NOW),
            NOW + DEFAULT_REST_MS
        );
    }

    #[test]
    fn odd_values_are_ignored() {
        let n = notes(&[
            ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("anthropic-ratelimit-unified-5h-utilization", "NaN"),
            ("anthropic-ratelimit-requests-limit", "\u{fffd}"),
        ]);
        assert_eq!(n.figures().headroom(), None);
        assert_eq!(
            n.rest_until_ms(FailoverReason::RateLimited, NOW),
            NOW + DEFAULT_REST_MS
        );
    }
}
