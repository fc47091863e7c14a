//! The fleet's engine: the same schema in PostgreSQL, through the blocking `postgres`
//! client (on the writer and query threads only, never on a worker).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::row::{class_name, Bodies, Row, RowText, Texts};
use super::store::{
    spend_sql, summed_cost, FilterValue, Pace, RequestFilter, SpendLine, Store, UsageLine,
    UsageQuery, COLUMNS,
};
use crate::cost::Usd;

/// Schema versions, applied in order, each once (recorded in `schema_version`).
const MIGRATIONS: &[&str] = &[
    // 1: one row per request.
    "CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
        domain TEXT NOT NULL,
        client TEXT,
        credential TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        model TEXT,
        stream BOOLEAN NOT NULL,
        status INTEGER NOT NULL,
        duration_ms BIGINT NOT NULL,
        ttfb_ms BIGINT,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_creation_input_tokens BIGINT NOT NULL,
        cache_read_input_tokens BIGINT NOT NULL,
        tool_calls BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION,
        session_id TEXT,
        request_class TEXT,
        bytes_in BIGINT,
        bytes_out BIGINT NOT NULL,
        error TEXT
    );
    CREATE INDEX requests_ts ON requests (ts_ms);",
    // 2: bodies, kept apart so listing rows never reads them.
    "CREATE TABLE bodies (
        id TEXT PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
        request BYTEA,
        response BYTEA
    );",
    // 3: costs in integer picodollars, so that sums are exact.
    "ALTER TABLE requests ADD COLUMN cost_picos BIGINT;
    UPDATE requests SET cost_picos = ROUND(cost_usd * 1e12)::BIGINT;
    ALTER TABLE requests DROP COLUMN cost_usd;",
    // 4: what a fleet's processes share (see `postgres_fleet`).
    super::postgres_fleet::MIGRATION,
];

/// Serialises migrations between processes starting at once (any constant will do).
const MIGRATION_LOCK: i64 = 0x6e65_7875_735f_6c67;
/// Bounds on connecting and on one statement: a database that stops answering costs the
/// writer this, never a request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Start-ups that outlived their caller's patience and still hang, at most: past this no
/// new one starts until one of them ends (each holds a thread).
const HUNG_MAX: usize = 4;

/// Start-ups still running after their caller gave up on them.
static HUNG: AtomicUsize = AtomicUsize::new(0);

/// A connection to the ledger's PostgreSQL database.
pub struct Postgres {
    client: Client,
}

impl Postgres {
    /// Connects and runs the migrations the database lacks, on a thread of its own, given
    /// up on after `limit`: `connect_timeout` bounds only the TCP connect, and a server
    /// that accepts and never answers would otherwise hold the caller (the writer, and
    /// every row after) for as long as it keeps the socket open. The thread ends when the
    /// server answers or drops the connection; the connection is then closed.
    pub fn open(url: &str, limit: Duration) -> Result<Postgres, String> {
        if HUNG.load(Relaxed) >= HUNG_MAX {
            return Err(format!(
                "{HUNG_MAX} earlier connection attempts still wait for the server to answer"
            ));
        }
        // A rendezvous: a start-up's result is either taken here or, once this side has
        // given up (and counted it hung), refused, which tells the thread to uncount it.
        let (tx, rx) = mpsc::sync_channel(0);
        let url = url.to_string();
        std::thread::Builder::new()
            .name("nexus-ledger-connect".into())
            .spawn(move || {
                if tx.send(Postgres::open_now(&url)).is_err() {
                    HUNG.fetch_sub(1, Relaxed);
                }
            })
            .map_err(|e| format!("starting a connection thread: {e}"))?;
        match rx.recv_timeout(limit) {
            Ok(opened) => opened,
            Err(RecvTimeoutError::Disconnected) => Err("the connection thread failed".into()),
            Err(RecvTimeoutError::Timeout) => {
                HUNG.fetch_add(1, Relaxed);
                drop(rx);
                Err(format!(
                    "the server did not finish the start-up within {} s",
                    limit.as_secs_f32()
                ))
            }
        }
    }

    /// The connection, for the fleet's statements (`postgres_fleet`).
    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    fn open_now(url: &str) -> Result<Postgres, String> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| format!("invalid NEXUS_DB: {e}"))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"))
            .application_name("nexus");
        let mut client = config.connect(NoTls).map_err(|e| e.to_string())?;
        migrate(&mut client)?;
        Ok(Postgres { client })
    }
}

fn migrate(client: &mut Client) -> Result<(), String> {
    let err = |e: postgres::Error| format!("migrating the schema: {e}");
    let mut tx = client.transaction().map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(err)?;
    let have: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .map_err(err)?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have.max(0) as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql)
            .map_err(|e| format!("migration {version}: {e}"))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// A count or time as PostgreSQL's BIGINT (saturating).
pub(super) fn int(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

fn row_from(r: &postgres::Row) -> Row {
    let u = |i: usize| r.get::<_, i64>(i).max(0) as u64;
    let ou = |i: usize| r.get::<_, Option<i64>>(i).map(|n| n.max(0) as u64);
    let text = |i: usize| r.get::<_, Option<&str>>(i);
    Row {
        text: RowText::new(Texts {
            id: text(0).unwrap_or(""),
            domain: text(2).unwrap_or(""),
            client: text(3),
            credential: text(4).unwrap_or(""),
            method: text(5).unwrap_or(""),
            path: text(6).unwrap_or(""),
            model: text(7),
            session_id: text(18),
            error: text(22),
        }),
        at_ms: u(1),
        stream: r.get(8),
        status: r.get::<_, i32>(9).clamp(0, u16::MAX as i32) as u16,
        duration_ms: u(10),
        ttfb_ms: ou(11),
        input_tokens: u(12),
        output_tokens: u(13),
        cache_creation_input_tokens: u(14),
        cache_read_input_tokens: u(15),
        tool_calls: u(16),
        cost: r.get::<_, Option<i64>>(17).map(|p| Usd(p.max(0) as u128)),
        request_class: class_name(r.get::<_, Option<String>>(19).as_deref()),
        bytes_in: ou(20),
        bytes_out: u(21),
        bodies: None,
    }
}

impl Store for Postgres {
    fn insert(&mut self, rows: &[Row], _: Pace) -> Result<(), String> {
        let e = |e: postgres::Error| e.to_string();
        let mut tx = self.client.transaction().map_err(e)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO requests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .map_err(e)?;
        let bodies = tx
            .prepare(
                "INSERT INTO bodies (id, request, response) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .map_err(e)?;
        // Rows already there (a batch sent again after a commit whose answer was lost)
        // are skipped, and so is their spend.
        let mut inserted = Vec::with_capacity(rows.len());
        for row in rows {
            let status = i32::from(row.status);
            let nums = [
                int(row.at_ms),
                int(row.duration_ms),
                int(row.input_tokens),
                int(row.output_tokens),
                int(row.cache_creation_input_tokens),
                int(row.cache_read_input_tokens),
                int(row.tool_calls),
                int(row.bytes_out),
            ];
            let ttfb = row.ttfb_ms.map(int);
            let bytes_in = row.bytes_in.map(int);
            let class = row.request_class;
            let t = row.texts();
            let cost = row.cost.map(|usd| i64::try_from(usd.0).unwrap_or(i64::MAX));
            let params: [&(dyn ToSql + Sync); 23] = [
                &t.id,
                &nums[0],
                &t.domain,
                &t.client,
                &t.credential,
                &t.method,
                &t.path,
                &t.model,
                &row.stream,
                &status,
                &nums[1],
                &ttfb,
                &nums[2],
                &nums[3],
                &nums[4],
                &nums[5],
                &nums[6],
                &cost,
                &t.session_id,
                &class,
                &bytes_in,
                &nums[7],
                &t.error,
            ];
            if tx.execute(&insert, &params).map_err(e)? == 1 {
                inserted.push(row);
            }
            if let Some(b) = &row.bodies {
                tx.execute(&bodies, &[&t.id, &b.request, &b.response])
                    .map_err(e)?;
            }
        }
        super::postgres_fleet::add_spend(&mut tx, inserted.into_iter())?;
        tx.commit().map_err(e)
    }

    fn requests(&mut self, f: &RequestFilter) -> Result<Vec<Row>, String> {
        let sql = f.sql(|n| format!("${n}"));
        let values: Vec<Box<dyn ToSql + Sync>> = f
            .conditions()
            .into_iter()
            .map(|(_, v)| -> Box<dyn ToSql + Sync> {
                match v {
                    FilterValue::Text(t) => Box::new(t.to_string()),
                    FilterValue::Status(n) => Box::new(n),
                    FilterValue::Time(n) => Box::new(n),
                }
            })
            .collect();
        let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        let rows = self.client.query(&sql, &args).map_err(|e| e.to_string())?;
        Ok(rows.iter().map(row_from).collect())
    }

    fn request(&mut self, id: &str) -> Result<Option<(Row, Option<Bodies>)>, String> {
        let e = |e: postgres::Error| e.to_string();
        let Some(row) = self
            .client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM requests WHERE id = $1"),
                &[&id],
            )
            .map_err(e)?
        else {
            return Ok(None);
        };
        let bodies = self
            .client
            .query_opt("SELECT request, response FROM bodies WHERE id = $1", &[&id])
            .map_err(e)?
            .map(|r| Bodies {
                request: r.get::<_, Option<Vec<u8>>>(0).unwrap_or_default(),
                response: r.get::<_, Option<Vec<u8>>>(1).unwrap_or_default(),
            });
        Ok(Some((row_from(&row), bodies)))
    }

    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageLine>, String> {
        let rows = self
            .client
            .query(&q.sql("$1", "$2"), &[&int(q.from_ms), &int(q.to_ms)])
            .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| {
                let u = |i: usize| r.get::<_, i64>(i).max(0) as u64;
                UsageLine {
                    key: q.group.key(r.get(0)),
                    split: r.get(1),
                    requests: u(2),
                    input_tokens: u(3),
                    output_tokens: u(4),
                    cache_creation_input_tokens: u(5),
                    cache_read_input_tokens: u(6),
                    cost: summed_cost(r.get(7), r.get(8)),
                }
            })
            .collect())
    }

    fn spend(
        &mut self,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<Vec<SpendLine>, String> {
        let bucket = bucket_ms.max(1);
        let rows = self
            .client
            .query(
                &spend_sql("$1", "$2", bucket),
                &[&int(from_ms), &int(to_ms)],
            )
            .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| {
                let u = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0).max(0) as u64;
                SpendLine {
                    client: r.get(0),
                    bucket_ms: u(1) * bucket,
                    tokens: u(2),
                    cost: summed_cost(r.get(3), r.get(4)),
                }
            })
            .collect())
    }

    fn delete_before(&mut self, ms: u64) -> Result<u64, String> {
        // Bodies go with their rows (ON DELETE CASCADE).
        self.client
            .execute("DELETE FROM requests WHERE ts_ms < $1", &[&int(ms)])
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn a_server_that_accepts_and_never_answers_is_given_up_on_and_its_attempt_ends_with_it() {
        // Bound but never accepting: the kernel completes the TCP handshake, and nothing
        // ever answers PostgreSQL's start-up message.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "postgres://nexus@127.0.0.1:{}/nexus",
            silent.local_addr().unwrap().port()
        );
        let started = Instant::now();
        let err = Postgres::open(&url, Duration::from_millis(300))
            .err()
            .expect("no server answered");
        assert!(err.contains("did not finish the start-up"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(HUNG.load(Relaxed), 1);
        // The listener goes, its queued connection is reset, and the attempt ends.
        drop(silent);
        let deadline = Instant::now() + Duration::from_secs(20);
        while HUNG.load(Relaxed) != 0 {
            assert!(
                Instant::now() < deadline,
                "the abandoned attempt never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
