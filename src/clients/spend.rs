//! What a client has spent of one kind (micro-dollars or tokens) over every window,
//! counted without locks: each counter is one atomic word holding a window tag and an
//! amount, so a window that has rolled over is reset by the same compare-and-swap that
//! adds to it, and a read never waits.
//!
//! Beside this process's own spend, a fleet sharing a PostgreSQL ledger keeps what the
//! other processes spent, as last read from it ([`Spend::set_fleet`]); every check counts
//! both.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::window::{Moment, Window, ROLLING_MS};

/// The rolling window is counted in buckets this long: spend leaves it a bucket at a time.
pub const BUCKET_MS: u64 = 5 * 60 * 1000;
/// Buckets counted: the current one and the five hours' before it, so that spend counts
/// for at least five hours (and at most one bucket longer).
const BUCKETS: usize = (ROLLING_MS / BUCKET_MS) as usize + 1;

/// A counter word: the window's tag above, the amount below.
const AMOUNT_BITS: u32 = 40;
const AMOUNT_MAX: u64 = (1 << AMOUNT_BITS) - 1;
const TAG_BITS: u32 = 64 - AMOUNT_BITS;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// One window's amount, tagged with the window it counts (a day's, week's or month's
/// number, or a rolling bucket's). Amounts saturate at 2⁴⁰ (a trillion tokens, or a
/// million dollars in micro-dollars, in one window).
#[derive(Debug, Default)]
struct Tagged(AtomicU64);

impl Tagged {
    /// Adds `amount` to window `tag`: to what it holds if it holds that window, else
    /// instead of it — unless it holds a later window (a late add for a past window,
    /// as restoring from the ledger may make, changes nothing).
    fn add(&self, tag: u64, amount: u64) {
        let tag = tag & TAG_MASK;
        let _ = self.0.fetch_update(Relaxed, Relaxed, |word| {
            let (held, sum) = (word >> AMOUNT_BITS, word & AMOUNT_MAX);
            let sum = if held == tag {
                sum.saturating_add(amount).min(AMOUNT_MAX)
            } else if later(held, tag) {
                return None;
            } else {
                amount.min(AMOUNT_MAX)
            };
            Some(tag << AMOUNT_BITS | sum)
        });
    }

    /// Holds `amount` for window `tag`, whatever it held.
    fn set(&self, tag: u64, amount: u64) {
        self.0.store(
            (tag & TAG_MASK) << AMOUNT_BITS | amount.min(AMOUNT_MAX),
            Relaxed,
        );
    }

    /// The amount of window `tag`; 0 if the counter holds another.
    fn get(&self, tag: u64) -> u64 {
        let word = self.0.load(Relaxed);
        match word >> AMOUNT_BITS == tag & TAG_MASK {
            true => word & AMOUNT_MAX,
            false => 0,
        }
    }
}

/// Whether tag `a` is later than tag `b` (tags wrap at 2²⁴: compared as the nearer way
/// round; a 5-minute bucket's number wraps every 159 years).
fn later(a: u64, b: u64) -> bool {
    let ahead = a.wrapping_sub(b) & TAG_MASK;
    ahead != 0 && ahead < 1 << (TAG_BITS - 1)
}

/// Amounts per window: the calendar windows' and the rolling window's buckets.
#[derive(Debug)]
struct Counters {
    /// Day, week and month, in [`Window::ALL`] order after the rolling window.
    calendar: [Tagged; 3],
    /// Bucket `b` (ms / [`BUCKET_MS`]) is counted in slot `b % BUCKETS`.
    rolling: [Tagged; BUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calendar: Default::default(),
            rolling: std::array::from_fn(|_| Tagged::default()),
        }
    }
}

impl Counters {
    fn calendar(&self, window: Window, now: &Moment) -> u64 {
        let number = now.number(window).expect("a calendar window");
        self.calendar[window.index() - 1].get(number)
    }

    fn bucket(&self, bucket: u64) -> u64 {
        self.rolling[bucket as usize % BUCKETS].get(bucket)
    }
}

/// What the other processes of a fleet spent in the windows open at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSpend {
    /// Day, week and month.
    pub calendar: [u64; 3],
    /// The rolling window's buckets that hold any: (ms / [`BUCKET_MS`], amount).
    pub rolling: Vec<(u64, u64)>,
}

/// Spend of one kind over every window.
#[derive(Debug, Default)]
pub struct Spend {
    /// This process's.
    own: Counters,
    /// The rest of the fleet's, replaced by each read of the shared ledger.
    fleet: Counters,
    /// The rolling window's spend but for its two newest buckets, kept so that a check
    /// reads a few words, not every bucket (see [`Spend::rolling`]): tagged with the
    /// newest bucket it was summed for and the [`Spend::changes`] it saw.
    older: AtomicU64,
    /// Counts changes to buckets older than the two newest (spend read back at start, each
    /// read of the fleet's), which [`Spend::older`] must be summed again after. Spend that
    /// ends a request lands in the newest bucket.
    changes: AtomicU64,
}

/// [`Spend::older`]'s word: a bit set once it was summed, the newest bucket's number and
/// the changes seen (their low bits), the amount.
const OLDER_SUMMED: u64 = 1 << (TAG_BITS - 1);
const OLDER_CHANGES_BITS: u32 = 4;
const OLDER_TAG_MASK: u64 = (1 << (TAG_BITS - 1 - OLDER_CHANGES_BITS)) - 1;
const OLDER_CHANGES_MASK: u64 = (1 << OLDER_CHANGES_BITS) - 1;

impl Spend {
    /// Counts `amount` spent at `at_ms` in every window holding that moment.
    pub fn add(&self, at_ms: u64, amount: u64) {
        self.add_at(&Moment::at(at_ms), amount);
    }

    /// Counts `amount` spent at `at` in every window holding that moment.
    pub fn add_at(&self, at: &Moment, amount: u64) {
        if amount == 0 {
            return;
        }
        for window in CALENDAR {
            let number = at.number(window).expect("a calendar window");
            self.own.calendar[window.index() - 1].add(number, amount);
        }
        let bucket = at.ms / BUCKET_MS;
        self.own.rolling[bucket as usize % BUCKETS].add(bucket, amount);
    }

    /// Counts spend made at `at_ms`, which may be long past (read back from the ledger).
    pub fn add_past(&self, at_ms: u64, amount: u64) {
        self.add(at_ms, amount);
        self.changes.fetch_add(1, Release);
    }

    /// Replaces what the rest of the fleet spent with `fleet`, read at `now_ms`.
    pub fn set_fleet(&self, fleet: &FleetSpend, now_ms: u64) {
        for window in CALENDAR {
            let calendar = window.calendar(now_ms).expect("a calendar window");
            let i = window.index() - 1;
            self.fleet.calendar[i].set(calendar.number, fleet.calendar[i]);
        }
        let newest = now_ms / BUCKET_MS;
        for bucket in (newest + 1).saturating_sub(BUCKETS as u64)..=newest {
            let amount = fleet
                .rolling
                .iter()
                .find(|(b, _)| *b == bucket)
                .map_or(0, |(_, amount)| *amount);
            self.fleet.rolling[bucket as usize % BUCKETS].set(bucket, amount);
        }
        self.changes.fetch_add(1, Release);
    }

    /// What is spent in `window` as of `now_ms`, here and in the rest of the fleet.
    pub fn spent(&self, window: Window, now_ms: u64) -> u64 {
        self.spent_at(window, &Moment::at(now_ms))
    }

    /// What is spent in `window` as of `now`, here and in the rest of the fleet.
    pub fn spent_at(&self, window: Window, now: &Moment) -> u64 {
        match window {
            Window::FiveHours => self.rolling(now.ms),
            _ => self
                .own
                .calendar(window, now)
                .saturating_add(self.fleet.calendar(window, now)),
        }
    }

    /// What is spent in the rolling window as of `now_ms`: the sum of its older buckets,
    /// summed again only when the newest bucket or an older one changed, and its two
    /// newest buckets.
    fn rolling(&self, now_ms: u64) -> u64 {
        let newest = now_ms / BUCKET_MS;
        let changes = self.changes.load(Acquire) & OLDER_CHANGES_MASK;
        let tag = OLDER_SUMMED | (newest & OLDER_TAG_MASK) << OLDER_CHANGES_BITS | changes;
        let word = self.older.load(Relaxed);
        let older = if word >> AMOUNT_BITS == tag {
            word & AMOUNT_MAX
        } else {
            let sum = self
                .buckets(now_ms)
                .take(BUCKETS - 2)
                .fold(0u64, |sum, (_, amount)| sum.saturating_add(amount))
                .min(AMOUNT_MAX);
            self.older.store(tag << AMOUNT_BITS | sum, Relaxed);
            sum
        };
        let recent = [newest.saturating_sub(1), newest]
            .into_iter()
            .map(|b| self.own.bucket(b).saturating_add(self.fleet.bucket(b)));
        recent.fold(older, u64::saturating_add)
    }

    /// When what is spent in `window` will be below `limit` again (ms since the epoch):
    /// the calendar window's end, or when enough of the rolling window's spend has aged
    /// out of it. `now_ms` if it already is.
    pub fn frees_at(&self, window: Window, limit: u64, now_ms: u64) -> u64 {
        let mut spent = self.spent(window, now_ms);
        if spent < limit {
            return now_ms;
        }
        if let Some(calendar) = window.calendar(now_ms) {
            return calendar.end_ms;
        }
        for (bucket, amount) in self.buckets(now_ms) {
            spent -= amount;
            if spent < limit {
                return (bucket + 1) * BUCKET_MS + ROLLING_MS;
            }
        }
        now_ms
    }

    /// When the oldest spend still in the rolling window leaves it; none if it is empty.
    pub fn oldest_leaves_at(&self, now_ms: u64) -> Option<u64> {
        self.buckets(now_ms)
            .find(|(_, amount)| *amount > 0)
            .map(|(bucket, _)| (bucket + 1) * BUCKET_MS + ROLLING_MS)
    }

    /// The rolling window's buckets as of `now_ms`, oldest first: (bucket, amount).
    fn buckets(&self, now_ms: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let newest = now_ms / BUCKET_MS;
        ((newest + 1).saturating_sub(BUCKETS as u64)..=newest).map(move |bucket| {
            let amount = self.own.bucket(bucket);
            (bucket, amount.saturating_add(self.fleet.bucket(bucket)))
        })
    }
}

/// The calendar windows, in the order of their counters.
const CALENDAR: [Window; 3] = [Window::Day, Window::Week, Window::Month];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::window::{DAY_MS, HOUR_MS};

    /// 2026-12-09T15:30:00Z, a Wednesday.
    const NOW: u64 = 1_796_830_200_000;

    #[test]
    fn a_calendar_window_counts_until_it_ends_then_starts_again() {
        let spend = Spend::default();
        spend.add(NOW, 300);
        spend.add(NOW + HOUR_MS, 200);
        assert_eq!(spend.spent(Window::Day, NOW + HOUR_MS), 500);
        let midnight = Window::Day.calendar(NOW).unwrap().end_ms;
        assert_eq!(spend.frees_at(Window::Day, 400, NOW), midnight);
        assert_eq!(
            spend.frees_at(Window::Day, 501, NOW),
            NOW,
            "under the limit"
        );
        // The next day starts from nothing; the week and month go on.
        assert_eq!(spend.spent(Window::Day, midnight), 0);
        spend.add(midnight + 1, 50);
        assert_eq!(spend.spent(Window::Day, midnight + 1), 50);
        assert_eq!(spend.spent(Window::Week, midnight + 1), 550);
        assert_eq!(spend.spent(Window::Month, midnight + 1), 550);
        // A late add for the day before does not reset today's count.
        spend.add(NOW, 1_000);
        assert_eq!(spend.spent(Window::Day, midnight + 1), 50);
    }

    #[test]
    fn the_rolling_window_frees_spend_as_it_ages_out() {
        let spend = Spend::default();
        let t0 = NOW - NOW % BUCKET_MS;
        spend.add(t0, 100);
        spend.add(t0 + HOUR_MS, 100);
        spend.add(t0 + 2 * HOUR_MS, 100);
        let now = t0 + 3 * HOUR_MS;
        assert_eq!(spend.spent(Window::FiveHours, now), 300);
        // Below 250 once the first 100 ages out: five hours after its bucket ends.
        let frees = spend.frees_at(Window::FiveHours, 250, now);
        assert_eq!(frees, t0 + BUCKET_MS + ROLLING_MS);
        assert_eq!(spend.spent(Window::FiveHours, frees), 200);
        assert_eq!(spend.spent(Window::FiveHours, frees - 1), 300);
        // Below 150 once the second has gone too.
        assert_eq!(
            spend.frees_at(Window::FiveHours, 150, now),
            t0 + HOUR_MS + BUCKET_MS + ROLLING_MS
        );
        // Long after, nothing is left, and a slot reused by a new bucket starts afresh.
        let later = t0 + DAY_MS;
        assert_eq!(spend.spent(Window::FiveHours, later), 0);
        spend.add(later, 7);
        assert_eq!(spend.spent(Window::FiveHours, later), 7);
    }

    #[test]
    fn the_rolling_windows_older_sum_is_summed_again_when_it_changes() {
        let spend = Spend::default();
        let t0 = NOW - NOW % BUCKET_MS;
        spend.add(t0, 100);
        assert_eq!(spend.spent(Window::FiveHours, t0), 100);
        // Three buckets on, t0's is an older one: summed once, then read from the sum.
        let later = t0 + 3 * BUCKET_MS;
        assert_eq!(spend.spent(Window::FiveHours, later), 100);
        spend.add(later, 5);
        assert_eq!(spend.spent(Window::FiveHours, later), 105);
        // Spend read back into an older bucket counts at once.
        spend.add_past(t0 - HOUR_MS, 50);
        assert_eq!(spend.spent(Window::FiveHours, later), 155);
        // As does the fleet's, and each read of it replaces the last.
        let fleet = |amount| FleetSpend {
            calendar: [0; 3],
            rolling: vec![(t0 / BUCKET_MS - 1, amount)],
        };
        spend.set_fleet(&fleet(7), later);
        assert_eq!(spend.spent(Window::FiveHours, later), 162);
        spend.set_fleet(&fleet(1), later);
        assert_eq!(spend.spent(Window::FiveHours, later), 156);
        // Past five hours and a bucket, only the newest spend is left.
        let gone = later + ROLLING_MS;
        assert_eq!(spend.spent(Window::FiveHours, gone), 5);
    }

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        let spend = std::sync::Arc::new(Spend::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let spend = std::sync::Arc::clone(&spend);
                std::thread::spawn(move || (0..10_000).for_each(|_| spend.add(NOW, 3)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        for w in Window::ALL {
            assert_eq!(spend.spent(w, NOW), 120_000, "{w:?}");
        }
    }

    #[test]
    fn the_fleets_spend_counts_beside_this_processes_and_each_read_replaces_the_last() {
        let spend = Spend::default();
        let t0 = NOW - NOW % BUCKET_MS;
        spend.add(t0, 100);
        let bucket = t0 / BUCKET_MS;
        let fleet = FleetSpend {
            calendar: [40, 50, 60],
            rolling: vec![(bucket - 12, 30), (bucket, 10)],
        };
        spend.set_fleet(&fleet, t0);
        assert_eq!(spend.spent(Window::Day, t0), 140);
        assert_eq!(spend.spent(Window::Week, t0), 150);
        assert_eq!(spend.spent(Window::Month, t0), 160);
        assert_eq!(spend.spent(Window::FiveHours, t0), 140);
        // The fleet's oldest bucket leaves the rolling window first.
        assert_eq!(
            spend.frees_at(Window::FiveHours, 120, t0),
            (bucket - 11) * BUCKET_MS + ROLLING_MS
        );
        // A later read replaces the figures; buckets it no longer holds count nothing.
        spend.set_fleet(
            &FleetSpend {
                calendar: [5, 5, 5],
                rolling: vec![(bucket, 5)],
            },
            t0,
        );
        assert_eq!(spend.spent(Window::Day, t0), 105);
        assert_eq!(spend.spent(Window::FiveHours, t0), 105);
    }

    #[test]
    fn amounts_saturate_and_tags_compare_across_the_wrap() {
        let t = Tagged::default();
        t.add(5, AMOUNT_MAX - 1);
        t.add(5, 10);
        assert_eq!(t.get(5), AMOUNT_MAX);
        assert!(later(1, TAG_MASK), "0x000001 comes after 0xffffff");
        assert!(!later(TAG_MASK, 1));
        assert!(!later(3, 3));
    }
}
