//! Large request-body buffers a worker keeps between requests.
//!
//! A `/v1/messages` body is read whole before it is classified and forwarded, and a
//! Claude Code request is often hundreds of KB. The connection's read buffer grows to
//! hold it and is swapped for a small one afterwards, so that idle connections stay
//! small. Without this store every such request grew a fresh buffer and freed it again:
//! a realloc copying what was already read, then fresh pages faulted in as the body
//! arrived. Kept buffers go back to the allocator once a sweep finds none was taken
//! since the one before, so a burst of large requests does not pin its memory.

use std::cell::{Cell, RefCell};

/// Most bytes of capacity kept per worker (W3's 16 connections of 256 KB fit twice).
const KEPT_BYTES: usize = 8 * 1024 * 1024;
/// A buffer larger than this is never kept: one rare huge body must not hold the store.
const LARGEST_KEPT: usize = KEPT_BYTES / 4;

/// Body buffers kept for the next large request on this worker.
#[derive(Default)]
pub struct BodyBuffers {
    kept: RefCell<Vec<Vec<u8>>>,
    /// A kept buffer was taken since the last sweep.
    used: Cell<bool>,
}

impl BodyBuffers {
    /// Gives `buf` room for `needed` bytes in all, keeping its contents: a kept buffer
    /// that large takes them over when there is one, otherwise `buf` grows.
    pub fn make_room(&self, buf: &mut Vec<u8>, needed: usize) {
        if buf.capacity() >= needed {
            return;
        }
        let mut kept = self.kept.borrow_mut();
        match kept.iter().position(|b| b.capacity() >= needed) {
            Some(at) => {
                let mut roomy = kept.swap_remove(at);
                roomy.extend_from_slice(buf);
                *buf = roomy;
                self.used.set(true);
            }
            None => buf.reserve(needed - buf.len()),
        }
    }

    /// Takes a buffer a connection no longer needs, emptied, if there is room for it.
    pub fn keep(&self, mut buf: Vec<u8>) {
        let mut kept = self.kept.borrow_mut();
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if buf.capacity() <= LARGEST_KEPT && held + buf.capacity() <= KEPT_BYTES {
            buf.clear();
            kept.push(buf);
        }
    }

    /// Frees every kept buffer if none was taken since the last sweep.
    pub fn sweep(&self) {
        if !self.used.replace(false) {
            self.kept.borrow_mut().clear();
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.kept.borrow().iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_takes_over_the_contents_read_so_far() {
        let store = BodyBuffers::default();
        let mut roomy = Vec::with_capacity(300_000);
        roomy.extend_from_slice(b"an earlier request's bytes");
        let address = roomy.as_ptr();
        store.keep(roomy);
        let mut buf = b"POST /v1/messages HTTP/1.1\r\n\r\n{\"mo".to_vec();
        let before = buf.clone();
        store.make_room(&mut buf, 262_144);
        assert_eq!(buf, before, "the bytes already read are kept, nothing else");
        assert_eq!(buf.as_ptr(), address, "the kept buffer is reused");
        assert_eq!(store.held(), 0);
    }

    #[test]
    fn without_a_big_enough_buffer_the_connection_buffer_grows() {
        let store = BodyBuffers::default();
        store.keep(Vec::with_capacity(100_000));
        let mut buf = b"head".to_vec();
        store.make_room(&mut buf, 200_000);
        assert!(buf.capacity() >= 200_000);
        assert_eq!(buf, b"head");
        assert_eq!(store.held(), 100_000, "the small one stays kept");
        // Room enough already: nothing is swapped.
        let address = buf.as_ptr();
        store.make_room(&mut buf, 150_000);
        assert_eq!(buf.as_ptr(), address);
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let store = BodyBuffers::default();
        store.keep(Vec::with_capacity(LARGEST_KEPT + 1));
        assert_eq!(store.held(), 0, "a huge buffer is let go");
        for _ in 0..5 {
            store.keep(Vec::with_capacity(LARGEST_KEPT));
        }
        assert_eq!(store.held(), KEPT_BYTES);
    }

    #[test]
    fn a_sweep_frees_what_was_not_used_since_the_last() {
        let store = BodyBuffers::default();
        store.keep(Vec::with_capacity(300_000));
        store.keep(Vec::with_capacity(300_000));
        let mut buf = Vec::new();
        store.make_room(&mut buf, 250_000);
        store.sweep();
        assert_eq!(store.held(), 300_000, "in use since the last sweep: kept");
        store.sweep();
        assert_eq!(store.held(), 0, "idle for a whole sweep: freed");
    }
}
