//! Which member serves a conversation: a bounded table from a conversation's key to the
//! member that last served it, so its requests keep the member's prompt cache.
//!
//! Shared by every worker (a conversation's requests arrive on any connection). Sharded
//! mutexes, each held for one hash-map operation and never across I/O. Bounded like an
//! LRU at a fraction of the cost: each shard keeps a young and an old generation; a lookup
//! moves a key to the young one, and when the young one is full the old one is dropped.
//! A key idle past [`IDLE_SECS`] is forgotten.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// A conversation idle this long starts over (placed by headroom again).
pub const IDLE_SECS: u64 = 3600;
const SHARDS: usize = 16;
/// Keys per generation per shard: at most 2 × 16 × 4096 conversations remembered.
const GENERATION: usize = 4096;

/// A conversation's key, hashed: the table never holds the client's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConversationKey(u64);

impl ConversationKey {
    /// The key of a conversation named by its `x-claude-code-session-id` header.
    pub fn session(value: &[u8]) -> Option<ConversationKey> {
        Self::hash(0, value)
    }

    /// The key of a conversation named by its body's `metadata.user_id` only.
    pub fn user(user_id: &str) -> Option<ConversationKey> {
        Self::hash(1, user_id.as_bytes())
    }

    fn hash(tag: u8, bytes: &[u8]) -> Option<ConversationKey> {
        if bytes.is_empty() {
            return None;
        }
        // Fixed keys: the same conversation maps to the same entry on every worker.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tag.hash(&mut hasher);
        bytes.hash(&mut hasher);
        Some(ConversationKey(hasher.finish()))
    }
}

#[derive(Clone, Copy)]
struct Pin {
    member: u64,
    last_used_s: u64,
}

#[derive(Default)]
struct Shard {
    young: HashMap<u64, Pin>,
    old: HashMap<u64, Pin>,
}

/// The table of one pool; it outlives reloads of the pool's file.
pub struct Affinity {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Affinity {
    /// The member (its uid) that served `key` last, if within [`IDLE_SECS`].
    pub fn get(&self, key: ConversationKey, now_s: u64) -> Option<u64> {
        let mut shard = self.shard(key);
        if !shard.young.contains_key(&key.0) {
            let pin = shard.old.remove(&key.0)?;
            shard.insert(key.0, pin);
        }
        let pin = shard.young.get_mut(&key.0)?;
        if now_s.saturating_sub(pin.last_used_s) > IDLE_SECS {
            return None;
        }
        pin.last_used_s = now_s;
        Some(pin.member)
    }

    /// Pins `key` to `member` (a uid).
    pub fn set(&self, key: ConversationKey, member: u64, now_s: u64) {
        let pin = Pin {
            member,
            last_used_s: now_s,
        };
        let mut shard = self.shard(key);
        if let Some(existing) = shard.young.get_mut(&key.0) {
            *existing = pin;
            return;
        }
        shard.old.remove(&key.0);
        shard.insert(key.0, pin);
    }

    fn shard(&self, key: ConversationKey) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(key.0 as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Conversations remembered (young and old), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.young.len() + s.old.len()
            })
            .sum()
    }
}

impl Shard {
    /// Puts a key the young generation does not hold into it, ageing the generations
    /// when it is full.
    fn insert(&mut self, key: u64, pin: Pin) {
        if self.young.len() >= GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, pin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_session_or_user_id() {
        let a = ConversationKey::session(b"s-1");
        assert!(a.is_some());
        assert_eq!(a, ConversationKey::session(b"s-1"));
        assert_ne!(a, ConversationKey::session(b"s-2"));
        assert_ne!(
            ConversationKey::session(b"u"),
            ConversationKey::user("u"),
            "a header and a user id with the same text are different conversations"
        );
        assert_eq!(ConversationKey::session(b""), None);
        assert_eq!(ConversationKey::user(""), None);
    }

    #[test]
    fn remembers_forgets_idle_and_stays_bounded() {
        let table = Affinity::default();
        let key = |i: u64| ConversationKey(i);
        assert_eq!(table.get(key(1), 0), None);
        table.set(key(1), 7, 0);
        assert_eq!(table.get(key(1), 10), Some(7));
        table.set(key(1), 8, 10);
        assert_eq!(table.get(key(1), 10 + IDLE_SECS), Some(8), "used at 10");
        assert_eq!(table.get(key(1), 20 + 2 * IDLE_SECS + 1), None, "idle");
        for i in 0..(SHARDS * GENERATION * 5) as u64 {
            table.set(key(i), i, 0);
        }
        assert!(table.len() <= 2 * SHARDS * GENERATION, "{}", table.len());
        let last = (SHARDS * GENERATION * 5) as u64 - 1;
        assert_eq!(table.get(key(last), 1), Some(last));
    }
}
