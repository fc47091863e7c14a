//! Rate-limit headroom: the last `anthropic-ratelimit-*` figures the upstream sent for a
//! domain, kept in atomics so a response updates them without a lock or an allocation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, UNIX_EPOCH};

use crate::http::ratelimit_headers::{figure, parse_time, Figure};
pub use crate::http::ratelimit_headers::{KINDS, STATUSES, WINDOWS};

/// Marks a figure never seen.
const UNSET: u64 = u64::MAX;

/// Last-seen rate-limit figures of one domain.
#[derive(Debug)]
pub struct RateLimitGauges {
    limit: [AtomicU64; 4],
    remaining: [AtomicU64; 4],
    /// Seconds since the epoch.
    reset: [AtomicU64; 4],
    /// Index into [`STATUSES`].
    unified_status: AtomicU64,
    /// f64 bits, 0.0–1.0.
    unified_utilization: [AtomicU64; 2],
    unified_reset: [AtomicU64; 2],
    /// Milliseconds since the epoch of the last response that carried any of these.
    updated_ms: AtomicU64,
}

impl Default for RateLimitGauges {
    fn default() -> Self {
        let unset = || AtomicU64::new(UNSET);
        RateLimitGauges {
            limit: std::array::from_fn(|_| unset()),
            remaining: std::array::from_fn(|_| unset()),
            reset: std::array::from_fn(|_| unset()),
            unified_status: unset(),
            unified_utilization: std::array::from_fn(|_| unset()),
            unified_reset: std::array::from_fn(|_| unset()),
            updated_ms: unset(),
        }
    }
}

impl RateLimitGauges {
    /// Takes one response header; returns whether it was a rate-limit figure. The clock
    /// (`now_ms`) is read only for a figure, not for every header.
    pub fn observe(&self, name: &str, value: &[u8], now_ms: impl FnOnce() -> u64) -> bool {
        let Some(field) = figure(name) else {
            return false;
        };
        let Ok(value) = std::str::from_utf8(value) else {
            return false;
        };
        let value = value.trim();
        let stored = match field {
            Figure::Limit(i) => value.parse().ok().map(|v| self.limit[i].store(v, Relaxed)),
            Figure::Remaining(i) => value
                .parse()
                .ok()
                .map(|v| self.remaining[i].store(v, Relaxed)),
            Figure::Reset(i) => parse_time(value).map(|v| self.reset[i].store(v, Relaxed)),
            Figure::UnifiedStatus => STATUSES
                .iter()
                .position(|s| s.eq_ignore_ascii_case(value))
                .map(|i| self.unified_status.store(i as u64, Relaxed)),
            Figure::UnifiedUtilization(i) => value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| self.unified_utilization[i].store(v.to_bits(), Relaxed)),
            Figure::UnifiedReset(i) => {
                parse_time(value).map(|v| self.unified_reset[i].store(v, Relaxed))
            }
            // The pool's members read these; the domain's gauges show the windows.
            Figure::UnifiedOverallReset | Figure::UnifiedClaim => None,
        };
        if stored.is_some() {
            self.updated_ms.store(now_ms(), Relaxed);
        }
        stored.is_some()
    }

    /// A plain copy; `None` fields were never seen.
    pub fn read(&self) -> RateLimitSnapshot {
        let get = |a: &AtomicU64| Some(a.load(Relaxed)).filter(|&v| v != UNSET);
        RateLimitSnapshot {
            limit: std::array::from_fn(|i| get(&self.limit[i])),
            remaining: std::array::from_fn(|i| get(&self.remaining[i])),
            reset: std::array::from_fn(|i| get(&self.reset[i])),
            unified_status: get(&self.unified_status).map(|i| STATUSES[i as usize]),
            unified_utilization: std::array::from_fn(|i| {
                get(&self.unified_utilization[i]).map(f64::from_bits)
            }),
            unified_reset: std::array::from_fn(|i| get(&self.unified_reset[i])),
            updated_ms: get(&self.updated_ms),
        }
    }
}

/// Rate-limit figures at one moment, indexed like [`KINDS`] and [`WINDOWS`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitSnapshot {
    pub limit: [Option<u64>; 4],
    pub remaining: [Option<u64>; 4],
    pub reset: [Option<u64>; 4],
    pub unified_status: Option<&'static str>,
    pub unified_utilization: [Option<f64>; 2],
    pub unified_reset: [Option<u64>; 2],
    pub updated_ms: Option<u64>,
}

impl RateLimitSnapshot {
    /// The `rateLimit` object of `/token-stats`; `None` when nothing was ever seen.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        self.updated_ms?;
        let mut obj = serde_json::Map::new();
        for (i, kind) in KINDS.iter().enumerate() {
            let key = camel(kind);
            if let Some(v) = self.limit[i] {
                obj.insert(format!("{key}Limit"), v.into());
            }
            if let Some(v) = self.remaining[i] {
                obj.insert(format!("{key}Remaining"), v.into());
            }
            if let Some(v) = self.reset[i] {
                obj.insert(format!("{key}Reset"), iso(v).into());
            }
        }
        if let Some(status) = self.unified_status {
            obj.insert("unifiedStatus".into(), status.into());
        }
        for (i, window) in WINDOWS.iter().enumerate() {
            if let Some(v) = self.unified_utilization[i] {
                obj.insert(format!("unified{window}Utilization"), v.into());
            }
            if let Some(v) = self.unified_reset[i] {
                obj.insert(format!("unified{window}Reset"), iso(v).into());
            }
        }
        obj.insert("updated".into(), self.updated_ms.into());
        Some(obj.into())
    }
}

/// `input-tokens` → `inputTokens`.
fn camel(kind: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in kind.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn iso(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_api_and_unified_figures() {
        let g = RateLimitGauges::default();
        assert_eq!(g.read().to_json(), None);
        assert!(g.observe("anthropic-ratelimit-requests-limit", b"4000", || 1));
        assert!(g.observe("Anthropic-RateLimit-Requests-Remaining", b"3999", || 1));
        assert!(g.observe(
            "anthropic-ratelimit-tokens-reset",
            b"2026-11-25T10:00:30Z",
            || 1
        ));
        assert!(g.observe(
            "anthropic-ratelimit-input-tokens-remaining",
            b"390000",
            || 1
        ));
        assert!(g.observe(
            "anthropic-ratelimit-unified-status",
            b"allowed_warning",
            || 2
        ));
        assert!(g.observe("anthropic-ratelimit-unified-5h-utilization", b"0.42", || 2));
        assert!(g.observe("anthropic-ratelimit-unified-7d-reset", b"1795651200", || 2));
        assert!(!g.observe("anthropic-ratelimit-requests-limit", b"lots", || 3));
        assert!(!g.observe("content-type", b"text/event-stream", || 3));
        let s = g.read();
        assert_eq!(
            (s.limit[0], s.remaining[0], s.remaining[2]),
            (Some(4000), Some(3999), Some(390000))
        );
        assert_eq!(s.unified_status, Some("allowed_warning"));
        assert_eq!(s.unified_utilization[0], Some(0.42));
        let json = s.to_json().unwrap();
        assert_eq!(json["requestsRemaining"], 3999);
        assert_eq!(json["tokensReset"], "2026-11-25T10:00:30Z");
        assert_eq!(json["inputTokensRemaining"], 390000);
        assert_eq!(json["unified5hUtilization"], 0.42);
        assert_eq!(json["unified7dReset"], "2026-11-26T00:00:00Z");
        assert_eq!(json["updated"], 2);
    }
}
