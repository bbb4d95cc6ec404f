//! The mutual-TLS transport under every gRPC port: accepts TCP connections, runs each TLS 1.3
//! handshake in its own task with a deadline, requires a client certificate chaining to the
//! federation CA and not revoked (rustls' verifier, with the CRL), reads the caller's `cx://`
//! identity from it, and hands finished connections to tonic. Invariants: at most
//! `connections_max` connections are open, at most `HANDSHAKES_IN_FLIGHT_MAX` handshakes run and
//! at most `handshakes_per_source_max` of them from one address (an IPv6 /64) (so idle sockets from one host
//! cannot lock everyone out before any certificate is seen), at most
//! `connections_per_identity_max` connections per verified identity; a connection without a
//! valid identity never reaches a service; a new CRL applies to new connections as soon as it is
//! loaded, and every live connection whose certificate no longer verifies is closed then.

use super::Caller;
use crate::pki::{self, Identity, TlsFiles};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// A handshake that takes longer than this is dropped (a slow or hostile client). A TLS 1.3
/// handshake is one round trip and a few signatures: seconds are plenty even across the country.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes running at once; more wait in the kernel's accept queue.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 64;
/// Finished connections waiting for tonic to pick them up.
const READY_QUEUE_DEPTH: usize = 16;

/// What the transport admits.
#[derive(Clone, Copy, Debug)]
pub struct TransportLimits {
    pub connections_max: usize,
    /// Handshakes at once from one source (an IPv4 address, an IPv6 /64): a connection past it
    /// is closed at once.
    pub handshakes_per_source_max: usize,
    pub connections_per_identity_max: usize,
    /// A connection with no call open for this long is closed (`node.idle_connection_seconds`).
    pub idle_timeout: Duration,
}

/// The calls open on one connection, and since when it has had none: keepalive pings keep a dead
/// peer's connection from lingering, this keeps a live but unused one from holding a slot.
#[derive(Debug)]
pub struct Activity {
    /// Calls open, and since when none has been: one lock, so a call that begins and the idle
    /// sweep's look are never interleaved.
    state: Mutex<(usize, std::time::Instant)>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new((0, std::time::Instant::now())),
        }
    }

    /// A call begins; it is open until the guard drops (a stream: until its last frame).
    pub fn begin(self: &Arc<Self>) -> CallGuard {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        CallGuard(self.clone())
    }

    /// Runs `cut` if the connection has had no call open for `idle`, under the lock a beginning
    /// call takes; true if it did.
    fn cut_if_idle(&self, idle: Duration, cut: impl FnOnce()) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 == 0 && state.1.elapsed() >= idle {
            cut();
            return true;
        }
        false
    }
}

/// One open call on a connection.
pub struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = state.0.saturating_sub(1);
        state.1 = std::time::Instant::now();
    }
}

/// A server TLS configuration that can be swapped (a reloaded CRL) while the server runs, with
/// the live connections it admitted, judged again at each reload.
#[derive(Clone)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    verifier: Arc<RwLock<Arc<dyn ClientCertVerifier>>>,
    /// When each file of the material last changed: a change is a reload.
    stamps: Arc<RwLock<Vec<Option<SystemTime>>>>,
    /// A reload to a lower CRL number is refused (it would un-revoke).
    crl_number: Arc<pki::CrlNumberGuard>,
    crl_status: Arc<pki::CrlStatus>,
    /// Certificate expiry warnings and failed reloads of the material.
    life: Arc<pki::CertLife>,
    /// The node certificate in force: (identity, not_after unix seconds).
    own: Arc<RwLock<(String, i64)>>,
    connections: Arc<Connections>,
    /// The CAs of `tls.ca`: which one each client's chain leads to (reloaded with the CRL).
    anchors: Arc<RwLock<Arc<pki::Anchors>>>,
    /// Bumped at every reload: a handshake that began under an older configuration is judged
    /// again by the new verifier once registered.
    generation: Arc<AtomicU64>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadableTls {
    pub fn load(files: TlsFiles, life: Arc<pki::CertLife>) -> Result<ReloadableTls, pki::PkiError> {
        let own = Arc::new(RwLock::new(own_certificate(&files.cert)?));
        let verifier = pki::client_verifier(&files)?;
        let config = pki::server_config_with(&files, verifier.clone())?;
        let stamps = stamps(&files);
        let crl_number = Arc::new(pki::CrlNumberGuard::new(files.crl.as_deref())?);
        let crl_status = Arc::new(pki::CrlStatus::new(files.crl.as_deref())?);
        let anchors = Arc::new(RwLock::new(Arc::new(pki::Anchors::load(&files.ca)?)));
        Ok(ReloadableTls {
            anchors,
            generation: Arc::default(),
            crl_status,
            life,
            own,
            files,
            current: Arc::new(RwLock::new(config)),
            verifier: Arc::new(RwLock::new(verifier)),
            stamps: Arc::new(RwLock::new(stamps)),
            crl_number,
            connections: Arc::default(),
        })
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The revocation list in force, and its alarms.
    pub fn crl_status(&self) -> Arc<pki::CrlStatus> {
        self.crl_status.clone()
    }

    /// Closes every live connection now (the drain deadline passed).
    pub fn cut_all(&self) -> usize {
        let live = self.connections.live.lock().unwrap_or_else(|p| p.into_inner());
        for conn in live.values() {
            conn.cut.cut();
        }
        live.len()
    }

    /// Connections open now (all identities).
    pub fn open_connections(&self) -> usize {
        self.connections.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Reloads the configuration when the CA bundle, the node certificate, its key or the CRL
    /// changed, and closes every live connection whose certificate the new material refuses (a
    /// revoked one, or one of a CA no longer in the bundle; during an overlap rotation both CAs
    /// are in the bundle and nothing is closed). New handshakes present the new certificate;
    /// connections open now keep theirs. Bad new material keeps the old configuration (and says
    /// so): refusing all clients would be worse than a stale list.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.files);
        let before = self.stamps.read().unwrap_or_else(|p| p.into_inner()).clone();
        if now == before {
            return false;
        }
        // What changed, for the log: [CA bundle, certificate, key, CRL].
        let changed: Vec<bool> = now.iter().zip(before.iter()).map(|(a, b)| a != b).collect();
        let crl_changed = changed.get(3).copied().unwrap_or(false);
        *self.stamps.write().unwrap_or_else(|p| p.into_inner()) = now;
        let crl = self.files.crl.as_deref();
        let number = match crl {
            Some(path) => self.crl_number.check(path).map(|n| n.map(Some)),
            None => Ok(Some(None)),
        };
        let next = number.and_then(|number| match number {
            Some(n) => {
                let verifier = pki::client_verifier(&self.files)?;
                let config = pki::server_config_with(&self.files, verifier.clone())?;
                let next_update = match crl {
                    Some(path) => pki::crl_next_update_of(path)?,
                    None => None,
                };
                let anchors = pki::Anchors::load(&self.files.ca)?;
                let own = own_certificate(&self.files.cert)?;
                let before = self.own.read().unwrap_or_else(|p| p.into_inner()).0.clone();
                if own.0 != before {
                    // The checkpoint signer refuses it too: a node does not change identity.
                    return Err(pki::PkiError::CertificateInvalid {
                        what: self.files.cert.display().to_string(),
                        reason: format!(
                            "the new certificate is {}, but this node is {before}; a renewal keeps the identity (`cxnode certs renew`)",
                            own.0
                        ),
                    });
                }
                Ok(Some((n, config, verifier, next_update, anchors, own)))
            }
            None => Ok(None),
        });
        match next {
            // A lower CRL number refused before: said already, still refused. A certificate, key
            // or CA bundle changed meanwhile cannot be applied with that list in the file: said.
            Ok(None) => {
                if changed[..3].iter().any(|c| *c) {
                    let why = "the CRL file holds a list older than the one in force; put the current CRL back to apply the changed certificate, key or CA bundle".to_string();
                    tracing::error!(reason = %why, "tls material not reloaded");
                    self.life.reload_failed(why);
                }
                false
            }
            Ok(Some((number, config, verifier, next_update, anchors, own))) => {
                if let Some(n) = number {
                    self.crl_number.loaded(n);
                }
                self.crl_status.reloaded(next_update);
                self.life.reloaded();
                *self.own.write().unwrap_or_else(|p| p.into_inner()) = own;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = verifier.clone();
                *self.anchors.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(anchors);
                // After the verifier is swapped: a handshake registered from now on compares its
                // generation and is judged again (the sweep below catches those registered before).
                self.generation.fetch_add(1, Ordering::SeqCst);
                if changed[0] {
                    tracing::info!(ca = %self.files.ca.display(), "CA bundle reloaded");
                }
                if changed[1] || changed[2] {
                    tracing::info!(cert = %self.files.cert.display(), "node certificate and key reloaded; new handshakes present them");
                }
                if let Some(crl) = crl.filter(|_| crl_changed) {
                    tracing::info!(crl = %crl.display(), "certificate revocation list reloaded");
                }
                let cut = self.connections.cut_unverified(verifier.as_ref());
                if cut > 0 {
                    tracing::warn!(
                        connections = cut,
                        "closed live connections whose certificates the new CA bundle or revocation list refuses"
                    );
                }
                true
            }
            Err(e) => {
                if crl_changed {
                    tracing::error!(error = %e, "new revocation list refused; still using the previous one");
                } else {
                    tracing::error!(error = %e, "new tls material refused; still using the previous certificate, key and CA bundle");
                }
                // One alarm, where the operator will look: the CRL's when the CRL changed.
                if crl_changed {
                    self.crl_status.reload_failed(e.to_string());
                } else {
                    self.life.reload_failed(e.to_string());
                }
                false
            }
        }
    }

    /// The certificate expiry warnings and reload failures.
    pub fn life(&self) -> Arc<pki::CertLife> {
        self.life.clone()
    }

    /// The files this material is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The certificates this node depends on now: its own (as loaded), then those of the peers
    /// ("peer") and other callers ("caller") connected now.
    pub fn held_certificates(&self) -> Vec<pki::Held> {
        let (identity, not_after) = self.own.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut held = vec![pki::Held {
            identity,
            role: "node",
            not_after,
        }];
        held.extend(
            self.connected_certificates()
                .into_iter()
                .map(|(identity, not_after)| pki::Held {
                    role: if identity.starts_with("cx://node/") {
                        "peer"
                    } else {
                        "caller"
                    },
                    identity,
                    not_after,
                }),
        );
        held
    }

    /// The certificates of the callers connected now: (identity, not_after unix seconds), one
    /// per identity (the earliest expiry), in identity order.
    pub fn connected_certificates(&self) -> Vec<(String, i64)> {
        let live = self.connections.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_identity: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for conn in live.values() {
            let Some(at) = conn
                .chain
                .first()
                .and_then(|leaf| pki::cert_not_after(leaf.as_ref()).ok())
                .map(|t| t.unix_timestamp())
            else {
                continue;
            };
            let e = by_identity.entry(conn.identity.to_string()).or_insert(at);
            *e = (*e).min(at);
        }
        by_identity.into_iter().collect()
    }
}

/// The identity and expiry of the leaf certificate at `path`.
fn own_certificate(path: &std::path::Path) -> Result<(String, i64), pki::PkiError> {
    let chain = pki::load_cert_chain(path)?;
    let leaf = chain.first().ok_or_else(|| pki::PkiError::CertificateInvalid {
        what: path.display().to_string(),
        reason: "no certificate in the file".to_string(),
    })?;
    let identity = pki::identity_from_cert_der(leaf.as_ref())?;
    let not_after = pki::cert_not_after(leaf.as_ref())?.unix_timestamp();
    Ok((identity.to_string(), not_after))
}

/// When each file of the TLS material last changed (CA, certificate, key, CRL).
fn stamps(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    let mut v = vec![modified(&files.ca), modified(&files.cert), modified(&files.key)];
    v.push(files.crl.as_deref().and_then(modified));
    v
}

/// The connections a transport admitted and is admitting: counts per source address (handshakes)
/// and per identity, and each live connection's certificate chain and cut switch.
#[derive(Default)]
struct Connections {
    handshaking: Mutex<HashMap<IpAddr, usize>>,
    per_identity: Mutex<HashMap<Identity, usize>>,
    live: Mutex<HashMap<u64, Live>>,
    next_id: AtomicU64,
}

struct Live {
    identity: Identity,
    remote: SocketAddr,
    chain: Vec<CertificateDer<'static>>,
    cut: Arc<Cut>,
    activity: Arc<Activity>,
}

impl Connections {
    /// A handshake slot for the source of `ip`, or None when it has `max` running.
    fn handshake_slot(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let ip = source_of(ip);
        let mut counts = self.handshaking.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            connections: self.clone(),
            ip,
        })
    }

    /// Registers a verified connection, or None when its identity has `max` open already.
    fn admit(
        self: &Arc<Self>,
        caller: &Caller,
        chain: Vec<CertificateDer<'static>>,
        max: usize,
    ) -> Option<(Registered, Arc<Cut>)> {
        {
            let mut counts = self.per_identity.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(caller.identity.clone()).or_default();
            if *n >= max {
                return None;
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(Cut::default());
        let activity = caller.activity.clone().unwrap_or_else(|| Arc::new(Activity::new()));
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Live {
                identity: caller.identity.clone(),
                remote: caller.remote,
                chain,
                cut: cut.clone(),
                activity,
            },
        );
        Some((
            Registered {
                connections: self.clone(),
                id,
                identity: caller.identity.clone(),
            },
            cut,
        ))
    }

    /// Closes every live connection that has had no call open for `idle`. Returns how many.
    fn cut_idle(&self, idle: Duration) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut cut = 0;
        for conn in live.values() {
            if conn.cut.is_cut() {
                continue;
            }
            if conn.activity.cut_if_idle(idle, || conn.cut.cut()) {
                tracing::debug!(identity = %conn.identity, remote = %conn.remote, "closing an idle connection");
                cut += 1;
            }
        }
        cut
    }

    /// Closes every live connection whose certificate chain `verifier` now refuses (revoked, or
    /// expired since it connected). Returns how many.
    fn cut_unverified(&self, verifier: &dyn ClientCertVerifier) -> usize {
        let now = UnixTime::now();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut cut = 0;
        for conn in live.values() {
            if let Err(e) = still_accepted(verifier, &conn.chain, now) {
                tracing::warn!(identity = %conn.identity, remote = %conn.remote, reason = %e, "closing a live connection: its certificate is no longer accepted");
                conn.cut.cut();
                cut += 1;
            }
        }
        cut
    }
}

/// Whether `verifier` (the one in force now) still accepts a connection's chain, leaf first.
fn still_accepted(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    match chain.split_first() {
        Some((leaf, intermediates)) => verifier.verify_client_cert(leaf, intermediates, now).map(|_| ()),
        None => Ok(()),
    }
}

/// The source a handshake is counted against: the IPv4 address, or the IPv6 /64 (one host can
/// hold a whole /64, so counting its addresses one by one would bound nothing).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Held while a handshake from one address runs.
struct SourceSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.connections.handshaking.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Held by a live connection: its registration and its identity's count.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
    identity: Identity,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        let mut counts = self.connections.per_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.identity);
            }
        }
    }
}

/// Closes one connection from outside: its next read or write fails, and its task is woken so
/// that the read comes now.
#[derive(Default)]
struct Cut {
    cut: AtomicBool,
    reader: Mutex<Option<Waker>>,
}

impl Cut {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Some(w) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    fn watch(&self, waker: &Waker) {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if !reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the node (revoked certificate, idle, or the drain deadline)",
    )
}

/// Counters of the transport (exported as metrics).
#[derive(Default, Debug)]
pub struct TransportStats {
    pub handshakes_ok: AtomicU64,
    /// Connections closed before their handshake: their address had its share running.
    pub handshakes_refused_source: AtomicU64,
    /// The caller's identity had node.connections_per_identity_max connections open.
    pub handshakes_refused_identity_limit: AtomicU64,
    /// A revocation list reloaded during the handshake refuses the caller.
    pub handshakes_refused_revoked: AtomicU64,
    /// The TLS handshake itself failed (no, expired, revoked or foreign certificate; timeout).
    pub handshakes_refused_tls: AtomicU64,
}

impl TransportStats {
    /// Refused connections by reason, for metrics.
    pub fn refusals(&self) -> [(&'static str, u64); 4] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("source_handshakes", get(&self.handshakes_refused_source)),
            ("identity_connections", get(&self.handshakes_refused_identity_limit)),
            ("revoked", get(&self.handshakes_refused_revoked)),
            ("tls", get(&self.handshakes_refused_tls)),
        ]
    }
}

/// A TLS connection with its verified caller.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    caller: Caller,
    cut: Arc<Cut>,
    _registered: Registered,
    _permit: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = Caller;
    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // The connection task always has a read pending: the cut wakes it here.
        self.cut.watch(cx.waker());
        if self.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.cut.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts connections on `listener` until the returned stream is dropped. Each item is a
/// verified connection for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: ReloadableTls,
    limits: TransportLimits,
    stats: Arc<TransportStats>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE_DEPTH);
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    // Idle connections are looked for a few times per timeout, until the server stops.
    let sweep = tls.connections.clone();
    let sweep_closed = tx.clone();
    tokio::spawn(async move {
        let every = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sweep_closed.closed() => return,
            }
            let n = sweep.cut_idle(limits.idle_timeout);
            if n > 0 {
                tracing::info!(
                    connections = n,
                    idle_seconds = limits.idle_timeout.as_secs(),
                    "closed idle connections"
                );
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok(connection_permit) = connections.clone().acquire_owned().await else {
                return;
            };
            let Ok(handshake_permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Some(source_slot) = tls
                .connections
                .handshake_slot(remote.ip(), limits.handshakes_per_source_max)
            else {
                // That address has its share of handshakes running: closed now, so it holds
                // neither a handshake slot nor a connection slot.
                stats.handshakes_refused_source.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %remote, "connection closed: too many handshakes from this address");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let generation = tls.generation.load(Ordering::SeqCst);
            let acceptor = TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            let stats = stats.clone();
            let registry = tls.connections.clone();
            let anchors = tls.anchors.read().unwrap_or_else(|p| p.into_inner()).clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let result = handshake(acceptor, tcp, remote, &anchors).await;
                drop(handshake_permit);
                drop(source_slot);
                match result {
                    Ok((inner, caller)) => {
                        let chain: Vec<CertificateDer<'static>> = inner
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let Some((registered, cut)) =
                            registry.admit(&caller, chain.clone(), limits.connections_per_identity_max)
                        else {
                            stats.handshakes_refused_identity_limit.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(remote = %remote, identity = %caller.identity, limit = limits.connections_per_identity_max, "connection refused: this identity has node.connections_per_identity_max connections open");
                            return;
                        };
                        // A CRL reloaded while this handshake ran: judged by the new verifier now
                        // that it is registered (the reload's sweep may have run before).
                        if tls.generation.load(Ordering::SeqCst) != generation {
                            let verifier = tls.verifier.read().unwrap_or_else(|p| p.into_inner()).clone();
                            if let Err(e) = still_accepted(verifier.as_ref(), &chain, UnixTime::now()) {
                                stats.handshakes_refused_revoked.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(remote = %remote, identity = %caller.identity, reason = %e, "connection refused: the revocation list reloaded during its handshake refuses it");
                                cut.cut();
                                return;
                            }
                        }
                        stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(remote = %remote, identity = %caller.identity, "client connected");
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner,
                                caller,
                                cut,
                                _registered: registered,
                                _permit: connection_permit,
                            }))
                            .await;
                    }
                    Err(Refusal::Probe) => {
                        // A TCP connection closed before any TLS byte: a port probe or health check.
                        tracing::debug!(remote = %remote, "connection closed before the tls handshake");
                    }
                    Err(Refusal::Refused(reason)) => {
                        stats.handshakes_refused_tls.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(remote = %remote, reason = %reason, "tls handshake refused");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

enum Refusal {
    Probe,
    Refused(String),
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    anchors: &pki::Anchors,
) -> Result<(TlsStream<TcpStream>, Caller), Refusal> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Err(_) => return Err(Refusal::Refused(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Refusal::Probe),
        Ok(Err(e)) => return Err(Refusal::Refused(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| Refusal::Refused("client presented no certificate".to_string()))?;
    let identity = pki::identity_from_cert_der(leaf.as_ref())
        .map_err(|e| Refusal::Refused(format!("client certificate has no usable identity: {e}")))?;
    // The handshake verified the chain; this finds the CA it led to (None only if the roots
    // changed in between, and then the policy gate refuses where issuers are bound).
    let chain: Vec<CertificateDer<'_>> = session.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let issuer = anchors.issuer_of_client(&chain, UnixTime::now()).ok();
    Ok((
        stream,
        Caller {
            identity,
            remote,
            issuer,
            activity: Some(Arc::new(Activity::new())),
        },
    ))
}
