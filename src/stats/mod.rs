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

/// Everything counted, shared by all workers.
pub struct Stats {
    pub registry: StatsRegistry,
    pub proxy: ProxyMetrics,
}

impl Stats {
    pub fn new(max_domains: usize) -> Self {
        Stats {
            registry: StatsRegistry::new(max_domains),
            proxy: ProxyMetrics::default(),
        }
    }

    /// The `/token-stats` body (shape fixed by DESIGN.md; `errorCount` and
    /// `otherRequestCount` are additions).
    pub fn token_stats_json(&self) -> Vec<u8> {
        let mut stats = serde_json::Map::new();
        for (domain, s) in self.registry.snapshot() {
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
                    "lastUpdated": s.last_updated_ms,
            });
            if let Some(rate_limit) = s.rate_limit.to_json() {
                entry["rateLimit"] = rate_limit;
            }
            stats.insert(domain, entry);
        }
        let body = serde_json::json!({
            "status": "ok",
            "stats": stats,
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        serde_json::to_vec(&body).expect("a JSON value always serializes")
    }

    /// The `/metrics` body.
    pub fn metrics_text(&self) -> String {
        metrics::render(
            &self.registry.snapshot(),
            self.registry.folded_domains(),
            &self.proxy,
            &crate::credentials::counters::COUNTERS.counts(),
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

/// Milliseconds since the Unix epoch, for `lastUpdated`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
