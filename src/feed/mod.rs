//! Department feeds and profiles, the pure core: what a department asked for (`Filter`), what its
//! policy lets it see (`Scope`), the two together (`Plan`), where a stream stands (`Cursor`), what
//! an entry or a passing date means to it (`Event`), and the progress mark it can show a third
//! party. No I/O: the driver (`crate::delivery`) reads the merged view and the journal, passes
//! facts and today's date in, and sends what comes out.
//!
//! Invariants: nothing outside the scope is ever admitted, and the scope decides on the facts of
//! the record an event is about (for a repair, the repaired record); per origin, events leave in
//! seq order and a cursor moves only forward, so resuming from any event's cursor delivers every
//! later event exactly once; a progress mark names only origins the plan reads, so it says
//! nothing about data the department may not see; a plan's digest is a function of its content
//! alone, so two nodes describe the same filter with the same bytes.

pub mod cursor;
pub mod scope;

pub use cursor::{Cursor, CursorError};
pub use scope::{GrantScope, Scope};

use crate::log::{digest, Hash};
use crate::record::{
    check_resident_id, check_uscc, Category, DisclosureClass, RecordId, Region, SharingClass, SubjectKey,
};
use std::collections::{BTreeMap, BTreeSet};
use time::Date;

/// Categories, regions or subjects one filter may name at most.
pub const FILTER_TERMS_MAX: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("filter.categories: unknown category {0:?} (known: administrative_licence, administrative_penalty, dishonest_list, red_list, credit_commitment, credit_repair)")]
    UnknownCategory(String),
    #[error("filter.regions: {0}")]
    BadRegion(String),
    #[error(
        "{field}: {value:?} is neither a valid unified social credit code nor a valid resident ID number ({reason})"
    )]
    BadSubject {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("filter.{field}: at most {max} terms, got {got}")]
    TooManyTerms {
        field: &'static str,
        max: usize,
        got: usize,
    },
    #[error("your access policy does not grant {0}")]
    NotGranted(String),
    #[error("record {0:?} is not among the records you may see")]
    NotVisible(String),
    #[error("resume cursor: {0}")]
    Cursor(#[from] CursorError),
}

/// Parses a subject as a department writes it: a USCC or a resident ID number, each with its check
/// character verified. `uscc:` or `id:` in front settles the rare string that is valid as both.
pub fn parse_subject(field: &'static str, s: &str) -> Result<SubjectKey, FeedError> {
    let bad = |reason: String| FeedError::BadSubject {
        field,
        value: mask(s),
        reason,
    };
    if let Some(code) = s.strip_prefix("uscc:") {
        return check_uscc(code)
            .map(|_| SubjectKey::Uscc(code.to_string()))
            .map_err(|r| bad(r.code().to_string()));
    }
    if let Some(id) = s.strip_prefix("id:") {
        return check_resident_id(id)
            .map(|_| SubjectKey::ResidentId(id.to_string()))
            .map_err(|r| bad(r.code().to_string()));
    }
    match (check_uscc(s), check_resident_id(s)) {
        (Ok(()), Err(_)) => Ok(SubjectKey::Uscc(s.to_string())),
        (Err(_), Ok(())) => Ok(SubjectKey::ResidentId(s.to_string())),
        (Ok(()), Ok(())) => Err(bad("valid as both; write uscc:CODE or id:NUMBER".to_string())),
        (Err(a), Err(b)) => Err(bad(format!("as a USCC: {}; as a resident ID: {}", a.code(), b.code()))),
    }
}

/// How a subject may appear in logs, traces and the audit log: a resident ID number keeps its
/// first and last four characters (`3301**********123X`); anything else of that length is masked
/// the same way, since an unparsed string may be one; a USCC names a legal entity and stays whole.
pub fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if check_uscc(s).is_ok() && check_resident_id(s).is_err() {
        return s.to_string();
    }
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let n = chars.len();
    chars[..4]
        .iter()
        .chain(std::iter::repeat_n(&'*', n - 8))
        .chain(chars[n - 4..].iter())
        .collect()
}

/// `mask` for a parsed subject.
pub fn mask_subject(s: &SubjectKey) -> String {
    match s {
        SubjectKey::Uscc(code) => code.clone(),
        SubjectKey::ResidentId(id) => mask(id),
    }
}

/// What a department asked for. Empty sets mean "everything the policy grants".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub categories: BTreeSet<Category>,
    pub regions: BTreeSet<Region>,
    pub subjects: BTreeSet<Vec<u8>>,
    /// Only records shown to the public right now (and withdrawals of them).
    pub public_only: bool,
}

fn bounded<T>(field: &'static str, items: &[T]) -> Result<(), FeedError> {
    if items.len() > FILTER_TERMS_MAX {
        return Err(FeedError::TooManyTerms {
            field,
            max: FILTER_TERMS_MAX,
            got: items.len(),
        });
    }
    Ok(())
}

impl Filter {
    /// Builds a filter from a request's terms, naming the first bad one.
    pub fn parse(
        categories: &[String],
        regions: &[u32],
        subjects: &[String],
        public_only: bool,
    ) -> Result<Filter, FeedError> {
        bounded("categories", categories)?;
        bounded("regions", regions)?;
        bounded("subjects", subjects)?;
        Ok(Filter {
            categories: categories
                .iter()
                .map(|c| Category::parse(c).ok_or_else(|| FeedError::UnknownCategory(c.clone())))
                .collect::<Result<_, _>>()?,
            regions: regions
                .iter()
                .map(|r| Region::from_code(*r).map_err(|e| FeedError::BadRegion(e.to_string())))
                .collect::<Result<_, _>>()?,
            subjects: subjects
                .iter()
                .map(|s| parse_subject("filter.subjects", s).map(|k| k.index_bytes()))
                .collect::<Result<_, _>>()?,
            public_only,
        })
    }
}

/// What the core needs to know of a record (from the merged view, or from the entry itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub origin: Region,
    pub record_id: RecordId,
    pub category: Category,
    pub sharing: SharingClass,
    pub disclosure: DisclosureClass,
    /// `SubjectKey::index_bytes`: a tag byte (`U` legal entity, `R` natural person), then the id.
    pub subject: Vec<u8>,
    pub version: u32,
    pub repaired: bool,
    pub revoked: bool,
    pub publicity_end: Option<Date>,
}

impl Facts {
    pub fn natural_person(&self) -> bool {
        self.subject.first() == Some(&b'R')
    }

    /// The record's status today.
    pub fn status(&self, today: Date) -> Status {
        if self.revoked {
            Status::Revoked
        } else if self.repaired {
            Status::Repaired
        } else if self.publicity_end.is_some_and(|end| end < today) {
            Status::Expired
        } else {
            Status::InPublicity
        }
    }

    /// Shown to the public today: public class, in its publicity period, and not a minor penalty
    /// (which carries no end date and is not published; `record::is_publicly_visible`).
    pub fn public_now(&self, today: Date) -> bool {
        self.disclosure == DisclosureClass::Public
            && self.status(today) == Status::InPublicity
            && (self.publicity_end.is_some() || self.category != Category::AdministrativePenalty)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    InPublicity,
    Repaired,
    Revoked,
    Expired,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::InPublicity => "in_publicity",
            Status::Repaired => "repaired",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

/// Why a record left a department's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    Repaired,
    Revoked,
    PublicityEnded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Published,
    Amended,
    Withdrawn(Withdrawal),
}

/// One thing a subscriber is told about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The entry that caused it; `None` for a publicity period that ended by the calendar.
    pub entry: Option<(Region, u64)>,
    /// Whether the scope admits the entry's own content (a repair of an admitted record may be
    /// of a class the caller may not see: then only the event and the record's facts go out).
    pub entry_visible: bool,
    pub change: Change,
    /// The record the event is about (for a repair: the repaired record) as it stands now.
    pub record: Facts,
    pub status: Status,
}

/// An entry as the core sees it: what the operation says, and the current facts of the records
/// it touches (looked up in the merged view by the driver).
#[derive(Clone, Debug)]
pub enum EntryFacts {
    /// A publication or amendment; `facts` are the version in this entry, `current` the record
    /// as it stands now.
    Upsert { facts: Facts, current: Option<Facts> },
    /// A credit repair record (itself a record, of category `credit_repair`) and the current
    /// facts of the record it repairs, if the view holds it.
    Repair { facts: Facts, target: Option<Facts> },
    /// A revocation of a record (its current facts).
    Revoke { target: Option<Facts> },
    /// Not decodable, or about nothing the view holds: never an event.
    Nothing,
}

/// A filter within a scope: what one subscription reads and admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    filter: Filter,
    scope: Scope,
    /// Categories whose postings are read (the filter's, within the scope).
    categories: Vec<Category>,
}

impl Plan {
    /// Narrows `filter` to `scope`. Naming a category, region or natural person the scope never
    /// grants is refused (that says something about the policy, which is the caller's own, and
    /// nothing about data).
    pub fn new(filter: Filter, scope: Scope) -> Result<Plan, FeedError> {
        if scope.is_empty() {
            return Err(FeedError::NotGranted("any record".to_string()));
        }
        for c in &filter.categories {
            if !scope.may_see_category(*c) {
                return Err(FeedError::NotGranted(format!("category {}", c.code())));
            }
        }
        for r in &filter.regions {
            if !scope.may_see_region(*r) {
                return Err(FeedError::NotGranted(format!("records from region {r}")));
            }
        }
        if filter.subjects.iter().any(|s| s.first() == Some(&b'R')) && !scope.may_see_natural_persons() {
            return Err(FeedError::NotGranted("records about natural persons".to_string()));
        }
        let categories = Category::all()
            .iter()
            .copied()
            .filter(|c| scope.may_see_category(*c) && (filter.categories.is_empty() || filter.categories.contains(c)))
            .collect();
        Ok(Plan {
            filter,
            scope,
            categories,
        })
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Categories to read postings of.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// Subjects to read postings of, if the filter names any (then postings by subject are the
    /// narrowest read).
    pub fn subjects(&self) -> Option<&BTreeSet<Vec<u8>>> {
        (!self.filter.subjects.is_empty()).then_some(&self.filter.subjects)
    }

    /// Whether entries of `origin` are read at all.
    pub fn reads_origin(&self, origin: Region) -> bool {
        (self.filter.regions.is_empty() || self.filter.regions.contains(&origin)) && self.scope.may_see_region(origin)
    }

    /// Of `known` origins, the ones this plan reads.
    pub fn origins(&self, known: impl IntoIterator<Item = Region>) -> Vec<Region> {
        known.into_iter().filter(|o| self.reads_origin(*o)).collect()
    }

    /// Whether a record with these facts is in the filter and the scope (ignoring whether it is
    /// public now).
    pub fn admits(&self, f: &Facts) -> bool {
        self.reads_origin(f.origin)
            && self.categories.contains(&f.category)
            && (self.filter.subjects.is_empty() || self.filter.subjects.contains(&f.subject))
            && (!self.filter.public_only || f.disclosure == DisclosureClass::Public)
            && self.scope.admits(f)
    }

    /// The event an entry makes for this plan, if any.
    pub fn classify(&self, entry: (Region, u64), facts: &EntryFacts, today: Date) -> Option<Event> {
        let event = |change, record: &Facts| Event {
            entry: Some(entry),
            entry_visible: true,
            change,
            status: record.status(today),
            record: record.clone(),
        };
        match facts {
            EntryFacts::Upsert { facts, current } => {
                // What the department is told is judged on this version; the status is today's.
                let now = current.as_ref().unwrap_or(facts);
                if !self.admits(facts) || (self.filter.public_only && !now.public_now(today)) {
                    return None;
                }
                let change = if facts.version <= 1 {
                    Change::Published
                } else {
                    Change::Amended
                };
                let mut shown = facts.clone();
                (shown.repaired, shown.revoked) = (now.repaired, now.revoked);
                Some(event(change, &shown))
            }
            EntryFacts::Repair { facts, target } => {
                if let Some(t) = target.as_ref().filter(|t| self.admits(t)) {
                    let mut e = event(Change::Withdrawn(Withdrawal::Repaired), t);
                    e.entry_visible = self.scope.admits(facts);
                    return Some(e);
                }
                if self.admits(facts) && (!self.filter.public_only || facts.public_now(today)) {
                    let change = if facts.version <= 1 {
                        Change::Published
                    } else {
                        Change::Amended
                    };
                    return Some(event(change, facts));
                }
                None
            }
            EntryFacts::Revoke { target } => target
                .as_ref()
                .filter(|t| self.admits(t))
                .map(|t| event(Change::Withdrawn(Withdrawal::Revoked), t)),
            EntryFacts::Nothing => None,
        }
    }

    /// The withdrawal a passing publicity end date makes, if any: `record` must still end on
    /// `date` (an amendment may have moved it), be neither repaired nor revoked (those were
    /// withdrawals of their own), and have been sent to this subscriber in its latest version
    /// (`upsert_seq` below the cursor).
    pub fn expiry(&self, date: Date, record: &Facts, upsert_seq: u64, cursor: &Cursor) -> Option<Event> {
        if record.publicity_end != Some(date)
            || record.repaired
            || record.revoked
            || upsert_seq >= cursor.next_seq(record.origin)
            || !self.admits(record)
        {
            return None;
        }
        Some(Event {
            entry: None,
            entry_visible: false,
            change: Change::Withdrawn(Withdrawal::PublicityEnded),
            status: Status::Expired,
            record: record.clone(),
        })
    }

    /// A digest of what this plan admits (filter and scope), in canonical form.
    pub fn digest(&self) -> Hash {
        let mut text = String::from("cx-feed-plan-1\n");
        let join = |v: Vec<String>| v.join(",");
        text.push_str(&format!(
            "categories={}\n",
            join(self.categories.iter().map(|c| c.code().to_string()).collect())
        ));
        text.push_str(&format!(
            "regions={}\n",
            join(self.filter.regions.iter().map(|r| r.to_string()).collect())
        ));
        text.push_str(&format!(
            "subjects={}\n",
            join(self.filter.subjects.iter().map(hex::encode).collect())
        ));
        text.push_str(&format!("public_only={}\n", self.filter.public_only));
        text.push_str(&format!("scope={}\n", self.scope.canonical()));
        digest(text.as_bytes())
    }
}

/// The bytes a node signs in a progress mark: the plan's digest, the cursor (every origin the plan
/// reads and the seq it is complete below, the expiry position) and the signing time.
pub fn progress_message(plan_digest: &Hash, cursor: &Cursor, at_unix_seconds: i64) -> Vec<u8> {
    let mut m = b"cx-progress-1\n".to_vec();
    m.extend_from_slice(plan_digest);
    m.extend_from_slice(&cursor.encode());
    m.extend_from_slice(&at_unix_seconds.to_be_bytes());
    m
}

/// One row of a subject profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRow {
    pub record: Facts,
    pub status: Status,
    pub latest_seq: u64,
    pub latest_kind: crate::log::ledger::OpKind,
    /// The latest version's canonical JSON as stored (empty for a record revoked before the
    /// view held any version of it, which cannot happen for a logged record).
    pub record_json: Vec<u8>,
}

/// A subject's merged profile: the rows the scope admits, in (origin, record id) order, so any
/// two nodes holding the same entries answer with the same rows.
pub fn profile(rows: impl IntoIterator<Item = ProfileRow>, scope: &Scope, subject: &[u8]) -> Vec<ProfileRow> {
    let mut out: BTreeMap<(Region, RecordId), ProfileRow> = BTreeMap::new();
    for row in rows {
        if row.record.subject == subject && scope.admits(&row.record) {
            out.insert((row.record.origin, row.record.record_id), row);
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests;
