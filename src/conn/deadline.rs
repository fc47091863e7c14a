//! Time limits on a connection's reads and writes, without a timer per operation.
//!
//! Every wait of a connection task is bounded: the request head, a body pause, a write
//! to the client, the upstream's response head, a pause in an event stream. A monoio
//! timer around each of these (timer-wheel insert and removal, clock reads, the driver
//! computing its next wake-up) cost ~750 user-space instructions per wait, and a small
//! request waits three times: 8.5% of W1's instructions (callgrind: 26.9k -> 24.6k per
//! request with no timers at all). Here a wait is armed with a count of worker ticks
//! instead, and the worker's housekeeping tick wakes the tasks whose count has run out.
//!
//! A limit ends never early and about one tick late at most (100 ms, more while the
//! worker is too busy to tick): every limit configured here is whole seconds, so the
//! slack does not matter.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A worker's tick count, and the deadlines of its connection tasks.
pub struct Ticks {
    period: Duration,
    now: Cell<u64>,
    deadlines: RefCell<Vec<Weak<Deadline>>>,
}

impl Ticks {
    /// A count at zero, advanced by [`Ticks::advance`] once per `period` or more.
    pub fn new(period: Duration) -> Rc<Self> {
        Rc::new(Ticks {
            period,
            now: Cell::new(0),
            deadlines: RefCell::new(Vec::new()),
        })
    }

    /// A deadline for one task's waits (one wait at a time), registered here.
    pub fn deadline(self: &Rc<Self>) -> Rc<Deadline> {
        let deadline = Rc::new(Deadline {
            ticks: Rc::clone(self),
            at: Cell::new(DISARMED),
            expired: Cell::new(false),
            waker: Cell::new(None),
        });
        self.deadlines.borrow_mut().push(Rc::downgrade(&deadline));
        deadline
    }

    /// One more tick has passed: wakes every task whose wait ran out, and forgets the
    /// deadlines of tasks that have ended.
    pub fn advance(&self) {
        let now = self.now.get() + 1;
        self.now.set(now);
        let mut due = Vec::new();
        self.deadlines.borrow_mut().retain(|weak| {
            let Some(deadline) = weak.upgrade() else {
                return false;
            };
            if deadline.at.get() <= now {
                deadline.at.set(DISARMED);
                deadline.expired.set(true);
                due.extend(deadline.waker.take());
            }
            true
        });
        // Woken once the list is let go: a waker is free to register a new deadline.
        due.into_iter().for_each(Waker::wake);
    }

    /// Deadlines registered and not yet forgotten.
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.deadlines.borrow().len()
    }
}

/// `Deadline::at` when no wait is armed.
const DISARMED: u64 = u64::MAX;

/// The limit on one task's current wait.
pub struct Deadline {
    ticks: Rc<Ticks>,
    /// The tick at which the armed wait ends.
    at: Cell<u64>,
    expired: Cell<bool>,
    /// The task's waker, kept between waits: a task polls with the same waker every
    /// time, so it is cloned once, not once per wait.
    waker: Cell<Option<Waker>>,
}

/// A wait outlasted its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl Deadline {
    /// Runs `wait`, giving up on it (dropping it, which cancels its I/O) once `limit`
    /// has passed.
    pub fn within<F: Future>(self: &Rc<Self>, limit: Duration, wait: F) -> Within<F> {
        let ticks = &self.ticks;
        // Whole ticks covering the limit, plus one for the part of a tick already gone.
        let count = limit.as_nanos().div_ceil(ticks.period.as_nanos().max(1)) + 1;
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.at.set(ticks.now.get().saturating_add(count));
        self.expired.set(false);
        Within {
            deadline: Rc::clone(self),
            wait,
        }
    }

    fn keep_waker(&self, waker: &Waker) {
        let kept = self.waker.take();
        self.waker.set(match kept {
            Some(kept) if kept.will_wake(waker) => Some(kept),
            _ => Some(waker.clone()),
        });
    }
}

/// A wait with a limit (see [`Deadline::within`]).
pub struct Within<F> {
    deadline: Rc<Deadline>,
    wait: F,
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `wait` is never moved out of the pinned `Within`.
        let this = unsafe { self.get_unchecked_mut() };
        let deadline = &this.deadline;
        // The wait first: one that finished as its limit ran out keeps what it got.
        // SAFETY: as above, `wait` stays where it is for as long as `this` does.
        let wait = unsafe { Pin::new_unchecked(&mut this.wait) };
        match wait.poll(cx) {
            Poll::Ready(output) => {
                deadline.at.set(DISARMED);
                Poll::Ready(Ok(output))
            }
            Poll::Pending if deadline.expired.get() => Poll::Ready(Err(TimedOut)),
            Poll::Pending => {
                deadline.keep_waker(cx.waker());
                Poll::Pending
            }
        }
    }
}

impl<F> Drop for Within<F> {
    fn drop(&mut self) {
        self.deadline.at.set(DISARMED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const PERIOD: Duration = Duration::from_millis(100);

    fn poll<F: Future>(f: Pin<&mut F>, wakes: &Arc<CountWakes>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::clone(wakes));
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_wait_ends_after_its_limit_never_before() {
        let ticks = Ticks::new(PERIOD);
        let deadline = ticks.deadline();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        // 250 ms: three whole ticks, plus one for the tick already under way.
        let mut wait = std::pin::pin!(
            deadline.within(Duration::from_millis(250), std::future::pending::<()>())
        );
        assert_eq!(poll(wait.as_mut(), &wakes), Poll::Pending);
        for _ in 0..3 {
            ticks.advance();
            assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
            assert_eq!(poll(wait.as_mut(), &wakes), Poll::Pending);
        }
        ticks.advance();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(wait.as_mut(), &wakes), Poll::Ready(Err(TimedOut)));
    }

    #[test]
    fn a_finished_wait_disarms_and_the_next_starts_afresh() {
        let ticks = Ticks::new(PERIOD);
        let deadline = ticks.deadline();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        {
            let pending = std::future::pending::<()>();
            let mut abandoned = std::pin::pin!(deadline.within(Duration::from_secs(1), pending));
            assert_eq!(poll(abandoned.as_mut(), &wakes), Poll::Pending);
        }
        for _ in 0..20 {
            ticks.advance();
        }
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a dropped wait is not woken"
        );
        let mut done = std::pin::pin!(deadline.within(Duration::from_secs(1), async { 7 }));
        assert_eq!(poll(done.as_mut(), &wakes), Poll::Ready(Ok(7)));
        for _ in 0..20 {
            ticks.advance();
        }
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a finished wait is not woken"
        );
        let pending = std::future::pending::<()>();
        let mut next = std::pin::pin!(deadline.within(Duration::from_secs(1), pending));
        assert_eq!(poll(next.as_mut(), &wakes), Poll::Pending);
        for _ in 0..10 {
            ticks.advance();
        }
        assert_eq!(poll(next.as_mut(), &wakes), Poll::Pending);
        ticks.advance();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(next.as_mut(), &wakes), Poll::Ready(Err(TimedOut)));
    }

    #[test]
    fn a_wait_that_finished_as_its_limit_ran_out_keeps_its_result() {
        let ticks = Ticks::new(PERIOD);
        let deadline = ticks.deadline();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let ready = Rc::new(Cell::new(false));
        let flag = Rc::clone(&ready);
        let wait = std::future::poll_fn(move |_| {
            if flag.get() {
                Poll::Ready(5)
            } else {
                Poll::Pending
            }
        });
        let mut wait = std::pin::pin!(deadline.within(PERIOD, wait));
        assert_eq!(poll(wait.as_mut(), &wakes), Poll::Pending);
        ticks.advance();
        ticks.advance();
        ready.set(true);
        assert_eq!(poll(wait.as_mut(), &wakes), Poll::Ready(Ok(5)));
    }

    #[test]
    fn ended_tasks_are_forgotten() {
        let ticks = Ticks::new(PERIOD);
        let kept = ticks.deadline();
        drop(ticks.deadline());
        assert_eq!(ticks.registered(), 2);
        ticks.advance();
        assert_eq!(ticks.registered(), 1);
        drop(kept);
        ticks.advance();
        assert_eq!(ticks.registered(), 0);
    }
}
