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

/// China Standard Time, in which decision dates and "within 7 working days" are reckoned.
pub const CHINA_STANDARD_TIME: time::UtcOffset = time::macros::offset!(+8);

impl Fact {
    /// The fact of an appended operation, if the rule covers it: an upsert of a licence or a
    /// penalty (amendments included: each version is online only once appended), with its
    /// decision date and its issuing authority's code. None for anything else, and for a record
    /// missing either field (counted as data quality, not timeliness).
    pub fn of(origin: Region, seq: u64, appended_at_micros: i64, op: &crate::record::Operation) -> Option<Fact> {
        let crate::record::Operation::Upsert(r) = op else {
            return None;
        };
        if !covered(r.category) {
            return None;
        }
        let authority_field = match r.category {
            Category::AdministrativeLicence => "licensing_authority_uscc",
            _ => "penalising_authority_uscc",
        };
        let v: serde_json::Value = serde_json::from_slice(&r.canonical).ok()?;
        let decision_date = v
            .get("decision_date")
            .and_then(|d| d.as_str())
            .and_then(crate::record::parse_iso_date)?;
        let authority = v.get(authority_field).and_then(|a| a.as_str())?.to_string();
        let appended_on = time::OffsetDateTime::from_unix_timestamp(appended_at_micros.div_euclid(1_000_000))
            .ok()?
            .to_offset(CHINA_STANDARD_TIME)
            .date();
        Some(Fact {
            origin,
            seq,
            record_id: r.record_id.to_string(),
            authority,
            decision_date,
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

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Late {
    pub origin: u32,
    pub seq: u64,
    pub record_id: String,
    pub decision_date: String,
    pub appended_on: String,
    pub delay_working_days: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub records: u64,
    pub on_time: u64,
    /// Records per delay bucket (`DELAY_BUCKETS`, then "more").
    pub delay_histogram: Vec<u64>,
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

    fn add(&mut self, fact: &Fact, delay: u32) {
        self.records += 1;
        let bucket = DELAY_BUCKETS
            .iter()
            .position(|b| delay <= *b)
            .unwrap_or(DELAY_BUCKETS.len());
        self.delay_histogram[bucket] += 1;
        if delay <= ON_TIME_WORKING_DAYS {
            self.on_time += 1;
        } else if self.late.len() < LATE_LISTED_MAX {
            self.late.push(Late {
                origin: fact.origin.code(),
                seq: fact.seq,
                record_id: fact.record_id.clone(),
                decision_date: fact.decision_date.to_string(),
                appended_on: fact.appended_on.to_string(),
                delay_working_days: delay,
            });
        } else {
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

/// Timeliness of every origin for records appended in `[from, to]`, in origin order; facts
/// appended outside the period are not counted. A period, or a decision date, in a year the
/// calendar does not cover is refused, naming the year: a guess would make two nodes with
/// different calendars disagree silently.
pub fn evaluate(
    calendar: &Calendar,
    facts: &[Fact],
    from: Date,
    to: Date,
) -> Result<Vec<RegionTimeliness>, CalendarError> {
    calendar.covers(from, to)?;
    let mut by_origin: BTreeMap<u32, RegionTimeliness> = BTreeMap::new();
    let mut sorted: Vec<&Fact> = facts.iter().filter(|f| (from..=to).contains(&f.appended_on)).collect();
    sorted.sort_by_key(|f| (f.origin, f.seq));
    for f in sorted {
        let delay = calendar.working_days_between(f.decision_date, f.appended_on)?;
        let r = by_origin.entry(f.origin.code()).or_insert_with(|| RegionTimeliness {
            origin: f.origin.code(),
            total: Tally::empty(),
            ..RegionTimeliness::default()
        });
        r.total.add(f, delay);
        r.authorities
            .entry(f.authority.clone())
            .or_insert_with(Tally::empty)
            .add(f, delay);
    }
    Ok(by_origin
        .into_values()
        .map(|mut r| {
            r.on_time_ppm = r.total.on_time_ppm();
            r
        })
        .collect())
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
            let op = crate::record::parse_operation(line.as_bytes()).expect("generated lines are valid");
            let crate::record::Operation::Upsert(r) = &op else {
                continue;
            };
            // 2025-06-30 23:30 UTC is 2025-07-01 in China.
            let at = time::macros::datetime!(2025-06-30 23:30 UTC).unix_timestamp() * 1_000_000;
            match Fact::of(region, seq, at, &op) {
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
        let facts = vec![fact("330000", 1, "A", date!(2024 - 12 - 30), date!(2025 - 01 - 06))];
        assert_eq!(
            evaluate(&cal(), &facts, date!(2025 - 01 - 01), date!(2025 - 03 - 31)),
            Err(CalendarError::NotCovered { year: 2024 })
        );
        assert_eq!(
            evaluate(&cal(), &[], date!(2025 - 10 - 01), date!(2026 - 03 - 31)),
            Err(CalendarError::NotCovered { year: 2026 })
        );
    }
}
