//! Byte searches for the hot loops of the usage scanners and header copying.
//!
//! Each search tests 16 bytes at a time and gets back a bit mask of the bytes that
//! match, so the first match is one `trailing_zeros` away and a short string costs one
//! step. On x86_64 the mask comes from SSE2 (part of the x86_64 baseline, so no runtime
//! check); elsewhere from a portable loop. Measured on the W1 response body (~45 short
//! strings): the earlier "does this block hit, then find the byte one by one" search took
//! ~110 instructions per string (callgrind), 12% of nexus's user-space instructions.
//!
//! A JSON string run longer than [`NEAR`] bytes goes on 64 bytes a step with AVX2 where
//! the CPU has it (checked at run time): a Claude Code body is mostly file contents in
//! long strings, on which SSE2 (no three-operand forms) spends ~12 instructions per 16
//! bytes.

/// Bytes tested per step; one SSE2/NEON register.
const BLOCK: usize = 16;

/// Position of the first `\n` or `\r` in `s`. Two blocks a step while whole pairs
/// remain: SSE data lines run to a few hundred bytes.
#[inline]
pub fn find_eol(s: &[u8]) -> Option<usize> {
    let mut pairs = s.chunks_exact(2 * BLOCK);
    let mut at = 0;
    for pair in &mut pairs {
        let (a, b) = pair.split_at(BLOCK);
        let a = block::eol(a.try_into().expect("a whole block"));
        let b = block::eol(b.try_into().expect("a whole block"));
        if a | b != 0 {
            let m = a | b << BLOCK;
            return Some(at + m.trailing_zeros() as usize);
        }
        at += 2 * BLOCK;
    }
    find(pairs.remainder(), block::eol, |b| b == b'\n' || b == b'\r').map(|p| at + p)
}

/// Bytes [`plain_string_run_near`] looks at: most strings end within them, and the
/// long-run path costs more than it saves on fewer (measured on SSE events' data lines).
pub const NEAR: usize = 256;

/// Length of the leading part of `s` that a JSON string can hold as is: printable ASCII
/// other than `"` and `\`. It stops at the string's end, an escape, a control byte (an
/// error) or a non-ASCII byte (which needs UTF-8 validation).
#[inline]
pub fn plain_string_run(s: &[u8]) -> usize {
    let near = plain_string_run_near(s);
    if near < NEAR {
        return near;
    }
    let far = NEAR + long::skip_needs_care(&s[NEAR..]);
    far + find(&s[far..], block::needs_care, needs_care).unwrap_or(s.len() - far)
}

/// [`plain_string_run`] within the first [`NEAR`] bytes of `s`: inline and short, for
/// the hot path; a result of `NEAR` means the run may go on.
#[inline]
pub fn plain_string_run_near(s: &[u8]) -> usize {
    let s = &s[..s.len().min(NEAR)];
    find(s, block::needs_care, needs_care).unwrap_or(s.len())
}

/// `name == lit`, eight bytes a compare for literals of 8 bytes or more: every whole
/// word, then the last eight bytes (overlapping the word before).
#[inline(always)]
pub fn same(name: &[u8], lit: &[u8]) -> bool {
    same_under(name, lit, 0)
}

/// `name` equals `lower` ignoring ASCII case, where `lower` is lower-case letters, digits
/// and `-`, and `name` is an HTTP token. Setting bit 5 of every byte lower-cases a letter
/// and leaves digits and `-` as they are; the only other byte it would turn into one of
/// these is CR (into `-`), which no token holds.
#[inline(always)]
pub fn same_ignoring_case(name: &[u8], lower: &[u8]) -> bool {
    same_under(name, lower, 0x20)
}

/// `name`, with `set` or'ed into every byte, equals `lit`.
#[inline(always)]
fn same_under(name: &[u8], lit: &[u8], set: u8) -> bool {
    let n = lit.len();
    if name.len() != n {
        return false;
    }
    if n < 8 {
        return name.iter().zip(lit).all(|(&a, &b)| a | set == b);
    }
    let set = u64::from_ne_bytes([set; 8]);
    let word =
        |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    (0..n / 8).all(|k| word(name, 8 * k) | set == word(lit, 8 * k))
        && word(name, n - 8) | set == word(lit, n - 8)
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

/// Long runs, 64 bytes a step with AVX2.
mod long {
    /// Bytes a step.
    const STRIDE: usize = 64;

    /// How many leading bytes of `s` need no care in a JSON string for certain: whole
    /// strides up to the first that has such a byte (0 without AVX2). The caller's
    /// block search takes it from there and finds the exact byte.
    #[inline(never)]
    pub fn skip_needs_care(s: &[u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2::skip_needs_care(s) };
        }
        let _ = s;
        0
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use std::arch::x86_64::*;

        use super::STRIDE;

        #[target_feature(enable = "avx2")]
        pub fn skip_needs_care(s: &[u8]) -> usize {
            let mut at = 0;
            for stride in s.chunks_exact(STRIDE) {
                // SAFETY: two unaligned 32-byte loads within a 64-byte chunk.
                let (a, b) = unsafe {
                    let p = stride.as_ptr().cast::<__m256i>();
                    (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
                };
                if _mm256_movemask_epi8(_mm256_or_si256(needs_care(a), needs_care(b))) != 0 {
                    break;
                }
                at += STRIDE;
            }
            at
        }

        /// The bytes of `v` a JSON string scan must stop at, as 0xFF lanes.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn needs_care(v: __m256i) -> __m256i {
            let eq = |byte: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(byte as i8));
            // Signed: control bytes and 0x80..=0xFF are both below 0x20.
            let outside = _mm256_cmpgt_epi8(_mm256_set1_epi8(0x20), v);
            _mm256_or_si256(_mm256_or_si256(eq(b'"'), eq(b'\\')), outside)
        }
    }
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
            // Past NEAR + 64 bytes the long path takes a stride or more.
            for at in 0..400 {
                let mut s = vec![b'a'; 400];
                s[at] = special;
                assert_eq!(plain_string_run(&s), at);
            }
        }
        // DEL and the rest of printable ASCII are plain.
        let plain: Vec<u8> = (0x20u8..0x80)
            .filter(|&b| b != b'"' && b != b'\\')
            .collect();
        assert_eq!(plain_string_run(&plain), plain.len());
        let long = plain.repeat(40);
        assert_eq!(plain_string_run(&long), long.len());
        assert_eq!(plain_string_run_near(&long), NEAR);
    }

    #[test]
    fn runs_of_whitespace() {
        assert_eq!(whitespace_run(b" \t\r\n{"), 4);
        assert_eq!(whitespace_run(b"  "), 2);
        assert_eq!(whitespace_run(b"\x0b"), 0);
    }
}
