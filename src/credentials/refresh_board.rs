//! What waiting requests and the OAuth refresher tell each other: which members are being
//! refreshed in this process, a wake-up call for the scheduler, and how long a request may
//! wait. It lives in the store, so a request needs nothing but the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Shared between requests (who ask and look) and the refresher (who answers).
#[derive(Default)]
pub(crate) struct RefreshBoard {
    /// Members ([`RefreshBoard::key`]) with a refresh job running in this process.
    in_flight: Mutex<HashSet<String>>,
    /// Members to refresh before they are due, because the upstream refused this access
    /// token of theirs (401/403).
    forced: Mutex<HashMap<String, String>>,
    /// Set by a request that needs a refresh now; wakes the scheduler.
    wanted: Mutex<bool>,
    wake: Condvar,
    /// Set once, when a refresher starts; unset means nobody refreshes.
    wait_limit: OnceLock<Duration>,
}

impl RefreshBoard {
    /// How the board names member `id` of `domain` (neither can hold a `/`).
    pub(crate) fn key(domain: &str, id: &str) -> String {
        format!("{domain}/{id}")
    }

    /// Asks the scheduler to look for due credentials now (a request is waiting).
    pub(crate) fn demand(&self) {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Whether a refresh of member `key` is running in this process.
    pub(crate) fn is_refreshing(&self, key: &str) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Asks for member `key` to be refreshed now: the upstream refused `access_token`.
    pub(crate) fn force(&self, key: &str, access_token: &str) {
        self.forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), access_token.to_string());
        self.demand();
    }

    /// Whether member `key` is to be refreshed now while it holds `access_token` (a token
    /// that differs was refreshed since it was refused).
    pub(crate) fn is_forced(&self, key: &str, access_token: &str) -> bool {
        self.forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|refused| refused == access_token)
    }

    /// Drops the request for member `key` (its refresh ran).
    pub(crate) fn unforce(&self, key: &str) {
        self.forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// How long a request may wait for a refresh; zero when no refresher runs.
    pub(crate) fn wait_limit(&self) -> Duration {
        self.wait_limit.get().copied().unwrap_or(Duration::ZERO)
    }

    /// Marks the board as served by a refresher; false if one already is.
    pub(crate) fn open(&self, wait_limit: Duration) -> bool {
        self.wait_limit.set(wait_limit).is_ok()
    }

    /// Takes member `key` for a refresh job; false if one is running already.
    pub(crate) fn claim(&self, key: &str) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string())
    }

    /// Ends the job [`RefreshBoard::claim`] started.
    pub(crate) fn release(&self, key: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Sleeps until a request asks for a refresh or `tick` has passed.
    pub(crate) fn wait_for_demand(&self, tick: Duration) {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let (mut wanted, _) = self
            .wake
            .wait_timeout_while(wanted, tick, |wanted| !*wanted)
            .unwrap_or_else(|e| e.into_inner());
        *wanted = false;
    }
}
