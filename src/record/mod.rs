//! Credit records: the national identifier standards, the exchange schema and its validation.
//! Pure: no I/O and no clock. Invariant: a `ValidRecord` or `Revocation` exists only if its
//! canonical bytes passed every rule of `record-schema.json`, and those bytes are what the log
//! stores and hashes.

use std::fmt;

pub mod gen;
mod json;
pub mod publicity;
pub mod region;
pub mod resident_id;
pub mod schema;
pub mod summary;
pub mod uscc;
mod validate;

pub use gen::{add_months, RecordGenerator};
pub use publicity::is_publicly_visible;
pub use region::{Region, RegionError};
pub use resident_id::{check_resident_id, resident_id_check_char};
pub use summary::{summarize, RecordSummary, Summary};
pub use uscc::{check_uscc, is_legacy_pilot_uscc, uscc_check_char, LEGACY_PILOT_USCCS};
pub use validate::{decode_stored, parse_iso_date, parse_operation};

/// A single record line larger than this is rejected before it is parsed.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// Why a record was rejected; `code()` is the wire and report spelling (STANDARDS §10).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum RejectReason {
    UsccBadCheckDigit,
    UsccWrongLength,
    UsccUnknownProvince,
    UsccInvalidCharset,
    IdBadCheckDigit,
    IdInvalidFormat,
    DateOrder,
    InvalidDateFormat,
    MissingRequiredField,
    OversizedText,
    ControlCharacters,
    NegativeAmount,
    UnknownCategory,
    /// A value outside its enum, a wrong JSON type, or a malformed id or region code.
    InvalidValue,
    InvalidJson,
    /// A field the law keeps out of credit records (see `schema::FORBIDDEN_FIELDS`).
    ForbiddenField,
    UnsupportedSchemaVersion,
    OversizedRecord,
}

impl RejectReason {
    const ALL: [RejectReason; 18] = [
        RejectReason::UsccBadCheckDigit,
        RejectReason::UsccWrongLength,
        RejectReason::UsccUnknownProvince,
        RejectReason::UsccInvalidCharset,
        RejectReason::IdBadCheckDigit,
        RejectReason::IdInvalidFormat,
        RejectReason::DateOrder,
        RejectReason::InvalidDateFormat,
        RejectReason::MissingRequiredField,
        RejectReason::OversizedText,
        RejectReason::ControlCharacters,
        RejectReason::NegativeAmount,
        RejectReason::UnknownCategory,
        RejectReason::InvalidValue,
        RejectReason::InvalidJson,
        RejectReason::ForbiddenField,
        RejectReason::UnsupportedSchemaVersion,
        RejectReason::OversizedRecord,
    ];

    pub fn all() -> &'static [RejectReason] {
        &Self::ALL
    }

    pub fn code(self) -> &'static str {
        match self {
            RejectReason::UsccBadCheckDigit => "uscc_bad_check_digit",
            RejectReason::UsccWrongLength => "uscc_wrong_length",
            RejectReason::UsccUnknownProvince => "uscc_unknown_province",
            RejectReason::UsccInvalidCharset => "uscc_invalid_charset",
            RejectReason::IdBadCheckDigit => "id_bad_check_digit",
            RejectReason::IdInvalidFormat => "id_invalid_format",
            RejectReason::DateOrder => "date_order",
            RejectReason::InvalidDateFormat => "invalid_date_format",
            RejectReason::MissingRequiredField => "missing_required_field",
            RejectReason::OversizedText => "oversized_text",
            RejectReason::ControlCharacters => "control_characters",
            RejectReason::NegativeAmount => "negative_amount",
            RejectReason::UnknownCategory => "unknown_category",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::ForbiddenField => "forbidden_field",
            RejectReason::UnsupportedSchemaVersion => "unsupported_schema_version",
            RejectReason::OversizedRecord => "oversized_record",
        }
    }
}

/// A rejected line: the first problem found, in a fixed order, and the field it concerns.
/// `detail` never repeats a field's value, because any field may hold personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub field: String,
    pub detail: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}: {}", self.reason.code(), self.field, self.detail)
    }
}

impl std::error::Error for Rejection {}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum Category {
    AdministrativeLicence,
    AdministrativePenalty,
    DishonestList,
    RedList,
    CreditCommitment,
    CreditRepair,
}

impl Category {
    const ALL: [Category; 6] = [
        Category::AdministrativeLicence,
        Category::AdministrativePenalty,
        Category::DishonestList,
        Category::RedList,
        Category::CreditCommitment,
        Category::CreditRepair,
    ];

    pub fn all() -> &'static [Category] {
        &Self::ALL
    }

    pub fn code(self) -> &'static str {
        match self {
            Category::AdministrativeLicence => "administrative_licence",
            Category::AdministrativePenalty => "administrative_penalty",
            Category::DishonestList => "dishonest_list",
            Category::RedList => "red_list",
            Category::CreditCommitment => "credit_commitment",
            Category::CreditRepair => "credit_repair",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Self::ALL.into_iter().find(|c| c.code() == s)
    }

    /// A stable one-byte tag for indexes: 1..=6 in `all()` order; 0 is never used.
    pub fn as_u8(self) -> u8 {
        match self {
            Category::AdministrativeLicence => 1,
            Category::AdministrativePenalty => 2,
            Category::DishonestList => 3,
            Category::RedList => 4,
            Category::CreditCommitment => 5,
            Category::CreditRepair => 6,
        }
    }

    pub fn from_u8(tag: u8) -> Option<Category> {
        Self::ALL.into_iter().find(|c| c.as_u8() == tag)
    }
}

/// 政务信息资源共享 classes (STANDARDS §6.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum SharingClass {
    Unconditional,
    Conditional,
    NotShared,
}

impl SharingClass {
    pub fn code(self) -> &'static str {
        match self {
            SharingClass::Unconditional => "unconditional",
            SharingClass::Conditional => "conditional",
            SharingClass::NotShared => "not_shared",
        }
    }

    pub fn parse(s: &str) -> Option<SharingClass> {
        [
            SharingClass::Unconditional,
            SharingClass::Conditional,
            SharingClass::NotShared,
        ]
        .into_iter()
        .find(|c| c.code() == s)
    }
}

/// Credit-information disclosure classes (STANDARDS §6.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum DisclosureClass {
    Public,
    Limited,
    NonPublic,
}

impl DisclosureClass {
    pub fn code(self) -> &'static str {
        match self {
            DisclosureClass::Public => "public",
            DisclosureClass::Limited => "limited",
            DisclosureClass::NonPublic => "non_public",
        }
    }

    pub fn parse(s: &str) -> Option<DisclosureClass> {
        [
            DisclosureClass::Public,
            DisclosureClass::Limited,
            DisclosureClass::NonPublic,
        ]
        .into_iter()
        .find(|c| c.code() == s)
    }
}

/// A record's identity: a version-4 UUID (the schema requires v4, so other versions are refused).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RecordId(pub [u8; 16]);

impl RecordId {
    /// Accepts only the hyphenated 36-character form, in either case, of an RFC 4122 version-4
    /// UUID; the simple, braced and URN forms are refused so that one id has one spelling.
    pub fn parse(s: &str) -> Option<RecordId> {
        let uuid = uuid::Uuid::try_parse(s).ok()?;
        let v4 = uuid.get_version() == Some(uuid::Version::Random) && uuid.get_variant() == uuid::Variant::RFC4122;
        (s.len() == 36 && v4).then(|| RecordId(uuid.into_bytes()))
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

/// The identifier of the record's subject: its USCC, or a natural person's resident ID number.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum SubjectKey {
    Uscc(String),
    ResidentId(String),
}

impl SubjectKey {
    /// Index key: a one-byte tag ('U' or 'R') and the ASCII identifier, so the two kinds never
    /// collide.
    pub fn index_bytes(&self) -> Vec<u8> {
        let (tag, id) = match self {
            SubjectKey::Uscc(id) => (b'U', id),
            SubjectKey::ResidentId(id) => (b'R', id),
        };
        let mut key = Vec::with_capacity(1 + id.len());
        key.push(tag);
        key.extend_from_slice(id.as_bytes());
        key
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRecord {
    pub record_id: RecordId,
    pub category: Category,
    pub source_region: Region,
    pub subject: SubjectKey,
    pub subject_region: Option<Region>,
    /// "record_version"; 1 when absent.
    pub record_version: u32,
    pub sharing_class: SharingClass,
    pub disclosure_class: DisclosureClass,
    /// `2099-12-31` is the conventional "long term".
    pub publicity_end_date: Option<time::Date>,
    /// Set for `credit_repair` only, where it is required.
    pub repaired_record_id: Option<RecordId>,
    /// The whole record as compact JSON with sorted keys (ids in lower case).
    pub canonical: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub record_id: RecordId,
    pub reason: String,
    /// An ISO 8601 date (`YYYY-MM-DD`) or an RFC 3339 date-time with offset, as received.
    pub revoked_at: String,
    pub canonical: Vec<u8>,
}

/// A department's signed-for receipt, written by the node that serves the department into its
/// own log (`Feed.Acknowledge`), so it replicates to every origin: the department `department`,
/// served by `node`, has applied every entry below `applied` and stopped showing `stopped`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub receipt_id: RecordId,
    pub department: String,
    pub node: Region,
    /// RFC 3339, as the node wrote it.
    pub received_at: String,
    pub received_at_unix: i64,
    pub applied: std::collections::BTreeMap<Region, u64>,
    pub stopped: Vec<(Region, RecordId)>,
    pub canonical: Vec<u8>,
}

/// Records one receipt may list as stopped at most.
/// (500 items of about 70 bytes stay well inside `RECORD_BYTES_MAX`.)
pub const RECEIPT_RECORDS_MAX: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Upsert(ValidRecord),
    Revoke(Revocation),
    Receipt(Receipt),
}

impl Operation {
    pub fn record_id(&self) -> RecordId {
        match self {
            Operation::Upsert(r) => r.record_id,
            Operation::Revoke(r) => r.record_id,
            Operation::Receipt(r) => r.receipt_id,
        }
    }

    pub fn canonical(&self) -> &[u8] {
        match self {
            Operation::Upsert(r) => &r.canonical,
            Operation::Revoke(r) => &r.canonical,
            Operation::Receipt(r) => &r.canonical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_cover_the_schema() {
        let codes: std::collections::BTreeSet<&str> = RejectReason::all().iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), RejectReason::all().len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("record-schema.json")).expect("schema parses");
        for code in schema["rejection_reasons"].as_array().expect("list") {
            assert!(codes.contains(code.as_str().expect("string")), "{code}");
        }
    }

    #[test]
    fn category_and_class_codes_round_trip() {
        for c in Category::all() {
            assert_eq!(Category::parse(c.code()), Some(*c));
            assert_eq!(Category::from_u8(c.as_u8()), Some(*c));
        }
        assert_eq!(Category::from_u8(0), None);
        assert_eq!(Category::parse("Administrative_Licence"), None);
        for s in ["unconditional", "conditional", "not_shared"] {
            assert_eq!(SharingClass::parse(s).map(SharingClass::code), Some(s));
        }
        for s in ["public", "limited", "non_public"] {
            assert_eq!(DisclosureClass::parse(s).map(DisclosureClass::code), Some(s));
        }
        assert_eq!(SharingClass::parse("shared"), None);
        assert_eq!(DisclosureClass::parse("Public"), None);
    }

    #[test]
    fn record_id_parsing() {
        let id = RecordId::parse("3F2504E0-4F89-41D3-9A0C-0305E82C3301").expect("upper-case v4");
        assert_eq!(id.to_string(), "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        assert_eq!(RecordId::parse(&id.to_string()), Some(id));
        for bad in [
            "3f2504e04f8941d39a0c0305e82c3301",              // simple form
            "{3f2504e0-4f89-41d3-9a0c-0305e82c3301}",        // braced
            "urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301", // urn
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",          // version 1
            "3f2504e0-4f89-41d3-1a0c-0305e82c3301",          // NCS variant
            "00000000-0000-0000-0000-000000000000",          // nil
            "3f2504e0-4f89-41d3-9a0c-0305e82c330",
            "3f2504e0-4f89-41d3-9a0c-0305e82c33g1",
            "",
        ] {
            assert_eq!(RecordId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn subject_index_bytes_are_tagged() {
        assert_eq!(
            SubjectKey::Uscc("91110000600037341L".into()).index_bytes(),
            b"U91110000600037341L"
        );
        assert_eq!(
            SubjectKey::ResidentId("11010519491231002X".into()).index_bytes(),
            b"R11010519491231002X"
        );
    }

    #[test]
    fn rejection_display() {
        let r = Rejection {
            reason: RejectReason::DateOrder,
            field: "valid_to".into(),
            detail: "precedes valid_from".into(),
        };
        assert_eq!(r.to_string(), "date_order on valid_to: precedes valid_from");
    }
}
