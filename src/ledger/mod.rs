//! The ledger: a row per proxied request, kept in SQLite (default) or PostgreSQL, so
//! history survives restarts and a fleet can share one.
//!
//! Never in a stream's way: a worker gathers its finished requests' [`Row`]s in a
//! [`RowBatch`] and hands them to the writer thread a batch at a time through a bounded
//! queue with `try_send` (no wait, no lock); a full queue drops them and counts them.
//! The writer batches what is queued into one transaction, masks and compresses bodies,
//! reconnects with backoff when the database is away, and keeps up to [`HELD_MAX`] rows
//! meanwhile. Queries (`/api/*`) run on a thread of their own with their own connection;
//! a worker polls for the answer without blocking ([`query::Pending`]).
//!
//! - [`row`]: the row and its JSON; [`store`]: what an engine provides;
//! - [`sqlite`], [`postgres`]: the engines and their versioned migrations
//!   (`sqlite_insert`: SQLite's row insert, strings bound without copies);
//! - [`writer`]: the writer thread; [`query`]: the query thread; [`fleet`]: what the
//!   processes on one PostgreSQL database share (spend, rested members; in
//!   [`postgres_fleet`]);
//! - [`api`]: `/api/requests`, `/api/requests/<id>`, `/api/usage`.

pub mod api;
pub mod fleet;
pub mod postgres;
pub mod postgres_fleet;
pub mod query;
pub mod row;
pub mod sqlite;
mod sqlite_checkpoint;
mod sqlite_insert;
pub mod store;
mod warn;
mod writer;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use row::{Bodies, Row, RowText, Texts};

use crate::config::{Config, DbTarget};
use crate::stats::Histogram;
use store::Store;
use warn::Warner;

/// Rows waiting for the writer, all workers together (a few MB at most).
pub const QUEUE: usize = 32 * 1024;
/// Rows a worker gathers before it hands them to the writer in one message (see
/// [`RowBatch`]); fewer go when [`HANDOFF_EVERY`] passes first.
pub const HANDOFF: usize = 64;
/// How often a worker hands over the rows it has gathered, however few.
pub const HANDOFF_EVERY: Duration = Duration::from_millis(100);
/// Rows one transaction writes at most.
pub const BATCH: usize = 2_000;
/// Rows the writer holds while the database is away; past this the oldest are dropped.
pub const HELD_MAX: usize = 100_000;
/// Each stored body is cut at this many bytes (before compression).
pub const BODY_CAP: usize = 1024 * 1024;
/// Queries waiting for the query thread; past this `/api/*` answers 503.
const QUERY_QUEUE: usize = 64;
/// Attempts at reading clients' earlier spend at start (about a minute with backoff).
const RESTORE_TRIES: u32 = 9;

/// Masks secrets in a body before it is stored (`notify::redact`, passed in by `main`:
/// the ledger sits below notify).
pub type Masker = fn(&[u8]) -> Vec<u8>;

/// What the writer thread is sent.
enum Msg {
    /// A worker's rows, in the order their requests ended.
    Rows(Vec<Row>),
    /// Write everything before this, then answer whether it all went in.
    Flush(SyncSender<bool>),
}

/// Counters `/metrics` shows.
#[derive(Default)]
pub struct LedgerMetrics {
    pub rows: AtomicU64,
    pub dropped: AtomicU64,
    /// Per batch: the transaction's time.
    pub write_latency: Histogram,
    /// The writer's connection is up.
    pub up: AtomicBool,
}

/// The process's ledger; `off` when `NEXUS_DB=off`.
pub struct Ledger {
    target: DbTarget,
    rows: Option<SyncSender<Msg>>,
    queries: Option<SyncSender<query::Job>>,
    store_bodies: bool,
    pub metrics: Arc<LedgerMetrics>,
    warn: Arc<Warner>,
    /// Rests to share with the fleet, once [`Ledger::start_fleet`] started its thread.
    fleet: OnceLock<SyncSender<postgres_fleet::Rest>>,
    /// Workers' [`RowBatch`]es holding rows not yet handed over: shutdown's flush waits
    /// for them first.
    unsent: AtomicUsize,
}

/// Lowers the calling thread's scheduling priority (nice 10): the ledger's readers take
/// the CPU the workers leave, and when the two contend for a core the workers go first.
/// Not the writer: under a load that leaves it no core, its queue would overflow.
fn yield_to_workers() {
    // SAFETY: plain syscalls on this thread's own id; a failure leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// How long a PostgreSQL server may take over its start-up (TCP, handshake, migrations)
/// before a connection attempt is given up: the writer and the spend read-back wait long,
/// the query thread well within the API's own wait for it, so that a database that never
/// answers gets a prompt 503, not a wait as long as a client's patience.
const PATIENCE: Duration = Duration::from_secs(10);
const QUERY_PATIENCE: Duration = Duration::from_secs(4);

/// Opens a connection to `target` (the writer, the query thread and the spend read-back
/// each have one), giving a PostgreSQL start-up `patience`.
fn connect(target: &DbTarget, patience: Duration) -> Result<Box<dyn Store>, String> {
    match target {
        DbTarget::Off => Err("the ledger is off".into()),
        DbTarget::Sqlite(path) => Ok(Box::new(sqlite::Sqlite::open(path)?)),
        DbTarget::Postgres(url) => Ok(Box::new(postgres::Postgres::open(url, patience)?)),
    }
}

impl Ledger {
    /// Starts the writer and query threads for `NEXUS_DB`. Never fails on the database:
    /// one that is away at start is connected to later.
    pub fn start(config: &Config, mask: Masker) -> Arc<Ledger> {
        let metrics = Arc::new(LedgerMetrics::default());
        let warn = Arc::new(Warner::default());
        let target = config.db.clone();
        if target == DbTarget::Off {
            return Arc::new(Ledger {
                target,
                rows: None,
                queries: None,
                store_bodies: false,
                metrics,
                warn,
                fleet: OnceLock::new(),
                unsent: AtomicUsize::new(0),
            });
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE / HANDOFF);
        let retention = (config.retention_days > 0)
            .then(|| Duration::from_secs(config.retention_days * 24 * 3600));
        let connect_to = target.clone();
        writer::Writer {
            target: target.clone(),
            connect: Box::new(move || connect(&connect_to, PATIENCE)),
            metrics: Arc::clone(&metrics),
            warn: Arc::clone(&warn),
            mask,
            retention,
        }
        .spawn(rx);
        let (qtx, qrx) = mpsc::sync_channel(QUERY_QUEUE);
        query::spawn(target.clone(), qrx, Arc::clone(&warn));
        Arc::new(Ledger {
            target,
            rows: Some(tx),
            queries: Some(qtx),
            store_bodies: config.store_bodies,
            metrics,
            warn,
            fleet: OnceLock::new(),
            unsent: AtomicUsize::new(0),
        })
    }

    /// Whether processes share this ledger as a fleet (PostgreSQL): budgets count every
    /// process's spend and a member one rests the others skip (see [`fleet`]).
    pub fn is_fleet(&self) -> bool {
        matches!(self.target, DbTarget::Postgres(_))
    }

    /// Starts the fleet thread with what to do with the fleet's figures; nothing unless
    /// [`Ledger::is_fleet`]. Once.
    pub fn start_fleet(&self, hooks: fleet::Hooks) {
        let DbTarget::Postgres(url) = &self.target else {
            return;
        };
        let (tx, rx) = mpsc::sync_channel(fleet::QUEUE);
        if self.fleet.set(tx).is_ok() {
            fleet::spawn(url.clone(), hooks, rx, Arc::clone(&self.warn));
        }
    }

    /// Tells the fleet that a pool member rests until `until_ms`; never waits (a full
    /// queue keeps the rest to this process).
    pub fn share_rest(&self, domain: &str, member: &str, until_ms: u64) {
        if let Some(tx) = self.fleet.get() {
            let _ = tx.try_send(postgres_fleet::Rest {
                domain: domain.to_string(),
                member: member.to_string(),
                until_ms,
            });
        }
    }

    /// Whether rows are kept at all.
    pub fn enabled(&self) -> bool {
        self.rows.is_some()
    }

    /// Whether rows carry their bodies (`NEXUS_STORE_BODIES=true`).
    pub fn store_bodies(&self) -> bool {
        self.store_bodies
    }

    /// `NEXUS_DB` as the start-up line shows it (no password).
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// Hands a worker's rows to the writer, never waiting: a full queue drops them (and
    /// counts them).
    fn send(&self, rows: Vec<Row>) {
        let Some(tx) = &self.rows else { return };
        let n = rows.len() as u64;
        match tx.try_send(Msg::Rows(rows)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped(n, "the writer's queue is full"),
            Err(TrySendError::Disconnected(_)) => self.dropped(n, "the writer has stopped"),
        }
    }

    fn dropped(&self, n: u64, why: &str) {
        self.metrics.dropped.fetch_add(n, Relaxed);
        self.warn.warn(|| {
            format!(
                "ledger: dropped row(s) because {why} (nexus_ledger_dropped_total counts \
                 them all; next warning in a minute at the earliest)"
            )
        });
    }

    /// Waits up to `within` for every row queued so far to be written; true if it was.
    /// For shutdown, on the main thread, after the workers have finished their requests.
    pub fn flush(&self, within: Duration) -> bool {
        let Some(tx) = &self.rows else { return true };
        let deadline = Instant::now() + within;
        // The workers' last rows first: each hands its batch over within HANDOFF_EVERY,
        // or as its runtime ends.
        while self.unsent.load(Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (ack, done) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(false)
    }

    /// Reads what named clients spent in `[from_ms, to_ms)` (per `bucket_ms`) on a thread
    /// of its own and hands it to `deliver`; a database that is away is tried again with
    /// backoff for about a minute, then given up on (logged). Nothing when the ledger is off.
    pub fn restore_spend(
        &self,
        (from_ms, to_ms): (u64, u64),
        bucket_ms: u64,
        deliver: impl FnOnce(Vec<store::SpendLine>) + Send + 'static,
    ) {
        if !self.enabled() {
            return;
        }
        let target = self.target.clone();
        let spawned = std::thread::Builder::new()
            .name("nexus-ledger-restore".into())
            .spawn(move || {
                yield_to_workers();
                let mut wait = Duration::from_millis(250);
                let mut tries = 0;
                loop {
                    tries += 1;
                    match connect(&target, PATIENCE)
                        .and_then(|mut s| s.spend(from_ms, to_ms, bucket_ms))
                    {
                        Ok(lines) => return deliver(lines),
                        Err(why) if tries >= RESTORE_TRIES => {
                            return log::warn!(
                                "ledger: could not read named clients' earlier spend ({why}); \
                                 budgets count from this start only"
                            )
                        }
                        Err(_) => {
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("ledger: could not start reading clients' spend: {e}");
        }
    }

    /// Sends a query to the query thread; `None` when the ledger is off or its queue full.
    pub fn ask(&self, q: query::Query) -> Result<query::Pending, &'static str> {
        let Some(tx) = &self.queries else {
            return Err("the ledger is off (NEXUS_DB=off)");
        };
        let (reply, pending) = query::Pending::new();
        tx.try_send(query::Job { query: q, reply })
            .map_err(|_| "too many ledger queries at once")?;
        Ok(pending)
    }

    /// The ledger's series for `/metrics`.
    pub fn metrics_text(&self, out: &mut String) {
        let m = &self.metrics;
        let _ = writeln!(
            out,
            "# HELP nexus_ledger_rows_total Request rows written to the ledger database.\n\
             # TYPE nexus_ledger_rows_total counter\nnexus_ledger_rows_total {}\n\
             # HELP nexus_ledger_dropped_total Request rows the ledger could not keep (queue \
             full, or the database away too long).\n\
             # TYPE nexus_ledger_dropped_total counter\nnexus_ledger_dropped_total {}\n\
             # HELP nexus_ledger_up Whether the ledger's writer is connected to its database.\n\
             # TYPE nexus_ledger_up gauge\nnexus_ledger_up {}",
            m.rows.load(Relaxed),
            m.dropped.load(Relaxed),
            m.up.load(Relaxed) as u8,
        );
        m.write_latency.render(
            out,
            "nexus_ledger_write_seconds",
            "Time to write one batch of ledger rows (one transaction).",
        );
    }
}

/// One worker's rows on their way to the writer. A row per message cost each request a
/// heap allocation freed on the writer's thread and a send on the queue all workers
/// share; gathered, a batch of [`HANDOFF`] rows goes as one message, and a partial one
/// at the worker's next [`HANDOFF_EVERY`] tick ([`RowBatch::hand_over`]) or when the
/// batch is dropped with its worker.
pub struct RowBatch {
    ledger: Arc<Ledger>,
    rows: RefCell<Vec<Row>>,
}

impl RowBatch {
    pub fn new(ledger: Arc<Ledger>) -> RowBatch {
        RowBatch {
            ledger,
            rows: RefCell::new(Vec::new()),
        }
    }

    /// Keeps a finished request's row (nothing when the ledger is off).
    pub fn record(&self, row: Row) {
        if self.ledger.rows.is_none() {
            return;
        }
        let mut rows = self.rows.borrow_mut();
        if rows.is_empty() {
            self.ledger.unsent.fetch_add(1, Relaxed);
            rows.reserve_exact(HANDOFF);
        }
        rows.push(row);
        if rows.len() >= HANDOFF {
            drop(rows);
            self.hand_over();
        }
    }

    /// Sends the rows gathered so far to the writer.
    pub fn hand_over(&self) {
        let rows = std::mem::take(&mut *self.rows.borrow_mut());
        if rows.is_empty() {
            return;
        }
        self.ledger.send(rows);
        self.ledger.unsent.fetch_sub(1, Release);
    }
}

impl Drop for RowBatch {
    fn drop(&mut self) {
        self.hand_over();
    }
}
