//! The SQLite engine's checkpoints, on a thread of their own. A checkpoint copies the WAL
//! into the database file and syncs both; on the writer thread (SQLite's automatic
//! checkpoint runs in the commit that crosses its threshold) that sync held up the writer
//! for as long as the disk took, while rows piled up in the workers' queue until it
//! overflowed. Here the writer commits into the WAL and only signals; the checkpoint
//! thread copies what was committed (a passive checkpoint: it never waits for the writer,
//! nor the writer for it), and the writer starts the WAL over once all of it is copied.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// At least this long between checkpoints: each copies everything committed since the
/// last, so fewer and larger ones cost less per row.
const EVERY: Duration = Duration::from_millis(500);
/// WAL bytes beyond which a checkpoint also starts the WAL over (see `run`).
const WAL_BEFORE_RESTART: i64 = 16 << 20;
/// Between tries to open the file.
const REOPEN: Duration = Duration::from_secs(5);
/// Waiting for the file when another connection holds it.
const BUSY: Duration = Duration::from_secs(2);

/// The writer's handle on its checkpoint thread; dropping it ends the thread and waits
/// for it, so that the writer's connection closes last (the last connection to close
/// checkpoints what is left and removes the WAL).
pub struct Checkpoints {
    committed: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Starts the thread, which opens its own connection to `path`.
    pub fn start(path: &Path) -> Result<Checkpoints, String> {
        let (committed, commits) = mpsc::sync_channel(1);
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("nexus-ledger-checkpoint".into())
            .spawn(move || run(path, commits))
            .map_err(|e| format!("starting the checkpoint thread: {e}"))?;
        Ok(Checkpoints {
            committed: Some(committed),
            thread: Some(thread),
        })
    }

    /// A transaction was committed: its pages wait in the WAL. Never waits.
    pub fn committed(&self) {
        if let Some(tx) = &self.committed {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.committed = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(path: PathBuf, commits: Receiver<()>) {
    super::yield_to_workers();
    // The writer's connection checkpoints nothing: a thread that cannot open the file
    // tries again rather than leave the WAL to grow.
    let conn = loop {
        match Connection::open(&path) {
            Ok(c) => break c,
            Err(e) => {
                log::warn!(
                    "ledger: no checkpoint connection to {} ({e}); trying again in {} s",
                    path.display(),
                    REOPEN.as_secs()
                );
                match commits.recv_timeout(REOPEN) {
                    Err(RecvTimeoutError::Disconnected) => return,
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                }
            }
        }
    };
    let _ = conn.busy_timeout(BUSY);
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap_or(4096);
    let restart_after = WAL_BEFORE_RESTART / page.max(512);
    // A commit that came while the thread rested after a checkpoint.
    let mut pending = false;
    loop {
        if !pending && commits.recv().is_err() {
            return;
        }
        pending = false;
        let started = Instant::now();
        match checkpoint(&conn, "PASSIVE") {
            // A WAL that kept growing (every passive checkpoint met a commit, so the
            // writer never found all of it copied and never started it over): copied
            // and started over now, the writer waiting for it this once.
            Ok(frames) if frames > restart_after => {
                if let Err(e) = checkpoint(&conn, "RESTART") {
                    log::debug!("ledger: checkpoint of {} failed: {e}", path.display());
                }
            }
            Ok(_) => {}
            Err(e) => log::debug!("ledger: checkpoint of {} failed: {e}", path.display()),
        }
        // Rest until the next checkpoint is due; the writer going ends the thread.
        let due = started + EVERY;
        loop {
            match commits.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Runs a checkpoint of `mode`; returns how many frames the WAL holds.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
}
