//! Counting: per-domain counters, proxy metrics, and the three views of them
//! (console report, `/token-stats`, `/metrics`), all read from the same atomics.

pub mod meter;
pub mod metrics;
pub mod ratelimit;
pub mod registry;
pub mod report;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use meter::{BodyScanner, Meter, SpareScanners};
pub use metrics::{Histogram, ProxyMetrics};
pub use registry::{DomainSnapshot, LocalCounters, RequestRecord, StatsRegistry};

use crate::credentials::member_state::{Availability, MemberSnapshot};
use crate::credentials::PoolFigures;

/// Everything counted, shared by all workers.
pub struct Stats {
    pub registry: StatsRegistry,
    pub proxy: ProxyMetrics,
}

impl Stats {
    /// Counters for up to `max_domains` domains, served by `workers` workers.
    pub fn new(max_domains: usize, workers: usize) -> Self {
        Stats {
            registry: StatsRegistry::new(max_domains),
            proxy: ProxyMetrics::new(workers),
        }
    }

    /// The `/token-stats` body (shape fixed by DESIGN.md; `errorCount` and
    /// `otherRequestCount` are additions), with each domain file's pool members under
    /// `credentials`. `costUsd` is written from the integer sum, every digit kept: through
    /// an f64 a large sum would lose its last picodollars.
    pub fn token_stats_json(&self, pools: &[PoolFigures]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"status\":\"ok\",\"stats\":{");
        for (i, (domain, s)) in self.registry.snapshot().into_iter().enumerate() {
            let mut entry = serde_json::json!({
                    "inputTokens": s.input_tokens,
                    "outputTokens": s.output_tokens,
                    "cacheCreationInputTokens": s.cache_creation_input_tokens,
                    "cacheReadInputTokens": s.cache_read_input_tokens,
                    "requestCount": s.requests,
                    "queryEvaluationCount": s.query_evaluations,
                    "inferenceCount": s.inferences,
                    "toolCallCount": s.tool_calls,
                    "errorCount": s.errors,
                    "otherRequestCount": s.other_requests,
                    "unpricedRequestCount": s.unpriced_requests,
                    "lastUpdated": s.last_updated_ms,
            });
            if let Some(rate_limit) = s.rate_limit.to_json() {
                entry["rateLimit"] = rate_limit;
            }
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &domain).expect("a string always serializes");
            out.push(b':');
            serde_json::to_writer(&mut out, &entry).expect("a JSON value always serializes");
            out.pop(); // the entry's closing brace
            if let Ok(i) = pools.binary_search_by(|(d, _)| d.as_str().cmp(domain.as_str())) {
                push_members(&mut out, &pools[i].1);
            }
            out.extend_from_slice(format!(",\"costUsd\":{}}}", s.cost).as_bytes());
        }
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        out.extend_from_slice(format!("}},\"timestamp\":\"{timestamp}\"}}").as_bytes());
        out
    }

    /// The `/metrics` body.
    pub fn metrics_text(&self, pools: &[PoolFigures]) -> String {
        metrics::render(
            &self.registry.snapshot(),
            self.registry.folded_domains(),
            &self.proxy,
            &crate::credentials::counters::COUNTERS.counts(),
            pools,
        )
    }

    /// Starts the thread that prints the console report every `interval` (0: never).
    pub fn start_report(
        self: &std::sync::Arc<Self>,
        interval: Duration,
        started: std::time::Instant,
    ) {
        if interval.is_zero() {
            return;
        }
        let stats = std::sync::Arc::clone(self);
        std::thread::Builder::new()
            .name("nexus-report".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let snapshot = stats.registry.snapshot();
                if let Some(text) =
                    report::render(&snapshot, &report::local_time_now(), started.elapsed())
                {
                    println!("{text}");
                }
            })
            .expect("spawn report thread");
    }
}

/// `,"credentials":{"<id>":{"state":…,"cooldownUntil":…,…},…}`: a domain's pool members.
fn push_members(out: &mut Vec<u8>, members: &[(std::sync::Arc<str>, MemberSnapshot)]) {
    out.extend_from_slice(b",\"credentials\":{");
    for (i, (id, m)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &**id).expect("a string always serializes");
        let until = match m.availability {
            Availability::Cooling(until) => until.to_string(),
            _ => "null".to_string(),
        };
        out.extend_from_slice(
            format!(
                ":{{\"state\":\"{}\",\"cooldownUntil\":{until},\"requestCount\":{},\
                 \"failoverCount\":{},\"inputTokens\":{},\"outputTokens\":{},\"costUsd\":{}}}",
                m.availability.label(),
                m.requests,
                m.failovers.iter().sum::<u64>(),
                m.input_tokens,
                m.output_tokens,
                m.cost
            )
            .as_bytes(),
        );
    }
    out.push(b'}');
}

/// Milliseconds since the Unix epoch, for `lastUpdated`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_stats_carry_the_exact_cost_and_unpriced_count() {
        let stats = Stats::new(10, 1);
        let record = |cost_picos, unpriced| RequestRecord {
            is_messages: true,
            cost_picos,
            unpriced,
            ..RequestRecord::default()
        };
        let a = stats.registry.counters("a.example");
        a.record(&record(u64::MAX, false), 1);
        a.record(&record(u64::MAX, false), 1);
        a.record(&record(0, true), 1);
        stats.registry.counters("b\"x").record(&record(7, false), 1);
        let body = String::from_utf8(stats.token_stats_json(&[])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["stats"]["a.example"]["unpricedRequestCount"], 1);
        assert_eq!(v["stats"]["a.example"]["requestCount"], 3);
        assert_eq!(v["stats"]["b\"x"]["costUsd"].as_f64(), Some(7e-12));
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        // 2 × (2^64 − 1) picodollars, every digit.
        assert!(body.contains("\"costUsd\":36893488.14741910323}"), "{body}");
    }

    #[test]
    fn token_stats_show_each_pool_member() {
        let stats = Stats::new(10, 1);
        stats.registry.counters("a.example");
        let member = |availability, requests| MemberSnapshot {
            availability,
            requests,
            failovers: [1, 1, 0],
            input_tokens: 7,
            output_tokens: 3,
            cost: crate::cost::Usd(1_500_000),
        };
        let pools = [(
            "a.example".to_string(),
            vec![
                ("max-1".into(), member(Availability::Cooling(1234), 2)),
                ("key-2".into(), member(Availability::Ready, 5)),
            ],
        )];
        let body = String::from_utf8(stats.token_stats_json(&pools)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let members = &v["stats"]["a.example"]["credentials"];
        assert_eq!(
            members["max-1"],
            serde_json::json!({"state":"cooling","cooldownUntil":1234,"requestCount":2,
                "failoverCount":2,"inputTokens":7,"outputTokens":3,"costUsd":0.0000015})
        );
        assert_eq!(members["key-2"]["state"], "ready");
        assert_eq!(members["key-2"]["cooldownUntil"], serde_json::Value::Null);
        assert!(body.contains("\"costUsd\":0.0000015}"), "{body}");
    }
}
