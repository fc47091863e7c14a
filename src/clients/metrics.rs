//! The named clients' series in `/metrics`: one set per client in the file (the file
//! bounds them, as `NEXUS_MAX_DOMAINS` bounds the domains').

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::set::ClientSet;

/// Appends every client's series to `out` (nothing without named clients).
pub fn render(set: &ClientSet, now_ms: u64, out: &mut String) {
    if set.is_empty() {
        return;
    }
    let series = [
        (
            "nexus_client_requests_total",
            "counter",
            "Requests of each named client (CLIENTS_FILE) that ended, since start.",
        ),
        (
            "nexus_client_tokens_total",
            "counter",
            "Tokens of every kind each named client used, since start.",
        ),
        (
            "nexus_client_cost_usd_total",
            "counter",
            "What each named client's priced requests cost, USD, since start.",
        ),
        (
            "nexus_client_in_flight",
            "gauge",
            "Each named client's requests in flight.",
        ),
    ];
    for (name, kind, help) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for client in set.all() {
            let s = &client.state;
            let value = match name {
                "nexus_client_requests_total" => s.requests.load(Relaxed).to_string(),
                "nexus_client_tokens_total" => s.tokens_used().to_string(),
                "nexus_client_cost_usd_total" => {
                    crate::cost::Usd(u128::from(s.cost_picos.load(Relaxed))).to_string()
                }
                _ => s.in_flight.load(Relaxed).to_string(),
            };
            let _ = writeln!(out, "{name}{{client=\"{}\"}} {value}", client.name());
        }
    }
    let _ = writeln!(
        out,
        "# HELP nexus_client_budget_used_ratio What each named client has spent of each budget in its window (1 = spent).\n\
         # TYPE nexus_client_budget_used_ratio gauge"
    );
    for client in set.all() {
        for budget in &client.spec.budgets {
            let spent = client.state.spent(budget.kind, budget.window, now_ms);
            let _ = writeln!(
                out,
                "nexus_client_budget_used_ratio{{client=\"{}\",kind=\"{}\",window=\"{}\"}} {}",
                client.name(),
                budget.kind.name(),
                budget.window.name(),
                spent as f64 / budget.limit.max(1) as f64
            );
        }
    }
}
