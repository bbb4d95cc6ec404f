//! Whether a record may be shown on a public credit portal today. Pure: the caller supplies
//! today's date and the repair/revocation state it knows from the log.

use time::Date;

use super::{Category, DisclosureClass, ValidRecord};

/// True when the record is `public`, neither repaired nor revoked, and its publicity period (if
/// any) has not ended. A penalty without `publicity_end_date` is a minor one, which the 2025
/// rules do not publish (STANDARDS §5.1): the schema requires the date for every other
/// severity, so the missing date alone decides it. Other categories without an end date stay
/// visible.
pub fn is_publicly_visible(rec: &ValidRecord, repaired: bool, revoked: bool, today: Date) -> bool {
    if rec.disclosure_class != DisclosureClass::Public || repaired || revoked {
        return false;
    }
    match rec.publicity_end_date {
        Some(end) => end >= today,
        None => rec.category != Category::AdministrativePenalty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{RecordId, Region, SharingClass, SubjectKey};
    use time::macros::date;

    fn record(category: Category, disclosure_class: DisclosureClass, end: Option<Date>) -> ValidRecord {
        ValidRecord {
            record_id: RecordId([0x42; 16]),
            category,
            source_region: Region::all()[0],
            subject: SubjectKey::Uscc("91110000600037341L".into()),
            subject_region: None,
            record_version: 1,
            sharing_class: SharingClass::Unconditional,
            disclosure_class,
            publicity_end_date: end,
            repaired_record_id: None,
            canonical: Vec::new(),
        }
    }

    #[test]
    fn visibility_rules() {
        let today = date!(2025 - 06 - 30);
        let penalty = |end| record(Category::AdministrativePenalty, DisclosureClass::Public, end);
        assert!(
            is_publicly_visible(&penalty(Some(today)), false, false, today),
            "last day is included"
        );
        assert!(!is_publicly_visible(
            &penalty(Some(date!(2025 - 06 - 29))),
            false,
            false,
            today
        ));
        assert!(is_publicly_visible(
            &penalty(Some(date!(2099 - 12 - 31))),
            false,
            false,
            today
        ));
        assert!(
            !is_publicly_visible(&penalty(None), false, false, today),
            "minor penalties are not published"
        );
        assert!(
            !is_publicly_visible(&penalty(Some(today)), true, false, today),
            "repaired"
        );
        assert!(
            !is_publicly_visible(&penalty(Some(today)), false, true, today),
            "revoked"
        );
        let licence = record(Category::AdministrativeLicence, DisclosureClass::Public, None);
        assert!(is_publicly_visible(&licence, false, false, today));
        for class in [DisclosureClass::Limited, DisclosureClass::NonPublic] {
            let hidden = record(Category::AdministrativeLicence, class, None);
            assert!(!is_publicly_visible(&hidden, false, false, today));
        }
    }
}
