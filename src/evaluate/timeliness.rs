//! Timeliness (STANDARDS §4.2, "双公示"): administrative licence and penalty decisions must be
//! online within 7 working days of the decision. Per origin region, and per issuing authority
//! within it: how many such records were appended in the period, how many within the rule, the
//! distribution of delays in working days, and the late records listed. Pure: facts in, figures
//! out, in a deterministic order (so two nodes holding the same entries give the same report).

use super::calendar::{Calendar, CalendarError};
use crate::record::{Category, Region};
use std::collections::BTreeMap;
use time::Date;

/// Working days a licence or penalty decision has to be online (STANDARDS §4.2).
pub const ON_TIME_WORKING_DAYS: u32 = 7;
/// Delay buckets (working days, upper bounds inclusive); the last bucket is "more".
pub const DELAY_BUCKETS: [u32; 6] = [0, 1, 3, 7, 15, 30];
/// Late records listed per authority at most (the counts cover them all).
pub const LATE_LISTED_MAX: usize = 100;

/// What the evaluation needs of one appended licence or penalty record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub origin: Region,
    pub seq: u64,
    pub record_id: String,
    /// The issuing authority's USCC (its name varies in spelling; the code does not).
    pub authority: String,
    pub decision_date: Date,
    /// The day the origin appended it (its entry's time, in China Standard Time).
    pub appended_on: Date,
}

impl Fact {
    /// The fact of an appended record version, if the rule covers it: a licence or a penalty
    /// (amendments included: each version is online only once appended) with its decision date
    /// and its issuing authority's code. None for anything else, and for a record missing either
    /// field (counted as data quality, not timeliness).
    pub fn of(origin: Region, seq: u64, appended_on: Date, u: &super::facts::Upsert) -> Option<Fact> {
        if !covered(u.category) {
            return None;
        }
        Some(Fact {
            origin,
            seq,
            record_id: u.record_id.to_string(),
            authority: u.authority.clone()?,
            decision_date: u.decision_date?,
            appended_on,
        })
    }
}

/// Which categories the rule covers.
pub fn covered(category: Category) -> bool {
    matches!(
        category,
        Category::AdministrativeLicence | Category::AdministrativePenalty
    )
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Late {
    pub origin: u32,
    pub seq: u64,
    pub record_id: String,
    pub authority: String,
    pub decision_date: String,
    pub appended_on: String,
    pub delay_working_days: u32,
    /// The decision is older than the calendar: the delay counts only the covered years.
    pub delay_at_least: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub records: u64,
    pub on_time: u64,
    /// Records per delay bucket (`DELAY_BUCKETS`, then "more").
    pub delay_histogram: Vec<u64>,
    /// The late records first in (origin, seq) order, at most `LATE_LISTED_MAX`.
    pub late: Vec<Late>,
    /// Late records beyond `LATE_LISTED_MAX` (counted, not listed).
    pub late_unlisted: u64,
}

impl Tally {
    fn empty() -> Tally {
        Tally {
            delay_histogram: vec![0; DELAY_BUCKETS.len() + 1],
            ..Tally::default()
        }
    }

    fn add(&mut self, fact: &Fact, delay: u32, at_least: bool) {
        self.records += 1;
        let bucket = DELAY_BUCKETS
            .iter()
            .position(|b| delay <= *b)
            .unwrap_or(DELAY_BUCKETS.len());
        self.delay_histogram[bucket] += 1;
        if delay <= ON_TIME_WORKING_DAYS {
            self.on_time += 1;
            return;
        }
        // Keep the first LATE_LISTED_MAX in (origin, seq) order, whatever order facts come in,
        // so two nodes list the same records.
        let late = Late {
            origin: fact.origin.code(),
            seq: fact.seq,
            record_id: fact.record_id.clone(),
            authority: fact.authority.clone(),
            decision_date: fact.decision_date.to_string(),
            appended_on: fact.appended_on.to_string(),
            delay_working_days: delay,
            delay_at_least: at_least,
        };
        let at = self
            .late
            .partition_point(|l| (l.origin, l.seq) < (late.origin, late.seq));
        self.late.insert(at, late);
        if self.late.len() > LATE_LISTED_MAX {
            self.late.pop();
            self.late_unlisted += 1;
        }
    }

    /// On-time share in parts per million (integers keep reports byte-identical everywhere).
    pub fn on_time_ppm(&self) -> u64 {
        (self.on_time * 1_000_000).checked_div(self.records).unwrap_or(0)
    }
}

/// Per origin: the whole region's tally and each authority's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegionTimeliness {
    pub origin: u32,
    pub total: Tally,
    pub on_time_ppm: u64,
    pub authorities: BTreeMap<String, Tally>,
}

/// Timeliness accumulated fact by fact, in any order, for records appended in `[from, to]`.
#[derive(Clone, Debug)]
pub struct Timeliness {
    from: Date,
    to: Date,
    by_origin: BTreeMap<u32, RegionTimeliness>,
}

impl Timeliness {
    /// Refuses a period in a year the calendar does not cover, naming the year: a guess would
    /// make two nodes with different calendars disagree silently.
    pub fn new(calendar: &Calendar, from: Date, to: Date) -> Result<Timeliness, CalendarError> {
        calendar.covers(from, to)?;
        Ok(Timeliness {
            from,
            to,
            by_origin: BTreeMap::new(),
        })
    }

    /// Counts one fact (facts appended outside the period are not counted). A decision older
    /// than the calendar's first year is counted from that year's first day and marked "at
    /// least"; a decision in a later uncovered year is refused, naming it.
    pub fn add(&mut self, calendar: &Calendar, f: &Fact) -> Result<(), CalendarError> {
        if !(self.from..=self.to).contains(&f.appended_on) {
            return Ok(());
        }
        let first = calendar.years().first().copied().unwrap_or(f.decision_date.year());
        let (delay, at_least) = if f.decision_date.year() < first {
            let jan1 = Date::from_ordinal_date(first, 1).map_err(|_| CalendarError::NotCovered { year: first })?;
            let counted = calendar.working_days_between(jan1, f.appended_on)?;
            (counted + u32::from(calendar.is_working_day(jan1)?), true)
        } else {
            (calendar.working_days_between(f.decision_date, f.appended_on)?, false)
        };
        let r = self
            .by_origin
            .entry(f.origin.code())
            .or_insert_with(|| RegionTimeliness {
                origin: f.origin.code(),
                total: Tally::empty(),
                ..RegionTimeliness::default()
            });
        r.total.add(f, delay, at_least);
        r.authorities
            .entry(f.authority.clone())
            .or_insert_with(Tally::empty)
            .add(f, delay, at_least);
        Ok(())
    }

    /// Every origin's timeliness, in origin order.
    pub fn finish(self) -> BTreeMap<u32, RegionTimeliness> {
        self.by_origin
            .into_iter()
            .map(|(k, mut r)| {
                r.on_time_ppm = r.total.on_time_ppm();
                (k, r)
            })
            .collect()
    }
}

/// Timeliness of every origin for `facts` appended in `[from, to]`, in origin order.
pub fn evaluate(
    calendar: &Calendar,
    facts: &[Fact],
    from: Date,
    to: Date,
) -> Result<Vec<RegionTimeliness>, CalendarError> {
    let mut t = Timeliness::new(calendar, from, to)?;
    for f in facts {
        t.add(calendar, f)?;
    }
    Ok(t.finish().into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn cal() -> Calendar {
        Calendar::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config")).expect("calendar")
    }

    fn fact(origin: &str, seq: u64, authority: &str, decided: Date, appended: Date) -> Fact {
        Fact {
            origin: Region::parse(origin).expect("region"),
            seq,
            record_id: format!("r{seq}"),
            authority: authority.to_string(),
            decision_date: decided,
            appended_on: appended,
        }
    }

    #[test]
    fn late_records_are_counted_by_working_days_and_listed_per_authority() {
        let facts = vec![
            // Zhejiang, authority A: on time (7 working days over Labour Day is May 14).
            fact("330000", 1, "A", date!(2025 - 04 - 30), date!(2025 - 05 - 14)),
            // A: one working day late (May 15 is the 8th).
            fact("330000", 2, "A", date!(2025 - 04 - 30), date!(2025 - 05 - 15)),
            // B: same day.
            fact("330000", 3, "B", date!(2025 - 06 - 03), date!(2025 - 06 - 03)),
            // Jiangsu, over the Spring Festival: decided Jan 24, appended Feb 10, 17 calendar days
            // but 7 working days (Jan 26, 27, Feb 5, 6, 7, 8, 10): on time.
            fact("320000", 1, "C", date!(2025 - 01 - 24), date!(2025 - 02 - 10)),
            // Appended outside the period: not counted.
            fact("320000", 2, "C", date!(2025 - 01 - 02), date!(2025 - 01 - 03)),
        ];
        let report = evaluate(&cal(), &facts, date!(2025 - 01 - 15), date!(2025 - 12 - 31)).expect("evaluated");
        assert_eq!(report.len(), 2);
        let (js, zj) = (&report[0], &report[1]);
        assert_eq!((js.origin, js.total.records, js.total.on_time), (320000, 1, 1));
        assert_eq!(js.on_time_ppm, 1_000_000);
        assert_eq!((zj.origin, zj.total.records, zj.total.on_time), (330000, 3, 2));
        assert_eq!(zj.on_time_ppm, 666_666);
        let a = &zj.authorities["A"];
        assert_eq!((a.records, a.on_time, a.late.len()), (2, 1, 1));
        assert_eq!(a.late[0].delay_working_days, 8);
        assert_eq!(a.late[0].record_id, "r2");
        // Buckets: 0 (B), <=7 (A's first: 7), <=15 (A's second: 8).
        assert_eq!(zj.total.delay_histogram, vec![1, 0, 0, 1, 1, 0, 0]);
        // Deterministic: the same facts in another order give the same report.
        let mut shuffled = facts.clone();
        shuffled.reverse();
        assert_eq!(
            evaluate(&cal(), &shuffled, date!(2025 - 01 - 15), date!(2025 - 12 - 31)).expect("evaluated"),
            report
        );
        let json = serde_json::to_string(&report).expect("json");
        assert!(json.contains("\"delay_working_days\":8"), "{json}");
    }

    #[test]
    fn facts_come_from_licences_and_penalties_with_their_decision_date_and_authority() {
        let region = Region::parse("330000").expect("region");
        let mut g = crate::record::RecordGenerator::new(7, region);
        let (mut licences, mut penalties, mut others) = (0, 0, 0);
        for seq in 1..=300u64 {
            let line = g.next_line();
            let op = super::super::facts::read(line.as_bytes()).expect("generated lines read");
            let super::super::facts::Operation::Upsert(r) = &op else {
                continue;
            };
            // 2025-06-30 23:30 UTC is 2025-07-01 in China.
            let at = time::macros::datetime!(2025-06-30 23:30 UTC).unix_timestamp() * 1_000_000;
            let day = super::super::facts::day_of(at).expect("a day");
            match Fact::of(region, seq, day, r) {
                Some(f) => {
                    assert!(covered(r.category));
                    assert_eq!(f.appended_on, date!(2025 - 07 - 01), "reckoned in China Standard Time");
                    assert_eq!(f.authority.len(), 18, "a USCC: {}", f.authority);
                    assert!(f.decision_date.year() >= 2000);
                    match r.category {
                        Category::AdministrativeLicence => licences += 1,
                        _ => penalties += 1,
                    }
                }
                None => {
                    assert!(!covered(r.category), "{:?} has no fact", r.category);
                    others += 1;
                }
            }
        }
        assert!(
            licences > 0 && penalties > 0 && others > 0,
            "{licences} {penalties} {others}"
        );
    }

    #[test]
    fn a_decision_or_period_outside_the_calendar_is_refused() {
        // A period in a year after the calendar is refused, naming it.
        let facts = vec![fact("330000", 1, "A", date!(2027 - 01 - 04), date!(2026 - 12 - 31))];
        assert_eq!(
            evaluate(&cal(), &facts, date!(2026 - 12 - 01), date!(2026 - 12 - 31)).map(|r| r[0].total.records),
            Ok(1),
            "a decision dated after its append has no delay"
        );
        assert_eq!(
            evaluate(&cal(), &[], date!(2026 - 10 - 01), date!(2027 - 03 - 31)),
            Err(CalendarError::NotCovered { year: 2027 })
        );
        // A decision older than the calendar is counted from its first year, as "at least".
        let old = vec![fact("330000", 1, "A", date!(2023 - 12 - 30), date!(2024 - 01 - 12))];
        let r = evaluate(&cal(), &old, date!(2024 - 01 - 01), date!(2024 - 03 - 31)).expect("evaluated");
        let late = &r[0].total.late[0];
        // 2024: Jan 1 is a holiday, Jan 2..12 are 9 working days.
        assert_eq!((late.delay_working_days, late.delay_at_least), (9, true));
    }
}
