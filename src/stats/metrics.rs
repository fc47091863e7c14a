//! Proxy-wide metrics (histograms, connection gauges) and the `/metrics` exposition.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::ratelimit::RateLimitSnapshot;
use super::registry::DomainSnapshot;
use crate::credentials::counters::Counts as CredentialCounts;
use crate::credentials::member_state::{Availability, FailoverReason};
use crate::credentials::PoolFigures;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// A fixed-bucket histogram of durations with one writer (a worker's shard of
/// [`Latency`]); any thread may read it.
#[derive(Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Adds one observation. Only the histogram's one writer calls this: a plain load and
    /// store, no locked read-modify-write.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        let add = |counter: &AtomicU64, n: u64| counter.store(counter.load(Relaxed) + n, Relaxed);
        add(&self.buckets[slot], 1);
        add(&self.count, 1);
        add(&self.sum_micros, d.as_micros() as u64);
    }

    /// Writes the histogram in the Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        render_histogram(out, std::iter::once(self), name, help);
    }
}

/// One worker's latency histograms, on cache lines of their own.
#[derive(Default)]
#[repr(align(64))]
pub struct Latency {
    /// Request head received → response fully relayed.
    pub request_duration: Histogram,
    /// The same minus the time spent waiting on the upstream: what the proxy adds.
    pub proxy_overhead: Histogram,
}

/// Renders one histogram summed over the workers' shards.
fn render_histogram<'a>(
    out: &mut String,
    shards: impl Iterator<Item = &'a Histogram> + Clone,
    name: &str,
    help: &str,
) {
    let sum = |f: &dyn Fn(&Histogram) -> &AtomicU64| -> u64 {
        shards.clone().map(|h| f(h).load(Relaxed)).sum()
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative += sum(&|h| &h.buckets[i]);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += sum(&|h| &h.buckets[BUCKETS.len()]);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", sum(&|h| &h.sum_micros) as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", sum(&|h| &h.count));
}

/// Counters and gauges about the proxy itself rather than a domain.
pub struct ProxyMetrics {
    pub open_connections: AtomicI64,
    pub upstream_connections_opened: AtomicU64,
    pub upstream_connections_reused: AtomicU64,
    /// Requests sent again on a new connection: the pooled one was closed unread.
    pub upstream_retries: AtomicU64,
    pub notify_dropped_telemetry: AtomicU64,
    pub notify_dropped_slack: AtomicU64,
    /// Each worker's latency histograms, summed when scraped: a request touches only its
    /// own worker's cache lines.
    latency: Box<[Latency]>,
}

impl ProxyMetrics {
    /// Metrics for `workers` workers.
    pub fn new(workers: usize) -> ProxyMetrics {
        ProxyMetrics {
            open_connections: AtomicI64::default(),
            upstream_connections_opened: AtomicU64::default(),
            upstream_connections_reused: AtomicU64::default(),
            upstream_retries: AtomicU64::default(),
            notify_dropped_telemetry: AtomicU64::default(),
            notify_dropped_slack: AtomicU64::default(),
            latency: (0..workers.max(1)).map(|_| Latency::default()).collect(),
        }
    }

    /// The latency histograms worker `worker` writes (and no other).
    pub fn latency(&self, worker: usize) -> &Latency {
        &self.latency[worker % self.latency.len()]
    }
}

impl Default for ProxyMetrics {
    fn default() -> ProxyMetrics {
        ProxyMetrics::new(1)
    }
}

/// Renders the Prometheus text exposition (format 0.0.4).
pub fn render(
    domains: &[(String, DomainSnapshot)],
    folded_domains: u64,
    proxy: &ProxyMetrics,
    credentials: &CredentialCounts,
    pools: &[PoolFigures],
) -> String {
    let mut out = String::with_capacity(4096 + domains.len() * 1024);
    let _ = writeln!(
        out,
        "# HELP nexus_build_info Build information.\n# TYPE nexus_build_info gauge\n\
         nexus_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    family(
        &mut out,
        "nexus_requests_total",
        "Requests forwarded, by domain and endpoint.",
        "counter",
    );
    for (domain, s) in domains {
        let d = escape(domain);
        let _ = writeln!(
            out,
            "nexus_requests_total{{domain=\"{d}\",endpoint=\"messages\"}} {}",
            s.requests
        );
        let _ = writeln!(
            out,
            "nexus_requests_total{{domain=\"{d}\",endpoint=\"other\"}} {}",
            s.other_requests
        );
    }
    family(
        &mut out,
        "nexus_tokens_total",
        "Tokens counted in responses, by domain and kind.",
        "counter",
    );
    for (domain, s) in domains {
        let d = escape(domain);
        for (kind, n) in [
            ("input", s.input_tokens),
            ("output", s.output_tokens),
            ("cache_creation", s.cache_creation_input_tokens),
            ("cache_read", s.cache_read_input_tokens),
        ] {
            let _ = writeln!(
                out,
                "nexus_tokens_total{{domain=\"{d}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    type Family = (&'static str, &'static str, fn(&DomainSnapshot) -> u64);
    let per_domain: [Family; 4] = [
        (
            "nexus_query_evaluations_total",
            "Requests with exactly one system prompt.",
            |s| s.query_evaluations,
        ),
        (
            "nexus_inferences_total",
            "Requests with more than one system prompt.",
            |s| s.inferences,
        ),
        (
            "nexus_tool_calls_total",
            "tool_use blocks in responses.",
            |s| s.tool_calls,
        ),
        (
            "nexus_errors_total",
            "Requests that ended in an error.",
            |s| s.errors,
        ),
    ];
    for (name, help, get) in per_domain {
        family(&mut out, name, help, "counter");
        for (domain, s) in domains {
            let _ = writeln!(out, "{name}{{domain=\"{}\"}} {}", escape(domain), get(s));
        }
    }
    family(
        &mut out,
        "nexus_cost_usd_total",
        "What the priced requests cost in USD, by the pricing table (exact decimal).",
        "counter",
    );
    for (domain, s) in domains {
        let _ = writeln!(
            out,
            "nexus_cost_usd_total{{domain=\"{}\"}} {}",
            escape(domain),
            s.cost
        );
    }
    family(
        &mut out,
        "nexus_unpriced_requests_total",
        "Requests with usage whose model the pricing table does not know.",
        "counter",
    );
    for (domain, s) in domains {
        let _ = writeln!(
            out,
            "nexus_unpriced_requests_total{{domain=\"{}\"}} {}",
            escape(domain),
            s.unpriced_requests
        );
    }
    render_rate_limits(&mut out, domains);
    single(
        &mut out,
        "nexus_domains_folded_total",
        "Domains counted under \"other\" past NEXUS_MAX_DOMAINS.",
        "counter",
        folded_domains as i64,
    );
    single(
        &mut out,
        "nexus_open_connections",
        "Client connections open now.",
        "gauge",
        proxy.open_connections.load(Relaxed),
    );
    single(
        &mut out,
        "nexus_upstream_connections_opened_total",
        "Upstream connections opened.",
        "counter",
        proxy.upstream_connections_opened.load(Relaxed) as i64,
    );
    single(
        &mut out,
        "nexus_upstream_connections_reused_total",
        "Requests sent on a pooled upstream connection.",
        "counter",
        proxy.upstream_connections_reused.load(Relaxed) as i64,
    );
    single(
        &mut out,
        "nexus_upstream_retries_total",
        "Requests sent again on a new connection because the pooled one was closed with \
         the request provably unread.",
        "counter",
        proxy.upstream_retries.load(Relaxed) as i64,
    );
    family(
        &mut out,
        "nexus_notify_dropped_total",
        "Side-channel events dropped (queue full or undeliverable).",
        "counter",
    );
    let _ = writeln!(
        out,
        "nexus_notify_dropped_total{{sink=\"telemetry\"}} {}",
        proxy.notify_dropped_telemetry.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "nexus_notify_dropped_total{{sink=\"slack\"}} {}",
        proxy.notify_dropped_slack.load(Relaxed)
    );
    render_credentials(&mut out, credentials);
    render_members(&mut out, pools);
    render_histogram(
        &mut out,
        proxy.latency.iter().map(|l| &l.request_duration),
        "nexus_request_duration_seconds",
        "Time from request head to the end of the response.",
    );
    render_histogram(
        &mut out,
        proxy.latency.iter().map(|l| &l.proxy_overhead),
        "nexus_proxy_overhead_seconds",
        "Request duration minus time waiting on the upstream.",
    );
    out
}

/// What the credential scanner and the OAuth refresher have done.
fn render_credentials(out: &mut String, c: &CredentialCounts) {
    let counters: [(&str, &str, u64); 3] = [
        (
            "nexus_credential_scans_total",
            "Scans of CREDENTIALS_DIR finished (every file re-read, changes published).",
            c.scans,
        ),
        (
            "nexus_oauth_refresh_checks_total",
            "Passes of the OAuth refresh scheduler over every credential finished.",
            c.refresh_checks,
        ),
        (
            "nexus_oauth_refresh_attempts_total",
            "OAuth refresh jobs started (at most one per credential at a time).",
            c.refresh_attempts,
        ),
    ];
    for (name, help, value) in counters {
        single(out, name, help, "counter", value as i64);
    }
    single(
        out,
        "nexus_oauth_refresh_waiting_requests",
        "Requests waiting now for an OAuth token to be refreshed.",
        "gauge",
        c.refresh_waiting,
    );
}

/// Each pool member's requests, failovers and cooldown.
fn render_members(out: &mut String, pools: &[PoolFigures]) {
    let members = || {
        pools.iter().flat_map(|(domain, members)| {
            members
                .iter()
                .map(move |(id, m)| (escape(domain), escape(id), m))
        })
    };
    family(
        out,
        "nexus_credential_requests_total",
        "Requests sent upstream with a domain file's credential, by pool member.",
        "counter",
    );
    for (d, c, m) in members() {
        let _ = writeln!(
            out,
            "nexus_credential_requests_total{{domain=\"{d}\",credential=\"{c}\"}} {}",
            m.requests
        );
    }
    family(
        out,
        "nexus_credential_failovers_total",
        "Requests a pool member's answer sent on to another member, by reason.",
        "counter",
    );
    for (d, c, m) in members() {
        for reason in FailoverReason::ALL {
            let _ = writeln!(
                out,
                "nexus_credential_failovers_total{{domain=\"{d}\",credential=\"{c}\",reason=\"{}\"}} {}",
                reason.label(),
                m.failovers[reason.index()]
            );
        }
    }
    family(
        out,
        "nexus_credential_cooling",
        "1 while a pool member rests after a rate limit or overload, else 0.",
        "gauge",
    );
    for (d, c, m) in members() {
        let cooling = matches!(m.availability, Availability::Cooling(_)) as u8;
        let _ = writeln!(
            out,
            "nexus_credential_cooling{{domain=\"{d}\",credential=\"{c}\"}} {cooling}"
        );
    }
}

/// Gauges of the last rate-limit headers seen per domain (only figures ever seen).
fn render_rate_limits(out: &mut String, domains: &[(String, DomainSnapshot)]) {
    use super::ratelimit::{KINDS, STATUSES, WINDOWS};
    type Pick = fn(&RateLimitSnapshot, usize) -> Option<u64>;
    let per_kind: [(&str, &str, Pick); 3] = [
        (
            "nexus_ratelimit_limit",
            "Last anthropic-ratelimit-*-limit seen.",
            |r, i| r.limit[i],
        ),
        (
            "nexus_ratelimit_remaining",
            "Last anthropic-ratelimit-*-remaining seen.",
            |r, i| r.remaining[i],
        ),
        (
            "nexus_ratelimit_reset_timestamp_seconds",
            "Last anthropic-ratelimit-*-reset seen, as Unix time.",
            |r, i| r.reset[i],
        ),
    ];
    for (name, help, pick) in per_kind {
        family(out, name, help, "gauge");
        for (domain, s) in domains {
            for (i, kind) in KINDS.iter().enumerate() {
                if let Some(v) = pick(&s.rate_limit, i) {
                    let kind = kind.replace('-', "_");
                    let _ = writeln!(
                        out,
                        "{name}{{domain=\"{}\",kind=\"{kind}\"}} {v}",
                        escape(domain)
                    );
                }
            }
        }
    }
    family(
        out,
        "nexus_ratelimit_unified_utilization",
        "Subscription window utilization (0-1) from anthropic-ratelimit-unified-*.",
        "gauge",
    );
    for (domain, s) in domains {
        for (i, window) in WINDOWS.iter().enumerate() {
            if let Some(v) = s.rate_limit.unified_utilization[i] {
                let _ = writeln!(
                    out,
                    "nexus_ratelimit_unified_utilization{{domain=\"{}\",window=\"{window}\"}} {v}",
                    escape(domain)
                );
            }
        }
    }
    family(
        out,
        "nexus_ratelimit_unified_rejected",
        "1 when the last unified status was rejected, 0.5 for allowed_warning, 0 for allowed.",
        "gauge",
    );
    for (domain, s) in domains {
        if let Some(status) = s.rate_limit.unified_status {
            let level = STATUSES.iter().position(|x| *x == status).unwrap_or(0) as f64 / 2.0;
            let _ = writeln!(
                out,
                "nexus_ratelimit_unified_rejected{{domain=\"{}\"}} {level}",
                escape(domain)
            );
        }
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, help: &str, kind: &str, value: i64) {
    family(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let proxy = ProxyMetrics::default();
        proxy
            .latency(0)
            .request_duration
            .observe(Duration::from_micros(50));
        proxy
            .latency(0)
            .request_duration
            .observe(Duration::from_millis(3));
        proxy
            .latency(0)
            .request_duration
            .observe(Duration::from_secs(1000));
        let text = render(&[], 0, &proxy, &CredentialCounts::default(), &[]);
        assert!(text.contains("nexus_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("nexus_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("nexus_request_duration_seconds_bucket{le=\"600\"} 2\n"));
        assert!(text.contains("nexus_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("nexus_request_duration_seconds_count 3\n"));
    }

    #[test]
    fn domains_are_labelled() {
        let s = DomainSnapshot {
            requests: 3,
            input_tokens: 10,
            cost: crate::cost::Usd(1_000_000_000_000_000_001),
            unpriced_requests: 2,
            ..Default::default()
        };
        let text = render(
            &[("a\"b".into(), s)],
            1,
            &ProxyMetrics::default(),
            &CredentialCounts::default(),
            &[],
        );
        assert!(text.contains("nexus_requests_total{domain=\"a\\\"b\",endpoint=\"messages\"} 3\n"));
        assert!(text.contains("nexus_tokens_total{domain=\"a\\\"b\",kind=\"input\"} 10\n"));
        assert!(text.contains("nexus_domains_folded_total 1\n"));
        assert!(text.contains("nexus_cost_usd_total{domain=\"a\\\"b\"} 1000000.000000000001\n"));
        assert!(text.contains("nexus_unpriced_requests_total{domain=\"a\\\"b\"} 2\n"));
    }

    #[test]
    fn pool_members_are_labelled() {
        let member = crate::credentials::member_state::MemberSnapshot {
            availability: Availability::Cooling(5),
            requests: 4,
            failovers: [2, 0, 1],
            input_tokens: 0,
            output_tokens: 0,
            cost: crate::cost::Usd(0),
        };
        let pools = [("a.example".to_string(), vec![("max-1".into(), member)])];
        let text = render(
            &[],
            0,
            &ProxyMetrics::default(),
            &CredentialCounts::default(),
            &pools,
        );
        for line in [
            "nexus_credential_requests_total{domain=\"a.example\",credential=\"max-1\"} 4\n",
            "nexus_credential_failovers_total{domain=\"a.example\",credential=\"max-1\",reason=\"rate_limit\"} 2\n",
            "nexus_credential_failovers_total{domain=\"a.example\",credential=\"max-1\",reason=\"refused\"} 1\n",
            "nexus_credential_cooling{domain=\"a.example\",credential=\"max-1\"} 1\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }

    #[test]
    fn credential_counters_are_rendered() {
        let counts = CredentialCounts {
            scans: 7,
            refresh_checks: 3,
            refresh_attempts: 1,
            refresh_waiting: 2,
        };
        let text = render(&[], 0, &ProxyMetrics::default(), &counts, &[]);
        assert!(text.contains("nexus_credential_scans_total 7\n"));
        assert!(text.contains("nexus_oauth_refresh_checks_total 3\n"));
        assert!(text.contains("nexus_oauth_refresh_attempts_total 1\n"));
        assert!(text.contains("nexus_oauth_refresh_waiting_requests 2\n"));
    }
}
