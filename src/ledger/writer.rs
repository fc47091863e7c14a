//! The writer thread: batches queued rows into one transaction each, and keeps rows while
//! the database is away, reconnecting with backoff.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{Pace, Store};
use super::warn::Warner;
use super::{LedgerMetrics, Masker, Msg, Row, BATCH, BODY_CAP, HELD_MAX};
use crate::config::DbTarget;
use crate::stats::now_ms;

/// First wait before reconnecting; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often old rows are looked for.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// zstd level: fast, and text compresses ~5–10× anyway.
const ZSTD_LEVEL: i32 = 3;
/// A batch gathers rows this long (or until it is full) before it is written: one
/// transaction per few rows cost the writer thread more CPU than the request it records
/// (W1 at ~40k requests/s), one per thousands of rows a fraction of it.
const GATHER: Duration = Duration::from_millis(100);
/// Rows waiting at the start of a write from which the writer stops offering its core to
/// other threads ([`Pace::Behind`]): a few batches, a small part of the queue.
const BEHIND: usize = 4 * BATCH;

/// Opens the writer's connection (the engine's, or a test's stand-in).
pub type Connect = Box<dyn FnMut() -> Result<Box<dyn Store>, String> + Send>;

/// The writer's settings.
pub struct Writer {
    /// For messages only (no password).
    pub target: DbTarget,
    pub connect: Connect,
    pub metrics: Arc<LedgerMetrics>,
    pub warn: Arc<Warner>,
    pub mask: Masker,
    /// Rows older than this are deleted.
    pub retention: Option<Duration>,
}

impl Writer {
    /// Starts the thread; it ends when every sender is gone.
    pub fn spawn(self, rx: Receiver<Msg>) {
        std::thread::Builder::new()
            .name("nexus-ledger".into())
            .spawn(move || self.run(rx))
            .expect("spawn ledger writer");
    }

    fn run(mut self, rx: Receiver<Msg>) {
        // At the workers' own priority, not below it: a writer that yields to them gets
        // no core at all while they keep both busy, and its queue overflows (rows lost).
        // It yields between statements instead, while it keeps up (`Pace`).
        let mut store: Option<Box<dyn Store>> = None;
        let mut held: VecDeque<Row> = VecDeque::new();
        let mut flushes: Vec<SyncSender<bool>> = Vec::new();
        let mut backoff = BACKOFF_MIN;
        let mut next_try = Instant::now();
        let mut next_retention = Instant::now();
        // When the oldest row waiting to be written arrived.
        let mut gathering_since: Option<Instant> = None;
        loop {
            let gathering = store.is_some()
                && flushes.is_empty()
                && held.len() < BATCH
                && gathering_since.is_some_and(|since| since.elapsed() < GATHER);
            let was_empty = held.is_empty();
            if gathering {
                // Asleep rather than waiting on the queue: a writer blocked in a receive
                // is woken by every row a worker sends (a futex call on the worker's side,
                // a context switch on this one); asleep, rows just queue up meanwhile.
                let until = gathering_since.map_or_else(Instant::now, |since| since + GATHER);
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            } else {
                let wait = if held.is_empty() && flushes.is_empty() {
                    RETENTION_EVERY
                } else {
                    next_try
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1))
                };
                match rx.recv_timeout(wait) {
                    Ok(msg) => self.take(msg, &mut held, &mut flushes),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // Everything already queued joins this batch.
            while held.len() < HELD_MAX + BATCH {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut held, &mut flushes),
                    Err(_) => break,
                }
            }
            if held.is_empty() {
                gathering_since = None;
            } else if was_empty || gathering_since.is_none() {
                gathering_since = Some(Instant::now());
            }
            let gathering = store.is_some()
                && flushes.is_empty()
                && held.len() < BATCH
                && gathering_since.is_some_and(|since| since.elapsed() < GATHER);
            if gathering {
                continue;
            }
            if !flushes.is_empty() {
                // Shutdown: try the database now, whatever the backoff said.
                next_try = Instant::now();
            }
            if held.len() > HELD_MAX {
                let excess = held.len() - HELD_MAX;
                held.drain(..excess);
                self.metrics.dropped.fetch_add(excess as u64, Relaxed);
                self.warn.warn(|| {
                    format!(
                        "ledger: database unavailable for too long; dropped the {excess} oldest \
                         unwritten row(s) (nexus_ledger_dropped_total counts them all)"
                    )
                });
            }
            if store.is_none()
                && Instant::now() >= next_try
                && (!held.is_empty() || !flushes.is_empty())
            {
                match (self.connect)() {
                    Ok(s) => {
                        store = Some(s);
                        backoff = BACKOFF_MIN;
                        self.metrics.up.store(true, Relaxed);
                    }
                    Err(why) => {
                        self.unavailable(&why, held.len());
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if let Some(s) = store.as_mut() {
                if let Err(why) = self.write(s.as_mut(), &mut held) {
                    store = None;
                    self.metrics.up.store(false, Relaxed);
                    self.unavailable(&why, held.len());
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            if let (Some(s), Some(keep)) = (store.as_mut(), self.retention) {
                if Instant::now() >= next_retention {
                    next_retention = Instant::now() + RETENTION_EVERY;
                    let before = now_ms().saturating_sub(keep.as_millis() as u64);
                    match s.delete_before(before) {
                        Ok(0) => {}
                        Ok(n) => log::info!("ledger: deleted {n} row(s) past NEXUS_RETENTION_DAYS"),
                        Err(why) => log::warn!("ledger: deleting old rows failed: {why}"),
                    }
                }
            }
            if held.is_empty() {
                for ack in flushes.drain(..) {
                    let _ = ack.try_send(true);
                }
            }
        }
    }

    /// Takes one message: a worker's rows (their bodies masked and compressed here, off
    /// the workers) or a flush request.
    fn take(&self, msg: Msg, held: &mut VecDeque<Row>, flushes: &mut Vec<SyncSender<bool>>) {
        match msg {
            Msg::Rows(rows) => {
                for mut row in rows {
                    if let Some(bodies) = row.bodies.as_mut() {
                        bodies.request = self.pack(&bodies.request);
                        bodies.response = self.pack(&bodies.response);
                    }
                    held.push_back(row);
                }
            }
            Msg::Flush(ack) => flushes.push(ack),
        }
    }

    /// A body as stored: cut at [`BODY_CAP`], masked, zstd-compressed.
    fn pack(&self, body: &[u8]) -> Vec<u8> {
        let masked = (self.mask)(&body[..body.len().min(BODY_CAP)]);
        zstd::bulk::compress(&masked, ZSTD_LEVEL).unwrap_or_default()
    }

    /// Writes held rows a batch (one transaction) at a time; a failed batch stays held.
    fn write(&self, store: &mut dyn Store, held: &mut VecDeque<Row>) -> Result<(), String> {
        while !held.is_empty() {
            let pace = match held.len() >= BEHIND {
                true => Pace::Behind,
                false => Pace::Polite,
            };
            let n = held.len().min(BATCH);
            let batch = &held.make_contiguous()[..n];
            let started = Instant::now();
            store.insert(batch, pace)?;
            self.metrics.write_latency.observe(started.elapsed());
            self.metrics.rows.fetch_add(n as u64, Relaxed);
            held.drain(..n);
        }
        Ok(())
    }

    fn unavailable(&self, why: &str, held: usize) {
        let target = self.target.describe();
        self.warn.warn(|| {
            format!(
                "ledger: database {target} unavailable ({why}); {held} row(s) held, retrying \
                 with backoff; requests are not affected"
            )
        });
    }
}

/// A stored body back as text: decompressed (lossy UTF-8).
pub fn unpack(stored: &[u8]) -> String {
    let mut out = Vec::new();
    match zstd::stream::read::Decoder::new(stored).and_then(|mut d| d.read_to_end(&mut out)) {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::store::{RequestFilter, UsageLine, UsageQuery};
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::mpsc::sync_channel;
    use std::sync::Mutex;

    /// A database that keeps the ids it was given.
    struct Fake(Arc<Mutex<Vec<String>>>);

    impl Store for Fake {
        fn insert(&mut self, rows: &[Row], _: Pace) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .extend(rows.iter().map(|r| r.texts().id.to_string()));
            Ok(())
        }
        fn requests(&mut self, _: &RequestFilter) -> Result<Vec<Row>, String> {
            Ok(Vec::new())
        }
        fn request(
            &mut self,
            _: &str,
        ) -> Result<Option<(Row, Option<super::super::Bodies>)>, String> {
            Ok(None)
        }
        fn usage(&mut self, _: &UsageQuery) -> Result<Vec<UsageLine>, String> {
            Ok(Vec::new())
        }
        fn delete_before(&mut self, _: u64) -> Result<u64, String> {
            Ok(0)
        }
        fn spend(
            &mut self,
            _: u64,
            _: u64,
            _: u64,
        ) -> Result<Vec<crate::ledger::store::SpendLine>, String> {
            Ok(Vec::new())
        }
    }

    fn start(
        up: Arc<AtomicBool>,
    ) -> (SyncSender<Msg>, Arc<LedgerMetrics>, Arc<Mutex<Vec<String>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(LedgerMetrics::default());
        let kept = Arc::clone(&written);
        let (tx, rx) = sync_channel(super::super::QUEUE);
        Writer {
            target: DbTarget::Off,
            connect: Box::new(move || match up.load(Relaxed) {
                true => Ok(Box::new(Fake(Arc::clone(&kept))) as Box<dyn Store>),
                false => Err("down".into()),
            }),
            metrics: Arc::clone(&metrics),
            warn: Arc::new(Warner::default()),
            mask: |b| b.to_vec(),
            retention: None,
        }
        .spawn(rx);
        (tx, metrics, written)
    }

    fn row(n: usize) -> Msg {
        Msg::Rows(vec![Row {
            text: crate::ledger::RowText::new(crate::ledger::Texts {
                id: &n.to_string(),
                ..Default::default()
            }),
            ..Row::default()
        }])
    }

    fn wait_for(counter: &AtomicU64, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while counter.load(Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n}",
                counter.load(Relaxed)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn rows_wait_for_a_database_that_is_away_and_are_written_in_order_when_it_is_back() {
        let up = Arc::new(AtomicBool::new(false));
        let (tx, metrics, written) = start(Arc::clone(&up));
        for n in 0..10 {
            tx.send(row(n)).unwrap();
        }
        // A flush while the database is away cannot succeed...
        let (ack, done) = sync_channel(1);
        tx.send(Msg::Flush(ack)).unwrap();
        assert!(done.recv_timeout(Duration::from_millis(300)).is_err());
        assert_eq!(metrics.rows.load(Relaxed), 0);
        // ...and is answered once it is back, with every row written, in order.
        up.store(true, Relaxed);
        assert_eq!(done.recv_timeout(Duration::from_secs(10)), Ok(true));
        assert_eq!(metrics.rows.load(Relaxed), 10);
        let ids: Vec<String> = (0..10).map(|n| n.to_string()).collect();
        assert_eq!(*written.lock().unwrap(), ids);
        assert_eq!(metrics.dropped.load(Relaxed), 0);
    }

    #[test]
    fn past_the_held_limit_the_oldest_rows_are_dropped_and_counted() {
        let up = Arc::new(AtomicBool::new(false));
        let (tx, metrics, written) = start(Arc::clone(&up));
        let extra = 700;
        for n in 0..HELD_MAX + extra {
            tx.send(row(n)).unwrap();
        }
        wait_for(&metrics.dropped, extra as u64);
        up.store(true, Relaxed);
        wait_for(&metrics.rows, HELD_MAX as u64);
        assert_eq!(metrics.dropped.load(Relaxed), extra as u64);
        let written = written.lock().unwrap();
        assert_eq!(
            written.first().map(String::as_str),
            Some("700"),
            "the oldest went"
        );
        assert_eq!(written.len(), HELD_MAX);
    }
}
