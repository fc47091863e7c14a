//! Whether an origin has been reachable lately, from the outcomes of connect attempts.
//!
//! The rule (also in the README): an origin is unreachable when at least one connect to
//! it was attempted in the last [`RECENT`] and every attempt in that window failed. A
//! success clears it at once; with no attempts at all there is no evidence either way,
//! so it is reachable. Connects happen only when no pooled connection is free, so this
//! costs two atomic stores per new connection and nothing per request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How far back connect attempts count.
pub const RECENT: Duration = Duration::from_secs(60);

/// Connect outcomes of one origin, shared by every worker.
#[derive(Default)]
pub struct ConnectHealth {
    /// Milliseconds since [`epoch`] (0 = never) of the last success and failure.
    last_ok: AtomicU64,
    last_failure: AtomicU64,
    /// Failures since the last success.
    failures: AtomicU64,
    /// What the last failure said.
    last_error: Mutex<String>,
}

impl ConnectHealth {
    /// Records a connection opened.
    pub fn succeeded(&self) {
        self.last_ok.store(now(), Relaxed);
        self.failures.store(0, Relaxed);
    }

    /// Records a connect attempt that failed, and why.
    pub fn failed(&self, why: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = why.to_string();
        self.failures.fetch_add(1, Relaxed);
        self.last_failure.store(now(), Relaxed);
    }

    /// Why the origin counts as unreachable, or `None` when it does not.
    pub fn problem(&self) -> Option<String> {
        let now = now();
        let recent = |at: u64| at != 0 && now.saturating_sub(at) < RECENT.as_millis() as u64;
        if !recent(self.last_failure.load(Relaxed)) || recent(self.last_ok.load(Relaxed)) {
            return None;
        }
        let failures = self.failures.load(Relaxed);
        let why = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(format!(
            "every connect in the last {}s failed ({failures} since the last success; latest: {why})",
            RECENT.as_secs()
        ))
    }
}

/// Milliseconds since the first call, plus one so that 0 can mean "never".
fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachable_until_all_recent_connects_fail() {
        let health = ConnectHealth::default();
        assert_eq!(health.problem(), None, "no attempts: no evidence");
        health.succeeded();
        health.failed("connection refused");
        assert_eq!(health.problem(), None, "a success in the window");
        let fresh = ConnectHealth::default();
        fresh.failed("connection refused");
        fresh.failed("connection reset");
        let why = fresh.problem().expect("all recent attempts failed");
        assert!(
            why.contains("2 since") && why.contains("connection reset"),
            "{why}"
        );
        fresh.succeeded();
        assert_eq!(fresh.problem(), None, "a success clears it");
    }
}
