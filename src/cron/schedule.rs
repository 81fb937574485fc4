//! Cron schedules, evaluated in UTC.
//!
//! Five fields as in crontab (minute hour day-of-month month day-of-week),
//! or six with a leading seconds field (our extension). Weekdays follow
//! crontab: 0 and 7 are Sunday, 1 is Monday; month and weekday names work.
//! When both day fields are restricted, a day matching either one fires, as
//! in crontab. Parsing and evaluation are done by `croner`, which follows
//! these rules; this wrapper fixes the parser options and answers in UTC.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl Schedule {
    /// Parses `text`; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "{trimmed:?} has {fields} fields; expected 5 (minute hour day month weekday) \
                 or 6 with leading seconds"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(trimmed)
            .map_err(|e| format!("{trimmed:?} is not a valid cron schedule: {e}"))?;
        let schedule = Schedule {
            text: trimmed.to_string(),
            cron,
        };
        // A pattern such as "0 0 30 2 *" parses but never fires.
        if !fires_at_all(&schedule.cron) {
            return Err(format!("{trimmed:?} never fires"));
        }
        Ok(schedule)
    }

    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner carries sub-second parts of its start into the result;
        // ticks are whole seconds, so search from the whole second.
        let whole = whole_second(t, false)?;
        self.cron.find_next_occurrence(&whole, false).ok()
    }

    /// The last tick strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let whole = whole_second(t, true)?;
        self.cron.find_previous_occurrence(&whole, false).ok()
    }

    /// The ticks in `[from, to]`, oldest first, at most the `limit` newest.
    pub fn ticks_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut t = to + chrono::Duration::milliseconds(1);
        while ticks.len() < limit {
            match self.previous_before(t) {
                Some(p) if p >= from => {
                    ticks.push(p);
                    t = p;
                }
                _ => break,
            }
        }
        ticks.reverse();
        ticks
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

/// Whether `cron` matches any time at all, found in a bounded number of
/// steps (a search through croner would walk up to the year 5000: seconds of
/// CPU for each pattern that never fires). Whether a day matches depends
/// only on its year's calendar (leap or not, and the weekday of 1 January),
/// and the 28 years from 2001 hold all fourteen calendars; so at most
/// 28 × 366 days are looked at, and only in the months the pattern allows.
fn fires_at_all(cron: &Cron) -> bool {
    let p = &cron.pattern;
    let any = |range: std::ops::Range<u32>, f: &dyn Fn(u32) -> bool| range.into_iter().any(f);
    let time = any(0..60, &|s| p.second_match(s).unwrap_or(false))
        && any(0..60, &|m| p.minute_match(m).unwrap_or(false))
        && any(0..24, &|h| p.hour_match(h).unwrap_or(false));
    if !time {
        return false;
    }
    (2001..2029).any(|year| {
        (1..=12u32)
            .filter(|&month| p.month_match(month).unwrap_or(false))
            .any(|month| {
                (1..=31u32)
                    .take_while(|&day| chrono::NaiveDate::from_ymd_opt(year, month, day).is_some())
                    .any(|day| p.day_match(year, month, day).unwrap_or(false))
            })
    })
}

/// `t` rounded down (or up) to a whole second.
fn whole_second(t: DateTime<Utc>, up: bool) -> Option<DateTime<Utc>> {
    let fraction = t.timestamp_subsec_nanos() > 0;
    let secs = t.timestamp() + i64::from(up && fraction);
    DateTime::from_timestamp(secs, 0)
}

/// Elastic Beanstalk's spelling of a tick: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn eb_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn next(schedule: &str, from: DateTime<Utc>) -> DateTime<Utc> {
        Schedule::parse(schedule).unwrap().next_after(from).unwrap()
    }

    #[test]
    fn weekday_numbers_follow_crontab() {
        // 2026-11-22 is a Sunday.
        let sunday = at(2026, 11, 22, 0, 0, 0);
        assert_eq!(sunday.weekday(), Weekday::Sun);
        assert_eq!(next("0 9 * * 1", sunday), at(2026, 11, 23, 9, 0, 0));
        assert_eq!(next("0 9 * * 1", sunday).weekday(), Weekday::Mon);
        assert_eq!(next("0 9 * * 0", sunday), at(2026, 11, 22, 9, 0, 0));
        assert_eq!(next("0 9 * * 7", sunday), at(2026, 11, 22, 9, 0, 0));
        assert_eq!(next("0 9 * * 6", sunday).weekday(), Weekday::Sat);
        assert_eq!(next("0 9 * * MON", sunday), at(2026, 11, 23, 9, 0, 0));
        assert_eq!(next("0 9 * * mon-fri", sunday), at(2026, 11, 23, 9, 0, 0));
        assert_eq!(next("0 9 * * SAT,SUN", sunday), at(2026, 11, 22, 9, 0, 0));
    }

    #[test]
    fn steps_ranges_and_lists() {
        let t = at(2026, 1, 1, 0, 0, 0);
        assert_eq!(next("*/15 * * * *", t), at(2026, 1, 1, 0, 15, 0));
        assert_eq!(next("0 */12 * * *", t), at(2026, 1, 1, 12, 0, 0));
        assert_eq!(next("10-20/5 3 * * *", t), at(2026, 1, 1, 3, 10, 0));
        assert_eq!(
            next("5,35 * * * *", at(2026, 1, 1, 0, 6, 0)),
            at(2026, 1, 1, 0, 35, 0)
        );
        let ticks = Schedule::parse("0 1-5/2 * * *").unwrap().upcoming(t, 4);
        let hours: Vec<_> = ticks
            .iter()
            .map(|t| t.format("%d %H").to_string())
            .collect();
        assert_eq!(hours, ["01 01", "01 03", "01 05", "02 01"]);
    }

    #[test]
    fn month_names_and_month_ends() {
        assert_eq!(
            next("0 0 1 JAN *", at(2026, 3, 1, 0, 0, 0)),
            at(2027, 1, 1, 0, 0, 0)
        );
        // The 31st skips months without one.
        assert_eq!(
            next("0 0 31 * *", at(2026, 4, 1, 0, 0, 0)),
            at(2026, 5, 31, 0, 0, 0)
        );
        assert_eq!(
            next("0 12 30 * *", at(2026, 1, 31, 0, 0, 0)),
            at(2026, 3, 30, 12, 0, 0)
        );
        // Crossing a year end.
        assert_eq!(
            next("59 23 31 12 *", at(2026, 12, 31, 23, 59, 0)),
            at(2027, 12, 31, 23, 59, 0)
        );
    }

    #[test]
    fn leap_days() {
        assert_eq!(
            next("0 0 29 2 *", at(2026, 1, 1, 0, 0, 0)),
            at(2028, 2, 29, 0, 0, 0)
        );
        // 2100 is not a leap year.
        assert_eq!(
            next("0 0 29 2 *", at(2096, 3, 1, 0, 0, 0)),
            at(2104, 2, 29, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 * * *", at(2028, 2, 28, 12, 0, 0)),
            at(2028, 2, 29, 0, 0, 0)
        );
    }

    #[test]
    fn day_of_month_or_weekday_as_in_crontab() {
        // The 13th or any Friday: from Sunday 2026-11-01, Friday the 6th comes first.
        assert_eq!(
            next("0 0 13 * 5", at(2026, 11, 1, 0, 0, 0)),
            at(2026, 11, 6, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 13 * 5", at(2026, 11, 10, 0, 0, 0)),
            at(2026, 11, 13, 0, 0, 0)
        );
    }

    #[test]
    fn utc_has_no_daylight_saving_gaps() {
        // 02:30 exists every day in UTC, including European and US switch days.
        for day in [(2026, 3, 29), (2026, 10, 25), (2026, 3, 8), (2026, 11, 1)] {
            let from = at(day.0, day.1, day.2, 0, 0, 0);
            assert_eq!(next("30 2 * * *", from), at(day.0, day.1, day.2, 2, 30, 0));
        }
        let hourly = Schedule::parse("0 * * * *").unwrap();
        let ticks = hourly.ticks_between(at(2026, 3, 29, 0, 0, 0), at(2026, 3, 29, 5, 0, 0), 100);
        assert_eq!(ticks.len(), 6);
    }

    #[test]
    fn seconds_field_is_an_extension() {
        let t = at(2026, 1, 1, 0, 0, 0);
        assert_eq!(next("*/10 * * * * *", t), at(2026, 1, 1, 0, 0, 10));
        assert_eq!(next("30 0 * * * *", t), at(2026, 1, 1, 0, 0, 30));
        // Five fields fire at second 0.
        assert_eq!(
            next("* * * * *", at(2026, 1, 1, 0, 0, 1)),
            at(2026, 1, 1, 0, 1, 0)
        );
    }

    #[test]
    fn ticks_between_is_inclusive_and_keeps_the_newest() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        let from = at(2026, 1, 1, 0, 0, 0);
        let to = at(2026, 1, 1, 0, 0, 30);
        let ticks = s.ticks_between(from, to, 100);
        assert_eq!(ticks.len(), 7);
        assert_eq!(ticks[0], from);
        assert_eq!(ticks[6], to);
        let newest = s.ticks_between(from, to, 2);
        assert_eq!(newest, vec![at(2026, 1, 1, 0, 0, 25), to]);
        assert_eq!(s.previous_before(from), Some(at(2025, 12, 31, 23, 59, 55)));
    }

    #[test]
    fn bad_schedules_are_refused_with_a_reason() {
        for bad in [
            "",
            "* * * *",
            "0 0 1 1 * 2026 x",
            "61 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "* * * * FUNDAY",
            "*/0 * * * *",
            "a b c d e",
            "0 0 30 2 *",
        ] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn rare_schedules_fire_and_impossible_ones_are_found_quickly() {
        let from = at(2026, 11, 22, 0, 0, 0);
        // Leap days, and the fifth Friday of February (only in a leap year
        // whose February starts on a Friday).
        assert_eq!(next("0 0 29 2 *", from), at(2028, 2, 29, 0, 0, 0));
        assert_eq!(next("0 0 * 2 FRI#5", from).month(), 2);
        assert_eq!(next("0 0 31 * *", from), at(2026, 12, 31, 0, 0, 0));
        let started = std::time::Instant::now();
        for bad in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 *"] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(e.contains("never fires"), "{e}");
        }
        // A croner search to the year 5000 takes seconds each in a debug build.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn ticks_are_whole_seconds_whatever_the_start() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        let t = at(2026, 1, 1, 0, 0, 30);
        let ms = |n| t + chrono::Duration::milliseconds(n);
        assert_eq!(s.next_after(t), Some(at(2026, 1, 1, 0, 0, 35)));
        assert_eq!(s.next_after(ms(1)), Some(at(2026, 1, 1, 0, 0, 35)));
        assert_eq!(s.next_after(ms(-1)), Some(t));
        assert_eq!(s.previous_before(t), Some(at(2026, 1, 1, 0, 0, 25)));
        assert_eq!(s.previous_before(ms(1)), Some(t));
        assert_eq!(s.previous_before(ms(999)), Some(t));
    }

    #[test]
    fn eb_time_format() {
        assert_eq!(eb_time(at(2026, 2, 3, 4, 5, 6)), "2026-02-03 04:05:06 UTC");
    }
}
