//! What every response fixture costs, by the built-in table: the figure each is priced at
//! is worked out by hand below, and the scanners must arrive at it exactly however the
//! body is cut (every two-piece split, every byte apart, random pieces).

mod usage_support;

use nexus::cost::{Pricing, Usd};
use nexus::usage::{JsonResponseScanner, ResponseFacts, SseScanner};
use proptest::prelude::*;
use usage_support::cut;

/// A response body and what it costs: `Some(USD)` priced, `None` not priced (no model,
/// or one no table knows).
struct Case {
    name: &'static str,
    bytes: &'static [u8],
    cost: Option<&'static str>,
}

macro_rules! case {
    ($file:literal, $cost:expr) => {
        Case {
            name: $file,
            bytes: include_bytes!(concat!("fixtures/", $file)),
            cost: $cost,
        }
    };
}

// Prices in USD per million tokens (src/cost/pricing.json): Opus 4.1 15 / 75, cache
// write 18.75, read 1.50; Sonnet 4.5 3 / 15, 3.75 (5m) / 6 (1h), 0.30, and above 200k
// prompt tokens 6 / 22.50, 7.50 / 12, 0.60; Haiku 4.5 1 / 5, 1.25 / 2, 0.10; Haiku 3.5
// 0.80 / 4; Haiku 5.5 above 100k prompt tokens 0.50 / 2.50, read 0.05; web search 0.01
// each. Sums below are in micro-dollars (tokens × price per million).
const CASES: &[Case] = &[
    // 25×15 + 58×75 = 375 + 4350 = 4725
    case!("usage/stream-text.sse", Some("0.004725")),
    // 472×3 + 2048×0.3 + 89×15 = 1416 + 614.4 + 1335 = 3365.4
    case!("usage/stream-text-tool-use.sse", Some("0.0033654")),
    // 21×3 + 3×3.75 + 512×0.3 + 64×15 = 63 + 11.25 + 153.6 + 960
    case!("stream-text-tool-use.sse", Some("0.00118785")),
    // 86×3 + 212×15 = 258 + 3180
    case!("usage/stream-thinking.sse", Some("0.003438")),
    // 3×3 + 1542×3.75 (split: all 5m) + 18231×0.3 + 17×15 = 9 + 5782.5 + 5469.3 + 255
    case!("usage/stream-cache.sse", Some("0.0115158")),
    // 1210×15 + 512×1.5 + 1×75 = 18150 + 768 + 75 (cut short by an error: what it used)
    case!("usage/stream-error.sse", Some("0.018993")),
    // 640×1 + 4096×0.1 + 61×5 = 640 + 409.6 + 305
    case!("usage/stream-crlf.sse", Some("0.0013546")),
    case!("usage/stream-cr.sse", Some("0.0013546")),
    // 10682×15 + 510×75 = 160230 + 38250, plus one search (10000)
    case!("usage/stream-server-tool-use.sse", Some("0.20848")),
    // 198 012 prompt tokens, under 200k: 12×3 + 8000×3.75 + 40000×6 + 150000×0.3 + 640×15
    //   = 36 + 30000 + 240000 + 45000 + 9600
    case!("usage/stream-cache-ttl.sse", Some("0.324636")),
    // 202 000 prompt tokens, over 200k, every token at the long-context prices:
    // 2000×6 + 10000×7.5 + 40000×12 + 150000×0.6 + 1500×22.5
    //   = 12000 + 75000 + 480000 + 90000 + 33750
    case!("usage/stream-long-context.sse", Some("0.69075")),
    // 12×0.8 + 20×4 = 9.6 + 80
    case!("usage/stream-no-event-names.sse", Some("0.0000896")),
    // 901×3 + 120×3.75 + 3000×0.3 + 72×15 = 2703 + 450 + 900 + 1080
    case!("usage/message-tool-use.json", Some("0.005133")),
    // 57×3 + 11×3.75 + 1024×0.3 + 19×15 = 171 + 41.25 + 307.2 + 285
    case!("message-text.json", Some("0.00080445")),
    // 5321×15 + 24000×1.5 + 188×75 = 79815 + 36000 + 14100, plus one search
    case!("usage/message-server-tool-use.json", Some("0.139915")),
    // 3100×1 + 5000×1.25 + 20000×2 + 60000×0.1 + 412×5 = 3100 + 6250 + 40000 + 6000 +
    // 2060, plus two searches (20000)
    case!("usage/message-cache-ttl.json", Some("0.07741")),
    // Haiku 5.5, 100 001 prompt tokens, over 100k: 60000×0.5 + 40001×0.05 + 4×2.5
    //   = 30000 + 2000.05 + 10
    case!("usage/message-long-context.json", Some("0.03201005")),
    // A model no table knows: not priced, never guessed.
    case!("usage/message-unknown-model.json", None),
    // An error body has neither model nor usage.
    case!("usage/message-error.json", None),
];

fn facts(case: &Case, pieces: &[&[u8]]) -> ResponseFacts {
    if case.name.ends_with(".sse") {
        let mut s = SseScanner::new(false);
        for p in pieces {
            s.feed(p);
        }
        s.take_facts()
    } else {
        let mut s = JsonResponseScanner::new(false);
        for p in pieces {
            s.feed(p);
        }
        assert!(s.finish(), "{}", case.name);
        s.take_facts()
    }
}

fn cost(pricing: &Pricing, case: &Case, pieces: &[&[u8]]) -> Option<String> {
    let f = facts(case, pieces);
    let picos = pricing.price(f.model.as_deref()?, &f.usage)?;
    Some(Usd::from_picos(picos).to_string())
}

#[test]
fn every_fixture_is_priced_as_worked_out_by_hand() {
    let pricing = Pricing::builtin();
    for case in CASES {
        assert_eq!(
            cost(&pricing, case, &[case.bytes]).as_deref(),
            case.cost,
            "{}",
            case.name
        );
    }
}

#[test]
fn every_fixture_under_test_is_in_the_list() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for sub in ["", "usage/"] {
        for entry in std::fs::read_dir(format!("{dir}/{sub}")).unwrap() {
            let name = format!("{sub}{}", entry.unwrap().file_name().to_string_lossy());
            let response = name.contains("stream-") || name.contains("message-");
            if response && !name.ends_with(".md") {
                assert!(
                    CASES.iter().any(|c| c.name == name),
                    "{name} has no worked-out cost"
                );
            }
        }
    }
}

#[test]
fn every_split_of_every_fixture_costs_the_same() {
    let pricing = Pricing::builtin();
    for case in CASES {
        for at in 0..=case.bytes.len() {
            let (a, b) = case.bytes.split_at(at);
            assert_eq!(
                cost(&pricing, case, &[a, b]).as_deref(),
                case.cost,
                "{} split at {at}",
                case.name
            );
        }
        let bytes: Vec<&[u8]> = case.bytes.chunks(1).collect();
        assert_eq!(
            cost(&pricing, case, &bytes).as_deref(),
            case.cost,
            "{}",
            case.name
        );
    }
}

proptest! {
    #[test]
    fn random_cuts_cost_the_same(
        which in 0..CASES.len(),
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let pricing = Pricing::builtin();
        let case = &CASES[which];
        let got = cost(&pricing, case, &cut(case.bytes, &at));
        prop_assert_eq!(got.as_deref(), case.cost);
    }
}
