//! What a request cost in dollars: the pricing table, the model-matching rule, and the
//! price of one response's usage, all in integer picodollars so that sums are exact.
//!
//! Prices are held as picodollars (10⁻¹² USD) per token — the same number as
//! micro-dollars per million tokens, so every published price (`$0.08 / MTok` is 80 000)
//! is a whole number and no token is ever rounded. A request's cost is an integer too;
//! only its printed form is a decimal ([`Usd`]).
//!
//! The table is built into the binary ([`Pricing::builtin`], `src/cost/pricing.json`)
//! and extended by `NEXUS_PRICING_FILE` in the same format ([`Pricing::extend`]).

mod table;
mod usd;

use std::collections::HashMap;

pub use table::TableError;
pub use usd::{AtomicUsd, Usd, PICOS_PER_USD};

use crate::usage::Usage;

/// Anthropic's published prices, with their date and source (the format is described in
/// `src/cost/table.rs` and the README).
pub const BUILTIN_TABLE: &str = include_str!("pricing.json");

/// One tier's prices, in picodollars per token (= micro-dollars per million tokens).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Uncached input.
    pub input: u64,
    /// Output.
    pub output: u64,
    /// Cache writes with the 5-minute lifetime.
    pub cache_write_5m: u64,
    /// Cache writes with the 1-hour lifetime.
    pub cache_write_1h: u64,
    /// Cache reads (hits and refreshes).
    pub cache_read: u64,
}

/// A model's long-context tier: the prices every token of a request takes when its
/// prompt (input + cache writes + cache reads) exceeds `above` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongContext {
    /// Prompt tokens a request may have at the base prices.
    pub above: u64,
    /// The prices past that.
    pub rates: Rates,
}

/// One model's prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrices {
    /// The prices of a request within the model's base context.
    pub base: Rates,
    /// The tier of long prompts, for models that have one.
    pub long_context: Option<LongContext>,
}

/// The pricing table: prices by model name, and the price of a web search.
#[derive(Debug, Clone)]
pub struct Pricing {
    models: HashMap<String, ModelPrices>,
    /// Picodollars per web search.
    web_search: u64,
}

impl Pricing {
    /// The table built into the binary.
    pub fn builtin() -> Pricing {
        let table = table::parse(BUILTIN_TABLE, true).expect("the built-in pricing table parses");
        Pricing {
            models: table.models,
            web_search: table.web_search.unwrap_or_default(),
        }
    }

    /// Adds the models of another table in the same format, replacing those of the same
    /// name; its `webSearchPerThousand`, if it has one, replaces this one's.
    pub fn extend(&mut self, text: &str) -> Result<(), TableError> {
        let table = table::parse(text, false)?;
        self.models.extend(table.models);
        if let Some(web_search) = table.web_search {
            self.web_search = web_search;
        }
        Ok(())
    }

    /// The prices of `model`: those of the exact key, else of the longest key that is a
    /// prefix of it ending at a `-` boundary (`claude-sonnet-4-5-20250929` →
    /// `claude-sonnet-4-5`); `None` for a model the table does not know.
    pub fn find(&self, model: &str) -> Option<&ModelPrices> {
        if let Some(prices) = self.models.get(model) {
            return Some(prices);
        }
        let mut rest = model;
        while let Some(dash) = rest.rfind('-') {
            rest = &rest[..dash];
            if let Some(prices) = self.models.get(rest) {
                return Some(prices);
            }
        }
        None
    }

    /// What a response with `usage` from `model` cost, in picodollars; `None` when the
    /// model is unknown (nothing is guessed).
    pub fn price(&self, model: &str, usage: &Usage) -> Option<u64> {
        self.find(model).map(|prices| self.cost(prices, usage))
    }

    /// What `usage` costs at `prices`, in picodollars (saturating: no real request comes
    /// near the 18 million dollars a u64 holds).
    pub fn cost(&self, prices: &ModelPrices, usage: &Usage) -> u64 {
        let n = u128::from;
        let prompt = n(usage.input_tokens)
            + n(usage.cache_creation_input_tokens)
            + n(usage.cache_read_input_tokens);
        let rates = match prices.long_context {
            Some(tier) if prompt > n(tier.above) => tier.rates,
            _ => prices.base,
        };
        // The total is what the API bills as cache writes; the 1-hour share of it takes
        // the 1-hour price and the rest the 5-minute one, so without a split all of it
        // is 5-minute writes, as the API priced them before the split existed.
        let writes = usage.cache_creation_input_tokens;
        let writes_1h = usage.cache_creation_1h_input_tokens.min(writes);
        let writes_5m = writes - writes_1h;
        let picos = n(usage.input_tokens) * n(rates.input)
            + n(usage.output_tokens) * n(rates.output)
            + n(writes_5m) * n(rates.cache_write_5m)
            + n(writes_1h) * n(rates.cache_write_1h)
            + n(usage.cache_read_input_tokens) * n(rates.cache_read)
            + n(usage.web_search_requests) * n(self.web_search);
        u64::try_from(picos).unwrap_or(u64::MAX)
    }

    /// Picodollars per web search.
    pub fn web_search(&self) -> u64 {
        self.web_search
    }

    /// The names the table prices.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
}

/// Whether `usage` holds anything a price applies to (a request that used nothing costs
/// nothing whatever its model, so it is never counted as unpriced).
pub fn billable(usage: &Usage) -> bool {
    usage.input_tokens
        | usage.output_tokens
        | usage.cache_creation_input_tokens
        | usage.cache_read_input_tokens
        | usage.web_search_requests
        != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picodollars of `usd` dollars written as a decimal (test shorthand).
    fn usd(text: &str) -> u64 {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let whole: u64 = whole.parse().unwrap();
        let fraction: u64 = format!("{fraction:0<12}").parse().unwrap();
        whole * PICOS_PER_USD as u64 + fraction
    }

    fn usage(input: u64, output: u64, writes: u64, reads: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: writes,
            cache_read_input_tokens: reads,
            ..Usage::default()
        }
    }

    #[test]
    fn the_builtin_table_has_every_model_and_its_date_and_source() {
        let p = Pricing::builtin();
        for model in [
            "claude-fable-5-2",
            "claude-opus-5-5",
            "claude-sonnet-5-5",
            "claude-haiku-5-5",
            "claude-opus-4-1-20250805",
            "claude-opus-4-20250514",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-20250514",
            "claude-3-7-sonnet-20250219",
            "claude-3-5-sonnet-20241022",
            "claude-haiku-4-5-20251001",
            "claude-3-5-haiku-20241022",
            "claude-3-haiku-20240307",
            "claude-3-opus-20240229",
        ] {
            assert!(p.find(model).is_some(), "{model}");
        }
        assert_eq!(p.web_search(), 10_000_000_000, "$10 per 1000 searches");
        let doc: serde_json::Value = serde_json::from_str(BUILTIN_TABLE).unwrap();
        assert!(doc["source"]
            .as_str()
            .unwrap()
            .contains("platform.claude.com"));
        assert!(doc["date"].as_str().unwrap().starts_with("20"));
        // Cache prices follow the published multipliers wherever the page does.
        let s = p.find("claude-sonnet-4-5").unwrap();
        assert_eq!(s.base.cache_write_5m * 4, s.base.input * 5);
        assert_eq!(s.base.cache_write_1h, s.base.input * 2);
        assert_eq!(s.base.cache_read * 10, s.base.input);
        assert_eq!(s.long_context.unwrap().above, 200_000);
    }

    #[test]
    fn models_resolve_to_the_longest_key_at_a_dash() {
        let mut p = Pricing::builtin();
        let base = |m: &str| p.find(m).map(|x| x.base.input);
        assert_eq!(base("claude-sonnet-4-5-20250929"), Some(3_000_000));
        assert_eq!(base("claude-opus-5-5-20261101"), Some(4_000_000));
        assert_eq!(base("claude-opus-5"), Some(5_000_000));
        assert_eq!(base("claude-fable-5-2-20261109"), Some(8_000_000));
        assert_eq!(base("claude-fable-5-20260609"), Some(10_000_000));
        // A prefix must end at a dash: no guessing across names.
        assert_eq!(base("claude-opus-5x"), None);
        assert_eq!(base("claude-sonnet-4-50"), None);
        assert_eq!(
            base("claude-opus-4-9"),
            None,
            "Opus 4 is keyed by its full id"
        );
        assert_eq!(base("claude-nova-9"), None);
        assert_eq!(base(""), None);
        assert_eq!(base("-"), None);
        p.extend(r#"{"models":{"claude":{"input":1,"output":1,"cacheWrite5m":1,"cacheWrite1h":1,"cacheRead":1}}}"#)
            .unwrap();
        let base = |m: &str| p.find(m).map(|x| x.base.input);
        assert_eq!(base("claude-nova-9"), Some(1_000_000));
        assert_eq!(base("claude-sonnet-4-5-2"), Some(3_000_000), "longest wins");
    }

    #[test]
    fn costs_are_exact() {
        let p = Pricing::builtin();
        let sonnet = p.find("claude-sonnet-4-5").unwrap();
        // 901 × $3 + 72 × $15 + 120 × $3.75 + 3000 × $0.30, per million.
        assert_eq!(p.cost(sonnet, &usage(901, 72, 120, 3000)), usd("0.005133"));
        // Haiku 3's odd prices: 0.25, 1.25, 0.30, 0.03.
        let haiku = p.find("claude-3-haiku-20240307").unwrap();
        assert_eq!(p.cost(haiku, &usage(1, 1, 1, 1)), usd("0.00000183"));
        assert_eq!(p.cost(haiku, &Usage::default()), 0);
    }

    #[test]
    fn cache_writes_split_by_lifetime() {
        let p = Pricing::builtin();
        let opus = p.find("claude-opus-4-1").unwrap();
        let mut u = usage(0, 0, 1_000_000, 0);
        assert_eq!(p.cost(opus, &u), usd("18.75"), "no split: all 5-minute");
        u.cache_creation_5m_input_tokens = 400_000;
        u.cache_creation_1h_input_tokens = 600_000;
        assert_eq!(p.cost(opus, &u), usd("25.5"), "0.4 × 18.75 + 0.6 × 30");
        u.cache_creation_5m_input_tokens = 0;
        assert_eq!(
            p.cost(opus, &u),
            usd("25.5"),
            "the rest of the total is 5-minute"
        );
        u.cache_creation_1h_input_tokens = 2_000_000;
        assert_eq!(
            p.cost(opus, &u),
            usd("30"),
            "never more writes than the total"
        );
    }

    #[test]
    fn long_context_prices_every_token_above_the_threshold() {
        let p = Pricing::builtin();
        let sonnet = p.find("claude-sonnet-4-5-20250929").unwrap();
        // 200 000 prompt tokens exactly: base prices.
        let at = usage(100_000, 1_000, 50_000, 50_000);
        assert_eq!(p.cost(sonnet, &at), usd("0.5175"));
        // One more: every token, output included, at the long-context prices.
        let above = usage(100_001, 1_000, 50_000, 50_000);
        assert_eq!(p.cost(sonnet, &above), usd("1.027506"));
        // A model without the tier keeps its prices.
        let sonnet46 = p.find("claude-sonnet-4-6").unwrap();
        assert_eq!(p.cost(sonnet46, &above), usd("0.517503"));
    }

    #[test]
    fn web_searches_cost_ten_dollars_a_thousand() {
        let p = Pricing::builtin();
        let haiku = p.find("claude-haiku-4-5").unwrap();
        let u = Usage {
            web_search_requests: 3,
            ..Usage::default()
        };
        assert_eq!(p.cost(haiku, &u), usd("0.03"));
        assert!(billable(&u));
        assert!(!billable(&Usage::default()));
    }

    #[test]
    fn unknown_models_are_not_priced() {
        let p = Pricing::builtin();
        assert_eq!(p.price("gpt-9", &usage(1, 1, 1, 1)), None);
        assert_eq!(
            p.price("claude-haiku-4-5", &usage(1_000_000, 0, 0, 0)),
            Some(usd("1"))
        );
    }

    #[test]
    fn a_file_adds_and_replaces_models_and_the_search_price() {
        let mut p = Pricing::builtin();
        p.extend(
            r#"{"models":{
                "claude-haiku-4-5":{"input":0.5,"output":2.5,"cacheWrite5m":0.625,"cacheWrite1h":1,"cacheRead":0.05},
                "acme-private-1":{"input":2,"output":8,"cacheWrite5m":2.5,"cacheWrite1h":4,"cacheRead":0.2}},
                "webSearchPerThousand":5}"#,
        )
        .unwrap();
        assert_eq!(p.find("claude-haiku-4-5").unwrap().base.input, 500_000);
        assert_eq!(
            p.find("acme-private-1-2027").unwrap().base.output,
            8_000_000
        );
        assert_eq!(p.find("claude-opus-4-1").unwrap().base.input, 15_000_000);
        assert_eq!(p.web_search(), 5_000_000_000);
        // A broken table changes nothing.
        let before = p.find("claude-haiku-4-5").copied();
        assert!(p
            .extend(r#"{"models":{"claude-haiku-4-5":{"input":9}}}"#)
            .is_err());
        assert_eq!(p.find("claude-haiku-4-5").copied(), before);
    }

    #[test]
    fn huge_figures_saturate_instead_of_wrapping() {
        let p = Pricing::builtin();
        let opus = p.find("claude-opus-4-1").unwrap();
        assert_eq!(p.cost(opus, &usage(u64::MAX, u64::MAX, 0, 0)), u64::MAX);
    }
}
