//! `cx.v1.Operations`: what operators see of sync health. Per peer: connected, last contact,
//! errors and the last one (a faulty link says why). Per origin: local head, the best head a peer
//! reported, lag in entries and in seconds, and *stalled* (behind with no progress for
//! `STALLED_AFTER`) told apart from lagging. Forks with their evidence; certificate expiry.

use super::pb;
use crate::record::Region;
use crate::store::index::Index;
use crate::store::journal::{Frame, JournalReader};
use crate::store::writer::WriterHandle;
use crate::sync::peer::{PeerConfig, PeerStates};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Behind a peer with no local progress for this long: stalled, not merely lagging.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Own repairs whose receipts SyncStatus checks at most (the most recent ones).
const REPAIRS_CHECKED_MAX: usize = 200;
/// Overdue repairs SyncStatus lists at most.
const OVERDUE_LISTED_MAX: usize = 20;

pub struct OperationsService {
    pub region: Region,
    pub deliveries: Arc<crate::delivery::Deliveries>,
    pub index: Index,
    pub journal: JournalReader,
    pub peers: Vec<PeerConfig>,
    pub states: PeerStates,
    /// The feeder choice, when on.
    pub feeders: Option<Arc<dyn crate::sync::peer::FeederView>>,
    /// The TLS material in force: this node's certificate, the connected callers', and alarms.
    pub tls: super::transport::ReloadableTls,
    /// Whether each part of the node is up.
    pub health: Arc<crate::health::Health>,
    /// Per origin: (local seq last seen, when it last moved).
    pub progress: Mutex<HashMap<Region, (u64, Instant)>>,
    /// The writer, for the merged view's lag.
    pub writer: WriterHandle,
    /// The revocation list in force and its alarms.
    pub crl: Arc<crate::pki::CrlStatus>,
    /// The working-day calendar evaluations count with (checked at start).
    pub calendar: Arc<crate::evaluate::Calendar>,
    /// Replicated entries' delays from their origin's append to their arrival here.
    pub arrivals: Arc<crate::evaluate::arrivals::Arrivals>,
    /// This node's publish rejections by reason (the metrics counter).
    pub rejections: prometheus::IntCounterVec,
    /// One evaluation at a time (each reads the period's entries).
    pub evaluations: Arc<tokio::sync::Semaphore>,
}

/// Evaluations running at once at most; another is answered RESOURCE_EXHAUSTED.
pub const EVALUATIONS_AT_ONCE: usize = 1;
/// Days an evaluated period spans at most.
pub const PERIOD_DAYS_MAX: i64 = 731;

impl OperationsService {
    fn status(&self) -> Result<pb::SyncStatusResponse, String> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let peers = self
            .peers
            .iter()
            .map(|p| {
                let s = states.get(&p.address).cloned().unwrap_or_default();
                pb::PeerStatus {
                    address: p.address.clone(),
                    identity: format!("cx://node/{}", p.region),
                    connected: s.connected,
                    last_contact_unix_millis: s.last_contact_unix_millis,
                    errors_total: s.errors_total,
                    last_error: s.last_error,
                    entries_received: s.entries_received,
                    messages_received: s.messages_received,
                    bytes_received: s.bytes_received,
                    duplicates_dropped: s.duplicates_dropped,
                    origins: s
                        .origins
                        .keys()
                        .chain(s.heads.keys())
                        .copied()
                        .collect::<std::collections::BTreeSet<u32>>()
                        .into_iter()
                        .map(|origin| {
                            let c = s.origins.get(&origin).copied().unwrap_or_default();
                            pb::PeerOriginStatus {
                                origin,
                                entries_received: c.entries,
                                bytes_received: c.bytes,
                                duplicates_dropped: c.duplicates,
                                head: s.heads.get(&origin).map_or(0, |h| h.0),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let local: BTreeMap<Region, u64> = self
            .index
            .heads()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(o, h)| (o, h.seq()))
            .collect();
        let mut best: BTreeMap<Region, u64> = BTreeMap::new();
        for s in states.values() {
            for (code, (seq, _)) in &s.heads {
                if let Ok(o) = Region::from_code(*code) {
                    let b = best.entry(o).or_default();
                    *b = (*b).max(*seq);
                }
            }
        }
        let forks = self.index.forks().map_err(|e| e.to_string())?;
        let forked: std::collections::BTreeSet<Region> = forks.iter().map(|(o, _)| *o).collect();
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut origins = Vec::new();
        for o in local
            .keys()
            .chain(best.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
        {
            let here = local.get(&o).copied().unwrap_or(0);
            let there = best.get(&o).copied().unwrap_or(0);
            let entry = progress.entry(o).or_insert((here, now));
            if entry.0 != here {
                *entry = (here, now);
            }
            let behind = there > here;
            let feeder = self.feeders.as_ref().and_then(|f| f.feeder_of(o));
            let since = if behind {
                now.duration_since(entry.1)
            } else {
                Duration::ZERO
            };
            origins.push(pb::OriginStatus {
                origin: o.code(),
                local_head: here,
                best_peer_head: there,
                lag_entries: there.saturating_sub(here),
                lag_seconds: since.as_secs_f64(),
                stalled: behind && since >= STALLED_AFTER,
                forked: forked.contains(&o),
                feeder: feeder.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
                feeder_switches: feeder.map_or(0, |f| f.1),
            });
        }
        let mut fork_list = Vec::new();
        for (o, pos) in forks {
            let second = match self.journal.read_at(pos).map_err(|e| e.to_string())? {
                Frame::ForkEvidence(c) => Some(pb::Checkpoint::from(&c)),
                _ => None,
            };
            let first = match self.index.latest_checkpoint(o).map_err(|e| e.to_string())? {
                Some(cp) => match self.journal.read_at(cp.pos).map_err(|e| e.to_string())? {
                    Frame::Checkpoint(c) => Some(pb::Checkpoint::from(&c)),
                    _ => None,
                },
                None => None,
            };
            fork_list.push(pb::Fork {
                origin: o.code(),
                first,
                second,
            });
        }
        let held = self.tls.held_certificates();
        let certificates = held
            .iter()
            .map(|h| pb::CertificateExpiry {
                identity: h.identity.clone(),
                not_after_unix_seconds: h.not_after,
                role: h.role.to_string(),
            })
            .collect();
        let now_s = now_unix();
        let life = self.tls.life();
        let mut alarms = Vec::new();
        if let Some((part, reason)) = self.health.failure() {
            alarms.push(format!(
                "the node is unwell and stopping: its {} stopped ({reason})",
                part.name()
            ));
        }
        alarms.extend(self.crl.alarms(now_s));
        alarms.extend(life.alarms(&held, now_s));
        let health = self
            .health
            .report()
            .into_iter()
            .map(|(c, up, reason)| pb::ComponentHealth {
                component: c.name().to_string(),
                up,
                reason,
            })
            .collect();
        let lag = self.writer.index_lag();
        let index = pb::IndexStatus {
            lag_entries: lag.entries,
            lag_seconds: lag.seconds,
            lag_entries_max: lag.entries_max,
            indexed_entries: self.writer.view().position().entries,
            undecodable_entries: lag.undecodable,
            failure: self.writer.index_failure().unwrap_or_default(),
        };
        Ok(pb::SyncStatusResponse {
            region: self.region.code(),
            peers,
            origins,
            forks: fork_list,
            certificates,
            index: Some(index),
            // Filled in by the RPC from the merged view's receipts.
            overdue_repairs: Vec::new(),
            repairs_checked: 0,
            alarms,
            revocation_on: self.crl.is_on(),
            crl_next_update_unix_seconds: self.crl.next_update().unwrap_or(0),
            ready: self.health.ready().is_ok(),
            health,
            feed_subscribers: self.deliveries.open_subscriptions(),
            journal_bytes: self.writer.durable_end().borrow().0,
            expiry_warning_seconds: life.warning_seconds(),
        })
    }
}

impl OperationsService {
    /// The whole sync status, as `Operations.SyncStatus` answers it (the admin port shows the same).
    pub async fn full_status(self: &Arc<Self>) -> Result<pb::SyncStatusResponse, Status> {
        let me = self.clone();
        let mut status = tokio::task::spawn_blocking(move || me.status())
            .await
            .map_err(|e| Status::internal(format!("status task: {e}")))?
            .map_err(|e| Status::internal(format!("reading sync status: {e}")))?;
        let (overdue, checked) = self
            .deliveries
            .overdue_repairs(REPAIRS_CHECKED_MAX)
            .await
            .map_err(|e| super::feed::delivery_status(&e))?;
        status.repairs_checked = checked as u64;
        status.overdue_repairs = overdue
            .into_iter()
            .take(OVERDUE_LISTED_MAX)
            .map(|(id, r)| pb::OverdueRepair {
                record_id: id.to_string(),
                deadline: r.deadline.map(|d| d.to_string()).unwrap_or_default(),
                pending: pending_to_pb(&r.pending),
            })
            .collect();
        Ok(status)
    }
}

#[tonic::async_trait]
impl pb::operations_server::Operations for Arc<OperationsService> {
    async fn sync_status(
        &self,
        _request: Request<pb::SyncStatusRequest>,
    ) -> Result<Response<pb::SyncStatusResponse>, Status> {
        self.full_status().await.map(Response::new)
    }

    async fn receipts(&self, request: Request<pb::ReceiptsRequest>) -> Result<Response<pb::ReceiptsResponse>, Status> {
        let req = request.into_inner();
        let origin = match req.origin {
            0 => self.region,
            code => Region::from_code(code).map_err(|e| Status::invalid_argument(format!("origin: {e}")))?,
        };
        let id = crate::record::RecordId::parse(&req.record_id)
            .ok_or_else(|| Status::invalid_argument("record_id: not a hyphenated version-4 uuid"))?;
        let r = self
            .deliveries
            .receipts(origin, id)
            .await
            .map_err(|e| super::feed::delivery_status(&e))?;
        Ok(Response::new(pb::ReceiptsResponse {
            known: r.known,
            repaired: r.repaired,
            deadline: r.deadline.map(|d| d.to_string()).unwrap_or_default(),
            receipts: r
                .receipts
                .iter()
                .map(|x| pb::ReceiptRow {
                    node: x.node.code(),
                    department: x.department.clone(),
                    received_at_unix_seconds: x.received_at_unix,
                    seq: x.seq,
                })
                .collect(),
            pending: pending_to_pb(&r.pending),
            overdue: r.overdue,
        }))
    }

    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<pb::EvaluateResponse>, Status> {
        OperationsService::evaluate(self, request.into_inner())
            .await
            .map(Response::new)
    }
}

impl OperationsService {
    fn rejections_by_reason(&self) -> BTreeMap<String, u64> {
        use prometheus::core::Collector;
        let mut out = BTreeMap::new();
        for family in self.rejections.collect() {
            for m in family.get_metric() {
                let reason = m.get_label().iter().find(|l| l.name() == "reason");
                if let Some(reason) = reason {
                    out.insert(reason.value().to_string(), m.get_counter().get_value() as u64);
                }
            }
        }
        out
    }

    /// `Operations.Evaluate`: the report of a period, with what this node observed, signed.
    pub async fn evaluate(&self, req: pb::EvaluateRequest) -> Result<pb::EvaluateResponse, Status> {
        let date = |field: &str, v: &str| {
            crate::record::parse_iso_date(v)
                .ok_or_else(|| Status::invalid_argument(format!("{field}: {v:?} is not a date (YYYY-MM-DD)")))
        };
        let (from, to) = (date("from", &req.from)?, date("to", &req.to)?);
        if to < from {
            return Err(Status::invalid_argument(format!("to: {to} is before from {from}")));
        }
        if (to - from).whole_days() >= PERIOD_DAYS_MAX {
            return Err(Status::invalid_argument(format!(
                "the period spans more than {PERIOD_DAYS_MAX} days: evaluate it in parts"
            )));
        }
        let region =
            |code: u32| Region::from_code(code).map_err(|e| Status::invalid_argument(format!("region {code}: {e}")));
        let regions = req.regions.iter().map(|c| region(*c)).collect::<Result<Vec<_>, _>>()?;
        let as_of = if req.as_of.is_empty() {
            None
        } else {
            Some(
                req.as_of
                    .iter()
                    .map(|(c, s)| Ok((region(*c)?, *s)))
                    .collect::<Result<BTreeMap<_, _>, Status>>()?,
            )
        };
        let _permit = self.evaluations.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{EVALUATIONS_AT_ONCE} evaluation(s) are running, the most this node runs at once; retry later"
            ))
        })?;
        let (view, journal, calendar) = (
            self.deliveries.view.clone(),
            self.journal.clone(),
            self.calendar.clone(),
        );
        let report = tokio::task::spawn_blocking(move || {
            crate::delivery::evaluation::evaluate_view(&view, &journal, &calendar, from, to, &regions, as_of)
        })
        .await
        .map_err(|e| Status::internal(format!("evaluation task: {e}")))?
        .map_err(|e| match e {
            crate::delivery::evaluation::EvaluationError::Calendar(_)
            | crate::delivery::evaluation::EvaluationError::Behind { .. } => Status::failed_precondition(e.to_string()),
            other => Status::internal(other.to_string()),
        })?;
        let observed = crate::evaluate::Observed {
            node: self.region.code(),
            since_unix_seconds: self.arrivals.since_unix_seconds(),
            sync_delay: self.arrivals.delays(from, to),
            rejections: self.rejections_by_reason(),
        };
        let report_json = report.to_json();
        let observed_json = serde_json::to_vec(&observed).map_err(|e| Status::internal(e.to_string()))?;
        let at = now_unix();
        let signer = self.deliveries.signer.current();
        let (scheme, signature) = signer
            .sign(&crate::evaluate::report::signed_message(
                &report_json,
                &observed_json,
                at,
            ))
            .map_err(|e| Status::internal(format!("signing the report: {e}")))?;
        Ok(pb::EvaluateResponse {
            report_json: report_json.into(),
            observed_json: observed_json.into(),
            signature_scheme: u32::from(scheme),
            signature: signature.into(),
            signer_chain: signer.chain_der().iter().map(|c| c.clone().into()).collect(),
            signed_at_unix_seconds: at,
        })
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn pending_to_pb(pending: &[(Region, String)]) -> Vec<pb::PendingDepartment> {
    pending
        .iter()
        .map(|(node, department)| pb::PendingDepartment {
            node: node.code(),
            department: department.clone(),
        })
        .collect()
}
