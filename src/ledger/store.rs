//! What the writer and the query thread ask of a database, whichever engine it is.

use super::row::{Bodies, Row};
use crate::cost::Usd;

/// A database connection holding the ledger's schema.
pub trait Store: Send {
    /// Inserts `rows` in one transaction (bodies already masked and compressed). A batch
    /// whose transaction failed is written again: an engine that cannot tell whether a
    /// failed commit went in (a lost PostgreSQL connection) leaves a row whose id is
    /// already stored as it is. `pace`: whether to offer the core to other threads
    /// between statements.
    fn insert(&mut self, rows: &[Row], pace: Pace) -> Result<(), String>;
    /// Rows newest first, filtered.
    fn requests(&mut self, filter: &RequestFilter) -> Result<Vec<Row>, String>;
    /// One row and its stored (compressed) bodies.
    fn request(&mut self, id: &str) -> Result<Option<(Row, Option<Bodies>)>, String>;
    /// Sums over a time range, grouped.
    fn usage(&mut self, query: &UsageQuery) -> Result<Vec<UsageLine>, String>;
    /// Deletes rows (and their bodies) that began before `ms`; returns how many.
    fn delete_before(&mut self, ms: u64) -> Result<u64, String>;
    /// What named clients spent in `[from_ms, to_ms)`, per client and `bucket_ms`-long
    /// bucket.
    fn spend(&mut self, from_ms: u64, to_ms: u64, bucket_ms: u64)
        -> Result<Vec<SpendLine>, String>;
}

/// How the writer spends its core on a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The writer keeps up: it offers its core to any waiting thread every few dozen rows,
    /// so that a worker's request never waits behind a batch.
    Polite,
    /// Rows are piling up: the batch is written straight through, since a full queue
    /// loses rows.
    Behind,
}

/// `GET /api/requests` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub limit: u32,
    pub domain: Option<String>,
    pub client: Option<String>,
    pub model: Option<String>,
    pub status: Option<u16>,
    /// Rows that began at or after this (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Rows that began before this.
    pub to_ms: Option<u64>,
}

impl RequestFilter {
    /// The `WHERE` conditions (a column and its comparison) and their values, in order,
    /// for an engine to number as its placeholders (`?N` or `$N`): the same filter reads
    /// the same in both.
    pub fn conditions(&self) -> Vec<(&'static str, FilterValue<'_>)> {
        let mut out = Vec::new();
        for (condition, value) in [
            ("domain =", &self.domain),
            ("client =", &self.client),
            ("model =", &self.model),
        ] {
            if let Some(v) = value {
                out.push((condition, FilterValue::Text(v)));
            }
        }
        if let Some(status) = self.status {
            out.push(("status =", FilterValue::Status(status.into())));
        }
        if let Some(from) = self.from_ms {
            out.push(("ts_ms >=", FilterValue::Time(clamp(from))));
        }
        if let Some(to) = self.to_ms {
            out.push(("ts_ms <", FilterValue::Time(clamp(to))));
        }
        out
    }

    /// `SELECT … WHERE …` for these filters, newest first, `placeholder(n)` naming the
    /// n-th value (1-based) as the engine writes it.
    pub fn sql(&self, placeholder: impl Fn(usize) -> String) -> String {
        let mut sql = format!("SELECT {COLUMNS} FROM requests WHERE 1 = 1");
        for (i, (condition, _)) in self.conditions().iter().enumerate() {
            sql.push_str(&format!(" AND {condition} {}", placeholder(i + 1)));
        }
        sql.push_str(&format!(
            " ORDER BY ts_ms DESC, id DESC LIMIT {}",
            self.limit
        ));
        sql
    }
}

/// A filter's value, typed as its column is (PostgreSQL binds INTEGER and BIGINT apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterValue<'a> {
    Text(&'a str),
    /// The INTEGER `status`.
    Status(i32),
    /// The BIGINT `ts_ms`.
    Time(i64),
}

/// ms as the BIGINT columns hold them.
fn clamp(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// `GET /api/usage`: `[from, to)` in ms since the epoch, the grouping, and optionally a
/// second grouping within each group (`split`: e.g. each day by model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub from_ms: u64,
    pub to_ms: u64,
    pub group: Group,
    pub split: Option<Group>,
}

impl UsageQuery {
    /// `SELECT key, [split,] sums …` over `[$from, $to)`; `from` and `to` are the
    /// engine's first two placeholders.
    pub fn sql(&self, from: &str, to: &str) -> String {
        let key = self.group.sql();
        let (split, by) = match self.split {
            Some(s) => (format!("{} AS s, ", s.sql()), "k, s"),
            None => ("NULL AS s, ".to_string(), "k"),
        };
        format!(
            "SELECT {key} AS k, {split}{USAGE_SUMS} FROM requests \
             WHERE ts_ms >= {from} AND ts_ms < {to} GROUP BY {by} ORDER BY MIN(ts_ms), {by}"
        )
    }
}

/// What `/api/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Hour,
    Day,
    Model,
    Domain,
    Client,
    Credential,
}

impl Group {
    /// Whether this groups by time (only the other kinds split a group).
    pub fn is_time(self) -> bool {
        matches!(self, Group::Hour | Group::Day)
    }

    /// Parses the `group` parameter.
    pub fn parse(name: &str) -> Option<Group> {
        Some(match name {
            "hour" => Group::Hour,
            "day" => Group::Day,
            "model" => Group::Model,
            "domain" => Group::Domain,
            "client" => Group::Client,
            "credential" => Group::Credential,
            _ => return None,
        })
    }

    /// The SQL expression rows are grouped by (the same in SQLite and PostgreSQL: integer
    /// division of a BIGINT stays an integer in both).
    pub fn sql(self) -> &'static str {
        match self {
            Group::Hour => "CAST(ts_ms / 3600000 AS TEXT)",
            Group::Day => "CAST(ts_ms / 86400000 AS TEXT)",
            Group::Model => "COALESCE(model, '')",
            Group::Domain => "domain",
            Group::Client => "COALESCE(client, '')",
            Group::Credential => "credential",
        }
    }

    /// The key shown for a group: an ISO time for hours, a date for days.
    pub fn key(self, raw: String) -> String {
        let bucket = |unit: u64| raw.parse::<u64>().map(|n| n * unit);
        match self {
            Group::Hour => bucket(3_600_000).map_or(raw, |ms| {
                let iso = super::row::iso(ms);
                format!("{}Z", &iso[..19])
            }),
            Group::Day => {
                bucket(86_400_000).map_or(raw, |ms| super::row::iso(ms)[..10].to_string())
            }
            _ => raw,
        }
    }
}

/// One group's sums.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageLine {
    pub key: String,
    /// The split's value, when the query has a split.
    pub split: Option<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// None when no row of the group is priced.
    pub cost: Option<Usd>,
}

/// What one named client spent in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendLine {
    pub client: String,
    /// The bucket's start, ms since the epoch.
    pub bucket_ms: u64,
    /// Every kind of token.
    pub tokens: u64,
    /// None when none of its requests was priced.
    pub cost: Option<Usd>,
}

/// What the other processes of a fleet spent, per named client, as read from the shared
/// ledger: 5-minute buckets for the rolling window, days for the calendar windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetLines {
    /// Buckets of [`FLEET_BUCKET_MS`] from five hours and a bucket back.
    pub buckets: Vec<SpendLine>,
    /// Days from the start of the earlier of this week and this month.
    pub days: Vec<SpendLine>,
}

/// The buckets in which the fleet shares its spend: the rolling window's own.
pub const FLEET_BUCKET_MS: u64 = 5 * 60 * 1000;
/// A day, the calendar windows' unit.
pub const FLEET_DAY_MS: u64 = 24 * 3600 * 1000;

/// `SELECT client, bucket, tokens, cost…` of named clients' rows in `[$from, $to)`, in
/// buckets `bucket_ms` long (`from` and `to` are the engine's first two placeholders).
pub fn spend_sql(from: &str, to: &str, bucket_ms: u64) -> String {
    format!(
        "SELECT client, ts_ms / {bucket_ms} AS b, CAST(SUM(input_tokens + output_tokens + \
         cache_creation_input_tokens + cache_read_input_tokens) AS BIGINT), \
         CAST(SUM(cost_picos / 1000000) AS BIGINT), CAST(SUM(cost_picos % 1000000) AS BIGINT) \
         FROM requests WHERE client IS NOT NULL AND ts_ms >= {from} AND ts_ms < {to} \
         GROUP BY client, b \
         ORDER BY b"
    )
}

/// The columns every read selects, in [`Row`] order (see `row_from`).
pub const COLUMNS: &str = "id, ts_ms, domain, client, credential, method, path, model, \
     stream, status, duration_ms, ttfb_ms, input_tokens, output_tokens, \
     cache_creation_input_tokens, cache_read_input_tokens, tool_calls, cost_picos, session_id, \
     request_class, bytes_in, bytes_out, error";

/// `SUM`s of one usage group, after the key.
const USAGE_SUMS: &str = "COUNT(*), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cache_creation_input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cache_read_input_tokens), 0) AS BIGINT), \
     CAST(SUM(cost_picos / 1000000) AS BIGINT), CAST(SUM(cost_picos % 1000000) AS BIGINT)";

/// A group's cost from [`USAGE_SUMS`]' last two sums: whole micro-dollars and the
/// picodollars below them, summed apart so that neither overflows a BIGINT where the
/// whole sum could (past $9.2 million); none when no row of the group was priced.
pub fn summed_cost(micros: Option<i64>, picos: Option<i64>) -> Option<Usd> {
    let micros = u128::try_from(micros?).unwrap_or(0);
    let picos = u128::try_from(picos.unwrap_or(0)).unwrap_or(0);
    Some(Usd(micros * 1_000_000 + picos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys() {
        assert_eq!(
            Group::Hour.key("498778".into()),
            "2026-11-25T10:00:00Z".to_string()
        );
        assert_eq!(Group::Day.key("20782".into()), "2026-11-25");
        assert_eq!(Group::Model.key("claude".into()), "claude");
        assert_eq!(Group::parse("week"), None);
    }

    #[test]
    fn filters_read_the_same_in_either_placeholder_style() {
        let f = RequestFilter {
            limit: 7,
            model: Some("m".into()),
            status: Some(429),
            from_ms: Some(5),
            to_ms: Some(9),
            ..RequestFilter::default()
        };
        assert_eq!(
            f.sql(|n| format!("${n}")),
            format!(
                "SELECT {COLUMNS} FROM requests WHERE 1 = 1 AND model = $1 AND status = $2 \
                 AND ts_ms >= $3 AND ts_ms < $4 ORDER BY ts_ms DESC, id DESC LIMIT 7"
            )
        );
        let values: Vec<_> = f.conditions().into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                FilterValue::Text("m"),
                FilterValue::Status(429),
                FilterValue::Time(5),
                FilterValue::Time(9)
            ]
        );
        let none = RequestFilter {
            limit: 1,
            ..RequestFilter::default()
        };
        assert!(none
            .sql(|n| format!("?{n}"))
            .contains("WHERE 1 = 1 ORDER BY"));
    }

    #[test]
    fn usage_groups_by_the_split_too() {
        let q = UsageQuery {
            from_ms: 0,
            to_ms: 1,
            group: Group::Day,
            split: Some(Group::Client),
        };
        let sql = q.sql("$1", "$2");
        assert!(sql.contains("COALESCE(client, '') AS s"), "{sql}");
        assert!(
            sql.contains("GROUP BY k, s ORDER BY MIN(ts_ms), k, s"),
            "{sql}"
        );
        let plain = UsageQuery { split: None, ..q }.sql("?1", "?2");
        assert!(plain.contains("NULL AS s"), "{plain}");
        assert!(
            plain.contains("WHERE ts_ms >= ?1 AND ts_ms < ?2 GROUP BY k "),
            "{plain}"
        );
    }
}
