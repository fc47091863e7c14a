//! Which member of a domain's pool a request goes to.
//!
//! A conversation stays on the member that served it while that member is usable. A new
//! one goes to the usable member with the most headroom, ties taken in turn; a member near
//! a limit is used only when no other is. Cooling and disabled members, and members the
//! request already tried, are not usable. A pool of one always answers its one member: no
//! atomic, no lock, no clock.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::affinity::{Affinity, ConversationKey};
use super::headroom::NEAR_LIMIT;
use super::member_state::Availability;
use super::store::DomainEntry;

/// What a pool keeps across reloads of its file: whose turn it is, and which member
/// serves which conversation.
#[derive(Default)]
pub struct PoolShared {
    turn: AtomicUsize,
    pub affinity: Affinity,
}

impl std::fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolShared")
    }
}

/// The members a request has tried, one bit per member index ([`super::file::MAX_MEMBERS`]
/// is 64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    /// Marks member `index` tried.
    pub fn add(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    /// Whether member `index` was tried.
    pub fn has(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// The outcome of a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Use the member at this index.
    Member(usize),
    /// No member is usable and some are cooling; the first frees in this many seconds.
    Exhausted { retry_after_s: u64 },
    /// No member is usable and none is cooling: all are disabled (or tried).
    Refused,
}

/// Chooses the member for a request of conversation `key` that has tried `tried`.
pub fn pick(entry: &DomainEntry, key: Option<ConversationKey>, tried: Tried, now_ms: u64) -> Pick {
    let members = &entry.members;
    if members.len() == 1 && !tried.has(0) {
        return Pick::Member(0);
    }
    let now_s = now_ms / 1000;
    let usable =
        |i: usize| !tried.has(i) && members[i].live.availability(now_ms) == Availability::Ready;
    if let Some(pinned) = key.and_then(|key| entry.pool.affinity.get(key, now_s)) {
        if let Some(i) = members.iter().position(|m| m.live.uid == pinned) {
            if usable(i) {
                return Pick::Member(i);
            }
        }
    }
    // Most headroom first, members near a limit last; ties go in turn.
    let n = members.len();
    let start = entry.pool.turn.fetch_add(1, Relaxed) % n;
    let mut best: Option<(usize, (bool, u32))> = None;
    for step in 0..n {
        let i = (start + step) % n;
        if !usable(i) {
            continue;
        }
        let left = members[i].live.headroom.left(now_s);
        let rank = (left > NEAR_LIMIT, left);
        if best.is_none_or(|(_, top)| rank > top) {
            best = Some((i, rank));
        }
    }
    if let Some((i, _)) = best {
        return Pick::Member(i);
    }
    let first_free = (0..n)
        .filter_map(|i| match members[i].live.availability(now_ms) {
            Availability::Cooling(until) => Some(until),
            _ => None,
        })
        .min();
    match first_free {
        Some(until) => Pick::Exhausted {
            retry_after_s: until.saturating_sub(now_ms).div_ceil(1000).max(1),
        },
        None => Pick::Refused,
    }
}

/// Remembers that `member` (an index) served conversation `key`.
pub fn pin(entry: &DomainEntry, key: Option<ConversationKey>, member: usize, now_ms: u64) {
    if let (Some(key), true) = (key, entry.members.len() > 1) {
        let uid = entry.members[member].live.uid;
        entry.pool.affinity.set(key, uid, now_ms / 1000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::file::parse_credential;
    use crate::credentials::store::Replacing;

    fn pool(n: usize) -> DomainEntry {
        let members: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"m{i}","type":"api_key","api_key":"k{i}"}}"#))
            .collect();
        let text = format!(r#"{{"type":"pool","credentials":[{}]}}"#, members.join(","));
        DomainEntry::new(parse_credential(&text).unwrap(), None, Replacing::Reload)
    }

    fn index(p: Pick) -> usize {
        match p {
            Pick::Member(i) => i,
            other => panic!("{other:?}"),
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn ties_go_in_turn() {
        let entry = pool(3);
        let mut seen = [0; 3];
        for _ in 0..9 {
            seen[index(pick(&entry, None, Tried::default(), NOW))] += 1;
        }
        assert_eq!(seen, [3, 3, 3]);
    }

    #[test]
    fn most_headroom_first_and_near_limit_last() {
        let entry = pool(3);
        let reset = NOW / 1000 + 3600;
        entry.members[0].live.headroom.set(30, reset); // 97 % used
        entry.members[1].live.headroom.set(800, reset);
        entry.members[2].live.headroom.set(600, reset);
        for _ in 0..4 {
            assert_eq!(index(pick(&entry, None, Tried::default(), NOW)), 1);
        }
        let mut tried = Tried::default();
        tried.add(1);
        tried.add(2);
        assert_eq!(index(pick(&entry, None, tried, NOW)), 0, "when no other is");
        // At the reset the figure lapses: full headroom.
        assert_eq!(index(pick(&entry, None, tried, reset * 1000)), 0);
        let mut all = tried;
        all.add(0);
        assert_eq!(pick(&entry, None, all, NOW), Pick::Refused);
    }

    #[test]
    fn cooling_and_disabled_members_are_skipped_and_the_first_to_free_is_named() {
        let entry = pool(3);
        entry.members[0].live.cool_until(NOW + 60_000, NOW);
        entry.members[1].live.cool_until(NOW + 2_500, NOW);
        for _ in 0..3 {
            assert_eq!(index(pick(&entry, None, Tried::default(), NOW)), 2);
        }
        entry.members[2].live.disable();
        assert_eq!(
            pick(&entry, None, Tried::default(), NOW),
            Pick::Exhausted { retry_after_s: 3 }
        );
        assert_eq!(index(pick(&entry, None, Tried::default(), NOW + 2_500)), 1);
    }

    #[test]
    fn a_conversation_stays_while_its_member_is_usable() {
        let entry = pool(4);
        let key = ConversationKey::session(b"session-1");
        let first = index(pick(&entry, key, Tried::default(), NOW));
        pin(&entry, key, first, NOW);
        for _ in 0..8 {
            assert_eq!(index(pick(&entry, key, Tried::default(), NOW)), first);
        }
        entry.members[first].live.cool_until(NOW + 1000, NOW);
        let moved = index(pick(&entry, key, Tried::default(), NOW));
        assert_ne!(moved, first);
    }

    #[test]
    fn a_pool_of_one_is_its_member_until_tried() {
        let entry = pool(1);
        entry.members[0].live.cool_until(NOW + 1000, NOW);
        assert_eq!(pick(&entry, None, Tried::default(), NOW), Pick::Member(0));
        let mut tried = Tried::default();
        tried.add(0);
        assert_eq!(
            pick(&entry, None, tried, NOW),
            Pick::Exhausted { retry_after_s: 1 }
        );
    }
}
