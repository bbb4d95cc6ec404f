//! The rules of `record-schema.json` as constants. The schema file is authoritative: the tests
//! at the bottom compare every table here with the copy beside this file, so a schema change
//! that is not carried into the code fails the build's tests.

use super::Category;

pub const SCHEMA_VERSION: &str = "1.0";

/// Fields every category requires (STANDARDS §8), in the schema's order.
const ENVELOPE: [&str; 11] = [
    "record_id",
    "schema_version",
    "category",
    "source_region_code",
    "subject_type",
    "subject_name",
    "data_source_unit",
    "data_source_unit_uscc",
    "sharing_class",
    "disclosure_class",
    "updated_at",
];

/// Fields required beyond the envelope, per category, in the schema's order.
pub fn category_required(category: Category) -> &'static [&'static str] {
    match category {
        Category::AdministrativeLicence => &[
            "licence_decision_doc_no",
            "licence_category",
            "licence_content",
            "decision_date",
            "valid_from",
            "valid_to",
            "licensing_authority",
            "licensing_authority_uscc",
            "status",
        ],
        Category::AdministrativePenalty => &[
            "penalty_decision_doc_no",
            "violation_type",
            "violation_facts",
            "penalty_basis",
            "penalty_categories",
            "penalty_content",
            "decision_date",
            "severity",
            "penalising_authority",
            "penalising_authority_uscc",
        ],
        Category::DishonestList => &[
            "list_name",
            "listing_reason",
            "listing_basis",
            "listing_authority",
            "listing_authority_uscc",
            "listing_date",
            "publicity_end_date",
            "earliest_repair_date",
            "status",
        ],
        Category::RedList => &[
            "award_name",
            "awarding_authority",
            "awarding_authority_uscc",
            "award_date",
            "valid_from",
            "valid_to",
            "status",
        ],
        Category::CreditCommitment => &[
            "commitment_type",
            "commitment_matter",
            "commitment_content",
            "commitment_date",
            "acceptance_unit",
            "acceptance_unit_uscc",
            "valid_from",
            "valid_to",
            "fulfilment_status",
        ],
        Category::CreditRepair => &[
            "repaired_record_id",
            "repaired_category",
            "repair_method",
            "application_date",
            "repair_decision_date",
            "repair_authority",
            "repair_authority_uscc",
            "record_retained",
            "sync_deadline_date",
        ],
    }
}

/// All required fields of a category: the envelope, then the category's own.
pub fn required(category: Category) -> impl Iterator<Item = &'static str> {
    ENVELOPE.iter().chain(category_required(category)).copied()
}

/// (earlier, later) pairs: the later date may not precede the earlier one.
pub fn date_order(category: Category) -> &'static [(&'static str, &'static str)] {
    match category {
        Category::AdministrativeLicence => &[("decision_date", "valid_to"), ("valid_from", "valid_to")],
        Category::AdministrativePenalty => &[
            ("decision_date", "publicity_end_date"),
            ("decision_date", "earliest_repair_date"),
            ("earliest_repair_date", "publicity_end_date"),
        ],
        Category::DishonestList => &[
            ("listing_date", "publicity_end_date"),
            ("listing_date", "earliest_repair_date"),
            ("earliest_repair_date", "publicity_end_date"),
            ("listing_date", "removal_date"),
        ],
        Category::RedList => &[("award_date", "valid_to"), ("valid_from", "valid_to")],
        Category::CreditCommitment => &[("commitment_date", "valid_to"), ("valid_from", "valid_to")],
        Category::CreditRepair => &[
            ("application_date", "repair_decision_date"),
            ("repair_decision_date", "sync_deadline_date"),
        ],
    }
}

/// Severities for which a penalty must carry its publicity dates ("conditional_required").
pub const PUBLISHED_SEVERITIES: [&str; 2] = ["general", "serious"];
pub const PUBLICITY_DATES: [&str; 2] = ["publicity_end_date", "earliest_repair_date"];
/// Subject types identified by a USCC; the remaining one, natural_person, by `subject_id_number`.
pub const USCC_SUBJECT_TYPES: [&str; 2] = ["legal_entity", "individual_business"];

pub const ENUMS: [(&str, &[&str]); 6] = [
    (
        "subject_type",
        &["legal_entity", "natural_person", "individual_business"],
    ),
    ("sharing_class", &["unconditional", "conditional", "not_shared"]),
    ("disclosure_class", &["public", "limited", "non_public"]),
    ("severity", &["minor", "general", "serious"]),
    ("repair_method", &["terminate_publicity", "remove_from_list"]),
    ("fulfilment_status", &["fulfilled", "pending", "breached"]),
];

pub const MAX_LEN_CODE_POINTS: [(&str, usize); 31] = [
    ("subject_name", 200),
    ("legal_representative", 50),
    ("data_source_unit", 200),
    ("licensing_authority", 200),
    ("penalising_authority", 200),
    ("listing_authority", 200),
    ("awarding_authority", 200),
    ("acceptance_unit", 200),
    ("repair_authority", 200),
    ("licence_decision_doc_name", 128),
    ("licence_decision_doc_no", 128),
    ("licence_cert_name", 128),
    ("licence_no", 128),
    ("licence_content", 4000),
    ("penalty_decision_doc_no", 128),
    ("violation_type", 2000),
    ("violation_facts", 4000),
    ("penalty_basis", 2000),
    ("penalty_content", 4000),
    ("suspended_revoked_licence", 200),
    ("list_name", 200),
    ("listing_reason", 2000),
    ("listing_basis", 2000),
    ("listing_decision_doc_no", 128),
    ("award_name", 200),
    ("award_basis", 2000),
    ("award_doc_no", 128),
    ("commitment_matter", 500),
    ("commitment_content", 4000),
    ("repair_decision_doc_no", 128),
    ("remarks", 1000),
];

pub const LONG_TEXT_FIELDS: [&str; 9] = [
    "award_basis",
    "commitment_content",
    "licence_content",
    "listing_basis",
    "listing_reason",
    "penalty_basis",
    "penalty_content",
    "violation_facts",
    "violation_type",
];

pub const USCC_FIELDS: [&str; 8] = [
    "subject_uscc",
    "data_source_unit_uscc",
    "licensing_authority_uscc",
    "penalising_authority_uscc",
    "listing_authority_uscc",
    "awarding_authority_uscc",
    "acceptance_unit_uscc",
    "repair_authority_uscc",
];

pub const RESIDENT_ID_FIELDS: [&str; 2] = ["subject_id_number", "legal_rep_id_number"];

pub const DATE_FIELDS: [&str; 13] = [
    "decision_date",
    "valid_from",
    "valid_to",
    "penalty_valid_until",
    "publicity_end_date",
    "earliest_repair_date",
    "listing_date",
    "removal_date",
    "award_date",
    "commitment_date",
    "application_date",
    "repair_decision_date",
    "sync_deadline_date",
];

pub const AMOUNT_FIELDS: [&str; 2] = ["fine_amount_wan", "confiscated_amount_wan"];

/// Fields the 征信业管理条例 Art. 14 and local rules keep out of public credit records
/// (STANDARDS §2.2): religion, genes, fingerprints, blood type, disease and medical history,
/// income, deposits and tax amounts. Matched exactly against top-level keys; the list names the
/// spellings an adapter is likely to produce.
pub const FORBIDDEN_FIELDS: [&str; 20] = [
    "religion",
    "religious_belief",
    "genes",
    "gene_info",
    "genetic_information",
    "fingerprint",
    "fingerprints",
    "blood_type",
    "disease",
    "disease_history",
    "medical_history",
    "health_status",
    "income",
    "income_amount",
    "annual_income",
    "deposits",
    "deposit_amount",
    "bank_deposits",
    "tax_amount",
    "tax_paid",
];

/// How a known field is checked. Fields absent from every table are "extra": any JSON type,
/// but their strings still may not hold control characters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Text {
        max_code_points: Option<usize>,
        long: bool,
    },
    TextList,
    Enum(&'static [&'static str]),
    Uscc,
    ResidentId,
    Date,
    DateTime,
    /// A revocation's `revoked_at`: a date or a date-time.
    DateOrDateTime,
    Amount,
    Region,
    Uuid,
    Bool,
    Version,
    CategoryCode,
}

/// Fields whose kind no table below implies.
const TYPED_FIELDS: [(&str, Kind); 9] = [
    ("record_id", Kind::Uuid),
    ("repaired_record_id", Kind::Uuid),
    ("source_region_code", Kind::Region),
    ("subject_region_code", Kind::Region),
    ("updated_at", Kind::DateTime),
    ("record_version", Kind::Version),
    ("record_retained", Kind::Bool),
    // The national field is one string; we carry the list (STANDARDS §4.4).
    ("penalty_categories", Kind::TextList),
    ("repaired_category", Kind::CategoryCode),
];

/// `FORBIDDEN_FIELDS` in byte order, for a merge walk over a record's sorted members.
pub fn forbidden_sorted() -> &'static [&'static str] {
    static SORTED: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        let mut v = FORBIDDEN_FIELDS.to_vec();
        v.sort_by(|a, b| super::json::key_cmp(a.as_bytes(), b.as_bytes()));
        v
    });
    &SORTED
}

/// Every named field's kind, sorted by name (byte order), built once from `kind_by_rule`; with
/// each name's first eight bytes as a big-endian word (`json::word`), which decide most
/// comparisons of the merge walk.
fn kinds() -> &'static [(u64, &'static str, Kind)] {
    use super::json::{key_cmp, word};
    static KINDS: std::sync::LazyLock<Vec<(u64, &'static str, Kind)>> = std::sync::LazyLock::new(|| {
        let mut kinds: Vec<(&'static str, Kind)> = named_fields().filter_map(|f| Some((f, kind_by_rule(f)?))).collect();
        kinds.sort_by(|a, b| key_cmp(a.0.as_bytes(), b.0.as_bytes()));
        kinds.dedup_by_key(|k| k.0);
        kinds.into_iter().map(|(f, k)| (word(f.as_bytes(), 0), f, k)).collect()
    });
    &KINDS
}

/// How `field` is checked (None: an extra field).
pub fn kind_of(field: &str) -> Option<Kind> {
    KindsInOrder::new().kind_of(field)
}

/// `kind_of` for names asked in increasing byte order, as a record's sorted members are: a
/// merge walk over the sorted table, about one comparison per name instead of a search (every
/// record asks this of each of its ~40 fields). Asked out of order it answers None.
pub struct KindsInOrder {
    table: &'static [(u64, &'static str, Kind)],
    at: usize,
}

impl KindsInOrder {
    pub fn new() -> Self {
        KindsInOrder { table: kinds(), at: 0 }
    }

    pub fn kind_of(&mut self, field: &str) -> Option<Kind> {
        use super::json::{key_cmp, word};
        use std::cmp::Ordering;
        let w = word(field.as_bytes(), 0);
        while let Some((name_word, name, kind)) = self.table.get(self.at) {
            // Different first words order the names as their bytes do; equal ones need the rest.
            let order = name_word
                .cmp(&w)
                .then_with(|| key_cmp(name.as_bytes(), field.as_bytes()));
            match order {
                Ordering::Less => self.at += 1,
                Ordering::Equal => return Some(*kind),
                Ordering::Greater => return None,
            }
        }
        None
    }
}

impl Default for KindsInOrder {
    fn default() -> Self {
        Self::new()
    }
}

/// Every field some table names: the only ones `kind_by_rule` can give a kind.
fn named_fields() -> impl Iterator<Item = &'static str> {
    TYPED_FIELDS
        .iter()
        .map(|(f, _)| *f)
        .chain(USCC_FIELDS)
        .chain(RESIDENT_ID_FIELDS)
        .chain(DATE_FIELDS)
        .chain(AMOUNT_FIELDS)
        .chain(ENUMS.iter().map(|(f, _)| *f))
        .chain(MAX_LEN_CODE_POINTS.iter().map(|(f, _)| *f))
        .chain(LONG_TEXT_FIELDS)
        .chain(Category::all().iter().flat_map(|c| required(*c)))
}

/// The rule itself: which table names the field, first match wins.
fn kind_by_rule(field: &str) -> Option<Kind> {
    if let Some((_, kind)) = TYPED_FIELDS.iter().find(|(name, _)| *name == field) {
        return Some(*kind);
    }
    let kind = match field {
        _ if USCC_FIELDS.contains(&field) => Kind::Uscc,
        _ if RESIDENT_ID_FIELDS.contains(&field) => Kind::ResidentId,
        _ if DATE_FIELDS.contains(&field) => Kind::Date,
        _ if AMOUNT_FIELDS.contains(&field) => Kind::Amount,
        _ => {
            if let Some((_, values)) = ENUMS.iter().find(|(name, _)| *name == field) {
                Kind::Enum(values)
            } else {
                let max_code_points = MAX_LEN_CODE_POINTS
                    .iter()
                    .find(|(name, _)| *name == field)
                    .map(|(_, max)| *max);
                let long = LONG_TEXT_FIELDS.contains(&field);
                let required_somewhere = Category::all().iter().any(|c| required(*c).any(|f| f == field));
                if max_code_points.is_none() && !long && !required_somewhere {
                    return None;
                }
                Kind::Text { max_code_points, long }
            }
        }
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The map answers what the rule answers, for named fields and for any other name.
        #[test]
        fn kind_of_equals_the_rule(other in "[a-z_]{0,24}", pick in 0usize..200) {
            let named: Vec<&str> = named_fields().collect();
            let field = named[pick % named.len()];
            proptest::prop_assert_eq!(kind_of(field), kind_by_rule(field), "{}", field);
            proptest::prop_assert_eq!(kind_of(&other), kind_by_rule(&other), "{}", other);
        }
    }

    proptest::proptest! {
        /// Asked in byte order, the merge walk answers what the rule answers, for any mix of
        /// named fields and other names.
        #[test]
        fn kinds_in_order_equal_the_rule(
            others in proptest::collection::vec("[a-z_]{0,24}", 0..30),
            picks in proptest::collection::vec(0usize..200, 0..40),
        ) {
            let named: Vec<&str> = named_fields().collect();
            let mut names: Vec<String> = picks.iter().map(|p| named[p % named.len()].to_owned()).collect();
            names.extend(others);
            names.sort();
            names.dedup();
            let mut walk = KindsInOrder::new();
            for name in &names {
                proptest::prop_assert_eq!(walk.kind_of(name), kind_by_rule(name), "{}", name);
            }
        }
    }

    #[test]
    fn every_named_field_has_its_kind_and_extras_have_none() {
        for field in named_fields() {
            assert_eq!(kind_of(field), kind_by_rule(field), "{field}");
        }
        assert_eq!(kind_of("record_retained"), Some(Kind::Bool));
        assert_eq!(kind_of("subject_uscc"), Some(Kind::Uscc));
        for extra in ["", "remarks_extra", "Record_id", "record_id "] {
            assert_eq!(kind_of(extra), None, "{extra:?}");
        }
    }
    use serde_json::{json, Value};

    fn schema() -> Value {
        serde_json::from_str(include_str!("record-schema.json")).expect("schema parses")
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string"))
            .collect()
    }

    #[test]
    fn tables_match_schema() {
        let s = schema();
        assert_eq!(s["schema_version"], SCHEMA_VERSION);
        let categories = s["categories"].as_object().expect("categories");
        assert_eq!(categories.len(), Category::all().len());
        for category in Category::all() {
            let rules = &categories[category.code()];
            assert_eq!(strings(&rules["required"]), required(*category).collect::<Vec<_>>());
            let pairs: Vec<(&str, &str)> = rules["date_order"]
                .as_array()
                .expect("pairs")
                .iter()
                .map(|p| (p[0].as_str().expect("s"), p[1].as_str().expect("s")))
                .collect();
            assert_eq!(pairs, date_order(*category));
        }
        let enums = s["enums"].as_object().expect("enums");
        assert_eq!(enums.len(), ENUMS.len());
        for (name, values) in ENUMS {
            assert_eq!(strings(&enums[name]), values);
        }
        let max_len = s["max_len_code_points"].as_object().expect("max_len");
        assert_eq!(max_len.len(), MAX_LEN_CODE_POINTS.len());
        for (name, max) in MAX_LEN_CODE_POINTS {
            assert_eq!(max_len[name], json!(max));
        }
        assert_eq!(strings(&s["long_text_fields_allowing_tab_cr_lf"]), LONG_TEXT_FIELDS);
        assert_eq!(strings(&s["uscc_fields"]), USCC_FIELDS);
        assert_eq!(strings(&s["resident_id_fields"]), RESIDENT_ID_FIELDS);
        assert_eq!(strings(&s["date_fields"]), DATE_FIELDS);
        assert_eq!(strings(&s["amount_fields_wan_non_negative"]), AMOUNT_FIELDS);
    }

    #[test]
    fn conditional_rules_match_schema() {
        let expected = json!([
            {"when": {"category": "administrative_penalty", "severity": PUBLISHED_SEVERITIES}, "required": PUBLICITY_DATES},
            {"when": {"subject_type": USCC_SUBJECT_TYPES}, "required": ["subject_uscc"]},
            {"when": {"subject_type": ["natural_person"]}, "required": ["subject_id_number"]},
        ]);
        assert_eq!(schema()["conditional_required"], expected);
    }

    #[test]
    fn every_schema_field_has_a_kind_and_forbidden_fields_do_not() {
        for category in Category::all() {
            for field in required(*category) {
                if field != "schema_version" && field != "category" {
                    assert!(kind_of(field).is_some(), "{field}");
                }
            }
        }
        assert_eq!(
            kind_of("status"),
            Some(Kind::Text {
                max_code_points: None,
                long: false
            })
        );
        assert_eq!(
            kind_of("violation_facts"),
            Some(Kind::Text {
                max_code_points: Some(4000),
                long: true
            })
        );
        assert_eq!(kind_of("sync_targets"), None);
        assert!(FORBIDDEN_FIELDS.iter().all(|f| kind_of(f).is_none()));
    }
}
