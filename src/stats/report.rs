//! The console report, in the seed's table layout, printed every `STATS_INTERVAL_SECS`.

use std::fmt::Write;
use std::time::Duration;

use super::registry::DomainSnapshot;

const HEAVY_RULE: &str =
    "==========================================================================================";
const LIGHT_RULE: &str =
    "------------------------------------------------------------------------------------------";

/// Renders the report; `None` when no domain has a request yet (nothing is printed then).
/// `local_time` is the title's timestamp, e.g. `1/13/2025, 3:45:23 PM`.
pub fn render(
    stats: &[(String, DomainSnapshot)],
    local_time: &str,
    uptime: Duration,
) -> Option<String> {
    let rows: Vec<_> = stats.iter().filter(|(_, s)| s.requests > 0).collect();
    if rows.is_empty() {
        return None;
    }
    let mut out = String::new();
    let _ = writeln!(out, "{HEAVY_RULE}");
    let _ = writeln!(
        out,
        "Token Usage Report - {local_time} (Uptime: {})",
        format_uptime(uptime)
    );
    let _ = writeln!(out, "{HEAVY_RULE}");
    let _ = writeln!(
        out,
        "{:<25}{:>5}{:>7}{:>7}{:>7}{:>12}{:>13}{:>13}{:>13}{:>13}{:>12}",
        "Domain",
        "Reqs",
        "Query",
        "Infer",
        "Tools",
        "Input Tok",
        "Output Tok",
        "Total Tok",
        "Cache Write",
        "Cache Read",
        "Cost $"
    );
    let _ = writeln!(out, "{LIGHT_RULE}");
    let mut total = DomainSnapshot::default();
    for (domain, s) in &rows {
        row(&mut out, domain, s);
        total.requests += s.requests;
        total.query_evaluations += s.query_evaluations;
        total.inferences += s.inferences;
        total.tool_calls += s.tool_calls;
        total.input_tokens += s.input_tokens;
        total.output_tokens += s.output_tokens;
        total.cache_creation_input_tokens += s.cache_creation_input_tokens;
        total.cache_read_input_tokens += s.cache_read_input_tokens;
        total.cost.0 += s.cost.0;
    }
    let _ = writeln!(out, "{LIGHT_RULE}");
    row(&mut out, "TOTAL", &total);
    let _ = writeln!(out, "{HEAVY_RULE}");
    Some(out)
}

fn row(out: &mut String, domain: &str, s: &DomainSnapshot) {
    let _ = writeln!(
        out,
        "{:<25}{:>5}{:>7}{:>7}{:>7}{:>12}{:>13}{:>13}{:>13}{:>13}{:>12}",
        domain,
        s.requests,
        s.query_evaluations,
        s.inferences,
        s.tool_calls,
        thousands(s.input_tokens),
        thousands(s.output_tokens),
        thousands(s.input_tokens + s.output_tokens),
        thousands(s.cache_creation_input_tokens),
        thousands(s.cache_read_input_tokens),
        // Rounded for reading; /token-stats and /metrics have every digit.
        s.cost.rounded(4),
    );
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2m 15s`, `1h 0m 5s`, `42s`.
pub fn format_uptime(uptime: Duration) -> String {
    let secs = uptime.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// The current local time as `M/D/YYYY, h:mm:ss AM` (the seed's en-US format).
pub fn local_time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r writes into the tm we own; it reads TZ/zoneinfo itself.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    let hour12 = match tm.tm_hour % 12 {
        0 => 12,
        h => h,
    };
    let meridiem = if tm.tm_hour < 12 { "AM" } else { "PM" };
    format!(
        "{}/{}/{}, {}:{:02}:{:02} {meridiem}",
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_year + 1900,
        hour12,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(
        requests: u64,
        query: u64,
        infer: u64,
        tools: u64,
        input: u64,
        output: u64,
    ) -> DomainSnapshot {
        DomainSnapshot {
            requests,
            query_evaluations: query,
            inferences: infer,
            tool_calls: tools,
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        }
    }

    #[test]
    fn matches_the_seed_layout() {
        let stats = vec![
            (
                "claude-1.example.com".to_string(),
                DomainSnapshot {
                    cost: crate::cost::Usd(1_234_560_000_000),
                    ..snap(12, 8, 4, 3, 5234, 8921)
                },
            ),
            (
                "claude-2.example.com".to_string(),
                snap(8, 5, 3, 0, 3456, 6789),
            ),
            ("idle.example.com".to_string(), snap(0, 0, 0, 0, 0, 0)),
            ("localhost".to_string(), snap(3, 2, 1, 2, 892, 1234)),
        ];
        let report = render(&stats, "1/13/2025, 3:45:23 PM", Duration::from_secs(135)).unwrap();
        // The seed's columns, character for character; cache columns follow on the right.
        let seed_columns: Vec<String> = report
            .lines()
            .map(|l| l.chars().take(89).collect())
            .collect();
        let expected = "\
==========================================================================================
Token Usage Report - 1/13/2025, 3:45:23 PM (Uptime: 2m 15s)
==========================================================================================
Domain                    Reqs  Query  Infer  Tools   Input Tok   Output Tok    Total Tok
------------------------------------------------------------------------------------------
claude-1.example.com        12      8      4      3       5,234        8,921       14,155
claude-2.example.com         8      5      3      0       3,456        6,789       10,245
localhost                    3      2      1      2         892        1,234        2,126
------------------------------------------------------------------------------------------
TOTAL                       23     15      8      5       9,582       16,944       26,526
==========================================================================================";
        let expected: Vec<String> = expected
            .lines()
            .map(|l| l.chars().take(89).collect())
            .collect();
        assert_eq!(seed_columns, expected);
        assert!(report
            .lines()
            .nth(3)
            .unwrap()
            .ends_with("  Cache Write   Cache Read      Cost $"));
        assert!(report.lines().nth(5).unwrap().ends_with("      1.2346"));
        assert!(report.lines().nth(9).unwrap().ends_with("      1.2346"));
    }

    #[test]
    fn nothing_to_report_prints_nothing() {
        assert_eq!(render(&[], "t", Duration::ZERO), None);
        assert_eq!(
            render(
                &[("a".into(), DomainSnapshot::default())],
                "t",
                Duration::ZERO
            ),
            None
        );
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(format_uptime(Duration::from_secs(42)), "42s");
        assert_eq!(format_uptime(Duration::from_secs(3605)), "1h 0m 5s");
    }
}
