//! Working days, from the official annual arrangement: Saturdays and Sundays are days off, except
//! the weekend days the arrangement makes working days (调休上班); every other day is a working
//! day, except the holidays it lists. One file per year (`config/calendar-<year>.toml`), checked
//! when loaded; a question about a day of a year no file covers is refused, naming the year, not
//! answered with a guess. Pure: no clock, no I/O but `load_dir`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use time::{Date, Duration, Weekday};

/// A working-day count asked of the calendar at most (a year and a half of working days): a
/// bound on the walk, far above any rule's deadline.
pub const WORKING_DAYS_MAX: u32 = 400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalendarError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("the working-day calendar does not cover {year}: add config/calendar-{year}.toml (the State Council's arrangement of holidays and make-up working days for {year})")]
    NotCovered { year: i32 },
    #[error("{count} working days is more than the calendar counts at once ({WORKING_DAYS_MAX})")]
    TooFar { count: u32 },
    #[error("cannot read the calendars in {dir}: {reason}")]
    Read { dir: String, reason: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawYear {
    year: i32,
    source: String,
    holidays: Vec<String>,
    workdays: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Year {
    holidays: BTreeSet<Date>,
    workdays: BTreeSet<Date>,
    /// Working days of the year up to and including each day (index: ordinal - 1), so a delay
    /// is a subtraction, not a walk (an evaluation counts one per record).
    through: Vec<u16>,
}

/// The working-day calendar of the years it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
    /// Each year's source (the State Council notice), for reports.
    sources: BTreeMap<i32, String>,
}

fn weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

fn parse_date(file: &str, key: &str, s: &str) -> Result<Date, CalendarError> {
    crate::record::parse_iso_date(s).ok_or_else(|| CalendarError::Invalid {
        file: file.to_string(),
        reason: format!("{key}: {s:?} is not a date (YYYY-MM-DD)"),
    })
}

impl Calendar {
    /// Adds one year's arrangement (the text of a `calendar-<year>.toml`; `file` names it in errors).
    pub fn add_year(&mut self, file: &str, text: &str) -> Result<i32, CalendarError> {
        let invalid = |reason: String| CalendarError::Invalid {
            file: file.to_string(),
            reason,
        };
        let raw: RawYear = toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        if !(2000..=2100).contains(&raw.year) {
            return Err(invalid(format!(
                "year: {} is not a year between 2000 and 2100",
                raw.year
            )));
        }
        if raw.source.trim().is_empty() {
            return Err(invalid(
                "source: name the official notice the dates come from".to_string(),
            ));
        }
        if self.years.contains_key(&raw.year) {
            return Err(invalid(format!("year: {} is given twice", raw.year)));
        }
        let mut year = Year::default();
        for (key, list, set) in [
            ("holidays", &raw.holidays, &mut year.holidays),
            ("workdays", &raw.workdays, &mut year.workdays),
        ] {
            for s in list {
                let d = parse_date(file, key, s)?;
                if d.year() != raw.year {
                    return Err(invalid(format!("{key}: {s} is not in {}", raw.year)));
                }
                if !set.insert(d) {
                    return Err(invalid(format!("{key}: {s} is listed twice")));
                }
            }
        }
        if let Some(d) = year.holidays.iter().find(|d| weekend(**d)) {
            return Err(invalid(format!(
                "holidays: {d} is a {}, a day off already; list only the days off that would be working days",
                d.weekday()
            )));
        }
        if let Some(d) = year.workdays.iter().find(|d| !weekend(**d)) {
            return Err(invalid(format!(
                "workdays: {d} is a {}, a working day already; list only the weekend days that are working days (调休上班)",
                d.weekday()
            )));
        }
        let mut n = 0u16;
        let mut d = Date::from_ordinal_date(raw.year, 1).map_err(|e| invalid(e.to_string()))?;
        while d.year() == raw.year {
            let working = if weekend(d) {
                year.workdays.contains(&d)
            } else {
                !year.holidays.contains(&d)
            };
            n += u16::from(working);
            year.through.push(n);
            d = d.next_day().ok_or_else(|| invalid("the year has no end".to_string()))?;
        }
        self.sources.insert(raw.year, raw.source);
        self.years.insert(raw.year, year);
        Ok(raw.year)
    }

    /// Loads every `calendar-<year>.toml` in `dir` (at least one must be there).
    pub fn load_dir(dir: &Path) -> Result<Calendar, CalendarError> {
        let read = |reason: String| CalendarError::Read {
            dir: dir.display().to_string(),
            reason,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| read(e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("calendar-") && n.ends_with(".toml"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(read("no calendar-<year>.toml file".to_string()));
        }
        let mut calendar = Calendar::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| read(format!("{}: {e}", path.display())))?;
            let name = path.display().to_string();
            let year = calendar.add_year(&name, &text)?;
            let expected = format!("calendar-{year}.toml");
            if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
                return Err(CalendarError::Invalid {
                    file: name,
                    reason: format!("it gives year {year}; name it {expected}"),
                });
            }
        }
        Ok(calendar)
    }

    /// The years covered, in order.
    pub fn years(&self) -> Vec<i32> {
        self.years.keys().copied().collect()
    }

    /// The official notice a year's dates come from.
    pub fn source(&self, year: i32) -> Option<&str> {
        self.sources.get(&year).map(String::as_str)
    }

    /// Refuses a period with a day in a year not covered (the first such year is named).
    pub fn covers(&self, from: Date, to: Date) -> Result<(), CalendarError> {
        for year in from.year()..=to.year() {
            if !self.years.contains_key(&year) {
                return Err(CalendarError::NotCovered { year });
            }
        }
        Ok(())
    }

    pub fn is_working_day(&self, d: Date) -> Result<bool, CalendarError> {
        let year = self
            .years
            .get(&d.year())
            .ok_or(CalendarError::NotCovered { year: d.year() })?;
        Ok(if weekend(d) {
            year.workdays.contains(&d)
        } else {
            !year.holidays.contains(&d)
        })
    }

    /// The day that is `n` working days after `from` (`from` itself is day 0, whatever it is):
    /// the last day of a deadline of `n` working days.
    pub fn add_working_days(&self, from: Date, n: u32) -> Result<Date, CalendarError> {
        if n > WORKING_DAYS_MAX {
            return Err(CalendarError::TooFar { count: n });
        }
        let mut d = from;
        let mut left = n;
        while left > 0 {
            d = d
                .checked_add(Duration::days(1))
                .ok_or(CalendarError::NotCovered { year: d.year() + 1 })?;
            if self.is_working_day(d)? {
                left -= 1;
            }
        }
        Ok(d)
    }

    /// Working days after `from` up to and including `to` (0 when `to` is not after `from`):
    /// a delay counted in working days. Every year from `from`'s to `to`'s must be covered.
    pub fn working_days_between(&self, from: Date, to: Date) -> Result<u32, CalendarError> {
        if to <= from {
            return Ok(0);
        }
        self.covers(from, to)?;
        let through = |d: Date| -> Result<u32, CalendarError> {
            let y = self
                .years
                .get(&d.year())
                .ok_or(CalendarError::NotCovered { year: d.year() })?;
            Ok(u32::from(y.through[usize::from(d.ordinal()) - 1]))
        };
        let mut n = 0u32;
        for year in from.year()..to.year() {
            n += u32::from(self.years[&year].through.last().copied().unwrap_or(0));
        }
        Ok(n + through(to)? - through(from)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn cal2025() -> Calendar {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let shipped = Calendar::load_dir(&dir).expect("the shipped calendars load");
        assert_eq!(shipped.years(), vec![2024, 2025, 2026]);
        assert_eq!(
            shipped,
            crate::evaluate::built_in_calendar().expect("built in"),
            "built in = config/"
        );
        let mut cal = Calendar::default();
        let text = std::fs::read_to_string(dir.join("calendar-2025.toml")).expect("read");
        cal.add_year("calendar-2025.toml", &text).expect("2025 loads");
        cal
    }

    #[test]
    fn working_days_across_holidays_and_make_up_days() {
        let cal = cal2025();
        // (day, working?)
        let days = [
            (date!(2025 - 01 - 01), false), // New Year, a Wednesday
            (date!(2025 - 01 - 02), true),
            (date!(2025 - 01 - 04), false), // an ordinary Saturday
            (date!(2025 - 01 - 26), true),  // Sunday, a make-up working day
            (date!(2025 - 01 - 28), false), // Spring Festival eve
            (date!(2025 - 02 - 01), false), // Saturday inside the Spring Festival
            (date!(2025 - 02 - 05), true),
            (date!(2025 - 02 - 08), true),  // Saturday, a make-up working day
            (date!(2025 - 04 - 04), false), // Qingming
            (date!(2025 - 04 - 27), true),  // Sunday, make-up
            (date!(2025 - 05 - 05), false), // Labour Day, a Monday
            (date!(2025 - 06 - 02), false), // Dragon Boat, a Monday
            (date!(2025 - 09 - 28), true),  // Sunday, make-up
            (date!(2025 - 10 - 08), false), // National Day holiday, a Wednesday
            (date!(2025 - 10 - 11), true),  // Saturday, make-up
            (date!(2025 - 10 - 12), false), // an ordinary Sunday
        ];
        for (d, working) in days {
            assert_eq!(cal.is_working_day(d), Ok(working), "{d}");
        }
        // (from, n, the nth working day after from)
        let deadlines = [
            (date!(2025 - 03 - 03), 3, date!(2025 - 03 - 06)), // Monday + 3: Thursday
            (date!(2025 - 03 - 06), 3, date!(2025 - 03 - 11)), // over an ordinary weekend
            (date!(2025 - 01 - 24), 3, date!(2025 - 02 - 05)), // Fri: Sun 26 (make-up), Mon 27, then the festival
            (date!(2025 - 01 - 27), 1, date!(2025 - 02 - 05)), // straight over the Spring Festival
            (date!(2025 - 02 - 07), 1, date!(2025 - 02 - 08)), // Friday + 1: the make-up Saturday
            (date!(2025 - 04 - 30), 7, date!(2025 - 05 - 14)), // 7 working days over Labour Day: May 6-9, 12-14
            (date!(2025 - 09 - 26), 2, date!(2025 - 09 - 29)), // Fri: the make-up Sunday 28, then Mon 29
            (date!(2025 - 09 - 30), 1, date!(2025 - 10 - 09)), // over National Day
            (date!(2025 - 10 - 10), 1, date!(2025 - 10 - 11)), // the make-up Saturday
            (date!(2025 - 06 - 02), 0, date!(2025 - 06 - 02)), // day 0 is the day itself
        ];
        for (from, n, want) in deadlines {
            assert_eq!(cal.add_working_days(from, n), Ok(want), "{from} + {n}");
            assert_eq!(cal.working_days_between(from, want), Ok(n), "{from} .. {want}");
        }
        assert_eq!(
            cal.working_days_between(date!(2025 - 05 - 02), date!(2025 - 05 - 01)),
            Ok(0)
        );
    }

    #[test]
    fn a_period_outside_the_calendar_is_refused_naming_the_year() {
        let cal = cal2025();
        assert_eq!(
            cal.is_working_day(date!(2026 - 01 - 05)),
            Err(CalendarError::NotCovered { year: 2026 })
        );
        assert_eq!(
            cal.add_working_days(date!(2025 - 12 - 30), 5),
            Err(CalendarError::NotCovered { year: 2026 })
        );
        let e = cal
            .covers(date!(2024 - 12 - 01), date!(2025 - 03 - 31))
            .expect_err("2024 is not covered");
        assert!(e.to_string().contains("config/calendar-2024.toml"), "{e}");
        assert_eq!(cal.covers(date!(2025 - 01 - 01), date!(2025 - 12 - 31)), Ok(()));
        assert_eq!(
            cal.add_working_days(date!(2025 - 01 - 01), WORKING_DAYS_MAX + 1),
            Err(CalendarError::TooFar {
                count: WORKING_DAYS_MAX + 1
            })
        );
    }

    #[test]
    fn a_wrong_calendar_file_is_refused_naming_the_date_and_the_fix() {
        let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar-2025.toml"))
            .expect("read");
        let cases = [
            (
                good.replace("\"2025-01-01\",", "\"2025-01-04\","),
                "2025-01-04 is a Saturday",
            ),
            (
                good.replace("\"2025-01-26\",", "\"2025-01-27\","),
                "2025-01-27 is a Monday",
            ),
            (
                good.replace("\"2025-01-01\",", "\"2024-12-31\","),
                "2024-12-31 is not in 2025",
            ),
            (good.replace("\"2025-01-01\",", "\"2025-13-01\","), "not a date"),
            (
                good.replace("\"2025-04-04\",", "\"2025-04-04\", \"2025-04-04\","),
                "listed twice",
            ),
            (good.replace("source = ", "sources = "), "source"),
        ];
        for (text, wanted) in cases {
            let e = Calendar::default()
                .add_year("calendar-2025.toml", &text)
                .expect_err(wanted);
            assert!(e.to_string().contains(wanted), "{wanted}: {e}");
        }
        let mut twice = Calendar::default();
        twice.add_year("a", &good).expect("once");
        assert!(twice
            .add_year("b", &good)
            .expect_err("twice")
            .to_string()
            .contains("given twice"));
    }

    #[test]
    fn counted_delays_equal_a_walk_day_by_day_across_years() {
        let cal = crate::evaluate::built_in_calendar().expect("calendar");
        let first = date!(2024 - 01 - 01);
        let walk = |from: Date, to: Date| {
            let (mut n, mut d) = (0, from);
            while d < to {
                d = d.next_day().expect("a day");
                n += u32::from(cal.is_working_day(d).expect("covered"));
            }
            n
        };
        let mut x = 12345u64;
        for _ in 0..300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let a = first + Duration::days((x >> 33) as i64 % 1096);
            let b = first + Duration::days((x >> 13) as i64 % 1096);
            let (from, to) = (a.min(b), a.max(b));
            assert_eq!(cal.working_days_between(from, to), Ok(walk(from, to)), "{from} .. {to}");
        }
        // 2024 has 251 working days, 2025 has 250, 2026 has 250 (weekdays, minus holidays,
        // plus make-up days).
        assert_eq!(
            cal.working_days_between(date!(2023 - 12 - 31), date!(2024 - 12 - 31))
                .ok(),
            None
        );
        assert_eq!(
            cal.working_days_between(date!(2024 - 01 - 01), date!(2026 - 12 - 31)),
            Ok(walk(date!(2024 - 01 - 01), date!(2026 - 12 - 31)))
        );
    }
}
