//! What the evaluation needs of one appended operation, read with a typed parse that borrows from
//! the stored bytes and skips every other field (the evaluation reads every record entry of the
//! period, so this is its hot path). Pure: bytes in, a fact out.

use crate::record::{parse_iso_date, Category, RecordId};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;
use time::Date;

/// China Standard Time, in which decision dates and working-day rules are reckoned.
pub const CHINA_STANDARD_TIME: time::UtcOffset = time::macros::offset!(+8);

/// Fields the national standard defines for a category that our schema leaves optional but that
/// identify the decision (STANDARDS §4.1 and §4.2, rows marked "no": not amounts, not remarks):
/// counted per field as "missing recommended fields".
pub const RECOMMENDED_FIELDS: &[(Category, &str)] = &[
    (Category::AdministrativeLicence, "licence_decision_doc_name"),
    (Category::AdministrativeLicence, "licence_cert_name"),
    (Category::AdministrativeLicence, "licence_no"),
    (Category::AdministrativePenalty, "penalty_valid_until"),
];

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    record_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    #[serde(default)]
    record_version: Option<u64>,
    #[serde(borrow, default)]
    disclosure_class: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    decision_date: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    listing_date: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    severity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    publicity_end_date: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    licensing_authority_uscc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    penalising_authority_uscc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    repaired_record_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    repair_decision_date: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sync_deadline_date: Option<Cow<'a, str>>,
    #[serde(default)]
    licence_decision_doc_name: Option<IgnoredAny>,
    #[serde(default)]
    licence_cert_name: Option<IgnoredAny>,
    #[serde(default)]
    licence_no: Option<IgnoredAny>,
    #[serde(default)]
    penalty_valid_until: Option<IgnoredAny>,
}

/// Severity of a penalty (2025 rules: 轻微 / 一般 / 严重).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Minor,
    General,
    Serious,
}

/// One record version as appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upsert {
    pub record_id: RecordId,
    pub category: Category,
    pub version: u32,
    pub public: bool,
    /// The decision (licence, penalty) or listing (dishonest list) date.
    pub decision_date: Option<Date>,
    pub severity: Option<Severity>,
    pub publicity_end: Option<Date>,
    /// The issuing authority's USCC (licences and penalties).
    pub authority: Option<String>,
    /// For a repair: the record it repairs, its decision date and its sync deadline.
    pub repair: Option<Repair>,
    /// Recommended fields (`RECOMMENDED_FIELDS`) this record lacks.
    pub missing: Vec<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    pub target: RecordId,
    pub decided: Option<Date>,
    pub deadline: Option<Date>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Upsert(Box<Upsert>),
    Revoke {
        record_id: RecordId,
    },
    /// A department's receipt (counted elsewhere, from the view's receipt index).
    Receipt,
}

/// The day (China Standard Time) of an entry's append time.
pub fn day_of(appended_at_micros: i64) -> Option<Date> {
    time::OffsetDateTime::from_unix_timestamp(appended_at_micros.div_euclid(1_000_000))
        .ok()
        .map(|t| t.to_offset(CHINA_STANDARD_TIME).date())
}

/// `day_of`, remembering the last day's span: entries are appended in time order, so nearly
/// every entry falls on the day of the one before (and a date from a timestamp costs more than
/// the rest of an entry's day bookkeeping in the indexer).
#[derive(Default)]
pub struct DayCache {
    /// The micros `[from, to)` of the remembered day.
    span: Option<(i64, i64, Date)>,
}

impl DayCache {
    pub fn day_of(&mut self, appended_at_micros: i64) -> Option<Date> {
        if let Some((from, to, day)) = self.span {
            if (from..to).contains(&appended_at_micros) {
                return Some(day);
            }
        }
        let day = day_of(appended_at_micros)?;
        let from = day
            .midnight()
            .assume_offset(CHINA_STANDARD_TIME)
            .unix_timestamp()
            .saturating_mul(1_000_000);
        self.span = Some((from, from.saturating_add(86_400_000_000), day));
        Some(day)
    }
}

fn date(v: &Option<Cow<'_, str>>) -> Option<Date> {
    v.as_deref().and_then(parse_iso_date)
}

/// The fact of stored operation bytes; `Err` names why they do not read as an operation.
pub fn read(bytes: &[u8]) -> Result<Operation, String> {
    let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(|e| format!("not JSON (column {})", e.column()))?;
    let id = |v: &Option<Cow<'_, str>>, field: &str| {
        v.as_deref()
            .and_then(RecordId::parse)
            .ok_or_else(|| format!("{field}: missing or not a record id"))
    };
    match raw.op.as_deref() {
        Some("revoke") => {
            return Ok(Operation::Revoke {
                record_id: id(&raw.record_id, "record_id")?,
            })
        }
        Some("receipt") => return Ok(Operation::Receipt),
        Some(other) => return Err(format!("op: unknown operation {other:?}")),
        None => {}
    }
    let category = raw
        .category
        .as_deref()
        .and_then(Category::parse)
        .ok_or("category: missing or unknown")?;
    let severity = match raw.severity.as_deref() {
        None => None,
        Some("minor") => Some(Severity::Minor),
        Some("general") => Some(Severity::General),
        Some("serious") => Some(Severity::Serious),
        Some(other) => return Err(format!("severity: unknown value {other:?}")),
    };
    let present = |field: &str| match field {
        "licence_decision_doc_name" => raw.licence_decision_doc_name.is_some(),
        "licence_cert_name" => raw.licence_cert_name.is_some(),
        "licence_no" => raw.licence_no.is_some(),
        "penalty_valid_until" => raw.penalty_valid_until.is_some(),
        _ => true,
    };
    let missing = RECOMMENDED_FIELDS
        .iter()
        .filter(|(c, f)| *c == category && !present(f))
        .map(|(_, f)| *f)
        .collect();
    let repair = match category {
        Category::CreditRepair => Some(Repair {
            target: id(&raw.repaired_record_id, "repaired_record_id")?,
            decided: date(&raw.repair_decision_date),
            deadline: date(&raw.sync_deadline_date),
        }),
        _ => None,
    };
    let authority = match category {
        Category::AdministrativeLicence => raw.licensing_authority_uscc,
        Category::AdministrativePenalty => raw.penalising_authority_uscc,
        _ => None,
    };
    Ok(Operation::Upsert(Box::new(Upsert {
        record_id: id(&raw.record_id, "record_id")?,
        category,
        version: raw
            .record_version
            .and_then(|v| u32::try_from(v).ok())
            .ok_or("record_version: missing")?,
        public: raw.disclosure_class.as_deref() == Some("public"),
        decision_date: match category {
            Category::DishonestList => date(&raw.listing_date),
            _ => date(&raw.decision_date),
        },
        severity,
        publicity_end: date(&raw.publicity_end_date),
        authority: authority.map(Cow::into_owned),
        repair,
        missing,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordGenerator, Region};

    #[test]
    fn the_day_cache_answers_as_day_of_around_midnight_in_china() {
        let mut cache = DayCache::default();
        // 2026-03-01 00:00 China Standard Time is 2026-02-28 16:00 UTC.
        let midnight = time::macros::datetime!(2026-02-28 16:00 UTC).unix_timestamp() * 1_000_000;
        let hour = 3_600_000_000i64;
        for at in [
            midnight - 1,
            midnight,
            midnight + 1,
            midnight + 23 * hour,
            midnight + 24 * hour - 1,
            midnight + 24 * hour,
            midnight - 1,
            i64::MIN,
            0,
            -1,
        ] {
            assert_eq!(cache.day_of(at), day_of(at), "at {at}");
        }
    }

    #[test]
    fn generated_records_read_with_their_dates_authorities_and_repairs() {
        let mut g = RecordGenerator::new(11, Region::parse("330000").expect("region"));
        let (mut repairs, mut licences) = (0, 0);
        for _ in 0..400 {
            let line = g.next_line();
            let full = crate::record::parse_operation(line.as_bytes()).expect("valid");
            let fact = read(line.as_bytes()).expect("reads");
            match (&full, &fact) {
                (crate::record::Operation::Upsert(r), Operation::Upsert(u)) => {
                    assert_eq!(
                        (u.record_id, u.category, u.version),
                        (r.record_id, r.category, r.record_version)
                    );
                    assert_eq!(u.publicity_end, r.publicity_end_date);
                    if r.category == Category::AdministrativeLicence {
                        licences += 1;
                        assert_eq!(u.authority.as_deref().map(str::len), Some(18));
                        assert!(u.decision_date.is_some());
                    }
                    if let Some(rep) = &u.repair {
                        repairs += 1;
                        assert_eq!(Some(rep.target), r.repaired_record_id);
                        assert!(rep.deadline.is_some());
                    }
                }
                (crate::record::Operation::Revoke(_), Operation::Revoke { .. }) => {}
                (a, b) => panic!("{a:?} read as {b:?}"),
            }
        }
        assert!(repairs > 0 && licences > 0, "{repairs} {licences}");
    }

    #[test]
    fn missing_recommended_fields_are_named_and_bad_bytes_are_refused_with_the_field() {
        let licence = br#"{"record_id":"3f2b8c1e-0a4d-4c6e-9b7a-1d2e3f405162","category":"administrative_licence","record_version":1,"licence_no":"X1","decision_date":"2025-03-04"}"#;
        let Operation::Upsert(u) = read(licence).expect("reads") else {
            panic!("upsert")
        };
        assert_eq!(u.missing, vec!["licence_decision_doc_name", "licence_cert_name"]);
        assert!(read(b"not json").expect_err("refused").contains("not JSON"));
        let bad = br#"{"category":"administrative_penalty","record_version":1,"severity":"grave"}"#;
        assert!(read(bad).expect_err("refused").contains("severity"));
    }
}
