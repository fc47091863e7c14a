//! A pool member's live state: whether it may be used (cooling down, disabled), how much
//! headroom it reported, and what it served. One per member per process, shared by every
//! worker, atomics only: a request reads and updates it without a lock, and never holds
//! anything across I/O.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use super::headroom::Headroom;
use crate::cost::{AtomicUsd, Usd};

/// Why a member's answer sent the request on to the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverReason {
    /// 429: the member hit a rate limit.
    RateLimited,
    /// 529 / `overloaded_error`.
    Overloaded,
    /// 401 / 403: the upstream refused the member's credential.
    Refused,
}

impl FailoverReason {
    /// Every reason, in the order of [`FailoverReason::index`].
    pub const ALL: [FailoverReason; 3] = [
        FailoverReason::RateLimited,
        FailoverReason::Overloaded,
        FailoverReason::Refused,
    ];

    /// The `reason` label of `nexus_credential_failovers_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailoverReason::RateLimited => "rate_limit",
            FailoverReason::Overloaded => "overloaded",
            FailoverReason::Refused => "refused",
        }
    }

    /// Its place in [`MemberSnapshot::failovers`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a member stands, as `/token-stats` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Until this time (ms since the epoch).
    Cooling(u64),
    /// The upstream refused its credential; until its file changes.
    Disabled,
}

impl Availability {
    /// `ready` | `cooling` | `disabled`.
    pub fn label(self) -> &'static str {
        match self {
            Availability::Ready => "ready",
            Availability::Cooling(_) => "cooling",
            Availability::Disabled => "disabled",
        }
    }
}

/// Hands out member uids.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// One member's live state.
#[derive(Debug)]
pub struct MemberState {
    /// Unique in the process: the affinity table names members by it, so a conversation
    /// never lands on a member that merely took another's place in a reloaded file.
    pub uid: u64,
    /// Milliseconds since the epoch until which the member rests; 0 when it does not.
    cooldown_until_ms: AtomicU64,
    disabled: AtomicBool,
    /// What its last responses said about its rate limits.
    pub headroom: Headroom,
    /// Requests sent upstream with this member's credential (every attempt).
    requests: AtomicU64,
    /// Attempts of this member that were sent on to another, by [`FailoverReason`].
    failovers: [AtomicU64; 3],
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cost: AtomicUsd,
}

/// A member's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub availability: Availability,
    pub requests: u64,
    pub failovers: [u64; 3],
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Usd,
}

impl Default for MemberState {
    fn default() -> Self {
        MemberState {
            uid: NEXT_UID.fetch_add(1, Relaxed),
            cooldown_until_ms: AtomicU64::new(0),
            disabled: AtomicBool::new(false),
            headroom: Headroom::default(),
            requests: AtomicU64::new(0),
            failovers: Default::default(),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cost: AtomicUsd::default(),
        }
    }
}

impl MemberState {
    /// Whether a request may use it now, and if not, why.
    pub fn availability(&self, now_ms: u64) -> Availability {
        if self.disabled.load(Relaxed) {
            return Availability::Disabled;
        }
        match self.cooldown_until_ms.load(Relaxed) {
            until if until > now_ms => Availability::Cooling(until),
            _ => Availability::Ready,
        }
    }

    /// Rests the member until `until_ms` (a later rest already set stays). True when it
    /// was not resting before: the caller logs it once.
    pub fn cool_until(&self, until_ms: u64, now_ms: u64) -> bool {
        let before = self.cooldown_until_ms.fetch_max(until_ms, Relaxed);
        before <= now_ms
    }

    /// Takes the member out of service until its file changes. True when it was not
    /// already.
    pub fn disable(&self) -> bool {
        !self.disabled.swap(true, Relaxed)
    }

    /// Back in service after its file changed.
    pub(super) fn enable(&self) {
        self.disabled.store(false, Relaxed);
    }

    /// Whether its rest ended by `now_ms` and nobody said so yet: true once per rest, for
    /// the "returns" log line.
    pub fn returned(&self, now_ms: u64) -> bool {
        let until = self.cooldown_until_ms.load(Relaxed);
        until != 0
            && until <= now_ms
            && self
                .cooldown_until_ms
                .compare_exchange(until, 0, Relaxed, Relaxed)
                .is_ok()
    }

    /// Counts a request sent upstream with this member.
    pub fn attempted(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// Counts an attempt sent on to another member.
    pub fn failed_over(&self, reason: FailoverReason) {
        self.failovers[reason.index()].fetch_add(1, Relaxed);
    }

    /// Adds what a request this member served used and cost.
    pub fn served(&self, input_tokens: u64, output_tokens: u64, cost_picos: u64) {
        self.input_tokens.fetch_add(input_tokens, Relaxed);
        self.output_tokens.fetch_add(output_tokens, Relaxed);
        self.cost.add(cost_picos);
    }

    /// A plain copy of the figures.
    pub fn read(&self, now_ms: u64) -> MemberSnapshot {
        MemberSnapshot {
            availability: self.availability(now_ms),
            requests: self.requests.load(Relaxed),
            failovers: std::array::from_fn(|i| self.failovers[i].load(Relaxed)),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
            cost: self.cost.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_ends_by_itself_and_is_reported_once() {
        let m = MemberState::default();
        assert_eq!(m.availability(1000), Availability::Ready);
        assert!(m.cool_until(5000, 1000), "a new rest");
        assert!(
            !m.cool_until(3000, 1000),
            "already resting; the later end stays"
        );
        assert_eq!(m.availability(1000), Availability::Cooling(5000));
        assert_eq!(m.availability(5000), Availability::Ready);
        assert!(!m.returned(4999));
        assert!(m.returned(5000));
        assert!(!m.returned(6000), "said once");
    }

    #[test]
    fn disabled_wins_until_enabled() {
        let m = MemberState::default();
        m.cool_until(5000, 0);
        assert!(m.disable());
        assert!(!m.disable());
        assert_eq!(m.availability(0), Availability::Disabled);
        m.enable();
        assert_eq!(m.availability(0), Availability::Cooling(5000));
    }

    #[test]
    fn counts_attempts_failovers_and_usage() {
        let m = MemberState::default();
        m.attempted();
        m.attempted();
        m.failed_over(FailoverReason::Overloaded);
        m.served(10, 5, 3_000_001);
        let s = m.read(0);
        assert_eq!(s.requests, 2);
        assert_eq!(s.failovers, [0, 1, 0]);
        assert_eq!((s.input_tokens, s.output_tokens), (10, 5));
        assert_eq!(s.cost, Usd(3_000_001));
    }
}
