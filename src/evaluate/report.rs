//! The evaluation report: every indicator of a period, per origin region, accumulated entry by
//! entry in any order and finished into one value whose JSON is byte-identical on every node that
//! holds the same entries (integers only, maps in key order, lists in a stated order). Pure: the
//! caller reads the merged view and the journal and hands over what it found; the calendar is an
//! input. Node-local observations (sync delays seen here, this node's publish rejections) are a
//! separate `Observed` value, signed with the report but never mixed into it.

use super::calendar::{Calendar, CalendarError};
use super::facts::{self, Operation, Severity, Upsert};
use super::timeliness::{self, RegionTimeliness, Timeliness};
use crate::feed::Facts;
use crate::record::{add_months, Category, RecordId, Region};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::Date;

/// The report format (changes whenever a figure's meaning does).
pub const FORMAT: &str = "cxnode-evaluation/1";
/// Working days a repair has to reach every department (STANDARDS §5.4; the schema's
/// `repair_sync_working_days`), when the repair record carries no `sync_deadline_date`.
pub const REPAIR_SYNC_WORKING_DAYS: u32 = 3;
/// Repairs listed per origin at most, with each receiver's receipt (the counts cover them all).
pub const REPAIRS_LISTED_MAX: usize = 100;
/// Records listed per origin and publicity finding at most.
pub const PUBLICITY_LISTED_MAX: usize = 100;
/// Receivers listed at most in the federation-wide overdue table.
pub const OVERDUE_RECEIVERS_MAX: usize = 1000;
/// The day the 2019 publicity rule set gave way to the later ones (NDRC Order No. 58 in force).
const RULES_2019_UNTIL: Date = time::macros::date!(2023 - 05 - 01);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receiver {
    /// The node that serves the department (whose log holds its receipts).
    pub node: u32,
    pub department: String,
    /// The day (China Standard Time) its receipt was written, if one is in the log.
    pub received_on: Option<String>,
    pub in_time: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairCase {
    pub seq: u64,
    pub repaired_record_id: String,
    pub deadline: String,
    /// "honoured" (every receiver in time), "late" (every receiver, someone after the deadline),
    /// "overdue" (someone missing past the deadline), "pending" (someone missing, deadline not
    /// passed at the period's end), "no_receivers" (no department had received the record).
    pub state: String,
    pub receivers: Vec<Receiver>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSync {
    pub repairs: u64,
    pub with_receivers: u64,
    pub honoured: u64,
    pub late: u64,
    pub overdue: u64,
    pub pending: u64,
    /// `honoured / with_receivers`, in parts per million.
    pub honoured_ppm: u64,
    /// The first repairs in seq order, at most `REPAIRS_LISTED_MAX`.
    pub listed: Vec<RepairCase>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicityFinding {
    pub seq: u64,
    pub record_id: String,
    pub category: String,
    pub decision_date: String,
    pub publicity_end: String,
    /// The rule's allowed publicity in months, `[min, max]`.
    pub allowed_months: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publicity {
    /// Records whose publicity ended in the period (checked the day after their end).
    pub ended: u64,
    /// Of those, records the feed would still show the day after (must be 0).
    pub shown_past_end: u64,
    pub shown_past_end_listed: Vec<String>,
    /// Record versions appended in the period whose publicity period was checked against the rule.
    pub periods_checked: u64,
    pub shorter: u64,
    pub longer: u64,
    pub off_rule_listed: Vec<PublicityFinding>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quality {
    /// New records (version 1) appended in the period.
    pub new_records: u64,
    pub amendments: u64,
    pub revocations: u64,
    pub amendments_per_mille: u64,
    pub revocations_per_mille: u64,
    /// Record versions lacking each recommended field (`facts::RECOMMENDED_FIELDS`).
    pub missing_recommended: BTreeMap<String, u64>,
    /// Entries whose operation this node could not read (counted, never dropped silently).
    pub unreadable: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginReport {
    pub origin: u32,
    pub timeliness: Timely,
    pub repairs: RepairSync,
    pub publicity: Publicity,
    pub quality: Quality,
}

/// The timeliness part of an origin's report (the same figures as `RegionTimeliness`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timely {
    pub records: u64,
    pub on_time: u64,
    pub on_time_ppm: u64,
    pub delay_histogram: Vec<u64>,
    pub late: Vec<LateRow>,
    pub late_unlisted: u64,
    /// Per issuing authority (USCC): records, on time.
    pub authorities: BTreeMap<String, Vec<u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateRow {
    pub seq: u64,
    pub record_id: String,
    pub authority: String,
    pub decision_date: String,
    pub appended_on: String,
    pub delay_working_days: u32,
    pub delay_at_least: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OverdueReceiver {
    pub node: u32,
    pub department: String,
    /// Repairs past their deadline with no receipt from it.
    pub overdue: u64,
    /// Repairs it honoured after the deadline.
    pub late: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub period: Period,
    /// The origins evaluated (empty: all that the vector holds).
    pub regions: Vec<u32>,
    /// The version vector the report is computed as of: entries above it are not counted.
    pub as_of: BTreeMap<String, u64>,
    /// The working-day calendar's years and their official sources.
    pub calendar: BTreeMap<String, String>,
    pub on_time_working_days: u32,
    pub repair_sync_working_days: u32,
    pub delay_buckets: Vec<u32>,
    pub origins: Vec<OriginReport>,
    pub overdue_receivers: Vec<OverdueReceiver>,
}

impl Report {
    /// The canonical bytes: what is signed, compared and written.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises")
    }
}

/// What this node saw itself (not in the shared log, so not in the report proper).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub node: u32,
    /// Since when the node has observed (its start), unix seconds.
    pub since_unix_seconds: i64,
    /// Per origin: entries that arrived here by replication in the period, and the delay from
    /// the origin's append to their arrival here.
    pub sync_delay: Vec<SyncDelay>,
    /// This node's own publish rejections since start, by reason code.
    pub rejections: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDelay {
    pub origin: u32,
    pub arrivals: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
}

/// A repair met in the period, waiting for its receivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRepair {
    pub origin: Region,
    pub seq: u64,
    pub target: RecordId,
    pub deadline: Date,
}

/// One department's receipt for a repaired record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub node: Region,
    pub department: String,
    pub seq: u64,
    pub received_at_unix: i64,
}

#[derive(Default)]
struct OriginAcc {
    repairs: RepairSync,
    publicity: Publicity,
    quality: Quality,
}

/// The report, accumulated.
pub struct Evaluator<'c> {
    calendar: &'c Calendar,
    from: Date,
    to: Date,
    regions: Vec<Region>,
    as_of: BTreeMap<Region, u64>,
    timeliness: Timeliness,
    origins: BTreeMap<u32, OriginAcc>,
    open: Vec<OpenRepair>,
    receivers: BTreeMap<(u32, String), (u64, u64)>,
}

impl<'c> Evaluator<'c> {
    /// A period the calendar does not cover is refused, naming the year; so is an empty one.
    pub fn new(
        calendar: &'c Calendar,
        from: Date,
        to: Date,
        regions: &[Region],
        as_of: BTreeMap<Region, u64>,
    ) -> Result<Evaluator<'c>, CalendarError> {
        if to < from {
            return Err(CalendarError::Invalid {
                file: "period".into(),
                reason: format!("--to {to} is before --from {from}"),
            });
        }
        let mut regions = regions.to_vec();
        regions.sort();
        regions.dedup();
        Ok(Evaluator {
            calendar,
            from,
            to,
            timeliness: Timeliness::new(calendar, from, to)?,
            regions,
            as_of,
            origins: BTreeMap::new(),
            open: Vec::new(),
            receivers: BTreeMap::new(),
        })
    }

    /// The origins to read, each with the seq to read up to.
    pub fn origins(&self) -> Vec<(Region, u64)> {
        self.as_of
            .iter()
            .filter(|(o, _)| self.regions.is_empty() || self.regions.contains(o))
            .map(|(o, s)| (*o, *s))
            .collect()
    }

    /// Whether an entry appended then falls in the period (others need not be read).
    pub fn in_period(&self, appended_at_micros: i64) -> bool {
        facts::day_of(appended_at_micros).is_some_and(|d| (self.from..=self.to).contains(&d))
    }

    fn acc(&mut self, origin: Region) -> &mut OriginAcc {
        self.origins.entry(origin.code()).or_default()
    }

    /// One entry of `origin` (seq at most its `as_of`): `op` is what `facts::read` made of it.
    pub fn entry(
        &mut self,
        origin: Region,
        seq: u64,
        appended_at_micros: i64,
        op: &Result<Operation, String>,
    ) -> Result<(), CalendarError> {
        if seq > self.as_of.get(&origin).copied().unwrap_or(0) {
            return Ok(());
        }
        let Some(day) = facts::day_of(appended_at_micros) else {
            self.acc(origin).quality.unreadable += 1;
            return Ok(());
        };
        if !(self.from..=self.to).contains(&day) {
            return Ok(());
        }
        match op {
            Err(_) => self.acc(origin).quality.unreadable += 1,
            Ok(Operation::Receipt) => {}
            Ok(Operation::Revoke { .. }) => self.acc(origin).quality.revocations += 1,
            Ok(Operation::Upsert(u)) => self.upsert(origin, seq, day, u)?,
        }
        Ok(())
    }

    fn upsert(&mut self, origin: Region, seq: u64, day: Date, u: &Upsert) -> Result<(), CalendarError> {
        if let Some(f) = timeliness::Fact::of(origin, seq, day, u) {
            self.timeliness.add(self.calendar, &f)?;
        }
        let check = publicity_rule(u).and_then(|(min, max)| Some((u.decision_date?, u.publicity_end?, min, max)));
        let q = &mut self.acc(origin).quality;
        if u.version <= 1 {
            q.new_records += 1;
        } else {
            q.amendments += 1;
        }
        for f in &u.missing {
            *q.missing_recommended.entry((*f).to_string()).or_default() += 1;
        }
        if let Some((decided, end, min, max)) = check {
            let p = &mut self.acc(origin).publicity;
            p.periods_checked += 1;
            let shorter = end < add_months(decided, min);
            let longer = end > add_months(decided, max);
            p.shorter += u64::from(shorter);
            p.longer += u64::from(longer);
            if (shorter || longer) && p.off_rule_listed.len() < PUBLICITY_LISTED_MAX {
                p.off_rule_listed.push(PublicityFinding {
                    seq,
                    record_id: u.record_id.to_string(),
                    category: u.category.code().to_string(),
                    decision_date: decided.to_string(),
                    publicity_end: end.to_string(),
                    allowed_months: vec![min, max],
                });
            }
        }
        if let Some(r) = &u.repair {
            let deadline = match (r.deadline, r.decided) {
                (Some(d), _) => d,
                (None, Some(decided)) => self.calendar.add_working_days(decided, REPAIR_SYNC_WORKING_DAYS)?,
                (None, None) => day,
            };
            self.open.push(OpenRepair {
                origin,
                seq,
                target: r.target,
                deadline,
            });
        }
        Ok(())
    }

    /// A record whose publicity ended on `end` (in the period), as the feed sees it now.
    pub fn ended(&mut self, origin: Region, end: Date, facts: &Facts) {
        if !(self.from..=self.to).contains(&end) || facts.publicity_end != Some(end) {
            return;
        }
        let Some(next) = end.next_day() else { return };
        let p = &mut self.acc(origin).publicity;
        p.ended += 1;
        if facts.public_now(next) {
            p.shown_past_end += 1;
            if p.shown_past_end_listed.len() < PUBLICITY_LISTED_MAX {
                p.shown_past_end_listed.push(facts.record_id.to_string());
            }
        }
    }

    /// The repairs met so far, for the caller to look up their receivers.
    pub fn open_repairs(&self) -> &[OpenRepair] {
        &self.open
    }

    /// Settles the repair `open_repairs()[i]`: `expected` are the (node, department) pairs that
    /// had received the record; `receipts` every receipt for it (those above `as_of` are not
    /// counted).
    pub fn settle(&mut self, i: usize, expected: &[(Region, String)], receipts: &[Receipt]) {
        let r = self.open[i].clone();
        let mut first: BTreeMap<(Region, String), Date> = BTreeMap::new();
        for x in receipts {
            if x.seq > self.as_of.get(&x.node).copied().unwrap_or(0) {
                continue;
            }
            let Some(day) = facts::day_of(x.received_at_unix.saturating_mul(1_000_000)) else {
                continue;
            };
            let e = first.entry((x.node, x.department.clone())).or_insert(day);
            *e = (*e).min(day);
        }
        let mut expected = expected.to_vec();
        expected.sort();
        expected.dedup();
        let mut receivers = Vec::new();
        let (mut missing, mut late) = (false, false);
        for (node, dept) in &expected {
            let got = first.get(&(*node, dept.clone())).copied();
            let in_time = got.is_some_and(|d| d <= r.deadline);
            missing |= got.is_none();
            late |= got.is_some() && !in_time;
            let key = (node.code(), dept.clone());
            if got.is_none() && r.deadline < self.to {
                self.receivers.entry(key).or_default().0 += 1;
            } else if got.is_some() && !in_time {
                self.receivers.entry(key).or_default().1 += 1;
            }
            receivers.push(Receiver {
                node: node.code(),
                department: dept.clone(),
                received_on: got.map(|d| d.to_string()),
                in_time,
            });
        }
        let state = if expected.is_empty() {
            "no_receivers"
        } else if missing && r.deadline < self.to {
            "overdue"
        } else if missing {
            "pending"
        } else if late {
            "late"
        } else {
            "honoured"
        };
        let s = &mut self.acc(r.origin).repairs;
        s.repairs += 1;
        if !expected.is_empty() {
            s.with_receivers += 1;
        }
        match state {
            "honoured" => s.honoured += 1,
            "late" => s.late += 1,
            "overdue" => s.overdue += 1,
            "pending" => s.pending += 1,
            _ => {}
        }
        let case = RepairCase {
            seq: r.seq,
            repaired_record_id: r.target.to_string(),
            deadline: r.deadline.to_string(),
            state: state.to_string(),
            receivers,
        };
        let at = s.listed.partition_point(|c| c.seq < case.seq);
        s.listed.insert(at, case);
        s.listed.truncate(REPAIRS_LISTED_MAX);
    }

    /// The report.
    pub fn finish(self) -> Report {
        let mut timely = self.timeliness.finish();
        let mut codes: Vec<u32> = self.origins.keys().chain(timely.keys()).copied().collect();
        codes.sort();
        codes.dedup();
        let mut origins_acc = self.origins;
        let origins = codes
            .into_iter()
            .map(|code| {
                let mut acc = origins_acc.remove(&code).unwrap_or_default();
                let q = &mut acc.quality;
                q.amendments_per_mille = (q.amendments * 1000).checked_div(q.new_records).unwrap_or(0);
                q.revocations_per_mille = (q.revocations * 1000).checked_div(q.new_records).unwrap_or(0);
                acc.repairs.honoured_ppm = (acc.repairs.honoured * 1_000_000)
                    .checked_div(acc.repairs.with_receivers)
                    .unwrap_or(0);
                OriginReport {
                    origin: code,
                    timeliness: timely.remove(&code).map(timely_of).unwrap_or_else(|| Timely {
                        delay_histogram: vec![0; timeliness::DELAY_BUCKETS.len() + 1],
                        ..Timely::default()
                    }),
                    repairs: acc.repairs,
                    publicity: acc.publicity,
                    quality: acc.quality,
                }
            })
            .collect();
        let mut overdue_receivers: Vec<OverdueReceiver> = self
            .receivers
            .into_iter()
            .map(|((node, department), (overdue, late))| OverdueReceiver {
                node,
                department,
                overdue,
                late,
            })
            .collect();
        overdue_receivers.sort_by(|a, b| {
            (b.overdue, b.late)
                .cmp(&(a.overdue, a.late))
                .then((a.node, &a.department).cmp(&(b.node, &b.department)))
        });
        overdue_receivers.truncate(OVERDUE_RECEIVERS_MAX);
        Report {
            format: FORMAT.to_string(),
            period: Period {
                from: self.from.to_string(),
                to: self.to.to_string(),
            },
            regions: self.regions.iter().map(|r| r.code()).collect(),
            as_of: self
                .as_of
                .iter()
                .filter(|(o, _)| self.regions.is_empty() || self.regions.contains(o))
                .map(|(o, s)| (o.code().to_string(), *s))
                .collect(),
            calendar: self
                .calendar
                .years()
                .into_iter()
                .map(|y| (y.to_string(), self.calendar.source(y).unwrap_or_default().to_string()))
                .collect(),
            on_time_working_days: timeliness::ON_TIME_WORKING_DAYS,
            repair_sync_working_days: REPAIR_SYNC_WORKING_DAYS,
            delay_buckets: timeliness::DELAY_BUCKETS.to_vec(),
            origins,
            overdue_receivers,
        }
    }
}

fn timely_of(r: RegionTimeliness) -> Timely {
    Timely {
        records: r.total.records,
        on_time: r.total.on_time,
        on_time_ppm: r.on_time_ppm,
        delay_histogram: r.total.delay_histogram,
        late: r
            .total
            .late
            .into_iter()
            .map(|l| LateRow {
                authority: l.authority,
                seq: l.seq,
                record_id: l.record_id,
                decision_date: l.decision_date,
                appended_on: l.appended_on,
                delay_working_days: l.delay_working_days,
                delay_at_least: l.delay_at_least,
            })
            .collect(),
        late_unlisted: r.total.late_unlisted,
        authorities: r
            .authorities
            .into_iter()
            .map(|(a, t)| (a, vec![t.records, t.on_time]))
            .collect(),
    }
}

/// The publicity rule of a record version, `[min, max]` months from its decision, by the rule set
/// of its decision date (STANDARDS §5.1: the 2019 set before 2023-05-01, the 2025 set after; a
/// minor penalty published at all may be shown at most 3 months); None where no rule applies.
pub fn publicity_rule(u: &Upsert) -> Option<(u32, u32)> {
    let old = u.decision_date? < RULES_2019_UNTIL;
    match (u.category, u.severity) {
        (Category::AdministrativePenalty, Some(Severity::Minor)) if old => Some((3, 12)),
        (Category::AdministrativePenalty, Some(Severity::Minor)) => Some((0, 3)),
        (Category::AdministrativePenalty, Some(Severity::General)) => Some((3, 12)),
        (Category::AdministrativePenalty, Some(Severity::Serious)) if old => Some((6, 36)),
        (Category::AdministrativePenalty, Some(Severity::Serious)) => Some((12, 36)),
        (Category::DishonestList, _) => Some((12, 36)),
        _ => None,
    }
}

/// What the node signs: a domain tag, the digests of the report's and the observations' bytes,
/// and the signing time.
pub fn signed_message(report_json: &[u8], observed_json: &[u8], at_unix_seconds: i64) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut m = b"cxnode evaluation report v1\0".to_vec();
    m.extend_from_slice(&Sha256::digest(report_json));
    m.extend_from_slice(&Sha256::digest(observed_json));
    m.extend_from_slice(&at_unix_seconds.to_be_bytes());
    m
}

/// Where two reports differ, as JSON paths with both values (at most `limit`).
pub fn differences(a: &serde_json::Value, b: &serde_json::Value, limit: usize) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>, limit: usize) {
        use serde_json::Value::{Array, Object};
        if out.len() >= limit || a == b {
            return;
        }
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let n = serde_json::Value::Null;
                    walk(
                        &format!("{path}.{k}"),
                        x.get(k).unwrap_or(&n),
                        y.get(k).unwrap_or(&n),
                        out,
                        limit,
                    );
                }
            }
            (Array(x), Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), p, q, out, limit);
                }
            }
            _ => out.push(format!("{path}: report says {a}, recomputed {b}")),
        }
    }
    let mut out = Vec::new();
    walk("$", a, b, &mut out, limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn region(code: &str) -> Region {
        Region::parse(code).expect("region")
    }

    fn id(n: u8) -> RecordId {
        let mut b = [0u8; 16];
        b[15] = n;
        b[6] = 0x40;
        b[8] = 0x80;
        RecordId(b)
    }

    fn upsert(
        category: Category,
        version: u32,
        decided: Date,
        end: Option<Date>,
        severity: Option<Severity>,
    ) -> Operation {
        Operation::Upsert(Box::new(Upsert {
            record_id: id(version as u8),
            category,
            version,
            public: true,
            decision_date: Some(decided),
            severity,
            publicity_end: end,
            authority: Some("11330000002482000X".into()),
            repair: None,
            missing: vec!["penalty_valid_until"],
        }))
    }

    fn micros(d: Date) -> i64 {
        d.with_hms(10, 0, 0)
            .expect("time")
            .assume_offset(facts::CHINA_STANDARD_TIME)
            .unix_timestamp()
            * 1_000_000
    }

    #[test]
    fn entries_above_the_vector_or_outside_the_period_are_not_counted_and_the_report_is_canonical() {
        let cal = crate::evaluate::built_in_calendar().expect("calendar");
        let zj = region("330000");
        let as_of = BTreeMap::from([(zj, 3)]);
        let mut ev = Evaluator::new(&cal, date!(2025 - 06 - 01), date!(2025 - 06 - 30), &[], as_of).expect("period");
        let general = Some(Severity::General);
        // seq 1: a penalty with 12 months of publicity (within the rule); seq 2: an amendment
        // with 13 months (longer); seq 3: an unreadable entry; seq 4: above the vector.
        let d = date!(2025 - 06 - 03);
        ev.entry(
            zj,
            1,
            micros(d),
            &Ok(upsert(
                Category::AdministrativePenalty,
                1,
                d,
                Some(add_months(d, 12)),
                general,
            )),
        )
        .expect("counted");
        ev.entry(
            zj,
            2,
            micros(d),
            &Ok(upsert(
                Category::AdministrativePenalty,
                2,
                d,
                Some(add_months(d, 13)),
                general,
            )),
        )
        .expect("counted");
        ev.entry(zj, 3, micros(d), &Err("not JSON".into())).expect("counted");
        ev.entry(
            zj,
            4,
            micros(d),
            &Ok(upsert(Category::AdministrativePenalty, 1, d, None, general)),
        )
        .expect("not counted");
        // Outside the period: not counted.
        ev.entry(
            zj,
            1,
            micros(date!(2025 - 07 - 01)),
            &Ok(upsert(Category::AdministrativeLicence, 1, d, None, None)),
        )
        .expect("not counted");
        let r = ev.finish();
        let o = &r.origins[0];
        assert_eq!(
            (o.quality.new_records, o.quality.amendments, o.quality.unreadable),
            (1, 1, 1)
        );
        assert_eq!(o.quality.amendments_per_mille, 1000);
        assert_eq!(o.quality.missing_recommended.get("penalty_valid_until"), Some(&2));
        assert_eq!(
            (o.publicity.periods_checked, o.publicity.shorter, o.publicity.longer),
            (2, 0, 1)
        );
        assert_eq!(o.timeliness.records, 2);
        assert_eq!(r.as_of.get("330000"), Some(&3));
        // The bytes: integers and ordered maps only, so the same input gives the same bytes.
        let again: Report = serde_json::from_slice(&r.to_json()).expect("parses");
        assert_eq!(again.to_json(), r.to_json());
    }

    #[test]
    fn publicity_rules_follow_the_rule_set_of_the_decision_date() {
        let u = |category, severity, decided| Upsert {
            record_id: id(1),
            category,
            version: 1,
            public: true,
            decision_date: Some(decided),
            severity,
            publicity_end: None,
            authority: None,
            repair: None,
            missing: vec![],
        };
        let p = Category::AdministrativePenalty;
        assert_eq!(
            publicity_rule(&u(p, Some(Severity::Serious), date!(2022 - 01 - 01))),
            Some((6, 36))
        );
        assert_eq!(
            publicity_rule(&u(p, Some(Severity::Serious), date!(2025 - 01 - 01))),
            Some((12, 36))
        );
        assert_eq!(
            publicity_rule(&u(p, Some(Severity::Minor), date!(2025 - 01 - 01))),
            Some((0, 3))
        );
        assert_eq!(
            publicity_rule(&u(p, Some(Severity::Minor), date!(2022 - 01 - 01))),
            Some((3, 12))
        );
        assert_eq!(
            publicity_rule(&u(Category::DishonestList, None, date!(2025 - 01 - 01))),
            Some((12, 36))
        );
        assert_eq!(publicity_rule(&u(Category::RedList, None, date!(2025 - 01 - 01))), None);
    }

    #[test]
    fn a_repair_is_honoured_late_overdue_or_pending_by_its_receivers_and_deadline() {
        let cal = crate::evaluate::built_in_calendar().expect("calendar");
        let (zj, js) = (region("330000"), region("320000"));
        let to = date!(2025 - 06 - 30);
        let mut ev = Evaluator::new(
            &cal,
            date!(2025 - 06 - 01),
            to,
            &[],
            BTreeMap::from([(zj, 10), (js, 10)]),
        )
        .expect("period");
        for (seq, deadline) in [
            (1u64, date!(2025 - 06 - 10)),
            (2, date!(2025 - 06 - 10)),
            (3, date!(2025 - 07 - 04)),
            (4, date!(2025 - 06 - 10)),
        ] {
            let mut op = upsert(Category::CreditRepair, 1, date!(2025 - 06 - 05), None, None);
            if let Operation::Upsert(u) = &mut op {
                u.record_id = id(100 + seq as u8);
                u.repair = Some(facts::Repair {
                    target: id(seq as u8),
                    decided: Some(date!(2025 - 06 - 05)),
                    deadline: Some(deadline),
                });
            }
            ev.entry(zj, seq, micros(date!(2025 - 06 - 05)), &Ok(op))
                .expect("counted");
        }
        let dept = |n: &str| (js, format!("cx://department/320000/{n}"));
        let receipt = |n: &str, day: Date, seq: u64| Receipt {
            node: js,
            department: format!("cx://department/320000/{n}"),
            seq,
            received_at_unix: micros(day) / 1_000_000,
        };
        let expected = [dept("amr"), dept("tax")];
        assert_eq!(ev.open_repairs().len(), 4);
        // 1: both in time. 2: one after the deadline. 3: one missing, deadline after the period.
        // 4: one missing past the deadline, and the other's receipt is above the vector.
        ev.settle(
            0,
            &expected,
            &[
                receipt("amr", date!(2025 - 06 - 09), 1),
                receipt("tax", date!(2025 - 06 - 10), 2),
            ],
        );
        ev.settle(
            1,
            &expected,
            &[
                receipt("amr", date!(2025 - 06 - 09), 3),
                receipt("tax", date!(2025 - 06 - 11), 4),
            ],
        );
        ev.settle(2, &expected, &[receipt("amr", date!(2025 - 06 - 09), 5)]);
        ev.settle(
            3,
            &expected,
            &[
                receipt("amr", date!(2025 - 06 - 09), 6),
                receipt("tax", date!(2025 - 06 - 09), 11),
            ],
        );
        let r = ev.finish();
        let s = &r.origins[0].repairs;
        let states: Vec<&str> = s.listed.iter().map(|c| c.state.as_str()).collect();
        assert_eq!(states, vec!["honoured", "late", "pending", "overdue"]);
        assert_eq!(
            (s.repairs, s.with_receivers, s.honoured, s.late, s.pending, s.overdue),
            (4, 4, 1, 1, 1, 1)
        );
        assert_eq!(s.honoured_ppm, 250_000);
        let tax: Vec<(u64, u64)> = r
            .overdue_receivers
            .iter()
            .filter(|x| x.department.ends_with("tax"))
            .map(|x| (x.overdue, x.late))
            .collect();
        assert_eq!(tax, vec![(1, 1)]);
    }

    #[test]
    fn differences_name_the_changed_figure() {
        let a = serde_json::json!({"origins": [{"origin": 330000, "on_time": 3}]});
        let b = serde_json::json!({"origins": [{"origin": 330000, "on_time": 4}]});
        assert_eq!(
            differences(&a, &b, 10),
            vec!["$.origins[0].on_time: report says 3, recomputed 4"]
        );
        assert!(differences(&a, &a, 10).is_empty());
    }
}
