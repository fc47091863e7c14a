//! How much of its rate limits a pool member has left, from the rate-limit headers of its
//! last response: the figure new conversations are placed by.
//!
//! One number per member, per mille of the tightest limit left: `1 − utilization` of each
//! subscription window, `remaining / limit` of each API-key limit, 0 when the
//! subscription says `rejected`. It holds until the binding limit resets; after that the
//! member counts as having full headroom again, as does a member not yet heard from.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Full headroom (per mille).
pub const FULL: u32 = 1000;
/// At or below this (≥ 95 % used, ≤ 5 % left) a member is near a limit: used only when no
/// other member is usable.
pub const NEAR_LIMIT: u32 = 50;

/// A member's last reported headroom.
#[derive(Debug)]
pub struct Headroom {
    /// Per mille left, in the low 16 bits; the binding limit's reset (seconds since the
    /// epoch, 0 = unknown) above them. One word, so a reader never pairs a figure with
    /// another response's reset.
    packed: AtomicU64,
}

impl Default for Headroom {
    fn default() -> Self {
        Headroom {
            packed: AtomicU64::new(u64::from(FULL)),
        }
    }
}

impl Headroom {
    /// Records `left` per mille until `reset_s` (0: until a response says otherwise).
    pub fn set(&self, left: u32, reset_s: u64) {
        let left = left.min(FULL);
        self.packed.store(reset_s << 16 | u64::from(left), Relaxed);
    }

    /// Per mille left at `now_s`.
    pub fn left(&self, now_s: u64) -> u32 {
        let packed = self.packed.load(Relaxed);
        let reset_s = packed >> 16;
        if reset_s != 0 && now_s >= reset_s {
            return FULL;
        }
        (packed & 0xffff) as u32
    }
}

/// The rate-limit figures of one response, as [`Headroom::set`] takes them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Figures {
    pub rejected: bool,
    /// Of the `rejected` status: when it lifts (the unified reset), if said.
    pub rejected_until: Option<u64>,
    /// Per subscription window (5h, 7d): utilization 0–1 and its reset.
    pub utilization: [Option<f64>; 2],
    pub window_reset: [Option<u64>; 2],
    /// Per API-key limit kind: remaining, limit, reset.
    pub remaining: [Option<u64>; 4],
    pub limit: [Option<u64>; 4],
    pub reset: [Option<u64>; 4],
}

impl Figures {
    /// `(per mille left, reset of the binding limit)`; `None` when the response carried no
    /// figure (the last one stays).
    pub fn headroom(&self) -> Option<(u32, u64)> {
        let mut tightest: Option<(u32, u64)> = None;
        let mut consider = |left: u32, reset: Option<u64>| {
            if tightest.is_none_or(|(least, _)| left < least) {
                tightest = Some((left, reset.unwrap_or(0)));
            }
        };
        if self.rejected {
            consider(0, self.rejected_until);
        }
        for w in 0..2 {
            if let Some(used) = self.utilization[w] {
                let left = ((1.0 - used.clamp(0.0, 1.0)) * f64::from(FULL)).round() as u32;
                consider(left, self.window_reset[w]);
            }
        }
        for k in 0..4 {
            if let (Some(remaining), Some(limit)) = (self.remaining[k], self.limit[k]) {
                // A limit of 0 says nothing about what is left.
                if let Some(share) = (remaining.min(limit) * u64::from(FULL)).checked_div(limit) {
                    consider(share as u32, self.reset[k]);
                }
            }
        }
        tightest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unheard_members_have_full_headroom_and_it_returns_at_the_reset() {
        let h = Headroom::default();
        assert_eq!(h.left(0), FULL);
        h.set(30, 2000);
        assert_eq!(h.left(1999), 30);
        assert_eq!(h.left(2000), FULL);
        h.set(400, 0);
        assert_eq!(h.left(u64::MAX >> 17), 400, "no reset known: it stays");
    }

    #[test]
    fn the_tightest_limit_binds() {
        assert_eq!(Figures::default().headroom(), None);
        let sub = Figures {
            utilization: [Some(0.97), Some(0.4)],
            window_reset: [Some(100), Some(900)],
            ..Figures::default()
        };
        assert_eq!(sub.headroom(), Some((30, 100)));
        let rejected = Figures {
            rejected: true,
            rejected_until: Some(50),
            ..sub
        };
        assert_eq!(rejected.headroom(), Some((0, 50)));
        let key = Figures {
            remaining: [Some(40), Some(100_000), None, None],
            limit: [Some(50), Some(1_000_000), Some(10), None],
            reset: [Some(7), Some(8), None, None],
            ..Figures::default()
        };
        assert_eq!(key.headroom(), Some((100, 8)));
        let empty_limit = Figures {
            remaining: [Some(0), None, None, None],
            limit: [Some(0), None, None, None],
            ..Figures::default()
        };
        assert_eq!(empty_limit.headroom(), None);
    }
}
