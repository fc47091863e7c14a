//! Request ids: UUID v7 text (the time in milliseconds, then random bits) from a
//! per-worker generator, with no allocation or lock. Time first, so that the ledger's
//! index on ids grows at its end: with random (v4) ids every row landed on a different
//! index page, and the writer thread rewrote thousands of pages per batch.

use std::cell::Cell;

/// A UUID v7 in its 36-character text form, and the time it carries.
#[derive(Clone, Copy)]
pub struct RequestId {
    text: [u8; 36],
    ms: u64,
}

impl RequestId {
    /// The id's ASCII bytes, for writing into a head.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    pub fn as_str(&self) -> &str {
        debug_assert!(self.text.is_ascii());
        // SAFETY: `next` writes only hex digits and hyphens: ASCII, so UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.text) }
    }

    /// When the id was made, in ms since the Unix epoch: the request's start.
    pub fn unix_ms(&self) -> u64 {
        self.ms
    }
}

/// The time a UUID v7's text carries (ms since the Unix epoch); none if `text` is not one.
pub fn v7_millis(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[14] != b'7' {
        return None;
    }
    b[..8].iter().chain(&b[9..13]).try_fold(0u64, |ms, &c| {
        let digit = (c as char).to_digit(16)?;
        Some(ms << 4 | u64::from(digit))
    })
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's id generator: xoshiro-style mixing of a 128-bit state seeded from the kernel.
/// Ids must be unique and unguessable enough to correlate logs, not to be secrets.
pub struct RequestIds {
    state: Cell<[u64; 2]>,
}

impl RequestIds {
    /// Seeds from /dev/urandom (falling back to time and thread identity).
    pub fn new() -> Self {
        let mut seed = [0u8; 16];
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok();
        if !from_kernel {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let stack = &seed as *const _ as usize as u128;
            seed = (nanos ^ (stack << 64) ^ std::process::id() as u128).to_le_bytes();
        }
        let a = u64::from_le_bytes(seed[..8].try_into().unwrap()) | 1;
        let b = u64::from_le_bytes(seed[8..].try_into().unwrap());
        RequestIds {
            state: Cell::new([a, b]),
        }
    }

    fn next_u64(&self) -> u64 {
        // xorshift128+
        let [mut s1, s0] = self.state.get();
        let result = s0.wrapping_add(s1);
        s1 ^= s1 << 23;
        s1 ^= s1 >> 17;
        s1 ^= s0 ^ (s0 >> 26);
        self.state.set([s0, s1]);
        result
    }

    /// The next id.
    pub fn next(&self) -> RequestId {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Where each byte's two digits go; the hyphens stay between the groups.
        const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut text = [b'-'; 36];
        for (byte, at) in bytes.iter().zip(AT) {
            text[at] = HEX[usize::from(byte >> 4)];
            text[at + 1] = HEX[usize::from(byte & 0xf)];
        }
        RequestId { text, ms }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_uuids_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a.as_str(), b.as_str());
        let s = a.as_str();
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'7');
        assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_eq!(
            s.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(s
            .bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn an_id_carries_the_millisecond_it_was_made() {
        let before = crate::stats::now_ms();
        let id = RequestIds::new().next();
        let after = crate::stats::now_ms();
        assert!((before..=after).contains(&id.unix_ms()));
        assert_eq!(v7_millis(id.as_str()), Some(id.unix_ms()));
        assert_eq!(
            v7_millis("01937a2b-4c5d-7abc-8def-0123456789ab"),
            Some(0x0193_7a2b_4c5d)
        );
        assert_eq!(
            v7_millis("01937a2b-4c5d-4abc-8def-0123456789ab"),
            None,
            "v4"
        );
        assert_eq!(v7_millis("not an id"), None);
    }
}
