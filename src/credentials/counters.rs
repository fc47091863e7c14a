//! What the credential machinery has done, for `/metrics`: operators watch it, and tests
//! wait on it ("the scanner has run twice more") instead of sleeping and hoping.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Process-wide: one credential store per process, and `/metrics` reads these without a
/// handle to it. Touched only off the request path (scans, refresh jobs) or on the rare
/// path of a request waiting for a refresh.
pub static COUNTERS: Counters = Counters {
    scans: AtomicU64::new(0),
    refresh_checks: AtomicU64::new(0),
    refresh_attempts: AtomicU64::new(0),
    refresh_waiting: AtomicI64::new(0),
};

/// The live counters.
pub struct Counters {
    scans: AtomicU64,
    refresh_checks: AtomicU64,
    refresh_attempts: AtomicU64,
    refresh_waiting: AtomicI64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Scans of `CREDENTIALS_DIR` finished (including the first load).
    pub scans: u64,
    /// Passes of the OAuth refresh scheduler over every credential finished.
    pub refresh_checks: u64,
    /// OAuth refresh jobs started (one per credential at a time, in this process).
    pub refresh_attempts: u64,
    /// Requests waiting for an OAuth refresh now.
    pub refresh_waiting: i64,
}

impl Counters {
    /// Reads them all.
    pub fn counts(&self) -> Counts {
        Counts {
            scans: self.scans.load(Relaxed),
            refresh_checks: self.refresh_checks.load(Relaxed),
            refresh_attempts: self.refresh_attempts.load(Relaxed),
            refresh_waiting: self.refresh_waiting.load(Relaxed),
        }
    }

    pub(super) fn scanned(&self) {
        self.scans.fetch_add(1, Relaxed);
    }

    pub(super) fn checked_refreshes(&self) {
        self.refresh_checks.fetch_add(1, Relaxed);
    }

    pub(super) fn started_refresh(&self) {
        self.refresh_attempts.fetch_add(1, Relaxed);
    }

    /// Counts a waiting request until the returned guard is dropped.
    pub(super) fn waiting(&'static self) -> Waiting {
        self.refresh_waiting.fetch_add(1, Relaxed);
        Waiting(self)
    }
}

/// One request waiting for a refresh; uncounted when dropped (also when the request is).
pub(super) struct Waiting(&'static Counters);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.refresh_waiting.fetch_sub(1, Relaxed);
    }
}
