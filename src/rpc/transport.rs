//! The mutual-TLS transport under every gRPC port: accepts TCP connections, runs each TLS 1.3
//! handshake in its own task with a deadline, requires a client certificate chaining to the
//! federation CA and not revoked (rustls' verifier, with the CRL), reads the caller's `cx://`
//! identity from it, and hands finished connections to tonic. Invariants: at most
//! `connections_max` connections are open and at most `HANDSHAKES_IN_FLIGHT_MAX` handshakes run;
//! a connection without a valid identity never reaches a service; a new CRL applies to new
//! connections as soon as it is loaded.

use super::Caller;
use crate::pki::{self, TlsFiles};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// A handshake that takes longer than this is dropped (a slow or hostile client).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes running at once; more wait in the kernel's accept queue.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 64;
/// Finished connections waiting for tonic to pick them up.
const READY_QUEUE_DEPTH: usize = 16;

/// A server TLS configuration that can be swapped (a reloaded CRL) while the server runs.
#[derive(Clone)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    crl_modified: Arc<RwLock<Option<SystemTime>>>,
    /// A reload to a lower CRL number is refused (it would un-revoke).
    crl_number: Arc<pki::CrlNumberGuard>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadableTls {
    pub fn load(files: TlsFiles) -> Result<ReloadableTls, pki::PkiError> {
        let config = pki::server_config(&files)?;
        let crl_modified = files.crl.as_deref().and_then(modified);
        let crl_number = Arc::new(pki::CrlNumberGuard::new(files.crl.as_deref())?);
        Ok(ReloadableTls {
            files,
            current: Arc::new(RwLock::new(config)),
            crl_modified: Arc::new(RwLock::new(crl_modified)),
            crl_number,
        })
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the configuration if the CRL file changed. A bad new CRL keeps the old
    /// configuration (and says so): refusing all clients would be worse than a stale list.
    pub fn reload_if_changed(&self) -> bool {
        let Some(crl) = self.files.crl.as_deref() else {
            return false;
        };
        let now = modified(crl);
        let before = *self.crl_modified.read().unwrap_or_else(|p| p.into_inner());
        if now == before {
            return false;
        }
        let next = self.crl_number.check(crl).and_then(|number| match number {
            Some(n) => Ok(Some((n, pki::server_config(&self.files)?))),
            None => Ok(None),
        });
        match next {
            // A lower number refused before: said already, still refused.
            Ok(None) => {
                *self.crl_modified.write().unwrap_or_else(|p| p.into_inner()) = now;
                false
            }
            Ok(Some((number, config))) => {
                self.crl_number.loaded(number);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                *self.crl_modified.write().unwrap_or_else(|p| p.into_inner()) = now;
                tracing::info!(crl = %crl.display(), "certificate revocation list reloaded");
                true
            }
            Err(e) => {
                tracing::error!(crl = %crl.display(), error = %e, "new revocation list refused; still using the previous one");
                *self.crl_modified.write().unwrap_or_else(|p| p.into_inner()) = now;
                false
            }
        }
    }
}

/// Counters of the transport (exported as metrics).
#[derive(Default, Debug)]
pub struct TransportStats {
    pub handshakes_ok: AtomicU64,
    pub handshakes_failed: AtomicU64,
}

/// A TLS connection with its verified caller.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    caller: Caller,
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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
    connections_max: usize,
    stats: Arc<TransportStats>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE_DEPTH);
    let connections = Arc::new(Semaphore::new(connections_max));
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
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
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let result = handshake(acceptor, tcp, remote).await;
                drop(handshake_permit);
                match result {
                    Ok((inner, caller)) => {
                        stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(remote = %remote, identity = %caller.identity, "client connected");
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner,
                                caller,
                                _permit: connection_permit,
                            }))
                            .await;
                    }
                    Err(Refusal::Probe) => {
                        // A TCP connection closed before any TLS byte: a port probe or health check.
                        tracing::debug!(remote = %remote, "connection closed before the tls handshake");
                    }
                    Err(Refusal::Refused(reason)) => {
                        stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
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
    Ok((stream, Caller { identity, remote }))
}
