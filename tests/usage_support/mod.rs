//! Shared by the usage-parser tests: cutting a body into the pieces reads would deliver.

use proptest::prelude::*;

/// Cuts `body` at the given positions (any order, repeats allowed).
pub fn cut<'a>(body: &'a [u8], at: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = at.iter().map(|i| i.index(body.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for p in points {
        pieces.push(&body[from..p]);
        from = p;
    }
    pieces.push(&body[from..]);
    pieces
}
