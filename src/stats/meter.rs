//! Per-request accounting that records itself when the request ends, however it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{DomainCounters, RequestRecord};
use super::{now_ms, ProxyMetrics};

/// Accumulates what one request cost; recorded on drop, so an error return, a client
/// leaving or a broken upstream are all counted with what was seen so far.
pub struct Meter<'a> {
    counters: Arc<DomainCounters>,
    proxy: &'a ProxyMetrics,
    started: Instant,
    upstream_wait: Duration,
    /// Starts as an error; the success path clears it.
    pub record: RequestRecord,
}

impl<'a> Meter<'a> {
    /// Starts metering a request for the domain `counters` belong to.
    pub fn start(
        counters: Arc<DomainCounters>,
        proxy: &'a ProxyMetrics,
        is_messages: bool,
    ) -> Self {
        Meter {
            counters,
            proxy,
            started: Instant::now(),
            upstream_wait: Duration::ZERO,
            record: RequestRecord {
                is_messages,
                error: true,
                ..Default::default()
            },
        }
    }

    /// The domain's counters.
    pub fn counters(&self) -> &Arc<DomainCounters> {
        &self.counters
    }

    /// Adds time spent waiting on the upstream (connect, response head, body reads).
    pub fn waited_on_upstream(&mut self, since: Instant) {
        self.upstream_wait += since.elapsed();
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        let total = self.started.elapsed();
        self.proxy.request_duration.observe(total);
        self.proxy
            .proxy_overhead
            .observe(total.saturating_sub(self.upstream_wait));
        self.counters.record(&self.record, now_ms());
    }
}
