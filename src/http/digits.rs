//! Numbers in heads and chunk-size lines, written without the formatting machinery:
//! a `write!` of one number cost ~400 instructions on the hot path (callgrind, W1), where
//! these take a few dozen.

/// The digits of `n` in `RADIX` (10 or 16, lower-case), at the end of `buf`. The radix is
/// a constant so that the division is a multiply and shift, not a `div` (tens of cycles
/// each, and this function was called out of line with a variable radix).
fn digits<const RADIX: u64>(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[(n % RADIX) as usize];
        n /= RADIX;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(digits::<10>(n, &mut [0; 20]));
}

/// Appends `n` in lower-case hexadecimal, as chunk sizes are written.
pub fn push_hex(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(digits::<16>(n, &mut [0; 20]));
}

/// Writes `n` in lower-case hexadecimal at the start of `out`; returns how many bytes.
/// `out` must have room (16 bytes hold any u64).
pub fn put_hex(out: &mut [u8], n: u64) -> usize {
    let mut buf = [0; 20];
    let hex = digits::<16>(n, &mut buf);
    out[..hex.len()].copy_from_slice(hex);
    hex.len()
}

/// Appends `content-length: n\r\n`.
pub fn push_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agree_with_format() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            4095,
            1 << 32,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            out.clear();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
            let mut fixed = [b'.'; 18];
            let len = put_hex(&mut fixed, n);
            assert_eq!(&fixed[..len], format!("{n:x}").as_bytes());
            out.clear();
            push_content_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").as_bytes());
        }
    }
}
