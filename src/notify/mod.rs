//! Side channels that never slow a stream: telemetry, Slack, the access log and the
//! `DEBUG=true` trace.
//!
//! A request fills a [`Report`] with what the proxy learns anyway and, when it ends, hands
//! its events to its worker's [`Outbox`]: a bounded queue per sink, drained by tasks on
//! the same runtime over kept-alive connections. Nothing on a client's path waits for a
//! webhook; a full queue or an undeliverable event is dropped and counted in
//! `nexus_notify_dropped_total{sink}`. With Slack off nothing collects text and nothing
//! takes a lock.
//!
//! - [`outbox`]: per-worker queues, delivery with bounded retries, drop accounting;
//! - [`endpoint`]: webhook URLs (delivered by [`crate::client`], kept alive per worker);
//! - [`telemetry`], [`slack`], [`tools`]: what is sent;
//! - [`report`]: the per-request state and the access-log line;
//! - [`redact`], [`trace`]: masking, and the debug trace built on it;
//! - [`logger`]: the `log` backend (timestamp, level, worker).

pub mod endpoint;
pub mod ledger_row;
pub mod logger;
pub mod outbox;
pub mod redact;
pub mod report;
pub mod slack;
pub mod telemetry;
pub mod tools;
pub mod trace;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;

pub use endpoint::Endpoint;
pub use outbox::{Outbox, Sink};
pub use report::Report;

use crate::config::{Config, SlackConfig};
use crate::credentials::file::SlackOverride;
use crate::ledger::Ledger;
use crate::stats::{now_ms, Stats};

/// Drops are logged at most this often per sink (the counter has every one).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);
/// Domains whose last user message is remembered for Slack; past this the memory starts over.
const MAX_REMEMBERED_DOMAINS: usize = 10_000;

/// What every worker's outbox shares: settings, TLS roots, counters.
pub struct Hub {
    telemetry: Option<Arc<Endpoint>>,
    slack: SlackConfig,
    /// `SLACK_WEBHOOK_URL`, parsed once.
    slack_global: Option<Arc<Endpoint>>,
    queue_cap: usize,
    trace: bool,
    tls: Arc<ClientConfig>,
    stats: Arc<Stats>,
    /// Events queued or being delivered, across workers (shutdown waits for this).
    pending: AtomicUsize,
    /// Per sink: when drops were last logged (ms since epoch), and drops since then.
    drop_logged_at: [AtomicU64; 2],
    drops_unlogged: [AtomicU64; 2],
    /// Per domain: a hash of the last user message sent to Slack.
    last_user: Mutex<HashMap<String, u64>>,
    /// The request history: each forwarded request's row goes there when it ends.
    pub ledger: Arc<Ledger>,
}

impl Hub {
    /// Checks the webhook settings and sets up TLS (the upstream's roots and
    /// `UPSTREAM_CA_FILE`). Errors are configuration errors.
    pub fn new(
        config: &Config,
        stats: Arc<Stats>,
        ledger: Arc<Ledger>,
    ) -> Result<Arc<Hub>, String> {
        let parse = |name: &str, url: &Option<String>| -> Result<Option<Arc<Endpoint>>, String> {
            url.as_deref()
                .map(|url| {
                    Endpoint::parse(url)
                        .map(Arc::new)
                        .map_err(|why| format!("invalid {name}: expected {why}"))
                })
                .transpose()
        };
        let telemetry = parse("TELEMETRY_ENDPOINT", &config.telemetry_endpoint)?;
        let slack_global = parse("SLACK_WEBHOOK_URL", &config.slack.webhook_url)?;
        let tls = crate::client::tls::client_config(config.upstream_ca_file.as_deref())?;
        Ok(Arc::new(Hub {
            telemetry,
            slack: config.slack.clone(),
            slack_global,
            queue_cap: config.notify_queue.max(1),
            trace: config.debug && log::log_enabled!(log::Level::Debug),
            tls,
            stats,
            pending: AtomicUsize::new(0),
            drop_logged_at: Default::default(),
            drops_unlogged: Default::default(),
            last_user: Mutex::new(HashMap::new()),
            ledger,
        }))
    }

    /// Events queued or in delivery on all workers.
    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// The telemetry endpoint, if one is set (for the start-up summary).
    pub fn telemetry_endpoint(&self) -> Option<&Endpoint> {
        self.telemetry.as_deref()
    }

    /// Whether a domain's requests go to Slack (no lock, no allocation).
    pub fn slack_enabled(&self, domain: Option<&SlackOverride>) -> bool {
        slack::enabled(domain, &self.slack)
    }

    /// The endpoint for a Slack webhook URL: `SLACK_WEBHOOK_URL`'s parsed once, a
    /// domain's parsed when used.
    fn slack_endpoint(&self, url: &str) -> Result<Arc<Endpoint>, &'static str> {
        match &self.slack_global {
            Some(global) if self.slack.webhook_url.as_deref() == Some(url) => {
                Ok(Arc::clone(global))
            }
            _ => Endpoint::parse(url).map(Arc::new),
        }
    }

    /// Remembers `text` as the domain's last user message; true if it differs from the
    /// one before. Only requests that go to Slack get here.
    fn user_changed(&self, domain: &str, text: &str) -> bool {
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        let mut last = self.last_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = last.get_mut(domain) {
            return std::mem::replace(seen, hash) != hash;
        }
        if last.len() >= MAX_REMEMBERED_DOMAINS {
            last.clear();
        }
        last.insert(domain.to_string(), hash);
        true
    }

    fn pending_add(&self) {
        self.pending.fetch_add(1, Relaxed);
    }

    fn pending_done(&self) {
        self.pending.fetch_sub(1, Relaxed);
    }

    /// Counts a dropped event and says so, at most once a minute per sink.
    fn dropped(&self, sink: Sink, why: &str) {
        let proxy = &self.stats.proxy;
        match sink {
            Sink::Telemetry => &proxy.notify_dropped_telemetry,
            Sink::Slack => &proxy.notify_dropped_slack,
        }
        .fetch_add(1, Relaxed);
        let i = sink as usize;
        self.drops_unlogged[i].fetch_add(1, Relaxed);
        let now = now_ms();
        let last = self.drop_logged_at[i].load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= DROP_LOG_EVERY.as_millis() as u64;
        if due
            && self.drop_logged_at[i]
                .compare_exchange(last, now.max(1), Relaxed, Relaxed)
                .is_ok()
        {
            let count = self.drops_unlogged[i].swap(0, Relaxed).max(1);
            log::warn!(
                "{}: dropped {count} event(s) since the last report; latest because {why} \
                 (nexus_notify_dropped_total counts them all; next report in a minute at the earliest)",
                sink.name()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> Arc<Ledger> {
        let dir = std::env::temp_dir();
        let env = |name: &str| (name == "NEXUS_DB").then(|| "off".to_string());
        let config = Config::load(&crate::config::Cli::default(), &env, &dir).unwrap();
        Ledger::start(&config, |b| b.to_vec())
    }

    fn hub(queue: usize) -> Arc<Hub> {
        let dir = std::env::temp_dir();
        let env = |name: &str| match name {
            "TELEMETRY_ENDPOINT" => Some("http://127.0.0.1:9/t".to_string()),
            "NEXUS_NOTIFY_QUEUE" => Some(queue.to_string()),
            _ => None,
        };
        let config = Config::load(&crate::config::Cli::default(), &env, &dir).unwrap();
        Hub::new(&config, Arc::new(Stats::new(10, 1)), off()).unwrap()
    }

    #[test]
    fn user_messages_are_remembered_per_domain() {
        let hub = hub(10);
        assert!(hub.user_changed("a", "hello"));
        assert!(!hub.user_changed("a", "hello"));
        assert!(hub.user_changed("b", "hello"), "another domain");
        assert!(hub.user_changed("a", "hello again"));
        assert!(hub.user_changed("a", "hello"));
    }

    #[test]
    fn drops_are_counted_every_time() {
        let hub = hub(10);
        for _ in 0..5 {
            hub.dropped(Sink::Telemetry, "test");
        }
        hub.dropped(Sink::Slack, "test");
        assert_eq!(hub.stats.proxy.notify_dropped_telemetry.load(Relaxed), 5);
        assert_eq!(hub.stats.proxy.notify_dropped_slack.load(Relaxed), 1);
    }

    #[test]
    fn invalid_webhook_urls_stop_start_up_without_echoing_them() {
        let dir = std::env::temp_dir();
        let env = |name: &str| {
            (name == "SLACK_WEBHOOK_URL").then(|| "hooks.slack.com/services/SECRET".to_string())
        };
        let config = Config::load(&crate::config::Cli::default(), &env, &dir).unwrap();
        let err = Hub::new(&config, Arc::new(Stats::new(10, 1)), off())
            .err()
            .unwrap();
        assert!(
            err.contains("SLACK_WEBHOOK_URL") && !err.contains("SECRET"),
            "{err}"
        );
    }
}
