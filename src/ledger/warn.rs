//! The ledger's warnings, at most one a minute whoever raises them (workers or threads).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::stats::now_ms;

/// How often a ledger warning may be logged.
const EVERY_MS: u64 = 60_000;

/// Lets one warning through a minute; the rest are counted and said with the next.
#[derive(Default)]
pub struct Warner {
    last_ms: AtomicU64,
    silenced: AtomicU64,
}

impl Warner {
    /// Logs `message()` unless a warning was logged in the last minute.
    pub fn warn(&self, message: impl FnOnce() -> String) {
        let now = now_ms().max(1);
        let last = self.last_ms.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            let silenced = self.silenced.swap(0, Relaxed);
            let more = match silenced {
                0 => String::new(),
                n => format!(" ({n} similar warning(s) silenced since the last)"),
            };
            log::warn!("{}{more}", message());
        } else {
            self.silenced.fetch_add(1, Relaxed);
        }
    }
}
