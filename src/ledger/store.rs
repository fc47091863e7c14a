//! What the writer and the query thread ask of a database, whichever engine it is.

use super::row::{Bodies, Row};

/// A database connection holding the ledger's schema.
pub trait Store: Send {
    /// Inserts `rows` in one transaction (bodies already masked and compressed). A batch
    /// whose transaction failed is written again: an engine that cannot tell whether a
    /// failed commit went in (a lost PostgreSQL connection) leaves a row whose id is
    /// already stored as it is.
    fn insert(&mut self, rows: &[Box<Row>]) -> Result<(), String>;
    /// Rows newest first, filtered.
    fn requests(&mut self, filter: &RequestFilter) -> Result<Vec<Row>, String>;
    /// One row and its stored (compressed) bodies.
    fn request(&mut self, id: &str) -> Result<Option<(Row, Option<Bodies>)>, String>;
    /// Sums over a time range, grouped.
    fn usage(&mut self, query: &UsageQuery) -> Result<Vec<UsageLine>, String>;
    /// Deletes rows (and their bodies) that began before `ms`; returns how many.
    fn delete_before(&mut self, ms: u64) -> Result<u64, String>;
}

/// `GET /api/requests` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub limit: u32,
    pub domain: Option<String>,
    pub client: Option<String>,
    pub model: Option<String>,
    pub status: Option<u16>,
}

/// `GET /api/usage`: `[from, to)` in ms since the epoch, and the grouping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub from_ms: u64,
    pub to_ms: u64,
    pub group: Group,
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
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// None when no row of the group is priced.
    pub cost_usd: Option<f64>,
}

/// The columns every read selects, in [`Row`] order (see `row_from`).
pub const COLUMNS: &str = "id, ts_ms, domain, client, credential, method, path, model, \
     stream, status, duration_ms, ttfb_ms, input_tokens, output_tokens, \
     cache_creation_input_tokens, cache_read_input_tokens, tool_calls, cost_usd, session_id, \
     request_class, bytes_in, bytes_out, error";

/// `SUM`s of one usage group, after the key.
pub const USAGE_SUMS: &str = "COUNT(*), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cache_creation_input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cache_read_input_tokens), 0) AS BIGINT), SUM(cost_usd)";

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
}
