//! Delivery of feeds and profiles to departments: the I/O side of `feed`. A subscription is a
//! tokio task (no thread of its own: 500 idle subscribers cost memory, not threads) that reads the
//! merged view's postings and the journal frames they point at in bounded steps on the blocking
//! pool, asks the feed core what each means to the subscriber, and queues the events on a bounded
//! channel; then it waits for the view to move, the day to change or the policy to be reloaded.
//! Every call is written to the audit log before it is answered.
//!
//! Invariants: per origin, events are queued in seq order and each carries the cursor just past
//! it, so a stream cut anywhere resumes exactly; a subscriber whose queue stays full for
//! `Limits::slow_subscriber` is cut off (`End::TooSlow`, naming the cursor of the last event
//! queued) instead of growing memory; the policy is re-read at every wake, so a reload narrows a
//! running subscription at once (and ends it if nothing is granted any more); nothing about a
//! record outside the caller's scope is read into an event, a count or a progress mark.

pub mod evaluation;

use crate::feed::{self, Cursor, EntryFacts, Event, Facts, Filter, Plan, ProfileRow, Scope};
use crate::log::{Entry, Hash};
use crate::pki::{Identity, ReloadingSigner};
use crate::policy::{Rpc, SharedPolicy};
use crate::record::{summarize, RecordId, RecordSummary, Region, SubjectKey, Summary};
use crate::store::audit::{AuditError, AuditLog, AuditRow};
use crate::store::journal::{Frame, JournalReader};
use crate::store::view::{Posting, ReceiptRow, View, ViewError, ViewRecord};
use crate::store::writer::WriterHandle;
use crate::store::OpOutcome;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::{Date, OffsetDateTime};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

/// The feed core's clock: tests pass their own, so publicity periods can end on demand.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Characters of one text field of an audit row at most.
const AUDIT_TEXT_CHARS_MAX: usize = 1024;
/// Days of the calendar applied in one expiry step at most.
const EXPIRY_DAYS_PER_STEP: i64 = 31;
/// Attempts at a profile that no view commit overlaps, before answering UNAVAILABLE.
const PROFILE_ATTEMPTS_MAX: usize = 8;
/// A resume cursor's calendar position may be at most this old (a cursor older than the
/// longest publicity period plus years of absence is not one a department kept).
const CURSOR_AGE_DAYS_MAX: i64 = 20 * 366;
/// A step of at most this many entries behind the view runs on the subscription's own task.
const LIVE_INLINE_ENTRIES_MAX: u64 = 64;
/// An idle subscription re-checks the day and the policy this often.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Events queued towards one subscriber (`feed.events_queued_max`).
    pub events_queued_max: usize,
    /// How long a full queue may stay full before the subscriber is cut off
    /// (`feed.slow_subscriber_ms`).
    pub slow_subscriber: Duration,
    /// Postings read in one step on the blocking pool (`feed.step_entries_max`).
    pub step_entries_max: usize,
    /// Progress marks at most this often while a stream moves (`feed.progress_interval_ms`).
    pub progress_interval: Duration,
    /// Subscriptions open at once (`feed.subscriptions_max`).
    pub subscriptions_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            events_queued_max: 256,
            slow_subscriber: Duration::from_secs(10),
            step_entries_max: 1024,
            progress_interval: Duration::from_secs(1),
            subscriptions_max: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{who} may not call {rpc:?}")]
    Denied { who: Identity, rpc: Rpc },
    #[error(transparent)]
    Feed(#[from] feed::FeedError),
    #[error("{0} subscriptions are open, the most this node serves at once; retry later")]
    TooManySubscriptions(usize),
    #[error("the merged view changed under {0} consecutive attempts at this profile; retry")]
    Busy(usize),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Journal(#[from] crate::store::journal::JournalError),
    #[error("the merged view points at journal position {pos} for {origin}/{seq}, which holds another frame; run `cxnode reindex`")]
    Misplaced { pos: u64, origin: Region, seq: u64 },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("signing a progress mark: {0}")]
    Sign(String),
    #[error("stored: {0}")]
    Store(Arc<crate::store::StoreError>),
    #[error("the receipt was not appended: {0}")]
    ReceiptRefused(String),
    #[error("blocking task failed: {0}")]
    Task(String),
}

/// Something for the subscriber.
#[derive(Clone, Debug)]
pub enum Out {
    Record {
        event: Event,
        entry: Option<Entry>,
        cursor: Cursor,
    },
    Progress(ProgressMark),
}

/// A signed statement: for the plan of `digest`, everything up to `cursor` has been sent.
#[derive(Clone, Debug)]
pub struct ProgressMark {
    pub cursor: Cursor,
    pub digest: Hash,
    pub at_unix_seconds: i64,
    pub signature_scheme: u16,
    pub signature: Vec<u8>,
    pub signer_chain: Vec<Vec<u8>>,
}

/// How a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Caught up (a subscription without follow).
    CaughtUp,
    /// The subscriber went away, or the node is stopping.
    Closed,
    /// The queue stayed full; resume from this cursor.
    TooSlow {
        resume: Cursor,
        waited: Duration,
    },
    /// The policy no longer grants what the subscription reads.
    Denied(String),
    Failed(String),
}

/// A running subscription, as the RPC layer streams it.
pub struct Subscription {
    pub events: mpsc::Receiver<Out>,
    pub end: oneshot::Receiver<End>,
}

/// The caller of a delivery: identity and where from (for the audit log).
#[derive(Clone, Debug)]
pub struct Who {
    pub identity: Identity,
    pub remote: String,
}

/// Everything deliveries read and write.
pub struct Deliveries {
    /// This node's region (receipts are entries of its own log).
    pub node: Region,
    pub writer: WriterHandle,
    pub view: Arc<View>,
    pub journal: JournalReader,
    pub view_changes: watch::Receiver<u64>,
    pub policy: Arc<SharedPolicy>,
    pub clock: Clock,
    pub signer: Arc<ReloadingSigner>,
    pub audit: Arc<AuditLog>,
    pub limits: Limits,
    pub stopping: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
    open: Arc<AtomicU64>,
    tail: Arc<TailCache>,
    steps: Arc<StepCache>,
}

impl Deliveries {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Region,
        writer: WriterHandle,
        journal: JournalReader,
        policy: Arc<SharedPolicy>,
        clock: Clock,
        signer: Arc<ReloadingSigner>,
        audit: Arc<AuditLog>,
        limits: Limits,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Deliveries> {
        Arc::new(Deliveries {
            node,
            view: writer.view(),
            view_changes: writer.view_changes(),
            writer,
            journal,
            policy,
            clock,
            signer,
            audit,
            slots: Arc::new(Semaphore::new(limits.subscriptions_max)),
            limits,
            stopping,
            open: Arc::default(),
            tail: Arc::default(),
            steps: Arc::default(),
        })
    }

    /// Subscriptions running now.
    pub fn open_subscriptions(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    fn today(&self) -> Date {
        (self.clock)().date()
    }

    fn now_unix(&self) -> i64 {
        (self.clock)().unix_timestamp()
    }

    fn scope(&self, who: &Who, rpc: Rpc) -> Result<Scope, DeliveryError> {
        let policy = self.policy.current();
        if !policy.allows(&who.identity, rpc) {
            return Err(DeliveryError::Denied {
                who: who.identity.clone(),
                rpc,
            });
        }
        Ok(policy.scope(&who.identity, rpc))
    }

    async fn audit(&self, mut row: AuditRow) -> Result<(), DeliveryError> {
        // A row stays far below what the log reads back (`AUDIT_TEXT_CHARS_MAX` per text field).
        for text in [&mut row.outcome, &mut row.remote, &mut row.caller] {
            if text.chars().count() > AUDIT_TEXT_CHARS_MAX {
                *text = text.chars().take(AUDIT_TEXT_CHARS_MAX).collect();
            }
        }
        if let Some(f) = &mut row.filter {
            if f.chars().count() > AUDIT_TEXT_CHARS_MAX {
                *f = f.chars().take(AUDIT_TEXT_CHARS_MAX).collect();
            }
        }
        let audit = self.audit.clone();
        tokio::task::spawn_blocking(move || audit.append(&row))
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))??;
        Ok(())
    }

    fn row(&self, who: &Who, call: &str, subjects: &[Vec<u8>], filter: Option<String>) -> AuditRow {
        AuditRow {
            at_unix_seconds: self.now_unix(),
            caller: who.identity.uri(),
            remote: who.remote.clone(),
            call: call.to_string(),
            subjects: subjects.iter().map(|s| masked_index_bytes(s)).collect(),
            subject_keys: subjects.iter().map(|s| self.audit.subject_key(s)).collect(),
            filter,
            records: 0,
            outcome: "ok".to_string(),
        }
    }

    /// Opens a subscription (audited first). A refused one is audited too, with its reason.
    pub async fn subscribe(
        self: &Arc<Self>,
        who: Who,
        filter: Filter,
        resume: Option<Cursor>,
        follow: bool,
    ) -> Result<Subscription, DeliveryError> {
        let subjects: Vec<Vec<u8>> = filter.subjects.iter().cloned().collect();
        let mut row = self.row(&who, "Subscribe", &subjects, Some(describe(&filter, follow)));
        let planned = self
            .scope(&who, Rpc::Subscribe)
            .and_then(|scope| Plan::new(filter.clone(), scope).map_err(DeliveryError::from))
            .and_then(|plan| {
                let permit = self
                    .slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| DeliveryError::TooManySubscriptions(self.limits.subscriptions_max))?;
                Ok((plan, permit))
            });
        let (plan, permit) = match planned {
            Ok(p) => p,
            Err(e) => {
                row.outcome = format!("refused: {e}");
                self.audit(row).await?;
                return Err(e);
            }
        };
        self.audit(row).await?;
        let cursor = resume.unwrap_or_else(|| Cursor::start(self.today()));
        let today = self.today();
        if cursor.expired_through > today || cursor.expired_through < today - time::Duration::days(CURSOR_AGE_DAYS_MAX)
        {
            return Err(feed::FeedError::Cursor(feed::CursorError::Malformed(
                "its calendar position is not a date this node wrote",
            ))
            .into());
        }
        let (tx, events) = mpsc::channel(self.limits.events_queued_max.max(1));
        let (end_tx, end) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            me.open.fetch_add(1, Ordering::Relaxed);
            let mut task = Task {
                d: me.clone(),
                who: who.clone(),
                filter,
                plan,
                cursor,
                follow,
                tx,
                sent: 0,
                _permit: permit,
            };
            let ended = task.run().await;
            me.open.fetch_sub(1, Ordering::Relaxed);
            let mut row = me.row(&who, "Subscribe.end", &subjects, None);
            row.records = task.sent;
            row.outcome = match &ended {
                End::CaughtUp | End::Closed => "ok".to_string(),
                other => format!("{other:?}"),
            };
            if let Err(e) = me.audit(row).await {
                tracing::warn!(error = %e, "audit row of a subscription's end not written");
            }
            let _ = end_tx.send(ended);
        });
        Ok(Subscription { events, end })
    }

    /// One subject's merged profile within the caller's scope, and the version vector it is as
    /// of (audited before it is returned).
    pub async fn profile(
        self: &Arc<Self>,
        who: Who,
        subject: &SubjectKey,
    ) -> Result<(Vec<ProfileRow>, BTreeMap<Region, u64>), DeliveryError> {
        let bytes = subject.index_bytes();
        let mut row = self.row(&who, "Profile", std::slice::from_ref(&bytes), None);
        let answer = match self.scope(&who, Rpc::Profile) {
            Err(e) => Err(e),
            Ok(scope) if scope.is_empty() => Err(feed::FeedError::NotGranted("any record".into()).into()),
            Ok(scope) if matches!(subject, SubjectKey::ResidentId(_)) && !scope.may_see_natural_persons() => {
                Err(feed::FeedError::NotGranted("records about natural persons".into()).into())
            }
            Ok(scope) => {
                let me = self.clone();
                let today = self.today();
                let b = bytes.clone();
                tokio::task::spawn_blocking(move || profile_rows(&me.view, &me.journal, &scope, &b, today))
                    .await
                    .map_err(|e| DeliveryError::Task(e.to_string()))
                    .and_then(|r| r)
            }
        };
        match &answer {
            Ok((rows, _)) => row.records = rows.len() as u64,
            Err(e) => row.outcome = format!("refused: {e}"),
        }
        self.audit(row).await?;
        answer
    }

    /// Writes a department's receipt into this node's own log (audited), so it replicates back to
    /// every origin: it has applied everything below `applied` and stopped showing `stopped`
    /// (record ids, each within the caller's scope; anything else is refused as not visible, the
    /// same way whether or not it exists).
    pub async fn acknowledge(
        self: &Arc<Self>,
        who: Who,
        applied: BTreeMap<Region, u64>,
        stopped: &[String],
    ) -> Result<Acknowledged, DeliveryError> {
        let mut row = self.row(&who, "Acknowledge", &[], None);
        let answer = self.write_receipt(&who, applied, stopped).await;
        match &answer {
            Ok(a) => row.records = a.stopped as u64,
            Err(e) => row.outcome = format!("refused: {e}"),
        }
        self.audit(row).await?;
        answer
    }

    async fn write_receipt(
        &self,
        who: &Who,
        applied: BTreeMap<Region, u64>,
        stopped: &[String],
    ) -> Result<Acknowledged, DeliveryError> {
        let scope = self.scope(who, Rpc::Acknowledge)?;
        if scope.is_empty() {
            return Err(feed::FeedError::NotGranted("any record".into()).into());
        }
        if stopped.len() > crate::record::RECEIPT_RECORDS_MAX {
            return Err(feed::FeedError::TooManyTerms {
                field: "repaired_record_ids_stopped",
                max: crate::record::RECEIPT_RECORDS_MAX,
                got: stopped.len(),
            }
            .into());
        }
        if let Some(o) = applied.keys().find(|o| !scope.may_see_region(**o)) {
            return Err(feed::FeedError::NotGranted(format!("records from region {o}")).into());
        }
        let view = self.view.clone();
        let ids = stopped.to_vec();
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<(Region, RecordId)>, DeliveryError> {
            let origins = view.origin_seqs();
            let mut out = Vec::with_capacity(ids.len());
            for text in &ids {
                // Echo at most an id's length of what was sent (rows of the audit log stay small).
                let not_visible = || feed::FeedError::NotVisible(text.chars().take(36).collect());
                let id = RecordId::parse(text).ok_or_else(not_visible)?;
                let mut hit = None;
                for origin in origins.keys().filter(|o| scope.may_see_region(**o)) {
                    if let Some(r) = view.record(*origin, &id)? {
                        if scope.admits(&facts_of(*origin, id, &r)) {
                            hit = Some((*origin, id));
                            break;
                        }
                    }
                }
                out.push(hit.ok_or_else(not_visible)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))??;
        let receipt_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .hyphenated()
            .to_string();
        let now = (self.clock)();
        let line = serde_json::json!({
            "op": "receipt",
            "receipt_id": receipt_id,
            "department": who.identity.uri(),
            "node": self.node.to_string(),
            "received_at": now
                .replace_nanosecond(0)
                .unwrap_or(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "applied": applied.iter().map(|(o, s)| (o.to_string(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(),
            "stopped": found.iter().map(|(o, id)| serde_json::json!({"origin": o.to_string(), "record_id": id.to_string()})).collect::<Vec<_>>(),
        })
        .to_string();
        let op = crate::record::parse_operation(line.as_bytes())
            .map_err(|r| DeliveryError::ReceiptRefused(format!("{}: {}", r.field, r.detail)))?;
        let (outcomes, checkpoint) = self.writer.submit(vec![op]).await.map_err(DeliveryError::Store)?;
        match outcomes.first() {
            Some(OpOutcome::Appended { seq, hash, .. }) => Ok(Acknowledged {
                receipt_id,
                seq: *seq,
                entry_hash: *hash,
                checkpoint,
                stopped: found.len(),
            }),
            other => Err(DeliveryError::ReceiptRefused(format!("{other:?}"))),
        }
    }

    /// Who has stopped showing `origin`'s record `id`, and which departments that have received
    /// it have not, against the record's repair deadline (for operators).
    pub async fn receipts(&self, origin: Region, id: RecordId) -> Result<ReceiptReport, DeliveryError> {
        let view = self.view.clone();
        let journal = self.journal.clone();
        let today = self.today();
        tokio::task::spawn_blocking(move || receipt_report(&view, &journal, origin, id, today))
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))?
    }

    /// This node's most recent own repairs (at most `checked_max`) that are past their sync
    /// deadline with departments still pending; and how many repairs were checked.
    pub async fn overdue_repairs(
        &self,
        checked_max: usize,
    ) -> Result<(Vec<(RecordId, ReceiptReport)>, usize), DeliveryError> {
        let (view, journal, node, today) = (self.view.clone(), self.journal.clone(), self.node, self.today());
        tokio::task::spawn_blocking(move || {
            let repairs = view.category_entries(crate::record::Category::CreditRepair, node, 1, usize::MAX)?;
            let recent = &repairs[repairs.len().saturating_sub(checked_max)..];
            let positions: Vec<_> = recent.iter().map(|p| p.pos).collect();
            let mut out = Vec::new();
            for frame in journal.read_many(&positions)? {
                let Frame::Entry(e) = frame else { continue };
                let Ok(Summary::Upsert(rec)) = summarize(&e.op_bytes) else {
                    continue;
                };
                // A repair is posted under its own category and its target's: only repairs.
                let Some(target) = rec.repaired_record_id else { continue };
                let report = receipt_report(&view, &journal, node, target, today)?;
                if report.overdue {
                    out.push((target, report));
                }
            }
            Ok((out, recent.len()))
        })
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))?
    }

    fn progress(&self, plan: &Plan, cursor: &Cursor) -> Result<ProgressMark, DeliveryError> {
        let digest = plan.digest();
        let at = self.now_unix();
        let signer = self.signer.current();
        let (scheme, signature) = signer
            .sign(&feed::progress_message(&digest, cursor, at))
            .map_err(|e| DeliveryError::Sign(e.to_string()))?;
        Ok(ProgressMark {
            cursor: cursor.clone(),
            digest,
            at_unix_seconds: at,
            signature_scheme: scheme,
            signature,
            signer_chain: signer.chain_der().to_vec(),
        })
    }
}

/// A receipt written.
#[derive(Clone, Debug)]
pub struct Acknowledged {
    pub receipt_id: String,
    pub seq: u64,
    pub entry_hash: Hash,
    pub checkpoint: Option<crate::log::Checkpoint>,
    pub stopped: usize,
}

/// Receipts of one record, and who is overdue.
#[derive(Clone, Debug, Default)]
pub struct ReceiptReport {
    pub known: bool,
    pub repaired: bool,
    /// The repair's `sync_deadline_date`, if the record was repaired.
    pub deadline: Option<Date>,
    pub receipts: Vec<ReceiptRow>,
    /// Departments (node, identity) that have applied the record's entry but not stopped
    /// showing it, when it was repaired.
    pub pending: Vec<(Region, String)>,
    pub overdue: bool,
}

/// `Deliveries::receipts`, blocking.
pub fn receipt_report(
    view: &View,
    journal: &JournalReader,
    origin: Region,
    id: RecordId,
    today: Date,
) -> Result<ReceiptReport, DeliveryError> {
    let Some(r) = view.record(origin, &id)? else {
        return Ok(ReceiptReport::default());
    };
    let receipts = view.receipts(origin, &id)?;
    let mut report = ReceiptReport {
        known: true,
        repaired: r.repaired(),
        receipts,
        ..ReceiptReport::default()
    };
    if r.repaired() {
        // The repair record carries the deadline (decision date plus 3 working days).
        let posting = view
            .category_entries(crate::record::Category::CreditRepair, origin, r.repaired_by_seq, 1)?
            .into_iter()
            .find(|p| p.seq == r.repaired_by_seq);
        let repair = match posting {
            Some(p) => match journal.read_at(p.pos)? {
                Frame::Entry(e) if e.origin == origin && e.seq == p.seq => Some(e),
                _ => {
                    return Err(DeliveryError::Misplaced {
                        pos: p.pos.0,
                        origin,
                        seq: p.seq,
                    })
                }
            },
            None => None,
        };
        report.deadline = repair
            .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e.op_bytes).ok())
            .and_then(|v| v.get("sync_deadline_date").and_then(|d| d.as_str()).map(str::to_string))
            .and_then(|d| crate::record::parse_iso_date(&d));
        let stopped: BTreeSet<(Region, String)> =
            report.receipts.iter().map(|x| (x.node, x.department.clone())).collect();
        for a in view.applied()? {
            let received = a.next.get(&origin).is_some_and(|next| *next > r.upsert_seq);
            if received && !stopped.contains(&(a.node, a.department.clone())) {
                report.pending.push((a.node, a.department));
            }
        }
        report.overdue = !report.pending.is_empty() && report.deadline.is_some_and(|d| d < today);
    }
    Ok(report)
}

/// The masked form of a subject's index bytes, for the audit log.
fn masked_index_bytes(bytes: &[u8]) -> String {
    feed::mask(&String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()))
}

/// A filter as the audit log shows it (subjects masked, listed apart).
fn describe(f: &Filter, follow: bool) -> String {
    format!(
        "categories=[{}] regions=[{}] subjects={} public_only={} follow={follow}",
        f.categories.iter().map(|c| c.code()).collect::<Vec<_>>().join(","),
        f.regions.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","),
        f.subjects.len(),
        f.public_only
    )
}

struct Task {
    d: Arc<Deliveries>,
    who: Who,
    filter: Filter,
    plan: Plan,
    cursor: Cursor,
    follow: bool,
    tx: mpsc::Sender<Out>,
    sent: u64,
    _permit: OwnedSemaphorePermit,
}

impl From<DeliveryError> for End {
    fn from(e: DeliveryError) -> End {
        tracing::warn!(error = %e, "subscription failed");
        End::Failed(e.to_string())
    }
}

impl Task {
    async fn run(&mut self) -> End {
        match self.serve().await {
            Ok(()) => End::CaughtUp,
            Err(end) => end,
        }
    }

    /// Queues `out`; a queue full for longer than the bound cuts the subscriber off.
    async fn send(&mut self, out: Out, resume: &Cursor) -> Result<(), End> {
        let waited = Instant::now();
        match self.tx.send_timeout(out, self.d.limits.slow_subscriber).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(End::TooSlow {
                resume: resume.clone(),
                waited: waited.elapsed(),
            }),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::Closed),
        }
    }

    fn replan(&mut self) -> Result<(), End> {
        let scope = self
            .d
            .scope(&self.who, Rpc::Subscribe)
            .map_err(|e| End::Denied(e.to_string()))?;
        self.plan = Plan::new(self.filter.clone(), scope).map_err(|e| End::Denied(e.to_string()))?;
        Ok(())
    }

    /// Re-plans if the policy was reloaded since `version` (a new plan is a new digest: the next
    /// progress mark says so, hence `marked` is forgotten).
    fn follow_policy(&mut self, version: &mut u64, marked: &mut Option<Cursor>) -> Result<(), End> {
        let now = self.d.policy.version();
        if now != *version {
            *version = now;
            self.replan()?;
            *marked = None;
        }
        Ok(())
    }

    async fn serve(&mut self) -> Result<(), End> {
        let mut changes = self.d.view_changes.clone();
        let mut stopping = self.d.stopping.clone();
        let mut policy_version = self.d.policy.version();
        let mut marked: Option<Cursor> = None;
        let mut last_mark = Instant::now();
        loop {
            self.follow_policy(&mut policy_version, &mut marked)?;
            changes.borrow_and_update();
            let today = self.d.today();
            let target = self.d.view.origin_seqs();
            let mut behind = self
                .plan
                .origins(target.keys().copied())
                .into_iter()
                .any(|o| self.cursor.next_seq(o) <= target[&o]);
            // Entries, in bounded steps, up to what the view held when this round began.
            while behind {
                // A reload applies at once, also in the middle of a long catch-up.
                self.follow_policy(&mut policy_version, &mut marked)?;
                let step = self.step(&target, today).await?;
                let done = step.done;
                // The cursor before each event: where a cut-off subscriber resumes.
                let mut queued = self.cursor.clone();
                for (event, entry) in &step.events {
                    if let Some((origin, seq)) = event.entry {
                        self.cursor.advance(origin, seq);
                    }
                    let out = Out::Record {
                        event: event.clone(),
                        entry: entry.clone(),
                        cursor: self.cursor.clone(),
                    };
                    self.send(out, &queued).await?;
                    self.sent += 1;
                    queued = self.cursor.clone();
                }
                for (origin, reached) in &step.reached {
                    self.cursor.advance(*origin, *reached);
                }
                behind = !done;
                if done {
                    break;
                }
                if last_mark.elapsed() >= self.d.limits.progress_interval {
                    let mark = self.d.progress(&self.plan, &self.cursor)?;
                    self.send(Out::Progress(mark), &queued).await?;
                    marked = Some(self.cursor.clone());
                    last_mark = Instant::now();
                }
            }
            // The calendar: publicity periods that ended, up to yesterday.
            let mut overdue = today.previous_day().is_some_and(|y| self.cursor.expired_through < y);
            while overdue {
                self.follow_policy(&mut policy_version, &mut marked)?;
                let (events, next, done) = self.expiry_step(today).await?;
                let mut queued = self.cursor.clone();
                for (event, at) in events {
                    self.cursor.expired_through = at.0;
                    self.cursor.expired_within = Some(at.1);
                    let out = Out::Record {
                        event,
                        entry: None,
                        cursor: self.cursor.clone(),
                    };
                    self.send(out, &queued).await?;
                    self.sent += 1;
                    queued = self.cursor.clone();
                }
                self.cursor.expired_through = next.0;
                self.cursor.expired_within = next.1;
                overdue = !done;
            }
            let moved = marked.as_ref() != Some(&self.cursor);
            if moved && (!self.follow || marked.is_none() || last_mark.elapsed() >= self.d.limits.progress_interval) {
                let mark = self.d.progress(&self.plan, &self.cursor)?;
                let resume = self.cursor.clone();
                self.send(Out::Progress(mark), &resume).await?;
                marked = Some(self.cursor.clone());
                last_mark = Instant::now();
            }
            if !self.follow {
                return Ok(());
            }
            // A mark still owed (the stream moved within the interval) goes out at the next
            // wake at the latest.
            let wait = if marked.as_ref() != Some(&self.cursor) {
                self.d.limits.progress_interval.saturating_sub(last_mark.elapsed())
            } else {
                IDLE_RECHECK
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Err(End::Closed) },
                _ = tokio::time::sleep(wait) => {}
                _ = self.tx.closed() => return Err(End::Closed),
                _ = stopping.wait_for(|s| *s) => return Err(End::Closed),
            }
        }
    }

    async fn step(&self, target: &BTreeMap<Region, u64>, today: Date) -> Result<Arc<Step>, End> {
        // A live subscriber a few entries behind reads only what was just made durable (in the
        // page cache and the tail cache) and the view's in-memory level 0: microseconds of work,
        // cheaper on this task than a hand-off to the blocking pool (which, once per step per
        // subscriber, was the largest cost of a wide fan-out). Anything larger goes to the pool.
        let behind: u64 = self
            .plan
            .origins(target.keys().copied())
            .into_iter()
            .map(|o| (target[&o] + 1).saturating_sub(self.cursor.next_seq(o)))
            .sum();
        if behind <= LIVE_INLINE_ENTRIES_MAX {
            let key = StepKey {
                plan: self.plan.clone(),
                cursor: self.cursor.clone(),
                target: target.clone(),
                today,
                budget: self.d.limits.step_entries_max,
                view_entries: self.d.view.position().entries,
            };
            if let Some(step) = self.d.steps.get(&key) {
                return Ok(step);
            }
            let step = Arc::new(read_step(
                &self.d.view,
                &self.d.journal,
                &self.d.tail,
                &key.plan,
                &key.cursor,
                target,
                today,
                key.budget,
            )?);
            self.d.steps.put(key, step.clone());
            return Ok(step);
        }
        let (view, journal, tail) = (self.d.view.clone(), self.d.journal.clone(), self.d.tail.clone());
        let (plan, cursor, target) = (self.plan.clone(), self.cursor.clone(), target.clone());
        let budget = self.d.limits.step_entries_max;
        let step = tokio::task::spawn_blocking(move || {
            read_step(&view, &journal, &tail, &plan, &cursor, &target, today, budget)
        })
        .await
        .map_err(|e| DeliveryError::Task(e.to_string()))??;
        Ok(Arc::new(step))
    }

    /// Events of publicity periods that ended, with each one's expiry position; the position the
    /// step reached; whether the calendar is applied through yesterday.
    #[allow(clippy::type_complexity)]
    async fn expiry_step(
        &self,
        today: Date,
    ) -> Result<
        (
            Vec<(Event, (Date, (Region, RecordId)))>,
            (Date, Option<(Region, RecordId)>),
            bool,
        ),
        End,
    > {
        let view = self.d.view.clone();
        let (plan, cursor) = (self.plan.clone(), self.cursor.clone());
        let budget = self.d.limits.step_entries_max;
        let r = tokio::task::spawn_blocking(move || expiry_step(&view, &plan, &cursor, today, budget))
            .await
            .map_err(|e| DeliveryError::Task(e.to_string()))??;
        Ok(r)
    }
}

/// What one step read.
pub struct Step {
    pub events: Vec<(Event, Option<Entry>)>,
    /// Per origin, the seq through which everything was read.
    pub reached: BTreeMap<Region, u64>,
    /// Every origin is read up to the target.
    pub done: bool,
}

/// Facts of a record as the view holds it now.
pub fn facts_of(origin: Region, record_id: RecordId, r: &ViewRecord) -> Facts {
    Facts {
        origin,
        record_id,
        category: r.category,
        sharing: r.sharing,
        disclosure: r.disclosure,
        subject: r.subject().to_vec(),
        version: r.version,
        repaired: r.repaired(),
        revoked: r.revoked(),
        publicity_end: r.publicity_end,
    }
}

fn facts_of_version(origin: Region, rec: &RecordSummary) -> Facts {
    Facts {
        origin,
        record_id: rec.record_id,
        category: rec.category,
        sharing: rec.sharing_class,
        disclosure: rec.disclosure_class,
        subject: rec.subject.index_bytes(),
        version: rec.record_version,
        repaired: false,
        revoked: false,
        publicity_end: rec.publicity_end_date,
    }
}

/// What an entry is about (from its `summary`; `None` when it does not decode), with the
/// current facts of the records it touches.
pub fn entry_facts(view: &View, origin: Region, summary: Option<&Summary>) -> Result<EntryFacts, ViewError> {
    let current = |id: RecordId| -> Result<Option<Facts>, ViewError> {
        Ok(view.record(origin, &id)?.map(|r| facts_of(origin, id, &r)))
    };
    Ok(match summary {
        None => EntryFacts::Nothing,
        Some(Summary::Upsert(rec)) => {
            let facts = facts_of_version(origin, rec);
            match rec.repaired_record_id {
                Some(target) => EntryFacts::Repair {
                    facts,
                    target: current(target)?,
                },
                None => EntryFacts::Upsert {
                    current: current(rec.record_id)?,
                    facts,
                },
            }
        }
        Some(Summary::Revoke { record_id }) => EntryFacts::Revoke {
            target: current(*record_id)?,
        },
        Some(Summary::Receipt(_)) => EntryFacts::Nothing,
    })
}

/// Entries recently read for some subscription, with their parsed summaries, at most
/// `TAIL_CACHE_ENTRIES_MAX`: subscribers following live read the same new entries, and each
/// reads and parses them once between them instead of once each. An entry never changes, so a
/// cached one is always right; the records' current states are still read per subscriber.
#[derive(Default)]
pub struct TailCache {
    inner: std::sync::Mutex<TailInner>,
}

#[derive(Default)]
struct TailInner {
    entries: std::collections::HashMap<(Region, u64), Read>,
    order: std::collections::VecDeque<(Region, u64)>,
}

/// An entry read once, with its summary (`None`: it does not decode).
type Read = Arc<(Entry, Option<Summary>)>;

/// What a live step is a function of: subscribers with the same plan at the same cursor, view
/// position and day read the same step, so they read it once between them (a wide fan-out of
/// one filter, caught up, is the common case: each of 50 subscribers re-reading the postings,
/// the entries and the records' states was the largest part of what delivering cost).
#[derive(Clone, PartialEq, Eq)]
struct StepKey {
    plan: Plan,
    cursor: Cursor,
    target: BTreeMap<Region, u64>,
    today: Date,
    budget: usize,
    view_entries: u64,
}

/// Live steps read recently, at most `STEP_CACHE_STEPS_MAX` (each of at most
/// `LIVE_INLINE_ENTRIES_MAX` entries, whose bytes the tail cache shares).
#[derive(Default)]
pub struct StepCache {
    steps: std::sync::Mutex<std::collections::VecDeque<(StepKey, Arc<Step>)>>,
}

/// Steps the step cache holds at most.
pub const STEP_CACHE_STEPS_MAX: usize = 64;

impl StepCache {
    fn get(&self, key: &StepKey) -> Option<Arc<Step>> {
        let steps = self.steps.lock().expect("step cache lock");
        steps.iter().rev().find(|(k, _)| k == key).map(|(_, s)| s.clone())
    }

    fn put(&self, key: StepKey, step: Arc<Step>) {
        let mut steps = self.steps.lock().expect("step cache lock");
        if steps.iter().any(|(k, _)| *k == key) {
            return;
        }
        steps.push_back((key, step));
        while steps.len() > STEP_CACHE_STEPS_MAX {
            steps.pop_front();
        }
    }
}

/// Entries the tail cache holds at most (about 1.5 KiB each).
pub const TAIL_CACHE_ENTRIES_MAX: usize = 16_384;

impl TailCache {
    fn get(&self, key: (Region, u64)) -> Option<Read> {
        self.inner.lock().expect("tail cache lock").entries.get(&key).cloned()
    }

    fn put(&self, e: Read) {
        let mut inner = self.inner.lock().expect("tail cache lock");
        let key = (e.0.origin, e.0.seq);
        if inner.entries.insert(key, e).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > TAIL_CACHE_ENTRIES_MAX {
            if let Some(old) = inner.order.pop_front() {
                inner.entries.remove(&old);
            }
        }
    }

    /// The entries at `found` (all of one origin, in seq order): from the cache, the rest read
    /// from the journal in one pass and cached.
    fn entries(&self, journal: &JournalReader, found: &[Posting]) -> Result<Vec<Read>, DeliveryError> {
        let mut out: Vec<Option<Read>> = found.iter().map(|p| self.get((p.origin, p.seq))).collect();
        let missing: Vec<usize> = (0..found.len()).filter(|i| out[*i].is_none()).collect();
        let positions: Vec<_> = missing.iter().map(|i| found[*i].pos).collect();
        for (i, frame) in missing.into_iter().zip(journal.read_many(&positions)?) {
            let p = &found[i];
            let e = match frame {
                Frame::Entry(e) if e.origin == p.origin && e.seq == p.seq => e,
                _ => {
                    return Err(DeliveryError::Misplaced {
                        pos: p.pos.0,
                        origin: p.origin,
                        seq: p.seq,
                    })
                }
            };
            let summary = summarize(&e.op_bytes).ok();
            let cached = Arc::new((e, summary));
            self.put(cached.clone());
            out[i] = Some(cached);
        }
        Ok(out.into_iter().map(|e| e.expect("filled above")).collect())
    }
}

/// Postings of `origin` the plan reads in `[from, to]`, at most about `budget`, and the seq
/// through which they are complete.
fn postings(
    view: &View,
    plan: &Plan,
    origin: Region,
    from: u64,
    to: u64,
    budget: usize,
) -> Result<(Vec<Posting>, u64), ViewError> {
    let mut all: Vec<Posting> = Vec::new();
    // A step covers a window of seqs fixed by the cursor and the budget alone, never by where
    // postings fall: a cut placed at the n-th posting of a category would tell, through the
    // cursor and a signed progress mark, where entries the caller may not see lie. A window of
    // `budget` seqs holds at most `budget` postings per list.
    let to = to.min(from.saturating_add(budget as u64 - 1));
    let complete_through = to;
    match plan.subjects() {
        Some(subjects) => {
            for s in subjects {
                all.extend(
                    view.subject_entries(s)?
                        .into_iter()
                        .filter(|p| p.origin == origin && p.seq >= from && p.seq <= to),
                );
            }
        }
        None => {
            for c in plan.categories() {
                all.extend(view.category_entries_through(*c, origin, from, to, budget)?);
            }
        }
    }
    all.sort();
    all.dedup_by_key(|p| p.seq);
    debug_assert!(all.len() <= budget, "a window of `budget` seqs");
    Ok((all, complete_through))
}

/// One bounded step of a subscription: from the cursor towards `target`, origin by origin.
#[allow(clippy::too_many_arguments)]
pub fn read_step(
    view: &View,
    journal: &JournalReader,
    cache: &TailCache,
    plan: &Plan,
    cursor: &Cursor,
    target: &BTreeMap<Region, u64>,
    today: Date,
    budget: usize,
) -> Result<Step, DeliveryError> {
    let budget = budget.max(1);
    let mut step = Step {
        events: Vec::new(),
        reached: BTreeMap::new(),
        done: true,
    };
    let mut left = budget;
    for origin in plan.origins(target.keys().copied()) {
        let (from, to) = (cursor.next_seq(origin), target[&origin]);
        if from > to {
            continue;
        }
        if left == 0 {
            step.done = false;
            break;
        }
        let (found, through) = postings(view, plan, origin, from, to, left)?;
        left = left.saturating_sub((through + 1 - from) as usize);
        for cached in cache.entries(journal, &found)? {
            let (e, summary) = &*cached;
            let facts = entry_facts(view, origin, summary.as_ref())?;
            if let Some(event) = plan.classify((origin, e.seq), &facts, today) {
                // The entry's own content goes along only when the scope admits it (a repair
                // of an admitted record may itself be of a class the caller may not see).
                let entry = event.entry_visible.then(|| e.clone());
                step.events.push((event, entry));
            }
        }
        step.reached.insert(origin, through);
        if through < to {
            step.done = false;
            break;
        }
    }
    Ok(step)
}

/// One bounded step of the calendar: withdrawals of records whose publicity ended after the
/// cursor's expiry position, up to yesterday (a period includes its last day).
#[allow(clippy::type_complexity)]
pub fn expiry_step(
    view: &View,
    plan: &Plan,
    cursor: &Cursor,
    today: Date,
    budget: usize,
) -> Result<
    (
        Vec<(Event, (Date, (Region, RecordId)))>,
        (Date, Option<(Region, RecordId)>),
        bool,
    ),
    DeliveryError,
> {
    let Some(yesterday) = today.previous_day() else {
        return Ok((Vec::new(), (cursor.expired_through, cursor.expired_within), true));
    };
    if cursor.expired_through >= yesterday {
        return Ok((Vec::new(), (cursor.expired_through, cursor.expired_within), true));
    }
    let from = cursor.expired_through.next_day().unwrap_or(yesterday);
    let to = yesterday.min(from + time::Duration::days(EXPIRY_DAYS_PER_STEP - 1));
    let mut events = Vec::new();
    for (date, origin, id) in view.expiring(from, to)? {
        if date == from && cursor.expired_within.is_some_and(|w| (origin, id) <= w) {
            continue;
        }
        if !plan.reads_origin(origin) {
            continue;
        }
        let Some(r) = view.record(origin, &id)? else { continue };
        if let Some(event) = plan.expiry(date, &facts_of(origin, id, &r), r.upsert_seq, cursor) {
            if events.len() >= budget.max(1) {
                // Cut after the last event sent: its position (the day before its date, and the
                // record within that date) is where the next step starts.
                let (through, last_at): (Date, (Region, RecordId)) = match events.last() {
                    Some((_, at)) => *at,
                    None => unreachable!("budget is at least 1"),
                };
                return Ok((events, (through, Some(last_at)), false));
            }
            events.push((event, (date.previous_day().unwrap_or(date), (origin, id))));
        }
    }
    Ok((events, (to, None), to >= yesterday))
}

/// A subject's profile rows and the version vector (next seq per visible origin) they are as of.
/// Retried while a view commit overlaps the reads, so rows and vector always agree.
pub fn profile_rows(
    view: &View,
    journal: &JournalReader,
    scope: &Scope,
    subject: &[u8],
    today: Date,
) -> Result<(Vec<ProfileRow>, BTreeMap<Region, u64>), DeliveryError> {
    for _ in 0..PROFILE_ATTEMPTS_MAX {
        let before = view.origin_seqs();
        let postings: Vec<Posting> = view
            .subject_entries(subject)?
            .into_iter()
            .filter(|p| scope.may_see_region(p.origin))
            .collect();
        let mut by_pos = postings.clone();
        by_pos.sort_by_key(|p| p.pos);
        let frames = journal.read_many(&by_pos.iter().map(|p| p.pos).collect::<Vec<_>>())?;
        let mut entries = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for (p, frame) in by_pos.iter().zip(frames) {
            match frame {
                Frame::Entry(e) if e.origin == p.origin && e.seq == p.seq => {
                    if let Ok(s) = summarize(&e.op_bytes) {
                        ids.insert((e.origin, s.record_id()));
                    }
                    entries.insert((e.origin, e.seq), e);
                }
                _ => {
                    return Err(DeliveryError::Misplaced {
                        pos: p.pos.0,
                        origin: p.origin,
                        seq: p.seq,
                    })
                }
            }
        }
        let mut rows = Vec::new();
        let mut consistent = true;
        for (origin, id) in ids {
            let Some(r) = view.record(origin, &id)? else { continue };
            if r.subject() != subject {
                // Amended to another subject since: no longer this subject's record.
                continue;
            }
            let Some(latest) = entries.get(&(origin, r.upsert_seq)) else {
                // The view moved past what the postings showed: read again.
                consistent = false;
                break;
            };
            let facts = facts_of(origin, id, &r);
            rows.push(ProfileRow {
                status: facts.status(today),
                record: facts,
                latest_seq: r.latest_seq,
                latest_kind: r.kind,
                record_json: latest.op_bytes.to_vec(),
            });
        }
        let after = view.origin_seqs();
        if consistent && after == before {
            let as_of = before
                .into_iter()
                .filter(|(o, _)| scope.may_see_region(*o))
                .map(|(o, s)| (o, s + 1))
                .collect();
            return Ok((feed::profile(rows, scope, subject), as_of));
        }
    }
    Err(DeliveryError::Busy(PROFILE_ATTEMPTS_MAX))
}

#[cfg(test)]
mod tests;
