//! What the processes of a fleet share through one PostgreSQL ledger, beside the rows:
//! each process's spend per named client (so that a budget holds for the fleet), and the
//! pool members a process rested (so that the others skip them too).
//!
//! Spend is kept per process (`node`), client and bucket, added to in the transaction that
//! writes the rows it comes from; a process reads everybody else's, so its own spend is
//! never counted twice (its own counters hold it from the moment a request ends).

use std::collections::HashMap;
use std::sync::OnceLock;

use postgres::Transaction;

use super::postgres::{int, Postgres};
use super::row::Row;
use super::store::{FleetLines, SpendLine, FLEET_BUCKET_MS, FLEET_DAY_MS};
use crate::cost::Usd;

/// The schema migration that adds the shared tables (see `postgres::MIGRATIONS`), and
/// fills the spend table from the rows already kept.
pub const MIGRATION: &str = "
    CREATE TABLE client_spend (
        node TEXT NOT NULL,
        client TEXT NOT NULL,
        span SMALLINT NOT NULL,
        bucket_ms BIGINT NOT NULL,
        tokens BIGINT NOT NULL,
        cost_picos BIGINT NOT NULL,
        PRIMARY KEY (node, client, span, bucket_ms)
    );
    CREATE INDEX client_spend_span ON client_spend (span, bucket_ms);
    INSERT INTO client_spend
        SELECT 'before-fleet', client, span, ts_ms / unit * unit,
            LEAST(SUM(input_tokens + output_tokens + cache_creation_input_tokens
                + cache_read_input_tokens), 9223372036854775807)::BIGINT,
            LEAST(COALESCE(SUM(cost_picos), 0), 9223372036854775807)::BIGINT
        FROM requests, (VALUES (0::SMALLINT, 300000::BIGINT, 6 * 3600000::BIGINT),
                               (1::SMALLINT, 86400000::BIGINT, 40 * 86400000::BIGINT))
                       AS spans (span, unit, kept)
        WHERE client IS NOT NULL
            AND ts_ms >= (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT - kept
        GROUP BY client, span, unit, ts_ms / unit;
    CREATE TABLE member_cooldowns (
        domain TEXT NOT NULL,
        member TEXT NOT NULL,
        until_ms BIGINT NOT NULL,
        PRIMARY KEY (domain, member)
    );";

/// `span`: a bucket of the rolling window, or a calendar day.
const SPAN_BUCKET: i16 = 0;
const SPAN_DAY: i16 = 1;
/// Buckets kept past the rolling window's five hours, days past the longest month and
/// the week that began in the month before; rests kept an hour past their end.
const BUCKETS_KEPT_MS: u64 = 6 * 3600 * 1000;
const DAYS_KEPT_MS: u64 = 40 * FLEET_DAY_MS;
const RESTS_KEPT_MS: u64 = 3600 * 1000;

/// This process's name in the fleet's tables: new at every start (a restarted process
/// reads what it spent before as another's).
pub fn node() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| crate::request_id::RequestIds::new().next().to_string())
}

/// A pool member rested until `until_ms`, as one process tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rest {
    pub domain: String,
    pub member: String,
    pub until_ms: u64,
}

fn e(e: postgres::Error) -> String {
    e.to_string()
}

/// Adds the spend of `rows` (those the transaction inserted) to this process's figures.
pub fn add_spend<'r>(
    tx: &mut Transaction<'_>,
    rows: impl Iterator<Item = &'r Row>,
) -> Result<(), String> {
    let mut sums: HashMap<(&str, i16, u64), (u64, u64)> = HashMap::new();
    for row in rows {
        let Some(client) = row.texts().client else {
            continue;
        };
        let tokens = [
            row.input_tokens,
            row.output_tokens,
            row.cache_creation_input_tokens,
            row.cache_read_input_tokens,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n));
        let picos = row
            .cost
            .map_or(0, |usd| u64::try_from(usd.0).unwrap_or(u64::MAX));
        for (span, unit) in [(SPAN_BUCKET, FLEET_BUCKET_MS), (SPAN_DAY, FLEET_DAY_MS)] {
            let sum = sums
                .entry((client, span, row.at_ms / unit * unit))
                .or_default();
            sum.0 = sum.0.saturating_add(tokens);
            sum.1 = sum.1.saturating_add(picos);
        }
    }
    if sums.is_empty() {
        return Ok(());
    }
    let upsert = tx
        .prepare(
            "INSERT INTO client_spend (node, client, span, bucket_ms, tokens, cost_picos) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (node, client, span, bucket_ms) DO UPDATE SET \
             tokens = client_spend.tokens + EXCLUDED.tokens, \
             cost_picos = client_spend.cost_picos + EXCLUDED.cost_picos",
        )
        .map_err(e)?;
    for ((client, span, bucket), (tokens, picos)) in sums {
        let values = [int(bucket), int(tokens), int(picos)];
        tx.execute(
            &upsert,
            &[&node(), &client, &span, &values[0], &values[1], &values[2]],
        )
        .map_err(e)?;
    }
    Ok(())
}

impl Postgres {
    /// What every other process spent per named client as of `now_ms`: the buckets of the
    /// last six hours and the days of the last forty (every window open now began within
    /// them; the clients pick what each window holds).
    pub fn fleet_spend(&mut self, now_ms: u64) -> Result<FleetLines, String> {
        let buckets_from = now_ms.saturating_sub(BUCKETS_KEPT_MS);
        let days_from = now_ms.saturating_sub(DAYS_KEPT_MS);
        let rows = self
            .client()
            .query(
                "SELECT client, span, bucket_ms, \
                 LEAST(SUM(tokens), 9223372036854775807)::BIGINT, \
                 LEAST(SUM(cost_picos), 9223372036854775807)::BIGINT \
                 FROM client_spend WHERE node <> $1 \
                 AND ((span = 0 AND bucket_ms >= $2) OR (span = 1 AND bucket_ms >= $3)) \
                 GROUP BY client, span, bucket_ms",
                &[&node(), &int(buckets_from), &int(days_from)],
            )
            .map_err(e)?;
        let mut lines = FleetLines::default();
        for r in &rows {
            let u = |i: usize| r.get::<_, i64>(i).max(0) as u64;
            let line = SpendLine {
                client: r.get(0),
                bucket_ms: u(2),
                tokens: u(3),
                cost: Some(Usd(u128::from(u(4)))),
            };
            match r.get::<_, i16>(1) {
                SPAN_BUCKET => lines.buckets.push(line),
                _ => lines.days.push(line),
            }
        }
        Ok(lines)
    }

    /// Tells the fleet that these members rest until the times given (a later rest already
    /// shared stays).
    pub fn share_rests(&mut self, rests: &[Rest]) -> Result<(), String> {
        let mut tx = self.client().transaction().map_err(e)?;
        let upsert = tx
            .prepare(
                "INSERT INTO member_cooldowns (domain, member, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (domain, member) DO UPDATE SET \
                 until_ms = GREATEST(member_cooldowns.until_ms, EXCLUDED.until_ms)",
            )
            .map_err(e)?;
        for rest in rests {
            tx.execute(&upsert, &[&rest.domain, &rest.member, &int(rest.until_ms)])
                .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// The members any process rested that still rest at `now_ms`.
    pub fn rests(&mut self, now_ms: u64) -> Result<Vec<Rest>, String> {
        let rows = self
            .client()
            .query(
                "SELECT domain, member, until_ms FROM member_cooldowns WHERE until_ms > $1",
                &[&int(now_ms)],
            )
            .map_err(e)?;
        Ok(rows
            .iter()
            .map(|r| Rest {
                domain: r.get(0),
                member: r.get(1),
                until_ms: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    /// Deletes shared figures no window counts any more.
    pub fn prune_fleet(&mut self, now_ms: u64) -> Result<(), String> {
        let client = self.client();
        client
            .execute(
                "DELETE FROM client_spend WHERE (span = 0 AND bucket_ms < $1) \
                 OR (span = 1 AND bucket_ms < $2)",
                &[
                    &int(now_ms.saturating_sub(BUCKETS_KEPT_MS)),
                    &int(now_ms.saturating_sub(DAYS_KEPT_MS)),
                ],
            )
            .map_err(e)?;
        client
            .execute(
                "DELETE FROM member_cooldowns WHERE until_ms < $1",
                &[&int(now_ms.saturating_sub(RESTS_KEPT_MS))],
            )
            .map_err(e)?;
        Ok(())
    }
}
