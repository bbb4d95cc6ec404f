//! What an index needs of a stored operation, read without building the whole record: a typed
//! parse that borrows from the bytes and skips every field it does not need, several times
//! cheaper than `decode_stored` (which re-validates every rule and re-serialises to compare).
//! The merged view reads every entry of every origin, so this is its hot path. Invariant: it
//! refuses what the view could not index truthfully — not JSON, a schema version this node does
//! not know, and a malformed id, category, version, subject, class or date among the fields it
//! reads; it does not re-check the other rules (the origin checked them, and `cxnode verify`
//! re-checks every entry in full).

use super::validate::{parse_iso_date, WHOLE_RECORD};
use super::{
    check_resident_id, check_uscc, is_legacy_pilot_uscc, schema, Category, DisclosureClass, RecordId, RejectReason,
    Rejection, SharingClass, SubjectKey, RECORD_BYTES_MAX,
};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    schema_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    record_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    #[serde(default)]
    record_version: Option<u64>,
    #[serde(borrow, default)]
    subject_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    subject_uscc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    subject_id_number: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sharing_class: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    disclosure_class: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    publicity_end_date: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    repaired_record_id: Option<Cow<'a, str>>,
}

/// A stored operation as indexes see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Summary {
    Upsert(RecordSummary),
    Revoke {
        record_id: RecordId,
    },
    /// A department's receipt (rare: read in full).
    Receipt(Box<super::Receipt>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    pub record_id: RecordId,
    pub category: Category,
    pub record_version: u32,
    pub subject: SubjectKey,
    pub sharing_class: SharingClass,
    pub disclosure_class: DisclosureClass,
    pub publicity_end_date: Option<time::Date>,
    pub repaired_record_id: Option<RecordId>,
}

impl From<&super::Operation> for Summary {
    /// What `summarize` reads from the operation's canonical bytes, taken from the operation
    /// validated from them (the writer hands it to the indexer, which then need not parse its
    /// own records again; `summaries_agree_with_full_validation` checks the two agree).
    fn from(op: &super::Operation) -> Summary {
        match op {
            super::Operation::Upsert(r) => Summary::Upsert(RecordSummary {
                record_id: r.record_id,
                category: r.category,
                record_version: r.record_version,
                subject: r.subject.clone(),
                sharing_class: r.sharing_class,
                disclosure_class: r.disclosure_class,
                publicity_end_date: r.publicity_end_date,
                repaired_record_id: r.repaired_record_id,
            }),
            super::Operation::Revoke(r) => Summary::Revoke { record_id: r.record_id },
            super::Operation::Receipt(r) => Summary::Receipt(Box::new(r.clone())),
        }
    }
}

impl Summary {
    pub fn record_id(&self) -> RecordId {
        match self {
            Summary::Upsert(r) => r.record_id,
            Summary::Revoke { record_id } => *record_id,
            Summary::Receipt(r) => r.receipt_id,
        }
    }
}

fn invalid(field: &str, detail: &str) -> Rejection {
    Rejection {
        reason: RejectReason::InvalidValue,
        field: field.to_owned(),
        detail: detail.to_owned(),
    }
}

fn required<'r>(v: &'r Option<Cow<'_, str>>, field: &str) -> Result<&'r str, Rejection> {
    v.as_deref().ok_or_else(|| Rejection {
        reason: RejectReason::MissingRequiredField,
        field: field.to_owned(),
        detail: "required".to_owned(),
    })
}

fn id(v: &Option<Cow<'_, str>>, field: &str) -> Result<RecordId, Rejection> {
    RecordId::parse(required(v, field)?).ok_or_else(|| invalid(field, "not a hyphenated version-4 uuid"))
}

/// Reads the index facts of stored operation bytes.
pub fn summarize(bytes: &[u8]) -> Result<Summary, Rejection> {
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(Rejection {
            reason: RejectReason::OversizedRecord,
            field: WHOLE_RECORD.to_owned(),
            detail: format!("longer than {RECORD_BYTES_MAX} bytes"),
        });
    }
    let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(|e| Rejection {
        reason: RejectReason::InvalidJson,
        field: WHOLE_RECORD.to_owned(),
        detail: format!("not an operation this schema reads (column {})", e.column()),
    })?;
    match raw.op.as_deref() {
        Some("receipt") => {
            return match super::parse_operation(bytes)? {
                super::Operation::Receipt(r) => Ok(Summary::Receipt(Box::new(r))),
                _ => Err(invalid("op", "not a receipt")),
            }
        }
        Some("revoke") => {
            return Ok(Summary::Revoke {
                record_id: id(&raw.record_id, "record_id")?,
            })
        }
        Some(_) => return Err(invalid("op", "op must be \"revoke\", \"receipt\" or absent")),
        None => {}
    }
    if required(&raw.schema_version, "schema_version")? != schema::SCHEMA_VERSION {
        return Err(Rejection {
            reason: RejectReason::UnsupportedSchemaVersion,
            field: "schema_version".to_owned(),
            detail: format!("only schema version {} is supported", schema::SCHEMA_VERSION),
        });
    }
    let category = Category::parse(required(&raw.category, "category")?).ok_or_else(|| Rejection {
        reason: RejectReason::UnknownCategory,
        field: "category".to_owned(),
        detail: "not one of the six categories".to_owned(),
    })?;
    let subject = if required(&raw.subject_type, "subject_type")? == "natural_person" {
        let n = required(&raw.subject_id_number, "subject_id_number")?;
        check_resident_id(n).map_err(|reason| Rejection {
            reason,
            field: "subject_id_number".to_owned(),
            detail: "not a valid resident id number".to_owned(),
        })?;
        SubjectKey::ResidentId(n.to_owned())
    } else {
        let u = required(&raw.subject_uscc, "subject_uscc")?;
        if !is_legacy_pilot_uscc(u) {
            check_uscc(u).map_err(|reason| Rejection {
                reason,
                field: "subject_uscc".to_owned(),
                detail: "not a valid unified social credit code".to_owned(),
            })?;
        }
        SubjectKey::Uscc(u.to_owned())
    };
    let record_version = match raw.record_version {
        None => 1,
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| invalid("record_version", "must be an integer of at least 1"))?,
    };
    let publicity_end_date = match raw.publicity_end_date.as_deref() {
        None => None,
        Some(s) => Some(parse_iso_date(s).ok_or_else(|| Rejection {
            reason: RejectReason::InvalidDateFormat,
            field: "publicity_end_date".to_owned(),
            detail: "not a real YYYY-MM-DD date".to_owned(),
        })?),
    };
    Ok(Summary::Upsert(RecordSummary {
        record_id: id(&raw.record_id, "record_id")?,
        category,
        record_version,
        subject,
        sharing_class: SharingClass::parse(required(&raw.sharing_class, "sharing_class")?)
            .ok_or_else(|| invalid("sharing_class", "not an allowed value"))?,
        disclosure_class: DisclosureClass::parse(required(&raw.disclosure_class, "disclosure_class")?)
            .ok_or_else(|| invalid("disclosure_class", "not an allowed value"))?,
        publicity_end_date,
        repaired_record_id: match category {
            Category::CreditRepair => Some(id(&raw.repaired_record_id, "repaired_record_id")?),
            _ => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_operation, Operation, RecordGenerator, Region};

    /// On everything the generator makes, the summary agrees with the full validation.
    #[test]
    fn summaries_agree_with_full_validation() {
        let mut gen = RecordGenerator::new(8, Region::parse("440000").expect("province"));
        let mut repairs = 0;
        for _ in 0..3000 {
            let op = parse_operation(gen.next_line().as_bytes()).expect("valid");
            let s = summarize(op.canonical()).expect("summarizes");
            let Operation::Upsert(r) = &op else {
                panic!("generator makes records")
            };
            repairs += usize::from(r.repaired_record_id.is_some());
            let expected = Summary::Upsert(RecordSummary {
                record_id: r.record_id,
                category: r.category,
                record_version: r.record_version,
                subject: r.subject.clone(),
                sharing_class: r.sharing_class,
                disclosure_class: r.disclosure_class,
                publicity_end_date: r.publicity_end_date,
                repaired_record_id: r.repaired_record_id,
            });
            assert_eq!(s, expected);
            // What the writer hands the indexer for its own records is the same summary.
            assert_eq!(Summary::from(&op), expected);
        }
        assert!(repairs > 0, "the generator made repairs");
        let revoke = br#"{"op":"revoke","reason":"x","record_id":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","revoked_at":"2025-07-01"}"#;
        assert_eq!(
            summarize(revoke).map(|s| s.record_id().to_string()),
            Ok("3f2504e0-4f89-41d3-9a0c-0305e82c3301".into())
        );
        let op = parse_operation(revoke).expect("a valid revocation");
        assert_eq!(summarize(op.canonical()), Ok(Summary::from(&op)));
    }

    #[test]
    fn what_the_view_cannot_index_is_refused_with_its_reason() {
        let cases: [(&[u8], RejectReason, &str); 5] = [
            (b"[1,2]", RejectReason::InvalidJson, WHOLE_RECORD),
            (
                br#"{"schema_version":"9.0"}"#,
                RejectReason::UnsupportedSchemaVersion,
                "schema_version",
            ),
            (
                br#"{"schema_version":"1.0","category":"gossip"}"#,
                RejectReason::UnknownCategory,
                "category",
            ),
            (br#"{"op":"delete"}"#, RejectReason::InvalidValue, "op"),
            (
                br#"{"op":"revoke","record_id":"not-a-uuid"}"#,
                RejectReason::InvalidValue,
                "record_id",
            ),
        ];
        for (bytes, reason, field) in cases {
            let r = summarize(bytes).expect_err("refused");
            assert_eq!(
                (r.reason, r.field.as_str()),
                (reason, field),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
