//! The fleet thread (PostgreSQL only): every [`READ_EVERY`] it reads what the other
//! processes on the database spent and which pool members they rested, and hands both to
//! the hooks `main` wired in; the rests this process shares it writes as they come. It has
//! a connection of its own, so that neither the writer's batches nor a slow query delay
//! it. A database that is away keeps the last figures (budgets go on counting them beside
//! this process's own) and is tried again with backoff.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::postgres::Postgres;
use super::postgres_fleet::Rest;
use super::store::FleetLines;
use super::warn::Warner;
use crate::stats::now_ms;

/// How fresh the fleet's figures are: a budget spent elsewhere counts here this long
/// after the row reached the database at the latest.
pub const READ_EVERY: Duration = Duration::from_secs(1);
/// Rests waiting to be shared; past this a rest stays this process's own.
pub const QUEUE: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Takes the other processes' spend, read at the given ms.
pub type SpendHook = Box<dyn Fn(&FleetLines, u64) + Send>;
/// Takes the members resting, read at the given ms.
pub type RestsHook = Box<dyn Fn(&[Rest], u64) + Send>;

/// What the fleet thread does with what it read.
pub struct Hooks {
    pub spend: SpendHook,
    pub rests: RestsHook,
}

/// Starts the thread; it ends when every sender of `shared` is gone.
pub fn spawn(url: String, hooks: Hooks, shared: Receiver<Rest>, warn: std::sync::Arc<Warner>) {
    let spawned = std::thread::Builder::new()
        .name("nexus-fleet".into())
        .spawn(move || {
            super::yield_to_workers();
            Fleet {
                url,
                hooks,
                warn,
                db: None,
                to_share: Vec::new(),
            }
            .run(shared)
        });
    if let Err(e) = spawned {
        log::warn!("ledger: could not start the fleet thread ({e}); budgets and rests stay local");
    }
}

struct Fleet {
    url: String,
    hooks: Hooks,
    warn: std::sync::Arc<Warner>,
    db: Option<Postgres>,
    /// Rests not yet written.
    to_share: Vec<Rest>,
}

impl Fleet {
    fn run(mut self, shared: Receiver<Rest>) {
        let mut next_read = Instant::now();
        let mut next_try = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut next_prune = Instant::now();
        loop {
            match shared.recv_timeout(next_read.saturating_duration_since(Instant::now())) {
                Ok(rest) => self.keep(rest),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(rest) = shared.try_recv() {
                self.keep(rest);
            }
            if self.db.is_none() && Instant::now() >= next_try {
                match Postgres::open(&self.url, super::PATIENCE) {
                    Ok(db) => {
                        self.db = Some(db);
                        backoff = BACKOFF_MIN;
                    }
                    Err(why) => {
                        self.away(&why);
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            let due = Instant::now() >= next_read;
            if due {
                next_read = Instant::now() + READ_EVERY;
            }
            let prune = Instant::now() >= next_prune;
            if let Some(db) = self.db.as_mut() {
                let worked = Self::exchange(db, &mut self.to_share, &self.hooks, due, prune);
                match worked {
                    Ok(()) if prune => next_prune = Instant::now() + PRUNE_EVERY,
                    Ok(()) => {}
                    Err(why) => {
                        self.db = None;
                        self.away(&why);
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// Keeps a rest to share; a later rest of the same member replaces it.
    fn keep(&mut self, rest: Rest) {
        let waiting = self.to_share.len();
        match self
            .to_share
            .iter_mut()
            .find(|r| r.domain == rest.domain && r.member == rest.member)
        {
            Some(kept) => kept.until_ms = kept.until_ms.max(rest.until_ms),
            None if waiting < QUEUE => self.to_share.push(rest),
            None => {}
        }
    }

    /// Writes the rests waiting, and when `read` is due, reads the fleet's figures.
    fn exchange(
        db: &mut Postgres,
        to_share: &mut Vec<Rest>,
        hooks: &Hooks,
        read: bool,
        prune: bool,
    ) -> Result<(), String> {
        if !to_share.is_empty() {
            db.share_rests(to_share)?;
            to_share.clear();
        }
        if read {
            let now = now_ms();
            let spend = db.fleet_spend(now)?;
            let rests = db.rests(now)?;
            (hooks.spend)(&spend, now);
            (hooks.rests)(&rests, now);
        }
        if prune {
            db.prune_fleet(now_ms())?;
        }
        Ok(())
    }

    fn away(&self, why: &str) {
        self.warn.warn(|| {
            format!(
                "ledger: the fleet's figures cannot be read ({why}); budgets count this \
                 process's spend and the fleet's as last read, retrying with backoff"
            )
        });
    }
}
