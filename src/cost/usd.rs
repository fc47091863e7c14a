//! Exact dollar amounts: an integer count of picodollars, printed as a decimal number.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::http::digits::push_decimal;

/// Picodollars (10⁻¹² USD) in one dollar.
pub const PICOS_PER_USD: u128 = 1_000_000_000_000;

/// An amount of US dollars held as an integer number of picodollars, so that sums are
/// exact; it prints as a plain decimal number (`0.0123`, `12`), never rounded, which is
/// also how it is written into JSON (through an `f64` a sum past a few hundred dollars
/// would lose its last picodollars).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usd(pub u128);

impl Usd {
    /// The amount of `picos` picodollars.
    pub fn from_picos(picos: u64) -> Usd {
        Usd(u128::from(picos))
    }

    /// The amount rounded half-up to `decimals` (at most 12) places, for people to read:
    /// `Usd(1_234_500_000_000).rounded(2)` is `"1.23"`.
    pub fn rounded(self, decimals: u32) -> String {
        let decimals = decimals.min(12);
        let unit = 10u128.pow(12 - decimals);
        let units = (self.0 + unit / 2) / unit;
        let scale = 10u128.pow(decimals);
        match decimals {
            0 => format!("{units}"),
            _ => format!(
                "{}.{:0width$}",
                units / scale,
                units % scale,
                width = decimals as usize
            ),
        }
    }
}

impl Usd {
    /// Appends the amount as `Display` prints it, without the formatting machinery or an
    /// allocation: the access log writes one per request.
    pub fn push_to(self, out: &mut Vec<u8>) {
        let whole = self.0 / PICOS_PER_USD;
        match u64::try_from(whole) {
            Ok(whole) => push_decimal(out, whole),
            Err(_) => {
                let _ = write!(out, "{whole}");
            }
        }
        let mut fraction = (self.0 % PICOS_PER_USD) as u64;
        if fraction == 0 {
            return;
        }
        let mut digits = [b'0'; 12];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        let zeros = digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push(b'.');
        out.extend_from_slice(&digits[..12 - zeros]);
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(40);
        self.push_to(&mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// A running sum of [`Usd`] that any thread adds to without a lock: whole micro-dollars
/// plus the picodollars beyond them, so it is exact and cannot wrap (one `u64` of
/// picodollars would at 18 million dollars).
#[derive(Debug, Default)]
pub struct AtomicUsd {
    micros: AtomicU64,
    picos: AtomicU64,
}

/// Picodollars in a micro-dollar.
const PICOS_PER_MICRO: u64 = 1_000_000;

impl AtomicUsd {
    /// Adds `picos` picodollars.
    pub fn add(&self, picos: u64) {
        if picos != 0 {
            self.micros.fetch_add(picos / PICOS_PER_MICRO, Relaxed);
            self.picos.fetch_add(picos % PICOS_PER_MICRO, Relaxed);
        }
    }

    /// The sum so far.
    pub fn read(&self) -> Usd {
        Usd(
            u128::from(self.micros.load(Relaxed)) * u128::from(PICOS_PER_MICRO)
                + u128::from(self.picos.load(Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_every_digit_and_no_more() {
        assert_eq!(Usd(0).to_string(), "0");
        assert_eq!(Usd(1).to_string(), "0.000000000001");
        assert_eq!(Usd(1_500_000).to_string(), "0.0000015");
        assert_eq!(Usd(12 * PICOS_PER_USD).to_string(), "12");
        assert_eq!(Usd(12_340_000_000_000).to_string(), "12.34");
        let big = Usd(u128::from(u64::MAX) * 1_000_000 + 999_999);
        assert_eq!(big.to_string(), "18446744073709.551615999999");
    }

    #[test]
    fn rounds_half_up_for_people() {
        assert_eq!(Usd(1_234_500_000_000).rounded(2), "1.23");
        assert_eq!(Usd(1_235_000_000_000).rounded(2), "1.24");
        assert_eq!(Usd(4_999_999).rounded(4), "0.0000");
        assert_eq!(Usd(50_000_000).rounded(4), "0.0001");
        assert_eq!(Usd(2_500_000_000_000).rounded(0), "3");
        assert_eq!(Usd(7).rounded(12), "0.000000000007");
    }
}
