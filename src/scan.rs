//! Byte searches for the hot loops of the usage scanners and header copying.
//!
//! Each search tests 16 bytes at a time and gets back a bit mask of the bytes that
//! match, so the first match is one `trailing_zeros` away and a short string costs one
//! step. On x86_64 the mask comes from SSE2 (part of the x86_64 baseline, so no runtime
//! check); elsewhere from a portable loop. Measured on the W1 response body (~45 short
//! strings): the earlier "does this block hit, then find the byte one by one" search took
//! ~110 instructions per string (callgrind), 12% of nexus's user-space instructions.

/// Bytes tested per step; one SSE2/NEON register.
const BLOCK: usize = 16;

/// Position of the first `\n` or `\r` in `s`.
#[inline]
pub fn find_eol(s: &[u8]) -> Option<usize> {
    find(s, block::eol, |b| b == b'\n' || b == b'\r')
}

/// Length of the leading part of `s` that a JSON string can hold as is: printable ASCII
/// other than `"` and `\`. It stops at the string's end, an escape, a control byte (an
/// error) or a non-ASCII byte (which needs UTF-8 validation).
#[inline]
pub fn plain_string_run(s: &[u8]) -> usize {
    find(s, block::needs_care, needs_care).unwrap_or(s.len())
}

/// Length of the leading run of JSON whitespace in `s`.
#[inline]
pub fn whitespace_run(s: &[u8]) -> usize {
    // Bodies from the API carry no whitespace between tokens: test one byte first.
    match s.first() {
        Some(&b) if is_json_whitespace(b) => s
            .iter()
            .position(|&b| !is_json_whitespace(b))
            .unwrap_or(s.len()),
        _ => 0,
    }
}

/// JSON's four insignificant whitespace bytes.
#[inline]
pub fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// A byte a JSON string scan must stop at; `b - 0x20 >= 0x60` catches both the control
/// bytes below 0x20 and every byte from 0x80 up in one compare.
#[inline(always)]
fn needs_care(b: u8) -> bool {
    (b == b'"') | (b == b'\\') | (b.wrapping_sub(0x20) >= 0x60)
}

/// First position in `s` whose byte matches: whole blocks through `mask` (bit k set when
/// byte k of the block matches), the tail shorter than a block through `hit`.
#[inline(always)]
fn find(s: &[u8], mask: fn(&[u8; BLOCK]) -> u32, hit: fn(u8) -> bool) -> Option<usize> {
    let mut blocks = s.chunks_exact(BLOCK);
    let mut at = 0;
    for chunk in &mut blocks {
        let m = mask(chunk.try_into().expect("chunks_exact yields whole blocks"));
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize);
        }
        at += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| hit(b))
        .map(|p| at + p)
}

/// Match masks of one block, with SSE2.
#[cfg(target_arch = "x86_64")]
mod block {
    use std::arch::x86_64::*;

    use super::BLOCK;

    #[inline(always)]
    fn load(b: &[u8; BLOCK]) -> __m128i {
        // SAFETY: an unaligned 16-byte load from a 16-byte array.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    /// Bytes of `v` equal to `byte`, as 0xFF lanes.
    #[inline(always)]
    fn eq(v: __m128i, byte: u8) -> __m128i {
        // SAFETY: SSE2 is part of every x86_64 target.
        unsafe { _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8)) }
    }

    /// The lanes set in either.
    #[inline(always)]
    fn or(a: __m128i, b: __m128i) -> __m128i {
        // SAFETY: SSE2 is part of every x86_64 target.
        unsafe { _mm_or_si128(a, b) }
    }

    /// One bit per lane, set where the lane is 0xFF.
    #[inline(always)]
    fn bits(m: __m128i) -> u32 {
        // SAFETY: SSE2 is part of every x86_64 target.
        unsafe { _mm_movemask_epi8(m) as u32 }
    }

    #[inline(always)]
    pub fn eol(b: &[u8; BLOCK]) -> u32 {
        let v = load(b);
        bits(or(eq(v, b'\n'), eq(v, b'\r')))
    }

    #[inline(always)]
    pub fn needs_care(b: &[u8; BLOCK]) -> u32 {
        let v = load(b);
        // As signed bytes, 0x80..=0xFF are negative: one compare finds them and the
        // control bytes below 0x20.
        // SAFETY: SSE2 is part of every x86_64 target.
        let outside = unsafe { _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)) };
        bits(or(or(eq(v, b'"'), eq(v, b'\\')), outside))
    }
}

/// Match masks of one block, portably (LLVM vectorises the fixed-length loop).
#[cfg(not(target_arch = "x86_64"))]
mod block {
    use super::BLOCK;

    #[inline(always)]
    fn mask(b: &[u8; BLOCK], hit: fn(u8) -> bool) -> u32 {
        b.iter()
            .enumerate()
            .fold(0, |m, (k, &byte)| m | (u32::from(hit(byte)) << k))
    }

    pub fn eol(b: &[u8; BLOCK]) -> u32 {
        mask(b, |c| c == b'\n' || c == b'\r')
    }

    pub fn needs_care(b: &[u8; BLOCK]) -> u32 {
        mask(b, super::needs_care)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_eol_finds_first_cr_or_lf_at_any_offset() {
        for len in 0..70 {
            for at in 0..len {
                for eol in [b'\n', b'\r'] {
                    let mut s = vec![b'x'; len];
                    s[at] = eol;
                    if at + 1 < len {
                        s[len - 1] = b'\n';
                    }
                    assert_eq!(find_eol(&s), Some(at), "len {len} at {at}");
                }
            }
            assert_eq!(find_eol(&vec![b'y'; len]), None);
        }
    }

    #[test]
    fn plain_string_run_stops_at_every_special_byte() {
        for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xc3, 0xff] {
            for at in 0..40 {
                let mut s = vec![b'a'; 40];
                s[at] = special;
                assert_eq!(plain_string_run(&s), at);
            }
        }
        // DEL and the rest of printable ASCII are plain.
        let plain: Vec<u8> = (0x20u8..0x80)
            .filter(|&b| b != b'"' && b != b'\\')
            .collect();
        assert_eq!(plain_string_run(&plain), plain.len());
    }

    #[test]
    fn runs_of_whitespace() {
        assert_eq!(whitespace_run(b" \t\r\n{"), 4);
        assert_eq!(whitespace_run(b"  "), 2);
        assert_eq!(whitespace_run(b"\x0b"), 0);
    }
}
