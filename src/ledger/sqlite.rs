//! The embedded engine: one SQLite file in WAL mode (readers never wait for the writer).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params_from_iter, types::Value as Sql, Connection, OptionalExtension};

use super::row::{class_name, Bodies, Row};
use super::store::{RequestFilter, Store, UsageLine, UsageQuery, COLUMNS, USAGE_SUMS};

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
        let mut sql = format!("SELECT {COLUMNS} FROM requests WHERE 1 = 1");
        let mut args: Vec<Sql> = Vec::new();
        for (column, value) in [
            ("domain", &f.domain),
            ("client", &f.client),
            ("model", &f.model),
        ] {
            if let Some(v) = value {
                args.push(Sql::Text(v.clone()));
                sql.push_str(&format!(" AND {column} = ?{}", args.len()));
            }
        }
        if let Some(status) = f.status {
            args.push(Sql::Integer(status.into()));
            sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY ts_ms DESC, id LIMIT {}", f.limit));
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
        let key = q.group.sql();
        let sql = format!(
            "SELECT {key} AS k, {USAGE_SUMS} FROM requests WHERE ts_ms >= ?1 AND ts_ms < ?2 \
             GROUP BY k ORDER BY MIN(ts_ms)"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| e.to_string())?;
        let lines = stmt
            .query_map([int(q.from_ms), int(q.to_ms)], |r| {
                let u =
                    |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
                Ok(UsageLine {
                    key: q.group.key(r.get(0)?),
                    requests: u(1)?,
                    input_tokens: u(2)?,
                    output_tokens: u(3)?,
                    cache_creation_input_tokens: u(4)?,
                    cache_read_input_tokens: u(5)?,
                    cost_usd: r.get(6)?,
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
