//! The embedded engine: one SQLite file in WAL mode (readers never wait for the writer).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params_from_iter, types::Value as Sql, Connection, OptionalExtension};

use super::row::{class_name, Bodies, Row};
use super::store::{FilterValue, RequestFilter, Store, UsageLine, UsageQuery, COLUMNS};

/// Schema versions, applied in order, each once (recorded in `schema_version`).
const MIGRATIONS: &[&str] = &[
    // 1: one row per request.
    "CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        domain TEXT NOT NULL,
        client TEXT,
        credential TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        model TEXT,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ttfb_ms INTEGER,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_creation_input_tokens INTEGER NOT NULL,
        cache_read_input_tokens INTEGER NOT NULL,
        tool_calls INTEGER NOT NULL,
        cost_usd REAL,
        session_id TEXT,
        request_class TEXT,
        bytes_in INTEGER,
        bytes_out INTEGER NOT NULL,
        error TEXT
    );
    CREATE INDEX requests_ts ON requests (ts_ms);",
    // 2: bodies, kept apart so listing rows never reads them.
    "CREATE TABLE bodies (
        id TEXT PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
        request BLOB,
        response BLOB
    );",
];

/// An open ledger file.
pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Opens (creating) the file, sets WAL and runs the migrations it lacks.
    pub fn open(path: &Path) -> Result<Sqlite, String> {
        let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
        // Another process (or this one's query thread) may hold the lock for a moment.
        conn.busy_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        // WAL: readers and the writer do not block each other; NORMAL: a commit is
        // durable at the next checkpoint, and the file is never corrupt.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| e.to_string())?;
        migrate(&mut conn)?;
        Ok(Sqlite { conn })
    }
}

/// Runs the migrations the file has not had, each in its own transaction; the version is
/// read again inside it, so two processes starting on one file apply each once.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let err = |e: rusqlite::Error| format!("migrating the schema: {e}");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(err)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let have: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if have >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {version}: {e}"))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

fn int(n: u64) -> Sql {
    Sql::Integer(n.min(i64::MAX as u64) as i64)
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    let ou = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|n| n.max(0) as u64))
    };
    Ok(Row {
        id: r.get(0)?,
        at_ms: u(1)?,
        domain: r.get(2)?,
        client: r.get(3)?,
        credential: r.get(4)?,
        method: r.get(5)?,
        path: r.get(6)?,
        model: r.get(7)?,
        stream: r.get::<_, i64>(8)? != 0,
        status: u(9)? as u16,
        duration_ms: u(10)?,
        ttfb_ms: ou(11)?,
        input_tokens: u(12)?,
        output_tokens: u(13)?,
        cache_creation_input_tokens: u(14)?,
        cache_read_input_tokens: u(15)?,
        tool_calls: u(16)?,
        cost_usd: r.get(17)?,
        session_id: r.get(18)?,
        request_class: class_name(r.get::<_, Option<String>>(19)?.as_deref()),
        bytes_in: ou(20)?,
        bytes_out: u(21)?,
        error: r.get(22)?,
        bodies: None,
    })
}

impl Store for Sqlite {
    fn insert(&mut self, rows: &[Box<Row>]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO requests ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                     ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23) \
                     ON CONFLICT (id) DO NOTHING"
                ))
                .map_err(|e| e.to_string())?;
            let mut bodies = tx
                .prepare_cached(
                    "INSERT INTO bodies (id, request, response) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .map_err(|e| e.to_string())?;
            for row in rows {
                // Bound by reference: the row's strings are not copied.
                let i = |n: u64| n.min(i64::MAX as u64) as i64;
                insert
                    .execute(rusqlite::params![
                        row.id,
                        i(row.at_ms),
                        row.domain,
                        row.client,
                        row.credential,
                        row.method,
                        row.path,
                        row.model,
                        row.stream,
                        row.status,
                        i(row.duration_ms),
                        row.ttfb_ms.map(i),
                        i(row.input_tokens),
                        i(row.output_tokens),
                        i(row.cache_creation_input_tokens),
                        i(row.cache_read_input_tokens),
                        i(row.tool_calls),
                        row.cost_usd,
                        row.session_id,
                        row.request_class,
                        row.bytes_in.map(i),
                        i(row.bytes_out),
                        row.error,
                    ])
                    .map_err(|e| e.to_string())?;
                if let Some(b) = &row.bodies {
                    bodies
                        .execute((&row.id, &b.request, &b.response))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }

    fn requests(&mut self, f: &RequestFilter) -> Result<Vec<Row>, String> {
        let sql = f.sql(|n| format!("?{n}"));
        let args = f.conditions().into_iter().map(|(_, v)| match v {
            FilterValue::Text(t) => Sql::Text(t.to_string()),
            FilterValue::Status(n) => Sql::Integer(n.into()),
            FilterValue::Time(n) => Sql::Integer(n),
        });
        let mut stmt = self.conn.prepare(&sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params_from_iter(args), row_from)
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    fn request(&mut self, id: &str) -> Result<Option<(Row, Option<Bodies>)>, String> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"),
                [id],
                row_from,
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let Some(row) = row else { return Ok(None) };
        let bodies = self
            .conn
            .query_row(
                "SELECT request, response FROM bodies WHERE id = ?1",
                [id],
                |r| {
                    Ok(Bodies {
                        request: r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                        response: r.get::<_, Option<Vec<u8>>>(1)?.unwrap_or_default(),
                    })
                },
            )
            .optional()
            .map_err(|e| e.to_string())?;
        Ok(Some((row, bodies)))
    }

    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageLine>, String> {
        let mut stmt = self
            .conn
            .prepare(&q.sql("?1", "?2"))
            .map_err(|e| e.to_string())?;
        let lines = stmt
            .query_map([int(q.from_ms), int(q.to_ms)], |r| {
                let u =
                    |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
                Ok(UsageLine {
                    key: q.group.key(r.get(0)?),
                    split: r.get(1)?,
                    requests: u(2)?,
                    input_tokens: u(3)?,
                    output_tokens: u(4)?,
                    cache_creation_input_tokens: u(5)?,
                    cache_read_input_tokens: u(6)?,
                    cost_usd: r.get(7)?,
                })
            })
            .map_err(|e| e.to_string())?;
        lines.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    fn delete_before(&mut self, ms: u64) -> Result<u64, String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        tx.execute(
            "DELETE FROM bodies WHERE id IN (SELECT id FROM requests WHERE ts_ms < ?1)",
            [int(ms)],
        )
        .map_err(|e| e.to_string())?;
        let n = tx
            .execute("DELETE FROM requests WHERE ts_ms < ?1", [int(ms)])
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::store::Group;

    const DAY: u64 = 86_400_000;
    /// 2026-11-25T00:00:00Z.
    const T0: u64 = 1_795_564_800_000;

    fn row(id: &str, at_ms: u64, domain: &str, model: &str, input: u64, cost: f64) -> Box<Row> {
        Box::new(Row {
            id: id.into(),
            at_ms,
            domain: domain.into(),
            credential: "default".into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some(model.into()),
            status: if id.starts_with("err") { 429 } else { 200 },
            input_tokens: input,
            output_tokens: input * 2,
            cost_usd: Some(cost),
            ..Row::default()
        })
    }

    /// Two days, two models, two domains.
    fn ledger() -> Sqlite {
        let mut db = Sqlite::open(Path::new(":memory:")).unwrap();
        db.insert(&[
            row("a1", T0 + 1_000, "a.example", "sonnet", 10, 0.25),
            row("a2", T0 + 2_000, "a.example", "haiku", 20, 0.5),
            row("err3", T0 + 3_000, "b.example", "sonnet", 0, 0.0),
            row("b4", T0 + DAY + 1_000, "b.example", "sonnet", 40, 1.0),
        ])
        .unwrap();
        db
    }

    fn filter(from_ms: Option<u64>, to_ms: Option<u64>) -> RequestFilter {
        RequestFilter {
            limit: 100,
            from_ms,
            to_ms,
            ..RequestFilter::default()
        }
    }

    fn ids(rows: Vec<Row>) -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    }

    #[test]
    fn requests_within_a_range_newest_first() {
        let mut db = ledger();
        assert_eq!(
            ids(db.requests(&filter(None, None)).unwrap()),
            ["b4", "err3", "a2", "a1"]
        );
        // [from, to): the first day only, then from its third request on.
        assert_eq!(
            ids(db.requests(&filter(Some(T0), Some(T0 + DAY))).unwrap()),
            ["err3", "a2", "a1"]
        );
        assert_eq!(
            ids(db.requests(&filter(Some(T0 + 3_000), None)).unwrap()),
            ["b4", "err3"]
        );
        assert_eq!(
            ids(db.requests(&filter(None, Some(T0 + 2_000))).unwrap()),
            ["a1"]
        );
        // With the other filters.
        let f = RequestFilter {
            model: Some("sonnet".into()),
            status: Some(200),
            ..filter(Some(T0), None)
        };
        assert_eq!(ids(db.requests(&f).unwrap()), ["b4", "a1"]);
    }

    #[test]
    fn usage_per_day_split_by_model() {
        let mut db = ledger();
        let q = UsageQuery {
            from_ms: T0,
            to_ms: T0 + 2 * DAY,
            group: Group::Day,
            split: Some(Group::Model),
        };
        let lines: Vec<_> = db
            .usage(&q)
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.split, l.requests, l.input_tokens, l.cost_usd))
            .collect();
        let s = |t: &str| Some(t.to_string());
        assert_eq!(
            lines,
            [
                ("2026-11-25".into(), s("sonnet"), 2, 10, Some(0.25)),
                ("2026-11-25".into(), s("haiku"), 1, 20, Some(0.5)),
                ("2026-11-26".into(), s("sonnet"), 1, 40, Some(1.0)),
            ]
        );
        // Without a split: the same days, summed, and no split value.
        let days = db.usage(&UsageQuery { split: None, ..q }).unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].requests, days[0].input_tokens), (3, 30));
        assert_eq!(days[0].split, None);
    }
}
