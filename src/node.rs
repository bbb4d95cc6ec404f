//! Wiring of one node: load and check everything (config, TLS identity, policy, store recovery)
//! before a port is bound, then serve every gRPC service over mutual TLS until shutdown, then
//! drain: stop accepting, finish in-flight groups, close the store. The server takes its listener
//! and a shutdown future, so tests pass their own.

use crate::config::Config;
use crate::delivery::{system_clock, Clock, Deliveries};
use crate::health::{Component, Health};
use crate::link::{run_peer, Link};
use crate::pki::{self, Identity, NodeSigner, ReloadingSigner};
use crate::policy::{Policy, PolicyError, SharedPolicy};
use crate::rpc::feed::FeedService;
use crate::rpc::operations::OperationsService;
use crate::rpc::pb;
use crate::rpc::publisher::PublisherService;
use crate::rpc::replication::{ReplicationService, SyncLimits};
use crate::rpc::transport::{self, ReloadableTls, TransportStats};
use crate::store::audit::AuditLog;
use crate::store::journal::JournalReader;
use crate::store::writer::{self, WriterLimits};
use crate::store::{Store, StoreError};
use crate::sync::peer::PeerStates;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The CA certificate is copied here so `cxnode verify` can check signatures without the config.
pub const FEDERATION_CA_FILE: &str = "federation-ca.pem";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node certificate {cert} has identity {found}, but node.region is {region}: a node must hold cx://node/{region} (issue one with `cxnode certs issue --kind node --region {region}`)")]
    WrongIdentity {
        cert: String,
        found: Identity,
        region: crate::record::Region,
    },
    #[error("cannot copy the federation CA into the data directory: {0}")]
    CopyCa(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Serve(String),
    #[error("the store writer failed: {0}")]
    Writer(Arc<StoreError>),
    #[error(transparent)]
    Audit(#[from] crate::store::audit::AuditError),
    #[error("this node's own certificate {cert}: {reason}; issue it from a CA the policy's [[issuer]] sections allow, or fix the policy")]
    OwnIssuer { cert: String, reason: String },
    #[error("the working-day calendar: {0}")]
    Calendar(#[from] crate::evaluate::CalendarError),
    #[error("the node stopped because its {part} stopped: {reason} (restart it: the journal is recovered at start)")]
    Unwell { part: &'static str, reason: String },
}

/// Everything a node needs, loaded and checked, before any port is bound.
pub struct Prepared {
    pub config: Config,
    tls: ReloadableTls,
    signer: Arc<ReloadingSigner>,
    health: Arc<Health>,
    policy: Arc<SharedPolicy>,
    store: Store,
    audit: Arc<AuditLog>,
    feed_clock: Clock,
    calendar: Arc<crate::evaluate::Calendar>,
}

impl Prepared {
    /// Replaces the feed core's clock (tests make publicity periods end on demand).
    pub fn with_feed_clock(mut self, clock: Clock) -> Prepared {
        self.feed_clock = clock;
        self
    }
}

/// Loads the TLS identity, policy and store. Blocking (store recovery reads the journal).
/// The working-day calendar, checked at start: a malformed file stops the node; a current year
/// it does not cover is a warning (evaluations of that year will be refused, naming it).
pub fn load_calendar(dir: Option<&std::path::Path>) -> Result<crate::evaluate::Calendar, NodeError> {
    let calendar = match dir {
        Some(dir) => crate::evaluate::Calendar::load_dir(dir)?,
        None => crate::evaluate::built_in_calendar()?,
    };
    let year = time::OffsetDateTime::now_utc().year();
    if !calendar.years().contains(&year) {
        tracing::warn!(
            year,
            covered = ?calendar.years(),
            "the working-day calendar does not cover this year: evaluations of it are refused until config/calendar-{year}.toml is added"
        );
    }
    Ok(calendar)
}

pub fn prepare(config: Config) -> Result<Prepared, NodeError> {
    let calendar = Arc::new(load_calendar(config.calendar_dir.as_deref())?);
    let signer = NodeSigner::load(&config.tls)?;
    let expected = Identity::Node(config.region);
    if *signer.identity() != expected {
        return Err(NodeError::WrongIdentity {
            cert: config.tls.cert.display().to_string(),
            found: signer.identity().clone(),
            region: config.region,
        });
    }
    let life = Arc::new(pki::CertLife::new(config.expiry_warning_days));
    let tls = ReloadableTls::load(config.tls.clone(), life)?;
    let health = Arc::new(Health::default());
    health.up(Component::Tls);
    if config.tls.crl.is_none() {
        tracing::warn!(
            "tls.crl is not set: revocation is off (a revoked certificate is still accepted at the handshake and as a checkpoint signer); set tls.crl to the federation CA's CRL"
        );
    }
    let policy = match &config.policy {
        Some(path) => SharedPolicy::load(config.region, path)?,
        None => SharedPolicy::fixed(Policy::builtin(config.region)),
    };
    // Peers judge our checkpoints by the same issuer bindings: a node whose own CA may not issue
    // it would be refused by every peer, so it does not start.
    let issuers = policy.current().issuers();
    if !issuers.is_empty() {
        let anchors = pki::Anchors::load(&config.tls.ca)?;
        let chain = pki::load_cert_chain(&config.tls.cert)?;
        let judged = anchors
            .issuer_of_client(&chain, rustls::pki_types::UnixTime::now())
            .map_err(|e| e.to_string())
            .and_then(|ca| issuers.check(&expected, &ca));
        if let Err(reason) = judged {
            return Err(NodeError::OwnIssuer {
                cert: config.tls.cert.display().to_string(),
                reason,
            });
        }
    }
    // The data directory holds personal data: private to the node's user, whatever the umask.
    crate::store::fs::private_files_from_now_on();
    match crate::store::fs::make_private(&config.store.dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            data_dir = %config.store.dir.display(),
            tightened = n,
            "data directory entries were readable by others; made them private (directories 0700, files 0600)"
        ),
        Err(source) => {
            return Err(NodeError::Store(StoreError::Io {
                path: config.store.dir.clone(),
                source,
            }))
        }
    }
    let (store, report) = Store::open(&config.store)?;
    if let Some(at) = report.tail.truncated_at {
        tracing::warn!(
            position = at.0,
            bytes = report.tail.truncated_bytes,
            "journal ended in a torn frame (a crash mid-write); truncated it, nothing acknowledged was lost"
        );
    }
    tracing::info!(
        data_dir = %config.store.dir.display(),
        journal_bytes = report.journal_end,
        reindexed_frames = report.replayed_frames,
        "store opened"
    );
    // Read and written, not copied: a copy would take the source's (looser) permissions.
    std::fs::read(&config.tls.ca)
        .and_then(|pem| std::fs::write(config.store.dir.join(FEDERATION_CA_FILE), pem))
        .map_err(NodeError::CopyCa)?;
    let audit = Arc::new(AuditLog::open(&config.store.dir.join(AUDIT_DIR))?);
    health.up(Component::Store);
    Ok(Prepared {
        config,
        tls,
        health,
        signer: Arc::new(ReloadingSigner::new(signer)),
        policy,
        store,
        audit,
        feed_clock: system_clock(),
        calendar,
    })
}

/// After the stop signal, open connections get this long to finish before they are closed (the
/// store is closed after; orchestrators wait 60 s before they kill).
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// A unary call (and the opening of a stream) must be answered within this.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// An HTTP/2 ping goes out on a connection quiet for this long...
pub const HTTP2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
/// ...and the connection is closed when it is not answered within this.
pub const HTTP2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// The largest request header block accepted.
pub const HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
/// How often the node checks that its writer, indexer and sync driver are alive.
pub const HEALTH_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// The gRPC services, by the names health checks ask for.
const PUBLISHER: &str = "cx.v1.Publisher";
const REPLICATION: &str = "cx.v1.Replication";
const FEED: &str = "cx.v1.Feed";
const OPERATIONS: &str = "cx.v1.Operations";

/// The services a dead part takes down ("" is the whole node; Operations stays up, so operators
/// can still ask why).
fn affected(part: Component) -> &'static [&'static str] {
    match part {
        // Publishing, replicated batches and receipts are all writes.
        Component::Writer => &["", PUBLISHER, REPLICATION, FEED],
        // Past the lag bound, writes wait for the indexer; feeds and profiles read its view.
        Component::Indexer => &["", PUBLISHER, REPLICATION, FEED],
        Component::Sync => &["", REPLICATION],
        Component::Store | Component::Tls => &["", PUBLISHER, REPLICATION, FEED],
    }
}

/// The audit log's directory inside the data directory.
pub const AUDIT_DIR: &str = "audit";

/// Serves until `shutdown` completes, then drains and closes the store.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let Prepared {
        config,
        tls,
        signer,
        health,
        policy,
        mut store,
        audit,
        feed_clock,
        calendar,
    } = prepared;
    let arrivals = Arc::new(crate::evaluate::arrivals::Arrivals::new(
        time::OffsetDateTime::now_utc().unix_timestamp(),
    ));
    let metrics = crate::rpc::metrics::Metrics::new();
    store.observe_fsync(metrics.fsync.clone());
    let admin_listener = match config.admin_listen {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(admin = %addr, "admin.listen is not a loopback address: metrics and the status page are served without authentication to whoever reaches it");
            }
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?;
            tracing::info!(region = %config.region, admin = %addr, "admin port serving /metrics, /livez, /readyz and the status page");
            Some(listener)
        }
        None => None,
    };
    let index = store.index().clone();
    let (stopping_tx, stopping) = watch::channel(false);
    let stopping_watch = stopping.clone();
    let (writer, writer_thread) = writer::spawn(
        store,
        config.region,
        signer.clone() as Arc<dyn crate::log::CheckpointSigner>,
        WriterLimits {
            queue_depth: config.queue_depth,
            group_ops_max: config.group_ops_max,
        },
    );
    // Checkpoint signers are judged by the policy's issuer bindings too: another province's CA
    // cannot mint a node that signs our origin's log.
    let issuers_policy = policy.clone();
    let checkpoint_verifier = Arc::new(
        crate::pki::ReloadingVerifier::new(&config.tls.ca, config.tls.crl.as_deref())?
            .with_issuers(Arc::new(move || issuers_policy.current().issuers())),
    );
    let verifier: Arc<dyn crate::log::CheckpointVerifier> = checkpoint_verifier.clone();
    let replication = ReplicationService {
        index: index.clone(),
        journal: JournalReader::new(&config.store.journal_dir()),
        durable_end: writer.durable_end(),
        limits: SyncLimits {
            batch_entries_max: config.sync.batch_entries_max as usize,
            batch_bytes_max: config.sync.batch_bytes_max as usize,
            heartbeat: config.heartbeat,
        },
        stopping: stopping.clone(),
        heads_cache: crate::rpc::replication::HeadsCache::new(writer.durable_end()),
        readers: Arc::new(tokio::sync::Semaphore::new(crate::rpc::replication::SYNC_READERS_MAX)),
    };
    let deliveries = Deliveries::new(
        config.region,
        writer.clone(),
        JournalReader::new(&config.store.journal_dir()),
        policy.clone(),
        feed_clock,
        signer.clone(),
        audit,
        config.feed,
        stopping,
    );
    // A fresh signed statement of our head at start (the certificate may have changed since the
    // last one), then at least every `checkpoint_refresh` while idle, so every node holds a recent
    // "origin O was at seq N at time T" and a stolen or revoked key cannot back-date far.
    writer.refresh_checkpoint(0).await.map_err(NodeError::Writer)?;
    health.up(Component::Writer);
    health.up(Component::Indexer);
    let refresh_writer = writer.clone();
    let refresh_every = config.checkpoint_refresh;
    let refresher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(refresh_every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = refresh_writer.refresh_checkpoint(refresh_every.as_secs() as i64).await {
                tracing::warn!(error = %e, "fresh checkpoint not signed");
                return;
            }
        }
    });
    let own_log_behind: crate::sync::OwnLogBehind = Arc::default();
    let (stop_links, links_stopped) = watch::channel(false);
    let peer_states: PeerStates = Arc::default();
    let mut links = Vec::new();
    let feeders = (config.sync.feeder_choice && !config.peers.is_empty())
        .then(|| crate::link::Feeders::new(config.region, &config.peers, config.sync.feeder_switch));
    if let Some(f) = &feeders {
        links.push(tokio::spawn(crate::link::run_feeders(
            f.clone(),
            index.clone(),
            links_stopped.clone(),
        )));
    }
    for (slot, peer) in config.peers.iter().enumerate() {
        let link = Link {
            local: config.region,
            writer: writer.clone(),
            index: index.clone(),
            verifier: verifier.clone(),
            limits: config.sync,
            states: peer_states.clone(),
            own_log_behind: own_log_behind.clone(),
            feeders: feeders.as_ref().map(|f| (f.clone(), slot)),
            arrivals: arrivals.clone(),
        };
        let connector = Arc::new(crate::rpc::replication::TlsPeer::new(
            &peer.address,
            peer.region,
            peer.server_name.clone(),
            config.tls.clone(),
        ));
        let driver = tokio::spawn(run_peer(link, peer.clone(), connector, links_stopped.clone()));
        // A driver ends only when the node stops: ending before, or panicking, is a dead part.
        let watched = links_stopped.clone();
        let watch_health = health.clone();
        let address = peer.address.clone();
        links.push(tokio::spawn(async move {
            let ended = driver.await;
            if !*watched.borrow() {
                let why = match ended {
                    Err(e) if e.is_panic() => format!("the sync driver of peer {address} panicked"),
                    _ => format!("the sync driver of peer {address} ended"),
                };
                watch_health.down(Component::Sync, &why);
            }
        }));
    }
    health.up(Component::Sync);
    let operations = Arc::new(OperationsService {
        region: config.region,
        deliveries: deliveries.clone(),
        index: index.clone(),
        journal: JournalReader::new(&config.store.journal_dir()),
        peers: config.peers.clone(),
        states: peer_states.clone(),
        feeders: feeders.map(|f| f as Arc<dyn crate::sync::peer::FeederView>),
        tls: tls.clone(),
        health: health.clone(),
        progress: Default::default(),
        writer: writer.clone(),
        crl: tls.crl_status(),
        calendar: calendar.clone(),
        arrivals: arrivals.clone(),
        rejections: metrics.rejections.clone(),
        evaluations: Arc::new(tokio::sync::Semaphore::new(crate::rpc::operations::EVALUATIONS_AT_ONCE)),
    });
    let watched_writer = writer.clone();
    let publisher = PublisherService {
        origin: config.region,
        writer,
        own_log_behind,
        stopping: stopping_watch.clone(),
        metrics: metrics.clone(),
    };
    let publisher = pb::publisher_server::PublisherServer::new(publisher)
        .max_decoding_message_size(config.message_bytes_max)
        .max_encoding_message_size(config.message_bytes_max);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in ["", PUBLISHER, REPLICATION, FEED, OPERATIONS] {
        health_reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Serve(format!("reflection: {e}")))?;
    // Many clients (grpcurl among them, in older versions) still ask for v1alpha.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| NodeError::Serve(format!("reflection v1alpha: {e}")))?;

    let reload_tls = tls.clone();
    let reload_signer = signer.clone();
    let reload_policy = policy.clone();
    let crl_every = config.crl_reload;
    let reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(crl_every);
        loop {
            tick.tick().await;
            let tls = reload_tls.clone();
            let signer = reload_signer.clone();
            let signatures = checkpoint_verifier.clone();
            let policy = reload_policy.clone();
            // Reading and parsing files is blocking work. The checkpoint verifier reloads with
            // the TLS material: a revocation applies to handshakes and signatures alike.
            let _ = tokio::task::spawn_blocking(move || {
                // A renewed certificate and key: new handshakes present them, and checkpoints and
                // progress marks are signed with them, without a restart or a dropped stream.
                if tls.reload_if_changed() {
                    if let Err(e) = signer.reload(tls.files()) {
                        tracing::error!(error = %e, "checkpoint signer not reloaded; it signs with the previous certificate");
                        tls.life().reload_failed(e.to_string());
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                tls.crl_status().check(now);
                tls.life().check(&tls.held_certificates(), now);
                if let Err(e) = signatures.reload() {
                    tracing::warn!(error = %e, "checkpoint verifier not reloaded; the last good CA and CRL stay in force");
                }
                // The policy file is checked on the same tick: a change applies to new calls and
                // to running subscriptions; a malformed file leaves the last good policy in force.
                match policy.reload_if_changed() {
                    Ok(true) => tracing::info!(version = policy.version(), "access policy reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "access policy not reloaded; the last good policy stays in force"),
                }
            })
            .await;
        }
    });

    let stats = Arc::new(TransportStats::default());
    let admin = admin_listener.map(|listener| {
        let admin = Arc::new(crate::admin::Admin {
            operations: operations.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            transport: stats.clone(),
            recent: Default::default(),
        });
        tokio::spawn(crate::admin::serve(listener, admin, stopping_watch.clone()))
    });
    // The watchdog: a part that died flips health, and past node.unwell_exit_seconds the node
    // stops and `serve` fails (the process exits non-zero; systemd or Kubernetes restart it).
    let (unwell_tx, mut unwell) = watch::channel(None::<(Component, String)>);
    let unwell_result = unwell.clone();
    let watchdog = {
        let health = health.clone();
        let writer = watched_writer;
        let reporter = health_reporter.clone();
        let grace = config.unwell_exit;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                if let Some(why) = writer.failure() {
                    health.down(Component::Writer, &why);
                }
                if let Some(why) = writer.index_failure() {
                    health.down(Component::Indexer, &why);
                }
                if let Some((part, why)) = health.failure() {
                    for service in affected(part) {
                        reporter
                            .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                            .await;
                    }
                    tracing::error!(part = part.name(), reason = %why, stop_in_seconds = grace.as_secs(), "node unwell; health reports NOT_SERVING and the node stops (a restart recovers the journal)");
                    tokio::time::sleep(grace).await;
                    let _ = unwell_tx.send(Some((part, why)));
                    return;
                }
            }
        })
    };
    let local = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: config.listen,
        source,
    })?;
    let limits = transport::TransportLimits {
        connections_max: config.connections_max,
        handshakes_per_source_max: config.handshakes_per_source_max,
        connections_per_identity_max: config.connections_per_identity_max,
        idle_timeout: config.idle_connection,
    };
    let drain_tls = tls.clone();
    let incoming = transport::incoming(listener, tls, limits, stats);
    tracing::info!(region = %config.region, listen = %local, "node serving");
    let served = tonic::transport::Server::builder()
        // Authenticated callers are bounded too: streams per connection, a deadline on every
        // unary handler (a stream's body is not cut by it), keepalive pings that close dead
        // connections, and a cap on header size.
        .max_concurrent_streams(config.streams_per_connection_max)
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(HEADER_LIST_BYTES_MAX)
        // One policy check for every method, before any service: no rule, no call.
        .layer(crate::rpc::gate::PolicyGate::new(policy.clone()))
        .add_service(publisher)
        .add_service(
            pb::replication_server::ReplicationServer::new(replication).max_encoding_message_size(64 * 1024 * 1024),
        )
        .add_service(pb::feed_server::FeedServer::new(FeedService { deliveries }))
        .add_service(pb::operations_server::OperationsServer::new(operations))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                _ = shutdown => {}
                // The watchdog's end without a verdict (it was aborted) is no reason to stop.
                _ = async { if unwell.wait_for(|u| u.is_some()).await.is_err() { std::future::pending::<()>().await } } => {}
            }
            // Long-lived streams (Sync, Subscribe, PublishStream) end too, so the server can drain.
            let _ = stopping_tx.send(true);
        });
    // The drain has its own deadline, well inside an orchestrator's grace period: past it, the
    // connections still open are closed and the store is closed all the same.
    let mut drain_started = stopping_watch;
    let served = tokio::select! {
        served = served => served,
        _ = async {
            let _ = drain_started.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        } => {
            let n = drain_tls.cut_all();
            tracing::warn!(connections = n, deadline_seconds = DRAIN_DEADLINE.as_secs(), "drain deadline passed; closed the connections still open");
            Ok(())
        }
    };
    reloader.abort();
    refresher.abort();
    watchdog.abort();
    if let Some(a) = admin {
        a.abort();
    }
    let _ = stop_links.send(true);
    for link in links {
        let _ = link.await;
    }
    tracing::info!("stopped accepting; closing the store");
    // The router (and with it the last writer handle) is gone: the writer finishes its queue.
    let closed = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| NodeError::Serve(format!("writer join: {e}")))?;
    let unwell = unwell_result.borrow().clone();
    if let Some((part, reason)) = unwell {
        return Err(NodeError::Unwell {
            part: part.name(),
            reason,
        });
    }
    match closed {
        Ok(Ok(store)) => {
            let flushed = tokio::task::spawn_blocking(move || {
                store.index().flush()?;
                store.view().flush().map_err(crate::store::StoreError::from)
            })
            .await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "index flush at shutdown failed; it is rebuilt from the journal at the next start");
            }
        }
        Ok(Err(e)) => return Err(NodeError::Writer(e)),
        Err(_) => return Err(NodeError::Serve("the store writer panicked".to_string())),
    }
    served.map_err(|e| NodeError::Serve(e.to_string()))?;
    tracing::info!("node stopped cleanly");
    Ok(())
}

/// Prepares, binds `config.listen` and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
    // The stop signal is heard during store recovery too: recovery is crash-safe, so stopping in
    // the middle of it is safe, and the next start resumes it.
    let mut shutdown = Box::pin(shutdown);
    let preparing = tokio::task::spawn_blocking(move || prepare(config));
    let prepared = tokio::select! {
        prepared = preparing => prepared.map_err(|e| NodeError::Serve(format!("prepare: {e}")))??,
        _ = &mut shutdown => {
            tracing::info!("stopped during start-up (store recovery is resumed at the next start)");
            return Ok(());
        }
    };
    let addr = prepared.config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })?;
    serve(prepared, listener, shutdown).await
}
