//! The windows a named client's budgets are counted over: `5h` rolling, and `day`,
//! `week` (from Monday) and `month` calendar windows in UTC.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Milliseconds in an hour and a day.
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// The rolling window's length.
pub const ROLLING_MS: u64 = 5 * HOUR_MS;

/// One moment and the numbers of the calendar windows holding it, worked out once for
/// all the budgets a request is checked against or counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub ms: u64,
    /// Day, week and month numbers, in [`Window::ALL`] order after the rolling window.
    numbers: [u64; 3],
}

impl Moment {
    pub fn at(ms: u64) -> Moment {
        let number = |w: Window| w.number(ms).expect("a calendar window");
        Moment {
            ms,
            numbers: [
                number(Window::Day),
                number(Window::Week),
                number(Window::Month),
            ],
        }
    }

    /// The number of the calendar window `window` at this moment (as
    /// [`Window::number`]); none for the rolling window.
    pub fn number(&self, window: Window) -> Option<u64> {
        match window {
            Window::FiveHours => None,
            _ => Some(self.numbers[window.index() - 1]),
        }
    }
}

/// A budget's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last five hours, rolling.
    FiveHours,
    /// The UTC calendar day.
    Day,
    /// The UTC calendar week, from Monday.
    Week,
    /// The UTC calendar month.
    Month,
}

impl Window {
    pub const ALL: [Window; 4] = [Window::FiveHours, Window::Day, Window::Week, Window::Month];

    /// The name in the clients file and in `/token-stats`.
    pub fn name(self) -> &'static str {
        match self {
            Window::FiveHours => "5h",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }

    pub fn parse(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Position in [`Window::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The number of the calendar window holding `now_ms` (as [`Calendar::number`]); none
    /// for the rolling window. What every budget check asks: the month's is worked out
    /// once a day, not per request.
    pub fn number(self, now_ms: u64) -> Option<u64> {
        let day = now_ms / DAY_MS;
        match self {
            Window::FiveHours => None,
            Window::Day => Some(day),
            Window::Week => Some((day + 3) / 7),
            Window::Month => Some(month_number(day)),
        }
    }

    /// The calendar window holding `now_ms`, as `[start, end)` in ms since the epoch, and
    /// its number (days, weeks or months since the epoch's); none for the rolling window.
    pub fn calendar(self, now_ms: u64) -> Option<Calendar> {
        let day = now_ms / DAY_MS;
        let (number, start_day, end_day) = match self {
            Window::FiveHours => return None,
            Window::Day => (day, day, day + 1),
            Window::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday is (day + 3) % 7.
                let monday = day.saturating_sub((day + 3) % 7);
                ((day + 3) / 7, monday, monday + 7)
            }
            Window::Month => {
                let (year, month, _) = civil_from_days(day);
                let number = (year - 1970) as u64 * 12 + u64::from(month - 1);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (
                    number,
                    days_from_civil(year, month, 1),
                    days_from_civil(next_year, next_month, 1),
                )
            }
        };
        Some(Calendar {
            number,
            start_ms: start_day * DAY_MS,
            end_ms: end_day * DAY_MS,
        })
    }
}

/// One calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    /// Days, weeks or months since the epoch's own: tells one window from the next.
    pub number: u64,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The month number of day `day` (see [`Window::calendar`]), through a one-day cache
/// shared by every thread: the day above, the month's number below.
fn month_number(day: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let last = LAST.load(Relaxed);
    if last >> 32 == day {
        return last & u64::from(u32::MAX);
    }
    let number = Window::Month
        .calendar(day * DAY_MS)
        .expect("a calendar window")
        .number;
    if day <= u64::from(u32::MAX) && number <= u64::from(u32::MAX) {
        LAST.store(day << 32 | number, Relaxed);
    }
    number
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (days ≥ 0).
fn civil_from_days(day: u64) -> (i64, u32, u32) {
    // Counted in 400-year eras from 0000-03-01, so that the leap day ends each year.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day_of_month = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day_of_month)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (on or after it).
fn days_from_civil(year: i64, month: u32, day: u32) -> u64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era - 719_468) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ms of a UTC date and time.
    fn at(text: &str) -> u64 {
        crate::ledger::row::parse_iso(text).expect("an ISO time")
    }

    #[test]
    fn names_round_trip() {
        for w in Window::ALL {
            assert_eq!(Window::parse(w.name()), Some(w));
            assert_eq!(Window::ALL[w.index()], w);
        }
        assert_eq!(Window::parse("year"), None);
    }

    #[test]
    fn calendar_windows_in_utc() {
        let now = at("2026-12-09T15:30:00Z"); // a Wednesday
        let span = |w: Window| {
            let c = w.calendar(now).unwrap();
            (c.start_ms, c.end_ms)
        };
        assert_eq!(span(Window::Day), (at("2026-12-09"), at("2026-12-10")));
        assert_eq!(span(Window::Week), (at("2026-12-07"), at("2026-12-14")));
        assert_eq!(span(Window::Month), (at("2026-12-01"), at("2027-01-01")));
        assert_eq!(Window::FiveHours.calendar(now), None);
        // A Monday starts its own week; a Sunday ends the one before.
        let monday = Window::Week.calendar(at("2026-12-07T00:00:00Z")).unwrap();
        assert_eq!(monday.start_ms, at("2026-12-07"));
        let sunday = Window::Week.calendar(at("2026-12-06T23:59:59Z")).unwrap();
        assert_eq!(sunday.end_ms, at("2026-12-07"));
        assert_eq!(sunday.number + 1, monday.number);
        // February of a leap year, and the month after it.
        let feb = Window::Month.calendar(at("2028-02-29T12:00:00Z")).unwrap();
        assert_eq!(
            (feb.start_ms, feb.end_ms),
            (at("2028-02-01"), at("2028-03-01"))
        );
        let march = Window::Month.calendar(feb.end_ms).unwrap();
        assert_eq!(march.number, feb.number + 1);
    }

    #[test]
    fn a_windows_number_is_its_calendars() {
        for day in (0..40_000).step_by(7) {
            for w in [Window::Day, Window::Week, Window::Month] {
                let at = day * DAY_MS + 12 * HOUR_MS;
                assert_eq!(
                    w.number(at),
                    w.calendar(at).map(|c| c.number),
                    "{w:?} {day}"
                );
            }
        }
        assert_eq!(Window::FiveHours.number(0), None);
    }

    #[test]
    fn dates_convert_both_ways_over_centuries() {
        for day in (0..200_000).step_by(13) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(at("2000-02-29") / DAY_MS), (2000, 2, 29));
    }
}
