//! Process-wide shutdown state shared by the main thread and the workers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Shutdown flag and the counts the main thread waits on.
#[derive(Default)]
pub struct Lifecycle {
    shutting_down: AtomicBool,
    /// Connections with a request in progress, or accepted and not yet served once.
    busy: AtomicUsize,
    /// Workers still accepting (or draining their accept queue).
    accepting: AtomicUsize,
}

impl Lifecycle {
    /// Asks everyone to stop taking new work.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    pub fn accepting(&self) -> usize {
        self.accepting.load(Ordering::Acquire)
    }

    /// Marks a connection busy until the guard drops.
    pub fn busy_guard(&self) -> BusyGuard<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self)
    }

    /// Marks a worker's accept loop as running until the guard drops.
    pub fn accepting_guard(&self) -> AcceptingGuard<'_> {
        self.accepting.fetch_add(1, Ordering::AcqRel);
        AcceptingGuard(self)
    }
}

/// See [`Lifecycle::busy_guard`].
pub struct BusyGuard<'a>(&'a Lifecycle);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// See [`Lifecycle::accepting_guard`].
pub struct AcceptingGuard<'a>(&'a Lifecycle);

impl Drop for AcceptingGuard<'_> {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::AcqRel);
    }
}
