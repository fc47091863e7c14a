//! Byte searches for the scanners' hot loops, in portable std-only Rust.
//!
//! Each search looks at 16 bytes at a time with a branch-free test that LLVM turns into
//! SIMD compares, then pins the exact position byte by byte inside the block that hit.
//! This is what lets the SSE scanner skip a text delta's payload at memory speed.

/// Bytes tested per step; one SSE2/NEON register.
const BLOCK: usize = 16;

/// Position of the first `\n` or `\r` in `s`.
#[inline]
pub fn find_eol(s: &[u8]) -> Option<usize> {
    let start = skip_blocks(s, |b| (b == b'\n') | (b == b'\r'));
    s[start..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|p| start + p)
}

/// Length of the leading part of `s` that a JSON string can hold as is: printable ASCII
/// other than `"` and `\`. It stops at the string's end, an escape, a control byte (an
/// error) or a non-ASCII byte (which needs UTF-8 validation).
#[inline]
pub fn plain_string_run(s: &[u8]) -> usize {
    let start = skip_blocks(s, needs_care);
    s[start..]
        .iter()
        .position(|&b| needs_care(b))
        .map_or(s.len(), |p| start + p)
}

/// Length of the leading run of JSON whitespace in `s`.
#[inline]
pub fn whitespace_run(s: &[u8]) -> usize {
    s.iter()
        .position(|&b| !is_json_whitespace(b))
        .unwrap_or(s.len())
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

/// Offset of the first whole block of `s` holding a byte that matches `hit`, or of the
/// tail shorter than a block; every byte before it is known not to match.
#[inline(always)]
fn skip_blocks(s: &[u8], hit: impl Fn(u8) -> bool) -> usize {
    let mut i = 0;
    while let Some(block) = s.get(i..i + BLOCK) {
        // `fold` with `|` (not `any`, which stops early) keeps the test branch-free so it
        // vectorises.
        if block.iter().fold(false, |acc, &b| acc | hit(b)) {
            break;
        }
        i += BLOCK;
    }
    i
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
