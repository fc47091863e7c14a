//! Per-domain counters: atomics in a registry that locks only when a new domain appears.
//!
//! Workers keep their own map from domain to counters, so after a domain's first request
//! on a worker, recording costs a local hash lookup and a few relaxed atomic adds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::ratelimit::{RateLimitGauges, RateLimitSnapshot};
use crate::cost::Usd;

/// Picodollars in a micro-dollar: a domain's cost is kept as whole micro-dollars plus a
/// remainder in picodollars, so the sum is exact and cannot wrap (one u64 of picodollars
/// would at 18 million dollars).
const PICOS_PER_MICRO: u64 = 1_000_000;

/// Where requests with a Host that is not a valid host name are counted.
pub const INVALID_HOST: &str = "invalid-host";
/// Where requests from domains beyond `NEXUS_MAX_DOMAINS` are counted.
pub const OTHER: &str = "other";
/// Where requests without any Host (HTTP/1.0) are counted.
pub const NO_HOST: &str = "no-host";

/// One domain's counters.
#[derive(Default, Debug)]
pub struct DomainCounters {
    /// `POST /v1/messages` requests (the ones whose tokens are counted).
    pub requests: AtomicU64,
    /// Other `/v1/*` requests (count_tokens, models, batches, …).
    pub other_requests: AtomicU64,
    pub query_evaluations: AtomicU64,
    pub inferences: AtomicU64,
    pub tool_calls: AtomicU64,
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
    pub cache_creation_input_tokens: AtomicU64,
    pub cache_read_input_tokens: AtomicU64,
    /// Requests that ended in an error status, an error event, or a broken stream.
    pub errors: AtomicU64,
    /// What the priced requests cost: whole micro-dollars, and the picodollars beyond
    /// them (each request adds less than a micro-dollar here, so it never wraps).
    pub cost_micros: AtomicU64,
    pub cost_picos: AtomicU64,
    /// Requests with usage whose model the pricing table does not know.
    pub unpriced_requests: AtomicU64,
    /// Milliseconds since the Unix epoch of the last recorded request.
    pub last_updated_ms: AtomicU64,
    /// The last rate-limit figures the upstream sent for this domain.
    pub rate_limit: RateLimitGauges,
}

/// What one finished request adds to its domain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// A `POST /v1/messages` (tokens and classification count) or another `/v1/*` call.
    pub is_messages: bool,
    pub query_evaluation: bool,
    pub inference: bool,
    pub tool_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// Of the cache writes, those with the 5-minute and the 1-hour lifetime.
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub web_search_requests: u64,
    pub error: bool,
    /// What the request cost, in picodollars (set when it ends: `Meter::price`).
    pub cost_picos: u64,
    /// It used tokens but its model has no price: its cost is unknown, not zero.
    pub unpriced: bool,
}

impl RequestRecord {
    /// The request's usage, as the pricing table reads it.
    pub fn usage(&self) -> crate::usage::Usage {
        crate::usage::Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cache_creation_5m_input_tokens: self.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens: self.cache_creation_1h_input_tokens,
            web_search_requests: self.web_search_requests,
        }
    }

    /// What the request cost, when it was priced.
    pub fn cost(&self) -> Option<Usd> {
        (!self.unpriced).then(|| Usd::from_picos(self.cost_picos))
    }
}

impl DomainCounters {
    /// Adds a finished request.
    pub fn record(&self, r: &RequestRecord, now_ms: u64) {
        if r.is_messages {
            self.requests.fetch_add(1, Relaxed);
            self.query_evaluations
                .fetch_add(r.query_evaluation as u64, Relaxed);
            self.inferences.fetch_add(r.inference as u64, Relaxed);
            self.tool_calls.fetch_add(r.tool_calls, Relaxed);
            self.input_tokens.fetch_add(r.input_tokens, Relaxed);
            self.output_tokens.fetch_add(r.output_tokens, Relaxed);
            self.cache_creation_input_tokens
                .fetch_add(r.cache_creation_input_tokens, Relaxed);
            self.cache_read_input_tokens
                .fetch_add(r.cache_read_input_tokens, Relaxed);
            if r.cost_picos != 0 {
                self.cost_micros
                    .fetch_add(r.cost_picos / PICOS_PER_MICRO, Relaxed);
                self.cost_picos
                    .fetch_add(r.cost_picos % PICOS_PER_MICRO, Relaxed);
            }
            self.unpriced_requests.fetch_add(r.unpriced as u64, Relaxed);
        } else {
            self.other_requests.fetch_add(1, Relaxed);
        }
        self.errors.fetch_add(r.error as u64, Relaxed);
        self.last_updated_ms.fetch_max(now_ms, Relaxed);
    }

    /// A plain copy of the counters.
    pub fn read(&self) -> DomainSnapshot {
        DomainSnapshot {
            requests: self.requests.load(Relaxed),
            other_requests: self.other_requests.load(Relaxed),
            query_evaluations: self.query_evaluations.load(Relaxed),
            inferences: self.inferences.load(Relaxed),
            tool_calls: self.tool_calls.load(Relaxed),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
            cache_creation_input_tokens: self.cache_creation_input_tokens.load(Relaxed),
            cache_read_input_tokens: self.cache_read_input_tokens.load(Relaxed),
            errors: self.errors.load(Relaxed),
            cost: Usd(
                u128::from(self.cost_micros.load(Relaxed)) * u128::from(PICOS_PER_MICRO)
                    + u128::from(self.cost_picos.load(Relaxed)),
            ),
            unpriced_requests: self.unpriced_requests.load(Relaxed),
            last_updated_ms: self.last_updated_ms.load(Relaxed),
            rate_limit: self.rate_limit.read(),
        }
    }
}

/// A domain's counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct DomainSnapshot {
    pub requests: u64,
    pub other_requests: u64,
    pub query_evaluations: u64,
    pub inferences: u64,
    pub tool_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub errors: u64,
    /// What the domain's priced requests cost, exactly.
    pub cost: Usd,
    pub unpriced_requests: u64,
    pub last_updated_ms: u64,
    pub rate_limit: RateLimitSnapshot,
}

/// All domains' counters, capped in number.
pub struct StatsRegistry {
    domains: RwLock<HashMap<String, Arc<DomainCounters>>>,
    max_domains: usize,
    /// Distinct domains counted under [`OTHER`] because the cap was reached.
    folded_domains: AtomicU64,
}

impl StatsRegistry {
    /// A registry that tracks at most `max_domains` domains by name.
    pub fn new(max_domains: usize) -> Self {
        StatsRegistry {
            domains: RwLock::new(HashMap::new()),
            max_domains,
            folded_domains: AtomicU64::new(0),
        }
    }

    /// The counters for `domain`, creating them (or folding into [`OTHER`]) on first sight.
    pub fn counters(&self, domain: &str) -> Arc<DomainCounters> {
        if let Some(c) = self
            .domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
        {
            return Arc::clone(c);
        }
        let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = domains.get(domain) {
            return Arc::clone(c);
        }
        let named = domains.keys().filter(|d| !is_bucket(d)).count();
        let name = if is_bucket(domain) || named < self.max_domains {
            domain
        } else {
            self.folded_domains.fetch_add(1, Relaxed);
            OTHER
        };
        Arc::clone(domains.entry(name.to_string()).or_default())
    }

    /// Every domain's counters, sorted by domain.
    pub fn snapshot(&self) -> Vec<(String, DomainSnapshot)> {
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = domains.iter().map(|(d, c)| (d.clone(), c.read())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many distinct domains were folded into [`OTHER`].
    pub fn folded_domains(&self) -> u64 {
        self.folded_domains.load(Relaxed)
    }
}

fn is_bucket(domain: &str) -> bool {
    domain == INVALID_HOST || domain == OTHER || domain == NO_HOST
}

/// A worker's cache of counters by domain, so the shared lock is taken once per domain.
/// A folded domain is cached as [`OTHER`]'s counters, so it is folded once, not per request.
#[derive(Default)]
pub struct LocalCounters(RefCell<HashMap<String, Arc<DomainCounters>>>);

impl LocalCounters {
    /// The counters for `domain`.
    pub fn get(&self, registry: &StatsRegistry, domain: &str) -> Arc<DomainCounters> {
        if let Some(c) = self.0.borrow().get(domain) {
            return Arc::clone(c);
        }
        let counters = registry.counters(domain);
        let mut cache = self.0.borrow_mut();
        // Bounded like the registry: a client inventing hosts cannot grow a worker's cache.
        if cache.len() < registry.max_domains + 3 {
            cache.insert(domain.to_string(), Arc::clone(&counters));
        }
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_sum_exactly_past_what_a_u64_of_picodollars_holds() {
        let c = DomainCounters::default();
        let costly = RequestRecord {
            is_messages: true,
            cost_picos: u64::MAX,
            ..Default::default()
        };
        for _ in 0..3 {
            c.record(&costly, 0);
        }
        c.record(
            &RequestRecord {
                is_messages: true,
                unpriced: true,
                ..Default::default()
            },
            0,
        );
        let s = c.read();
        assert_eq!(s.cost, Usd(3 * u128::from(u64::MAX)));
        assert_eq!(s.unpriced_requests, 1);
    }

    #[test]
    fn records_and_caps() {
        let registry = StatsRegistry::new(2);
        let local = LocalCounters::default();
        let record = RequestRecord {
            is_messages: true,
            inference: true,
            tool_calls: 2,
            input_tokens: 10,
            output_tokens: 5,
            cache_read_input_tokens: 7,
            cost_picos: 1_234_567,
            ..Default::default()
        };
        local.get(&registry, "a.com").record(&record, 1000);
        local.get(&registry, "a.com").record(
            &RequestRecord {
                error: true,
                ..Default::default()
            },
            2000,
        );
        local.get(&registry, "b.com").record(&record, 1000);
        local.get(&registry, "c.com").record(&record, 1000);
        local.get(&registry, "d.com").record(&record, 1000);
        local.get(&registry, INVALID_HOST).record(&record, 1000);
        let snap: HashMap<_, _> = registry.snapshot().into_iter().collect();
        let a = snap["a.com"];
        assert_eq!(
            (a.requests, a.other_requests, a.inferences, a.tool_calls),
            (1, 1, 1, 2)
        );
        assert_eq!(
            (
                a.input_tokens,
                a.output_tokens,
                a.cache_read_input_tokens,
                a.errors
            ),
            (10, 5, 7, 1)
        );
        assert_eq!(a.last_updated_ms, 2000);
        assert_eq!(a.cost, Usd(1_234_567));
        assert_eq!(a.unpriced_requests, 0);
        assert_eq!(snap[OTHER].requests, 2, "c.com and d.com folded");
        assert_eq!(registry.folded_domains(), 2);
        assert_eq!(
            snap[INVALID_HOST].requests, 1,
            "buckets do not count against the cap"
        );
        assert_eq!(snap.len(), 4);
    }
}
