//! One named client at run time: its entry in the file, what it has spent, and the check
//! a request passes before anything goes upstream.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde_json::{json, Value};

use super::file::{Budget, ClientSpec, Kind};
use super::pattern::allowed;
use super::spend::{FleetSpend, Spend};
use super::window::{Moment, Window};
use crate::cost::Usd;

/// Picodollars in a micro-dollar: budgets count dollars in micro-dollars.
const PICOS_PER_MICRO: u128 = 1_000_000;

/// What a client has done, kept across reloads of the file (matched by name).
#[derive(Debug, Default)]
pub struct ClientState {
    /// Micro-dollars and tokens, per window.
    usd: Spend,
    tokens: Spend,
    pub(super) in_flight: AtomicU32,
    // Since start, as `/token-stats` counts.
    pub(super) requests: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cache_creation_input_tokens: AtomicU64,
    cache_read_input_tokens: AtomicU64,
    pub(super) cost_picos: AtomicU64,
}

impl ClientState {
    fn spend(&self, kind: Kind) -> &Spend {
        match kind {
            Kind::Usd => &self.usd,
            Kind::Tokens => &self.tokens,
        }
    }

    /// Tokens of every kind used since start.
    pub(super) fn tokens_used(&self) -> u64 {
        [
            &self.input_tokens,
            &self.output_tokens,
            &self.cache_creation_input_tokens,
            &self.cache_read_input_tokens,
        ]
        .iter()
        .map(|n| n.load(Relaxed))
        .sum()
    }

    /// What is spent of `kind` in `window` as of `now_ms` (micro-dollars or tokens).
    pub(super) fn spent(&self, kind: Kind, window: Window, now_ms: u64) -> u64 {
        self.spend(kind).spent(window, now_ms)
    }

    /// Counts spend made now, at `at_ms` (a request that ended).
    pub fn add_spend(&self, at_ms: u64, tokens: u64, micro_dollars: u64) {
        let at = Moment::at(at_ms);
        self.usd.add_at(&at, micro_dollars);
        self.tokens.add_at(&at, tokens);
    }

    /// Counts spend made at `at_ms`, maybe long past (read back from the ledger at start).
    pub fn add_past_spend(&self, at_ms: u64, tokens: u64, micro_dollars: u64) {
        self.usd.add_past(at_ms, micro_dollars);
        self.tokens.add_past(at_ms, tokens);
    }

    /// Replaces what the rest of the fleet spent (micro-dollars and tokens), read at
    /// `now_ms`.
    pub fn set_fleet_spend(&self, usd: &FleetSpend, tokens: &FleetSpend, now_ms: u64) {
        self.usd.set_fleet(usd, now_ms);
        self.tokens.set_fleet(tokens, now_ms);
    }
}

/// What one request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// None when unpriced: it spends no dollars (never a guess).
    pub cost: Option<Usd>,
}

impl Used {
    /// Tokens as a budget counts them: every kind.
    pub fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// The cost in micro-dollars (see [`micro_dollars`]).
    pub fn micro_dollars(&self) -> u64 {
        micro_dollars(self.cost)
    }
}

/// A cost in micro-dollars, rounded up: a budget never misses a fraction.
pub fn micro_dollars(cost: Option<Usd>) -> u64 {
    let picos = cost.map_or(0, |usd| usd.0);
    u64::try_from(picos.div_ceil(PICOS_PER_MICRO)).unwrap_or(u64::MAX)
}

/// Why a request is refused before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A domain or model outside the client's lists: 403 `permission_error`.
    Forbidden(String),
    /// Over a budget, or at `maxConcurrent`: 429 `rate_limit_error`, and when to retry
    /// (seconds, for `retry-after`).
    Limited { message: String, retry_after: u64 },
}

/// A named client.
#[derive(Debug)]
pub struct Client {
    pub spec: ClientSpec,
    pub state: Arc<ClientState>,
}

impl Client {
    pub fn name(&self) -> &Arc<str> {
        &self.spec.name
    }

    /// The check before the upstream: the domain and model lists, every budget, then the
    /// concurrency limit. Admitted, the request counts as in flight until the returned
    /// guard is dropped. Spend is counted when a request ends, so requests admitted
    /// together may overshoot a budget by their own cost.
    pub fn admit(
        self: &Arc<Client>,
        domain: &str,
        model: Option<&str>,
        now_ms: u64,
    ) -> Result<Admitted, Refusal> {
        let name = self.name();
        if !allowed(&self.spec.domains, domain) {
            return Err(Refusal::Forbidden(format!(
                "client {name} may not use domain {domain}"
            )));
        }
        if let Some(model) = model.filter(|m| !allowed(&self.spec.models, m)) {
            return Err(Refusal::Forbidden(format!(
                "client {name} may not use model {model}"
            )));
        }
        let now = Moment::at(now_ms);
        for budget in &self.spec.budgets {
            let spend = self.state.spend(budget.kind);
            let spent = spend.spent_at(budget.window, &now);
            if spent >= budget.limit {
                let frees = spend.frees_at(budget.window, budget.limit, now_ms);
                return Err(Refusal::Limited {
                    message: format!(
                        "client {name} has used its {} budget for {}: {} of {}; it frees at {}",
                        budget.kind.name(),
                        describe(budget.window),
                        amount(budget.kind, spent),
                        amount(budget.kind, budget.limit),
                        crate::ledger::row::iso(frees),
                    ),
                    retry_after: frees.saturating_sub(now_ms).div_ceil(1000).max(1),
                });
            }
        }
        let before = self.state.in_flight.fetch_add(1, Relaxed);
        if let Some(max) = self.spec.max_concurrent.filter(|max| before >= *max) {
            self.state.in_flight.fetch_sub(1, Relaxed);
            return Err(Refusal::Limited {
                message: format!(
                    "client {name} already has {before} request(s) in flight (maxConcurrent {max})"
                ),
                retry_after: 1,
            });
        }
        Ok(Admitted {
            client: Arc::clone(self),
        })
    }

    /// The client as `/token-stats`, `/api/clients` and `/api/me` show it (no key).
    pub fn to_json(&self, now_ms: u64) -> Value {
        let s = &self.state;
        let cost = Usd(u128::from(s.cost_picos.load(Relaxed)));
        json!({
            "requestCount": s.requests.load(Relaxed),
            "inputTokens": s.input_tokens.load(Relaxed),
            "outputTokens": s.output_tokens.load(Relaxed),
            "cacheCreationInputTokens": s.cache_creation_input_tokens.load(Relaxed),
            "cacheReadInputTokens": s.cache_read_input_tokens.load(Relaxed),
            "costUsd": crate::ledger::row::usd_json(Some(cost)),
            "inFlight": s.in_flight.load(Relaxed),
            "maxConcurrent": self.spec.max_concurrent,
            "budgets": self.spec.budgets.iter().map(|b| self.budget_json(b, now_ms)).collect::<Vec<_>>(),
        })
    }

    fn budget_json(&self, budget: &Budget, now_ms: u64) -> Value {
        let spend = self.state.spend(budget.kind);
        let spent = spend.spent(budget.window, now_ms);
        let resets = match budget.window.calendar(now_ms) {
            Some(calendar) => Some(calendar.end_ms),
            None if spent >= budget.limit => {
                Some(spend.frees_at(budget.window, budget.limit, now_ms))
            }
            // Under its limit, a rolling window's next change is its oldest spend leaving.
            None => spend.oldest_leaves_at(now_ms),
        };
        let number = |n: u64| match budget.kind {
            Kind::Usd => json!(n as f64 / 1e6),
            Kind::Tokens => json!(n),
        };
        json!({
            "kind": budget.kind.name(),
            "window": budget.window.name(),
            "limit": number(budget.limit),
            "spent": number(spent),
            "resetsAt": resets.map(crate::ledger::row::iso),
        })
    }
}

/// How a refusal names a window.
fn describe(window: Window) -> &'static str {
    match window {
        Window::FiveHours => "the last 5 hours",
        Window::Day => "the day (UTC)",
        Window::Week => "the week (UTC, from Monday)",
        Window::Month => "the month (UTC)",
    }
}

/// A budget amount for people: dollars to the cent, or tokens.
fn amount(kind: Kind, n: u64) -> String {
    match kind {
        Kind::Usd => format!("${}.{:02}", n / 1_000_000, n % 1_000_000 / 10_000),
        Kind::Tokens => format!("{n} tokens"),
    }
}

/// A request let through: in flight until dropped.
#[derive(Debug)]
pub struct Admitted {
    client: Arc<Client>,
}

impl Admitted {
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The request ended at `now_ms` having used `used`: it counts now.
    pub fn finish(&self, used: &Used, now_ms: u64) {
        let s = &self.client.state;
        s.add_spend(now_ms, used.tokens(), used.micro_dollars());
        s.requests.fetch_add(1, Relaxed);
        s.input_tokens.fetch_add(used.input_tokens, Relaxed);
        s.output_tokens.fetch_add(used.output_tokens, Relaxed);
        s.cache_creation_input_tokens
            .fetch_add(used.cache_creation_input_tokens, Relaxed);
        s.cache_read_input_tokens
            .fetch_add(used.cache_read_input_tokens, Relaxed);
        let picos = used
            .cost
            .map_or(0, |usd| u64::try_from(usd.0).unwrap_or(u64::MAX));
        s.cost_picos.fetch_add(picos, Relaxed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.client.state.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::file::parse_clients;

    /// 2026-12-09T15:30:00Z.
    const NOW: u64 = 1_796_830_200_000;

    fn client(json: &str) -> Arc<Client> {
        let spec = parse_clients(&format!(r#"{{"clients":[{json}]}}"#))
            .unwrap()
            .remove(0);
        Arc::new(Client {
            spec,
            state: Arc::default(),
        })
    }

    fn dollars(usd: f64) -> Used {
        Used {
            input_tokens: 10,
            output_tokens: 5,
            cost: Some(Usd((usd * 1e12) as u128)),
            ..Used::default()
        }
    }

    #[test]
    fn a_daily_dollar_budget_refuses_once_spent_until_midnight() {
        let alice = client(r#"{"name":"alice","key":"k","budget":{"usd":{"day":0.01}}}"#);
        let first = alice
            .admit("a.example", Some("claude-sonnet-4-5"), NOW)
            .unwrap();
        first.finish(&dollars(0.012), NOW);
        drop(first);
        let Err(Refusal::Limited {
            message,
            retry_after,
        }) = alice.admit("a.example", None, NOW + 1000)
        else {
            panic!("over budget");
        };
        assert!(message.contains("client alice"), "{message}");
        assert!(message.contains("usd budget for the day"), "{message}");
        assert!(message.contains("$0.01 of $0.01"), "{message}");
        assert!(message.contains("2026-12-10T00:00:00.000Z"), "{message}");
        let midnight = Window::Day.calendar(NOW).unwrap().end_ms;
        assert_eq!(retry_after, (midnight - NOW - 1000) / 1000);
        assert!(
            alice.admit("a.example", None, midnight).is_ok(),
            "a new day"
        );
    }

    #[test]
    fn token_budgets_count_every_kind_and_free_as_the_window_rolls() {
        let bot = client(r#"{"name":"bot","key":"k","budget":{"tokens":{"5h":100}}}"#);
        let used = Used {
            input_tokens: 40,
            output_tokens: 30,
            cache_creation_input_tokens: 20,
            cache_read_input_tokens: 10,
            cost: None,
        };
        bot.admit("d", None, NOW).unwrap().finish(&used, NOW);
        let Err(Refusal::Limited { retry_after, .. }) = bot.admit("d", None, NOW + 60_000) else {
            panic!("100 tokens of 100");
        };
        let later = NOW + 60_000 + retry_after * 1000;
        assert!(
            later - NOW >= 5 * 3_600_000,
            "counts for at least five hours"
        );
        assert!(bot.admit("d", None, later).is_ok());
    }

    #[test]
    fn max_concurrent_counts_requests_in_flight() {
        let c = client(r#"{"name":"c","key":"k","maxConcurrent":1}"#);
        let first = c.admit("d", None, NOW).unwrap();
        assert!(matches!(
            c.admit("d", None, NOW),
            Err(Refusal::Limited { retry_after: 1, .. })
        ));
        assert_eq!(c.to_json(NOW)["inFlight"], 1);
        assert_eq!(c.to_json(NOW)["maxConcurrent"], 1);
        drop(first);
        assert!(c.admit("d", None, NOW).is_ok());
    }

    #[test]
    fn domains_and_models_outside_the_lists_are_forbidden() {
        let c = client(
            r#"{"name":"c","key":"k","domains":["*.example.com"],"models":["claude-sonnet-*"]}"#,
        );
        assert!(c
            .admit("team.example.com", Some("claude-sonnet-4-5"), NOW)
            .is_ok());
        assert!(
            c.admit("team.example.com", None, NOW).is_ok(),
            "no model named"
        );
        let Err(Refusal::Forbidden(why)) = c.admit("other.org", None, NOW) else {
            panic!("domain outside the list");
        };
        assert!(why.contains("domain other.org"), "{why}");
        let Err(Refusal::Forbidden(why)) =
            c.admit("team.example.com", Some("claude-opus-4-1"), NOW)
        else {
            panic!("model outside the list");
        };
        assert!(why.contains("model claude-opus-4-1"), "{why}");
    }

    #[test]
    fn json_shows_counts_and_budgets() {
        let c =
            client(r#"{"name":"c","key":"k","budget":{"usd":{"month":60},"tokens":{"5h":1000}}}"#);
        c.admit("d", None, NOW).unwrap().finish(&dollars(0.5), NOW);
        let json = c.to_json(NOW);
        assert_eq!(json["requestCount"], 1);
        assert_eq!(json["inputTokens"], 10);
        assert_eq!(json["costUsd"], 0.5);
        assert_eq!(json["inFlight"], 0);
        assert_eq!(json["maxConcurrent"], Value::Null, "no limit");
        let budgets = json["budgets"].as_array().unwrap();
        let usd = budgets.iter().find(|b| b["kind"] == "usd").unwrap();
        assert_eq!(usd["window"], "month");
        assert_eq!(
            (usd["limit"].as_f64(), usd["spent"].as_f64()),
            (Some(60.0), Some(0.5))
        );
        assert_eq!(usd["resetsAt"], "2027-01-01T00:00:00.000Z");
        let tokens = budgets.iter().find(|b| b["kind"] == "tokens").unwrap();
        assert_eq!(
            (tokens["limit"].as_u64(), tokens["spent"].as_u64()),
            (Some(1000), Some(15))
        );
        assert!(
            tokens["resetsAt"].is_string(),
            "the oldest spend leaves then"
        );
    }
}
