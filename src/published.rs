//! A value that every worker reads on every request and one thread replaces now and
//! then (a reloaded file): a read is one atomic load while nothing changed, the worker
//! keeping its own reference meanwhile; the read lock is taken only after a change, and
//! never held across I/O.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The current version of a `T`.
#[derive(Debug, Default)]
pub struct Published<T> {
    generation: AtomicU64,
    current: RwLock<Arc<T>>,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published {
            generation: AtomicU64::new(0),
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The current version (for threads without a [`Local`]).
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the value; readers see it at their next read.
    pub fn publish(&self, value: T) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current version, through the worker's own reference, with the
    /// number the worker knows that version by: it grows with every version the worker
    /// reads, so what a worker keeps about one version can be told from the next.
    pub fn with<R>(&self, local: &Local<T>, f: impl FnOnce(&T, u64) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        let mut cached = local.0.borrow_mut();
        match &*cached {
            Some((seen, value)) if *seen == generation => f(value, generation),
            _ => {
                let value = self.get();
                let result = f(&value, generation);
                *cached = Some((generation, value));
                result
            }
        }
    }
}

/// A worker's reference to the version it last read.
#[derive(Debug)]
pub struct Local<T>(RefCell<Option<(u64, Arc<T>)>>);

impl<T> Default for Local<T> {
    fn default() -> Self {
        Local(RefCell::new(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_a_new_version_at_their_next_read() {
        let p = Published::new(1);
        let local = Local::default();
        assert_eq!(p.with(&local, |v, _| *v), 1);
        let first = p.with(&local, |_, version| version);
        p.publish(2);
        assert_eq!(p.with(&local, |v, _| *v), 2);
        assert!(p.with(&local, |_, version| version) > first);
        assert_eq!(*p.get(), 2);
        // Unchanged: the worker's own reference, the same Arc.
        let a = p.with(&local, |v, _| v as *const i32);
        let b = p.with(&local, |v, _| v as *const i32);
        assert_eq!(a, b);
    }
}
