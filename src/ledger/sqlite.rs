//! The embedded engine: one SQLite file in WAL mode (readers never wait for the writer).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params_from_iter, types::Value as Sql, Connection, OptionalExtension};

use super::row::{class_name, Bodies, Row, RowText, Texts};
use super::sqlite_checkpoint::Checkpoints;
use super::sqlite_insert::RowInsert;
use super::store::{
    spend_sql, summed_cost, FilterValue, Pace, RequestFilter, SpendLine, Store, UsageLine,
    UsageQuery, COLUMNS,
};
use crate::cost::Usd;
use crate::request_id::v7_millis;

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
    // 3: no unique index on the request id. Keeping it cost the writer a third of its
    // time per row; a row is found through the time its id carries (`ts_ms`, indexed),
    // and a batch is never written twice here (a failed transaction leaves nothing).
    // Costs in integer picodollars, so that sums are exact.
    // Bodies go first: dropping `requests` under their foreign key would cascade.
    "CREATE TABLE bodies_3 (id TEXT PRIMARY KEY, request BLOB, response BLOB);
    INSERT INTO bodies_3 SELECT id, request, response FROM bodies;
    DROP TABLE bodies;
    ALTER TABLE bodies_3 RENAME TO bodies;
    CREATE TABLE requests_3 (
        id TEXT NOT NULL,
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
        cost_picos INTEGER,
        session_id TEXT,
        request_class TEXT,
        bytes_in INTEGER,
        bytes_out INTEGER NOT NULL,
        error TEXT
    );
    INSERT INTO requests_3 SELECT id, ts_ms, domain, client, credential, method, path, model, stream, status, duration_ms, ttfb_ms, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, tool_calls, CAST(ROUND(cost_usd * 1e12) AS INTEGER), session_id, request_class, bytes_in, bytes_out, error
        FROM requests ORDER BY ts_ms;
    DROP TABLE requests;
    ALTER TABLE requests_3 RENAME TO requests;
    CREATE INDEX requests_ts ON requests (ts_ms);",
];

/// Rows one insert statement carries: one statement per row spent more of the writer's
/// time starting and finishing statements than storing rows.
const ROWS_PER_INSERT: usize = 16;
/// Inserts between which a polite writer ([`Pace::Polite`]) offers its core to any thread
/// waiting for one. A batch's rows are written in one go, a millisecond or more of CPU
/// under load; when a worker, or the client or upstream it talks to, waits for that core
/// meanwhile, the request pays it in latency (W5's p99). Yielding every few dozen rows
/// bounds the wait to tens of microseconds, for a syscall per few dozen rows.
const INSERTS_BETWEEN_YIELDS: usize = 4;
/// Ms either side of the time in a request's id within which its row is looked for (rows
/// written before migration 3 took their time from the clock, within a ms or two of it).
const ID_TIME_SLACK_MS: u64 = 1000;

/// An open ledger file.
pub struct Sqlite {
    /// The writer's inserts, prepared on its first batch: of [`ROWS_PER_INSERT`] rows,
    /// and of one. Declared before `conn`, so they are finalized before it closes.
    inserts: Option<(RowInsert, RowInsert)>,
    /// The writer's checkpoint thread, started with its first batch. Declared before
    /// `conn` too: dropping it ends the thread, so that `conn` is the last connection to
    /// close (which checkpoints what is left and removes the WAL).
    checkpoints: Option<Checkpoints>,
    conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    /// Opens (creating) the file, sets WAL and runs the migrations it lacks.
    pub fn open(path: &Path) -> Result<Sqlite, String> {
        let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
        // Another process (or this one's query thread) may hold the lock for a moment.
        conn.busy_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        // Pages of 32 KiB (a new file's; a file keeps the size it was made with): the
        // writer appends rows of a few hundred bytes, and with 4 KiB pages it spent a
        // fifth of its time splitting pages and writing them to the WAL one by one.
        // WAL: readers and the writer do not block each other; NORMAL: a commit is
        // durable at the next checkpoint, and the file is never corrupt; a WAL that grew
        // past 32 MiB in a burst is cut back when it starts over.
        conn.execute_batch(
            "PRAGMA page_size = 32768; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA journal_size_limit = 33554432;",
        )
        .map_err(|e| e.to_string())?;
        migrate(&mut conn)?;
        Ok(Sqlite {
            inserts: None,
            checkpoints: None,
            conn,
            path: path.to_path_buf(),
        })
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
    let text = |i: usize| r.get_ref(i).map(|v| v.as_str_or_null().ok().flatten());
    Ok(Row {
        text: RowText::new(Texts {
            id: text(0)?.unwrap_or(""),
            domain: text(2)?.unwrap_or(""),
            client: text(3)?,
            credential: text(4)?.unwrap_or(""),
            method: text(5)?.unwrap_or(""),
            path: text(6)?.unwrap_or(""),
            model: text(7)?,
            session_id: text(18)?,
            error: text(22)?,
        }),
        at_ms: u(1)?,
        stream: r.get::<_, i64>(8)? != 0,
        status: u(9)? as u16,
        duration_ms: u(10)?,
        ttfb_ms: ou(11)?,
        input_tokens: u(12)?,
        output_tokens: u(13)?,
        cache_creation_input_tokens: u(14)?,
        cache_read_input_tokens: u(15)?,
        tool_calls: u(16)?,
        cost: r.get::<_, Option<i64>>(17)?.map(|p| Usd(p.max(0) as u128)),
        request_class: class_name(r.get::<_, Option<String>>(19)?.as_deref()),
        bytes_in: ou(20)?,
        bytes_out: u(21)?,
        bodies: None,
    })
}

impl Store for Sqlite {
    fn insert(&mut self, rows: &[Row], pace: Pace) -> Result<(), String> {
        if self.checkpoints.is_none() {
            self.checkpoints = Some(Checkpoints::start(&self.path)?);
            self.conn
                .execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(|e| e.to_string())?;
        }
        if self.inserts.is_none() {
            self.inserts = Some((
                RowInsert::prepare(&self.conn, ROWS_PER_INSERT)?,
                RowInsert::prepare(&self.conn, 1)?,
            ));
        }
        let (many, one) = self.inserts.as_mut().expect("prepared above");
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let chunks = rows.chunks_exact(many.rows());
        let rest = chunks.remainder();
        for (i, chunk) in chunks.enumerate() {
            if pace == Pace::Polite && i > 0 && i % INSERTS_BETWEEN_YIELDS == 0 {
                std::thread::yield_now();
            }
            many.run(&tx, chunk)?;
        }
        for row in rest {
            one.run(&tx, std::slice::from_ref(row))?;
        }
        {
            let mut bodies = tx
                .prepare_cached(
                    "INSERT INTO bodies (id, request, response) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .map_err(|e| e.to_string())?;
            for row in rows {
                if let Some(b) = &row.bodies {
                    bodies
                        .execute((row.texts().id, &b.request, &b.response))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        if let Some(c) = &self.checkpoints {
            c.committed();
        }
        Ok(())
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
        // Through the time in the id and the time index; an id of another form (none
        // that nexus makes) is looked for everywhere.
        let (from, to) = match v7_millis(id) {
            Some(ms) => (ms.saturating_sub(ID_TIME_SLACK_MS), ms + ID_TIME_SLACK_MS),
            None => (0, i64::MAX as u64),
        };
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM requests WHERE ts_ms BETWEEN ?2 AND ?3 AND id = ?1"
                ),
                (id, int(from), int(to)),
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
                    cost: summed_cost(r.get(7)?, r.get(8)?),
                })
            })
            .map_err(|e| e.to_string())?;
        lines.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    fn spend(
        &mut self,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<Vec<SpendLine>, String> {
        let mut stmt = self
            .conn
            .prepare(&spend_sql("?1", "?2", bucket_ms.max(1)))
            .map_err(|e| e.to_string())?;
        let lines = stmt
            .query_map([int(from_ms), int(to_ms)], |r| {
                let u = |i: usize| -> rusqlite::Result<u64> {
                    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
                };
                Ok(SpendLine {
                    client: r.get(0)?,
                    bucket_ms: u(1)? * bucket_ms,
                    tokens: u(2)?,
                    cost: summed_cost(r.get(3)?, r.get(4)?),
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
    use crate::ledger::row::Texts;
    use crate::ledger::store::{Group, SpendLine};
    use crate::request_id::RequestIds;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("nexus-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ledger.db")
    }

    fn row(ids: &RequestIds, n: u64, bodies: bool) -> Row {
        let id = ids.next();
        Row {
            text: RowText::new(Texts {
                id: id.as_str(),
                domain: "a.example",
                credential: "default",
                method: "POST",
                path: "/v1/messages",
                model: n.is_multiple_of(2).then_some("claude-sonnet-4-5"),
                session_id: Some("s-1"),
                ..Texts::default()
            }),
            at_ms: id.unix_ms(),
            status: 200,
            input_tokens: n,
            bodies: bodies.then(|| Bodies {
                request: vec![1, 2, n as u8],
                response: vec![3],
            }),
            ..Row::default()
        }
    }

    #[test]
    fn the_checkpoint_thread_copies_the_wal_into_the_file_and_the_writer_closes_last() {
        let path = temp_db("checkpoint");
        let mut db = Sqlite::open(&path).unwrap();
        let ids = RequestIds::new();
        let rows: Vec<Row> = (0..2000).map(|n| row(&ids, n, false)).collect();
        let empty = std::fs::metadata(&path).unwrap().len();
        db.insert(&rows, Pace::Behind).unwrap();
        // The writer does not checkpoint: the file grows only through the thread.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() <= empty {
            assert!(std::time::Instant::now() < deadline, "no checkpoint");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(db);
        let wal = path.with_file_name("ledger.db-wal");
        assert!(
            !wal.exists(),
            "the last connection to close removes the WAL"
        );
        let again = Sqlite::open(&path).unwrap();
        let listed = again
            .conn
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get::<_, i64>(0))
            .unwrap();
        assert_eq!(listed, 2000);
    }

    #[test]
    fn rows_in_several_statements_of_a_batch_all_come_back_by_id() {
        let path = temp_db("batch");
        let mut db = Sqlite::open(&path).unwrap();
        let ids = RequestIds::new();
        // Two full statements and a remainder of single-row ones.
        let rows: Vec<Row> = (0..2 * ROWS_PER_INSERT as u64 + 5)
            .map(|n| row(&ids, n, n % 3 == 0))
            .collect();
        db.insert(&rows, Pace::Polite).unwrap();
        let listed = db
            .requests(&RequestFilter {
                limit: 1000,
                ..RequestFilter::default()
            })
            .unwrap();
        assert_eq!(listed.len(), rows.len());
        for want in &rows {
            let (got, bodies) = db.request(want.texts().id).unwrap().expect("found by id");
            assert_eq!(
                got,
                Row {
                    bodies: None,
                    ..(*want).clone()
                }
            );
            assert_eq!(bodies, want.bodies.clone());
        }
        assert_eq!(
            db.request("01937a2b-4c5d-7abc-8def-0123456789ab").unwrap(),
            None
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_file_of_schema_two_keeps_its_rows_and_bodies_through_migration_three() {
        let path = temp_db("migrate");
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "PRAGMA foreign_keys = ON; CREATE TABLE schema_version (version INTEGER NOT NULL)",
            )
            .unwrap();
            let tx = conn.transaction().unwrap();
            for (i, sql) in MIGRATIONS[..2].iter().enumerate() {
                tx.execute_batch(sql).unwrap();
                tx.execute("INSERT INTO schema_version VALUES (?1)", [i as i64 + 1])
                    .unwrap();
            }
            // A row of before: a v4 id, its time from the clock, its cost in USD.
            tx.execute_batch(
                "INSERT INTO requests VALUES ('6f1c9d2e-7a41-4b8e-9c3f-2d6e8a1b0c47', \
                 1795603409987, 'a.example', NULL, 'default', 'POST', '/v1/messages', NULL, 0, \
                 200, 5, NULL, 10, 20, 0, 0, 0, 0.123456789012, NULL, NULL, 0, 0, NULL);
                 INSERT INTO bodies VALUES ('6f1c9d2e-7a41-4b8e-9c3f-2d6e8a1b0c47', x'01', x'02');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut db = Sqlite::open(&path).unwrap();
        let (row, bodies) = db
            .request("6f1c9d2e-7a41-4b8e-9c3f-2d6e8a1b0c47")
            .unwrap()
            .expect("kept");
        assert_eq!((row.input_tokens, row.output_tokens), (10, 20));
        assert_eq!(row.cost, Some(Usd(123_456_789_012)), "USD to picodollars");
        assert_eq!(
            bodies.map(|b| (b.request, b.response)),
            Some((vec![1], vec![2]))
        );
        let version: i64 = db
            .conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        // New rows go in beside it.
        db.insert(&[row_for_test()], Pace::Polite).unwrap();
        assert_eq!(db.delete_before(1795603409988).unwrap(), 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn row_for_test() -> Row {
        row(&RequestIds::new(), 1, true)
    }

    const DAY: u64 = 86_400_000;
    /// 2026-11-25T00:00:00Z.
    const T0: u64 = 1_795_564_800_000;

    fn usage_row(id: &str, at_ms: u64, domain: &str, model: &str, input: u64, cost: f64) -> Row {
        Row {
            text: RowText::new(Texts {
                id,
                domain,
                credential: "default",
                method: "POST",
                path: "/v1/messages",
                model: Some(model),
                ..Texts::default()
            }),
            at_ms,
            status: if id.starts_with("err") { 429 } else { 200 },
            input_tokens: input,
            output_tokens: input * 2,
            cost: Some(Usd((cost * 1e12).round() as u128)),
            ..Row::default()
        }
    }

    /// Two days, two models, two domains.
    fn ledger() -> Sqlite {
        let mut db = Sqlite::open(Path::new(":memory:")).unwrap();
        db.insert(
            &[
                usage_row("a1", T0 + 1_000, "a.example", "sonnet", 10, 0.25),
                usage_row("a2", T0 + 2_000, "a.example", "haiku", 20, 0.5),
                usage_row("err3", T0 + 3_000, "b.example", "sonnet", 0, 0.0),
                usage_row("b4", T0 + DAY + 1_000, "b.example", "sonnet", 40, 1.0),
            ],
            Pace::Polite,
        )
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
        rows.iter().map(|r| r.texts().id.to_string()).collect()
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
            .map(|l| {
                let usd = l.cost.map(|c| c.0 as f64 / 1e12);
                (l.key, l.split, l.requests, l.input_tokens, usd)
            })
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

    #[test]
    fn named_clients_spend_per_bucket() {
        let mut db = Sqlite::open(Path::new(":memory:")).unwrap();
        let by = |id: &str, client: Option<&str>, at_ms: u64, input: u64, picos: Option<u128>| {
            let mut row = usage_row(id, at_ms, "a.example", "sonnet", input, 0.0);
            row.text = RowText::new(Texts {
                client,
                ..row.texts()
            });
            row.cost = picos.map(Usd);
            row
        };
        let bucket = 300_000;
        db.insert(
            &[
                by("1", Some("alice"), T0 + 10, 5, Some(7)),
                by("2", Some("alice"), T0 + 20, 6, None),
                by("3", Some("alice"), T0 + bucket, 1, Some(1_000_001)),
                by("4", Some("bob"), T0 + 30, 2, None),
                by("5", None, T0 + 40, 100, Some(5)),
                by("6", Some("alice"), T0 - 1, 100, Some(5)),
            ],
            Pace::Polite,
        )
        .unwrap();
        let mut lines = db.spend(T0, T0 + DAY, bucket).unwrap();
        lines.sort_by(|a, b| (&a.client, a.bucket_ms).cmp(&(&b.client, b.bucket_ms)));
        let line = |client: &str, bucket_ms, tokens, cost: Option<u128>| SpendLine {
            client: client.into(),
            bucket_ms,
            tokens,
            cost: cost.map(Usd),
        };
        // usage_row's output is twice its input.
        assert_eq!(
            lines,
            [
                line("alice", T0, 33, Some(7)),
                line("alice", T0 + bucket, 3, Some(1_000_001)),
                line("bob", T0, 6, None),
            ]
        );
    }

    #[test]
    fn cost_sums_are_exact_to_the_picodollar_and_do_not_overflow() {
        let mut db = Sqlite::open(Path::new(":memory:")).unwrap();
        let priced = |id: &str, picos: u128| {
            let mut row = usage_row(id, T0 + 1, "a.example", "sonnet", 1, 0.0);
            row.cost = Some(Usd(picos));
            row
        };
        let mut unpriced = usage_row("u", T0 + 2, "b.example", "mystery", 1, 0.0);
        unpriced.cost = None;
        // Two amounts each near the largest a BIGINT holds, and an odd few picodollars.
        let big = 9_000_000_000_000_000_000u128;
        db.insert(
            &[priced("x", big), priced("y", big), priced("z", 3), unpriced],
            Pace::Polite,
        )
        .unwrap();
        let q = UsageQuery {
            from_ms: T0,
            to_ms: T0 + DAY,
            group: Group::Domain,
            split: None,
        };
        let lines = db.usage(&q).unwrap();
        let cost = |domain: &str| lines.iter().find(|l| l.key == domain).unwrap().cost;
        assert_eq!(cost("a.example"), Some(Usd(2 * big + 3)));
        assert_eq!(cost("b.example"), None, "unpriced stays unpriced, not zero");
        let (row, _) = db.request("z").unwrap().unwrap();
        assert_eq!(row.cost, Some(Usd(3)));
    }
}
