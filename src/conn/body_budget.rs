//! The process-wide budget for request bodies held in memory (`NEXUS_MAX_BUFFERED_MB`).
//!
//! A `/v1/messages` body is read whole before it is forwarded, so without a bound a few
//! hundred clients that each declare 30 MB and trickle it in would pin gigabytes. Memory
//! is charged as body bytes arrive — never from a declared length — and given back when
//! the request ends. The first [`FREE_BYTES`] of each body are not charged: every
//! connection may hold that much anyway, and small requests then never see the budget.
//!
//! A body that would go over the budget is refused at once with 503 rather than made to
//! wait: waiting would keep its connection and the memory it already holds, and the SDKs
//! retry a 503 with backoff.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Body bytes each request may hold without drawing on the budget.
pub const FREE_BYTES: u64 = 64 * 1024;

/// Bytes of request bodies held across all workers, against a limit.
#[derive(Debug)]
pub struct BodyBudget {
    limit: u64,
    held: AtomicU64,
}

impl BodyBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> BodyBudget {
        BodyBudget {
            limit,
            held: AtomicU64::new(0),
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held right now.
    pub fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    /// A request's share, empty until its body grows past [`FREE_BYTES`].
    pub fn share(&self) -> BodyShare<'_> {
        BodyShare {
            budget: self,
            held: 0,
        }
    }

    fn take(&self, bytes: u64) -> bool {
        self.held
            .fetch_update(Relaxed, Relaxed, |held| {
                held.checked_add(bytes).filter(|&after| after <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Relaxed);
    }
}

/// One request's charge on the budget; given back when dropped.
#[derive(Debug)]
pub struct BodyShare<'a> {
    budget: &'a BodyBudget,
    held: u64,
}

impl BodyShare<'_> {
    /// The budget's limit in bytes.
    pub fn limit(&self) -> u64 {
        self.budget.limit
    }

    /// Charges for a body that has reached `bytes`; false (and nothing charged) if the
    /// budget cannot cover it.
    pub fn cover(&mut self, bytes: u64) -> bool {
        let wanted = bytes.saturating_sub(FREE_BYTES);
        if wanted <= self.held {
            return true;
        }
        if !self.budget.take(wanted - self.held) {
            return false;
        }
        self.held = wanted;
        true
    }
}

impl Drop for BodyShare<'_> {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.give(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_are_free_and_shares_come_back() {
        let budget = BodyBudget::new(1000);
        let mut small = budget.share();
        assert!(small.cover(FREE_BYTES));
        assert_eq!(budget.held(), 0);
        let mut a = budget.share();
        assert!(a.cover(FREE_BYTES + 600));
        let mut b = budget.share();
        assert!(!b.cover(FREE_BYTES + 600), "over the limit");
        assert_eq!(budget.held(), 600, "a refused share charges nothing");
        assert!(b.cover(FREE_BYTES + 400));
        assert!(
            a.cover(FREE_BYTES + 500),
            "a share never shrinks its charge"
        );
        assert_eq!(budget.held(), 1000);
        drop(a);
        assert_eq!(budget.held(), 400);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
